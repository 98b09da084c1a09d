"""Downloading a model from the Hugging Face Hub: the only code in Lantern that touches the network.

Everything goes through huggingface_hub's own client (HfApi for the file list, its `http_get` for the
bytes, which follows the Hub's redirects and sends Range requests), into the standard hub cache layout
(`models--org--name/blobs/<etag>`, `snapshots/<commit>/<file>` links, `refs/<revision>`), so other tools
find the files and the app's model discovery picks them up.

Offline by default: the app sets HF_HUB_OFFLINE before anything imports huggingface_hub, and the client
then refuses every request. `hub_online()` lifts that switch (huggingface_hub.constants.HF_HUB_OFFLINE,
read on every request) only while a download the user asked for runs, and puts it back afterwards.

Resume: huggingface_hub 1.x/2.x deletes its own partial files when a download fails, so the bytes go to
`blobs/<etag>.incomplete` that we keep; a later run, even after quitting the app, sends a Range request
for the rest. Every file is verified against the Hub's metadata at the end: the size, and the SHA-256 of
LFS files or the git blob id of the small ones.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from engine.checkpoint import weight_files
from engine.errors import EngineError

from app.models import hf_cache_dir

ALLOW_PATTERNS = ("config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json",
                  "tokenizer_config.json", "chat_template.jinja", "generation_config.json",
                  "processor_config.json", "special_tokens_map.json")
INCOMPLETE = ".incomplete"
_HASH_CHUNK = 8 * 1024 * 1024
_SPEED_WINDOW_S = 5.0
_ONLINE_LOCK = threading.Lock()


class DownloadError(EngineError):
    """A download could not finish; the message says why and whether the partial files were kept."""


class DownloadStopped(DownloadError):
    """The user paused or cancelled."""


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    blob_id: str          # git object id: the Hub's ETag for small files
    sha256: str | None    # LFS files: their content hash, also the Hub's linked ETag

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob_id


@dataclass(frozen=True)
class DownloadProgress:
    file: str
    file_done: int
    file_total: int
    done: int
    total: int
    bytes_per_second: float
    seconds_left: float | None


ProgressCallback = Callable[[DownloadProgress], None]


@contextmanager
def hub_online() -> Iterator[None]:
    """Let huggingface_hub make requests for the duration of the block, then restore the offline switch."""
    from huggingface_hub import constants

    with _ONLINE_LOCK:
        saved = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = False
        try:
            yield
        finally:
            constants.HF_HUB_OFFLINE = saved


def repo_folder(repo_id: str, cache: Path | None = None) -> Path:
    return (cache or hf_cache_dir()) / ("models--" + repo_id.replace("/", "--"))


def wanted(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in ALLOW_PATTERNS)


def partial_bytes(repo_id: str, cache: Path | None = None) -> int:
    """Bytes already fetched by an unfinished download of `repo_id` (0 when none is pending)."""
    blobs = repo_folder(repo_id, cache) / "blobs"
    return sum(path.stat().st_size for path in blobs.glob("*" + INCOMPLETE)) if blobs.is_dir() else 0


def git_blob_id(path: Path) -> str:
    """The git object id of a file: sha1 over 'blob <size>\\0' and the content."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    return _hash_file(path, digest)


def sha256_of(path: Path) -> str:
    return _hash_file(path, hashlib.sha256())


def _hash_file(path: Path, digest) -> str:
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, remote: RemoteFile) -> str | None:
    """None when `path` holds exactly the remote file, else what is wrong."""
    size = path.stat().st_size
    if size != remote.size:
        return f"{remote.name} has {size} bytes, the Hub says {remote.size}"
    if remote.sha256 is not None and sha256_of(path) != remote.sha256:
        return f"{remote.name} does not match its SHA-256 on the Hub"
    if remote.sha256 is None and remote.blob_id and git_blob_id(path) != remote.blob_id:
        return f"{remote.name} does not match its git object id on the Hub"
    return None


