"""Downloading a model from the Hugging Face Hub: the only code in Lantern that touches the network.

Everything goes through huggingface_hub's own client (HfApi for the file list, its shared HTTP session for
the bytes, which follows the Hub's redirects), into the standard hub cache layout (`models--org--name/
blobs/<etag>`, `snapshots/<commit>/<file>` links, `refs/<revision>`), so other tools find the files and the
app's model discovery picks them up.

Offline by default: the app sets HF_HUB_OFFLINE before anything imports huggingface_hub, and the client
then refuses every request. `hub_online()` lifts that switch (huggingface_hub.constants.HF_HUB_OFFLINE,
read on every request) only while a download the user asked for runs, and puts it back afterwards.

Resume: the bytes go to `blobs/<etag>.incomplete`, which we keep when a download stops; a later run, even
after quitting the app, sends a Range request for the rest. Every file is verified against the Hub's
metadata: the size, and the SHA-256 of LFS files or the git blob id of the small ones. The snapshot links
are made only once every file is there and verified, so an unfinished download is never taken for a model.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import os
import shutil
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from engine.errors import EngineError

from app.models import format_bytes, hf_cache_dir, json_object, missing_model_files

ALLOW_PATTERNS = ("config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json",
                  "tokenizer_config.json", "chat_template.jinja", "generation_config.json",
                  "processor_config.json", "special_tokens_map.json")
INCOMPLETE = ".incomplete"
_HASH_CHUNK = 8 * 1024 * 1024
_SPEED_WINDOW_S = 5.0
# A dropped connection is resumed where it stopped; this many tries in a row that bring no new byte give up.
_RETRIES = 3
_RETRY_WAIT_S = 1.0
# What a write raises when there is no room: a full disk, a full quota, or a file size limit.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
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
    return sum(path.stat().st_size for path in unfinished_files(repo_folder(repo_id, cache)))


def unfinished_files(storage: Path) -> list[Path]:
    """The blobs in `storage` (a models--org--name folder) that no snapshot links to. A download links its
    files only once all of them are verified, so these are what unfinished downloads left: partial files,
    and finished files of a revision still missing others."""
    blobs = storage / "blobs"
    if not blobs.is_dir():
        return []
    linked = {link.resolve() for link in (storage / "snapshots").rglob("*") if link.is_symlink()}
    return [blob for blob in blobs.iterdir() if blob.is_file() and blob.resolve() not in linked]


def discard_unfinished(storage: Path) -> None:
    """Delete what unfinished downloads left in `storage`; the files of complete revisions stay, since their
    snapshots link to them. Empty folders go too, so a first download that was cancelled leaves nothing."""
    for blob in unfinished_files(storage):
        blob.unlink(missing_ok=True)
    for folder in (storage / "snapshots", storage / "blobs", storage):
        with contextlib.suppress(OSError):  # not empty: a complete revision (or another tool's file) is there
            folder.rmdir()


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
    config = json_object(folder / "config.json")
    if not config:
        return ["config.json"]
    problems = missing_model_files(folder)
    processor = json_object(folder / "processor_config.json")
    if config.get("vision_config") and "image_processor" not in processor:
        problems.append("the image processor settings (processor_config.json: image_processor)")
    if config.get("audio_config") and "feature_extractor" not in processor:
        problems.append("the audio feature extractor (processor_config.json: feature_extractor)")
    return problems


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

    def discard(self, count: int) -> None:
        """Take back bytes counted as kept when their file starts over from its first byte."""
        self.done -= count
        self.file_done -= count
        self.samples = deque([(time.monotonic(), self.done)])  # a drop is not a negative speed
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


class HubDownload:
    """One repository's download: `run()` once on a worker thread, `pause()` / `cancel()` from any thread."""

    def __init__(self, repo_id: str, revision: str = "main", cache: Path | None = None,
                 endpoint: str | None = None, token: str | None = None):
        self.repo_id, self.revision, self.endpoint, self.token = repo_id, revision, endpoint, token
        self.storage = repo_folder(repo_id, cache)
        self._stop: str | None = None
        self._woken = threading.Event()   # ends the wait before a retry as soon as the user stops
        self._lock = threading.Lock()     # guards _response: the worker closes it, pause/cancel cut it
        self._response = None

    def pause(self) -> None:
        self._request_stop("paused; the partial download is kept and resumes where it stopped")

    def cancel(self) -> None:
        self._request_stop("cancelled")

    def _request_stop(self, reason: str) -> None:
        self._stop = reason
        self._woken.set()
        with self._lock:
            if self._response is not None:
                _cut(self._response)

    def _check_stop(self) -> None:
        if self._stop:
            raise DownloadStopped(self._stop)

    def run(self, progress: ProgressCallback | None = None) -> Path:
        """Fetch what is missing, verify everything, and return the snapshot folder, linked only now."""
        with hub_online():
            commit, files = self._list_files()
            meter = _Meter(sum(f.size for f in files), sum(self._have(f) for f in files), progress)
            try:
                self._check_space(meter)
                for remote in files:
                    self._fetch(remote, meter)
            except DownloadStopped:
                if self._stop == "cancelled":
                    discard_unfinished(self.storage)
                raise
            except OSError as exc:
                if exc.errno not in _DISK_FULL:
                    raise
                raise self._disk_full(meter) from None
        return self._publish(commit, files)

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
            raise self._refused("the file list", exc) from None
        except _transport_errors() as exc:
            raise self._unreachable(exc) from None
        files = [RemoteFile(s.rfilename, s.size or 0, s.blob_id or "", s.lfs.sha256 if s.lfs else None)
                 for s in info.siblings or [] if wanted(s.rfilename)]
        if not any(f.name.endswith(".safetensors") for f in files):
            raise DownloadError(f"{self.repo_id} has no safetensors weights; Lantern cannot use it")
        return info.sha, files

    def _kept(self) -> str:
        kept = partial_bytes(self.repo_id, self.storage.parent)
        return f"; the {kept} bytes already downloaded are kept for later" if kept else ""

    def _unreachable(self, error: Exception) -> DownloadError:
        return DownloadError(f"cannot reach the Hub for {self.repo_id} ({type(error).__name__}: {error}){self._kept()}")

    def _refused(self, what: str, error) -> DownloadError:
        status = error.response.status_code
        if status >= 500:
            return DownloadError(f"the Hub's server failed while sending {what} of {self.repo_id} (HTTP {status}); "
                                 f"try again later{self._kept()}")
        return DownloadError(f"the Hub refused {what} of {self.repo_id} (HTTP {status}): {error}{self._kept()}")

    def _disk_full(self, meter: _Meter) -> DownloadError:
        free = shutil.disk_usage(_existing(self.storage)).free
        return DownloadError(f"the disk is full: {self.repo_id} needs {format_bytes(meter.total - meter.done)} more "
                             f"and {format_bytes(free)} is free; make room and download again{self._kept()}")

    def _check_space(self, meter: _Meter) -> None:
        """Refuse before the first byte rather than fill the disk and fail near the end."""
        if meter.total - meter.done > shutil.disk_usage(_existing(self.storage)).free:
            raise self._disk_full(meter)

    def _blob(self, remote: RemoteFile) -> Path:
        return self.storage / "blobs" / remote.etag

    def _have(self, remote: RemoteFile) -> int:
        blob = self._blob(remote)
        partial = blob.with_name(blob.name + INCOMPLETE)
        if blob.is_file():
            return blob.stat().st_size
        return partial.stat().st_size if partial.is_file() else 0

    def _fetch(self, remote: RemoteFile, meter: _Meter) -> None:
        blob = self._blob(remote)
        if blob.is_file():
            return
        partial = blob.with_name(blob.name + INCOMPLETE)
        self._transfer(remote, partial, meter)
        problem = verify_file(partial, remote)
        if problem:
            partial.unlink()
            raise DownloadError(f"{problem}: the damaged file was removed; download {self.repo_id} again")
        partial.rename(blob)

    def _transfer(self, remote: RemoteFile, partial: Path, meter: _Meter) -> None:
        """Bring `partial` up to the remote size, resuming after each dropped connection while bytes still come."""
        partial.parent.mkdir(parents=True, exist_ok=True)
        fruitless = 0
        while (had := _size(partial)) < remote.size:
            try:
                self._stream(remote, partial, meter)
                # reported only if the body ended short without an error (a close-delimited response)
                error: Exception = ConnectionError(f"the connection closed before the end of {remote.name}")
            except _transport_errors() as exc:
                error = exc
            finally:
                self._check_stop()  # a stop wins over whatever the cut connection raised
            if _size(partial) >= remote.size:
                return
            fruitless = fruitless + 1 if _size(partial) <= had else 0
            if fruitless > _RETRIES:
                raise self._unreachable(error)
            self._woken.wait(_RETRY_WAIT_S)
            self._check_stop()

    def _stream(self, remote: RemoteFile, partial: Path, meter: _Meter) -> None:
        """One GET for the rest of the file, appended to `partial`."""
        from huggingface_hub import constants, hf_hub_url
        from huggingface_hub.errors import HfHubHTTPError
        from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

        already = _size(partial)
        meter.start_file(remote, already)
        headers = build_hf_headers(token=self.token)
        if already:
            headers["Range"] = f"bytes={already}-"
        url = hf_hub_url(self.repo_id, remote.name, revision=self.revision, endpoint=self.endpoint)
        with self._get(url, headers) as response:
            try:
                hf_raise_for_status(response)
            except HfHubHTTPError as exc:
                raise self._refused(remote.name, exc) from None
            with partial.open("ab") as handle:
                if already and response.status_code != 206:  # the server ignored the Range: the whole file comes
                    handle.truncate(0)
                    meter.discard(already)
                for chunk in response.iter_bytes(constants.DOWNLOAD_CHUNK_SIZE):
                    self._check_stop()
                    handle.write(chunk)
                    meter.add(len(chunk))

    @contextmanager
    def _get(self, url: str, headers: dict) -> Iterator:
        """A streamed GET that pause() and cancel() can cut short, even while a read waits on a silent server."""
        from huggingface_hub import constants
        from huggingface_hub.utils import http_stream_backoff

        with http_stream_backoff("GET", url, headers=headers, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT,
                                 retry_on_exceptions=(), retry_on_status_codes=(408, 429)) as response:
            with self._lock:
                self._response = response
            try:
                self._check_stop()  # asked for before there was a response to cut
                yield response
            finally:
                with self._lock:
                    self._response = None

    def _publish(self, commit: str, files: list[RemoteFile]) -> Path:
        """Link the verified files into their snapshot and point the ref at it. A revision that lacks what the
        app needs is removed instead: kept, it would be invisible to the page yet fill the disk."""
        snapshot = self.storage / "snapshots" / commit
        for remote in files:
            _link(self._blob(remote), snapshot / remote.name)
        missing = missing_for_use(snapshot)
        if missing:
            shutil.rmtree(snapshot)
            discard_unfinished(self.storage)
            raise DownloadError(f"{self.repo_id} lacks {', '.join(missing)}, so Lantern cannot use it; "
                                "its downloaded files were removed")
        self._write_ref(commit)
        return snapshot

    def _write_ref(self, commit: str) -> None:
        ref = self.storage / "refs" / self.revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit, encoding="utf-8")


def _transport_errors() -> type[Exception]:
    """What a dropped or refused connection raises in the client (httpx2); a file error is not one of them."""
    import httpx2

    return httpx2.TransportError


def _cut(response) -> None:
    """Shut the response's connection down: a read blocked on a silent server returns at once, which closing
    the response from another thread would not do."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _existing(path: Path) -> Path:
    """`path` or its nearest existing parent: where the free space of a folder still to be made is measured."""
    while not path.exists():
        path = path.parent
    return path


def _link(blob: Path, pointer: Path) -> None:
    """The hub cache's relative symlink from the snapshot to the blob; a copy where links are unsupported."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.exists() or pointer.is_symlink():
        pointer.unlink()
    try:
        os.symlink(os.path.relpath(blob, pointer.parent), pointer)
    except OSError:
        shutil.copyfile(blob, pointer)
