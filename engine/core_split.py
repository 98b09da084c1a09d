"""Large quantized matmuls spread over the CPU's cores.

MLX's CPU backend runs each operation on a single thread, so a 4-bit matmul over a large weight keeps one
core busy while the others wait: the tied LM head of a 262144-token vocabulary took 0.36 s per token at
E2B's width on one core of a 2-core box, and 0.18 s split in two. Every CPU stream has its own thread, so
a matmul whose output rows are cut into one part per stream runs on as many cores as there are parts.
Each output row is computed on its own, so the joined result is the unsplit one, bit for bit. The mixture
of experts splits its (token, expert) pairs the same way (see moe.py).

A split costs about 0.1 ms of cross-stream synchronisation on the CPU, so only weights of at least
`MIN_SPLIT_BYTES` are split. On a GPU one kernel already fills the device: nothing is split there.
MLX streams belong to the thread that created them, so each thread gets its own.
"""

from __future__ import annotations

import copy
import os
import threading
from typing import Callable, Sequence

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

MIN_SPLIT_BYTES = 1 << 20

_local = threading.local()


def usable_cores() -> int:
    """The cores this process may run on (its affinity, where the system tells)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def thread_streams(count: int) -> list[mx.Stream]:
    """`count` CPU streams of the calling thread, made on first use and kept for the thread's life."""
    if not hasattr(_local, "streams"):
        _local.streams = []
    while len(_local.streams) < count:
        _local.streams.append(mx.new_stream(mx.cpu))
    return _local.streams[:count]


def in_parts(compute: Callable[..., mx.array], inputs: Sequence[mx.array], axis: int, parts: int,
             join_axis: int) -> mx.array:
    """compute(*inputs) with every input cut into `parts` along `axis`, each part computed on a stream
    (a core) of its own, the outputs joined along `join_axis`. With one part, compute(*inputs) as it is."""
    if parts == 1:
        return compute(*inputs)
    count = inputs[0].shape[axis]
    cuts = [count * i // parts for i in range(1, parts)]  # as equal as whole numbers allow
    pieces = zip(*(mx.split(array, cuts, axis=axis) for array in inputs))
    outputs = []
    for piece, stream in zip(pieces, thread_streams(parts)):
        with mx.stream(stream):
            outputs.append(compute(*piece))
    return mx.concatenate(outputs, axis=join_axis)


def quantized_matmul_by_rows(x: mx.array, table: nn.Module, parts: int) -> mx.array:
    """x times the transposed quantized weight of `table` (a quantized linear or embedding), its output
    rows computed in `parts` parts on as many cores."""
    arrays = [table["weight"], table["scales"]] + ([table["biases"]] if "biases" in table else [])

    def rows(weight: mx.array, scales: mx.array, biases: mx.array | None = None) -> mx.array:
        return mx.quantized_matmul(x, weight, scales, biases, transpose=True, group_size=table.group_size,
                                   bits=table.bits, mode=table.mode)

    return in_parts(rows, arrays, 0, parts, -1)


class CoreSplitLinear(nn.QuantizedLinear):
    """A bias-free quantized linear whose output rows are computed on several cores at once."""

    @classmethod
    def of(cls, linear: nn.QuantizedLinear, parts: int) -> "CoreSplitLinear":
        split = copy.copy(linear)  # the same arrays and settings; only the way it multiplies changes
        split.__class__ = cls
        split.parts = parts
        return split

    def __call__(self, x: mx.array) -> mx.array:
        return quantized_matmul_by_rows(x, self, self.parts)


def weight_bytes(module: nn.Module) -> int:
    return sum(array.nbytes for _, array in tree_flatten(module.parameters()))


def split_linears(root: nn.Module, parts: int, min_bytes: int) -> int:
    """Replace every bias-free quantized linear under `root` of at least `min_bytes` by a CoreSplitLinear;
    return how many were replaced."""
    replaced = 0
    for _, module in root.named_modules():
        for name, child in module.children().items():
            if type(child) is nn.QuantizedLinear and "bias" not in child and weight_bytes(child) >= min_bytes:
                setattr(module, name, CoreSplitLinear.of(child, parts))
                replaced += 1
    return replaced
