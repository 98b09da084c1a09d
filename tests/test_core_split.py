import threading

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import engine
from conftest import MODELS, REFERENCE
from engine import core_split, loader
from engine.core_split import CoreSplitLinear, in_parts


@pytest.mark.parametrize("parts", [2, 3])
def test_in_parts_joins_the_parts_outputs_in_order(parts):
    x = mx.random.normal((7, 5), key=mx.random.key(3))
    y = mx.random.normal((7, 5), key=mx.random.key(4))
    joined = in_parts(lambda a, b: a * 2 + b, [x, y], 0, parts, 0)
    np.testing.assert_array_equal(np.array(joined), np.array(x * 2 + y))


@pytest.mark.parametrize("bits, mode, rows", [(4, "affine", 97), (8, "affine", 64), (4, "mxfp4", 50)])
@pytest.mark.parametrize("parts", [2, 3])
def test_a_split_linear_gives_the_unsplit_output_bit_for_bit(bits, mode, rows, parts):
    group = 32
    linear = nn.QuantizedLinear.from_linear(nn.Linear(128, rows, bias=False), group, bits, mode=mode)
    split = CoreSplitLinear.of(linear, parts)
    for shape in [(1, 1, 128), (2, 9, 128)]:
        x = mx.random.normal(shape, key=mx.random.key(5))
        np.testing.assert_array_equal(np.array(split(x)), np.array(linear(x)))


def _prompt(count: int) -> list[int]:
    return np.load(REFERENCE / "tiny-e2b.npz")["input_ids"].astype(int).tolist()[:count]


def _split_model(name: str):
    model = engine.load(MODELS / name)
    model.net.text.split_over_cores(2, min_bytes=0)
    return model


@pytest.mark.parametrize("name", ["tiny-e2b-q4", "tiny-26b-q4", "tiny-31b-q8"])
def test_a_model_split_over_cores_gives_the_same_logits_and_tokens(name):
    # 70 tokens: the 26B's prompt takes the sorted expert path, its decode steps the in-place one.
    ids = _prompt(70)
    whole, split = engine.load(MODELS / name), _split_model(name)
    text = split.net.text
    assert text.head_parts == 2
    assert any(isinstance(module, CoreSplitLinear) for _, module in text.named_modules())
    assert all(layer.experts.switch_glu.pair_parts == 2 for layer in text.layers if layer.has_moe)
    np.testing.assert_array_equal(np.array(split.logits(ids)), np.array(whole.logits(ids)))
    assert list(split.generate_ids(ids, max_tokens=6)) == list(whole.generate_ids(ids, max_tokens=6))


def test_a_split_model_loaded_and_run_on_a_worker_thread_gives_the_main_threads_tokens():
    # MLX streams belong to the thread that made them: the worker gets its own.
    ids = _prompt(20)
    expected = list(_split_model("tiny-26b-q4").generate_ids(ids, max_tokens=6))
    seen = {}

    def work():
        seen["tokens"] = list(_split_model("tiny-26b-q4").generate_ids(ids, max_tokens=6))
        engine.finish_thread()

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert seen["tokens"] == expected


def test_weights_below_the_threshold_stay_whole():
    model = engine.load(MODELS / "tiny-26b-q4")
    model.net.text.split_over_cores(2)
    text = model.net.text
    assert text.head_parts == 1
    assert not any(isinstance(module, CoreSplitLinear) for _, module in text.named_modules())
    assert all(layer.experts.switch_glu.pair_parts == 1 for layer in text.layers if layer.has_moe)


def test_loading_on_the_cpu_splits_over_the_usable_cores(monkeypatch):
    monkeypatch.setattr(core_split, "MIN_SPLIT_BYTES", 0)
    monkeypatch.setattr(loader, "usable_cores", lambda: 3)
    text = engine.load(MODELS / "tiny-e2b-q4").net.text
    assert text.head_parts == 3
    assert {module.parts for _, module in text.named_modules() if isinstance(module, CoreSplitLinear)} == {3}
    monkeypatch.setattr(loader, "usable_cores", lambda: 1)
    assert engine.load(MODELS / "tiny-e2b-q4").net.text.head_parts == 1


def test_nothing_is_split_where_the_fast_kernels_run(monkeypatch):
    # The benchmark's GPU-shaped op count loads models this way: it must see a GPU's graph.
    from engine.bench.step_probe import fast_ops_as_kernels

    monkeypatch.setattr(core_split, "MIN_SPLIT_BYTES", 0)
    monkeypatch.setattr(loader, "usable_cores", lambda: 2)
    with fast_ops_as_kernels():
        text = engine.load(MODELS / "tiny-26b-q4").net.text
    assert text.head_parts == 1
    assert not any(isinstance(module, CoreSplitLinear) for _, module in text.named_modules())
