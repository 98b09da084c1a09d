"""Smoke test of `python -m engine.bench` on a tiny shape-scaled checkpoint from the benchmark's own writer."""

import hashlib
import json

import mlx.core as mx
import pytest

from engine.bench import variants
from engine.bench.__main__ import checkpoint_folder, cli, main
from engine.bench.runner import Engine, Timing, _median, compare_logits, ours_engine, precision_gate
from engine.bench.step_probe import StepProbe, count_primitives, fast_ops_as_kernels, launches
from engine.bench.writer import tensor_plan
from engine.bench.variants import text_config
from tests.conftest import MODELS

FIGURES = ("ttft_s", "prefill_tps", "decode_tps", "peak_memory_bytes", "graph_build_ms", "dispatch_ms")


def test_one_cell_passes_the_gate_and_appends_a_json_line(tmp_path):
    results = tmp_path / "bench.jsonl"
    main(["--tiny", "--variant", "e2b", "--layers", "6", "--out", str(tmp_path / "models"), "-p", "40",
          "-g", "6", "--gate", "6", "--trials", "3", "--json", str(results)])
    record = json.loads(results.read_text().splitlines()[-1])
    assert record["gate_passed"] and record["status"] == "ok"
    assert record["ours_tokens"] == record["mlx_lm_tokens"] and len(record["ours_tokens"]) == 6
    assert record["distinct_tokens"] >= 4, "random weights must not make greedy decoding repeat one token"
    assert record["logits_rel_diff"] <= record["logits_tol"] == 1e-3 and record["logits_argmax_equal"]
    assert record["logits_scale"] > 3, "the final norm level spreads the logits"
    for side in ("ours", "mlx_lm"):
        assert all(record[side][key] > 0 for key in FIGURES)
        assert record[side]["prompt_tokens"] == 40
        assert record[side]["ops_per_step"] >= 6 * 10, "every layer adds primitives to a decode step"
        assert sum(record[side]["ops_by_kind"].values()) == record[side]["ops_per_step"]
        # as a GPU records it: each norm, rope and attention one node instead of its CPU decomposition
        assert 6 * 5 <= record[side]["kernel_ops_per_step"] < record[side]["ops_per_step"]
        for counted in ("", "kernel_"):
            assert 0 < record[side][counted + "launches_per_step"] < record[side][counted + "ops_per_step"]
    assert set(record["ratio"]) == {*FIGURES, "ops_per_step", "kernel_ops_per_step", "launches_per_step",
                                    "kernel_launches_per_step"}
    assert record["bound_tps"] * record["bytes_per_token"] == pytest.approx(record["bandwidth_gbps"] * 1e9)
    assert record["weight_bytes"] > 0 and record["layers"] == 6
    for side in ("ours", "mlx_lm"):
        assert record[side]["efficiency"] == pytest.approx(record[side]["decode_tps"] / record["bound_tps"])
        for key in FIGURES:
            low, high = record[side]["min_max"][key]
            assert low <= record[side][key] <= high
    shards = sorted((tmp_path / "models").glob("*/*.safetensors"))
    assert shards and record["checkpoint_sha256"] == {
        shard.name: hashlib.sha256(shard.read_bytes()).hexdigest() for shard in shards}
    assert record["mlx_lm_version"].count(".") >= 1


def test_truncation_keeps_the_kv_shared_tail_behind_a_full_layer():
    text = text_config("e2b", 8)
    owners = text["num_hidden_layers"] - text["num_kv_shared_layers"]
    assert text["num_kv_shared_layers"] > 0
    assert text["layer_types"][owners - 1] == "full_attention" and text["layer_types"][-1] == "full_attention"
    shared_names = [s.name for s in tensor_plan(text) if f"layers.{owners}." in s.name]
    assert not any("k_proj" in name or "v_proj" in name for name in shared_names)
    assert text["hidden_size"] == 1536 and text["intermediate_size"] == 6144


