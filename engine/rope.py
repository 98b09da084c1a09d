"""Rotary position embeddings of the text decoder: default on sliding layers, proportional on full layers.

Both use the rotate-half layout over the whole head. Proportional RoPE rotates only the first
`partial_rotary_factor * head_dim / 2` frequency pairs, with exponents over the full head dim, so
pairs (j, j + head_dim/2) rotate for small j and every other lane passes through unchanged.

A rotation is applied one of two ways, by backend. On a GPU, `mx.fast.rope` is one kernel. MLX's CPU
backend has no rope kernel: it decomposes each call into about ten operations that recompute the
angles from the positions, for every layer. There the cos/sin tables are built once per chunk and
layer type, and each layer's rotation is one fused multiply-add over them.
"""

from __future__ import annotations

from typing import Callable

import mlx.core as mx
import numpy as np

from . import fused
from .config import RopeConfig

Rotation = Callable[[mx.array], mx.array]


def rope_periods(head_dim: int, rope: RopeConfig) -> np.ndarray:
    """Per-pair wavelengths (1 / inverse frequency); infinity marks a pair that does not rotate."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float64) / head_dim
    periods = rope.theta ** exponents
    if rope.proportional:
        rotated = int(rope.partial_rotary_factor * head_dim // 2)
        periods[rotated:] = np.inf
        periods = periods * rope.factor
    return periods.astype(np.float32)


def rotate_pairs(x: mx.array, cos: mx.array, sin: mx.array, groups: int = 1) -> mx.array:
    """Rotate-half with precomputed tables: lane j of a pair becomes x_j cos - x_(j+half) sin, and
    lane j + half becomes x_(j+half) cos + x_j sin.

    The head dim is `groups` blocks, each of two halves whose lane j pairs with lane j + half. The
    tables hold one angle per pair and broadcast against x viewed as [..., groups, 1, half].
    """
    shape = x.shape
    pairs = x.reshape(*shape[:-1], groups, 2, shape[-1] // (2 * groups))
    return fused.turn_pairs(pairs, pairs[..., ::-1, :], cos, sin).reshape(shape)


class Rope:
    def __init__(self, head_dim: int, rope: RopeConfig):
        self.head_dim = head_dim
        periods = rope_periods(head_dim, rope)
        self.periods = mx.array(periods)
        self._frequencies = mx.array((1.0 / periods.astype(np.float64)).astype(np.float32))  # inf turns by 0

    def at(self, offset: int | mx.array, positions: mx.array) -> Rotation:
        """The rotation of [B, heads, T, head_dim] inputs at `positions`, which are offset .. offset + T - 1
        (the fast kernel reads the offset, the tables the positions)."""
        if not fused.has_fast_kernels():
            cos, sin = self.tables(positions)
            return lambda x: rotate_pairs(x, cos, sin)
        return lambda x: mx.fast.rope(x, self.head_dim, traditional=False, base=None, scale=1.0,
                                      offset=offset, freqs=self.periods)

    def tables(self, positions: mx.array) -> tuple[mx.array, mx.array]:
        """cos and sin [T, 1, 1, head_dim / 2] for rotate_pairs, in float32."""
        angles = positions.astype(mx.float32)[:, None, None, None] * self._frequencies
        return mx.cos(angles), mx.sin(angles)