def missing_for_use(folder: Path) -> list[str]:
    """What the folder lacks for text, and for each modality its config declares; empty when ready."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ["config.json"]
    problems = []
    try:
        weight_files(folder)
    except EngineError as exc:
        problems.append(str(exc))
    if not (folder / "tokenizer.json").is_file():
        problems.append("tokenizer.json")
    if not (folder / "chat_template.jinja").is_file() and "chat_template" not in _json_or_empty(
            folder / "tokenizer_config.json"):
        problems.append("a chat template (chat_template.jinja)")
    processor = _json_or_empty(folder / "processor_config.json")
    if config.get("vision_config") and "image_processor" not in processor:
        problems.append("the image processor settings (processor_config.json: image_processor)")
    if config.get("audio_config") and "feature_extractor" not in processor:
        problems.append("the audio feature extractor (processor_config.json: feature_extractor)")
    return problems


def _json_or_empty(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


class _Meter:
    """Total and per-file byte counts with a speed over the last few seconds."""

    def __init__(self, total: int, done: int, callback: ProgressCallback | None):
        self.total, self.done, self.callback = total, done, callback
        self.samples: deque[tuple[float, int]] = deque([(time.monotonic(), done)])
        self.file, self.file_done, self.file_total = "", 0, 0

    def start_file(self, remote: RemoteFile, already: int) -> None:
        self.file, self.file_done, self.file_total = remote.name, already, remote.size
        self.report()

    def add(self, count: int) -> None:
        self.done += count
        self.file_done += count
        now = time.monotonic()
        self.samples.append((now, self.done))
        while len(self.samples) > 2 and now - self.samples[0][0] > _SPEED_WINDOW_S:
            self.samples.popleft()
        self.report()

    def speed(self) -> float:
        (first_time, first_done), (last_time, last_done) = self.samples[0], self.samples[-1]
        elapsed = last_time - first_time
        return (last_done - first_done) / elapsed if elapsed > 0 else 0.0

    def report(self) -> None:
        if self.callback is None:
            return
        speed = self.speed()
        left = (self.total - self.done) / speed if speed > 0 else None
        self.callback(DownloadProgress(self.file, self.file_done, self.file_total, self.done, self.total, speed, left))


class _CountingFile:
    """The file http_get writes into: counts bytes for the meter and stops the transfer on request."""

    def __init__(self, handle, meter: _Meter, should_stop: Callable[[], str | None]):
        self.handle, self.meter, self.should_stop = handle, meter, should_stop

    def write(self, data: bytes) -> int:
        reason = self.should_stop()
        if reason:
            raise DownloadStopped(reason)
        written = self.handle.write(data)
        self.meter.add(len(data))
        return written

    def __getattr__(self, name):
        return getattr(self.handle, name)


class HubDownload:
    """One repository's download: `run()` on a worker thread, `pause()` / `cancel()` from any thread."""

    def __init__(self, repo_id: str, revision: str = "main", cache: Path | None = None,
                 endpoint: str | None = None, token: str | None = None):
        self.repo_id, self.revision, self.endpoint, self.token = repo_id, revision, endpoint, token
        self.storage = repo_folder(repo_id, cache)
        self._stop: str | None = None

    def pause(self) -> None:
        self._stop = "paused; the partial download is kept and resumes where it stopped"

    def cancel(self) -> None:
        self._stop = "cancelled"

    def run(self, progress: ProgressCallback | None = None) -> Path:
        """Fetch what is missing, verify everything, and return the ready snapshot folder."""
        self._stop = None
        with hub_online():
            commit, files = self._list_files()
            snapshot = self.storage / "snapshots" / commit
            meter = _Meter(sum(f.size for f in files), sum(self._have(f) for f in files), progress)
            try:
                for remote in files:
                    self._fetch(remote, snapshot, meter)
            except DownloadStopped:
                if self._stop == "cancelled":
                    self._discard_partials(files)
                raise
        self._write_ref(commit)
        missing = missing_for_use(snapshot)
        if missing:
            raise DownloadError(f"{self.repo_id} downloaded, but it lacks {', '.join(missing)}; "
                                "it cannot be used as it is")
        return snapshot

    def _list_files(self) -> tuple[str, list[RemoteFile]]:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

        try:
            info = HfApi(endpoint=self.endpoint, token=self.token).model_info(
                self.repo_id, revision=self.revision, files_metadata=True)
        except (RepositoryNotFoundError, RevisionNotFoundError):
            raise DownloadError(f"{self.repo_id} ({self.revision}) was not found on the Hub; "
                                "check the name, or sign in if it is gated") from None
        except HfHubHTTPError as exc:
            raise DownloadError(f"the Hub refused the file list of {self.repo_id}: {exc}") from None
        except _network_errors() as exc:
            raise self._unreachable(exc) from None
        files = [RemoteFile(s.rfilename, s.size or 0, s.blob_id or "", s.lfs.sha256 if s.lfs else None)
                 for s in info.siblings or [] if wanted(s.rfilename)]
        if not any(f.name.endswith(".safetensors") for f in files):
            raise DownloadError(f"{self.repo_id} has no safetensors weights; Lantern cannot use it")
        return info.sha, files

    def _unreachable(self, error: Exception) -> DownloadError:
        kept = partial_bytes(self.repo_id, self.storage.parent)
        note = f"; the {kept} bytes already downloaded are kept for later" if kept else ""
        return DownloadError(f"cannot reach the Hub for {self.repo_id} ({type(error).__name__}: {error}){note}")

    def _have(self, remote: RemoteFile) -> int:
        blob = self.storage / "blobs" / remote.etag
        partial = blob.with_name(blob.name + INCOMPLETE)
        if blob.is_file():
            return blob.stat().st_size
        return partial.stat().st_size if partial.is_file() else 0

    def _fetch(self, remote: RemoteFile, snapshot: Path, meter: _Meter) -> None:
        blob = self.storage / "blobs" / remote.etag
        if not blob.is_file():
            partial = blob.with_name(blob.name + INCOMPLETE)
            self._transfer(remote, partial, meter)
            problem = verify_file(partial, remote)
            if problem:
                partial.unlink()
                raise DownloadError(f"{problem}: the damaged file was removed; download {self.repo_id} again")
            partial.rename(blob)
        _link(blob, snapshot / remote.name)

    def _transfer(self, remote: RemoteFile, partial: Path, meter: _Meter) -> None:
        from huggingface_hub import hf_hub_url
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers

        partial.parent.mkdir(parents=True, exist_ok=True)
        already = partial.stat().st_size if partial.exists() else 0
        meter.start_file(remote, already)
        if already >= remote.size:
            return
        url = hf_hub_url(self.repo_id, remote.name, revision=self.revision, endpoint=self.endpoint)
        with partial.open("ab") as handle:
            try:
                http_get(url, _CountingFile(handle, meter, lambda: self._stop), resume_size=already,
                         headers=build_hf_headers(token=self.token), expected_size=remote.size,
                         displayed_filename=remote.name, tqdm_class=_silent_bar())
            except _network_errors() as exc:
                handle.flush()
                raise self._unreachable(exc) from None

    def _write_ref(self, commit: str) -> None:
        ref = self.storage / "refs" / self.revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit, encoding="utf-8")

    def _discard_partials(self, files: list[RemoteFile]) -> None:
        for remote in files:
            (self.storage / "blobs" / (remote.etag + INCOMPLETE)).unlink(missing_ok=True)


def _network_errors() -> tuple[type[Exception], ...]:
    """What a dropped connection raises: the client's transport errors (httpx2) and OS-level ones."""
    import httpx2

    return httpx2.TransportError, OSError


def _silent_bar():
    from tqdm.auto import tqdm

    class SilentBar(tqdm):
        """The library page draws its own progress; no bars on the terminal."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": True})

    return SilentBar


def _link(blob: Path, pointer: Path) -> None:
    """The hub cache's relative symlink from the snapshot to the blob; a copy where links are unsupported."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.exists() or pointer.is_symlink():
        pointer.unlink()
    try:
        os.symlink(os.path.relpath(blob, pointer.parent), pointer)
    except OSError:
        shutil.copyfile(blob, pointer)
