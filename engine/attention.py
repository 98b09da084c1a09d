"""Self-attention of one text decoder layer.

Scale 1.0 (q/k norms replace 1/sqrt(d)); V is normalised without a weight; with `attention_k_eq_v`
full layers have no v_proj and take V from the raw K projection (before k_norm and RoPE).
KV-shared consumer layers only project queries and attend over their producer's K/V.
"""

from __future__ import annotations

from typing import NamedTuple

import mlx.core as mx
import mlx.nn as nn

from . import fused
from .cache import LayerCache, QuantizedKV
from .config import TextConfig
from .fused import RMSNorm, rms_norm
from .positions import ChunkPositions
from .rope import Rope
from .stacked_linear import output_rows, stack_in_place


class SharedKV(NamedTuple):
    keys: mx.array
    values: mx.array
    positions: mx.array | None  # None: every key is visible to the current queries


def grouped_attention(queries: mx.array, keys: mx.array | QuantizedKV, values: mx.array | QuantizedKV,
                      mask: mx.array | None) -> mx.array:
    """Scale-1 attention with the query heads of each KV head stacked as the rows of one product.

    Used for quantized caches on every backend (both products run as quantized matmuls, the cache is
    never dequantized) and for every cache on the CPU, where MLX has no attention kernel: its generic
    decomposition scales the queries even by 1 and multiplies each query head separately.
    """
    batch, heads, length, dim = queries.shape
    kv_heads = (keys.packed if isinstance(keys, QuantizedKV) else keys).shape[1]
    rows = queries.reshape(batch, kv_heads, heads // kv_heads * length, dim)
    scores = _times(rows, keys, transpose=True)
    if mask is not None and length == 1:
        scores = mx.where(mask, scores, mx.array(-mx.inf, scores.dtype))
    elif mask is not None:
        by_query = scores.reshape(batch, kv_heads, heads // kv_heads, length, -1)  # [T, S] masks broadcast here
        scores = mx.where(mask, by_query, mx.array(-mx.inf, scores.dtype)).reshape(scores.shape)
    weights = mx.softmax(scores.astype(mx.float32), axis=-1).astype(queries.dtype)
    return _times(weights, values, transpose=False).reshape(batch, heads, length, -1)


def _times(x: mx.array, cached: mx.array | QuantizedKV, transpose: bool) -> mx.array:
    """x @ cached (or its transpose) per KV head."""
    if isinstance(cached, QuantizedKV):
        return mx.quantized_matmul(x, cached.packed, cached.scales, cached.biases, transpose=transpose,
                                   group_size=cached.group_size, bits=cached.bits)
    return x @ (cached.swapaxes(-1, -2) if transpose else cached)


class Attention(nn.Module):
    def __init__(self, config: TextConfig, layer: int):
        super().__init__()
        hidden, heads = config.hidden_size, config.num_attention_heads
        self.head_dim = config.layer_head_dim(layer)
        self.heads = heads
        self.kv_heads = config.layer_kv_heads(layer)
        self.eps = config.rms_norm_eps
        self.owns_kv = not config.is_kv_consumer(layer)
        self.q_proj = nn.Linear(hidden, heads * self.head_dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim, eps=self.eps)
        self.has_value_proj = self.owns_kv and config.has_value_proj(layer)
        if self.owns_kv:
            self.k_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=False)
            if self.has_value_proj:
                self.v_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=False)
            self.k_norm = RMSNorm(self.head_dim, eps=self.eps)
        self.o_proj = nn.Linear(heads * self.head_dim, hidden, bias=False)
        self.kind = config.layer_types[layer]
        rope = config.rope_full if config.is_full(layer) else config.rope_sliding
        self.rope = Rope(self.head_dim, rope)

    def _split_heads(self, x: mx.array, heads: int) -> mx.array:
        batch, length, _ = x.shape
        if length == 1:  # one position: [B, 1, heads*d] and [B, heads, 1, d] share a layout, no transpose
            return x.reshape(batch, heads, 1, self.head_dim)
        return x.reshape(batch, length, heads, self.head_dim).transpose(0, 2, 1, 3)

    def stack_projections(self) -> None:
        """Project q, k and v (q and k without v_proj) with one matmul, where their storage allows.

        Called once the checkpoint's weights are in place: the separate projections are what it names.
        """
        if not self.owns_kv:
            return
        stack_in_place(self, [name for name in ("q_proj", "k_proj", "v_proj") if name in self], "qkv_proj")
        if "qkv_proj" in self:
            self.qk_norm_weight = mx.concatenate([
                mx.broadcast_to(self.q_norm.weight, (self.heads, self.head_dim)),
                mx.broadcast_to(self.k_norm.weight, (self.kv_heads, self.head_dim)),
            ])[:, None, :]

    def _queries_keys_values(self, x: mx.array, positions: ChunkPositions, asking: ChunkPositions,
                             last_query_only: bool) -> tuple[mx.array, mx.array | None, mx.array | None]:
        """Normed and rotated queries, and for a layer that owns its K/V normed and rotated keys and normed
        values, as [B, heads, T, head_dim].

        A chunk takes one matmul per projection on views of the stacked weight: on the CPU a 128-token
        prefill of 26B-A4B was measured 20 % slower through the stacked output, and a chunk's last layer
        projects one query only.
        """
        if "qkv_proj" in self and x.shape[1] == 1:
            return self._one_position(x, asking)
        q_proj, k_proj, v_proj = self._projections()
        queries = self._split_heads(q_proj(x[:, -1:] if last_query_only else x), self.heads)
        queries = asking.rotation(self.kind, self.rope)(rms_norm(queries, self.q_norm.weight, self.eps))
        if k_proj is None:
            return queries, None, None
        raw_k = self._split_heads(k_proj(x), self.kv_heads)
        raw_v = raw_k if v_proj is None else self._split_heads(v_proj(x), self.kv_heads)
        keys = positions.rotation(self.kind, self.rope)(rms_norm(raw_k, self.k_norm.weight, self.eps))
        return queries, keys, rms_norm(raw_v, None, self.eps)

    def _one_position(self, x: mx.array, positions: ChunkPositions) -> tuple[mx.array, mx.array, mx.array]:
        """A single position through the stacked projection, where launches cost more than the work: one
        matmul, one norm over every head, one multiply by the q and k norms' weights side by side, and
        one rotation of queries and keys together (norms and rotation act on each head alone)."""
        heads = self.heads + self.kv_heads * (2 if self.has_value_proj else 1)
        normed = rms_norm(self._split_heads(self.qkv_proj(x), heads), None, self.eps)
        if self.has_value_proj:
            query_key, values = mx.split(normed, [self.heads + self.kv_heads], axis=1)
        else:  # V is K before its norm's weight and the rotation
            query_key, values = normed, mx.split(normed, [self.heads], axis=1)[1]
        weighted = query_key * self.qk_norm_weight.astype(normed.dtype)
        queries, keys = mx.split(positions.rotation(self.kind, self.rope)(weighted), [self.heads], axis=1)
        return queries, keys, values

    def _projections(self) -> tuple[nn.Module, nn.Module | None, nn.Module | None]:
        """The q, k and v projections (None where absent): the modules, or views of the stacked one."""
        if "qkv_proj" not in self:
            return self.q_proj, self.get("k_proj"), self.get("v_proj")
        q_rows, kv_rows = self.heads * self.head_dim, self.kv_heads * self.head_dim
        q_proj = output_rows(self.qkv_proj, slice(0, q_rows))
        k_proj = output_rows(self.qkv_proj, slice(q_rows, q_rows + kv_rows))
        v_proj = output_rows(self.qkv_proj, slice(q_rows + kv_rows, None)) if self.has_value_proj else None
        return q_proj, k_proj, v_proj

    def __call__(self, x: mx.array, positions: ChunkPositions, cache: LayerCache | None,
                 shared: SharedKV | None, last_query_only: bool = False) -> tuple[mx.array, SharedKV]:
        """Attend; return the output and the K/V that KV-shared layers of this type may reuse.

        x sits at `positions`. With `last_query_only`, every position of x gives keys and values but
        only the last one a query.
        """
        asking = positions.last_only() if last_query_only else positions
        queries, keys, values = self._queries_keys_values(x, positions, asking, last_query_only)
        if self.owns_kv:
            keys, values, key_positions = cache.update(keys, values)
            shared = SharedKV(keys, values, key_positions)
        mask = asking.mask(self.kind, shared.positions)
        if isinstance(shared.keys, QuantizedKV) or not fused.has_fast_kernels():
            out = grouped_attention(queries, shared.keys, shared.values, mask)
        else:
            out = mx.fast.scaled_dot_product_attention(queries, shared.keys, shared.values, scale=1.0, mask=mask)
        batch, _, length, _ = out.shape
        if length > 1:
            out = out.transpose(0, 2, 1, 3)
        out = out.reshape(batch, length, -1)
        return self.o_proj(out), shared
