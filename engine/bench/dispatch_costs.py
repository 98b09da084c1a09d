"""Host time to hand one primitive of each kind to the backend, per kind (`lantern-bench --dispatch-costs`).

A decode step's dispatch time is the sum over its primitives of what each costs the host to schedule.
Multiplying a record's op counts by kind (`ops_by_kind`) by these costs shows which kinds spend an
engine's dispatch time, and so where fewer or different primitives would pay. Each kind is timed as one
`mx.async_eval` of many independent copies on evaluated inputs, shaped like a decode step's (one row).

On the CPU backend the call runs the work itself, so only a GPU's figures are host costs.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import mlx.core as mx
import mlx.nn as nn

_WIDTH, _HEADS, _CONTEXT = 2048, 8, 512


def _kinds() -> dict[str, Callable[[mx.array], mx.array]]:
    """Builders of one primitive of each kind from a distinct [1, 1, width] row (distinct so no two copies
    are the same array)."""
    head_dim = _WIDTH // _HEADS
    weight, scales, biases = mx.quantize(mx.random.normal((_WIDTH, _WIDTH)) * 0.02, 64, 4)
    norm = mx.ones((_WIDTH,))
    keys = mx.random.normal((1, _HEADS, _CONTEXT, head_dim))
    slot = mx.array([_CONTEXT - 1])
    mx.eval(weight, scales, biases, norm, keys, slot)

    def heads(row: mx.array) -> mx.array:
        return row.reshape(1, _HEADS, 1, head_dim)

    gelu_gate = mx.compile(lambda gate, up: nn.gelu_approx(gate) * up, shapeless=True)
    return {
        "QuantizedMatmul": lambda row: mx.quantized_matmul(row, weight, scales, biases, group_size=64, bits=4),
        "RMSNorm": lambda row: mx.fast.rms_norm(row, norm, 1e-6),
        "RoPE": lambda row: mx.fast.rope(heads(row), head_dim, traditional=False, base=10000.0, scale=1.0,
                                         offset=7),
        "ScaledDotProductAttention": lambda row: mx.fast.scaled_dot_product_attention(
            heads(row), keys, keys, scale=1.0),
        "Add": lambda row: row + norm,
        "Compiled GeGLU": lambda row: gelu_gate(row, norm),
        "DynamicSliceUpdate": lambda row: mx.slice_update(keys, heads(row), slot, axes=(2,)),
        "ScatterAxis": lambda row: mx.put_along_axis(
            keys, mx.broadcast_to(slot.reshape(1, 1, 1, 1), (1, _HEADS, 1, head_dim)), heads(row), axis=2),
        "Reshape (a view)": lambda row: heads(row),
    }


def _host_seconds(build: Callable[[mx.array], mx.array], rows: list[mx.array]) -> float:
    """Host seconds per primitive to dispatch one `build` of each row at once."""
    outputs = [build(row) for row in rows]
    mx.synchronize()
    started = time.perf_counter()
    mx.async_eval(outputs)
    spent = time.perf_counter() - started
    mx.synchronize()
    return spent / len(rows)


def dispatch_costs(copies: int = 256, repeats: int = 15) -> dict[str, float]:
    """Median host microseconds per primitive of each kind."""
    rows = [mx.random.normal((1, 1, _WIDTH)) for _ in range(copies)]
    mx.eval(rows)
    costs = {}
    for kind, build in _kinds().items():
        _host_seconds(build, rows)  # compiles kernels and fills caches
        costs[kind] = 1e6 * statistics.median(_host_seconds(build, rows) for _ in range(repeats))
    return costs

