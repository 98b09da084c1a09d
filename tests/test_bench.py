"""Smoke test of `python -m engine.bench` on a tiny shape-scaled checkpoint from the benchmark's own writer."""

import json

import pytest

from engine.bench.__main__ import main
from engine.bench.writer import tensor_plan
from engine.bench.variants import text_config

FIGURES = ("ttft_s", "prefill_tps", "decode_tps", "peak_memory_bytes")


def test_one_cell_passes_the_gate_and_appends_a_json_line(tmp_path):
    results = tmp_path / "bench.jsonl"
    main(["--tiny", "--variant", "e2b", "--layers", "8", "--out", str(tmp_path / "models"), "-p", "40",
          "-g", "6", "--gate", "6", "--json", str(results)])
    record = json.loads(results.read_text().splitlines()[-1])
    assert record["gate_passed"] and record["status"] == "ok"
    assert record["ours_tokens"] == record["mlx_lm_tokens"] and len(record["ours_tokens"]) == 6
    for side in ("ours", "mlx_lm"):
        assert all(record[side][key] > 0 for key in FIGURES)
        assert record[side]["prompt_tokens"] == 40
    assert set(record["ratio"]) == set(FIGURES)
    assert record["bound_tps"] * record["bytes_per_token"] == pytest.approx(record["bandwidth_gbps"] * 1e9)
    assert record["weight_bytes"] > 0 and record["layers"] == 8


def test_truncation_keeps_the_kv_shared_tail_behind_a_full_layer():
    text = text_config("e2b", 8)
    owners = text["num_hidden_layers"] - text["num_kv_shared_layers"]
    assert text["num_kv_shared_layers"] > 0
    assert text["layer_types"][owners - 1] == "full_attention" and text["layer_types"][-1] == "full_attention"
    shared_names = [s.name for s in tensor_plan(text) if f"layers.{owners}." in s.name]
    assert not any("k_proj" in name or "v_proj" in name for name in shared_names)
    assert text["hidden_size"] == 1536 and text["intermediate_size"] == 6144
