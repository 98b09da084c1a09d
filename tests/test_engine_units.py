"""Unit checks of the pieces that are easy to get subtly wrong (blueprint §10)."""

import gc

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import engine
from conftest import MODELS
from engine.config import RopeConfig, detect_variant, parse_config
from engine.rope import Rope, rope_periods

_SLIDING = {"rope_type": "default", "rope_theta": 10000.0}
_FULL = {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0}


def _real_text_config(hidden, layers, heads, kv, global_kv, intermediate, pattern, **extra):
    types = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(layers)]
    return {"model_type": "gemma4", "text_config": {
        "vocab_size": 262144, "hidden_size": hidden, "intermediate_size": intermediate,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv,
        "num_global_key_value_heads": global_kv, "head_dim": 256, "global_head_dim": 512, "layer_types": types,
        "rope_parameters": {"sliding_attention": _SLIDING, "full_attention": _FULL},
        "final_logit_softcapping": 30.0, **extra}}


REAL = {
    "e2b": _real_text_config(1536, 35, 8, 1, None, 6144, 5, num_kv_shared_layers=20, use_double_wide_mlp=True,
                             hidden_size_per_layer_input=256, sliding_window=512),
    "e4b": _real_text_config(2560, 42, 8, 2, None, 10240, 6, num_kv_shared_layers=18,
                             hidden_size_per_layer_input=256, sliding_window=512),
    "26b-a4b": _real_text_config(2816, 30, 16, 8, 2, 2112, 6, attention_k_eq_v=True, enable_moe_block=True,
                                 num_experts=128, top_k_experts=8, moe_intermediate_size=704,
                                 hidden_size_per_layer_input=0, sliding_window=1024),
    "31b": _real_text_config(5376, 60, 32, 16, 4, 21504, 6, attention_k_eq_v=True, hidden_size_per_layer_input=0,
                             sliding_window=1024),
}


@pytest.mark.parametrize("variant", sorted(REAL))
def test_real_configs_are_recognised(variant):
    assert detect_variant(parse_config(REAL[variant]).text) == variant


def test_other_geometry_is_custom():
    raw = REAL["e2b"]
    raw = {**raw, "text_config": {**raw["text_config"], "hidden_size": 1024}}
    assert detect_variant(parse_config(raw).text) == "custom"


def test_kv_sharing_producers_follow_the_blueprint():
    e2b = parse_config(REAL["e2b"]).text
    assert e2b.first_kv_shared_layer == 15
    assert {e2b.kv_producer(j) for j in range(15, 35) if not e2b.is_full(j)} == {13}
    assert {e2b.kv_producer(j) for j in range(15, 35) if e2b.is_full(j)} == {14}
    assert e2b.mlp_width(14) == 6144 and e2b.mlp_width(15) == 12288
    e4b = parse_config(REAL["e4b"]).text
    assert {e4b.kv_producer(j) for j in range(24, 42)} == {22, 23}


def test_full_layer_geometry_of_the_large_models():
    big = parse_config(REAL["31b"]).text
    full, sliding = 5, 0
    assert (big.layer_head_dim(full), big.layer_kv_heads(full), big.has_value_proj(full)) == (512, 4, False)
    assert (big.layer_head_dim(sliding), big.layer_kv_heads(sliding), big.has_value_proj(sliding)) == (256, 16, True)
    small = parse_config(REAL["e2b"]).text
    assert small.layer_kv_heads(4) == 1  # no global kv heads: full layers keep num_key_value_heads


def test_proportional_rope_rotates_pairs_j_and_j_plus_half():
    periods = rope_periods(512, RopeConfig(theta=1e6, partial_rotary_factor=0.25, proportional=True))
    assert np.isfinite(periods[:64]).all() and np.isinf(periods[64:]).all()
    np.testing.assert_allclose(periods[1], 1e6 ** (2 / 512), rtol=1e-6)  # exponent over the full head dim
    rope = Rope(512, RopeConfig(theta=1e6, partial_rotary_factor=0.25, proportional=True))
    x = mx.random.normal((1, 1, 3, 512), key=mx.random.key(0))
    y = rope.at(5, 5 + mx.arange(3))(x)
    unchanged = np.r_[64:256, 320:512]
    np.testing.assert_array_equal(np.array(y)[..., unchanged], np.array(x)[..., unchanged])
    # Lane 0 rotates with lane 256: the pair keeps its norm.
    pair = lambda a: np.hypot(np.array(a)[..., 0], np.array(a)[..., 256])
    np.testing.assert_allclose(pair(y), pair(x), rtol=1e-5)
    assert not np.allclose(np.array(y)[..., 0], np.array(x)[..., 0])


