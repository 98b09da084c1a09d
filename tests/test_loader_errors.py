"""Every kind of bad model folder is refused with an EngineError that says what is wrong."""

import json
import struct

import pytest

import engine
from engine.safetensors_header import read_safetensors_header


def _header(path):
    length = struct.unpack("<Q", path.read_bytes()[:8])[0]
    return json.loads(path.read_bytes()[8:8 + length]), length


def _rewrite_header(path, header):
    data = path.read_bytes()
    old_length = struct.unpack("<Q", data[:8])[0]
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data[8 + old_length:])


def test_missing_folder(tmp_path):
    with pytest.raises(engine.EngineError, match="does not exist"):
        engine.load(tmp_path / "nowhere")


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(engine.EngineError, match="no config.json"):
        engine.load(tmp_path)


def test_a_file_instead_of_a_folder(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"x")
    with pytest.raises(engine.EngineError, match="is a file"):
        engine.load(path)


def test_truncated_weight_file(model_copy):
    folder = model_copy("tiny-e2b")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(engine.EngineError, match="truncated"):
        engine.load(folder)


def test_header_length_past_the_end(model_copy):
    folder = model_copy("tiny-e2b")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(struct.pack("<Q", len(data) * 2) + data[8:])
    with pytest.raises(engine.EngineError, match="header claims"):
        engine.load(folder)


def test_shape_that_does_not_match_its_byte_count(model_copy):
    folder = model_copy("tiny-e2b")
    weights = folder / "model.safetensors"
    header, _ = _header(weights)
    name = next(k for k in header if k.endswith("embed_tokens.weight"))
    header[name]["shape"] = [header[name]["shape"][0] + 1, header[name]["shape"][1]]
    _rewrite_header(weights, header)
    with pytest.raises(engine.EngineError, match="embed_tokens.weight.*needs"):
        engine.load(folder)


def test_unknown_dtype(model_copy):
    folder = model_copy("tiny-e2b")
    weights = folder / "model.safetensors"
    header, _ = _header(weights)
    name = next(k for k in header if k != "__metadata__")
    header[name]["dtype"] = "Q9"
    _rewrite_header(weights, header)
    with pytest.raises(engine.EngineError, match="unknown dtype"):
        engine.load(folder)


def test_missing_shard(model_copy):
    folder = model_copy("tiny-e2b-mlx")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (folder / shard).unlink()
    with pytest.raises(engine.EngineError, match=f"missing weight shard.*{shard}"):
        engine.load(folder)


@pytest.mark.parametrize("field,value,message", [
    ("hidden_size", -64, "hidden_size = -64"),
    ("num_hidden_layers", 10**9, "num_hidden_layers = 1000000000"),
    ("vocab_size", "many", "vocab_size must be an integer"),
])
def test_config_with_negative_or_absurd_sizes(model_copy, field, value, message):
    folder = model_copy("tiny-e2b")
    config = json.loads((folder / "config.json").read_text())
    config["text_config"][field] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(engine.EngineError, match=message):
        engine.load(folder)


@pytest.mark.parametrize("section,field,value", [
    ("text_config", "hidden_activation", "silu"),
    ("vision_config", "hidden_activation", "relu"),
    ("audio_config", "hidden_act", "gelu"),
])
def test_an_activation_the_towers_do_not_compute_is_refused(model_copy, section, field, value):
    folder = model_copy("tiny-e2b")
    config = json.loads((folder / "config.json").read_text())
    config[section][field] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(engine.EngineError, match=f"{section}.{field} = '{value}' is not supported"):
        engine.load(folder)


def test_unknown_model_type(model_copy):
    folder = model_copy("tiny-e2b")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "llama"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(engine.EngineError, match="model_type 'llama' is not supported"):
        engine.load(folder)


def test_config_that_is_not_json(model_copy):
    folder = model_copy("tiny-e2b")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(engine.EngineError, match="not valid JSON"):
        engine.load(folder)


def test_weights_that_belong_to_another_config(model_copy):
    folder = model_copy("tiny-e2b")
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["intermediate_size"] *= 2
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(engine.EngineError, match="wrong shape.*mlp"):
        engine.load(folder)


def test_unknown_tensor_is_named(model_copy):
    import mlx.core as mx

    folder = model_copy("tiny-e2b-mlx")
    extra = folder / "extra.safetensors"
    mx.save_safetensors(str(extra), {"language_model.model.mystery.weight": mx.zeros((2, 2))})
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"]["language_model.model.mystery.weight"] = "extra.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(engine.EngineError, match="mystery.weight"):
        engine.load(folder)


def test_missing_tensor_is_named(model_copy):
    import mlx.core as mx

    folder = model_copy("tiny-e2b")
    weights = folder / "model.safetensors"
    tensors = mx.load(str(weights))
    del tensors["model.language_model.norm.weight"]
    mx.save_safetensors(str(weights), tensors)
    with pytest.raises(engine.EngineError, match="lack 1 tensor.*language_model.model.norm.weight"):
        engine.load(folder)


def test_header_reader_accepts_the_fixture():
    from conftest import MODELS

    entries = read_safetensors_header(MODELS / "tiny-e2b" / "model.safetensors")
    assert any(name.endswith("embed_tokens.weight") for name in entries)
