"""The compiled decode step gives the uncompiled step's logits, and traces only when a cache grows."""

import json

import mlx.core as mx
import numpy as np
import pytest

import engine
from conftest import MODELS
from engine.cache import SlidingCache
from engine.decode_step import DecodeStep

PROMPT = 250  # the full-attention caches grow past their first 256 slots during the steps below
STEPS = 10


def _prefilled(model, prompt, kv_bits):
    text = model.net.text
    caches = text.make_caches(kv_bits)
    ids = mx.array([prompt])
    mx.eval(text(text.embed(ids, model.dtype), ids, caches, offset=0))
    return caches


def _uncompiled_step(model, token, caches):
    text = model.net.text
    ids = token.reshape(1, 1)
    offset = next(c for c in caches if c is not None).length
    return text.logits(text(text.embed(ids, model.dtype), ids, caches, offset=offset)[:, -1])


@pytest.mark.parametrize("name,kv_bits", [("tiny-e2b", None), ("tiny-26b", None), ("tiny-31b", None),
                                          ("tiny-e2b-q4", None), ("tiny-e4b", 8), ("tiny-31b", 4)])
def test_compiled_steps_match_uncompiled_steps(name, kv_bits):
    _assert_compiled_steps_match(engine.load(MODELS / name), kv_bits)


@pytest.mark.parametrize("name", ["tiny-e2b", "tiny-26b"])
def test_compiled_steps_match_while_the_rings_fill_and_once_they_are_full(name, model_copy, monkeypatch):
    # Until a ring is full its empty slots must stay hidden (here they hold large keys that would
    # dominate attention); once it is full the step is traced again without a sliding mask.
    import engine.cache

    def reserved_with_large_keys(planes, needed, limit=None):
        grown = reserved(planes, needed, limit)
        used = planes[0].shape[2]
        return [mx.concatenate([plane[:, :, :used], mx.full(plane[:, :, used:].shape, 30.0, plane.dtype)], axis=2)
                for plane in grown]

    reserved = engine.cache._reserved
    monkeypatch.setattr(engine.cache, "_reserved", reserved_with_large_keys)
    folder = model_copy(name)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["sliding_window"] = PROMPT + STEPS // 2
    (folder / "config.json").write_text(json.dumps(config))
    caches = _assert_compiled_steps_match(engine.load(folder), None)
    assert all(cache.full for cache in caches if isinstance(cache, SlidingCache))


def _assert_compiled_steps_match(model, kv_bits) -> list:
    prompt = np.random.default_rng(0).integers(3, model.config.text.vocab_size, PROMPT).tolist()
    compiled_caches, plain_caches = _prefilled(model, prompt, kv_bits), _prefilled(model, prompt, kv_bits)
    token = mx.array([prompt[-1]])
    for _ in range(STEPS):
        compiled = model.decode_step(token, compiled_caches)
        plain = _uncompiled_step(model, token, plain_caches)
        scale = mx.abs(plain).max().item()
        assert mx.abs(compiled - plain).max().item() <= 1e-4 * scale
        token = mx.argmax(plain, axis=-1)
    lengths = {c.length for c in compiled_caches + plain_caches if c is not None}
    assert lengths == {PROMPT + STEPS}
    return compiled_caches


def test_a_step_is_traced_once_per_cache_capacity(monkeypatch):
    model = engine.load(MODELS / "tiny-e2b")
    traces = []
    original = DecodeStep._traced
    monkeypatch.setattr(DecodeStep, "_traced", lambda self, *args: traces.append(1) or original(self, *args))
    caches = _prefilled(model, list(range(3, 3 + PROMPT)), None)
    token = mx.array([5])
    for _ in range(STEPS):  # positions 250..259 cross the 256-slot boundary once
        mx.eval(model.decode_step(token, caches))
    assert len(traces) == 2
