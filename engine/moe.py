"""The mixture-of-experts block of 26B-A4B: a router and experts gathered with gather_mm / gather_qmm.

The router reads the un-normalised residual, normalises it without a weight, applies a learned
scale, picks the top-k experts by softmax probability, renormalises their weights and multiplies
each by its expert's learned scale. Expert weights are stacked [experts, out, in]; for many tokens
the (token, expert) pairs are sorted by expert so each expert's rows are contiguous; for few, each
token's row is read by its k experts in place.
"""

from __future__ import annotations

import math
from functools import lru_cache

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .core_split import in_parts, weight_bytes
from .fused import gelu_gate, rms_norm
from .stacked_linear import gate_and_up, stack_in_place

# Below this many (token, expert) pairs, sorting costs more than it saves.
_SORT_THRESHOLD = 64


class Router(nn.Module):
    def __init__(self, hidden: int, experts: int, top_k: int, eps: float):
        super().__init__()
        self.proj = nn.Linear(hidden, experts, bias=False)
        self.scale = mx.ones((hidden,))
        self.per_expert_scale = mx.ones((experts,))
        self.top_k = top_k
        self.eps = eps
        self.root_size = hidden ** -0.5

    def __call__(self, x: mx.array) -> tuple[mx.array, mx.array]:
        """x: [..., hidden] -> expert indices [..., k] and their weights [..., k] (float32)."""
        z = rms_norm(x, None, self.eps) * (self.scale * self.root_size).astype(x.dtype)
        logits = self.proj(z).astype(mx.float32)
        experts = logits.shape[-1]
        indices = mx.argpartition(logits, experts - self.top_k, axis=-1)[..., experts - self.top_k:]
        # Softmax probabilities of the chosen experts renormalised to sum to 1 are the softmax of their
        # logits alone: the same weights, without a softmax and a sum over every expert.
        weights = mx.softmax(mx.take_along_axis(logits, indices, axis=-1), axis=-1)
        return indices, weights * self.per_expert_scale[indices].astype(mx.float32)


class SwitchLinear(nn.Module):
    """One bias-free linear per expert, applied to the rows routed to it."""

    def __init__(self, experts: int, in_features: int, out_features: int):
        super().__init__()
        bound = 1 / math.sqrt(in_features)
        self.weight = mx.random.uniform(-bound, bound, (experts, out_features, in_features))

    def __call__(self, x: mx.array, indices: mx.array, sorted_indices: bool,
                 rows: mx.array | None = None) -> mx.array:
        return mx.gather_mm(x, self.weight.swapaxes(-1, -2), lhs_indices=rows, rhs_indices=indices,
                            sorted_indices=sorted_indices)

    def to_quantized(self, group_size: int = 64, bits: int = 4, mode: str = "affine") -> "QuantizedSwitchLinear":
        return QuantizedSwitchLinear.from_float(self, group_size, bits, mode)


