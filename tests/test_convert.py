"""`engine.convert`: float checkpoint -> MLX-community 4/8-bit folder that engine.load accepts.

Two kinds of checks. Exactness: the quantized model must compute what its own file decodes to, i.e. the
float32 model built from the dequantized weights (any naming, layout or override mistake breaks this).
Fidelity: the error against the original bf16 model must shrink with the quantization step.
"""

import json
import shutil
import threading
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import engine
import engine.convert as convert_module
from engine.checkpoint import read_headers, weight_files
from engine.cli import main as cli_main
from engine.convert import STAGING_SUFFIX, ConversionCancelled, convert, remove_abandoned_staging

from conftest import MODELS

E4B = MODELS / "tiny-e4b-bf16"
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "processor_config.json",
              "generation_config.json")
# Accumulation order differs between quantized_matmul and a dense matmul; the tiny random network
# amplifies float32 rounding about a hundredfold (its bf16 run drifts 9% from its fp32 run).
EXACT_TOLERANCE = 1e-3


def text_ids(model, count: int = 40) -> list[int]:
    config = model.config
    media = {config.image_token_id, config.video_token_id, config.audio_token_id, config.boi_token_id,
             config.eoi_token_id, config.boa_token_id, config.eoa_token_id}
    return [token for token in range(2, 200) if token not in media][:count]


def logits(folder: Path, ids: list[int]) -> np.ndarray:
    return np.array(engine.load(folder).logits(ids))


def relative_rms(value: np.ndarray, reference: np.ndarray) -> float:
    return float(np.sqrt(((value - reference) ** 2).mean() / (reference ** 2).mean()))


def stored_tensors(folder: Path) -> dict[str, mx.array]:
    tensors: dict[str, mx.array] = {}
    for path in weight_files(folder):
        tensors.update(mx.load(str(path)))
    return tensors


def dequantized_copy(quantized: Path, target: Path) -> Path:
    """A float32 folder holding exactly what the quantized weights decode to (scales in float32 too)."""
    tensors = stored_tensors(quantized)
    config = json.loads((quantized / "config.json").read_text())
    block = config.pop("quantization")
    config.pop("quantization_config")
    dense = {}
    for name, value in tensors.items():
        path = name.removesuffix(".weight")
        if name.endswith((".scales", ".biases")):
            continue
        if f"{path}.scales" in tensors:
            spec = block.get(path, block)
            value = mx.dequantize(value, tensors[f"{path}.scales"].astype(mx.float32),
                                  tensors[f"{path}.biases"].astype(mx.float32),
                                  group_size=spec["group_size"], bits=spec["bits"])
        dense[name] = value.astype(mx.float32)
    target.mkdir()
    mx.save_safetensors(str(target / "model.safetensors"), dense)
    (target / "config.json").write_text(json.dumps(config))
    for name in SIDE_FILES:
        shutil.copy(quantized / name, target / name)
    return target


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("converted")
    return {bits: convert(E4B, root / f"q{bits}", bits, 32, max_shard_bytes=300_000).folder for bits in (4, 8)}


@pytest.fixture(scope="module")
def ids() -> list[int]:
    return text_ids(engine.load(E4B))


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_model_computes_what_its_weights_decode_to(converted, ids, tmp_path, bits):
    reference = logits(dequantized_copy(converted[bits], tmp_path / "dense"), ids)
    quantized = logits(converted[bits], ids)
    assert np.abs(quantized - reference).max() <= EXACT_TOLERANCE * np.abs(reference).max()


def test_error_against_the_original_shrinks_with_the_quantization_step(converted, ids):
    original = logits(E4B, ids)
    error4 = relative_rms(logits(converted[4], ids), original)
    error8 = relative_rms(logits(converted[8], ids), original)
    # Unrelated logits of the same scale sit near sqrt(2); 4-bit must stay clearly correlated with the
    # original even on a tiny random network, which amplifies weight noise layer after layer.
    assert 0 < error4 < 0.75
    # The 8-bit step is 255/15 = 17 times finer; the error is roughly proportional to it, a factor 4 is
    # the margin left for the network's nonlinearity.
    assert 0 < error8 < error4 / 4


