"""The download manager against a local Hub: the real huggingface_hub client, a tiny http.server on
127.0.0.1 that answers the Hub's file API (model info with blobs, resolve with Range and the X-Repo-Commit /
ETag / X-Linked-Etag / X-Linked-Size headers), serving the tiny-e2b fixture as a repository."""

import hashlib
import json
import re
import resource
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from huggingface_hub import constants as hub_constants

import engine
import app.library.download as download_module
from app.library.download import INCOMPLETE, DownloadError, DownloadStopped, HubDownload, git_blob_id, \
    missing_for_use, partial_bytes, repo_folder
from app.models import scan_hf_cache

from conftest import MODELS

REPO = "lantern-test/tiny-e2b"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
UPDATE = "89abcdef0123456789abcdef0123456789abcdef"
LFS_SUFFIXES = (".safetensors", "tokenizer.json")
CHUNK = 64 * 1024


class FakeHub:
    """Files of one repository, a log of the requests, and switches for the failure cases."""

    def __init__(self, folder: Path):
        self.files = {path.name: path.read_bytes() for path in folder.iterdir()}
        self.files["README.md"] = b"# not wanted by Lantern\n"
        self.corrupt: set[str] = set()
        self.chunk_delay = 0.0  # seconds between chunks, to let a test act in the middle of a transfer
        self.commit = COMMIT
        self.status: dict[str, int] = {}  # file name -> the error status its download answers
        self.ignore_range = False  # like a CDN that sends the whole file whatever Range asks for
        self.stall_at: int | None = None  # a body stops after this many bytes until `release` is set
        self.release = threading.Event()
        self.requests: list[tuple[str, str, str | None]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def sibling(self, name: str) -> dict:
        data = self.files[name]
        entry = {"rfilename": name, "size": len(data), "blobId": hashlib.sha1(
            f"blob {len(data)}\0".encode() + data).hexdigest()}
        if name.endswith(LFS_SUFFIXES):
            entry["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
        return entry

    def served_bytes(self, name: str) -> bytes:
        data = self.files[name]
        return data[:-1] + bytes([data[-1] ^ 0xFF]) if name in self.corrupt else data

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def _answer(self, body: bool):
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                info = re.fullmatch(rf"/api/models/{REPO}/revision/([^/?]+)(\?.*)?", self.path)
                resolve = re.fullmatch(rf"/{REPO}/resolve/([^/]+)/(.+)", self.path)
                if info:
                    payload = json.dumps({"id": REPO, "sha": hub.commit,
                                          "siblings": [hub.sibling(name) for name in sorted(hub.files)]}).encode()
                    self._send(200, payload, {"Content-Type": "application/json"}, body)
                elif resolve and resolve.group(2) in hub.files:
                    self._file(resolve.group(2), body)
                else:
                    self._send(404, b"{}", {"X-Error-Code": "RepoNotFound"}, body)

            def _file(self, name: str, body: bool):
                if name in hub.status:
                    return self._send(hub.status[name], b"the server broke", {}, body)
                data = hub.served_bytes(name)
                sibling = hub.sibling(name)
                headers = {"X-Repo-Commit": hub.commit, "ETag": f'"{sibling["blobId"]}"', "Accept-Ranges": "bytes"}
                if "lfs" in sibling:
                    headers.update({"X-Linked-Etag": f'"{sibling["lfs"]["sha256"]}"',
                                    "X-Linked-Size": str(len(data))})
                start = int(re.fullmatch(r"bytes=(\d+)-", self.headers["Range"]).group(1)) \
                    if self.headers.get("Range") and not hub.ignore_range else 0
                if start:
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                self._send(206 if start else 200, data[start:], headers, body)

            def _send(self, status: int, payload: bytes, headers: dict, body: bool):
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(payload))}.items():
                    self.send_header(key, value)
                self.end_headers()
                if body:
                    for offset in range(0, len(payload), CHUNK):
                        if hub.stall_at is not None and offset >= hub.stall_at:
                            hub.release.wait()
                        self.wfile.write(payload[offset:offset + CHUNK])
                        time.sleep(hub.chunk_delay)

        return Handler


@pytest.fixture
def hub():
    server = FakeHub(MODELS / "tiny-e2b")
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def offline_app(monkeypatch):
    """The app runs offline; small read chunks let a pause land in the middle of a file."""
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "DOWNLOAD_CHUNK_SIZE", CHUNK)


def download(hub: FakeHub, cache: Path) -> HubDownload:
    return HubDownload(REPO, cache=cache, endpoint=hub.endpoint)


def pause_after(job: HubDownload, fraction: float, seen: list):
    def on_progress(step) -> None:
        seen.append(step)
        if step.done >= fraction * step.total:
            job.pause()
    return on_progress


def incomplete_bytes(cache: Path) -> int:
    """Bytes in partial files: what a resume asks the rest of with a Range request."""
    return sum(path.stat().st_size for path in (repo_folder(REPO, cache) / "blobs").glob("*" + INCOMPLETE))


