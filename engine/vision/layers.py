"""One encoder layer of the vision tower, and the 2-D rotary embedding it uses.

The layer is the Gemma sandwich: `x += post_attn_norm(attn(input_norm(x)))`, then
`x += post_ff_norm(mlp(pre_ff_norm(x)))`. Attention is bidirectional with scale 1.0 (q and k are
RMS-normalised per head instead), and the tower only ever feeds it real patches, so it needs no mask.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..clippable_linear import ClippableLinear
from ..config import VisionConfig
from ..errors import EngineError
from ..rope import rotate_pairs

# Head sizes the fused Metal attention kernel handles. A head between two of them is zero-padded up to
# the next (72 -> 80 for the large tower), which leaves q.k and the output unchanged; smaller heads
# are left alone because padding them would cost more than the unfused path.
_FUSED_HEAD_DIMS = (64, 80, 128)


def _fused_head_dim(head_dim: int) -> int:
    if head_dim <= _FUSED_HEAD_DIMS[0]:
        return head_dim
    return next((d for d in _FUSED_HEAD_DIMS if d >= head_dim), head_dim)


def rope_2d_angles(positions: mx.array, head_dim: int, theta: float) -> tuple[mx.array, mx.array]:
    """cos and sin [B, N, 1, 2, 1, head_dim / 4] for `apply_rope_2d`, from (x, y) positions [B, N, 2].

    The first half of each head turns with x, the second half with y; inside a half, lane j pairs
    with lane j + head_dim / 4 and both share frequency theta^(-4j / head_dim).
    """
    if head_dim % 4:
        raise EngineError(f"vision head_dim {head_dim} must be a multiple of 4 for the 2-D rotary embedding")
    quarter = head_dim // 4
    inv_freq = theta ** (-mx.arange(quarter, dtype=mx.float32) / quarter)
    coords = positions.astype(mx.float32)[..., None] * inv_freq  # [B, N, 2 (x, y), quarter]
    angles = coords[:, :, None, :, None, :]
    return mx.cos(angles), mx.sin(angles)


def apply_rope_2d(x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
    """Rotate-half inside each of the two halves of the head dim ([B, N, H, D])."""
    return rotate_pairs(x, cos, sin, groups=2)


def attention(q: mx.array, k: mx.array, v: mx.array) -> mx.array:
    """Unmasked attention with scale 1 over [B, H, N, D], padding D for the fused kernels."""
    head_dim = q.shape[-1]
    padded = _fused_head_dim(head_dim)
    if padded == head_dim:
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=1.0)
    widths = [(0, 0)] * (q.ndim - 1) + [(0, padded - head_dim)]
    q, k, v = (mx.pad(t, widths) for t in (q, k, v))
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=1.0)[..., :head_dim]


class VisionAttention(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        clipped = config.use_clipped_linears
        hidden, head_dim = config.hidden_size, config.head_dim
        self.heads, self.kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, head_dim
        self.eps = config.rms_norm_eps
        self.q_proj = ClippableLinear(hidden, self.heads * head_dim, clipped)
        self.k_proj = ClippableLinear(hidden, self.kv_heads * head_dim, clipped)
        self.v_proj = ClippableLinear(hidden, self.kv_heads * head_dim, clipped)
        self.o_proj = ClippableLinear(self.heads * head_dim, hidden, clipped)
        self.q_norm = nn.RMSNorm(head_dim, eps=config.rms_norm_eps)
        self.k_norm = nn.RMSNorm(head_dim, eps=config.rms_norm_eps)

    def __call__(self, x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
        batch, length, _ = x.shape

        def heads(proj: ClippableLinear, count: int) -> mx.array:
            return proj(x).reshape(batch, length, count, self.head_dim)

        q = apply_rope_2d(self.q_norm(heads(self.q_proj, self.heads)), cos, sin)
        k = apply_rope_2d(self.k_norm(heads(self.k_proj, self.kv_heads)), cos, sin)
        v = mx.fast.rms_norm(heads(self.v_proj, self.kv_heads), None, self.eps)
        out = attention(*(t.transpose(0, 2, 1, 3) for t in (q, k, v)))
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(batch, length, -1))


class VisionMLP(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        clipped = config.use_clipped_linears
        self.gate_proj = ClippableLinear(config.hidden_size, config.intermediate_size, clipped)
        self.up_proj = ClippableLinear(config.hidden_size, config.intermediate_size, clipped)
        self.down_proj = ClippableLinear(config.intermediate_size, config.hidden_size, clipped)

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(nn.gelu_approx(self.gate_proj(x)) * self.up_proj(x))


class VisionEncoderLayer(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        hidden, eps = config.hidden_size, config.rms_norm_eps
        self.self_attn = VisionAttention(config)
        self.mlp = VisionMLP(config)
        self.input_layernorm = nn.RMSNorm(hidden, eps=eps)
        self.post_attention_layernorm = nn.RMSNorm(hidden, eps=eps)
        self.pre_feedforward_layernorm = nn.RMSNorm(hidden, eps=eps)
        self.post_feedforward_layernorm = nn.RMSNorm(hidden, eps=eps)

    def __call__(self, x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), cos, sin))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
