"""Projection of vision or audio tower outputs into the text model's embedding space."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


class MultimodalEmbedder(nn.Module):
    """`embed_vision` / `embed_audio`: a scale-free RMSNorm, then a bias-free linear (in that order)."""

    def __init__(self, in_features: int, text_hidden: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.embedding_projection = nn.Linear(in_features, text_hidden, bias=False)

    def __call__(self, features: mx.array) -> mx.array:
        return self.embedding_projection(mx.fast.rms_norm(features, None, self.eps))