def test_layout_matches_the_mlx_community_conversions(converted):
    folder = converted[4]
    tensors = stored_tensors(folder)
    quantized = {name.removesuffix(".scales") for name in tensors if name.endswith(".scales")}
    assert not any(name.startswith("model.") for name in tensors)
    assert "language_model.model.embed_tokens" in quantized
    assert "language_model.model.embed_tokens_per_layer" in quantized
    assert "language_model.model.layers.0.self_attn.q_proj" in quantized
    assert "language_model.model.layers.0.mlp.down_proj" in quantized
    assert not any(path.startswith(("vision_tower.", "audio_tower.", "embed_vision.")) for path in quantized)
    assert tensors["audio_tower.subsample_conv_projection.layer0.conv.weight"].shape == (128, 3, 3, 1)
    assert tensors["language_model.model.layers.0.input_layernorm.weight"].dtype == mx.bfloat16
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization"] == config["quantization_config"]
    assert (config["quantization"]["bits"], config["quantization"]["group_size"]) == (4, 32)
    for name in SIDE_FILES:
        assert (folder / name).read_bytes() == (E4B / name).read_bytes()


def test_output_is_sharded_with_a_complete_index(converted):
    folder = converted[8]
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    assert shards[-1].endswith(f"-of-{len(shards):05d}.safetensors")
    assert set(index["weight_map"]) == set(read_headers(weight_files(folder)))


def test_moe_router_stays_at_8_bits_and_experts_are_split(tmp_path):
    source = MODELS / "tiny-26b"
    folder = convert(source, tmp_path / "q4", 4, 32).folder
    config = json.loads((folder / "config.json").read_text())["quantization"]
    layers = engine.load(source).config.text.num_hidden_layers
    for layer in range(layers):
        assert config[f"language_model.model.layers.{layer}.router.proj"] == {"group_size": 32, "bits": 8}
    tensors = stored_tensors(folder)
    assert "language_model.model.layers.0.experts.switch_glu.gate_proj.scales" in tensors
    ids = text_ids(engine.load(source))
    reference = logits(dequantized_copy(folder, tmp_path / "dense"), ids)
    assert np.abs(logits(folder, ids) - reference).max() <= EXACT_TOLERANCE * np.abs(reference).max()


def test_progress_reaches_every_source_byte(tmp_path):
    seen = []
    convert(E4B, tmp_path / "q8", 8, 64, progress=seen.append)
    done = [step.done_bytes for step in seen]
    assert done == sorted(done)
    assert seen[-1].done_bytes == seen[-1].total_bytes == (E4B / "model.safetensors").stat().st_size - \
        _header_bytes(E4B / "model.safetensors")
    assert seen[-1].done_tensors == seen[-1].total_tensors


