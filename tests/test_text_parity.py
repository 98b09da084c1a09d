"""model.logits against the transformers reference, for every fixture shape, layout and precision."""

import numpy as np
import pytest

import engine
from conftest import MODELS, REFERENCE

FLOAT32 = ["tiny-e2b", "tiny-e4b", "tiny-26b", "tiny-31b", "tiny-e2b-mlx", "tiny-26b-mlx", "tiny-e4b-bf16"]
QUANTIZED = ["tiny-e2b-q4", "tiny-26b-q4", "tiny-31b-q8"]


def _reference(name):
    data = np.load(REFERENCE / f"{name}.npz")
    return data["input_ids"].astype(int).tolist(), data["logits"]


def _relative_error(ours, reference):
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize("name", FLOAT32)
def test_float_logits_match_reference(name):
    ids, reference = _reference(name)
    model = engine.load(MODELS / name)
    ours = np.array(model.logits(ids))
    assert ours.shape == reference.shape
    assert _relative_error(ours, reference) < 1e-4


@pytest.mark.parametrize("name", QUANTIZED)
def test_quantized_logits_match_dequantized_reference(name):
    # The reference ran the same quantized values, dequantized, in float32; what remains is only the
    # order of float32 sums inside the quantized matmul kernels, so the float32 tolerance applies.
    ids, reference = _reference(name)
    model = engine.load(MODELS / name)
    ours = np.array(model.logits(ids))
    assert _relative_error(ours, reference) < 1e-4


@pytest.mark.parametrize("name", ["tiny-e2b", "tiny-26b", "tiny-31b-q8"])
def test_feed_forward_in_row_slices_matches_reference(name, monkeypatch):
    # Long prefill chunks go through the feed-forward a slice of rows at a time (for memory); slices
    # smaller than the fixture prompt, with a ragged last one, must not change any position's logits.
    import engine.decoder_layer

    ids, reference = _reference(name)
    monkeypatch.setattr(engine.decoder_layer, "feed_forward_rows", lambda width: 7)
    assert len(ids) % 7 != 0
    ours = np.array(engine.load(MODELS / name).logits(ids))
    assert _relative_error(ours, reference) < 1e-4


def test_prompts_cross_the_sliding_window():
    for name in FLOAT32:
        ids, _ = _reference(name)
        model = engine.load(MODELS / name)
        assert len(ids) > 2 * model.config.text.sliding_window


def test_logits_refuse_a_prompt_longer_than_the_context(model_copy):
    import json

    folder = model_copy("tiny-e2b")
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = 8
    (folder / "config.json").write_text(json.dumps(config))
    model = engine.load(folder)
    with pytest.raises(engine.EngineError, match="context window is 8"):
        model.logits(list(range(5, 15)))


def test_token_ids_outside_the_vocabulary_are_refused():
    model = engine.load(MODELS / "tiny-e2b")
    with pytest.raises(engine.EngineError, match="token ids must lie in"):
        model.logits([1, 2, model.config.text.vocab_size])


def test_bf16_scales_do_not_round_the_float32_computation(model_copy):
    # Real MLX conversions store bf16 scales. Dequantizing embedding rows in bf16 before a float32
    # computation once moved these logits by 6 %; only the bf16-rounded PLE scale (sqrt(32) -> 5.65625)
    # may differ from the same weights upcast to float32.
    import mlx.core as mx
    from mlx.utils import tree_map

    folder = model_copy("tiny-e2b-q4")
    weights = mx.load(str(folder / "model.safetensors"))
    mx.save_safetensors(str(folder / "model.safetensors"),
                        {k: v.astype(mx.bfloat16) if v.dtype == mx.float32 else v for k, v in weights.items()})
    ids, _ = _reference("tiny-e2b-q4")
    stored = np.array(engine.load(folder).logits(ids))
    upcast_model = engine.load(folder)
    upcast_model.net.update(tree_map(lambda a: a.astype(mx.float32) if a.dtype == mx.bfloat16 else a,
                                     upcast_model.net.parameters()))
    upcast = np.array(upcast_model.logits(ids))
    assert _relative_error(stored, upcast) < 1e-3


@pytest.mark.parametrize("name", ["tiny-e2b", "tiny-26b", "tiny-31b-q8"])
def test_the_fast_kernel_path_matches_reference(name, monkeypatch):
    # On a GPU, rope and attention run as mx.fast kernels; here that path runs through MLX's own CPU
    # decomposition of those kernels, so the path a Mac takes stays checked against the reference.
    import engine.fused

    monkeypatch.setattr(engine.fused, "has_fast_kernels", lambda: True)
    ids, reference = _reference(name)
    ours = np.array(engine.load(MODELS / name).logits(ids))
    assert _relative_error(ours, reference) < 1e-4
