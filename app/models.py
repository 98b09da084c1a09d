"""Finding Gemma 4 model folders on disk and checking that one fits in memory before loading it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QSettings

from engine.checkpoint import weight_files
from engine.config import ModelConfig, detect_variant, parse_config
from engine.convert import is_staging_folder
from engine.errors import EngineError

from .storage import data_dir

GEMMA4_TYPES = {"gemma4", "gemma4_text"}
# What a message can carry in this app, in the order it is shown; the engine's video input is not offered.
MESSAGE_INPUTS = ("text", "image", "audio")
# macOS lets the GPU wire about three quarters of RAM; the rest keeps the system and the app alive.
USABLE_RAM_FRACTION = 0.75
DEFAULT_CONTEXT = 8192
KV_BYTES_PER_VALUE = 2     # the KV cache is kept in 16-bit floats on the GPU
# Deep enough for LM Studio's <root>/<publisher>/<model>; deeper would crawl whole drives.
SCAN_DEPTH = 2
FOLDERS_KEY = "models/folders"


@dataclass(frozen=True)
class ModelEntry:
    path: Path
    name: str
    variant: str
    size_bytes: int
    quantization: tuple[int, int] | None
    modalities: frozenset[str]
    config: ModelConfig

    @property
    def label(self) -> str:
        quant = f"{self.quantization[0]}-bit" if self.quantization else "full precision"
        size = format_bytes(self.size_bytes)
        return f"{self.name} · {self.variant} · {size} · {quant} · {describe_inputs(self.modalities)}"


@dataclass(frozen=True)
class MemoryVerdict:
    fits: bool
    needed_bytes: int
    available_bytes: int
    message: str


def describe_inputs(modalities) -> str:
    """The kinds of input a message to this model can hold, e.g. "text, image, audio"."""
    return ", ".join(kind for kind in MESSAGE_INPUTS if kind in modalities)


def format_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, honouring HF_HUB_CACHE and HF_HOME as huggingface_hub does."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    return home / "hub"


class FolderProblem(Exception):
    """Why a folder does not hold a usable Gemma 4 model, in words for the user."""


def _gemma4_config(folder: Path) -> ModelConfig:
    if not folder.is_dir():
        raise FolderProblem(f"{folder} no longer exists (moved, renamed or deleted)")
    path = folder / "config.json"
    if not path.is_file():
        raise FolderProblem(f"{folder} holds no config.json")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FolderProblem(f"the config.json in {folder} cannot be read ({exc})") from exc
    if not isinstance(raw, dict) or raw.get("model_type") not in GEMMA4_TYPES:
        raise FolderProblem(f"{folder} does not hold a Gemma 4 model")
    try:
        return parse_config(raw)
    except EngineError as exc:
        raise FolderProblem(f"the config.json in {folder} is not usable: {exc}") from exc


def folder_problem(folder: Path) -> str | None:
    """Why `folder` cannot be loaded as it is on disk now, or None when its config is a usable Gemma 4 one."""
    try:
        _gemma4_config(Path(folder))
    except FolderProblem as exc:
        return str(exc)
    return None


def read_entry(folder: Path, name: str | None = None) -> ModelEntry | None:
    """The model in `folder`, or None when it is not a Gemma 4 folder."""
    try:
        config = _gemma4_config(folder)
    except FolderProblem:
        return None
    quant = config.quantization
    modalities = {"text"} | ({"image"} if config.vision else set()) | ({"audio"} if config.audio else set())
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    return ModelEntry(folder, name or folder.name, detect_variant(config.text), size,
                      (quant.default.bits, quant.default.group_size) if quant else None,
                      frozenset(modalities), config)


def _hub_name(repo_folder: Path) -> str:
    return repo_folder.name.removeprefix("models--").replace("--", "/")


def scan_hf_cache(cache: Path | None = None) -> list[ModelEntry]:
    """The newest complete snapshot of each Gemma 4 repository in the hub cache. A snapshot still missing files
    (a download in progress, or one another tool left unfinished) is not a model yet."""
    cache = cache or hf_cache_dir()
    found = []
    for repo in sorted(cache.glob("models--*")):
        snapshots = sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime, reverse=True)
        entries = (read_entry(s, _hub_name(repo)) for s in snapshots if not missing_model_files(s))
        entry = next((e for e in entries if e is not None), None)
        if entry is not None:
            found.append(entry)
    return found


def missing_model_files(folder: Path) -> list[str]:
    """What `folder` lacks to chat with its model: any of its weights, the tokenizer, a chat template."""
    problems = []
    try:
        problems += [f"{path.name} (a weight file)" for path in weight_files(folder) if not path.is_file()]
    except EngineError as exc:
        problems.append(str(exc))
    if not (folder / "tokenizer.json").is_file():
        problems.append("tokenizer.json")
    if not (folder / "chat_template.jinja").is_file() and "chat_template" not in json_object(
            folder / "tokenizer_config.json"):
        problems.append("a chat template (chat_template.jinja)")
    return problems


def json_object(path: Path) -> dict:
    """The JSON object in `path`; empty when the file is missing, unreadable or holds something else."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def scan_folder(folder: Path) -> list[ModelEntry]:
    """`folder` itself if it holds a model, else the models up to two levels below it; one two levels down is
    named `publisher/model`, as LM Studio lays them out, which matches the hub repo it came from. A conversion's
    staging folder is no model, even once it holds a config and weights."""
    if is_staging_folder(folder):
        return []
    own = read_entry(folder)
    return [own] if own is not None else _scan_below(folder, "", SCAN_DEPTH)