def test_download_lands_in_the_hub_cache_with_progress_and_loads(hub, tmp_path):
    seen = []
    snapshot = download(hub, tmp_path).run(seen.append)
    assert snapshot == repo_folder(REPO, tmp_path) / "snapshots" / COMMIT
    assert (repo_folder(REPO, tmp_path) / "refs" / "main").read_text() == COMMIT
    wanted = {name for name in hub.files if name != "README.md"}
    assert {path.name for path in snapshot.iterdir()} == wanted
    assert all((snapshot / name).read_bytes() == hub.files[name] for name in wanted)
    assert (snapshot / "model.safetensors").is_symlink()
    total = sum(len(hub.files[name]) for name in wanted)
    assert seen[-1].done == seen[-1].total == total
    assert [step.done for step in seen] == sorted(step.done for step in seen)
    assert any(0 < step.file_done < step.file_total for step in seen)  # per-file progress inside a file
    assert any(step.bytes_per_second > 0 and step.seconds_left is not None for step in seen)
    assert missing_for_use(snapshot) == []
    assert engine.load(snapshot).info.variant == engine.load(MODELS / "tiny-e2b").info.variant
    assert hub_constants.HF_HUB_OFFLINE is True  # the switch is back once the download is over


def test_interrupted_download_resumes_with_a_range_request(hub, tmp_path):
    job, seen = download(hub, tmp_path), []
    with pytest.raises(DownloadStopped, match="paused"):
        job.run(pause_after(job, 0.5, seen))
    kept = incomplete_bytes(tmp_path)
    assert 0 < kept < len(hub.files["model.safetensors"])
    hub.requests.clear()
    snapshot = download(hub, tmp_path).run()
    ranges = [byte_range for method, path, byte_range in hub.requests if path.endswith("model.safetensors")]
    assert ranges == [f"bytes={kept}-"]
    assert (snapshot / "model.safetensors").read_bytes() == hub.files["model.safetensors"]
    assert partial_bytes(REPO, tmp_path) == 0


def test_second_run_fetches_nothing(hub, tmp_path):
    download(hub, tmp_path).run()
    hub.requests.clear()
    download(hub, tmp_path).run()
    assert [path for _, path, _ in hub.requests if "/resolve/" in path] == []


def test_corrupt_file_is_detected_and_removed(hub, tmp_path):
    hub.corrupt.add("model.safetensors")
    with pytest.raises(DownloadError, match="model.safetensors does not match its SHA-256"):
        download(hub, tmp_path).run()
    blob = repo_folder(REPO, tmp_path) / "blobs" / hub.sibling("model.safetensors")["lfs"]["sha256"]
    assert not blob.exists()
    assert incomplete_bytes(tmp_path) == 0
    hub.corrupt.clear()
    assert (download(hub, tmp_path).run() / "model.safetensors").read_bytes() == hub.files["model.safetensors"]


def test_small_files_are_checked_against_their_git_object_id(hub, tmp_path):
    hub.corrupt.add("config.json")
    with pytest.raises(DownloadError, match="config.json does not match its git object id"):
        download(hub, tmp_path).run()
    path = tmp_path / "config.json"
    path.write_bytes(hub.files["config.json"])
    assert git_blob_id(path) == hub.sibling("config.json")["blobId"]


def test_server_gone_gives_a_clear_error_and_keeps_the_partial_download(hub, tmp_path):
    job = download(hub, tmp_path)
    with pytest.raises(DownloadStopped):
        job.run(pause_after(job, 0.4, []))
    kept = partial_bytes(REPO, tmp_path)
    hub.stop()
    with pytest.raises(DownloadError, match=rf"cannot reach the Hub for {REPO}.*{kept} bytes .* kept"):
        download(hub, tmp_path).run()
    assert partial_bytes(REPO, tmp_path) == kept


def test_cancel_discards_the_partial_files(hub, tmp_path):
    job = download(hub, tmp_path)

    def cancel_halfway(step) -> None:
        if step.done >= step.total / 2:
            job.cancel()

    with pytest.raises(DownloadStopped, match="cancelled"):
        job.run(cancel_halfway)
    assert partial_bytes(REPO, tmp_path) == 0
    assert not list((repo_folder(REPO, tmp_path) / "blobs").glob("*" + INCOMPLETE))


def test_unknown_repository_is_named(hub, tmp_path):
    with pytest.raises(DownloadError, match="lantern-test/missing .*not found"):
        HubDownload("lantern-test/missing", cache=tmp_path, endpoint=hub.endpoint).run()


def test_folder_missing_the_audio_feature_extractor_is_not_ready(model_copy):
    folder = model_copy("tiny-e2b")
    assert missing_for_use(folder) == []
    processor = json.loads((folder / "processor_config.json").read_text())
    del processor["feature_extractor"]
    (folder / "processor_config.json").write_text(json.dumps(processor))
    (folder / "tokenizer.json").unlink()
    problems = missing_for_use(folder)
    assert "tokenizer.json" in problems
    assert any("feature_extractor" in problem for problem in problems)


