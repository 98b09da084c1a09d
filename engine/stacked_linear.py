"""Linears that read the same input, stacked into one, so a step launches one matmul instead of several.

Each output row of a (quantized, or per-expert gathered) matmul is computed on its own, so the stacked
linear's output is the parts' outputs side by side, bit for bit. Stacking needs the parts to store
their weights alike: the same module type, the same bits, group size and mode, and no bias.
"""

from __future__ import annotations

import copy

import mlx.core as mx
import mlx.nn as nn


def _storage(linear: nn.Module) -> tuple | None:
    """What two linears must share to be stacked; None for one that cannot be."""
    if "bias" in linear:
        return None
    settings = tuple(getattr(linear, name, None) for name in ("bits", "group_size", "mode"))
    return type(linear), settings, sorted(linear.parameters())


def stacked(parts: list[nn.Module]) -> nn.Module | None:
    """One linear whose output is the parts' outputs concatenated, or None when they cannot share one.

    The parts are bias-free linears whose arrays hold output rows on their second-to-last axis
    ([out, in] and [experts, out, in], quantized or not).
    """
    storage = _storage(parts[0])
    if storage is None or any(_storage(part) != storage for part in parts[1:]):
        return None
    joined = copy.copy(parts[0])
    joined.update({name: mx.concatenate([part[name] for part in parts], axis=-2) for name in storage[2]})
    return joined


def output_rows(linear: nn.Module, rows: slice) -> nn.Module:
    """The linear restricted to some of its output rows (views of its arrays, nothing copied)."""
    part = copy.copy(linear)
    part.update({name: array[..., rows, :] for name, array in linear.parameters().items()})
    return part


def stack_in_place(module: nn.Module, names: list[str], joined_name: str) -> None:
    """Replace the module's linears `names` by one stacked linear `joined_name`, where they can be stacked."""
    joined = stacked([module[name] for name in names])
    if joined is None:
        return
    for name in names:
        del module[name]
    setattr(module, joined_name, joined)


def gate_and_up(module: nn.Module, *inputs) -> tuple[mx.array, mx.array]:
    """A GeGLU block's gate and up projections of `inputs`, from its stacked gate_up_proj if it has one."""
    if "gate_up_proj" in module:
        gate, up = mx.split(module.gate_up_proj(*inputs), 2, axis=-1)
        return gate, up
    return module.gate_proj(*inputs), module.up_proj(*inputs)
