"""The Gemma 4 vision tower: patch embedding, encoder, 3x3 pooling, scaling and standardize.

Parameter names match the checkpoint under `vision_tower.` (see the architecture reference §8.1).
The tower is fed only the real patches of images that share one patch grid (no padding), so its
bidirectional attention needs no mask and padding costs nothing; `encode.py` does that grouping.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from ..config import VisionConfig
from ..quantized import float_type
from .layers import VisionEncoderLayer, rope_2d_angles


class PatchEmbedder(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        self.input_proj = nn.Linear(3 * config.patch_size**2, config.hidden_size, bias=False)
        self.position_embedding_table = mx.zeros((2, config.position_embedding_size, config.hidden_size))

    @property
    def dtype(self) -> mx.Dtype:
        return float_type(self.input_proj, fallback=self.position_embedding_table.dtype)

    def __call__(self, patches: mx.array, positions: mx.array) -> mx.array:
        # The model was trained on pixels in [-1, 1]; the processor hands over [0, 1].
        pixels = (2 * (patches - 0.5)).astype(self.dtype)
        table = self.position_embedding_table
        return self.input_proj(pixels) + table[0][positions[..., 0]] + table[1][positions[..., 1]]


class VisionEncoder(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        self.layers = [VisionEncoderLayer(config) for _ in range(config.num_hidden_layers)]


def pool_blocks(hidden: mx.array, positions: mx.array, kernel: int) -> mx.array:
    """Average each kernel x kernel block of patches, found by position, in float32: [B, N / k^2, D]."""
    batch, length, width = hidden.shape
    out_len = length // kernel**2
    cols = positions[..., 0].max(axis=1, keepdims=True) + 1
    block = positions // kernel
    index = block[..., 0] + (cols // kernel) * block[..., 1] + mx.arange(batch)[:, None] * out_len
    values = hidden.astype(mx.float32).reshape(-1, width) / kernel**2
    pooled = mx.zeros((batch * out_len, width), dtype=mx.float32).at[index.reshape(-1)].add(values)
    return pooled.reshape(batch, out_len, width)


class VisionTower(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        self.config = config
        self.patch_embedder = PatchEmbedder(config)
        self.encoder = VisionEncoder(config)
        if config.standardize:
            self.std_bias = mx.zeros((config.hidden_size,))
            self.std_scale = mx.ones((config.hidden_size,))

    @property
    def dtype(self) -> mx.Dtype:
        return self.patch_embedder.dtype

    def __call__(self, patches: mx.array, positions: mx.array) -> mx.array:
        """Real patches [B, N, 3*p*p] in [0, 1] at (x, y) positions [B, N, 2] -> soft tokens [B, N / k^2, Hv].

        All B images share one patch grid whose sides are multiples of the pooling kernel.
        """
        config = self.config
        hidden = self.patch_embedder(patches, positions)
        cos, sin = rope_2d_angles(positions, config.head_dim, config.rope_theta)
        for layer in self.encoder.layers:
            hidden = layer(hidden, cos, sin)
        # sqrt(Hv) scaling and the standardize offsets (around 1e4) overflow float16, so both stay in
        # float32; the result goes back to the weights' dtype as the reference does.
        pooled = pool_blocks(hidden, positions, config.pooling_kernel_size) * math.sqrt(config.hidden_size)
        if config.standardize:
            pooled = (pooled - self.std_bias.astype(mx.float32)) * self.std_scale.astype(mx.float32)
        return pooled.astype(self.dtype)