def _scan_below(folder: Path, prefix: str, depth: int) -> list[ModelEntry]:
    found = []
    for child in _subfolders(folder):
        entry = read_entry(child, prefix + child.name)
        if entry is not None:
            found.append(entry)   # a model's own subfolders hold its parts, never another model
        elif depth > 1:
            found += _scan_below(child, f"{prefix}{child.name}/", depth - 1)
    return found


def _subfolders(folder: Path) -> list[Path]:
    """The folders inside `folder` but conversions' staging folders; none when it is missing or unreadable (a
    remembered drive may be gone)."""
    try:
        return sorted(path for path in folder.iterdir() if path.is_dir() and not is_staging_folder(path))
    except OSError:
        return []


def lm_studio_dirs() -> list[Path]:
    """LM Studio's model folders (current and older default), which hold models/<publisher>/<model>."""
    home = Path.home()
    return [folder for folder in (home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models")
            if folder.is_dir()]


def lm_studio_models() -> list[ModelEntry]:
    return [entry for root in lm_studio_dirs() for entry in scan_folder(root)]


def converted_models_dir() -> Path:
    """Where the Model Library writes the models it converts."""
    return data_dir() / "models"


def remembered_folders() -> list[Path]:
    """The folders the user added with "Add folder…", kept across restarts."""
    return [Path(folder) for folder in QSettings().value(FOLDERS_KEY, [], type=list)]


def remember_folder(folder: Path) -> None:
    folders = remembered_folders()
    if Path(folder) not in folders:
        QSettings().setValue(FOLDERS_KEY, [str(path) for path in folders + [Path(folder)]])


def forget_folder(folder: Path) -> None:
    """Stop listing the models of a folder added with "Add folder…"; nothing on disk is touched."""
    kept = [path for path in remembered_folders() if path != Path(folder)]
    QSettings().setValue(FOLDERS_KEY, [str(path) for path in kept])


def discover(extra_folders: list[Path]) -> list[ModelEntry]:
    """Gemma 4 models in the Hugging Face cache, LM Studio's folders, the Model Library's conversions and the
    folders the user added, each model once (the folders can overlap)."""
    entries = scan_hf_cache() + lm_studio_models()
    for folder in [converted_models_dir(), *extra_folders]:
        entries += scan_folder(Path(folder))
    # Resolved paths, so a model reached through a symlinked folder (macOS's /var) is not listed twice.
    unique: dict[Path, ModelEntry] = {}
    for entry in entries:
        unique.setdefault(entry.path.resolve(), entry)
    return list(unique.values())


def picker_labels(entries: list[ModelEntry]) -> list[str]:
    """Each entry's label; two models of one name (a copy on another drive) also name their parent folder."""
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry.name] = counts.get(entry.name, 0) + 1
    return [entry.label + (f" · in {entry.path.parent}" if counts[entry.name] > 1 else "") for entry in entries]


def physical_ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def kv_cache_bytes(config: ModelConfig, context: int) -> int:
    """Keys and values for `context` tokens: sliding layers hold at most one window, shared layers none."""
    text = config.text
    total = 0
    for layer in range(text.num_hidden_layers):
        if text.kv_producer(layer) != layer:
            continue
        tokens = context if text.is_full(layer) else min(context, text.sliding_window)
        per_token = 2 * text.layer_kv_heads(layer) * text.layer_head_dim(layer) * KV_BYTES_PER_VALUE
        total += tokens * per_token
    return total


def check_memory(entry: ModelEntry, context: int = DEFAULT_CONTEXT, ram_bytes: int | None = None) -> MemoryVerdict:
    """Whether weights (towers included) plus the KV cache for `context` tokens fit in usable RAM."""
    ram = physical_ram_bytes() if ram_bytes is None else ram_bytes
    available = int(ram * USABLE_RAM_FRACTION)
    needed = entry.size_bytes + kv_cache_bytes(entry.config, context)
    if needed <= available:
        return MemoryVerdict(True, needed, available,
                             f"needs about {format_bytes(needed)} of {format_bytes(available)}")
    advice = ("Try a 4-bit quantized copy" if entry.quantization is None or entry.quantization[0] > 4
              else "Try a smaller variant (E2B or E4B)")
    message = (f"{entry.name} needs about {format_bytes(needed)} (weights + {context}-token context) but only "
               f"{format_bytes(available)} of this machine's {format_bytes(ram)} can be used. {advice}, "
               f"or a shorter context.")
    return MemoryVerdict(False, needed, available, message)
