"""The library page: lists installed / downloading / available, downloads from a local Hub, converts,
reveals and deletes."""

import shutil
import threading
from pathlib import Path

import pytest
from huggingface_hub import constants as hub_constants
from PySide6.QtCore import Qt
from PySide6.QtGui import QDesktopServices, QKeySequence, QShortcut

import engine
import engine.convert as convert_module
from app.library.catalog import CatalogEntry
from app.library.download import HubDownload
from app.library.jobs import ConvertJob
from app.library.page import open_library
from engine.convert import STAGING_SUFFIX

from conftest import MODELS
from test_library_download import CHUNK, COMMIT, REPO, FakeHub

HUB_REPO = f"models--{REPO.replace('/', '--')}"

TINY = CatalogEntry(REPO, "e2b", 4, 4_000_000, 6_000_000)


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "DOWNLOAD_CHUNK_SIZE", CHUNK)
    server = FakeHub(MODELS / "tiny-e2b")
    yield server
    server.stop()


@pytest.fixture
def page(qtbot, tmp_path, hub):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(MODELS / "tiny-e4b-bf16", models / "tiny-e4b-bf16")
    widget = open_library(None, models_dir=models, cache=tmp_path / "hub", endpoint=hub.endpoint,
                          catalog=(TINY,), confirm=lambda parent, question: True, added_folders=lambda: [])
    qtbot.addWidget(widget)
    yield widget
    widget.shutdown()


def test_lists_installed_and_available(page, tmp_path):
    assert page.items("installed") == [str(tmp_path / "models" / "tiny-e4b-bf16")]
    assert page.items("available") == [REPO]
    assert page.items("downloading") == []


def test_download_emits_model_ready_and_moves_to_installed(page, qtbot, tmp_path):
    page.select(REPO)
    with qtbot.waitSignal(page.model_ready, timeout=20000) as ready:
        page.download_selected()
    snapshot = tmp_path / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT
    assert ready.args == [str(snapshot)]
    assert str(snapshot) in page.items("installed")
    assert page.items("available") == []


def test_paused_download_is_listed_and_resumable(page, qtbot, hub):
    hub.chunk_delay = 0.01
    page.select(REPO)
    page.download_selected()
    job = page.downloads[REPO]
    qtbot.waitUntil(lambda: job.progress is not None and job.progress.done > job.progress.total / 3, timeout=20000)
    assert "left" in page.status.text()
    page.select(REPO)
    page.pause_selected()
    qtbot.waitUntil(lambda: REPO not in page.downloads, timeout=20000)
    assert page.items("downloading") == [REPO]
    assert "paused" in page.status.text()
    page.select(REPO)
    with qtbot.waitSignal(page.model_ready, timeout=20000):
        page.download_selected()
    assert page.items("downloading") == []


def test_a_paused_download_is_not_installed_and_cancel_removes_what_it_fetched(page, qtbot, hub, tmp_path):
    hub.chunk_delay = 0.01
    page.select(REPO)
    job = page.start_download(REPO)
    qtbot.waitUntil(lambda: job.progress is not None and job.progress.done > job.progress.total / 3, timeout=20000)
    page.pause_selected()
    qtbot.waitUntil(lambda: REPO not in page.downloads, timeout=20000)
    assert page.items("installed") == [str(tmp_path / "models" / "tiny-e4b-bf16")]
    assert page.items("downloading") == [REPO]
    page.select(REPO)
    page.cancel_selected()
    assert page.items("available") == [REPO]
    assert not (tmp_path / "hub" / HUB_REPO).exists()


def test_quitting_does_not_wait_for_a_download_that_will_not_stop(page, monkeypatch):
    released = threading.Event()
    monkeypatch.setattr(HubDownload, "run", lambda download, progress=None: released.wait())  # deaf to pause
    watchdog = threading.Timer(30, released.set)  # lets the unbounded wait this test guards against end
    watchdog.start()
    try:
        job = page.start_download(REPO)
        page.shutdown()
        assert not job.done()
    finally:
        released.set()
        watchdog.cancel()


