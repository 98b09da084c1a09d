"""MLX affine quantisation of the text weights, as the mlx-community conversions do it.

Quantised: every text Linear and embedding (embed_tokens, embed_tokens_per_layer, projections, experts,
router) and embed_audio.embedding_projection. Left alone: norms, scalars, the vision and audio towers,
embed_vision, and (as mlx-lm does) any matrix whose input width is not a multiple of its group size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import numpy as np
import torch

from .layouts import MLX_TEXT, hf_name_for_mlx


@dataclass(frozen=True)
class QuantPlan:
    bits: int
    group_size: int
    # module path -> (bits, group_size) for modules that differ from the default
    override: Callable[[str], tuple[int, int] | None] = lambda path: None
    fallback_group_size: int | None = None  # used where the default group does not divide the input width


def _is_quantizable(name: str, array: np.ndarray) -> bool:
    if not name.endswith(".weight") or array.ndim < 2:
        return False
    return name.startswith(MLX_TEXT) or name.startswith("embed_audio.")


def _spec_for(path: str, width: int, plan: QuantPlan) -> tuple[int, int] | None:
    bits, group = plan.override(path) or (plan.bits, plan.group_size)
    if width % group and plan.fallback_group_size and width % plan.fallback_group_size == 0:
        group = plan.fallback_group_size
    if width % group:
        return None
    return bits, group


def quantize_arrays(arrays: dict[str, np.ndarray], plan: QuantPlan) -> tuple[dict[str, mx.array], dict]:
    """The quantised tensor dict and the `quantization` block (defaults plus per-module overrides)."""
    out: dict[str, mx.array] = {}
    block: dict = {"group_size": plan.group_size, "bits": plan.bits, "mode": "affine"}
    for name, array in arrays.items():
        spec = _spec_for(name.removesuffix(".weight"), array.shape[-1], plan) if _is_quantizable(name, array) \
            else None
        if spec is None:
            out[name] = mx.array(array)
            continue
        bits, group = spec
        path = name.removesuffix(".weight")
        weight, scales, biases = mx.quantize(mx.array(array), group_size=group, bits=bits, mode="affine")
        out[f"{path}.weight"], out[f"{path}.scales"], out[f"{path}.biases"] = weight, scales, biases
        if (bits, group) != (plan.bits, plan.group_size):
            block[path] = {"group_size": group, "bits": bits}
    return dict(sorted(out.items())), block


def quantized_paths(arrays: dict[str, mx.array]) -> list[str]:
    return sorted(name.removesuffix(".scales") for name in arrays if name.endswith(".scales"))


def dequantized_hf_state(arrays: dict[str, mx.array], block: dict) -> dict[str, torch.Tensor]:
    """Float32 HF-named tensors holding exactly what the quantised file decodes to (the reference weights)."""
    dense: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        if name.endswith((".scales", ".biases")):
            continue
        path = name.removesuffix(".weight")
        if f"{path}.scales" in arrays:
            spec = block.get(path, block)
            value = mx.dequantize(value, arrays[f"{path}.scales"], arrays[f"{path}.biases"],
                                  group_size=spec["group_size"], bits=spec["bits"], mode="affine")
        dense[name] = np.array(value.astype(mx.float32))
    return _hf_names(dense)


def _hf_names(dense: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for name, array in dense.items():
        if ".switch_glu.up_proj." in name or ".switch_glu.down_proj." in name:
            continue
        if ".switch_glu.gate_proj." in name:
            base = name.split(".switch_glu.")[0]
            up = dense[f"{base}.switch_glu.up_proj.weight"]
            state[hf_name_for_mlx(base) + ".gate_up_proj"] = torch.from_numpy(np.concatenate([array, up], axis=-2))
            state[hf_name_for_mlx(base) + ".down_proj"] = torch.from_numpy(dense[f"{base}.switch_glu.down_proj.weight"])
            continue
        if name.endswith("conv.weight") and array.ndim == 4:
            array = array.transpose(0, 3, 1, 2)
        elif name.endswith("depthwise_conv1d.weight"):
            array = array.transpose(0, 2, 1)
        state[hf_name_for_mlx(name)] = torch.from_numpy(np.ascontiguousarray(array))
    return state


def text_layer_override(suffixes: tuple[str, ...], bits: int, group: int) -> Callable[[str], tuple[int, int] | None]:
    """Override for `language_model.model.layers.{i}.<suffix>` modules, e.g. every router.proj."""
    def override(path: str) -> tuple[int, int] | None:
        if path.startswith(f"{MLX_TEXT}layers.") and path.endswith(suffixes):
            return bits, group
        return None
    return override


def text_module_override(module: str, bits: int, group: int) -> Callable[[str], tuple[int, int] | None]:
    """Override for one top-level text module, e.g. `per_layer_model_projection`."""
    def override(path: str) -> tuple[int, int] | None:
        return (bits, group) if path == MLX_TEXT + module else None
    return override

