"""Linears that read the same input, stacked into one, so a step launches one matmul instead of several.

Each output row of a (quantized) matmul is computed on its own, so the stacked linear's output is the
parts' outputs side by side, bit for bit. Stacking needs the parts to store their weights alike: all
float, or all quantized with the same bits, group size and mode, and none with a bias.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


def _storage(linear: nn.Module) -> tuple | None:
    """What two linears must share to be stacked; None for one that cannot be."""
    if "bias" in linear:
        return None
    if type(linear) is nn.Linear:
        return (nn.Linear,)
    if type(linear) is nn.QuantizedLinear:
        return nn.QuantizedLinear, linear.bits, linear.group_size, linear.mode, "biases" in linear.parameters()
    return None


def stacked(parts: list[nn.Module]) -> nn.Module | None:
    """One linear whose output is the parts' outputs concatenated, or None when they cannot share one."""
    storage = _storage(parts[0])
    if storage is None or any(_storage(part) != storage for part in parts[1:]):
        return None
    first = parts[0]
    rows = sum(part.weight.shape[0] for part in parts)
    if isinstance(first, nn.QuantizedLinear):
        columns = first.weight.shape[1] * 32 // first.bits
        joined = nn.QuantizedLinear(columns, rows, bias=False, group_size=first.group_size, bits=first.bits,
                                    mode=first.mode)
    else:
        joined = nn.Linear(first.weight.shape[1], rows, bias=False)
    joined.update({name: mx.concatenate([part[name] for part in parts]) for name in first.parameters()})
    return joined

