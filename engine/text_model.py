"""The Gemma 4 text decoder: embeddings, per-layer embeddings (PLE), the layer stack, the tied head."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from . import core_split
from .attention import SharedKV
from .cache import FullCache, LayerCache, SlidingCache
from .config import SLIDING, TextConfig
from .decoder_layer import DecoderLayer
from .fused import RMSNorm
from .positions import ChunkPositions
from .quantized import float_type


class TextModel(nn.Module):
    def __init__(self, config: TextConfig):
        super().__init__()
        self.config = config
        hidden = config.hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, hidden)
        if config.has_ple:
            width = config.num_hidden_layers * config.hidden_size_per_layer_input
            self.embed_tokens_per_layer = nn.Embedding(config.vocab_size_per_layer_input, width)
            self.per_layer_model_projection = nn.Linear(hidden, width, bias=False)
            self.per_layer_projection_norm = RMSNorm(config.hidden_size_per_layer_input, eps=config.rms_norm_eps)
        self.layers = [DecoderLayer(config, i) for i in range(config.num_hidden_layers)]
        self.norm = RMSNorm(hidden, eps=config.rms_norm_eps)
        self.head_parts = 1

    def split_over_cores(self, parts: int, min_bytes: int | None = None) -> None:
        """On the CPU: every quantized matmul over at least `min_bytes` of weights per token (linears, the
        tied head, a token's experts) runs in `parts` parts on as many cores (see core_split.py)."""
        if parts < 2:
            return
        min_bytes = core_split.MIN_SPLIT_BYTES if min_bytes is None else min_bytes
        core_split.split_linears(self, parts, min_bytes)
        head = self.embed_tokens
        if isinstance(head, nn.QuantizedEmbedding) and core_split.weight_bytes(head) >= min_bytes:
            self.head_parts = parts
        for layer in self.layers:
            if layer.has_moe:
                layer.experts.switch_glu.split_over_cores(parts, min_bytes, self.config.top_k_experts)

    def stack_projections(self) -> None:
        """Projections that read the same input become one matmul: each layer's q, k and v, and the gate and
        up of its feed-forward and experts (see stacked_linear.py). Called once the checkpoint's weights are
        bound, since the checkpoint names the separate ones."""
        for layer in self.layers:
            layer.stack_projections()

    def make_caches(self, kv_bits: int | None = None) -> list[LayerCache | None]:
        """One cache per layer that owns its K/V; None for KV-shared consumers.

        `kv_bits` (4 or 8) stores the full layers' growing caches quantized.
        """
        c = self.config
        return [None if c.is_kv_consumer(i) else
                (SlidingCache(c.sliding_window) if c.layer_types[i] == SLIDING else FullCache(kv_bits))
                for i in range(c.num_hidden_layers)]

    def embed(self, ids: mx.array, dtype: mx.Dtype) -> mx.array:
        """Token embeddings times sqrt(hidden), the scale rounded to the table's dtype as the reference does."""
        return _scaled(self.embed_tokens, ids, math.sqrt(self.config.hidden_size), dtype)

    def per_layer_inputs(self, ple_ids: mx.array, embeddings: mx.array) -> list[mx.array]:
        """Each layer's [B, T, width] input: the token part plus the projection of the final input
        embeddings, computed for all layers at once."""
        c = self.config
        width = c.hidden_size_per_layer_input
        shape = (*ple_ids.shape, c.num_hidden_layers, width)
        token_part = _scaled(self.embed_tokens_per_layer, ple_ids, math.sqrt(width), embeddings.dtype).reshape(shape)
        projected = self.per_layer_model_projection(embeddings) * (c.hidden_size ** -0.5)
        projected = self.per_layer_projection_norm(projected.reshape(shape))
        return split_in_stages(((projected + token_part) * (2.0 ** -0.5)).reshape(*ple_ids.shape, -1),
                               c.num_hidden_layers)

    def __call__(self, h: mx.array, ple_ids: mx.array, caches: list[LayerCache | None],
                 offset: int, groups: mx.array | None = None, last_only: bool = False,
                 fill_only: bool = False) -> mx.array | None:
        """Run the layers over embeddings h [B, T, hidden] at positions offset.. ; return normed hidden states.

        `ple_ids` are the token ids for the per-layer embeddings (media placeholders as pad); the PLE
        inputs are built here, chunk by chunk, so a long prompt never holds them all at once.

        With `last_only`, only the last position's output is computed past the last layer that writes a
        cache: that layer still caches every position's K/V, but attends and feeds forward for the last
        query only, and the KV-shared layers after it run for that position alone. With `fill_only` the
        chunk only fills the caches: the layers stop there and nothing is returned.
        `groups` gives each position its image group id (-1 for none) for the vision-bidirectional overlay.
        """
        c = self.config
        per_layer_inputs = self.per_layer_inputs(ple_ids, h) if c.has_ple else None
        positions = ChunkPositions(c, offset, h.shape[1], groups)
        shared: dict[str, SharedKV] = {}
        last_writer = c.first_kv_shared_layer - 1
        rows = slice(None)  # of the PLE inputs: every position, then the last one after a narrowing layer
        for index, layer in enumerate(self.layers):
            if fill_only and index > last_writer:
                return None
            narrow = last_only and index == last_writer and h.shape[1] > 1
            kind = c.layer_types[index]
            ple = None if per_layer_inputs is None else per_layer_inputs[index][:, rows]
            h, produced = layer(h, ple, positions, caches[index], shared.get(kind), last_query_only=narrow)
            if narrow:
                positions = positions.last_only()
                rows = slice(-1, None)
            if not c.is_kv_consumer(index):
                shared[kind] = produced
        return None if fill_only else self.norm(h)

    def next_token_logits(self, ids: mx.array, caches: list[LayerCache | None], offset: int | mx.array,
                          dtype: mx.Dtype) -> mx.array:
        """Logits after the last of `ids` (text tokens only, [1, T]), appending them to `caches` at `offset`."""
        hidden = self(self.embed(ids, dtype), ids, caches, offset=offset)
        return self.logits(hidden[:, -1])

    def logits(self, hidden: mx.array) -> mx.array:
        """Tied LM head and final soft-cap, in float32."""
        if self.head_parts > 1:
            logits = core_split.quantized_matmul_by_rows(hidden, self.embed_tokens, self.head_parts).astype(mx.float32)
        else:
            logits = self.embed_tokens.as_linear(hidden).astype(mx.float32)
        cap = self.config.final_logit_softcapping
        if cap:
            logits = mx.tanh(logits / cap) * cap
        return logits


# A compiled graph records a split into at most this many parts as one node, and a larger one as a
# slice per part (MLX 0.32).
_PARTS_PER_SPLIT = 10


def split_in_stages(x: mx.array, parts: int) -> list[mx.array]:
    """x split into `parts` equal parts along its last axis: into groups first, then each group, so a
    compiled step holds a node per group instead of one per part."""
    if parts <= _PARTS_PER_SPLIT:
        return mx.split(x, parts, axis=-1)
    width = x.shape[-1] // parts
    starts = range(_PARTS_PER_SPLIT, parts, _PARTS_PER_SPLIT)
    groups = mx.split(x, [start * width for start in starts], axis=-1)
    return [part for group in groups for part in mx.split(group, group.shape[-1] // width, axis=-1)]


def _rows(table: nn.Module, ids: mx.array, dtype: mx.Dtype) -> mx.array:
    """Embedding rows in the compute dtype; quantized rows are dequantized in it, not in the scales' dtype
    (bf16 scales would otherwise round every row before a float32 computation)."""
    if not isinstance(table, nn.QuantizedEmbedding):
        return table(ids).astype(dtype)
    if table.mode != "affine":   # float codes with exponent scales: decoded straight into the compute dtype
        return mx.dequantize(table.weight[ids], table.scales[ids], None, table.group_size, table.bits,
                             mode=table.mode, dtype=dtype)
    return mx.dequantize(table.weight[ids], table.scales[ids].astype(dtype), table.biases[ids].astype(dtype),
                         table.group_size, table.bits, mode=table.mode)


def _scaled(table: nn.Module, ids: mx.array, scale: float, dtype: mx.Dtype) -> mx.array:
    """Rows times scale in the compute dtype, the scale first rounded to the table's dtype as the reference does."""
    stored = float_type(table, dtype)
    return _rows(table, ids, dtype) * mx.array(scale, dtype=stored).astype(dtype)
