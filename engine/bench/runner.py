"""One benchmark cell: both engines on the same folder and prompt, gated on equal greedy tokens."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Callable, Iterator

import mlx.core as mx

import engine
from engine import fused

from .analytic import kv_bytes_per_token, weight_bytes_per_token
from .step_probe import StepProbe, fast_ops_as_kernels

TokenStream = Callable[[list[int], int], Iterator[int]]
Forward = Callable[[list[int]], mx.array]
TIMED = ("ttft_s", "prefill_tps", "decode_tps", "peak_memory_bytes", "graph_build_ms", "dispatch_ms")
# As recorded on this backend, and as a GPU records them; all primitives, and those that are not views.
OP_COUNTS = ("ops_per_step", "kernel_ops_per_step", "launches_per_step", "kernel_launches_per_step")


@dataclass
class Timing:
    prompt_tokens: int
    ttft_s: float
    prefill_tps: float
    decode_tps: float
    peak_memory_bytes: int
    graph_build_ms: float   # host time per decode step building its graph (step_probe.py)
    dispatch_ms: float      # host time per decode step inside mx.async_eval


@dataclass
class Engine:
    """One side of a cell: a greedy token stream and an uncached forward returning last-position logits."""
    stream: TokenStream
    forward: Forward


def time_stream(stream: TokenStream, prompt: list[int], gen: int,
                probe: StepProbe | None = None) -> tuple[Timing, list[int]]:
    """TTFT = submit to first id on the host; decode rate over the remaining ids (as mlx-lm reports)."""
    probe = probe or StepProbe()
    mx.synchronize()
    mx.reset_peak_memory()
    tokens: list[int] = []
    with probe:
        started = time.perf_counter()
        first_at = None
        iterator = stream(prompt, gen)
        while True:
            probe.consumer_waits()
            token = next(iterator, None)
            if token is None:
                break
            if first_at is None:
                first_at = time.perf_counter()
            tokens.append(int(token))
        ended = time.perf_counter()
    ttft = first_at - started
    decode = (len(tokens) - 1) / (ended - first_at) if len(tokens) > 1 else float("nan")
    host = probe.decode_figures()
    return Timing(len(prompt), ttft, len(prompt) / ttft, decode, int(mx.get_peak_memory()),
                  host.get("graph_build_ms", float("nan")), host.get("dispatch_ms", float("nan"))), tokens


def ops_per_step(stream: TokenStream, prompt: list[int], steps: int = 4, prefix: str = "") -> dict:
    """Primitives in one decode step's graph (untimed: counting walks the graph)."""
    probe = StepProbe(count_ops=True)
    time_stream(stream, prompt, steps + 1, probe)
    figures = probe.decode_figures()
    return {prefix + k: figures[k] for k in ("ops_per_step", "launches_per_step", "ops_by_kind") if k in figures}


def kernel_ops_per_step(folder: Path, dtype: mx.Dtype, prompt: list[int], ours_ops: dict,
                        their_ops: dict) -> tuple[dict, dict]:
    """Both engines' decode-step primitives with each mx.fast call as one node, as a GPU records them.

    On a GPU backend the plain counts already are that. Elsewhere fresh engines are built, so every
    compiled function is traced with the stand-ins.
    """
    if fused.has_fast_kernels():
        return ({"kernel_" + k: v for k, v in ours_ops.items()}, {"kernel_" + k: v for k, v in their_ops.items()})
    with fast_ops_as_kernels():
        ours = ops_per_step(ours_engine(folder, dtype)[0].stream, prompt, prefix="kernel_")
        theirs = ops_per_step(mlx_lm_engine(folder, dtype).stream, prompt, prefix="kernel_")
    return ours, theirs


def ours_engine(folder: Path, dtype: mx.Dtype | None = None):
    """Our engine in `dtype`, or in the one it picks for this backend and checkpoint."""
    model = engine.load(folder, dtype=dtype)

    def stream(prompt: list[int], gen: int) -> Iterator[int]:
        return model.generate_ids(prompt, max_tokens=gen, temperature=0.0, stop_ids=[])

    return Engine(stream, lambda prompt: model.logits(prompt)[-1]), model


