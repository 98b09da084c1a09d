"""The dense GeGLU feed-forward of the text decoder (and the MoE block's shared expert)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .fused import gelu_gate


class MLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(gelu_gate(self.gate_proj(x), self.up_proj(x)))