class QuantizedSwitchLinear(nn.Module):
    def __init__(self, experts: int, in_features: int, out_features: int, group_size: int, bits: int,
                 mode: str = "affine"):
        super().__init__()
        self.group_size, self.bits, self.mode = group_size, bits, mode
        packed = in_features * bits // 32
        self.weight = mx.zeros((experts, out_features, packed), dtype=mx.uint32)
        groups = (experts, out_features, in_features // group_size)
        if mode == "affine":
            self.scales, self.biases = mx.zeros(groups), mx.zeros(groups)
        else:   # float codes: an 8-bit exponent per group, no biases
            self.scales = mx.zeros(groups, dtype=mx.uint8)

    @classmethod
    def from_float(cls, layer: SwitchLinear, group_size: int, bits: int, mode: str) -> "QuantizedSwitchLinear":
        experts, out_features, in_features = layer.weight.shape
        quantized = cls(experts, in_features, out_features, group_size, bits, mode)
        quantized.weight, quantized.scales, *biases = mx.quantize(layer.weight, group_size, bits, mode=mode)
        if biases:
            quantized.biases = biases[0]
        return quantized

    def __call__(self, x: mx.array, indices: mx.array, sorted_indices: bool,
                 rows: mx.array | None = None) -> mx.array:
        return mx.gather_qmm(x, self.weight, self.scales, self.get("biases"), lhs_indices=rows, rhs_indices=indices,
                             transpose=True, group_size=self.group_size, bits=self.bits, mode=self.mode,
                             sorted_indices=sorted_indices)


class SwitchGLU(nn.Module):
    """The experts' GeGLU: down(gelu_tanh(gate x) * up x), each expert with its own weights."""

    def __init__(self, hidden: int, intermediate: int, experts: int):
        super().__init__()
        self.gate_proj = SwitchLinear(experts, hidden, intermediate)
        self.up_proj = SwitchLinear(experts, hidden, intermediate)
        self.down_proj = SwitchLinear(experts, intermediate, hidden)
        # On the CPU the (token, expert) pairs are split into this many parts, one core each (core_split.py).
        self.pair_parts = 1

    def stack_projections(self) -> None:
        """Gather gate and up with one matmul, where their storage allows (once the weights are loaded)."""
        stack_in_place(self, ["gate_proj", "up_proj"], "gate_up_proj")

    def split_over_cores(self, parts: int, min_bytes: int, top_k: int) -> None:
        """Split a token's pairs over `parts` cores when its k experts' weights reach `min_bytes`."""
        experts = self.down_proj.weight.shape[0]
        if weight_bytes(self) * top_k // experts >= min_bytes:
            self.pair_parts = parts

    def __call__(self, x: mx.array, indices: mx.array, weights: mx.array) -> mx.array:
        """x: [..., hidden]; indices, weights: [..., k] -> the weighted sum of the k experts, [..., hidden]."""
        if indices.size >= _SORT_THRESHOLD:
            out = self._sorted_by_expert(x, indices)
        else:
            out = self._in_place(x[..., None, :], indices)
        return (out * weights[..., None, None].astype(out.dtype)).sum(axis=(-3, -2))

    def _in_place(self, x: mx.array, indices: mx.array) -> mx.array:
        """[..., k, 1, hidden] with each token's row read by its k experts where it is."""
        def pairs(chosen: mx.array) -> mx.array:
            return self._experts(x, chosen, False, *_rows_of_pairs(chosen.shape))

        return in_parts(pairs, [indices], -1, self.pair_parts, -3)

    def _experts(self, x: mx.array, indices: mx.array, sorted_indices: bool,
                 token_rows: mx.array | None = None, pair_rows: mx.array | None = None) -> mx.array:
        """down(gelu(gate x) * up x) per (row, expert); the row indices say which rows of x and of the
        intermediate each pair reads (None: the i-th pair reads row i)."""
        h = gelu_gate(*gate_and_up(self, x, indices, sorted_indices, token_rows))
        return self.down_proj(h, indices, sorted_indices, pair_rows)

    def _sorted_by_expert(self, x: mx.array, indices: mx.array) -> mx.array:
        """[..., k, 1, hidden], computed with the (token, expert) pairs in expert order."""
        top_k = indices.shape[-1]
        flat = indices.reshape(-1)
        order = mx.argsort(flat)
        rows = x.reshape(-1, 1, x.shape[-1])[order // top_k]
        out = in_parts(lambda part_rows, part_indices: self._experts(part_rows, part_indices, True),
                       [rows, flat[order]], 0, self.pair_parts, 0)
        return out[mx.argsort(order)].reshape(*indices.shape, 1, -1)


@lru_cache(maxsize=64)
def _rows_of_pairs(shape: tuple[int, ...]) -> tuple[mx.array, mx.array]:
    """For (token, expert) pairs shaped [..., k]: the input row each reads (its token's place in the
    flattened tokens), and the pair's own place in the flattened pairs.

    Given to the gathered matmuls as ready data (built with numpy, so never part of a traced graph):
    left to them, each call builds its own index ramp, a handful of graph nodes in every decode step.
    """
    pair_rows = np.arange(math.prod(shape), dtype=np.uint32).reshape(shape)
    return mx.array(pair_rows // shape[-1]), mx.array(pair_rows)


class Experts(nn.Module):
    def __init__(self, hidden: int, intermediate: int, experts: int):
        super().__init__()
        self.switch_glu = SwitchGLU(hidden, intermediate, experts)

    def __call__(self, x: mx.array, indices: mx.array, weights: mx.array) -> mx.array:
        return self.switch_glu(x, indices, weights)