def mlx_lm_engine(folder: Path, dtype: mx.Dtype) -> Engine:
    """mlx-lm in the activation dtype our engine picked, so both run the same arithmetic."""
    from mlx_lm.generate import generate_step
    from mlx_lm.utils import load_model

    model, _ = load_model(folder)
    model.set_dtype(dtype)

    def stream(prompt: list[int], gen: int) -> Iterator[int]:
        for token, _ in generate_step(mx.array(prompt, dtype=mx.uint32), model, max_tokens=gen):
            yield int(token)

    def forward(prompt: list[int]) -> mx.array:
        return model(mx.array(prompt, dtype=mx.uint32)[None])[0, -1].astype(mx.float32)

    return Engine(stream, forward)


def shard_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of each weights file, so a record names the exact bytes both engines loaded."""
    digests = {}
    for shard in sorted(folder.glob("*.safetensors")):
        digest = hashlib.sha256()
        with shard.open("rb") as f:
            while block := f.read(1 << 24):
                digest.update(block)
        digests[shard.name] = digest.hexdigest()
    return digests


def compare_logits(ours: mx.array, reference: mx.array) -> dict:
    """Max abs difference of last-position logits, also relative to the reference's largest magnitude."""
    diff = mx.abs(ours.astype(mx.float32) - reference.astype(mx.float32)).max().item()
    scale = mx.abs(reference).max().item()
    return dict(logits_max_abs_diff=diff, logits_scale=scale, logits_rel_diff=diff / scale,
                logits_argmax_equal=bool(mx.argmax(ours).item() == mx.argmax(reference).item()))


def random_prompt(length: int, vocab: int, seed: int = 0) -> list[int]:
    mx.random.seed(seed)
    return mx.random.randint(3, vocab, (length,)).tolist()


def _median(timings: list[Timing]) -> Timing:
    """Each timed figure's median over the trials (the mean of the middle two for an even count)."""
    middle = Timing(timings[0].prompt_tokens, *(statistics.median(getattr(t, f) for t in timings) for f in TIMED))
    middle.peak_memory_bytes = int(middle.peak_memory_bytes)
    return middle


def _spread(timings: list[Timing]) -> dict[str, list[float]]:
    """Each timed figure's lowest and highest value over the trials, next to the median."""
    return {f: [min(getattr(t, f) for t in timings), max(getattr(t, f) for t in timings)] for f in TIMED}


def gate(ours: Engine, theirs: Engine, prompt: list[int], gate_tokens: int, logits_tol: float) -> dict:
    """Greedy tokens equal and last-token logits close; the token runs double as warm-up."""
    _, our_tokens = time_stream(ours.stream, prompt, gate_tokens)
    _, their_tokens = time_stream(theirs.stream, prompt, gate_tokens)
    logits = compare_logits(ours.forward(prompt), theirs.forward(prompt))
    passed = our_tokens == their_tokens and logits["logits_rel_diff"] <= logits_tol
    return dict(gate_tokens=gate_tokens, logits_tol=logits_tol, gate_passed=passed, gate_kind="tokens",
                ours_tokens=our_tokens, mlx_lm_tokens=their_tokens, distinct_tokens=len(set(our_tokens)), **logits)


PRECISION_SLACK = 1.25  # how much further from float32 than mlx-lm our reduced-precision logits may be


def precision_gate(ours: Engine, theirs: Engine, folder: Path, prompt: list[int], gate_tokens: int,
                   logits_tol: float) -> dict:
    """The gate in bfloat16 or float16, where rounding alone parts the two engines' greedy tokens.

    Both engines' last-token logits are compared with our engine's float32 run on the same weights
    (which a float32 cell gates against mlx-lm): ours may be at most PRECISION_SLACK times further from
    it than mlx-lm's, plus logits_tol. The token runs double as warm-up and are recorded, not gated;
    so is the difference between the two engines.
    """
    _, our_tokens = time_stream(ours.stream, prompt, gate_tokens)
    _, their_tokens = time_stream(theirs.stream, prompt, gate_tokens)
    exact = ours_engine(folder, mx.float32)[0].forward(prompt)
    our_logits, their_logits = ours.forward(prompt), theirs.forward(prompt)
    mx.eval(exact, our_logits, their_logits)
    own, mlx_lm = compare_logits(our_logits, exact), compare_logits(their_logits, exact)
    passed = own["logits_rel_diff"] <= PRECISION_SLACK * mlx_lm["logits_rel_diff"] + logits_tol
    between = compare_logits(our_logits, their_logits)
    return dict(gate_tokens=gate_tokens, logits_tol=logits_tol, gate_passed=passed, gate_kind="precision",
                ours_tokens=our_tokens, mlx_lm_tokens=their_tokens, distinct_tokens=len(set(our_tokens)),
                ours_vs_float32_rel_diff=own["logits_rel_diff"], mlx_lm_vs_float32_rel_diff=mlx_lm["logits_rel_diff"],
                **between)


