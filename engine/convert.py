"""Quantize a float checkpoint (Hugging Face or MLX layout) into an MLX-community 4- or 8-bit folder.

The result uses the canonical naming (experts split into switch_glu, convolutions in MLX layout) and
quantizes what the mlx-community conversions quantize: embed_tokens, embed_tokens_per_layer, every text
Linear (experts included) and embed_audio's projection; the MoE router always at 8 bits. Norms, scalars,
the vision and audio towers and embed_vision keep the source precision, as do matrices whose input width
is not a multiple of the group size. Tensors are read, converted and written one at a time into bounded
shards, so peak memory is one shard plus one tensor, never the whole model.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from .checkpoint import INDEX_FILE, _convert_hf_tensor, _is_dead_weight, canonical_name, is_hf_layout, \
    read_headers, weight_files
from .config import read_config
from .errors import EngineError
from .loader import open_folder

SUPPORTED_BITS = (4, 8)
SUPPORTED_GROUP_SIZES = (32, 64, 128)
ROUTER_BITS = 8  # every peer keeps the MoE router at 8 bits: 4-bit routing picks different experts
DEFAULT_SHARD_BYTES = 2 * 1024**3
_QUANTIZED_TOWER_MODULES = ("embed_audio.embedding_projection",)
_TEXT_PREFIX = "language_model.model."
# A conversion writes beside its output, in a folder named with this suffix, and renames it once whole.
STAGING_SUFFIX = ".converting"

# The staging folders of the conversions running in this process, which a sweep must leave alone; the lock
# makes claiming one and sweeping exclusive, so a sweep never deletes a folder claimed after its check.
_claimed_staging: set[Path] = set()
_staging_lock = threading.Lock()


@dataclass(frozen=True)
class ConvertProgress:
    tensor: str
    done_tensors: int
    total_tensors: int
    done_bytes: int      # source bytes handled so far
    total_bytes: int


@dataclass(frozen=True)
class ConvertResult:
    folder: Path
    quantized_modules: int
    kept_modules: int
    output_bytes: int
    shards: int


ProgressCallback = Callable[[ConvertProgress], None]


class ConversionCancelled(EngineError):
    """The caller asked the conversion to stop; nothing was left behind."""


def _check_request(bits: int, group_size: int) -> None:
    if bits not in SUPPORTED_BITS:
        raise EngineError(f"--bits must be one of {SUPPORTED_BITS}, not {bits}")
    if group_size not in SUPPORTED_GROUP_SIZES:
        raise EngineError(f"--group-size must be one of {SUPPORTED_GROUP_SIZES}, not {group_size}")


def _check_output(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EngineError(f"{out} already exists and is not an empty folder; choose a new output folder")


def is_staging_folder(folder: Path) -> bool:
    """Whether `folder` is a conversion's unfinished output: it may hold a config and weights, never a whole model."""
    return folder.name.endswith(STAGING_SUFFIX)


def remove_abandoned_staging(folder: Path) -> None:
    """Delete the staging folders in `folder` that no conversion in this process is writing: what a conversion
    killed midway left behind, often gigabytes. Nothing else in `folder` is touched. Conversions in other
    processes are not seen, so sweep only a folder this process alone converts into (the app's own)."""
    with _staging_lock:
        for staging in _staging_folders_in(folder):
            if staging.resolve() not in _claimed_staging:
                shutil.rmtree(staging, ignore_errors=True)


def _staging_folders_in(folder: Path) -> list[Path]:
    try:
        children = list(folder.iterdir())
    except OSError:   # missing or unreadable: nothing to sweep
        return []
    return [path for path in children if is_staging_folder(path) and path.is_dir() and not path.is_symlink()]


@contextmanager
def _staging_for(target: Path) -> Iterator[Path]:
    """An empty staging folder beside `target`, kept from sweeps until the conversion is over."""
    staging = target.with_name(target.name + STAGING_SUFFIX)
    with _staging_lock:
        if staging in _claimed_staging:
            raise EngineError(f"another conversion is already writing {target}")
        shutil.rmtree(staging, ignore_errors=True)  # a conversion that was killed earlier
        staging.mkdir(parents=True)
        _claimed_staging.add(staging)
    try:
        yield staging
    finally:
        with _staging_lock:
            _claimed_staging.discard(staging)


def quant_spec_for(name: str, width: int, bits: int, group_size: int) -> tuple[int, int] | None:
    """(bits, group) for a canonical weight name, or None when the peers keep it in float."""
    path, _, leaf = name.rpartition(".")
    if leaf != "weight":
        return None
    if not (name.startswith(_TEXT_PREFIX) or path in _QUANTIZED_TOWER_MODULES):
        return None
    if width % group_size:
        return None
    return (ROUTER_BITS if path.endswith(".router.proj") else bits), group_size


def _canonical_tensors(files: list[Path], text, hf: bool) -> Iterator[tuple[str, mx.array | None, int]]:
    """(canonical name, array, source bytes) one tensor at a time. Arrays from mx.load are read only when
    evaluated, and each is dropped from the file's dict once handed out, so memory is freed as we go."""
    for path in files:
        tensors = mx.load(str(path))
        for name in list(tensors):
            array = tensors.pop(name)
            name = canonical_name(name) if hf else name
            if _is_dead_weight(name, text):
                yield name, None, array.nbytes
                continue
            converted = _convert_hf_tensor(name, array) if hf else [(name, array)]
            for index, (new_name, new_array) in enumerate(converted):
                yield new_name, new_array, array.nbytes if index == 0 else 0


