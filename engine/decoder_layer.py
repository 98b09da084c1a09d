"""One text decoder layer: sandwich-normed attention and feed-forward, PLE residual, layer scalar."""

from __future__ import annotations

from typing import Callable

import mlx.core as mx
import mlx.nn as nn

from .attention import Attention, SharedKV
from .cache import LayerCache
from .config import TextConfig
from .fused import RMSNorm, gelu_gate
from .mlp import MLP
from .moe import Experts, Router
from .positions import ChunkPositions


class DecoderLayer(nn.Module):
    def __init__(self, config: TextConfig, layer: int):
        super().__init__()
        hidden, eps = config.hidden_size, config.rms_norm_eps
        self.self_attn = Attention(config, layer)
        self.mlp = MLP(hidden, config.mlp_width(layer))
        self.input_layernorm = RMSNorm(hidden, eps=eps)
        self.post_attention_layernorm = RMSNorm(hidden, eps=eps)
        self.pre_feedforward_layernorm = RMSNorm(hidden, eps=eps)
        self.post_feedforward_layernorm = RMSNorm(hidden, eps=eps)
        self.layer_scalar = mx.ones((1,))
        self.has_moe = config.enable_moe_block
        if self.has_moe:
            self.router = Router(hidden, config.num_experts, config.top_k_experts, eps)
            self.experts = Experts(hidden, config.moe_intermediate_size, config.num_experts)
            self.post_feedforward_layernorm_1 = RMSNorm(hidden, eps=eps)
            self.post_feedforward_layernorm_2 = RMSNorm(hidden, eps=eps)
            self.pre_feedforward_layernorm_2 = RMSNorm(hidden, eps=eps)
        # Per token, the widest buffer the feed-forward holds: the dense MLP's intermediate, or the routed
        # experts' rows (every token is copied once per chosen expert, at the wider of hidden and intermediate).
        routed = config.top_k_experts * max(hidden, config.moe_intermediate_size) if self.has_moe else 0
        self.feed_forward_width = max(config.mlp_width(layer), routed)
        self.has_ple = config.has_ple
        if self.has_ple:
            width = config.hidden_size_per_layer_input
            self.per_layer_input_gate = nn.Linear(hidden, width, bias=False)
            self.per_layer_projection = nn.Linear(width, hidden, bias=False)
            self.post_per_layer_input_norm = RMSNorm(hidden, eps=eps)

    def stack_projections(self) -> None:
        self.self_attn.stack_projections()
        self.mlp.stack_projections()
        if self.has_moe:
            self.experts.switch_glu.stack_projections()

    def __call__(self, x: mx.array, per_layer_input: mx.array | None, positions: ChunkPositions,
                 cache: LayerCache | None, shared: SharedKV | None, last_query_only: bool = False
                 ) -> tuple[mx.array, SharedKV]:
        """With `last_query_only`, every position's K/V is cached but only the last position comes out."""
        attended, shared = self.self_attn(self.input_layernorm(x), positions, cache, shared, last_query_only)
        if last_query_only:
            x = x[:, -1:]
            per_layer_input = None if per_layer_input is None else per_layer_input[:, -1:]
        return _by_row_slices(self._after_attention, self.feed_forward_width, x, attended, per_layer_input), shared

    def _after_attention(self, x: mx.array, attended: mx.array, per_layer_input: mx.array | None) -> mx.array:
        """Everything a layer does after attention: residuals, feed-forward, PLE, layer scalar."""
        x = x + self.post_attention_layernorm(attended)
        x = x + self.post_feedforward_layernorm(self._feed_forward(x))
        if self.has_ple:
            gate = gelu_gate(self.per_layer_input_gate(x), per_layer_input)
            x = x + self.post_per_layer_input_norm(self.per_layer_projection(gate))
        return x * self.layer_scalar.astype(x.dtype)

    def _feed_forward(self, residual: mx.array) -> mx.array:
        dense = self.mlp(self.pre_feedforward_layernorm(residual))
        if not self.has_moe:
            return dense
        indices, weights = self.router(residual)
        routed = self.experts(self.pre_feedforward_layernorm_2(residual), indices, weights)
        return self.post_feedforward_layernorm_1(dense) + self.post_feedforward_layernorm_2(routed)


# The feed-forward's transient buffers per prefill slice: on the CPU each of gate, up and product is kept
# to about 1 MiB in float32; on a GPU a slice is a fixed number of rows.
_CPU_SLICE_ELEMENTS = 1 << 18
_GPU_SLICE_ROWS = 256


def feed_forward_rows(width: int) -> int:
    """How many rows of a prefill chunk go through a feed-forward of `width` together.

    Slicing bounds the feed-forward's gate, up and product buffers (three of rows x width) by the slice
    instead of the chunk. On the CPU a quantized matmul costs the same per row however rows are grouped
    (time to first token within noise with 32-row slices), so slices are sized by memory alone, and
    narrow layers are not sliced at all; on a GPU each slice is another round of kernel launches and
    another read of the weights, so slices are large.
    """
    if mx.default_device() == mx.cpu:
        return max(1, _CPU_SLICE_ELEMENTS // width)
    return _GPU_SLICE_ROWS


def _by_row_slices(after: Callable[..., mx.array], width: int, x: mx.array, attended: mx.array,
                   per_layer_input: mx.array | None) -> mx.array:
    """`after` (row-wise) on slices of at most feed_forward_rows(width) rows, joined again."""
    rows, step = x.shape[1], feed_forward_rows(width)
    if rows <= step:
        return after(x, attended, per_layer_input)
    parts = []
    for start in range(0, rows, step):
        rows_here = slice(start, start + step)
        ple = None if per_layer_input is None else per_layer_input[:, rows_here]
        parts.append(after(x[:, rows_here], attended[:, rows_here], ple))
    return mx.concatenate(parts, axis=1)
