"""One conformer block of the audio tower: half feed-forward, local attention, light convolution,
half feed-forward (the "macaron" order), every linear a ClippableLinear with stored bounds."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..clippable_linear import ClippableLinear
from ..config import AudioConfig
from .attention import LocalRelativeAttention


# Every norm here is nn.RMSNorm: Gemma 4 scales by the weight itself (not 1 + weight), as MLX does.
def _clamp(x: mx.array, bound: float) -> mx.array:
    """The reference's overflow guard: a clamp to +-gradient_clipping, capped at the dtype's largest value."""
    bound = min(bound, float(mx.finfo(x.dtype).max))
    return mx.clip(x, -bound, bound)


class FeedForward(nn.Module):
    """x + residual_weight * norm(W2 silu(W1 norm(x))), hidden -> 4 * hidden -> hidden."""

    def __init__(self, config: AudioConfig):
        super().__init__()
        hidden, clipped, eps = config.hidden_size, config.use_clipped_linears, config.rms_norm_eps
        self.pre_layer_norm = nn.RMSNorm(hidden, eps)
        self.ffw_layer_1 = ClippableLinear(hidden, 4 * hidden, clipped)
        self.ffw_layer_2 = ClippableLinear(4 * hidden, hidden, clipped)
        self.post_layer_norm = nn.RMSNorm(hidden, eps)
        self.residual_weight = config.residual_weight
        self.clip_bound = config.gradient_clipping

    def __call__(self, x: mx.array) -> mx.array:
        h = self.pre_layer_norm(_clamp(x, self.clip_bound))
        h = self.ffw_layer_2(nn.silu(self.ffw_layer_1(h)))
        return x + self.residual_weight * self.post_layer_norm(_clamp(h, self.clip_bound))


class LightConv(nn.Module):
    """x + W_end silu(norm(causal depthwise conv(GLU(W_start norm(x)))))."""

    def __init__(self, config: AudioConfig):
        super().__init__()
        hidden, clipped, eps = config.hidden_size, config.use_clipped_linears, config.rms_norm_eps
        self.pre_layer_norm = nn.RMSNorm(hidden, eps)
        self.linear_start = ClippableLinear(hidden, 2 * hidden, clipped)
        # Weight [hidden, kernel, 1] (MLX layout); causal, so it is padded on the left only.
        self.depthwise_conv1d = nn.Conv1d(hidden, hidden, config.conv_kernel_size, groups=hidden, bias=False)
        self.conv_norm = nn.RMSNorm(hidden, eps)
        self.linear_end = ClippableLinear(hidden, hidden, clipped)
        self.left_pad = config.conv_kernel_size - 1
        self.clip_bound = config.gradient_clipping

    def __call__(self, x: mx.array) -> mx.array:
        h = self.linear_start(self.pre_layer_norm(x))
        value, gate = mx.split(h, 2, axis=-1)
        h = value * mx.sigmoid(gate)
        h = self.depthwise_conv1d(mx.pad(h, [(0, 0), (self.left_pad, 0), (0, 0)]))
        h = nn.silu(self.conv_norm(_clamp(h, self.clip_bound)))
        return x + self.linear_end(h)


class ConformerLayer(nn.Module):
    def __init__(self, config: AudioConfig):
        super().__init__()
        hidden, eps = config.hidden_size, config.rms_norm_eps
        self.feed_forward1 = FeedForward(config)
        self.norm_pre_attn = nn.RMSNorm(hidden, eps)
        self.self_attn = LocalRelativeAttention(config)
        self.norm_post_attn = nn.RMSNorm(hidden, eps)
        self.lconv1d = LightConv(config)
        self.feed_forward2 = FeedForward(config)
        self.norm_out = nn.RMSNorm(hidden, eps)
        self.clip_bound = config.gradient_clipping

    def __call__(self, x: mx.array, mask: mx.array, positions: mx.array) -> mx.array:
        x = self.feed_forward1(x)
        attended = self.self_attn(self.norm_pre_attn(_clamp(x, self.clip_bound)), mask, positions)
        x = x + self.norm_post_attn(_clamp(attended, self.clip_bound))
        x = self.feed_forward2(self.lconv1d(x))
        return self.norm_out(_clamp(x, self.clip_bound))
