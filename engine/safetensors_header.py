"""Strict validation of a safetensors file's header before MLX is allowed to read it.

A weight file from the internet can be truncated, corrupt or hostile. MLX trusts the header; we do
not: every tensor must have a known dtype, a shape whose byte count matches its offsets, and offsets
that tile the data section exactly, inside the file.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import EngineError

DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}
_MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def _fail(path: Path, problem: str) -> EngineError:
    return EngineError(
        f"{path.name} is not a valid weight file: {problem}. The download may be incomplete or damaged; "
        "delete the model folder and download it again."
    )


def _read_header_bytes(path: Path, file_size: int) -> bytes:
    if file_size < 8:
        raise _fail(path, f"it is only {file_size} bytes long")
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > file_size - 8:
            raise _fail(path, f"its header claims {length} bytes but the file has only {file_size - 8} after it")
        if length > _MAX_HEADER_BYTES:
            raise _fail(path, f"its header claims an absurd {length} bytes")
        return handle.read(length)


def _parse_entry(path: Path, name: str, raw: object) -> TensorEntry:
    if not isinstance(raw, dict):
        raise _fail(path, f"tensor {name!r} has no description")
    dtype, shape, offsets = raw.get("dtype"), raw.get("shape"), raw.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise _fail(path, f"tensor {name!r} has unknown dtype {dtype!r}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise _fail(path, f"tensor {name!r} has an invalid shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise _fail(path, f"tensor {name!r} has invalid data offsets {offsets!r}")
    entry = TensorEntry(dtype, tuple(shape), offsets[0], offsets[1])
    expected = math.prod(entry.shape) * DTYPE_BYTES[dtype]
    if entry.nbytes != expected:
        raise _fail(path, f"tensor {name!r} of shape {list(shape)} and dtype {dtype} needs {expected} bytes, "
                          f"but its offsets span {entry.nbytes}")
    return entry


def read_safetensors_header(path: str | Path) -> dict[str, TensorEntry]:
    """Return the tensors a safetensors file declares, or raise EngineError if anything is off."""
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"weight file {path} is missing")
    file_size = path.stat().st_size
    header_bytes = _read_header_bytes(path, file_size)
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _fail(path, "its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise _fail(path, "its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _fail(path, "its __metadata__ must map names to strings")

    entries = {name: _parse_entry(path, name, raw) for name, raw in header.items()}
    _check_tiling(path, entries, data_size=file_size - 8 - len(header_bytes))
    return entries


def _check_tiling(path: Path, entries: dict[str, TensorEntry], data_size: int) -> None:
    """Tensors must cover the data section end to end, without gaps or overlaps."""
    cursor = 0
    for name, entry in sorted(entries.items(), key=lambda item: (item[1].begin, item[1].end)):
        if entry.begin != cursor:
            problem = "overlaps another tensor" if entry.begin < cursor else "leaves a gap before it"
            raise _fail(path, f"tensor {name!r} {problem}")
        cursor = entry.end
    if cursor > data_size:
        raise _fail(path, f"it is truncated: tensors need {cursor} data bytes but only {data_size} are present")
    if cursor < data_size:
        raise _fail(path, f"it has {data_size - cursor} unexpected bytes after the last tensor")
