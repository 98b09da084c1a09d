"""One benchmark cell: both engines on the same folder and prompt, gated on equal greedy tokens."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import mlx.core as mx

import engine

from .analytic import kv_bytes_per_token, weight_bytes_per_token

TokenStream = Callable[[list[int], int], Iterator[int]]


@dataclass
class Timing:
    prompt_tokens: int
    ttft_s: float
    prefill_tps: float
    decode_tps: float
    peak_memory_bytes: int


def time_stream(stream: TokenStream, prompt: list[int], gen: int) -> tuple[Timing, list[int]]:
    """TTFT = submit to first id on the host; decode rate over the remaining ids (as mlx-lm reports)."""
    mx.synchronize()
    mx.reset_peak_memory()
    started = time.perf_counter()
    first_at, tokens = None, []
    for token in stream(prompt, gen):
        if first_at is None:
            first_at = time.perf_counter()
        tokens.append(int(token))
    ended = time.perf_counter()
    ttft = first_at - started
    decode = (len(tokens) - 1) / (ended - first_at) if len(tokens) > 1 else float("nan")
    return Timing(len(prompt), ttft, len(prompt) / ttft, decode, int(mx.get_peak_memory())), tokens


def ours_stream(folder: Path) -> tuple[TokenStream, object]:
    model = engine.load(folder)

    def stream(prompt: list[int], gen: int) -> Iterator[int]:
        return model.generate_ids(prompt, max_tokens=gen, temperature=0.0, stop_ids=[])

    return stream, model


def mlx_lm_stream(folder: Path, dtype: mx.Dtype) -> TokenStream:
    """mlx-lm in the activation dtype our engine picked, so both run the same arithmetic."""
    from mlx_lm.generate import generate_step
    from mlx_lm.utils import load_model

    model, _ = load_model(folder)
    model.set_dtype(dtype)

    def stream(prompt: list[int], gen: int) -> Iterator[int]:
        for token, _ in generate_step(mx.array(prompt, dtype=mx.uint32), model, max_tokens=gen):
            yield int(token)

    return stream


def random_prompt(length: int, vocab: int, seed: int = 0) -> list[int]:
    mx.random.seed(seed)
    return mx.random.randint(3, vocab, (length,)).tolist()


def _median(timings: list[Timing]) -> Timing:
    def mid(values: list) -> float:
        return sorted(values)[len(values) // 2]

    return Timing(timings[0].prompt_tokens, *(mid([getattr(t, f) for t in timings])
                                               for f in ("ttft_s", "prefill_tps", "decode_tps",
                                                         "peak_memory_bytes")))


def run_cell(folder: Path, *, prompt_len: int, gen: int, trials: int, gate_tokens: int,
             bandwidth_gbps: float) -> dict:
    config = json.loads((folder / "config.json").read_text())
    text = config["text_config"]
    bits = (config.get("quantization") or {}).get("bits")
    ours, model = ours_stream(folder)
    theirs = mlx_lm_stream(folder, model.dtype)
    prompt = random_prompt(prompt_len, text["vocab_size"])
    _, our_tokens = time_stream(ours, prompt, gate_tokens)  # gate run doubles as warm-up
    _, their_tokens = time_stream(theirs, prompt, gate_tokens)
    gate = our_tokens == their_tokens
    runs: dict[str, list[Timing]] = {"ours": [], "mlx_lm": []}
    for _ in range(trials if gate else 0):
        for name, stream in (("ours", ours), ("mlx_lm", theirs)):  # alternate so drift hits both
            runs[name].append(time_stream(stream, prompt, gen)[0])
    float_bytes = mx.array(0, dtype=model.dtype).itemsize
    per_token = weight_bytes_per_token(text, bits, 2 if text.get("dtype") == "bfloat16" else 4)
    per_token += kv_bytes_per_token(text, prompt_len + gen // 2, float_bytes)
    record = dict(variant=folder.name, bits=bits, layers=text["num_hidden_layers"], prompt=prompt_len, gen=gen,
                  trials=trials, mlx=mx.__version__, device=str(mx.default_device()),
                  weight_bytes=model.info.weight_bytes, bytes_per_token=per_token, bandwidth_gbps=bandwidth_gbps,
                  bound_tps=bandwidth_gbps * 1e9 / per_token, gate_tokens=gate_tokens, gate_passed=gate,
                  ours_tokens=our_tokens, mlx_lm_tokens=their_tokens, status="ok" if gate else "FAILED")
    if gate:
        ours_t, theirs_t = _median(runs["ours"]), _median(runs["mlx_lm"])
        record.update(ours=asdict(ours_t), mlx_lm=asdict(theirs_t),
                      ratio={k: getattr(ours_t, k) / getattr(theirs_t, k) for k in
                             ("ttft_s", "prefill_tps", "decode_tps", "peak_memory_bytes")})
    return record
