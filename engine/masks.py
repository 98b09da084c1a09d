"""Attention masks built from absolute positions, so they hold for any cache slot order."""

from __future__ import annotations

import mlx.core as mx


def attention_mask(query_positions: mx.array, key_positions: mx.array, window: int | None,
                   query_groups: mx.array | None = None, chunk_groups: mx.array | None = None) -> mx.array:
    """Boolean [T, S] mask: key j (at key_positions[j]) is visible to query i (at query_positions[i, 0]).

    Causal, limited to the last `window` positions (the query included) when a window is given.
    With groups (one id per token, -1 for none), the tokens of one image also see each other:
    `chunk_groups` belong to the current chunk's tokens, which are always the last keys.
    """
    q, k = query_positions, key_positions
    visible = k <= q
    if query_groups is not None:
        visible = visible | _same_group(query_groups, chunk_groups, key_positions.shape[0])
    visible = visible & (k >= 0)
    if window is not None:
        visible = visible & (q - k < window)
    return visible


def _same_group(query_groups: mx.array, chunk_groups: mx.array, num_keys: int) -> mx.array:
    same = (query_groups[:, None] == chunk_groups[None, :]) & (query_groups[:, None] >= 0)
    older = mx.zeros((query_groups.shape[0], num_keys - chunk_groups.shape[0]), dtype=mx.bool_)
    return mx.concatenate([older, same], axis=1)
