"""The committed tiny-model fixtures are consistent with each other and with the Gemma 4 formats.

These tests read only the files under tests/fixtures (regenerate them with tools/make_fixtures.py).
"""

from __future__ import annotations

import json
import re
import struct
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from safetensors.numpy import load_file
from tokenizers import Tokenizer

FIXTURES = Path(__file__).parent / "fixtures"
MODELS = FIXTURES / "models"
REFERENCE = FIXTURES / "reference"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
NAMES = sorted(MANIFEST)

SPECIAL = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<|tool>", "<tool|>", "<|tool_call>", "<tool_call|>",
           "<|tool_response>", "<tool_response|>", '<|"|>', "<|think|>", "<|channel>", "<channel|>", "<|turn>",
           "<turn|>", "<|image>", "<image|>", "<|audio>", "<audio|>", "<|image|>", "<|audio|>", "<|video|>")
CONFIG_TOKENS = {"boi_token_id": "<|image>", "eoi_token_id": "<image|>", "image_token_id": "<|image|>",
                 "video_token_id": "<|video|>", "boa_token_id": "<|audio>", "eoa_token_id": "<audio|>",
                 "eoa_token_index": "<audio|>", "audio_token_id": "<|audio|>"}


# ----------------------------------------------------------------------------------------- helpers

@cache
def config(name: str) -> dict:
    return json.loads((MODELS / name / "config.json").read_text())


@cache
def tokenizer(name: str) -> Tokenizer:
    return Tokenizer.from_file(str(MODELS / name / "tokenizer.json"))


def token_id(name: str, token: str) -> int:
    index = tokenizer(name).token_to_id(token)
    assert index is not None, f"{token} is not in the vocabulary of {name}"
    return index