def _header_bytes(path: Path) -> int:
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def test_cancel_leaves_nothing_behind(tmp_path):
    cancel = threading.Event()

    def stop_halfway(step) -> None:
        if step.done_tensors * 2 >= step.total_tensors:
            cancel.set()

    with pytest.raises(ConversionCancelled):
        convert(E4B, tmp_path / "q4", 4, 64, progress=stop_halfway, cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_config_is_written_after_every_other_file(tmp_path, monkeypatch):
    """A conversion killed while copying the side files must leave no folder that passes for a model."""
    config_before_side_files = []
    copy_side_files = convert_module._copy_side_files

    def copy_and_look(source: Path, staging: Path) -> None:
        config_before_side_files.append((staging / "config.json").exists())
        copy_side_files(source, staging)

    monkeypatch.setattr(convert_module, "_copy_side_files", copy_and_look)
    convert(E4B, tmp_path / "q4", 4)
    assert config_before_side_files == [False]
    assert (tmp_path / "q4" / "config.json").is_file()


def leftover_staging(folder: Path, name: str) -> Path:
    """What a conversion killed after writing its config leaves: weights and config, no tokenizer yet."""
    staging = folder / f"{name}{STAGING_SUFFIX}"
    staging.mkdir()
    for part in ("config.json", "model.safetensors"):
        shutil.copy(E4B / part, staging / part)
    return staging


def test_a_sweep_removes_leftover_staging_folders_and_nothing_else(tmp_path):
    leftovers = [leftover_staging(tmp_path, "gemma-4bit"), leftover_staging(tmp_path, "gemma-8bit")]
    shutil.copytree(E4B, tmp_path / "gemma")
    (tmp_path / f"notes{STAGING_SUFFIX}").write_text("a file, not a conversion's folder")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / f"linked{STAGING_SUFFIX}").symlink_to(tmp_path / "elsewhere")
    remove_abandoned_staging(tmp_path)
    assert not any(path.exists() for path in leftovers)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["elsewhere", "gemma", f"linked{STAGING_SUFFIX}",
                                                                f"notes{STAGING_SUFFIX}"]
    assert engine.load(tmp_path / "gemma").info.quantization is None


def test_a_sweep_keeps_the_staging_folder_of_a_running_conversion(tmp_path):
    leftover = leftover_staging(tmp_path, "killed")
    swept = []

    def sweep_midway(step) -> None:
        if not swept:
            remove_abandoned_staging(tmp_path)
            swept.append(sorted(path.name for path in tmp_path.iterdir()))

    result = convert(E4B, tmp_path / "q4", 4, progress=sweep_midway)
    assert swept == [[f"q4{STAGING_SUFFIX}"]] and not leftover.exists()
    assert engine.load(result.folder).info.quantization == (4, 64)


def test_a_second_conversion_into_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    refusals = []

    def convert_again(step) -> None:
        if not refusals:
            with pytest.raises(engine.EngineError, match="another conversion") as refusal:
                convert(E4B, tmp_path / "q4", 8)
            refusals.append(refusal)

    result = convert(E4B, tmp_path / "q4", 4, progress=convert_again)
    assert len(refusals) == 1 and engine.load(result.folder).info.quantization == (4, 64)


@pytest.mark.parametrize("problem, arguments", [
    ("bits", {"bits": 3}),
    ("group-size", {"group_size": 48}),
])
def test_bad_settings_are_refused(tmp_path, problem, arguments):
    with pytest.raises(engine.EngineError, match=problem):
        convert(E4B, tmp_path / "out", **{"bits": 4, "group_size": 64, **arguments})


def test_existing_output_and_quantized_sources_are_refused(tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(engine.EngineError, match="already exists"):
        convert(E4B, occupied, 4)
    assert (occupied / "keep.txt").read_text() == "mine"
    with pytest.raises(engine.EngineError, match="already quantized"):
        convert(MODELS / "tiny-e2b-q4", tmp_path / "again", 4)
    assert not (tmp_path / "again").exists()


def test_output_named_as_the_current_folder(tmp_path, monkeypatch):
    here = tmp_path / "empty"
    here.mkdir()
    monkeypatch.chdir(here)
    result = convert(E4B, ".", 4)
    assert result.folder == here and engine.load(here).info.quantization == (4, 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"], "the staging folder is gone"


def test_command_line(tmp_path, capsys):
    out = tmp_path / "q4"
    assert cli_main(["convert", "--model", str(E4B), "--out", str(out), "--bits", "4", "--group-size", "32"]) == 0
    assert engine.load(out).info.quantization == (4, 32)
    assert "quantized to 4 bits" in capsys.readouterr().out
    assert cli_main(["convert", "--model", str(E4B), "--out", str(out), "--bits", "8"]) == 1
    assert "already exists" in capsys.readouterr().err
