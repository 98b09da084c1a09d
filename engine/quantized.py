"""What a quantized module stores: MLX affine (float scales and biases) or float codes (mxfp4, mxfp8)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


def float_type(module: nn.Module, fallback: mx.Dtype) -> mx.Dtype:
    """The float type a (possibly quantized) module keeps its values in: its weight's, an affine module's
    scales', or `fallback` for the float-coded modes, whose scales are 8-bit exponents."""
    if "scales" not in module:
        return module.weight.dtype
    return module.scales.dtype if module.mode == "affine" else fallback
