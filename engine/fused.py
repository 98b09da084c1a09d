"""Small element-wise pieces compiled into single graph nodes, where compiling is safe.

MLX 0.32 aborts the process at exit when a function was first compiled on a thread that has ended
("terminate called without an active exception"), so compiled variants are used on the main thread
only; every other thread runs the same operations uncompiled, with identical results.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import mlx.core as mx
import mlx.nn as nn


def on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def has_fast_kernels() -> bool:
    """Whether `mx.fast.rope` and attention run as kernels here: MLX's CPU backend only decomposes them."""
    return mx.default_device() != mx.cpu


@lru_cache(maxsize=None)
def _compiled_norm(eps: float, weighted: bool):
    if weighted:
        return mx.compile(lambda x, weight: mx.fast.rms_norm(x, weight, eps), shapeless=True)
    return mx.compile(lambda x: mx.fast.rms_norm(x, None, eps), shapeless=True)


def forget_compiled() -> None:
    """Drop the compiled norms, so the next call traces mx.fast.rms_norm again (the benchmark swaps it)."""
    _compiled_norm.cache_clear()


def rms_norm(x: mx.array, weight: mx.array | None, eps: float) -> mx.array:
    """x / rms(x) (times weight when given): Gemma 4's RMSNorm, with no +1 offset."""
    if not on_main_thread():
        return mx.fast.rms_norm(x, weight, eps)
    if weight is None:
        return _compiled_norm(eps, False)(x)
    return _compiled_norm(eps, True)(x, weight)


def _gelu_gate(gate: mx.array, up: mx.array) -> mx.array:
    return nn.gelu_approx(gate) * up


_compiled_gelu_gate = mx.compile(_gelu_gate, shapeless=True)


def gelu_gate(gate: mx.array, up: mx.array) -> mx.array:
    """gelu_tanh(gate) * up: the GeGLU product of every Gemma 4 feed-forward."""
    return _compiled_gelu_gate(gate, up) if on_main_thread() else _gelu_gate(gate, up)


_SIN_SIGNS = mx.array([[-1.0], [1.0]])  # over the pair axis: the first lane of a pair turns by -sin


def _turn_pairs(pairs: mx.array, swapped: mx.array, cos: mx.array, sin: mx.array, signs: mx.array) -> mx.array:
    return pairs * cos.astype(pairs.dtype) + swapped * sin.astype(pairs.dtype) * signs.astype(pairs.dtype)


_compiled_turn_pairs = mx.compile(_turn_pairs, shapeless=True)


def turn_pairs(pairs: mx.array, swapped: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
    """pairs * cos + swapped * (-sin, +sin): the arithmetic of a table-driven rotary embedding, over
    pairs viewed as [..., 2, half] and their two lanes swapped."""
    turn = _compiled_turn_pairs if on_main_thread() else _turn_pairs
    return turn(pairs, swapped, cos, sin, _SIN_SIGNS)


class RMSNorm(nn.Module):
    """A weighted RMSNorm whose parameter is named `weight`, like the checkpoints'."""

    def __init__(self, dims: int, eps: float = 1e-6):
        super().__init__()
        self.weight = mx.ones((dims,))
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        return rms_norm(x, self.weight, self.eps)