def test_convert_adds_a_loadable_quantized_model(page, qtbot, tmp_path):
    page.select(str(tmp_path / "models" / "tiny-e4b-bf16"))
    assert page.buttons["Convert to 4-bit"].isEnabled()
    with qtbot.waitSignal(page.model_ready, timeout=30000) as ready:
        page.convert_selected(4)
    assert ready.args[0] in page.items("installed")
    assert engine.load(ready.args[0]).info.quantization == (4, 64)
    page.select(ready.args[0])
    assert not page.buttons["Convert to 4-bit"].isEnabled()  # already quantized


def leftover_staging(models: Path, name: str) -> Path:
    """What a conversion killed midway leaves in the library's folder."""
    staging = models / f"{name}{STAGING_SUFFIX}"
    shutil.copytree(MODELS / "tiny-e2b-q4", staging)
    return staging


def test_opening_the_library_removes_what_killed_conversions_left(qtbot, tmp_path, hub):
    models = tmp_path / "models"
    shutil.copytree(MODELS / "tiny-e4b-bf16", models / "tiny-e4b-bf16")
    leftover = leftover_staging(models, "tiny-e4b-bf16-4bit")
    widget = open_library(None, models_dir=models, cache=tmp_path / "hub", endpoint=hub.endpoint,
                          catalog=(TINY,), confirm=lambda parent, question: True, added_folders=lambda: [])
    qtbot.addWidget(widget)
    assert not leftover.exists()
    assert [path.name for path in models.iterdir()] == ["tiny-e4b-bf16"]
    assert widget.items("installed") == [str(models / "tiny-e4b-bf16")]
    widget.shutdown()


def test_a_conversion_removes_leftovers_and_its_own_staging_survives_a_library_opened_meanwhile(
        page, qtbot, tmp_path, hub, monkeypatch):
    models = tmp_path / "models"
    leftover = leftover_staging(models, "killed-8bit")
    held, release = threading.Event(), threading.Event()

    def hold_at_first_tensor(job, step) -> None:
        held.set()
        release.wait(20)

    monkeypatch.setattr(ConvertJob, "_report", hold_at_first_tensor)
    page.select(str(models / "tiny-e4b-bf16"))
    page.convert_selected(4)
    assert not leftover.exists()
    assert held.wait(20)
    other = open_library(None, models_dir=models, cache=tmp_path / "hub", endpoint=hub.endpoint, catalog=(TINY,),
                         confirm=lambda parent, question: True, added_folders=lambda: [])
    qtbot.addWidget(other)
    assert (models / f"tiny-e4b-bf16-4bit{STAGING_SUFFIX}").is_dir()
    with qtbot.waitSignal(page.model_ready, timeout=30000) as ready:
        release.set()
    assert ready.args == [str(models / "tiny-e4b-bf16-4bit")]
    other.shutdown()


def test_a_conversion_can_be_cancelled_and_its_source_cannot_be_deleted_meanwhile(page, qtbot, tmp_path,
                                                                                     monkeypatch):
    source = tmp_path / "models" / "tiny-e4b-bf16"
    cancelled = threading.Event()
    monkeypatch.setattr(ConvertJob, "_report", lambda job, step: cancelled.wait(20))  # hold it at the 1st tensor
    page.select(str(source))
    job = page.convert_selected(4)
    assert page.buttons["Cancel"].isEnabled() and not page.buttons["Delete"].isEnabled()
    page.cancel_selected()
    cancelled.set()
    qtbot.waitUntil(lambda: page.conversion is None, timeout=20000)
    assert job.error == "conversion cancelled" and page.status.text() == "conversion cancelled"
    assert not (tmp_path / "models" / "tiny-e4b-bf16-4bit").exists()
    assert page.buttons["Delete"].isEnabled() and not page.buttons["Cancel"].isEnabled()