class _ShardWriter:
    """Collects tensors and writes a safetensors shard each time the collected bytes pass the limit."""

    def __init__(self, folder: Path, max_bytes: int):
        self.folder = folder
        self.max_bytes = max_bytes
        self.pending: dict[str, mx.array] = {}
        self.pending_bytes = 0
        self.shard_names: list[str] = []
        self.weight_map: dict[str, str] = {}
        self.total_bytes = 0

    def add(self, name: str, array: mx.array) -> None:
        mx.eval(array)
        self.pending[name] = array
        self.pending_bytes += array.nbytes
        if self.pending_bytes >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        shard = f"model-{len(self.shard_names) + 1:05d}.safetensors"
        mx.save_safetensors(str(self.folder / shard), self.pending, metadata={"format": "mlx"})
        self.shard_names.append(shard)
        self.weight_map.update(dict.fromkeys(self.pending, shard))
        self.total_bytes += self.pending_bytes
        self.pending, self.pending_bytes = {}, 0

    def finish(self) -> None:
        """Final names follow the Hub's `model-0000i-of-0000n` convention, known only once all are written."""
        self.flush()
        count = len(self.shard_names)
        renamed = {old: f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i, old in enumerate(self.shard_names)}
        for old, new in renamed.items():
            (self.folder / old).rename(self.folder / new)
        index = {"metadata": {"total_size": self.total_bytes},
                 "weight_map": {name: renamed[shard] for name, shard in sorted(self.weight_map.items())}}
        (self.folder / INDEX_FILE).write_text(json.dumps(index, indent=2), encoding="utf-8")


def _copy_side_files(source: Path, target: Path) -> None:
    """Tokenizer, chat template, processor and generation configs travel with the weights."""
    for path in source.iterdir():
        if path.is_file() and path.suffix != ".safetensors" and path.name not in (INDEX_FILE, "config.json"):
            shutil.copy2(path, target / path.name)


def _write_config(source: Path, target: Path, block: dict) -> None:
    raw = json.loads((source / "config.json").read_text(encoding="utf-8"))
    raw.pop("quantization_config", None)
    raw["quantization"] = block
    raw["quantization_config"] = dict(block)  # mlx-community mirrors the block under the HF key
    (target / "config.json").write_text(json.dumps(raw, indent=2), encoding="utf-8")


def _write_tensor(writer: _ShardWriter, block: dict, name: str, array: mx.array, bits: int,
                  group_size: int) -> tuple[int, int]:
    """Write one tensor, quantized or as it is; return (quantized modules, matrices kept in float)."""
    spec = quant_spec_for(name, array.shape[-1], bits, group_size) if array.ndim >= 2 else None
    if spec is None:
        writer.add(name, array)
        return 0, int(name.endswith(".weight") and array.ndim >= 2)
    path = name.removesuffix(".weight")
    weight, scales, biases = mx.quantize(array, group_size=spec[1], bits=spec[0], mode="affine")
    for leaf, part in (("weight", weight), ("scales", scales), ("biases", biases)):
        writer.add(f"{path}.{leaf}", part)
    if spec != (bits, group_size):
        block[path] = {"group_size": spec[1], "bits": spec[0]}
    return 1, 0


def _quantize_all(source: Path, writer: _ShardWriter, bits: int, group_size: int,
                  progress: ProgressCallback | None, cancel: threading.Event | None) -> tuple[dict, int, int]:
    config = read_config(source)
    if config.quantization is not None:
        raise EngineError(f"{source} is already quantized; convert from the original float checkpoint")
    files = weight_files(source)
    headers = read_headers(files)
    total_bytes = sum(entry.nbytes for _, entry in headers.values())
    block: dict = {"group_size": group_size, "bits": bits, "mode": "affine"}
    done_bytes = done_tensors = quantized = kept = 0
    for name, array, source_bytes in _canonical_tensors(files, config.text, is_hf_layout(headers)):
        if cancel is not None and cancel.is_set():
            raise ConversionCancelled("conversion cancelled")
        if array is not None:
            q, k = _write_tensor(writer, block, name, array, bits, group_size)
            quantized, kept = quantized + q, kept + k
        done_bytes += source_bytes
        done_tensors += source_bytes > 0
        if progress is not None:
            progress(ConvertProgress(name, done_tensors, len(headers), done_bytes, total_bytes))
    return block, quantized, kept


def convert(model: str | Path, out: str | Path, bits: int = 4, group_size: int = 64, *,
            progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
            max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> ConvertResult:
    """Quantize the float checkpoint in `model` into the new folder `out` (written elsewhere, then moved in)."""
    _check_request(bits, group_size)
    source = open_folder(model)
    target = Path(out).expanduser().resolve()  # `.` or `..` has no name to put the staging folder beside
    _check_output(target)
    with _staging_for(target) as staging:
        try:
            writer = _ShardWriter(staging, max_shard_bytes)
            block, quantized, kept = _quantize_all(source, writer, bits, group_size, progress, cancel)
            writer.finish()
            _copy_side_files(source, staging)
            _write_config(source, staging, block)  # last: without it no half-written folder passes for a model
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if target.exists():
            target.rmdir()
        staging.rename(target)  # still claimed: a sweep now must not take the folder from under the rename
    return ConvertResult(target, quantized, kept, writer.total_bytes, len(writer.shard_names))