def test_a_paused_download_is_not_a_model_until_every_file_is_there(hub, tmp_path):
    job = download(hub, tmp_path)
    with pytest.raises(DownloadStopped):
        job.run(pause_after(job, 0.5, []))
    assert scan_hf_cache(tmp_path) == []
    assert not (repo_folder(REPO, tmp_path) / "snapshots").exists()
    snapshot = download(hub, tmp_path).run()
    assert [entry.path for entry in scan_hf_cache(tmp_path)] == [snapshot]


def test_cancel_removes_the_files_it_finished_too(hub, tmp_path):
    job = download(hub, tmp_path)

    def cancel_at_the_tokenizer(step) -> None:  # the weights are done by then
        if step.file == "tokenizer.json":
            job.cancel()

    with pytest.raises(DownloadStopped, match="cancelled"):
        job.run(cancel_at_the_tokenizer)
    assert not repo_folder(REPO, tmp_path).exists()


def test_cancelling_an_update_keeps_the_installed_revision(hub, tmp_path):
    installed = download(hub, tmp_path).run()
    hub.commit = UPDATE
    hub.files["tokenizer.json"] += b"\n"
    job = download(hub, tmp_path)

    def cancel_at_the_tokenizer(step) -> None:
        if step.file == "tokenizer.json":
            job.cancel()

    with pytest.raises(DownloadStopped, match="cancelled"):
        job.run(cancel_at_the_tokenizer)
    assert [entry.path for entry in scan_hf_cache(tmp_path)] == [installed]
    assert (installed / "tokenizer.json").read_bytes() == hub.files["tokenizer.json"][:-1]
    assert missing_for_use(installed) == []
    assert partial_bytes(REPO, tmp_path) == 0


def test_a_repository_missing_a_needed_file_is_refused_and_removed(hub, tmp_path):
    del hub.files["tokenizer.json"]
    with pytest.raises(DownloadError, match="lacks tokenizer.json.*removed"):
        download(hub, tmp_path).run()
    assert scan_hf_cache(tmp_path) == []
    assert not repo_folder(REPO, tmp_path).exists()


def test_pause_cuts_a_transfer_that_receives_nothing(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_DOWNLOAD_TIMEOUT", None)  # a silent server is waited on forever
    hub.stall_at = 4 * CHUNK
    job, stalled, outcome = download(hub, tmp_path), threading.Event(), []

    def watch(step) -> None:
        if step.file == "model.safetensors" and step.file_done >= hub.stall_at:
            stalled.set()

    def run() -> None:
        try:
            job.run(watch)
        except DownloadError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    assert stalled.wait(20)
    job.pause()
    worker.join(30)  # a guard against hanging the suite: the pause has nothing to wait for
    assert [type(exc) for exc in outcome] == [DownloadStopped] and "paused" in str(outcome[0])
    assert incomplete_bytes(tmp_path) == hub.stall_at


def test_a_server_error_is_named_as_such(hub, tmp_path):
    hub.status["model.safetensors"] = 500
    with pytest.raises(DownloadError, match=r"server failed while sending model.safetensors .*\(HTTP 500\)") as error:
        download(hub, tmp_path).run()
    assert "cannot reach" not in str(error.value)


def test_a_full_disk_is_named_with_the_room_needed(hub, tmp_path):
    total = sum(len(data) for name, data in hub.files.items() if name != "README.md")
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, limits[1]))
    try:
        with pytest.raises(DownloadError, match=r"the disk is full: .* needs \d.* more") as error:
            download(hub, tmp_path).run()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
    assert "cannot reach" not in str(error.value)
    assert 0 < incomplete_bytes(tmp_path) <= 1_000_000 < total


def test_no_room_is_refused_before_the_first_byte(hub, tmp_path, monkeypatch):
    usage = download_module.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(download_module.shutil, "disk_usage", lambda path: usage._replace(free=1024 * 1024))
    with pytest.raises(DownloadError, match=r"the disk is full: .* needs 3\.6 MB more and 1\.0 MB is free"):
        download(hub, tmp_path).run()
    assert [path for _, path, _ in hub.requests if "/resolve/" in path] == []


def test_a_server_that_ignores_range_restarts_the_file_without_passing_100_percent(hub, tmp_path):
    job = download(hub, tmp_path)
    with pytest.raises(DownloadStopped):
        job.run(pause_after(job, 0.5, []))
    hub.ignore_range, seen = True, []
    snapshot = download(hub, tmp_path).run(seen.append)
    assert all(step.done <= step.total and step.file_done <= step.file_total for step in seen)
    assert seen[-1].done == seen[-1].total
    assert (snapshot / "model.safetensors").read_bytes() == hub.files["model.safetensors"]
