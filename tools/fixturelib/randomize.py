"""Give every tensor of a tiny model values that make bugs visible.

The library init (std 0.02, norms and scalars at 1, clip bounds at +-inf) hides whole classes of bugs: a
missing norm weight, an ignored `layer_scalar`, a forgotten clamp all give the same output. Here weights
are drawn so activations stay near unit scale and logits spread over a few units, every multiplicative
weight sits in [0.5, 1.5], and the clip bounds of each ClippableLinear are set from the values that really
reach it, so clamping changes some of them.

Every value is drawn on the bfloat16 grid (exactly representable in bf16, stored as float32): the low half
of each float32 is zero, which halves the committed size after git's compression, and the bf16 copy of a
checkpoint holds exactly the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from transformers.models.gemma4.modeling_gemma4 import Gemma4ClippableLinear, Gemma4RMSNorm

CLIP_BOUNDS = ("input_min", "input_max", "output_min", "output_max")

# Stds chosen so the tied LM head gives logits with a spread of a few units (about 8 * 0.4 for H = 64).
_EMBED_STD = 0.4
_PLE_EMBED_STD = 0.25
_ROUTER_GAIN = 2.0  # sharper expert scores, so top-k picks are far from ties


def _uniform(shape: torch.Size, low: float, high: float, rng: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=rng)


def _normal(shape: torch.Size, std: float, rng: torch.Generator) -> torch.Tensor:
    return std * torch.randn(shape, generator=rng)


def _fan_in_normal(shape: torch.Size, rng: torch.Generator, gain: float = 1.0) -> torch.Tensor:
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    return _normal(shape, gain / math.sqrt(fan_in), rng)


def _scale_weight_names(model: nn.Module) -> set[str]:
    """Names of the weights that multiply activations elementwise (norm gains)."""
    names = set()
    for module_name, module in model.named_modules():
        if isinstance(module, Gemma4RMSNorm) and module.with_scale or isinstance(module, nn.LayerNorm):
            names.add(f"{module_name}.weight")
    return names


def on_bf16_grid(values: torch.Tensor) -> torch.Tensor:
    return values.to(torch.bfloat16).float()


def _draw(name: str, shape: torch.Size, scale_weights: set[str], rng: torch.Generator) -> torch.Tensor:
    return on_bf16_grid(_draw_float(name, shape, scale_weights, rng))


def _draw_float(name: str, shape: torch.Size, scale_weights: set[str], rng: torch.Generator) -> torch.Tensor:
    positive_scales = ("layer_scalar", "router.scale", "router.per_expert_scale", "std_scale")
    if name in scale_weights or name.endswith(positive_scales):
        return _uniform(shape, 0.5, 1.5, rng)
    if name.endswith("std_bias"):
        return _normal(shape, 1.0, rng)
    if name.endswith("per_dim_scale"):
        return _normal(shape, 0.5, rng)
    if name.endswith("position_embedding_table"):
        return _normal(shape, 0.5, rng)
    if name.endswith("embed_tokens.weight"):
        return _normal(shape, _EMBED_STD, rng)
    if name.endswith("embed_tokens_per_layer.weight"):
        return _normal(shape, _PLE_EMBED_STD, rng)
    if name.endswith("router.proj.weight"):
        return _fan_in_normal(shape, rng, _ROUTER_GAIN)
    if name.endswith(".bias"):
        return _normal(shape, 0.5, rng)
    if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
        return _normal(shape, 1.0 / math.sqrt(shape[-1]), rng)
    if name.endswith(".weight") and len(shape) >= 2:
        return _fan_in_normal(shape, rng)
    raise ValueError(f"no randomisation rule for {name} {tuple(shape)}")


@torch.no_grad()
def randomize(model: nn.Module, seed: int) -> None:
    """Overwrite every persistent tensor except the clip bounds, which `calibrate_clipping` sets."""
    rng = torch.Generator().manual_seed(seed)
    scale_weights = _scale_weight_names(model)
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    persistent = set(model.state_dict())
    for name in sorted(tensors):
        if name not in persistent or name.endswith(CLIP_BOUNDS) or name == "lm_head.weight":
            continue
        tensor = tensors[name]
        tensor.copy_(_draw(name, tensor.shape, scale_weights, rng))


def random_like(name: str, shape: tuple[int, ...], rng: torch.Generator) -> torch.Tensor:
    """A tensor drawn by the same rules, for checkpoint entries the HF model does not build."""
    return _draw(name, torch.Size(shape), set() if not name.endswith("norm.weight") else {name}, rng)


@contextmanager
def _hooks(modules: list[tuple[str, Gemma4ClippableLinear]], before: Callable, after: Callable) -> Iterator[None]:
    handles = []
    for name, module in modules:
        handles.append(module.register_forward_pre_hook(lambda mod, args, name=name: before(name, mod, args[0])))
        handles.append(module.linear.register_forward_hook(
            lambda lin, args, out, name=name: after(name, lin, out)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _clippable(model: nn.Module) -> list[tuple[str, Gemma4ClippableLinear]]:
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, Gemma4ClippableLinear) and module.use_clipped_linears]


def _bounds(values: torch.Tensor, rng: torch.Generator) -> tuple[float, float]:
    """Quantile bounds a little inside the observed range: a few percent of the values get clamped."""
    flat = values.detach().float().flatten()
    low_q, high_q = _uniform(torch.Size([2]), 0.01, 0.04, rng).tolist()
    bounds = on_bf16_grid(torch.stack([torch.quantile(flat, low_q), torch.quantile(flat, 1.0 - high_q)]))
    return bounds[0].item(), bounds[1].item()


@torch.no_grad()
def calibrate_clipping(model: nn.Module, run_towers: Callable[[], None], seed: int) -> dict[str, float]:
    """Set finite clip bounds layer by layer from the activations `run_towers` sends through the model.

    Bounds are chosen as each module is reached, so they see the already-clipped upstream values. Returns the
    fraction of values each bound clamps in a second pass (the caller checks that clipping really happens).
    """
    rng = torch.Generator().manual_seed(seed)
    modules = _clippable(model)
    by_name = dict(modules)

    def set_input(name: str, module: Gemma4ClippableLinear, value: torch.Tensor) -> None:
        low, high = _bounds(value, rng)
        module.input_min.fill_(low)
        module.input_max.fill_(high)

    def set_output(name: str, linear: nn.Linear, value: torch.Tensor) -> None:
        module = by_name[name]
        low, high = _bounds(value, rng)
        module.output_min.fill_(low)
        module.output_max.fill_(high)

    with _hooks(modules, set_input, set_output):
        run_towers()

    clipped: dict[str, list[float]] = {name: [0.0, 0.0] for name, _ in modules}

    def count_input(name: str, module: Gemma4ClippableLinear, value: torch.Tensor) -> None:
        outside = (value < module.input_min) | (value > module.input_max)
        clipped[name][0] = max(clipped[name][0], outside.float().mean().item())

    def count_output(name: str, linear: nn.Linear, value: torch.Tensor) -> None:
        module = by_name[name]
        outside = (value < module.output_min) | (value > module.output_max)
        clipped[name][1] = max(clipped[name][1], outside.float().mean().item())

    with _hooks(modules, count_input, count_output):
        run_towers()
    return {name: min(fractions) for name, fractions in clipped.items()}
