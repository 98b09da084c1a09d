"""Host-side cost of one decode step, measured the same way for every engine.

Both engines pipeline decoding the same way: build step n+1's lazy graph, hand it to `mx.async_eval`, then
wait for step n's token. So while a token stream runs, `mx.async_eval` is wrapped (the attribute on
`mlx.core`, which is what both call) and each call is one step's dispatch. Per call we record:

* build time: from the moment the consumer asked for the next token (or the previous dispatch returned,
  whichever is later) until the call: the Python work that constructs the step's graph, sampling included;
* dispatch time: the duration of the `async_eval` call itself (graph traversal and scheduling). On the
  CPU backend this call was measured to take about as long as the whole step (the CPU stream runs the
  work before the call returns), so there it is kernel time, not host overhead; host overhead is the
  build time, plus dispatch only on skeleton models or GPU backends;
* optionally the primitives in the graph handed over, counted from `mx.export_to_dot` (one rectangle per
  primitive; a multi-output primitive counts once, an `mx.compile`d group counts as one `Compiled…` node).
  Arrays already evaluated, weights and cache contents, are leaves and are not counted. Launches are
  the primitives that are not views (`VIEWS`): each of those runs a kernel on a GPU, while a view of
  contiguous data only makes a new array header.

The first call of a stream carries the prompt's last chunk, so decode figures use calls 1 onwards.

Backend caveat: a graph is recorded on the stream's device, and on the CPU the `mx.fast` operations
(rms_norm, rope, scaled_dot_product_attention) and `mx.dequantize` are recorded as their fallback
decomposition (Square, Sum, Rsqrt, ...), so CPU counts are several times the kernel launches a Metal or
CUDA step makes, and an engine that works around the decompositions on the CPU (ours does, for rope and
attention) looks better there than it will on a GPU. `fast_ops_as_kernels` gives the count a GPU would
see instead: inside it every `mx.fast` call becomes one unfusable node of the right shape (the numbers
are meaningless, the graph's shape is a GPU's), and our engine takes its GPU paths (nothing split over
CPU cores either).
"""

from __future__ import annotations

import collections
import contextlib
import re
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx

_PRIMITIVE = re.compile(r'\[label ="([^"]+)", shape=rectangle\]')
# Ties a stand-in to inputs it ignores, so the graph keeps them; not a kernel, so not counted.
_TIE = "Depends"
# Primitives that only re-describe their input's memory (Reshape copies when the input is not contiguous,
# which a decode step's single rows seldom are not).
VIEWS = frozenset({"Reshape", "Slice", "Split", "Squeeze", "ExpandDims", "Transpose", "Broadcast", "AsStrided",
                   "StopGradient"})


def count_primitives(*outputs: mx.array) -> collections.Counter:
    """Primitives by name in the not-yet-evaluated graph behind `outputs`."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "step.dot"
        mx.export_to_dot(str(path), *outputs)
        counts = collections.Counter(_PRIMITIVE.findall(path.read_text()))
    del counts[_TIE]
    return counts


def _tied(out: mx.array, ignored) -> mx.array:
    tied = [a for a in ignored if isinstance(a, mx.array)]
    return mx.depends([out], tied)[0] if tied else out


def _one_node(x: mx.array, *ignored) -> mx.array:
    """A single primitive shaped like x that compile cannot fuse (as a GPU's fast kernels are not)."""
    return _tied(mx.softmax(x, axis=-1), ignored)


def _one_dequantize_node(w: mx.array, scales: mx.array, biases: mx.array | None = None,
                         group_size: int = 64, *args, **kwargs) -> mx.array:
    """One unfusable node shaped like dequantize's output: the scales padded out to one per weight."""
    widths = [(0, 0)] * (scales.ndim - 1) + [(0, scales.shape[-1] * (group_size - 1))]
    return _tied(mx.pad(scales, widths), [w, biases])


@contextlib.contextmanager
def fast_ops_as_kernels():
    """Within: every mx.fast rms_norm, rope and attention call and every mx.dequantize (the quantized
    embeddings' rows) is one graph node, as on a GPU.

    For counting only. Build engines (and trace their compiled functions) inside the context.
    """
    from engine import fused

    stand_ins = {
        "rms_norm": lambda x, weight, eps: _one_node(x),
        "rope": lambda x, dims, **kw: _one_node(x, kw.get("offset")),
        "scaled_dot_product_attention": lambda q, k, v, **kw: _one_node(q, k, v, kw.get("mask")),
    }
    originals = {name: getattr(mx.fast, name) for name in stand_ins}
    dequantize = mx.dequantize
    gpu_paths = fused.has_fast_kernels
    try:
        for name, stand_in in stand_ins.items():
            setattr(mx.fast, name, stand_in)
        mx.dequantize = _one_dequantize_node
        fused.has_fast_kernels = lambda: True
        fused.forget_compiled()
        yield
    finally:
        for name, original in originals.items():
            setattr(mx.fast, name, original)
        mx.dequantize = dequantize
        fused.has_fast_kernels = gpu_paths
        fused.forget_compiled()


@dataclass
class StepProbe:
    count_ops: bool = False
    build_s: list[float] = field(default_factory=list)
    dispatch_s: list[float] = field(default_factory=list)
    ops: list[collections.Counter] = field(default_factory=list)
    _ready_at: float | None = None
    _original = None

    def __enter__(self) -> "StepProbe":
        self._original = mx.async_eval
        mx.async_eval = self._wrapped
        return self

    def __exit__(self, *exc) -> None:
        mx.async_eval = self._original

    def consumer_waits(self) -> None:
        """Called right before the consumer asks the stream for its next token."""
        self._ready_at = time.perf_counter()

    def _wrapped(self, *arrays, **kwargs):
        called = time.perf_counter()
        if self._ready_at is not None:
            self.build_s.append(called - self._ready_at)
        if self.count_ops:
            self.ops.append(count_primitives(*_flatten(arrays)))
        started = time.perf_counter()
        result = self._original(*arrays, **kwargs)
        returned = time.perf_counter()
        self.dispatch_s.append(returned - started)
        self._ready_at = returned
        return result

    def decode_figures(self) -> dict:
        """Medians over the decode steps (every call after the first)."""
        builds, dispatches, ops = self.build_s[1:], self.dispatch_s[1:], self.ops[1:]
        figures: dict = {}
        if builds:
            figures["graph_build_ms"] = 1e3 * statistics.median(builds)
            figures["dispatch_ms"] = 1e3 * statistics.median(dispatches)
        if ops:
            totals = [sum(c.values()) for c in ops]
            figures["ops_per_step"] = int(statistics.median(totals))
            figures["launches_per_step"] = int(statistics.median(launches(c) for c in ops))
            figures["ops_by_kind"] = dict(ops[totals.index(figures["ops_per_step"])].most_common())
        return figures


def launches(counts: collections.Counter) -> int:
    """The counted primitives that are not views."""
    return sum(n for name, n in counts.items() if name not in VIEWS)


def _flatten(arrays) -> list[mx.array]:
    flat: list[mx.array] = []
    for item in arrays:
        if isinstance(item, mx.array):
            flat.append(item)
        elif isinstance(item, (list, tuple)):
            flat += _flatten(item)
        elif isinstance(item, dict):
            flat += _flatten(list(item.values()))
    return flat