@pytest.mark.parametrize("hidden,rounded", [(1536, 39.25), (2560, 50.5), (2816, 53.0), (5376, 73.5)])
def test_embedding_scale_is_rounded_to_bf16(hidden, rounded):
    from engine.text_model import TextModel

    raw = REAL["e2b"]
    text = parse_config({**raw, "text_config": {**raw["text_config"], "hidden_size": hidden, "vocab_size": 4,
                                                "num_hidden_layers": 5, "num_kv_shared_layers": 0,
                                                "hidden_size_per_layer_input": 0,
                                                "layer_types": ["sliding_attention"] * 4 + ["full_attention"]}}).text
    model = TextModel(text)
    model.embed_tokens.weight = mx.ones((4, hidden), dtype=mx.bfloat16)
    out = model.embed(mx.array([[1]]), mx.float32)
    assert float(out[0, 0, 0]) == rounded


def test_router_equals_softmax_over_all_then_top_k_renormalised():
    from engine.moe import Router

    router = Router(hidden=16, experts=8, top_k=3, eps=1e-6)
    router.scale = mx.random.uniform(0.5, 1.5, (16,), key=mx.random.key(1))
    router.per_expert_scale = mx.random.uniform(0.5, 1.5, (8,), key=mx.random.key(2))
    x = mx.random.normal((5, 16), key=mx.random.key(3))
    indices, weights = router(x)
    z = np.array(x) / np.sqrt((np.array(x) ** 2).mean(-1, keepdims=True) + 1e-6)
    z = z * np.array(router.scale) / 4.0
    scores = z @ np.array(router.proj.weight).T
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    for row in range(5):
        top = np.argsort(-p[row])[:3]
        assert set(np.array(indices[row]).tolist()) == set(top.tolist())
        expected = p[row, top] / p[row, top].sum() * np.array(router.per_expert_scale)[top]
        got = dict(zip(np.array(indices[row]).tolist(), np.array(weights[row]).tolist()))
        np.testing.assert_allclose([got[i] for i in top], expected, rtol=1e-5)


def test_info_of_the_fixtures():
    e2b = engine.load(MODELS / "tiny-e2b")
    assert e2b.info.variant == "custom"
    assert e2b.info.modalities == {"text", "image", "video", "audio"}
    assert e2b.info.quantization is None
    assert e2b.info.weight_bytes > 0 and e2b.info.parameter_count > 0
    moe = engine.load(MODELS / "tiny-26b")
    assert "audio" not in moe.info.modalities
    quantized = engine.load(MODELS / "tiny-e2b-q4")
    assert quantized.info.quantization == (4, 32)
    # The same weights, counted the same way, whatever their storage.
    assert quantized.info.parameter_count == engine.load(MODELS / "tiny-e2b-mlx").info.parameter_count


def test_loading_is_lazy():
    gc.collect()   # arrays earlier tests left to the collector would be freed mid-test, skewing the figures
    mx.clear_cache()
    before = mx.get_active_memory()
    model = engine.load(MODELS / "tiny-e2b")
    after_load = mx.get_active_memory() - before
    assert after_load < 0.1 * model.info.weight_bytes
    model.logits([2, 5, 6, 7])
    assert mx.get_active_memory() - before > 0.5 * model.info.weight_bytes


def test_worker_threads_take_the_uncompiled_path_with_identical_results():
    # Compiled pieces run on the main thread only (MLX aborts at exit when a compile trace belongs to
    # a finished thread); a model loaded and used on a worker thread must give the same logits.
    import threading

    from conftest import REFERENCE

    ids = np.load(REFERENCE / "tiny-e2b.npz")["input_ids"].astype(int).tolist()
    on_main = np.array(engine.load(MODELS / "tiny-e2b").logits(ids))
    results = {}

    def work():
        results["worker"] = np.array(engine.load(MODELS / "tiny-e2b").logits(ids))
        engine.finish_thread()

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    np.testing.assert_allclose(results["worker"], on_main, rtol=0, atol=1e-5 * np.abs(on_main).max())


_CHAT_ON_A_WORKER = """
import sys, threading
import engine

def chat():
    model = engine.load(sys.argv[1])
    list(model.chat(temperature=0.0, max_tokens=4).send("hi"))
    engine.finish_thread()

worker = threading.Thread(target=chat)
worker.start()
worker.join()
"""


def test_a_process_that_chatted_on_a_worker_thread_exits_cleanly():
    # Without finish_thread, MLX tears the worker's streams down during exit and the process aborts
    # ("terminate called without an active exception") in some runs; each run here is one chance of that.
    import subprocess
    import sys

    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", _CHAT_ON_A_WORKER, str(MODELS / "tiny-e2b")],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]


def test_load_and_warm_up_report_progress_and_warm_up_can_be_cancelled():
    import threading

    stages = []
    model = engine.load(MODELS / "tiny-e2b-mlx", progress=lambda stage, done: stages.append((stage, done)))
    assert [s for s, _ in stages][:2] == ["checking weight files"] * 2  # two shards
    assert stages[-1][0] == "building the model"
    readings = []
    model.warm_up(progress=lambda stage, done: readings.append((stage, done)))
    fractions = [done for stage, done in readings if stage == "reading weights"]
    assert fractions == sorted(fractions) and len(fractions) > 10 and readings[-1] == ("ready", 1.0)
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(engine.EngineError, match="cancelled"):
        engine.load(MODELS / "tiny-e2b").warm_up(cancel=cancelled)