@cache
def header(path: Path) -> dict:
    """The safetensors header: name -> {dtype, shape, data_offsets}."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        entries = json.loads(handle.read(length))
    entries.pop("__metadata__", None)
    return entries


def weight_files(name: str) -> list[Path]:
    index = MODELS / name / "model.safetensors.index.json"
    if index.exists():
        return sorted({MODELS / name / file for file in json.loads(index.read_text())["weight_map"].values()})
    return [MODELS / name / "model.safetensors"]


def tensors(name: str) -> dict[str, dict]:
    merged: dict[str, dict] = {}
    for path in weight_files(name):
        merged.update(header(path))
    return merged


def float_weights(name: str) -> dict[str, np.ndarray]:
    merged: dict[str, np.ndarray] = {}
    for path in weight_files(name):
        merged.update(load_file(path))
    return merged


def render(name: str, **context: object) -> str:
    source = (MODELS / name / "chat_template.jinja").read_text()
    return ImmutableSandboxedEnvironment().from_string(source).render(**context)


def reference(name: str) -> dict[str, np.ndarray]:
    with np.load(REFERENCE / f"{name}.npz") as archive:
        return dict(archive)


def text(name: str) -> dict:
    return config(name)["text_config"]


def is_full(name: str, layer: int) -> bool:
    return text(name)["layer_types"][layer] == "full_attention"


def layers_of(name: str) -> range:
    return range(text(name)["num_hidden_layers"])


def by_layout(layout: str, quantized: bool | None = None) -> list[str]:
    return [name for name in NAMES if MANIFEST[name]["layout"] == layout
            and (quantized is None or bool(MANIFEST[name]["quantization"]) == quantized)]


SMALL = [name for name in NAMES if MANIFEST[name]["template"] == "small"]
LARGE = [name for name in NAMES if MANIFEST[name]["template"] == "large"]


# ----------------------------------------------------------------------------------------- folders and tokens

def test_manifest_lists_every_model_folder() -> None:
    assert sorted(path.name for path in MODELS.iterdir() if path.is_dir()) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_folder_has_the_files_of_a_release(name: str) -> None:
    for file in ("config.json", "generation_config.json", "processor_config.json", "tokenizer.json",
                 "tokenizer_config.json", "chat_template.jinja"):
        assert (MODELS / name / file).is_file(), f"{name} lacks {file}"
    assert all(path.is_file() for path in weight_files(name))


@pytest.mark.parametrize("name", NAMES)
def test_special_tokens_sit_at_small_ids_in_the_tiny_vocabulary(name: str) -> None:
    vocab_size = text(name)["vocab_size"]
    assert tokenizer(name).get_vocab_size() <= vocab_size
    assert [token_id(name, token) for token in SPECIAL] == sorted(token_id(name, token) for token in SPECIAL)
    assert token_id(name, "<pad>") == 0 and token_id(name, "<eos>") == 1 and token_id(name, "<bos>") == 2
    assert max(token_id(name, token) for token in SPECIAL) < vocab_size
    added = {entry["content"]: entry for entry in json.loads((MODELS / name / "tokenizer.json").read_text())
             ["added_tokens"]}
    assert all(added[token]["special"] for token in SPECIAL)


@pytest.mark.parametrize("name", NAMES)
def test_config_token_ids_match_the_tokenizer(name: str) -> None:
    cfg = config(name)
    for key, token in CONFIG_TOKENS.items():
        assert cfg[key] == token_id(name, token), key
    for key, token in (("pad_token_id", "<pad>"), ("bos_token_id", "<bos>"), ("eos_token_id", "<eos>")):
        assert text(name)[key] == token_id(name, token), f"text_config.{key}"
    expected_eos = [token_id(name, "<eos>"), token_id(name, "<turn|>")]
    if MANIFEST[name]["source"] == "tiny-26b":
        expected_eos.append(token_id(name, "<|tool_response>"))
    assert cfg["eos_token_id"] == expected_eos
    generation = json.loads((MODELS / name / "generation_config.json").read_text())
    assert generation["eos_token_id"] == expected_eos
    assert generation["bos_token_id"] == token_id(name, "<bos>")


@pytest.mark.parametrize("name", NAMES)
def test_tokenizer_config_adds_no_bos_of_its_own(name: str) -> None:
    settings = json.loads((MODELS / name / "tokenizer_config.json").read_text())
    assert settings["bos_token"] == "<bos>" and settings["add_bos_token"] is False
    with_specials = tokenizer(name).encode("hi", add_special_tokens=True).ids
    assert with_specials == tokenizer(name).encode("hi", add_special_tokens=False).ids
    assert token_id(name, "<bos>") not in with_specials


def test_rare_characters_fall_back_to_bytes_and_decode_back() -> None:
    name = NAMES[0]
    sample = "café 日本 🚀 done"
    encoding = tokenizer(name).encode(sample, add_special_tokens=False)
    assert encoding.tokens.count("<0xF0>") == 1  # the emoji's first byte
    assert sum(token.startswith("<0xE") for token in encoding.tokens) == 2  # one lead byte per CJK character
    assert tokenizer(name).decode(encoding.ids, skip_special_tokens=False) == sample


def test_special_strings_tokenize_to_single_ids() -> None:
    name = NAMES[0]
    prompt = "".join(SPECIAL)
    assert tokenizer(name).encode(prompt, add_special_tokens=False).ids == [token_id(name, t) for t in SPECIAL]


def test_every_folder_shares_one_tokenizer() -> None:
    assert len({(MODELS / name / "tokenizer.json").read_bytes() for name in NAMES}) == 1


@pytest.mark.parametrize("name", NAMES)
def test_processor_config_has_audio_features_only_with_an_audio_tower(name: str) -> None:
    processor = json.loads((MODELS / name / "processor_config.json").read_text())
    assert processor["image_processor"]["max_soft_tokens"] == 280
    assert processor["image_processor"]["do_normalize"] is False
    assert ("feature_extractor" in processor) == (config(name).get("audio_config") is not None)


# ----------------------------------------------------------------------------------------- chat template

USER = [{"role": "user", "content": "Hello there"}]


@pytest.mark.parametrize("name", SMALL)
def test_plain_user_turn(name: str) -> None:
    assert render(name, messages=USER, add_generation_prompt=True) == \
        "<bos><|turn>user\nHello there<turn|>\n<|turn>model\n"


@pytest.mark.parametrize("name", NAMES)
def test_system_turn_with_thinking(name: str) -> None:
    messages = [{"role": "system", "content": "Be brief."}, *USER]
    assert render(name, messages=messages, add_generation_prompt=True, enable_thinking=True) == \
        "<bos><|turn>system\n<|think|>\nBe brief.<turn|>\n<|turn>user\nHello there<turn|>\n<|turn>model\n"


@pytest.mark.parametrize("name", LARGE)
def test_large_template_prefills_an_empty_thought_when_thinking_is_off(name: str) -> None:
    assert render(name, messages=USER, add_generation_prompt=True) == \
        "<bos><|turn>user\nHello there<turn|>\n<|turn>model\n<|channel>thought\n<channel|>"
    assert render(name, messages=USER, add_generation_prompt=True, enable_thinking=True).endswith(
        "<turn|>\n<|turn>model\n")


@pytest.mark.parametrize("name", NAMES)
def test_thoughts_are_stripped_from_earlier_model_turns(name: str) -> None:
    messages = [*USER, {"role": "assistant", "content": "<|channel>thought\nThey greet me.<channel|>Hi!"},
                {"role": "user", "content": "Bye"}]
    prompt = render(name, messages=messages)
    assert prompt == "<bos><|turn>user\nHello there<turn|>\n<|turn>model\nHi!<turn|>\n<|turn>user\nBye<turn|>\n"


@pytest.mark.parametrize("name", NAMES)
def test_media_items_come_first_as_placeholders(name: str) -> None:
    content = [{"type": "text", "text": "Compare them."}, {"type": "image"}, {"type": "audio"}, {"type": "video"}]
    prompt = render(name, messages=[{"role": "user", "content": content}])
    assert prompt == "<bos><|turn>user\n<|image|><|audio|><|video|>Compare them.<turn|>\n"


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CALL = [*USER, {"role": "assistant", "content": "", "tool_calls": [
    {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}}]},
    {"role": "tool", "name": "get_weather", "content": {"temperature": 15, "sky": "sunny"}}]


@pytest.mark.parametrize("name", NAMES)
def test_tool_declaration_call_and_response(name: str) -> None:
    prompt = render(name, messages=CALL, tools=[WEATHER_TOOL], add_generation_prompt=True)
    assert prompt == (
        '<bos><|turn>system\n<|tool>declaration:get_weather{description:<|"|>Current weather<|"|>,'
        'parameters:{type:<|"|>OBJECT<|"|>,properties:{city:{type:<|"|>STRING<|"|>}},required:[<|"|>city<|"|>]}}'
        '<tool|><turn|>\n<|turn>user\nHello there<turn|>\n<|turn>model\n'
        '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>,days:3}<tool_call|>'
        '<|tool_response>response:get_weather{temperature:15,sky:<|"|>sunny<|"|>}<tool_response|>')


@pytest.mark.parametrize("name", NAMES)
def test_answer_after_a_tool_response_continues_the_model_turn(name: str) -> None:
    messages = [*CALL, {"role": "assistant", "content": "Sunny, 15 degrees."}, {"role": "user", "content": "Ok"}]
    prompt = render(name, messages=messages)
    assert prompt.endswith('<tool_response|>Sunny, 15 degrees.<turn|>\n<|turn>user\nOk<turn|>\n')
    assert prompt.count("<|turn>model\n") == 1


@pytest.mark.parametrize("name", NAMES)
def test_template_output_does_not_depend_on_whitespace_options(name: str) -> None:
    source = (MODELS / name / "chat_template.jinja").read_text()
    trimming = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    messages = [{"role": "system", "content": "Be brief."}, *CALL]
    context = dict(messages=messages, tools=[WEATHER_TOOL], add_generation_prompt=True, enable_thinking=True)
    assert trimming.from_string(source).render(**context) == render(name, **context)


def test_small_and_large_templates_differ_only_in_the_prefill_switch() -> None:
    small = {(MODELS / name / "chat_template.jinja").read_text() for name in SMALL}
    large = {(MODELS / name / "chat_template.jinja").read_text() for name in LARGE}
    assert len(small) == 1 and len(large) == 1
    small_lines, large_lines = small.pop().splitlines(), large.pop().splitlines()
    changed = [(a, b) for a, b in zip(small_lines, large_lines) if a != b]
    assert len(small_lines) == len(large_lines) and len(changed) == 1
    assert "false" in changed[0][0] and "true" in changed[0][1]


# ----------------------------------------------------------------------------------------- references

@pytest.mark.parametrize("name", NAMES)
def test_text_reference_spans_more_than_two_windows_of_ordinary_tokens(name: str) -> None:
    ref = reference(name)
    ids, logits = ref["input_ids"], ref["logits"]
    assert ids.ndim == 1 and len(ids) > 2 * text(name)["sliding_window"]
    assert not set(ids.tolist()) & {token_id(name, token) for token in SPECIAL}
    assert logits.dtype == np.float32 and logits.shape == (len(ids), text(name)["vocab_size"])
    assert np.isfinite(logits).all() and np.abs(logits).max() < text(name)["final_logit_softcapping"]
    assert 1.0 < logits.std(axis=-1).mean() < 10.0  # random weights, yet logits with a real spread


@pytest.mark.parametrize("name", NAMES)
def test_multimodal_reference_matches_its_placeholders(name: str) -> None:
    ref, cfg = reference(name), config(name)
    ids = ref["mm_input_ids"].tolist()
    hidden = text(name)["hidden_size"]
    assert ids.count(cfg["image_token_id"]) == ref["image_token_counts"].sum() == len(ref["image_features"])
    assert ids.count(cfg["boi_token_id"]) == ids.count(cfg["eoi_token_id"]) == len(ref["image_files"])
    assert ref["image_features"].shape[1] == hidden
    assert all((FIXTURES / "media" / file).is_file() for file in ref["image_files"])
    if cfg.get("audio_config"):
        assert ids.count(cfg["audio_token_id"]) == ref["audio_token_counts"].sum() == len(ref["audio_features"])
        assert ref["audio_features"].shape[1] == hidden
    else:
        assert cfg["audio_token_id"] not in ids and "audio_features" not in ref
    rows = ref["mm_logit_rows"]
    assert ref["mm_logits"].shape == (len(rows), text(name)["vocab_size"])
    assert rows[-1] == len(ids) - 1 and np.all(np.diff(rows) > 0)


@pytest.mark.parametrize("name", [name for name in NAMES if MANIFEST[name]["layout"] == "mlx"
                                  and not MANIFEST[name]["quantization"]])
def test_layout_copies_share_the_reference_of_their_source(name: str) -> None:
    copy, source = reference(name), reference(MANIFEST[name]["source"])
    assert copy.keys() == source.keys()
    assert all(np.array_equal(copy[key], source[key]) for key in copy)


@pytest.mark.parametrize("name", [name for name in NAMES if MANIFEST[name]["quantization"]])
def test_quantised_copies_keep_the_towers_of_their_source(name: str) -> None:
    ours, source = reference(name), reference(MANIFEST[name]["source"])
    np.testing.assert_array_equal(ours["image_token_counts"], source["image_token_counts"])
    np.testing.assert_array_equal(ours["image_features"], source["image_features"])
    if "audio_features" in source and "embed_audio.embedding_projection.scales" not in tensors(name):
        np.testing.assert_array_equal(ours["audio_features"], source["audio_features"])


def raw_bf16(path: Path, key: str) -> np.ndarray:
    """A BF16 tensor widened to float32 without any library that knows bf16."""
    entry = header(path)[key]
    (length,) = struct.unpack("<Q", path.read_bytes()[:8])
    start, end = (8 + length + offset for offset in entry["data_offsets"])
    halves = np.frombuffer(path.read_bytes()[start:end], dtype="<u2").astype(np.uint32)
    return (halves << 16).view(np.float32).reshape(entry["shape"])


@pytest.mark.parametrize("name", [name for name in NAMES if MANIFEST[name]["dtype"] == "bfloat16"])
def test_bf16_copy_holds_the_source_values_exactly(name: str) -> None:
    source = float_weights(MANIFEST[name]["source"])
    path = MODELS / name / "model.safetensors"
    assert set(header(path)) == set(source)
    for key in ("model.language_model.embed_tokens.weight", "model.language_model.layers.0.layer_scalar",
                "model.vision_tower.encoder.layers.0.self_attn.q_proj.input_max"):
        np.testing.assert_array_equal(raw_bf16(path, key), source[key].reshape(header(path)[key]["shape"]))


# ----------------------------------------------------------------------------------------- weights per layout

def shape(name: str, key: str) -> list[int]:
    return tensors(name)[key]["shape"]


@pytest.mark.parametrize("name", by_layout("hf"))
def test_hf_layout_keys(name: str) -> None:
    keys = tensors(name)
    cfg = text(name)
    prefix = "model.language_model."
    assert all(key.startswith("model.") for key in keys) and "lm_head.weight" not in keys
    assert shape(name, prefix + "embed_tokens.weight") == [cfg["vocab_size"], cfg["hidden_size"]]
    assert any(key.startswith("model.vision_tower.") for key in keys)
    assert "model.embed_vision.embedding_projection.weight" in keys
    assert any(key.startswith("model.audio_tower.") for key in keys) == (config(name).get("audio_config") is not None)
    for layer in layers_of(name):
        attn = f"{prefix}layers.{layer}.self_attn."
        head_dim = cfg["global_head_dim"] if is_full(name, layer) else cfg["head_dim"]
        assert shape(name, attn + "q_proj.weight") == [cfg["num_attention_heads"] * head_dim, cfg["hidden_size"]]
        assert (attn + "v_proj.weight" in keys) == (not (is_full(name, layer) and cfg["attention_k_eq_v"]))
        assert attn + "k_proj.weight" in keys and attn + "k_norm.weight" in keys  # KV-shared layers too
        assert f"{prefix}layers.{layer}.layer_scalar" in keys
    expected_dtype = "BF16" if MANIFEST[name]["dtype"] == "bfloat16" else "F32"
    assert {entry["dtype"] for entry in keys.values()} == {expected_dtype}


@pytest.mark.parametrize("name", [name for name in NAMES if text(name)["enable_moe_block"]])
def test_experts_are_fused_in_hf_and_split_in_mlx(name: str) -> None:
    cfg = text(name)
    experts, width, hidden = cfg["num_experts"], cfg["moe_intermediate_size"], cfg["hidden_size"]
    keys = tensors(name)
    if MANIFEST[name]["layout"] == "hf":
        assert shape(name, "model.language_model.layers.0.experts.gate_up_proj") == [experts, 2 * width, hidden]
        assert shape(name, "model.language_model.layers.0.experts.down_proj") == [experts, hidden, width]
    else:
        base = "language_model.model.layers.0.experts.switch_glu."
        assert not any("gate_up_proj" in key for key in keys)
        if not MANIFEST[name]["quantization"]:
            assert shape(name, base + "gate_proj.weight") == shape(name, base + "up_proj.weight") == \
                [experts, width, hidden]
            assert shape(name, base + "down_proj.weight") == [experts, hidden, width]
        assert {base + part + ".weight" for part in ("gate_proj", "up_proj", "down_proj")} <= keys.keys()


def mlx_name(hf_key: str) -> str:
    key = hf_key.removeprefix("model.")
    return "language_model.model." + key.removeprefix("language_model.") if key.startswith("language_model.") \
        else key


@pytest.mark.parametrize("name", by_layout("mlx", quantized=False))
def test_mlx_copy_holds_the_source_weights_under_mlx_names(name: str) -> None:
    source = float_weights(MANIFEST[name]["source"])
    ours = float_weights(name)
    for hf_key, value in source.items():
        if hf_key.endswith("experts.gate_up_proj"):
            base = mlx_name(hf_key).removesuffix("gate_up_proj") + "switch_glu."
            gate, up = np.split(value, 2, axis=-2)
            np.testing.assert_array_equal(ours[base + "gate_proj.weight"], gate)
            np.testing.assert_array_equal(ours[base + "up_proj.weight"], up)
        elif hf_key.endswith("experts.down_proj"):
            np.testing.assert_array_equal(ours[mlx_name(hf_key).removesuffix("down_proj") +
                                               "switch_glu.down_proj.weight"], value)
        elif hf_key.endswith("conv.weight") and value.ndim == 4:
            np.testing.assert_array_equal(ours[mlx_name(hf_key)], value.transpose(0, 2, 3, 1))
        elif hf_key.endswith("depthwise_conv1d.weight"):
            np.testing.assert_array_equal(ours[mlx_name(hf_key)], value.transpose(0, 2, 1))
        else:
            np.testing.assert_array_equal(ours[mlx_name(hf_key)], value)
    assert len(ours) == len(source) + sum(key.endswith("gate_up_proj") for key in source)


def test_sharded_copy_has_a_complete_index() -> None:
    sharded = [name for name in NAMES if MANIFEST[name]["shards"] > 1]
    assert sharded
    for name in sharded:
        index = json.loads((MODELS / name / "model.safetensors.index.json").read_text())
        files = weight_files(name)
        assert len(files) == MANIFEST[name]["shards"]
        for path in files:
            assert {key for key, file in index["weight_map"].items() if file == path.name} == set(header(path))
        sizes = sum(np.prod(entry["shape"], dtype=np.int64) * 4 for entry in tensors(name).values())
        assert index["metadata"]["total_size"] == sizes


def quant_spec(name: str, module: str) -> dict:
    block = config(name)["quantization"]
    return block.get(module, block)


@pytest.mark.parametrize("name", by_layout("mlx", quantized=True))
def test_quantised_tensors_agree_with_the_quantization_block(name: str) -> None:
    cfg = config(name)
    assert cfg["quantization"] == cfg["quantization_config"]
    keys = tensors(name)
    modules = sorted(key.removesuffix(".scales") for key in keys if key.endswith(".scales"))
    assert modules
    for module in modules:
        spec = quant_spec(name, module)
        packed, scales = shape(name, module + ".weight"), shape(name, module + ".scales")
        assert keys[module + ".weight"]["dtype"] == "U32" and shape(name, module + ".biases") == scales
        width = scales[-1] * spec["group_size"]
        assert packed[-1] * 32 == width * spec["bits"], module
        assert module.startswith(("language_model.model.", "embed_audio.")), module
    assert not any(key.startswith(("vision_tower.", "audio_tower.", "embed_vision.")) and key.endswith(".scales")
                   for key in keys)
    assert not any("norm" in module or "layer_scalar" in module for module in modules)
    assert "language_model.model.embed_tokens" in modules


def test_quantisation_overrides_follow_the_real_conversions() -> None:
    e2b = config("tiny-e2b-q4")["quantization"]
    assert e2b["bits"] == 4 and e2b["language_model.model.per_layer_model_projection"]["bits"] == 8
    moe = config("tiny-26b-q4")["quantization"]
    for layer in layers_of("tiny-26b-q4"):
        for module in ("router.proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            assert moe[f"language_model.model.layers.{layer}.{module}"]["bits"] == 8
    assert config("tiny-31b-q8")["quantization"]["bits"] == 8


@pytest.mark.parametrize("name", by_layout("mlx"))
def test_mlx_layout_conventions(name: str) -> None:
    keys = tensors(name)
    assert not any(key.startswith("model.") for key in keys)
    assert any(key.startswith("language_model.model.layers.") for key in keys)
    conv = [key for key in keys if key.endswith("conv.weight")]
    for key in conv:
        out_channels, k_h, k_w, _ = shape(name, key)
        assert (k_h, k_w) == (3, 3) and out_channels in config(name)["audio_config"]["subsampling_conv_channels"]
    for key in (key for key in keys if key.endswith("depthwise_conv1d.weight")):
        channels, kernel, one = shape(name, key)
        assert one == 1 and kernel == config(name)["audio_config"]["conv_kernel_size"]


@pytest.mark.parametrize("name", [name for name in NAMES if text(name)["num_kv_shared_layers"]])
def test_kv_shared_layers_keep_their_unused_projections(name: str) -> None:
    cfg = text(name)
    keys = tensors(name)
    prefix = "model.language_model." if MANIFEST[name]["layout"] == "hf" else "language_model.model."
    for layer in range(cfg["num_hidden_layers"] - cfg["num_kv_shared_layers"], cfg["num_hidden_layers"]):
        for part in ("k_proj.weight", "v_proj.weight", "k_norm.weight"):
            assert f"{prefix}layers.{layer}.self_attn.{part}" in keys


# ----------------------------------------------------------------------------------------- values

@pytest.mark.parametrize("name", [name for name in by_layout("hf") if MANIFEST[name]["dtype"] == "float32"])
def test_weights_are_randomised_away_from_their_init_values(name: str) -> None:
    weights = float_weights(name)
    norms = [key for key in weights if re.search(r"(norm|layernorm)\.weight$", key)]
    assert norms and all(0.5 <= weights[key].min() and weights[key].max() <= 1.5 for key in norms)
    assert all(weights[key].std() > 0.05 for key in norms)
    scalars = [weights[key].item() for key in weights if key.endswith("layer_scalar")]
    assert len(set(scalars)) == len(scalars) and all(0.5 <= value <= 1.5 for value in scalars)
    for key, value in weights.items():
        assert np.isfinite(value).all(), key
        assert value.size == 1 or value.std() > 0, key


@pytest.mark.parametrize("name", [name for name in by_layout("hf") if MANIFEST[name]["dtype"] == "float32"])
def test_clip_bounds_are_finite_and_ordered(name: str) -> None:
    weights = float_weights(name)
    lows = [key for key in weights if key.endswith(("input_min", "output_min"))]
    assert bool(lows) == config(name)["vision_config"]["use_clipped_linears"]
    for low in lows:
        high = low.replace("_min", "_max")
        assert np.isfinite(weights[low]) and np.isfinite(weights[high]) and weights[low] < weights[high], low


@pytest.mark.parametrize("name", [name for name in by_layout("hf") if config(name)["vision_config"]["standardize"]])
def test_standardize_buffers_are_random(name: str) -> None:
    weights = float_weights(name)
    assert weights["model.vision_tower.std_bias"].std() > 0.1
    assert weights["model.vision_tower.std_scale"].min() >= 0.5