def test_a_conversion_that_fails_unexpectedly_says_why_and_frees_the_page(page, qtbot, tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(convert_module.mx, "save_safetensors", disk_full)
    page.select(str(tmp_path / "models" / "tiny-e4b-bf16"))
    page.convert_selected(4)
    qtbot.waitUntil(lambda: page.conversion is None, timeout=20000)
    assert page.status.text() == "The conversion failed: [Errno 28] No space left on device"
    assert page.bar.isHidden() and page.buttons["Convert to 4-bit"].isEnabled()
    assert not (tmp_path / "models" / "tiny-e4b-bf16-4bit").exists()


def test_reveal_opens_the_folder(page, monkeypatch, tmp_path):
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()))
    folder = str(tmp_path / "models" / "tiny-e4b-bf16")
    page.select(folder)
    page.reveal_selected()
    assert opened == [folder]


def test_delete_removes_a_hub_model_with_its_blobs(page, qtbot, tmp_path):
    page.select(REPO)
    with qtbot.waitSignal(page.model_ready, timeout=20000) as ready:
        page.download_selected()
    page.select(ready.args[0])
    page.delete_selected()
    assert not (tmp_path / "hub" / f"models--{REPO.replace('/', '--')}").exists()
    assert ready.args[0] not in page.items("installed")
    assert page.items("available") == [REPO]
    assert (tmp_path / "models" / "tiny-e4b-bf16").is_dir()  # nothing else was touched


@pytest.mark.parametrize("key", [Qt.Key.Key_Escape, QKeySequence.StandardKey.Close])
def test_the_library_is_a_titled_window_that_closes_with_escape_or_close(page, qtbot, key):
    keys = QKeySequence(key)
    page.show()
    assert page.windowTitle() == "Model Library"
    # offscreen, no window becomes active, so the shortcut is triggered rather than typed
    shortcut = next(s for s in page.findChildren(QShortcut) if s.key() == keys)
    shortcut.activated.emit()
    assert not page.isVisible()


def test_return_on_an_installed_model_uses_it(page, qtbot, tmp_path):
    installed = str(tmp_path / "models" / "tiny-e4b-bf16")
    page.select(installed)
    with qtbot.waitSignal(page.model_ready, timeout=2000) as ready:
        page.tree.itemActivated.emit(page.tree.currentItem(), 0)
    assert ready.args == [installed]


def test_an_empty_library_says_what_to_do_and_still_lists_the_catalog(qtbot, tmp_path, hub):
    widget = open_library(None, models_dir=tmp_path / "none", cache=tmp_path / "hub", endpoint=hub.endpoint,
                          catalog=(TINY,), confirm=lambda parent, question: True, added_folders=lambda: [])
    qtbot.addWidget(widget)
    installed = widget.tree.topLevelItem(0)
    assert widget.items("installed") == [] and installed.child(0).text(0) == "None yet"
    assert widget.items("available") == [REPO]
    widget.shutdown()


def test_models_in_folders_added_in_the_main_window_are_listed_and_convertible_but_never_deleted(qtbot, tmp_path,
                                                                                                  hub):
    added = tmp_path / "my models"
    shutil.copytree(MODELS / "tiny-e4b-bf16", added / "tiny-e4b-bf16")
    widget = open_library(None, models_dir=tmp_path / "none", cache=tmp_path / "hub", endpoint=hub.endpoint,
                          catalog=(TINY,), confirm=lambda parent, question: True,
                          added_folders=lambda: [added, added / "tiny-e4b-bf16", added])   # overlapping
    qtbot.addWidget(widget)
    mine = str(added / "tiny-e4b-bf16")
    assert widget.items("installed") == [mine]
    widget.select(mine)
    assert widget.buttons["Use"].isEnabled() and widget.buttons["Convert to 4-bit"].isEnabled()
    assert not widget.buttons["Delete"].isEnabled()
    widget.delete_selected()
    assert (added / "tiny-e4b-bf16" / "config.json").is_file()
    widget.shutdown()
