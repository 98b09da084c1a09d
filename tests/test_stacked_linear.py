import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import engine
from conftest import MODELS, REFERENCE
from engine.stacked_linear import stacked
from engine.text_model import TextModel


def _linears(widths, quantize=None):
    parts = [nn.Linear(64, width, bias=False) for width in widths]
    if quantize:
        parts = [nn.QuantizedLinear.from_linear(part, 32, bits) for part, bits in zip(parts, quantize)]
    return parts


@pytest.mark.parametrize("quantize", [None, (4, 4, 4), (8, 8, 8)])
def test_a_stacked_linear_gives_its_parts_outputs_side_by_side(quantize):
    parts = _linears([96, 32, 32], quantize)
    joined = stacked(parts)
    x = mx.random.normal((2, 3, 64), key=mx.random.key(7))
    expected = np.concatenate([np.array(part(x)) for part in parts], axis=-1)
    np.testing.assert_array_equal(np.array(joined(x)), expected)


@pytest.mark.parametrize("quantized", [False, True])
def test_stacked_expert_linears_give_each_experts_outputs_side_by_side(quantized):
    from engine.moe import SwitchLinear

    parts = [SwitchLinear(6, 64, width) for width in (32, 32)]
    if quantized:
        parts = [part.to_quantized(group_size=32, bits=4) for part in parts]
    joined = stacked(parts)
    x = mx.random.normal((3, 1, 64), key=mx.random.key(8))
    experts = mx.array([[0, 5], [2, 2], [4, 1]])
    rows = mx.array([[0, 0], [1, 1], [2, 2]])
    expected = np.concatenate([np.array(part(x, experts, False, rows)) for part in parts], axis=-1)
    np.testing.assert_array_equal(np.array(joined(x, experts, False, rows)), expected)


def test_linears_stored_differently_are_not_stacked():
    assert stacked(_linears([32, 32], quantize=(8, 4))) is None
    assert stacked([*_linears([32]), *_linears([32], quantize=(4,))]) is None
    assert stacked([nn.Linear(64, 32, bias=True), nn.Linear(64, 32, bias=True)]) is None


@pytest.mark.parametrize("name", ["tiny-e2b-q4", "tiny-26b", "tiny-31b-q8"])
def test_loading_stacks_projections_without_changing_the_logits(name, monkeypatch):
    ids = np.load(REFERENCE / "tiny-e2b.npz")["input_ids"].astype(int).tolist()[:12]
    model = engine.load(MODELS / name)
    config = model.config.text
    for index, layer in enumerate(model.net.text.layers):
        attention = layer.self_attn
        owner = not config.is_kv_consumer(index)
        assert ("qkv_proj" in attention) == owner and ("q_proj" in attention) == (not owner)
        assert "k_proj" not in attention and "v_proj" not in attention
        assert "gate_up_proj" in layer.mlp and "gate_proj" not in layer.mlp
        if layer.has_moe:
            assert "gate_up_proj" in layer.experts.switch_glu and "up_proj" not in layer.experts.switch_glu
    monkeypatch.setattr(TextModel, "stack_projections", lambda self: None)
    separate = engine.load(MODELS / name)
    assert "q_proj" in separate.net.text.layers[0].self_attn and "gate_proj" in separate.net.text.layers[0].mlp
    stacked_logits, separate_logits = np.array(model.logits(ids)), np.array(separate.logits(ids))
    np.testing.assert_allclose(stacked_logits, separate_logits, rtol=0, atol=1e-6 * np.abs(separate_logits).max())
