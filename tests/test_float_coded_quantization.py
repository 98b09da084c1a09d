"""mxfp4 / mxfp8 checkpoints (float codes with a shared 8-bit exponent per 32 values, no biases).

The reference is the same model with every quantized matrix replaced by what it decodes to, written as a
float32 checkpoint: its float path is itself parity-tested against transformers.
"""

import json
import shutil

import mlx.core as mx
import numpy as np
import pytest

import engine
from engine.errors import EngineError
from tests.conftest import MODELS

PROMPT = [2, 17, 45, 9, 88, 130, 7, 61, 200, 33, 5, 150]


def _text_matrix(name: str, array: mx.array) -> bool:
    return name.startswith("language_model.") and name.endswith(".weight") and array.ndim >= 2 \
        and array.shape[-1] % 32 == 0


def _write(source, target, tensors: dict, quantization: dict | None) -> None:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.safetensors", "*.index.json"))
    mx.save_safetensors(str(target / "model.safetensors"), tensors, metadata={"format": "mlx"})
    config = json.loads((target / "config.json").read_text())
    config.pop("quantization_config", None)
    config.pop("quantization", None)
    if quantization:
        config["quantization"] = quantization
    (target / "config.json").write_text(json.dumps(config))


def coded_and_decoded(tmp_path, fixture: str, mode: str, bits: int):
    """The fixture in `mode` and, beside it, the float32 model those codes decode to."""
    source = MODELS / fixture
    tensors = {}
    for shard in sorted(source.glob("*.safetensors")):
        tensors.update(mx.load(str(shard)))
    coded, decoded = {}, {}
    for name, array in tensors.items():
        if not _text_matrix(name, array):
            coded[name] = decoded[name] = array
            continue
        stem = name.removesuffix(".weight")
        codes, scales = mx.quantize(array.astype(mx.float32), group_size=32, bits=bits, mode=mode)
        coded[f"{stem}.weight"], coded[f"{stem}.scales"] = codes, scales
        decoded[name] = mx.dequantize(codes, scales, None, group_size=32, bits=bits, mode=mode, dtype=mx.float32)
    _write(source, tmp_path / mode, coded, {"group_size": 32, "bits": bits, "mode": mode})
    _write(source, tmp_path / "decoded", decoded, None)
    return tmp_path / mode, tmp_path / "decoded"


@pytest.mark.parametrize("fixture", ["tiny-e2b-mlx", "tiny-26b-mlx"])
@pytest.mark.parametrize("mode, bits", [("mxfp4", 4), ("mxfp8", 8)])
def test_a_float_coded_checkpoint_computes_what_its_codes_decode_to(tmp_path, fixture, mode, bits):
    coded, decoded = coded_and_decoded(tmp_path, fixture, mode, bits)
    model = engine.load(coded)
    assert model.info.quantization == (bits, 32)
    got = np.array(model.logits(PROMPT))
    want = np.array(engine.load(decoded).logits(PROMPT))
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-4 * scale
    tokens = list(model.generate_ids(PROMPT, max_tokens=6, temperature=0.0, stop_ids=[]))
    assert tokens == list(engine.load(decoded).generate_ids(PROMPT, max_tokens=6, temperature=0.0, stop_ids=[]))


def test_a_float_coded_mode_with_other_sizes_is_refused_clearly(tmp_path):
    coded, _ = coded_and_decoded(tmp_path, "tiny-e2b-mlx", "mxfp4", 4)
    config = json.loads((coded / "config.json").read_text())
    config["quantization"]["group_size"] = 64
    (coded / "config.json").write_text(json.dumps(config))
    with pytest.raises(EngineError, match="mode mxfp4 must have bits 4 and group_size 32"):
        engine.load(coded)
    config["quantization"].update(mode="nvfp4", group_size=16)
    (coded / "config.json").write_text(json.dumps(config))
    with pytest.raises(EngineError, match="'nvfp4' is not supported"):
        engine.load(coded)
