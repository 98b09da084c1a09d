"""mxfp4 / mxfp8 checkpoints (float codes with a shared 8-bit exponent per 32 values, no biases).

The reference is the same model with every quantized matrix replaced by what it decodes to, written as a
float32 checkpoint: its float path is itself parity-tested against transformers.
"""

import json
import shutil

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image

import engine
import engine.config
from engine.errors import EngineError
from tests.conftest import FIXTURES, MODELS

PROMPT = [2, 17, 45, 9, 88, 130, 7, 61, 200, 33, 5, 150]


ROUTER_OVERRIDE = {"group_size": 64, "bits": 8}   # as mlx-lm writes it: no mode, so affine
PATCH_PROJECTION = "vision_tower.patch_embedder.input_proj.weight"


def _quantized(name: str, array: mx.array) -> bool:
    """The text matrices, as mlx-lm quantizes them, and the vision patch projection, as some tools do."""
    matrix = name.endswith(".weight") and array.ndim >= 2 and array.shape[-1] % 32 == 0
    return matrix and (name.startswith("language_model.") or name == PATCH_PROJECTION)


def _write(source, target, tensors: dict, quantization: dict | None) -> None:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.safetensors", "*.index.json"))
    mx.save_safetensors(str(target / "model.safetensors"), tensors, metadata={"format": "mlx"})
    config = json.loads((target / "config.json").read_text())
    config.pop("quantization_config", None)
    config.pop("quantization", None)
    if quantization:
        config["quantization"] = quantization
    (target / "config.json").write_text(json.dumps(config))


def _code(array: mx.array, mode: str, bits: int, group: int) -> tuple[dict, mx.array]:
    """The stored leaves of one quantized matrix, and the float32 matrix they decode to."""
    codes, scales, *biases = mx.quantize(array.astype(mx.float32), group_size=group, bits=bits, mode=mode)
    leaves = {"weight": codes, "scales": scales, **({"biases": biases[0]} if biases else {})}
    decoded = mx.dequantize(codes, scales, biases[0] if biases else None, group_size=group, bits=bits, mode=mode,
                            dtype=mx.float32)
    return leaves, decoded


def coded_and_decoded(tmp_path, fixture: str, mode: str, bits: int):
    """The fixture in `mode` (its MoE routers 8-bit affine) and, beside it, the float32 model the codes decode to."""
    source = MODELS / fixture
    tensors = {}
    for shard in sorted(source.glob("*.safetensors")):
        tensors.update(mx.load(str(shard)))
    coded, decoded = {}, {}
    block = {"group_size": 32, "bits": bits, "mode": mode}
    for name, array in tensors.items():
        if not _quantized(name, array):
            coded[name] = decoded[name] = array
            continue
        stem = name.removesuffix(".weight")
        router = stem.endswith("router.proj")
        if router:
            block[stem] = ROUTER_OVERRIDE
        leaves, decoded[name] = _code(array, *(("affine", 8, 64) if router else (mode, bits, 32)))
        coded.update({f"{stem}.{leaf}": value for leaf, value in leaves.items()})
    _write(source, tmp_path / mode, coded, block)
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


def test_a_float_coded_patch_projection_sees_images_as_its_decoded_floats_do(tmp_path):
    coded, decoded = coded_and_decoded(tmp_path, "tiny-e2b-mlx", "mxfp4", 4)
    model = engine.load(coded)
    assert "scales" in model.net.vision_tower.patch_embedder.input_proj
    image = Image.open(FIXTURES / "media" / "image_wide.png")
    got = np.array(model.embed_image(image, budget=70))
    want = np.array(engine.load(decoded).embed_image(image, budget=70))
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_an_mxfp4_moe_checkpoint_keeps_its_routers_affine():
    config = engine.config.parse_quantization({"group_size": 32, "bits": 4, "mode": "mxfp4",
                                               "language_model.model.layers.0.router.proj": ROUTER_OVERRIDE})
    router = config.for_module("language_model.model.layers.0.router.proj")
    assert (router.mode, router.bits, router.group_size) == ("affine", 8, 64)
