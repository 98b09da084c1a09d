"""The bias-free linear of the vision and audio towers whose input and output are clamped.

The four bounds are trained scalars stored in the checkpoint (`input_min`, `input_max`, `output_min`,
`output_max`); towers whose config turns clipping off have no bounds at all.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


class ClippableLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, clipped: bool):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.clipped = clipped
        if clipped:
            # Unbounded until the checkpoint's trained bounds are loaded over them.
            self.input_min = mx.array(-mx.inf)
            self.input_max = mx.array(mx.inf)
            self.output_min = mx.array(-mx.inf)
            self.output_max = mx.array(mx.inf)

    def __call__(self, x: mx.array) -> mx.array:
        if not self.clipped:
            return self.linear(x)
        x = mx.clip(x, self.input_min, self.input_max)
        return mx.clip(self.linear(x), self.output_min, self.output_max)
