"""The model library page: installed models, downloads in progress or paused, and the catalog.

Open it with `open_library(parent)`; it emits `model_ready(path)` when a download or conversion has
produced a folder that is ready to load (and when the user picks an installed model with "Use").
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QKeySequence, QShortcut
from PySide6.QtWidgets import (QHBoxLayout, QHeaderView, QLabel, QMessageBox, QProgressBar, QPushButton, QTreeWidget,
                               QTreeWidgetItem, QVBoxLayout, QWidget)

from app.models import (ModelEntry, converted_models_dir, format_bytes, hf_cache_dir, lm_studio_models,
                        remembered_folders, scan_folder, scan_hf_cache)
from engine.convert import remove_abandoned_staging

from .catalog import CATALOG, CatalogEntry, describe, recommend
from .download import HubDownload, discard_unfinished, partial_bytes, repo_folder
from .jobs import ConvertJob, DownloadJob

_KEY = Qt.ItemDataRole.UserRole
_POLL_MS = 100
# How long quitting waits for downloads to stop. A pause cuts the connection at once, but a worker still
# connecting cannot be cut; its thread is a daemon and its partial file stays resumable, so quitting goes on.
_QUIT_WAIT_S = 2.0
# Signal.emit() with PySide6 6.12 on Python 3.11 returns a bool it holds no reference to; keeping the
# returned value balances the count (see jobs.py). One entry per ready model.
_EMITTED: list[bool] = []
SECTIONS = ("Installed", "Downloading", "Available")


def _ask(parent: QWidget, question: str) -> bool:
    answer = QMessageBox.question(parent, "Lantern", question)
    return answer == QMessageBox.StandardButton.Yes


class LibraryPage(QWidget):
    model_ready = Signal(str)

    def __init__(self, parent: QWidget | None = None, *, models_dir: Path | None = None, cache: Path | None = None,
                 endpoint: str | None = None, catalog: tuple[CatalogEntry, ...] = CATALOG,
                 confirm: Callable[[QWidget, str], bool] = _ask,
                 added_folders: Callable[[], list[Path]] = remembered_folders):
        super().__init__(parent)
        self.added_folders = added_folders
        self.user_models: set[Path] = set()   # found in folders the user added: listed, never deleted here
        self.models_dir = models_dir or converted_models_dir()
        remove_abandoned_staging(self.models_dir)
        self.cache, self.endpoint, self.catalog, self.confirm = cache or hf_cache_dir(), endpoint, catalog, confirm
        self.downloads: dict[str, DownloadJob] = {}
        self.conversion: ConvertJob | None = None
        self.installed: list[ModelEntry] = []
        self._build()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self._poll)
        self.timer.start(_POLL_MS)
        self.refresh()

    def _build(self) -> None:
        self.setWindowTitle("Model Library")
        for keys in (QKeySequence.StandardKey.Close, QKeySequence(Qt.Key.Key_Escape)):
            QShortcut(keys, self, self.close)
        self.tree = QTreeWidget(accessibleName="Models")
        self.tree.setHeaderLabels(["Model", "Details"])
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.itemSelectionChanged.connect(self._update_buttons)
        self.tree.itemActivated.connect(self.activate_selected)
        self.buttons = {name: QPushButton(name) for name in
                        ("Use", "Download", "Pause", "Cancel", "Convert to 4-bit", "Convert to 8-bit",
                         "Reveal in Finder", "Delete")}
        actions = {"Use": self.use_selected, "Download": self.download_selected, "Pause": self.pause_selected,
                   "Cancel": self.cancel_selected, "Convert to 4-bit": lambda: self.convert_selected(4),
                   "Convert to 8-bit": lambda: self.convert_selected(8), "Reveal in Finder": self.reveal_selected,
                   "Delete": self.delete_selected}
        row = QHBoxLayout()
        for name, button in self.buttons.items():
            button.clicked.connect(actions[name])
            row.addWidget(button)
        self.status = QLabel("")
        self.status.setAccessibleName("Library status")
        self.bar = QProgressBar(accessibleName="Download or conversion progress")
        self.bar.setRange(0, 1000)
        self.bar.hide()
        layout = QVBoxLayout(self)
        layout.addWidget(self.tree)
        layout.addLayout(row)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)

    # -- listing --

    def refresh(self) -> None:
        own = (scan_hf_cache(self.cache) + lm_studio_models()
               + (scan_folder(self.models_dir) if self.models_dir.is_dir() else []))
        known = {entry.path.resolve() for entry in own}
        added = []
        for entry in (entry for folder in self.added_folders() for entry in scan_folder(folder)):
            if entry.path.resolve() not in known:   # added folders can overlap each other and the app's own
                known.add(entry.path.resolve())
                added.append(entry)
        self.user_models = {entry.path.resolve() for entry in added}
        self.installed = own + added
        installed_repos = {entry.name for entry in self.installed}
        chosen = self.selected()
        self.tree.clear()
        sections = {name: QTreeWidgetItem([name]) for name in SECTIONS}
        for entry in self.installed:
            self._add(sections["Installed"], entry.label, str(entry.path), ("installed", str(entry.path)))
        best = recommend()
        for item in self.catalog:
            pending = partial_bytes(item.repo_id, self.cache)
            if item.repo_id in self.downloads or pending:
                state = "downloading" if item.repo_id in self.downloads else f"paused, {format_bytes(pending)} kept"
                self._add(sections["Downloading"], item.label, state, ("downloading", item.repo_id))
            elif item.repo_id not in installed_repos:
                mark = "Recommended · " if item == best else ""
                self._add(sections["Available"], f"{item.label} ({item.repo_id})", mark + describe(item),
                          ("available", item.repo_id))
        if not self.installed:
            sections["Installed"].addChild(QTreeWidgetItem(["None yet", "Download one below, or add a folder "
                                                                         "in the main window"]))
        for section in sections.values():
            self.tree.addTopLevelItem(section)
            section.setExpanded(True)
        if chosen is not None:
            with contextlib.suppress(KeyError):  # gone: deleted, or moved from Downloading to Installed
                self.select(chosen[1])
        self._update_buttons()

    @staticmethod
    def _add(section: QTreeWidgetItem, title: str, detail: str, key: tuple[str, str]) -> None:
        item = QTreeWidgetItem([title, detail])
        item.setData(0, _KEY, key)
        section.addChild(item)

    def _rows(self) -> Iterator[tuple[QTreeWidgetItem, tuple[str, str]]]:
        """Each listed model's row and its (kind, key); the "None yet" line has no key and is left out."""
        for index in range(self.tree.topLevelItemCount()):
            section = self.tree.topLevelItem(index)
            for row in (section.child(i) for i in range(section.childCount())):
                if row.data(0, _KEY):
                    yield row, row.data(0, _KEY)

    def items(self, kind: str) -> list[str]:
        """The keys (folder path or repo id) listed under one kind: installed, downloading, available."""
        return [key for _, (row_kind, key) in self._rows() if row_kind == kind]

    def select(self, key: str) -> None:
        row = next((row for row, (_, listed) in self._rows() if listed == key), None)
        if row is None:
            raise KeyError(key)
        self.tree.setCurrentItem(row)

    def selected(self) -> tuple[str, str] | None:
        item = self.tree.currentItem()
        return item.data(0, _KEY) if item is not None and item.data(0, _KEY) else None

    def _update_buttons(self) -> None:
        kind = (self.selected() or ("", ""))[0]
        converting = self._converting_selected()
        enabled = {"Use": kind == "installed", "Download": kind in ("available", "downloading"),
                   "Pause": kind == "downloading", "Cancel": kind == "downloading" or converting,
                   "Convert to 4-bit": self._convertible(), "Convert to 8-bit": self._convertible(),
                   "Reveal in Finder": kind == "installed",
                   "Delete": kind == "installed" and not converting and not self._user_model_selected()}
        for name, button in self.buttons.items():
            button.setEnabled(enabled[name])

    def _entry(self, path: str) -> ModelEntry | None:
        return next((entry for entry in self.installed if str(entry.path) == path), None)

    def _user_model_selected(self) -> bool:
        key = self.selected()
        return key is not None and Path(key[1]).resolve() in self.user_models

    def _converting_selected(self) -> bool:
        """Whether the selected model is the source of the conversion that is running."""
        key = self.selected()
        return self.conversion is not None and key is not None and key[1] == str(self.conversion.source)

    def _convertible(self) -> bool:
        key = self.selected()
        entry = self._entry(key[1]) if key and key[0] == "installed" else None
        return entry is not None and entry.quantization is None and self.conversion is None

    # -- actions --

    def activate_selected(self) -> None:
        """Return or a double click: use an installed model, download an available one."""
        key = self.selected()
        if key and key[0] == "installed":
            self.use_selected()
        elif key and key[0] == "available":
            self.download_selected()

    def use_selected(self) -> None:
        key = self.selected()
        if key and key[0] == "installed":
            self._ready(key[1])

    def download_selected(self) -> None:
        key = self.selected()
        if key and key[0] in ("available", "downloading") and key[1] not in self.downloads:
            self.start_download(key[1])

    def start_download(self, repo_id: str) -> DownloadJob:
        job = DownloadJob(HubDownload(repo_id, cache=self.cache, endpoint=self.endpoint))
        self.downloads[repo_id] = job
        job.start()
        self.refresh()
        return job

    def _poll(self) -> None:
        for repo_id, job in list(self.downloads.items()):
            if job.done():
                self._finished(repo_id, job.folder, job.error or "")
            elif job.progress is not None:
                self._show_download(job.progress)
        if self.conversion is not None:
            if self.conversion.done():
                self._converted(self.conversion.folder, self.conversion.error or "")
            elif self.conversion.progress is not None:
                self._show_conversion(self.conversion.progress)

    def _ready(self, folder: str) -> None:
        _EMITTED.append(self.model_ready.emit(folder))

    def _show_download(self, step) -> None:
        self.bar.show()
        self.bar.setValue(int(1000 * step.done / max(step.total, 1)))
        left = f", {step.seconds_left:.0f} s left" if step.seconds_left is not None else ""
        self.status.setText(f"{step.file}: {format_bytes(step.file_done)} of {format_bytes(step.file_total)} · "
                            f"{format_bytes(step.done)} of {format_bytes(step.total)} at "
                            f"{format_bytes(step.bytes_per_second)}/s{left}")

    def _finished(self, repo_id: str, folder: str | None, message: str = "") -> None:
        self.downloads.pop(repo_id, None)
        self.bar.hide()
        self.status.setText(message or f"{repo_id} is ready")
        self.refresh()
        if folder:
            self._ready(folder)

    def pause_selected(self) -> None:
        key = self.selected()
        if key and key[1] in self.downloads:
            self.downloads[key[1]].pause()

    def cancel_selected(self) -> None:
        key = self.selected()
        if self._converting_selected():
            self.conversion.cancel()
            self.status.setText("Cancelling the conversion…")
            return
        if not key or key[0] != "downloading":
            return
        if key[1] in self.downloads:
            self.downloads[key[1]].cancel()
        else:  # a download paused in an earlier session: drop what it fetched
            discard_unfinished(repo_folder(key[1], self.cache))
            self.refresh()

    def convert_selected(self, bits: int) -> ConvertJob | None:
        key = self.selected()
        entry = self._entry(key[1]) if key else None
        if entry is None or not self._convertible():
            return None
        out = self.models_dir / f"{entry.name.split('/')[-1]}-{bits}bit"
        self.conversion = ConvertJob(entry.path, out, bits)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        remove_abandoned_staging(self.models_dir)
        self.conversion.start()
        self._update_buttons()
        return self.conversion

    def _show_conversion(self, step) -> None:
        self.bar.show()
        self.bar.setValue(int(1000 * step.done_bytes / max(step.total_bytes, 1)))
        self.status.setText(f"Converting: {step.done_tensors} of {step.total_tensors} tensors")

    def _converted(self, folder: str | None, message: str = "") -> None:
        self.conversion = None
        self.bar.hide()
        self.status.setText(message or f"Converted into {folder}")
        self.refresh()
        if folder:
            self._ready(folder)

    def reveal_selected(self) -> None:
        key = self.selected()
        if key and key[0] == "installed":
            QDesktopServices.openUrl(QUrl.fromLocalFile(key[1]))

    def delete_selected(self) -> None:
        key = self.selected()
        entry = self._entry(key[1]) if key and key[0] == "installed" else None
        if entry is None or self._user_model_selected():
            return
        target = self._deletable_folder(entry)
        if not self.confirm(self, f"Delete {entry.name} ({format_bytes(entry.size_bytes)}) from {target}?"):
            return
        shutil.rmtree(target)
        self.status.setText(f"Deleted {entry.name}")
        self.refresh()

    def _deletable_folder(self, entry: ModelEntry) -> Path:
        """A hub-cache model goes with its whole repository folder (blobs included); others just the folder."""
        path = entry.path.resolve()
        cache = self.cache.resolve()
        if path.is_relative_to(cache):
            return cache / path.relative_to(cache).parts[0]
        return entry.path

    def shutdown(self) -> None:
        """Pause running downloads (their partial files are kept) and stop a conversion before the app quits."""
        self.timer.stop()
        jobs = list(self.downloads.values())
        for job in jobs:
            job.pause()
        deadline = time.monotonic() + _QUIT_WAIT_S
        for job in jobs:
            job.wait(max(0.0, deadline - time.monotonic()))
        self.downloads.clear()
        if self.conversion is not None:
            self.conversion.cancel()
            self.conversion.wait()
            self.conversion = None


def open_library(parent: QWidget | None = None, **options) -> LibraryPage:
    """The library page; connect `model_ready(str)` to load the model at that folder."""
    return LibraryPage(parent, **options)
