"""The Gemma 4 audio encoder: log-mel features in, one vector per 40 ms out."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..config import AudioConfig
from .attention import relative_position_embeddings
from .conformer import ConformerLayer
from .subsample import SubsampleProjection


class AudioTower(nn.Module):
    """Parameter names follow the checkpoint under `audio_tower.` (convolutions in MLX layout)."""

    def __init__(self, config: AudioConfig):
        super().__init__()
        self.config = config
        self.subsample_conv_projection = SubsampleProjection(config)
        self.layers = [ConformerLayer(config) for _ in range(config.num_hidden_layers)]
        self.output_proj = nn.Linear(config.hidden_size, config.output_proj_dims, bias=True)
        self._positions = relative_position_embeddings(config)  # fixed, not a checkpoint tensor

    def __call__(self, features: mx.array, mask: mx.array) -> tuple[mx.array, mx.array]:
        """features [batch, frames, 128], mask [batch, frames] (True = real audio) ->
        (tokens [batch, frames/4, output_proj_dims], token mask [batch, frames/4])."""
        dtype = self.output_proj.weight.dtype
        x, mask = self.subsample_conv_projection(features.astype(dtype), mask)
        for layer in self.layers:
            x = layer(x, mask, self._positions)
        return self.output_proj(x), mask
