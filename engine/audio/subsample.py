"""The convolutional front end: two stride-2 3x3 convolutions cut time and frequency by four."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..config import AudioConfig
from .features import NUM_MEL_BINS


class SubsampleLayer(nn.Module):
    """Conv2d (3x3, stride 2, padding 1, no bias), then LayerNorm over channels (no bias), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, eps: float):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = nn.LayerNorm(out_channels, eps=eps, bias=False)

    def __call__(self, x: mx.array, mask: mx.array) -> tuple[mx.array, mx.array]:
        # x: [batch, time, freq, channels]. Padding frames are zeroed so they read as the conv's own zero padding.
        x = x * mask[:, :, None, None].astype(x.dtype)
        x = nn.relu(self.norm(self.conv(x)))
        return x, mask[:, ::2]


def _halved(size: int) -> int:
    return (size - 1) // 2 + 1


class SubsampleProjection(nn.Module):
    """Features [batch, T, 128] -> [batch, ceil(ceil(T/2)/2), hidden] plus the matching validity mask."""

    def __init__(self, config: AudioConfig):
        super().__init__()
        first, second = config.subsampling_conv_channels
        self.layer0 = SubsampleLayer(1, first, config.rms_norm_eps)
        self.layer1 = SubsampleLayer(first, second, config.rms_norm_eps)
        # Flattened per time step as (frequency, channel) with channel fastest.
        flat_width = _halved(_halved(NUM_MEL_BINS)) * second
        self.input_proj_linear = nn.Linear(flat_width, config.hidden_size, bias=False)

    def __call__(self, features: mx.array, mask: mx.array) -> tuple[mx.array, mx.array]:
        x, mask = self.layer0(features[..., None], mask)
        x, mask = self.layer1(x, mask)
        batch, time = x.shape[:2]
        return self.input_proj_linear(x.reshape(batch, time, -1)), mask
