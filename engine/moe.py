"""The mixture-of-experts block of 26B-A4B: a router and experts gathered with gather_mm / gather_qmm.

The router reads the un-normalised residual, normalises it without a weight, applies a learned
scale, picks the top-k experts by softmax probability, renormalises their weights and multiplies
each by its expert's learned scale. Expert weights are stacked [experts, out, in]; for many tokens
the (token, expert) pairs are sorted by expert so each expert's rows are contiguous.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from .fused import gelu_gate, rms_norm

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
        """x: [N, hidden] -> expert indices [N, k] and their weights [N, k] (float32)."""
        z = rms_norm(x, None, self.eps) * (self.scale * self.root_size).astype(x.dtype)
        probabilities = mx.softmax(self.proj(z).astype(mx.float32), axis=-1)
        indices = mx.argpartition(-probabilities, self.top_k - 1, axis=-1)[:, : self.top_k]
        weights = mx.take_along_axis(probabilities, indices, axis=-1)
        weights = weights / weights.sum(axis=-1, keepdims=True)
        return indices, weights * self.per_expert_scale[indices].astype(mx.float32)


class SwitchLinear(nn.Module):
    """One bias-free linear per expert, applied to the rows routed to it."""

    def __init__(self, experts: int, in_features: int, out_features: int):
        super().__init__()
        bound = 1 / math.sqrt(in_features)
        self.weight = mx.random.uniform(-bound, bound, (experts, out_features, in_features))

    def __call__(self, x: mx.array, indices: mx.array, sorted_indices: bool) -> mx.array:
        return mx.gather_mm(x, self.weight.swapaxes(-1, -2), rhs_indices=indices, sorted_indices=sorted_indices)

    def to_quantized(self, group_size: int = 64, bits: int = 4, mode: str = "affine") -> "QuantizedSwitchLinear":
        return QuantizedSwitchLinear.from_float(self, group_size, bits, mode)


class QuantizedSwitchLinear(nn.Module):
    def __init__(self, experts: int, in_features: int, out_features: int, group_size: int, bits: int,
                 mode: str = "affine"):
        super().__init__()
        self.group_size, self.bits, self.mode = group_size, bits, mode
        packed = in_features * bits // 32
        self.weight = mx.zeros((experts, out_features, packed), dtype=mx.uint32)
        self.scales = mx.zeros((experts, out_features, in_features // group_size))
        self.biases = mx.zeros((experts, out_features, in_features // group_size))

    @classmethod
    def from_float(cls, layer: SwitchLinear, group_size: int, bits: int, mode: str) -> "QuantizedSwitchLinear":
        experts, out_features, in_features = layer.weight.shape
        quantized = cls(experts, in_features, out_features, group_size, bits, mode)
        quantized.weight, quantized.scales, quantized.biases = mx.quantize(layer.weight, group_size, bits)
        return quantized

    def __call__(self, x: mx.array, indices: mx.array, sorted_indices: bool) -> mx.array:
        return mx.gather_qmm(x, self.weight, self.scales, self.biases, rhs_indices=indices, transpose=True,
                             group_size=self.group_size, bits=self.bits, mode=self.mode,
                             sorted_indices=sorted_indices)


class SwitchGLU(nn.Module):
    """The experts' GeGLU: down(gelu_tanh(gate x) * up x), each expert with its own weights."""

    def __init__(self, hidden: int, intermediate: int, experts: int):
        super().__init__()
        self.gate_proj = SwitchLinear(experts, hidden, intermediate)
        self.up_proj = SwitchLinear(experts, hidden, intermediate)
        self.down_proj = SwitchLinear(experts, intermediate, hidden)

    def __call__(self, x: mx.array, indices: mx.array, weights: mx.array) -> mx.array:
        """x: [N, hidden]; indices, weights: [N, k] -> the weighted sum of the k experts, [N, hidden]."""
        tokens, top_k = indices.shape
        flat = indices.reshape(-1)
        sort = tokens * top_k >= _SORT_THRESHOLD
        if sort:
            order = mx.argsort(flat)
            rows = x[order // top_k][:, None, :]
            flat = flat[order]
        else:
            rows = mx.repeat(x, top_k, axis=0)[:, None, :]
        h = gelu_gate(self.gate_proj(rows, flat, sort), self.up_proj(rows, flat, sort))
        out = self.down_proj(h, flat, sort)[:, 0, :]
        if sort:
            out = out[mx.argsort(order)]
        out = out.reshape(tokens, top_k, -1)
        return (out * weights[..., None].astype(out.dtype)).sum(axis=1)


class Experts(nn.Module):
    def __init__(self, hidden: int, intermediate: int, experts: int):
        super().__init__()
        self.switch_glu = SwitchGLU(hidden, intermediate, experts)

    def __call__(self, x: mx.array, indices: mx.array, weights: mx.array) -> mx.array:
        shape = x.shape
        out = self.switch_glu(x.reshape(-1, shape[-1]), indices, weights)
        return out.reshape(shape)
