"""Rotary position embeddings of the text decoder: default on sliding layers, proportional on full layers.

Both use the rotate-half layout over the whole head. Proportional RoPE rotates only the first
`partial_rotary_factor * head_dim / 2` frequency pairs, with exponents over the full head dim, so
pairs (j, j + head_dim/2) rotate for small j and every other lane passes through unchanged.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from .config import RopeConfig


def rope_periods(head_dim: int, rope: RopeConfig) -> np.ndarray:
    """Per-pair wavelengths (1 / inverse frequency); infinity marks a pair that does not rotate."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float64) / head_dim
    periods = rope.theta ** exponents
    if rope.proportional:
        rotated = int(rope.partial_rotary_factor * head_dim // 2)
        periods[rotated:] = np.inf
        periods = periods * rope.factor
    return periods.astype(np.float32)


class Rope:
    def __init__(self, head_dim: int, rope: RopeConfig):
        self.head_dim = head_dim
        self.periods = mx.array(rope_periods(head_dim, rope))

    def __call__(self, x: mx.array, offset: int | mx.array) -> mx.array:
        """x: [B, heads, T, head_dim] at positions offset .. offset + T - 1."""
        return mx.fast.rope(x, self.head_dim, traditional=False, base=None, scale=1.0,
                            offset=offset, freqs=self.periods)