def run_cell(folder: Path, *, prompt_len: int, gen: int, trials: int, gate_tokens: int,
             bandwidth_gbps: float, checkpoint_sha256: dict[str, str], logits_tol: float = 1e-3,
             compute_dtype: mx.Dtype | None = None) -> dict:
    """`checkpoint_sha256`: shard_digests(folder), read once for all the cells on one folder.

    Both engines run in `compute_dtype`, or in the one our engine picks. Float32 is gated on equal
    greedy tokens; a reduced precision on closeness to float32 (precision_gate).
    """
    config = json.loads((folder / "config.json").read_text())
    text = config["text_config"]
    bits = (config.get("quantization") or {}).get("bits")
    ours, model = ours_engine(folder, compute_dtype)
    theirs = mlx_lm_engine(folder, model.dtype)
    prompt = random_prompt(prompt_len, text["vocab_size"])
    if model.dtype == mx.float32:
        checked = gate(ours, theirs, prompt, gate_tokens, logits_tol)
    else:
        checked = precision_gate(ours, theirs, folder, prompt, gate_tokens, logits_tol)
    runs: dict[str, list[Timing]] = {"ours": [], "mlx_lm": []}
    for _ in range(trials if checked["gate_passed"] else 0):
        for name, side in (("ours", ours), ("mlx_lm", theirs)):  # alternate so drift hits both
            runs[name].append(time_stream(side.stream, prompt, gen)[0])
    float_bytes = mx.array(0, dtype=model.dtype).itemsize
    per_token = weight_bytes_per_token(text, bits, 2 if text.get("dtype") == "bfloat16" else 4)
    per_token += kv_bytes_per_token(text, prompt_len + gen // 2, float_bytes)
    record = dict(variant=folder.name, bits=bits, layers=text["num_hidden_layers"], prompt=prompt_len, gen=gen,
                  trials=trials, mlx=mx.__version__, mlx_lm_version=version("mlx-lm"), device=str(mx.default_device()),
                  compute_dtype=str(model.dtype).split(".")[-1],
                  mlx_enable_tf32=os.environ.get("MLX_ENABLE_TF32"),
                  checkpoint_sha256=checkpoint_sha256,
                  ours_head_cores=model.net.text.head_parts,
                  weight_bytes=model.info.weight_bytes, bytes_per_token=per_token, bandwidth_gbps=bandwidth_gbps,
                  bound_tps=bandwidth_gbps * 1e9 / per_token, status="ok" if checked["gate_passed"] else "FAILED",
                  **checked)
    if checked["gate_passed"]:
        ours_t, theirs_t = _median(runs["ours"]), _median(runs["mlx_lm"])
        ours_ops, their_ops = ops_per_step(ours.stream, prompt), ops_per_step(theirs.stream, prompt)
        ours_kernels, their_kernels = kernel_ops_per_step(folder, model.dtype, prompt, ours_ops, their_ops)
        record.update(ours=dict(asdict(ours_t), **ours_ops, **ours_kernels),
                      mlx_lm=dict(asdict(theirs_t), **their_ops, **their_kernels))
        for side in ("ours", "mlx_lm"):
            record[side]["efficiency"] = record[side]["decode_tps"] / record["bound_tps"]
            record[side]["min_max"] = _spread(runs[side])
        record["ratio"] = {k: record["ours"][k] / record["mlx_lm"][k] for k in (*TIMED, *OP_COUNTS)
                           if record["mlx_lm"].get(k)}
    return record
