"""The conformer's self-attention: local (each frame sees itself and the previous ones within a short
horizon), computed block by block, with a learned relative-position term and a soft cap on the logits.

Queries are cut into blocks of `chunk` frames; each block attends over a context window running from
`context_left - 1` frames before the block to `context_right` frames after it. The relative term uses
sinusoidal embeddings of the distances context//2 ... 0 and the Transformer-XL shift to line them up
with the keys. Blocks and shift follow the reference layout so that its edge conventions carry over.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..clippable_linear import ClippableLinear
from ..config import AudioConfig


def relative_position_embeddings(config: AudioConfig) -> mx.array:
    """[context//2 + 1, hidden]: [sin | cos] of distances context//2 down to 0 over geometric timescales."""
    half = config.hidden_size // 2
    context = _context_size(config)
    increment = math.log(10_000.0) / max(half - 1, 1)
    inverse_timescales = np.exp(np.arange(half, dtype=np.float32) * np.float32(-increment))
    distances = np.arange(context // 2, -1, -1, dtype=np.float32)[:, None]
    scaled = distances * inverse_timescales[None, :]
    return mx.array(np.concatenate([np.sin(scaled), np.cos(scaled)], axis=-1))


def _context_size(config: AudioConfig) -> int:
    return config.attention_chunk_size + config.attention_context_left - 1 + config.attention_context_right


class LocalRelativeAttention(nn.Module):
    def __init__(self, config: AudioConfig):
        super().__init__()
        hidden, heads = config.hidden_size, config.num_attention_heads
        clipped = config.use_clipped_linears
        self.heads = heads
        self.head_dim = hidden // heads
        self.chunk = config.attention_chunk_size
        self.past = config.attention_context_left - 1
        self.future = config.attention_context_right
        self.context = _context_size(config)
        self.logit_cap = config.attention_logit_cap
        self.invalid_logit = config.attention_invalid_logits_value
        # The query scale divides by ln 2 because softplus(0) = ln 2: an untrained per_dim_scale gives d^-0.5.
        self.query_scale = self.head_dim**-0.5 / math.log(2.0)
        self.key_scale = math.log1p(math.e) / math.log(2.0)
        self.q_proj = ClippableLinear(hidden, hidden, clipped)
        self.k_proj = ClippableLinear(hidden, hidden, clipped)
        self.v_proj = ClippableLinear(hidden, hidden, clipped)
        self.post = ClippableLinear(hidden, hidden, clipped)
        self.relative_k_proj = nn.Linear(hidden, hidden, bias=False)
        self.per_dim_scale = mx.zeros((self.head_dim,))

    def __call__(self, x: mx.array, mask: mx.array, positions: mx.array) -> mx.array:
        """x [batch, T, hidden]; mask [batch, T] True for real frames; positions from relative_position_embeddings."""
        batch, time, _ = x.shape
        split = (batch, time, self.heads, self.head_dim)
        q = self.q_proj(x).astype(mx.float32).reshape(split)
        k = self.k_proj(x).astype(mx.float32).reshape(split)
        v = self.v_proj(x).astype(mx.float32).reshape(split)
        q = q * (self.query_scale * nn.softplus(self.per_dim_scale.astype(mx.float32)))
        k = k * self.key_scale

        blocks = -(-time // self.chunk)
        q = _heads_first(self._query_blocks(q, blocks))  # [B, H, blocks, chunk, D]
        k = _heads_first(self._context_windows(k, blocks))  # [B, H, blocks, context, D]
        v = _heads_first(self._context_windows(v, blocks))

        logits = q @ k.swapaxes(-1, -2) + self._relative_logits(q, positions)
        logits = self.logit_cap * mx.tanh(logits / self.logit_cap)
        logits = mx.where(self._allowed(mask, blocks), logits, self.invalid_logit)
        weights = mx.softmax(logits, axis=-1, precise=True)
        out = (weights @ v).transpose(0, 2, 3, 1, 4).reshape(batch, blocks * self.chunk, -1)[:, :time]
        return self.post(out.astype(x.dtype))

    def _query_blocks(self, q: mx.array, blocks: int) -> mx.array:
        pad = blocks * self.chunk - q.shape[1]
        q = mx.pad(q, [(0, 0), (0, pad), (0, 0), (0, 0)])
        return q.reshape(q.shape[0], blocks, self.chunk, *q.shape[2:])

    def _context_windows(self, x: mx.array, blocks: int) -> mx.array:
        """[B, T, H, D] -> [B, blocks, context, H, D]: block b sees frames b*chunk - past ... on."""
        x = mx.pad(x, [(0, 0), (self.past, self.future + self.chunk - 1), (0, 0), (0, 0)])
        starts = mx.arange(blocks)[:, None] * self.chunk
        return x[:, starts + mx.arange(self.context)[None, :]]

    def _relative_logits(self, q: mx.array, positions: mx.array) -> mx.array:
        """q . R(distance) for every (query, key) of a block, shifted from relative to key order."""
        relative = self.relative_k_proj(positions.astype(self.relative_k_proj.weight.dtype)).astype(mx.float32)
        relative = relative.reshape(-1, self.heads, self.head_dim).transpose(1, 2, 0)  # [H, D, P]
        by_distance = q @ relative[None, :, None]  # [B, H, blocks, chunk, P]
        # Transformer-XL shift: pad each row to context + 1, let the rows run on into one another and
        # re-cut them at `context`; row i then holds distance entry j - i at key slot j (zero elsewhere).
        lead = by_distance.shape[:-2]
        widths = [(0, 0)] * (by_distance.ndim - 1) + [(0, self.context + 1 - by_distance.shape[-1])]
        flat = mx.pad(by_distance, widths).reshape(*lead, -1)[..., : self.chunk * self.context]
        return flat.reshape(*lead, self.chunk, self.context)

    def _allowed(self, mask: mx.array, blocks: int) -> mx.array:
        """[B, 1, blocks, chunk, context]: key is a real frame within the local horizon of the query."""
        time = mask.shape[1]
        query = (mx.arange(blocks)[:, None] * self.chunk + mx.arange(self.chunk)[None, :])[:, :, None]
        key = mx.arange(blocks)[:, None, None] * self.chunk - self.past + mx.arange(self.context)[None, None, :]
        distance = query - key
        in_horizon = ((distance >= 0) & (distance < self.past)) | ((distance < 0) & (-distance < self.future))
        inside = (key >= 0) & (key < time)
        key_real = mx.take(mask, mx.clip(key, 0, time - 1), axis=1) & inside  # [B, blocks, 1, context]
        return (in_horizon & key_real)[:, None]


def _heads_first(x: mx.array) -> mx.array:
    return x.transpose(0, 3, 1, 2, 4)