def test_weights_replaced_after_the_first_call_are_used():
    from conftest import REFERENCE

    ids = np.load(REFERENCE / "tiny-e2b.npz")["input_ids"].astype(int).tolist()
    model = engine.load(MODELS / "tiny-e2b")
    before = np.array(model.logits(ids))
    mlp = model.net.text.layers[0].mlp
    mlp.down_proj.weight = mlp.down_proj.weight * 0
    after = np.array(model.logits(ids))
    fresh = engine.load(MODELS / "tiny-e2b")
    fresh.net.text.layers[0].mlp.down_proj.weight = fresh.net.text.layers[0].mlp.down_proj.weight * 0
    np.testing.assert_allclose(after, np.array(fresh.logits(ids)), rtol=0, atol=1e-5 * np.abs(after).max())
    assert not np.allclose(before, after)


@pytest.mark.parametrize("config,head_dim", [(RopeConfig(theta=1e4), 64),
                                             (RopeConfig(theta=1e6, partial_rotary_factor=0.25, proportional=True), 128)])
@pytest.mark.parametrize("offset", [0, 7, 100_000, mx.array(37)])
def test_table_rotation_equals_mlx_fast_rope(config, head_dim, offset, monkeypatch):
    # The CPU applies rope from tables built once per chunk; a GPU runs mx.fast.rope. Same numbers.
    import engine.fused

    rope = Rope(head_dim, config)
    x = mx.random.normal((1, 3, 5, head_dim), key=mx.random.key(1))
    monkeypatch.setattr(engine.fused, "has_fast_kernels", lambda: False)
    tables = rope.at(offset, offset + mx.arange(5))(x)
    monkeypatch.setattr(engine.fused, "has_fast_kernels", lambda: True)
    fused = rope.at(offset, offset + mx.arange(5))(x)
    np.testing.assert_allclose(np.array(tables), np.array(fused), rtol=0, atol=1e-6)
    assert not np.allclose(np.array(tables)[..., 0], np.array(x)[..., 0])


@pytest.mark.parametrize("queries,keys", [(1, 9), (4, 9)])
@pytest.mark.parametrize("masked", [False, True])
def test_grouped_attention_equals_mlx_attention(queries, keys, masked):
    from engine.attention import grouped_attention

    rng = mx.random.key(2)
    q = mx.random.normal((1, 6, queries, 16), key=rng)
    k, v = (mx.random.normal((1, 2, keys, 16), key=mx.random.key(i)) for i in (3, 4))
    mask = (mx.arange(keys)[None] <= mx.arange(keys - queries, keys)[:, None]) if masked else None
    if masked:
        mask = mask & (mx.arange(keys)[None] != 2)  # a hole, so no mask is a shifted copy of another
    ours = grouped_attention(q, k, v, mask)
    theirs = mx.fast.scaled_dot_product_attention(q, k, v, scale=1.0, mask=mask)
    np.testing.assert_allclose(np.array(ours), np.array(theirs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("quantized", [False, True])
@pytest.mark.parametrize("tokens", [(5,), (1, 5)])
def test_experts_give_the_same_rows_sorted_by_expert_or_read_in_place(quantized, tokens, monkeypatch):
    import engine.moe
    from engine.moe import SwitchGLU

    glu = SwitchGLU(hidden=64, intermediate=32, experts=6)
    if quantized:
        nn.quantize(glu, group_size=32, bits=4)
    x = mx.random.normal((*tokens, 64), key=mx.random.key(4))
    indices = mx.array([[0, 3], [3, 5], [1, 0], [5, 2], [2, 4]]).reshape(*tokens, 2)
    weights = mx.random.uniform(0.1, 1.0, (*tokens, 2), key=mx.random.key(5))
    monkeypatch.setattr(engine.moe, "_SORT_THRESHOLD", 1)
    by_expert = glu(x, indices, weights)
    monkeypatch.setattr(engine.moe, "_SORT_THRESHOLD", 1 << 30)
    in_place = glu(x, indices, weights)
    assert in_place.shape == (*tokens, 64)
    np.testing.assert_allclose(np.array(in_place), np.array(by_expert), rtol=1e-5, atol=1e-6)
    x, in_place, indices, weights = (a.reshape(5, -1) for a in (x, in_place, indices, weights))

    def dense(linear, expert):
        if not quantized:
            return linear.weight[expert]
        return mx.dequantize(linear.weight[expert], linear.scales[expert], linear.biases[expert], 32, 4)

    def expert_out(row, expert):
        h = nn.gelu_approx(row @ dense(glu.gate_proj, expert).T) * (row @ dense(glu.up_proj, expert).T)
        return h @ dense(glu.down_proj, expert).T

    first = sum(float(weights[0, j]) * expert_out(x[0], int(indices[0, j])) for j in range(2))
    np.testing.assert_allclose(np.array(in_place[0]), np.array(first), rtol=1e-4, atol=1e-5)
