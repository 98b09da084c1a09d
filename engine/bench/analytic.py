"""Bytes a decode step must read, from the tensor plan alone (the same figure for every engine)."""

from __future__ import annotations

import math

from ..config import parse_text_config
from .writer import GROUP_SIZE, TensorSpec, tensor_plan

_GATHERED = (".embed_tokens_per_layer",)  # one row per token is read, not the table


def _stored_bits(spec: TensorSpec, bits: int | None, float_bytes: int) -> float:
    if not spec.quantizable or bits is None:
        return 8 * float_bytes
    return (spec.bits_override or bits) + 2 * 8 * float_bytes / GROUP_SIZE


def weight_bytes_per_token(text_raw: dict, bits: int | None, float_bytes: int) -> float:
    """Weights streamed per decoded token: every layer, the tied LM head, top-k of the experts."""
    text = parse_text_config(text_raw)
    total = 0.0
    for spec in tensor_plan(text_raw):
        count = float(math.prod(spec.shape))
        if spec.name.endswith(_GATHERED):
            count = spec.shape[-1]
        elif ".experts." in spec.name:
            count *= text.top_k_experts / text.num_experts
        total += count * _stored_bits(spec, bits, float_bytes) / 8
    return total


def kv_bytes_per_token(text_raw: dict, context: int, cache_bytes: int) -> float:
    """K and V read by every layer (KV-shared readers included) at a given context length."""
    text = parse_text_config(text_raw)
    total = 0
    for i in range(text.num_hidden_layers):
        span = context if text.is_full(i) else min(context, text.sliding_window)
        total += 2 * span * text.layer_kv_heads(i) * text.layer_head_dim(i) * cache_bytes
    return float(total)