def test_primitive_count_sees_only_the_unevaluated_graph():
    a = mx.random.normal((4, 4))
    mx.eval(a)
    lazy = mx.exp(a) @ a
    assert count_primitives(lazy) == {"Exp": 1, "Matmul": 1}
    mx.eval(lazy)
    assert sum(count_primitives(lazy + 1).values()) == sum(count_primitives(a + 1).values())


def test_probe_times_each_async_eval_and_restores_it():
    original = mx.async_eval
    a = mx.ones((8,))
    with StepProbe(count_ops=True) as probe:
        for _ in range(3):
            probe.consumer_waits()
            mx.async_eval(mx.sin(a) * 2)
    assert mx.async_eval is original
    figures = probe.decode_figures()
    assert len(probe.dispatch_s) == len(probe.build_s) == 3
    assert figures["ops_per_step"] == sum(probe.ops[1].values()) and probe.ops[1]["Sin"] == 1


def test_launches_leave_out_views():
    x = mx.random.normal((2, 6))
    mx.eval(x)
    counts = count_primitives(mx.exp(x.T.reshape(3, 4)[1:]) + 1)
    assert counts["Transpose"] == counts["Reshape"] == counts["Slice"] == 1
    assert launches(counts) == counts["Exp"] + counts["Add"] == 2


def test_logits_comparison_is_relative_to_the_reference_scale():
    reference = mx.array([10.0, -20.0, 5.0])
    result = compare_logits(reference + mx.array([0.0, 0.01, 0.0]), reference)
    assert result["logits_max_abs_diff"] == pytest.approx(0.01, rel=1e-4)
    assert result["logits_rel_diff"] == pytest.approx(0.01 / 20, rel=1e-4)
    assert result["logits_argmax_equal"]
    assert not compare_logits(mx.array([0.0, 0.0, 30.0]), reference)["logits_argmax_equal"]


def test_fast_ops_count_as_one_node_each_and_keep_their_inputs_in_the_graph():
    import engine.fused

    x, w = mx.random.normal((1, 2, 3, 8)), mx.ones((8,))
    mx.eval(x, w)
    real = (mx.fast.rms_norm, mx.fast.rope, mx.fast.scaled_dot_product_attention, engine.fused.has_fast_kernels)
    with fast_ops_as_kernels():
        assert engine.fused.has_fast_kernels()
        assert count_primitives(mx.fast.rms_norm(x, w, 1e-6)) == {"Softmax": 1}
        assert sum(count_primitives(mx.fast.rope(x, 8, traditional=False, base=1e4, scale=1.0,
                                                 offset=0)).values()) == 1
        keys = mx.exp(x)  # a producer the attention stand-in must keep
        shaped = mx.fast.scaled_dot_product_attention(x, keys, keys, scale=1.0)
        assert shaped.shape == x.shape and count_primitives(shaped) == {"Softmax": 1, "Exp": 1}
    assert (mx.fast.rms_norm, mx.fast.rope, mx.fast.scaled_dot_product_attention,
            engine.fused.has_fast_kernels) == real
    assert "Softmax" not in count_primitives(mx.fast.rms_norm(x, w, 1e-6))


def test_a_checkpoint_written_for_other_widths_is_written_again(tmp_path, monkeypatch):
    folder = checkpoint_folder(tmp_path, "e2b", 4, 6, True, "float32")
    leftover = folder / "model-00009.safetensors"
    leftover.write_bytes(b"a shard of the older shapes")
    assert checkpoint_folder(tmp_path, "e2b", 4, 6, True, "float32") == folder
    assert leftover.exists(), "the same shapes reuse the folder"
    monkeypatch.setitem(variants.TINY, "intermediate_size", 128)
    assert checkpoint_folder(tmp_path, "e2b", 4, 6, True, "float32") == folder
    assert json.loads((folder / "config.json").read_text())["text_config"]["intermediate_size"] == 128
    assert not leftover.exists(), "mlx-lm would load every model*.safetensors in the folder"


