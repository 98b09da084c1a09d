"""The dense GeGLU feed-forward of the text decoder (and the MoE block's shared expert)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .fused import gelu_gate
from .stacked_linear import gate_and_up, stack_in_place


class MLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def stack_projections(self) -> None:
        """Project gate and up with one matmul, where their storage allows (once the weights are loaded)."""
        stack_in_place(self, ["gate_proj", "up_proj"], "gate_up_proj")

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(gelu_gate(*gate_and_up(self, x)))
