"""The same weights written the way the released files lay them out.

* Hugging Face: `model.safetensors`, keys `model.language_model.*` etc., fused `experts.gate_up_proj`, and,
  like the released E2B/E4B files, k/v projections and k_norm for the KV-shared layers that never use them.
* MLX community: keys without the leading `model.`, `language_model.model.*`, experts split into
  `experts.switch_glu.{gate,up,down}_proj.weight`, Conv2d as [out, kH, kW, in], depthwise Conv1d as [C, K, 1].
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import torch
from safetensors.torch import save_file

from .configs import FULL, ModelSpec
from .randomize import random_like

HF_TEXT = "model.language_model."
MLX_TEXT = "language_model.model."


def unused_shared_kv(spec: ModelSpec, seed: int) -> dict[str, torch.Tensor]:
    """k_proj / v_proj / k_norm of the KV-shared layers: present in released HF files, read by nothing."""
    text = spec.text
    first_shared = text["num_hidden_layers"] - text["num_kv_shared_layers"]
    rng = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(first_shared, text["num_hidden_layers"]):
        full = text["layer_types"][layer] == FULL
        head_dim = text["global_head_dim"] if full else text["head_dim"]
        kv_heads = text["num_key_value_heads"]
        if full and text["attention_k_eq_v"]:
            kv_heads = text["num_global_key_value_heads"]
        prefix = f"{HF_TEXT}layers.{layer}.self_attn."
        shapes = {"k_proj.weight": (kv_heads * head_dim, text["hidden_size"]), "k_norm.weight": (head_dim,)}
        if not (full and text["attention_k_eq_v"]):
            shapes["v_proj.weight"] = (kv_heads * head_dim, text["hidden_size"])
        for suffix, shape in shapes.items():
            tensors[prefix + suffix] = random_like(prefix + suffix, shape, rng)
    return tensors


def hf_tensors(state: dict[str, torch.Tensor], extra: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What `model.safetensors` holds: the state dict without the tied head, plus the unused KV weights."""
    tensors = {name: value.detach().clone().contiguous() for name, value in state.items() if name != "lm_head.weight"}
    clash = set(tensors) & set(extra)
    if clash:
        raise RuntimeError(f"the extra tensors would overwrite live weights: {sorted(clash)[:3]}")
    tensors.update(extra)
    return dict(sorted(tensors.items()))


def write_hf(tensors: dict[str, torch.Tensor], folder: Path, dtype: torch.dtype = torch.float32) -> None:
    save_file({name: value.to(dtype).contiguous() for name, value in tensors.items()},
              str(folder / "model.safetensors"), metadata={"format": "pt"})


def mlx_name(hf_name: str) -> str:
    name = hf_name.removeprefix("model.")
    if name.startswith("language_model."):
        name = MLX_TEXT + name.removeprefix("language_model.")
    return name


def to_mlx_layout(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for hf_name, value in tensors.items():
        name = mlx_name(hf_name)
        array = value.detach().float().numpy()
        if name.endswith(".experts.gate_up_proj"):
            base = name.removesuffix(".gate_up_proj")
            gate, up = np.split(array, 2, axis=-2)
            out[f"{base}.switch_glu.gate_proj.weight"] = np.ascontiguousarray(gate)
            out[f"{base}.switch_glu.up_proj.weight"] = np.ascontiguousarray(up)
        elif name.endswith(".experts.down_proj"):
            out[name.removesuffix(".down_proj") + ".switch_glu.down_proj.weight"] = array
        elif name.endswith("conv.weight") and array.ndim == 4:
            out[name] = np.ascontiguousarray(array.transpose(0, 2, 3, 1))
        elif name.endswith("depthwise_conv1d.weight"):
            out[name] = np.ascontiguousarray(array.transpose(0, 2, 1))
        else:
            out[name] = array
    return dict(sorted(out.items()))


def hf_name_for_mlx(mlx_key: str) -> str:
    """Inverse of `mlx_name` for unsplit tensors."""
    if mlx_key.startswith(MLX_TEXT):
        return HF_TEXT + mlx_key.removeprefix(MLX_TEXT)
    return "model." + mlx_key


def _save_mlx(arrays: dict[str, mx.array], path: Path) -> None:
    mx.save_safetensors(str(path), arrays, metadata={"format": "mlx"})


def write_mlx(arrays: dict[str, mx.array], folder: Path, shards: int = 1) -> None:
    """One `model.safetensors`, or `shards` files plus `model.safetensors.index.json` split by size."""
    if shards == 1:
        _save_mlx(arrays, folder / "model.safetensors")
        return
    names = sorted(arrays)
    total = sum(arrays[name].nbytes for name in names)
    budget = total / shards
    groups: list[list[str]] = [[]]
    filled = 0
    for name in names:
        if filled >= budget * len(groups) and len(groups) < shards:
            groups.append([])
        groups[-1].append(name)
        filled += arrays[name].nbytes
    weight_map = {}
    for index, group in enumerate(groups, start=1):
        file_name = f"model-{index:05d}-of-{len(groups):05d}.safetensors"
        _save_mlx({name: arrays[name] for name in group}, folder / file_name)
        weight_map.update({name: file_name for name in group})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def as_mlx(arrays: dict[str, np.ndarray]) -> dict[str, mx.array]:
    return {name: mx.array(value) for name, value in arrays.items()}