@pytest.mark.parametrize("tolerance, status", [("1e-3", 0), ("0", 1)])
def test_the_command_exits_non_zero_when_a_gate_fails(tmp_path, monkeypatch, tolerance, status):
    monkeypatch.setattr("sys.argv", ["lantern-bench", "--tiny", "--variant", "e2b", "--layers", "6", "--out",
                                     str(tmp_path), "-p", "20", "-g", "3", "--gate", "3", "--logits-tol", tolerance])
    with pytest.raises(SystemExit) as exit_info:
        cli()
    assert exit_info.value.code == status


def test_median_of_an_even_number_of_trials_is_the_mean_of_the_middle_two():
    trials = [Timing(8, ttft, 1.0, decode, peak, 1.0, 2.0)
              for ttft, decode, peak in ((0.1, 100.0, 10), (0.3, 140.0, 11))]
    middle = _median(trials)
    assert middle.decode_tps == pytest.approx(120.0) and middle.ttft_s == pytest.approx(0.2)
    assert middle.peak_memory_bytes == 10 and isinstance(middle.peak_memory_bytes, int)   # bytes stay whole


def test_a_reduced_precision_cell_is_gated_on_its_distance_from_float32(tmp_path):
    results = tmp_path / "bench.jsonl"
    main(["--tiny", "--variant", "e2b", "--layers", "6", "--out", str(tmp_path / "models"), "-p", "40",
          "-g", "4", "--gate", "4", "--trials", "1", "--compute-dtype", "bfloat16", "--json", str(results)])
    record = json.loads(results.read_text().splitlines()[-1])
    assert record["compute_dtype"] == "bfloat16" and record["gate_kind"] == "precision"
    assert record["gate_passed"] and record["status"] == "ok" and record["ratio"]["decode_tps"] > 0
    ours, theirs = record["ours_vs_float32_rel_diff"], record["mlx_lm_vs_float32_rel_diff"]
    assert 0 < ours <= 1.25 * theirs + record["logits_tol"], "bfloat16 rounding moves both engines' logits"


def _fixed_engine(logits: mx.array) -> Engine:
    return Engine(stream=lambda prompt, gen: iter([7] * gen), forward=lambda prompt: logits)


def test_the_precision_gate_refuses_logits_further_from_float32_than_mlx_lm():
    folder, prompt = MODELS / "tiny-e2b-q4", [5, 9, 11, 13]
    exact = ours_engine(folder, mx.float32)[0].forward(prompt)
    scale = mx.abs(exact).max()
    mx.random.seed(3)
    near = _fixed_engine(exact + 0.01 * scale * mx.random.normal(exact.shape))
    far = _fixed_engine(exact + 0.1 * scale * mx.random.normal(exact.shape))
    assert not precision_gate(far, near, folder, prompt, 2, 1e-3)["gate_passed"]
    passed = precision_gate(near, far, folder, prompt, 2, 1e-3)
    assert passed["gate_passed"] and passed["ours_vs_float32_rel_diff"] < passed["mlx_lm_vs_float32_rel_diff"]


def test_dispatch_costs_time_every_kind_and_append_a_record(tmp_path, monkeypatch):
    from engine.bench import dispatch_costs

    monkeypatch.setattr(dispatch_costs, "_WIDTH", 256)  # the CPU runs the work: small shapes keep it quick
    monkeypatch.setattr(dispatch_costs, "_CONTEXT", 32)
    results = tmp_path / "costs.jsonl"
    [record] = main(["--dispatch-costs", "--json", str(results)])
    costs = record["dispatch_costs_us"]
    assert {"QuantizedMatmul", "RMSNorm", "RoPE", "ScatterAxis", "Compiled GeGLU"} <= set(costs)
    assert all(cost > 0 for cost in costs.values())
    assert json.loads(results.read_text()) == json.loads(json.dumps(record))
