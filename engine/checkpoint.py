"""Finding, validating and lazily opening a model folder's safetensors files, in either layout.

Both the Hugging Face layout (`model.language_model.*`, fused experts, PyTorch conv layouts) and the
MLX-community layout (`language_model.model.*`, split experts, MLX conv layouts, quantized triplets)
are mapped onto one canonical naming: the MLX-community one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import mlx.core as mx

from .config import TextConfig
from .errors import EngineError
from .safetensors_header import TensorEntry, read_safetensors_header

INDEX_FILE = "model.safetensors.index.json"
# progress(stage, fraction of that stage done)
Progress = Callable[[str, float], None]
_TOWER_PREFIXES = ("vision_tower.", "audio_tower.", "embed_vision.", "embed_audio.")
_KV_WEIGHTS = ("k_proj", "v_proj", "k_norm", "v_norm")


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a model folder: the shards of its index, or every *.safetensors file.

    Every file must lie inside the folder, so an edited index or a planted link cannot make us read
    (and run a model on) files from elsewhere on the disk.
    """
    index = folder / INDEX_FILE
    if index.is_file():
        files = [folder / name for name in _indexed_shards(folder, index)]
    else:
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise EngineError(f"{folder} has no weight files (*.safetensors); is this a model folder?")
    for path in files:
        _check_inside(folder, path)
    return files


def _indexed_shards(folder: Path, index: Path) -> list[str]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise EngineError(f"{index} is damaged: it has no readable weight_map") from None
    if not isinstance(weight_map, dict):
        raise EngineError(f"{index} is damaged: weight_map is not an object")
    for name in weight_map.values():
        if not _is_plain_file_name(name):
            raise EngineError(f"{index} names the weight shard {name!r}, which is not a file name inside the model "
                              "folder; Lantern reads weights only from the model folder. Download the model again.")
    shards = sorted(set(weight_map.values()))
    missing = [name for name in shards if not (folder / name).is_file()]
    if missing:
        raise EngineError(
            f"{folder} is missing weight shard(s) {', '.join(missing)} listed in {INDEX_FILE}; "
            "the download is incomplete: download the model again"
        )
    return shards


def _is_plain_file_name(name: object) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def _check_inside(folder: Path, path: Path) -> None:
    """Refuse a weight file that is a link to somewhere outside the folder.

    The one exception is the Hugging Face cache's storage: its snapshots (and folders made by older
    `huggingface-cli download --local-dir`) hold links to `models--org--name/blobs/<hash>`.
    """
    real = path.resolve()
    if real.is_relative_to(folder.resolve()) or _is_hub_blob(real):
        return
    raise EngineError(f"{path.name} in {folder} is a link to {real}, outside the model folder; Lantern reads "
                      "weights only from inside the model folder. Copy the real file in, or download the model again.")


def _is_hub_blob(path: Path) -> bool:
    return path.parent.name == "blobs" and path.parent.parent.name.startswith("models--")


def read_headers(files: list[Path], progress: Progress | None = None) -> dict[str, tuple[Path, TensorEntry]]:
    tensors: dict[str, tuple[Path, TensorEntry]] = {}
    for done, path in enumerate(files):
        if progress:
            progress("checking weight files", done / len(files))
        for name, entry in read_safetensors_header(path).items():
            if name in tensors:
                raise EngineError(f"tensor {name} appears in both {tensors[name][0].name} and {path.name}")
            tensors[name] = (path, entry)
    return tensors


def is_hf_layout(names) -> bool:
    return any(name.startswith("model.") for name in names)


def canonical_name(name: str) -> str:
    """Hugging Face name -> canonical (MLX-community) name."""
    if name.startswith("model.language_model."):
        return "language_model.model." + name[len("model.language_model."):]
    if name.startswith("model.") and name[len("model."):].startswith(_TOWER_PREFIXES):
        return name[len("model."):]
    if name.startswith("model."):  # a text-only (Gemma4ForCausalLM) checkpoint
        return "language_model.model." + name[len("model."):]
    return name


def _convert_hf_tensor(name: str, array: mx.array) -> list[tuple[str, mx.array]]:
    if name.endswith(".experts.gate_up_proj"):
        stem = name[: -len("gate_up_proj")] + "switch_glu."
        gate, up = mx.split(array, 2, axis=-2)
        return [(stem + "gate_proj.weight", gate), (stem + "up_proj.weight", up)]
    if name.endswith(".experts.down_proj"):
        return [(name[: -len("down_proj")] + "switch_glu.down_proj.weight", array)]
    if name.startswith("audio_tower.") and name.endswith(".conv.weight") and array.ndim == 4:
        return [(name, array.transpose(0, 2, 3, 1))]  # [out, in, kH, kW] -> [out, kH, kW, in]
    if name.startswith("audio_tower.") and name.endswith("depthwise_conv1d.weight") and array.ndim == 3:
        return [(name, array.transpose(0, 2, 1))]  # [C, 1, K] -> [C, K, 1]
    return [(name, array)]


def _is_dead_weight(name: str, text: TextConfig) -> bool:
    """Buffers never stored on purpose, and the unused K/V weights some files keep for KV-shared layers."""
    if "rotary_emb" in name:
        return True
    prefix = "language_model.model.layers."
    if not name.startswith(prefix):
        return False
    parts = name[len(prefix):].split(".")
    if not parts[0].isdigit() or len(parts) < 3:
        return False
    layer = int(parts[0])
    return (layer < text.num_hidden_layers and text.is_kv_consumer(layer)
            and parts[1] == "self_attn" and parts[2] in _KV_WEIGHTS)


def load_tensors(files: list[Path], text: TextConfig,
                 progress: Progress | None = None) -> tuple[dict[str, mx.array], int]:
    """Validate every header, then open the files lazily; return canonical tensors and their byte count."""
    headers = read_headers(files, progress)
    hf = is_hf_layout(headers)
    tensors: dict[str, mx.array] = {}
    total_bytes = 0
    for path in files:
        for name, array in mx.load(str(path)).items():
            name = canonical_name(name) if hf else name
            if _is_dead_weight(name, text):
                continue
            total_bytes += array.nbytes
            converted = _convert_hf_tensor(name, array) if hf else [(name, array)]
            tensors.update(converted)
    return tensors, total_bytes

