"""engine.load and the media entry points on damaged or hostile input: a clear EngineError, never a raw
exception, never a file read from outside the model folder, never a model that silently computes NaN."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import engine
from engine.config import parse_config

from conftest import MODELS

SHARDED = "tiny-e2b-mlx"
SECOND_SHARD = "model-00002-of-00002.safetensors"
FIXTURE_CONFIG = json.loads((MODELS / "tiny-e2b" / "config.json").read_text())


def _edit_index(folder: Path, new_name: object) -> None:
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"] = {tensor: (new_name if shard == SECOND_SHARD else shard)
                           for tensor, shard in index["weight_map"].items()}
    index_path.write_text(json.dumps(index))


# -- weight files stay inside the model folder (packaging-reliability F9, F10) ------------------------------


@pytest.mark.parametrize("shard_name", ["../outside.safetensors", "ABSOLUTE", 5, ["a.safetensors"]])
def test_index_naming_a_shard_outside_the_folder_is_refused(model_copy, tmp_path, shard_name):
    folder = model_copy(SHARDED)
    outside = tmp_path / "outside.safetensors"
    shutil.move(folder / SECOND_SHARD, outside)
    _edit_index(folder, str(outside) if shard_name == "ABSOLUTE" else shard_name)
    with pytest.raises(engine.EngineError, match="not a file name inside the model folder"):
        engine.load(folder)


def test_shard_linked_to_a_file_outside_the_folder_is_refused(model_copy, tmp_path):
    folder = model_copy(SHARDED)
    outside = tmp_path / "outside.safetensors"
    shutil.move(folder / SECOND_SHARD, outside)
    os.symlink(outside, folder / SECOND_SHARD)
    with pytest.raises(engine.EngineError, match=f"{SECOND_SHARD} .* is a link to .* outside the model folder"):
        engine.load(folder)


def _hub_snapshot(cache: Path, source: Path) -> Path:
    """The Hugging Face cache layout: every file of the snapshot links to ../../blobs/<hash>."""
    repo = cache / "models--google--gemma-4-tiny"
    snapshot = repo / "snapshots" / "0123abcd"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for number, path in enumerate(sorted(source.iterdir())):
        shutil.copy(path, repo / "blobs" / f"blob{number}")
        os.symlink(f"../../blobs/blob{number}", snapshot / path.name)
    return snapshot


def test_hub_cache_links_into_its_blobs_load_but_a_link_out_of_the_cache_does_not(tmp_path):
    snapshot = _hub_snapshot(tmp_path / "hub", MODELS / "tiny-e2b")
    assert engine.load(snapshot).info.modalities >= {"text", "image"}
    local_dir = tmp_path / "local-dir"  # what older `huggingface-cli download --local-dir` made
    local_dir.mkdir()
    for path in snapshot.iterdir():
        os.symlink(path.resolve(), local_dir / path.name)
    assert engine.load(local_dir).info.modalities >= {"text", "image"}
    weights = snapshot / "model.safetensors"
    elsewhere = tmp_path / "elsewhere.safetensors"
    shutil.copy(weights, elsewhere)
    weights.unlink()
    os.symlink(elsewhere, weights)
    with pytest.raises(engine.EngineError, match="outside the model folder"):
        engine.load(snapshot)


# -- side files: tokenizer and chat template are checked by load ---------------------------------------------


def test_missing_tokenizer_fails_the_load_but_a_weights_only_folder_loads(model_copy, tmp_path):
    folder = model_copy("tiny-e2b")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(engine.EngineError, match="has no tokenizer.json"):
        engine.load(folder)
    weights_only = tmp_path / "weights-only"
    weights_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(MODELS / "tiny-e2b" / name, weights_only / name)
    model = engine.load(weights_only)
    assert len(model.logits([2, 3, 4])) == 3
    with pytest.raises(engine.EngineError, match="has no tokenizer.json"):
        model.chat()


def test_missing_chat_template_fails_the_load(model_copy):
    folder = model_copy("tiny-e2b")
    (folder / "chat_template.jinja").unlink()
    with pytest.raises(engine.EngineError, match="has no chat template"):
        engine.load(folder)


def test_chat_template_that_is_not_utf8_is_named(model_copy):
    folder = model_copy("tiny-e2b")
    (folder / "chat_template.jinja").write_bytes(b"\xff\xfe{{ messages }}")
    with pytest.raises(engine.EngineError, match=r"chat_template\.jinja is not UTF-8"):
        engine.load(folder)


def test_a_loaded_model_keeps_the_tokenizer_it_checked(model_copy):
    folder = model_copy("tiny-e2b")
    model = engine.load(folder)
    (folder / "tokenizer.json").unlink()
    assert model.chat().tokenizer is model.tokenizer


# -- config.json values that would crash or silently compute NaN (F11) ---------------------------------------


def _mutated(edit) -> dict:
    raw = copy.deepcopy(FIXTURE_CONFIG)
    edit(raw)
    return raw


def _text(raw: dict) -> dict:
    return raw["text_config"]


def _rope(raw: dict, kind: str) -> dict:
    return raw["text_config"]["rope_parameters"][kind]


@pytest.mark.parametrize("edit, message", [
    (lambda c: _text(c).update(rope_parameters=[1, 2]), r"text_config\.rope_parameters must be an object"),
    (lambda c: _text(c)["rope_parameters"].update(sliding_attention="x"),
     r"rope_parameters\.sliding_attention must be an object"),
    (lambda c: c["vision_config"].update(rope_parameters="x"), r"vision_config\.rope_parameters must be an object"),
])
def test_rope_parameters_that_are_not_objects_are_named(edit, message):
    with pytest.raises(engine.EngineError, match=message):
        parse_config(_mutated(edit))


@pytest.mark.parametrize("edit, field", [
    (lambda c: _text(c).update(rms_norm_eps=float("nan")), "text_config.rms_norm_eps"),
    (lambda c: _text(c).update(rms_norm_eps=-1.0), "text_config.rms_norm_eps"),
    (lambda c: _text(c).update(rms_norm_eps=0), "text_config.rms_norm_eps"),
    (lambda c: _rope(c, "sliding_attention").update(rope_theta=0), "sliding_attention.rope_theta"),
    (lambda c: _rope(c, "full_attention").update(rope_theta=-5), "full_attention.rope_theta"),
    (lambda c: _rope(c, "full_attention").update(rope_theta=float("inf")), "full_attention.rope_theta"),
    (lambda c: _rope(c, "full_attention").update(partial_rotary_factor=0.0), "partial_rotary_factor"),
    (lambda c: _rope(c, "full_attention").update(partial_rotary_factor=2.0), "partial_rotary_factor"),
    (lambda c: _text(c).update(final_logit_softcapping=float("nan")), "final_logit_softcapping"),
    (lambda c: c["vision_config"]["rope_parameters"].update(rope_theta=0), "vision_config.rope_parameters"),
    (lambda c: c["vision_config"].update(rms_norm_eps=-1e-6), "vision_config.rms_norm_eps"),
    (lambda c: c["audio_config"].update(attention_logit_cap=0), "audio_config.attention_logit_cap"),
    (lambda c: c["audio_config"].update(rms_norm_eps=10 ** 400), "audio_config.rms_norm_eps"),
])
def test_numbers_that_make_nan_are_refused(edit, field):
    with pytest.raises(engine.EngineError, match=f"config.json: .*{field.replace('.', '[.]')}"):
        parse_config(_mutated(edit))


@pytest.mark.parametrize("block, method", [
    ({"quant_method": "fp8", "activation_scheme": "dynamic"}, "fp8"),
    ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "bitsandbytes"),
    ({"load_in_8bit": True}, "bitsandbytes"),
    ({"quant_method": "gptq", "bits": 4, "group_size": 128}, "gptq"),
])
def test_hugging_face_quantization_methods_are_named(block, method):
    with pytest.raises(engine.EngineError, match=f"quantization method '{method}' is not supported; use the bf16"):
        parse_config(_mutated(lambda c: c.update(quantization_config=block)))


# -- images given through the Python API ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return engine.load(MODELS / "tiny-e2b")


@pytest.fixture
def truncated_jpeg(tmp_path) -> Path:
    path = tmp_path / "cut.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, "JPEG")
    data = path.read_bytes()  # cut in the middle of the pixel data: the header still opens
    path.write_bytes(data[: len(data) // 2])
    return path


def test_lazily_opened_truncated_image_is_an_engine_error(model, truncated_jpeg):
    with pytest.raises(engine.EngineError, match=r"cut\.jpg is damaged or truncated"):
        model.embed_image(Image.open(truncated_jpeg))
    ids = [2, model.config.image_token_id, 3]
    with pytest.raises(engine.EngineError, match=r"cut\.jpg is damaged or truncated"):
        model.logits(ids, images=[Image.open(truncated_jpeg)])


@pytest.mark.parametrize("image", [str(MODELS.parent / "images" / "noise_37x91.png"), [[0, 0, 0]]])
def test_an_image_that_is_not_a_pil_image_is_named(model, image):
    with pytest.raises(engine.EngineError, match="an image must be a PIL image"):
        model.embed_image(image)
    with pytest.raises(engine.EngineError, match="an image must be a PIL image"):
        model.image_token_count(image)
