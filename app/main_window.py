"""The main window: sidebar, conversation, input box and model picker, wired to the engine thread."""

from __future__ import annotations

import math
import sqlite3
import sys
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, QUrl
from PySide6.QtGui import (QAccessible, QAccessibleAnnouncementEvent, QDesktopServices, QGuiApplication, QKeySequence,
                           QShortcut)
from PySide6.QtWidgets import (QApplication, QCheckBox, QFileDialog, QHBoxLayout, QInputDialog, QLabel, QLineEdit,
                               QMainWindow, QMessageBox, QProgressBar, QPushButton, QSplitter, QVBoxLayout, QWidget)

from .context_meter import ContextMeter, Usage
from .conversation import Conversation
from .engine_host import EngineHost
from .export import export_json, export_markdown
from .load_marker import LoadMarker
from .media.composer import MediaComposer, discard_staged
from .media.recorder import DENIED, DICTATION_PROMPT, PRIVACY_SETTINGS_URL
from .menus import build_menus
from .models import (ModelEntry, check_memory, describe_inputs, discover, folder_problem, forget_folder,
                     picker_labels, remember_folder, remembered_folders, scan_folder)
from .settings_dialog import ChatSettingsDialog, PresetsDialog, chat_options
from .storage import Library, change_or_report
from .widgets import (INTERRUPTED, ChatInput, ConversationView, MessageState, MessageWidget, ModelPicker, NoticeBar,
                      Sidebar)

RENDER_INTERVAL_MS = 33   # re-render the streaming reply at most ~30 times a second
# The media a turn carries, by the model input each needs: the key in a turn, and a word for one of them.
MEDIA_KEYS = {"image": "images", "audio": "audio"}
MEDIA_WORDS = {"image": "image", "audio": "audio clip"}
SAVE_INTERVAL_MS = 1000   # a crash of the window loses at most this much of a reply being written
NO_MODEL_YET = ("No model yet: download one in the Model Library (⇧⌘L), or use Add folder… for a model "
                "already on this Mac.")
COUNT_DELAY_MS = 300
DICTATION_MAX_TOKENS = 512


@dataclass
class PendingTurn:
    """A reply being generated: where it will be stored and what has streamed so far."""
    turn_id: int
    conversation_id: int
    user_id: int
    text: str = ""
    thinking: str = ""
    dirty: bool = False          # not yet rendered
    unsaved: bool = False        # not yet written to the library
    message_id: int | None = None   # the stored (partial) answer, once written
    save_failed: bool = False       # the user has been told that writing it failed

    def add(self, kind: str, text: str) -> None:
        if kind == "thinking":
            self.thinking += text
        else:
            self.text += text
        self.dirty = self.unsaved = True

    @property
    def wrote_nothing(self) -> bool:
        """Nothing streamed, and so nothing stored: there is no answer to keep."""
        return self.message_id is None and not (self.text or self.thinking)


@dataclass
class Dictation:
    """A side turn transcribing a recording; its text goes into the input box, never the history."""
    turn_id: int
    clip: str   # the staged recording, removed once written down
    text: str = ""


def _allowed_text_points(points: float) -> float:
    """`points` within 4 below and 16 above the system's text size; the system's size for a non-number."""
    standard = QApplication.font().pointSizeF()
    return min(max(points, standard - 4), standard + 16) if math.isfinite(points) else standard


class MainWindow(QMainWindow):
    def __init__(self, library: Library, host: EngineHost | None = None, model_folders: list[Path] | None = None,
                 options: dict | None = None, ram_bytes: int | None = None):
        super().__init__()
        self.setWindowTitle("Lantern")
        self.library = library
        self.owns_host = host is None
        self.host = host or EngineHost(self)
        self.host.start()   # the process starts while the window builds
        self.options = dict(options or {})   # over every preset: the command line's and tests' choices
        self.ram_bytes = ram_bytes
        self.model_folders = list(model_folders or [])
        self.conversation: Conversation | None = None
        self.pending: PendingTurn | None = None
        self.draft_before_edit = ""   # the box's text when editing a message began, given back after
        self.dictation: Dictation | None = None
        self.streaming_bubble: MessageWidget | None = None
        self.editing_id: int | None = None
        self.last_deleted: int | None = None
        self.model_loaded = False
        self.last_good_folder: Path | None = None   # the model loaded last: offered again when another fails
        self.missing_folders_noted: set[Path] = set()
        self.model_info: dict | None = None
        self.loading_model = False
        self.shut_down = False
        self.load_marker = LoadMarker(library.folder)
        self._build()
        self.media.controls.no_model()
        self._connect_engine()
        self.render_timer = QTimer(self, interval=RENDER_INTERVAL_MS)
        self.render_timer.timeout.connect(self._render_stream)
        self.save_timer = QTimer(self, interval=SAVE_INTERVAL_MS)
        self.save_timer.timeout.connect(self._save_partial)
        # Counting waits for a pause in typing; the engine answers asynchronously.
        self.count_timer = QTimer(self, singleShot=True, interval=COUNT_DELAY_MS)
        self.count_timer.timeout.connect(self._request_count)
        self.input.textChanged.connect(self.count_timer.start)
        self.media.attachments.listeners.append(self.count_timer.start)
        self._count_request = 0
        self._count_draft: tuple | None = None    # the draft the last count was asked for
        self.counted_draft: tuple | None = None   # the draft the meter's figures are for
        self.refresh_models()
        self.refresh_sidebar()
        self._restore_geometry()
        self._apply_text_size(self._saved_text_points())
        if self.host.info is not None:   # a host shared with another window may have a model already
            self._on_loaded(self.host.info)
        QTimer.singleShot(0, self.input.setFocus)   # once shown: typing goes to the message, not the search

    # -- layout ------------------------------------------------------------------------------------

    def _build(self) -> None:
        self.sidebar = Sidebar()
        self.view = ConversationView()
        self.input = ChatInput()
        self.input.setAccessibleName("Message")
        self.input.setPlaceholderText("Message Gemma (Enter sends, Shift+Enter for a new line)")
        self.media = MediaComposer(self)
        self.notice_bar = NoticeBar()
        self.send_button = QPushButton("Send", accessibleName="Send message")
        self.stop_button = QPushButton("Stop", accessibleName="Stop generating", enabled=False)
        self.thinking_box = QCheckBox("Thinking", accessibleName="Thinking mode for this chat")
        self.model_picker = ModelPicker(accessibleName="Model")
        self.add_folder_button = QPushButton("Add folder…", accessibleName="Add a model folder")
        self.library_button = QPushButton("Model Library…", accessibleName="Open the Model Library")
        self.load_button = QPushButton("Load", accessibleName="Load the selected model")
        self.model_status = QLabel("No model loaded")
        self.model_status.setWordWrap(True)
        self.model_status.setAccessibleName("Model status")
        self.load_progress = QProgressBar(accessibleName="Loading progress", visible=False, textVisible=False)
        self.cancel_load_button = QPushButton("Cancel", accessibleName="Cancel loading", visible=False)
        self.restart_button = QPushButton("Restart engine", accessibleName="Restart the engine", visible=False)
        self.other_model_button = QPushButton("Choose another model…", accessibleName="Choose another model",
                                              visible=False)
        self.find_bar = QWidget(visible=False)
        self.find_box = QLineEdit(placeholderText="Find in this chat", accessibleName="Find in this chat")
        self.find_status = QLabel()
        self.find_done_button = QPushButton("Done", accessibleName="Close the find bar")
        self.find_index = 0
        self.edit_bar = QWidget(visible=False)
        self.edit_label = QLabel()
        self.edit_label.setWordWrap(True)
        self.cancel_edit_button = QPushButton("Cancel Editing", accessibleName="Cancel editing the message")

        top = QHBoxLayout()
        for widget in (self.model_picker, self.load_button, self.add_folder_button, self.library_button,
                       self.thinking_box):
            top.addWidget(widget)
        top.setStretch(0, 1)
        bottom = QHBoxLayout()
        bottom.addWidget(self.input, 1)
        for widget in (self.media.controls, self.send_button, self.stop_button):
            bottom.addWidget(widget)
        self.input.setMaximumHeight(120)
        right = QWidget()
        column = QVBoxLayout(right)
        column.addLayout(top)
        status_row = QHBoxLayout()
        status_row.addWidget(self.model_status, 1)
        for widget in (self.load_progress, self.cancel_load_button, self.restart_button, self.other_model_button):
            status_row.addWidget(widget)
        column.addLayout(status_row)
        find_row = QHBoxLayout(self.find_bar)
        find_row.setContentsMargins(0, 0, 0, 0)
        for widget, stretch in ((self.find_box, 1), (self.find_status, 0), (self.find_done_button, 0)):
            find_row.addWidget(widget, stretch)
        column.addWidget(self.find_bar)
        column.addWidget(self.view, 1)
        column.addWidget(self.notice_bar)
        column.addWidget(self.media.tray)
        edit_row = QHBoxLayout(self.edit_bar)
        edit_row.setContentsMargins(0, 0, 0, 0)
        edit_row.addWidget(self.edit_label, 1)
        edit_row.addWidget(self.cancel_edit_button)
        column.addWidget(self.edit_bar)
        self.context_meter = ContextMeter()
        column.addWidget(self.context_meter)
        column.addLayout(bottom)
        splitter = QSplitter()
        splitter.addWidget(self.sidebar)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        self.setCentralWidget(splitter)
        self._wire_widgets()
        self.model_library = None
        self._build_menus()

    def _wire_widgets(self) -> None:
        self.view.regenerate.connect(self.regenerate)
        self.view.edit.connect(self.begin_edit)
        self.view.copy.connect(self.copy_text)
        self.view.switch_variant.connect(self.switch_variant)
        self.input.submitted.connect(self.send)
        self.input.edit_last.connect(self.edit_last_message)
        self.media.install(self, self.input, self.view)
        if sys.platform == "darwin":   # files opened with the app arrive only there; elsewhere the filter only costs
            self.media.drop.install_file_open(QGuiApplication.instance())
        self.media.drop.error.connect(self.notice_bar.add)
        self.media.drop.reading.connect(self._show_reading)
        self.media.recorder.failed.connect(self._recording_failed)
        self.media.recorded.connect(lambda: self.send(self.input.toPlainText().strip() or "Listen to this."))
        self.media.dictated.connect(self.dictate)
        self.send_button.clicked.connect(lambda: self.input.submitted.emit(self.input.toPlainText().strip()))
        self.stop_button.clicked.connect(self.stop)
        self.thinking_box.toggled.connect(self._set_thinking)
        self.load_button.clicked.connect(self.load_selected_model)
        self.add_folder_button.clicked.connect(self._ask_for_folder)
        self.library_button.clicked.connect(self.open_model_library)
        self.model_picker.opening.connect(self.refresh_models)
        self.cancel_load_button.clicked.connect(self.cancel_load)
        self.restart_button.clicked.connect(self.restart_engine)
        self.other_model_button.clicked.connect(self.model_picker.showPopup)
        self.sidebar.new_chat.connect(self.new_chat)
        self.sidebar.selected.connect(self.open_conversation)
        self.sidebar.chosen.connect(self.input.setFocus)
        self.sidebar.hit_selected.connect(self.open_search_hit)
        self.sidebar.rename.connect(self._rename)
        self.sidebar.delete.connect(self.delete_conversation)
        self.sidebar.undo_delete.connect(self.undo_delete)
        self.sidebar.toggle_pin.connect(self._toggle_pin)
        self.sidebar.search.connect(self.search)
        self.cancel_edit_button.clicked.connect(self.cancel_edit)
        # From the newest match, nearest where a chat is read: older bubbles are built only when reached.
        self.find_box.textChanged.connect(lambda _text: self._find(-1))
        self.find_box.returnPressed.connect(self.find_next)
        self.find_done_button.clicked.connect(self.close_find)
        # Ctrl+. (⌘.) belongs to the Stop menu action; a second shortcut on the same keys would make both ambiguous.
        QShortcut(QKeySequence("Escape"), self, activated=self.escape)

    def _build_menus(self) -> None:
        self.actions_by_name = build_menus(self)

    # -- menu commands -----------------------------------------------------------------------------

    def edit_focused(self, command: str) -> None:
        """An Edit menu command ("copy", "paste", ...) on the focused text widget. Paste into the message
        box attaches clipboard media first, as the Paste key does."""
        focused = QApplication.focusWidget()
        if command == "paste" and focused in (self.input, None) and self.media.drop.paste():
            return
        method = getattr(focused, command, None)
        if callable(method):
            method()

    def open_find(self) -> None:
        self.find_bar.setVisible(True)
        self.find_box.setFocus()
        self.find_box.selectAll()
        self._find(-1)

    def find_next(self, step: int = 1) -> None:
        """The next (step 1) or previous (-1) bubble holding the find bar's text, wrapping around."""
        if not self.find_bar.isVisible():
            self.open_find()
        else:
            self._find(self.find_index + step)

    def close_find(self) -> None:
        self.find_bar.setVisible(False)
        self.view.show_bubble(None)
        self.input.setFocus()

    def _find(self, index: int) -> None:
        text = self.find_box.text()
        found = self.view.states_containing(text)
        if not found:
            self.find_status.setText("Not found" if text else "")
            self.view.show_bubble(None)
            return
        self.find_index = index % len(found)
        self.view.show_found(found[self.find_index])
        self.find_status.setText(f"{self.find_index + 1} of {len(found)}")

    def toggle_sidebar(self) -> None:
        self.sidebar.setVisible(not self.sidebar.isVisible())

    def change_text_size(self, step: int) -> None:
        """One point bigger (+1) or smaller (-1) in the conversation and the message box; 0: the system size."""
        size = _allowed_text_points(self.text_points + step if step else math.nan)
        QSettings().setValue("view/text_points", size)
        self._apply_text_size(size)

    @staticmethod
    def _saved_text_points() -> float:
        """The text size chosen last time; the system's when none was, or the settings file is damaged."""
        try:
            return _allowed_text_points(float(QSettings().value("view/text_points", math.nan)))
        except (TypeError, ValueError):
            return _allowed_text_points(math.nan)

    def _apply_text_size(self, points: float) -> None:
        self.text_points = points
        for widget in (self.view, self.input):
            font = widget.font()
            font.setPointSizeF(points)
            widget.setFont(font)

    def toggle_full_screen(self) -> None:
        self.showNormal() if self.isFullScreen() else self.showFullScreen()

    def toggle_zoom(self) -> None:
        self.showNormal() if self.isMaximized() else self.showMaximized()

    def edit_last_message(self) -> None:
        mine = [message for message in (self.conversation.path if self.conversation else []) if message.role == "user"]
        if mine and self.pending is None:
            self.begin_edit(mine[-1].id)

    def confirm(self, question: str) -> bool:
        """A yes/no question to the user (tests replace it)."""
        return QMessageBox.question(self, "Lantern", question) == QMessageBox.StandardButton.Yes

    def focus_search(self) -> None:
        self.sidebar.search_box.setFocus()
        self.sidebar.search_box.selectAll()

    def step_chat(self, step: int) -> None:
        """The chat `step` places down (or up) the sidebar's list, ready to write in."""
        chats = self.sidebar.list
        row = chats.currentRow() + step
        if 0 <= row < chats.count():
            chats.setCurrentRow(row)
            self.input.setFocus()

    def regenerate_last(self) -> None:
        """Regenerate the last answer, or answer the last message again when its turn failed unanswered."""
        path = self.conversation.path if self.conversation else []
        if not path:
            return
        if path[-1].role == "assistant":
            self.regenerate(path[-1].id)
        else:
            self._answer_again(path[-1].id)

    def open_settings(self) -> PresetsDialog:
        dialog = PresetsDialog(self.library, self)
        dialog.finished.connect(lambda _result: self._sync_chat_controls())
        dialog.open()
        return dialog

    def open_chat_settings(self) -> ChatSettingsDialog | None:
        if self.conversation is None:
            self.new_chat()
        if self.conversation is None:   # the history cannot be written: no chat to set
            return None
        dialog = ChatSettingsDialog(self.library, self.conversation.settings, self)
        dialog.accepted.connect(lambda: self.set_chat_settings(dialog.chat_settings()))
        dialog.open()
        return dialog

    def set_chat_settings(self, chosen: dict) -> None:
        """A chat's preset and overrides; the thinking toggle follows them."""
        settings = {key: value for key, value in self.conversation.settings.items() if key != "thinking"}
        with self._history_change():
            self.library.set_settings(self.conversation.id, {**settings, **chosen})
        self._sync_chat_controls()

    def _sync_chat_controls(self) -> None:
        """The thinking box and the context meter after the chat or its settings changed."""
        if self.conversation is not None:
            self.thinking_box.blockSignals(True)
            self.thinking_box.setChecked(bool(self.chat_options().get("thinking", False)))
            self.thinking_box.blockSignals(False)
        self.count_timer.start()   # a system prompt changes the count

    def chat_options(self) -> dict:
        """What the next turn of this chat uses: preset, the window's own options, the chat's overrides
        and its thinking toggle."""
        settings = self.conversation.settings if self.conversation else {}
        return chat_options(self.library, settings, self.options)

    def _choose_folder(self, title: str) -> Path | None:
        folder = QFileDialog.getExistingDirectory(self, title)
        return Path(folder) if folder else None

    def export_chat_markdown(self, folder: Path | None = None) -> Path | None:
        return self._export(export_markdown, folder)

    def export_chat_json(self, folder: Path | None = None) -> Path | None:
        return self._export(export_json, folder)

    def _export(self, writer, folder: Path | None) -> Path | None:
        if self.conversation is None:
            self.statusBar().showMessage("Open a chat to export it.", 8000)
            return None
        folder = folder or self._choose_folder("Export the chat to…")
        if folder is None:
            return None
        try:
            target = writer(self.library, self.conversation.id, folder)
        except OSError as exc:   # a full disk, a read-only folder, a name the file system refuses
            self.notice_bar.add(f"The chat could not be exported to {folder}: {exc.strerror or exc}")
            return None
        self.statusBar().showMessage(f"Exported to {target}", 8000)
        return target

    def backup_library(self, folder: Path | None = None) -> Path | None:
        folder = folder or self._choose_folder("Back up the whole library to…")
        if folder is None:
            return None
        try:
            target = self.library.backup(folder)
        except (OSError, sqlite3.Error) as exc:
            self.notice_bar.add(f"The library could not be backed up to {folder}: {exc}")
            return None
        self.statusBar().showMessage(f"Library backed up to {target.parent}", 8000)
        return target

    def show_about(self) -> None:
        QMessageBox.about(self, "About Lantern", "Lantern: private, offline Gemma 4 on your Mac.\n"
                          "Nothing you type, attach or receive leaves this computer.")

    def show_notice(self, text: str) -> None:
        """A message from Lantern itself (not the model), shown in the chat area and the status bar."""
        self.render_conversation(MessageState(None, "notice", "", error=text))
        self.statusBar().showMessage(text, 15000)

    def announce(self, text: str) -> None:
        """Tell VoiceOver (or any screen reader) without moving the focus."""
        self.statusBar().showMessage(text, 5000)
        self.view.setAccessibleDescription(text)
        QAccessible.updateAccessibility(QAccessibleAnnouncementEvent(self.view, text))

    def _engine_links(self) -> list[tuple]:
        host = self.host
        return [(host.loading, self._on_loading), (host.loaded, self._on_loaded),
                (host.load_failed, self._on_load_failed), (host.load_cancelled, self._on_load_cancelled),
                (host.event, self._on_event),
                (host.turn_finished, self._on_finished), (host.turn_failed, self._on_failed),
                (host.died, self._on_engine_died), (host.counted, self._on_counted)]

    def _connect_engine(self) -> None:
        for signal, slot in self._engine_links():
            signal.connect(slot)

    # -- models ------------------------------------------------------------------------------------

    def refresh_models(self) -> None:
        """List the models on disk now; the picked one stays picked while it is listed, so Load loads it."""
        picked = self.model_picker.currentData()
        added = remembered_folders()
        self.models: list[ModelEntry] = discover(self.model_folders + added)
        self.model_picker.clear()
        for entry, label in zip(self.models, picker_labels(self.models)):
            self.model_picker.addItem(label, str(entry.path))
            self.model_picker.setItemData(self.model_picker.count() - 1, str(entry.path), Qt.ItemDataRole.ToolTipRole)
        if picked is not None:
            self.select_model(Path(picked))
        self.load_button.setEnabled(bool(self.models))
        if not self.models and not (self.model_loaded or self.loading_model):
            self.model_status.setText(NO_MODEL_YET)
        self._note_missing_folders(added)

    def _note_missing_folders(self, added: list[Path]) -> None:
        """Say once per session that an added folder is not there (an unplugged drive): its models are not listed."""
        for folder in added:
            if not folder.is_dir() and folder not in self.missing_folders_noted:
                self.missing_folders_noted.add(folder)
                self.notice_bar.add(f"The folder {folder} is not there now (moved, or on a drive that is not "
                                    "connected), so its models are not listed. File → Remove Added Folder… stops "
                                    "looking for it.")

    def add_model_folder(self, folder: Path) -> None:
        """Remember a folder of models across restarts and pick its first model; a folder without any is
        only reported, so it is not scanned again at every start."""
        found = scan_folder(Path(folder))
        if not found:
            problem = folder_problem(Path(folder)) if (Path(folder) / "config.json").exists() else None
            self.notice_bar.add(f"Found a model, but {problem}." if problem else
                                f"No Gemma 4 models found in {folder}")
            return
        remember_folder(Path(folder))
        self._folders_changed()
        self.select_model(found[0].path)

    def open_model_library(self):
        """The page that lists, downloads, converts and deletes models; a ready model is loaded here."""
        from .library.page import open_library

        if self.model_library is None:
            self.model_library = open_library(None)
            self.model_library.model_ready.connect(self.use_library_model)
        self.model_library.show()
        self.model_library.raise_()
        return self.model_library

    def use_library_model(self, folder: str) -> None:
        path = Path(folder)
        if not self.select_model(path):
            self.add_model_folder(path)
            self.select_model(path)
        self.load_selected_model()

    def _folders_changed(self) -> None:
        """The picker and an open Model Library list the added folders' models as they are now."""
        self.refresh_models()
        if self.model_library is not None:
            self.model_library.refresh()

    def ask_folder_to_forget(self) -> None:
        folders = [str(folder) for folder in remembered_folders()]
        if not folders:
            self.statusBar().showMessage("No folders were added with Add folder….", 8000)
            return
        folder, chosen = QInputDialog.getItem(self, "Remove Added Folder",
                                              "Stop listing the models in (nothing is deleted):", folders, 0, False)
        if chosen:
            self.forget_model_folder(Path(folder))

    def forget_model_folder(self, folder: Path) -> None:
        forget_folder(folder)
        self._folders_changed()
        self.statusBar().showMessage(f"No longer listing the models in {folder}.", 8000)

    def _ask_for_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder with Gemma 4 models")
        if folder:
            self.add_model_folder(Path(folder))

    def select_model(self, folder: Path) -> bool:
        """Pick the listed model in `folder`, however the path to it is spelled (symlinks included)."""
        wanted = Path(folder).resolve()
        index = next((i for i, entry in enumerate(self.models) if entry.path.resolve() == wanted), -1)
        if index >= 0:
            self.model_picker.setCurrentIndex(index)
        return index >= 0

    def load_selected_model(self) -> bool:
        """Load the picked model if it fits in memory; otherwise say why and what to try instead."""
        index = self.model_picker.currentIndex()
        if index < 0:
            self.model_status.setText(NO_MODEL_YET)
            return False
        entry = self.models[index]
        problem = folder_problem(entry.path)   # checked before the engine lets go of the model it has
        if problem:
            kept = f" {Path(self.model_info['folder']).name} is still loaded." if self.model_loaded else ""
            self.refresh_models()
            self.model_status.setText(f"Not loaded: {problem}.{kept}")
            return False
        verdict = check_memory(entry, ram_bytes=self.ram_bytes)
        if not verdict.fits:
            self.model_status.setText(f"Not loaded: {verdict.message}")
            return False
        # The engine loads after the turn it is running: stopped now, or the load would wait for the whole reply.
        if self.pending is not None and not self.confirm(
                f"Gemma is still writing a reply. Stop it and load {entry.name}? What it wrote so far is kept."):
            return False
        self.stop()
        self.model_loaded = False
        self._show_engine_problem(False)
        self._begin_load(entry.path)
        self.host.load(entry.path)
        return True

    def auto_load(self) -> bool:
        """Load the selected model at start, unless loading that model is what crashed last time."""
        crashed = self.load_marker.crashed_model()
        index = self.model_picker.currentIndex()
        if crashed is not None and index >= 0 and Path(self.models[index].path) == crashed:
            self.show_notice(f"Lantern stopped while loading {crashed.name} last time, so it was not loaded "
                             "again by itself. Load it with the Load button, or choose a smaller model or a "
                             "4-bit copy.")
            return False
        return self.load_selected_model()

    def _begin_load(self, folder: Path) -> None:
        self.loading_model = True
        self.media.controls.no_model()   # the engine lets go of the model it had
        self.load_marker.begin(Path(folder))
        self._on_loading("Starting the engine…", 0.0)

    def _end_load(self) -> None:
        self.loading_model = False
        self.load_marker.end()

    def cancel_load(self) -> None:
        """The engine stops between two weight reads; `load_cancelled` confirms."""
        self.host.cancel_load()
        self.model_status.setText("Cancelling…")
        self.cancel_load_button.setEnabled(False)

    def _on_load_cancelled(self) -> None:
        self._end_load()
        self.model_loaded = False   # the engine let go of the model it had when this load began
        self.media.controls.no_model()
        self._loading_done("Loading cancelled; no model is loaded." + self._offer_previous_model())

    def restart_engine(self) -> None:
        self._show_engine_problem(False)
        self.model_loaded = False
        if self.host.folder is not None:
            self._begin_load(Path(self.host.folder))
        self.host.restart()

    def _on_loading(self, text: str, fraction: float) -> None:
        percent = round(100 * fraction)
        self.model_status.setText(f"{text} {percent}%")
        self.load_progress.setRange(0, 100)
        self.load_progress.setValue(percent)
        self.load_progress.setVisible(True)
        self.cancel_load_button.setVisible(True)
        self.cancel_load_button.setEnabled(True)

    def _loading_done(self, text: str) -> None:
        self.model_status.setText(text)
        self.load_progress.setVisible(False)
        self.cancel_load_button.setVisible(False)

    def _on_loaded(self, info: dict) -> None:
        self._end_load()
        self.model_loaded = True
        self.model_info = info
        self.last_good_folder = Path(info["folder"])
        for note in self.media.set_model(info["modalities"], info["variant"]):
            self.notice_bar.add(note)
        self.count_timer.start()
        inputs = describe_inputs(info["modalities"])
        self._loading_done(f"Ready: {Path(info['folder']).name} ({info['variant']}; {inputs}), "
                           f"context {info['context_length']} tokens")

    def _on_load_failed(self, message: str) -> None:
        self._end_load()
        self.model_loaded = False
        self.media.controls.no_model()
        message += self._offer_previous_model()
        self._loading_done(f"Could not load the model: {message}")
        self.render_conversation(MessageState(None, "notice", "", error=f"Could not load the model: {message}"))

    def _offer_previous_model(self) -> str:
        """Select again the model loaded before the last load, if another; the words that say so."""
        previous = self.last_good_folder
        tried = Path(self.host.folder) if self.host.folder else None
        if previous is not None and previous != tried and self.select_model(previous):
            return f" {previous.name}, loaded before, is selected again: press Load to go back to it."
        return ""

    def _show_engine_problem(self, shown: bool) -> None:
        self.restart_button.setVisible(shown)
        self.other_model_button.setVisible(shown)

    def _on_engine_died(self, message: str) -> None:
        """Keep what was written so far, say what happened, offer a restart or another model. A death
        while loading leaves the load marker: that model is not loaded again by itself at the next start."""
        self.model_loaded = self.loading_model = False
        self.media.controls.no_model()
        self._loading_done(message)
        self._show_engine_problem(True)
        self.dictation = None
        if self.pending is not None:
            pending, self.pending = self.pending, None
            self._set_busy(False)
            self._store_answer(pending, {"stop_reason": "engine stopped", "error": message})
            if self.conversation is not None:
                self.conversation.reload()
        self.render_conversation()
        self.statusBar().showMessage(message, 15000)

    # -- conversations -----------------------------------------------------------------------------

    def refresh_sidebar(self) -> None:
        if self.sidebar.search_box.text().strip():
            self.search(self.sidebar.search_box.text())
            return
        current = self.conversation.id if self.conversation else None
        self.sidebar.show_conversations(self.library.conversations(), current)

    def new_chat(self) -> None:
        """Open a new chat, or stay in the current one while nothing has been said in it yet."""
        if self.conversation is None or self.conversation.path:
            with self._history_change():
                self.open_conversation(self.library.create_conversation())
                self.refresh_sidebar()
        self.input.setFocus()

    def open_conversation(self, conversation_id: int) -> None:
        self._leave_editing()
        self.conversation = Conversation(self.library, conversation_id)
        self._sync_chat_controls()
        self.render_conversation()

    def open_search_hit(self, conversation_id: int, message_id: int) -> None:
        """Open the chat on the branch that holds the matching message, scrolled to it and marked."""
        self.open_conversation(conversation_id)
        pending = self.pending
        if pending is not None and pending.conversation_id == conversation_id:
            # The branch being answered stays active: a match on another one waits for the reply to end.
            if message_id not in {m.id for m in self.conversation.tree.path_to(pending.user_id)}:
                self.notice_bar.add("That match is on another branch of this chat, which Gemma is still "
                                    "answering: open it again once the reply is done.")
                return
        else:
            with self._history_change():
                self.conversation.select_leaf(self.conversation.tree.newest_leaf_under(message_id))
                self.render_conversation()
        self.view.show_message(message_id)

    def _rename(self, conversation_id: int, title: str) -> None:
        with self._history_change():
            self.library.rename(conversation_id, title)
            self.refresh_sidebar()

    def _toggle_pin(self, conversation_id: int) -> None:
        with self._history_change():
            self.library.set_pinned(conversation_id, not self.library.conversation(conversation_id).pinned)
            self.refresh_sidebar()

    def _history_change(self) -> AbstractContextManager[None]:
        """A change to the history; when it cannot be written, the user is told and the sidebar shows the
        history as it is."""
        return change_or_report(self._not_written)

    def _not_written(self, reason: str) -> None:
        self.notice_bar.add(reason)
        self.refresh_sidebar()

    def delete_conversation(self, conversation_id: int) -> None:
        if self.pending is not None and self.pending.conversation_id == conversation_id:
            self.stop()   # what it wrote so far is stored with the chat, which Undo brings back
        with self._history_change():
            self.library.delete(conversation_id)
            self.last_deleted = conversation_id
            if self.conversation and self.conversation.id == conversation_id:
                self.conversation = None
                self.render_conversation()   # drops the streaming bubble too
            self.sidebar.undo_button.setVisible(True)
            self.refresh_sidebar()

    def undo_delete(self) -> None:
        if self.last_deleted is not None:
            with self._history_change():
                self.library.restore(self.last_deleted)
                self.open_conversation(self.last_deleted)
                self.last_deleted = None
        self.sidebar.undo_button.setVisible(False)
        self.refresh_sidebar()

    def search(self, text: str) -> None:
        if text.strip():
            self.sidebar.show_hits(self.library.search(text))
        else:
            self.sidebar.show_conversations(self.library.conversations(),
                                            self.conversation.id if self.conversation else None)

    def _set_thinking(self, enabled: bool) -> None:
        if self.conversation is None:
            self.new_chat()   # which shows the new chat's preset in the box: the click must win
        if self.conversation is not None:
            with self._history_change():
                self.conversation.update_settings(thinking=enabled)
        self._sync_chat_controls()

    # -- rendering ---------------------------------------------------------------------------------

    def render_conversation(self, trailing: MessageState | None = None, keep_place: bool = False) -> None:
        """Rebuild the bubbles of the active branch (only on structural changes, never per token);
        `trailing` is an extra bubble after it, such as a failed reply; `keep_place` keeps the view where the
        user reads (a reply that ended) instead of going to the end."""
        states = []
        streaming = self.conversation is not None and self.pending is not None and \
            self.pending.conversation_id == self.conversation.id
        if self.conversation is not None:
            tree = self.conversation.tree
            # While a reply streams, show the branch it answers (a regenerated answer may be an earlier
            # one); its saved partial copy is left out, the streaming bubble below shows it.
            shown = tree.path_to(self.pending.user_id) if streaming else self.conversation.path
            for message in shown:
                variant = tree.variant(message.id)
                states.append(MessageState(message.id, message.role, message.content, message.thinking,
                                           message.stats, (variant.position, variant.count),
                                           error=message.stats.get("error", ""),
                                           attachments=self.library.attachments(message.id)))
        streaming_state = MessageState(None, "assistant", self.pending.text, self.pending.thinking) \
            if streaming else None
        states += [state for state in (streaming_state, trailing) if state is not None]
        self.view.show_messages(states, keep_place)
        self.streaming_bubble = self.view.bubble_showing(streaming_state) if streaming else None
        self.count_timer.start()

    # -- context meter -----------------------------------------------------------------------------

    def _draft_history(self) -> list[dict]:
        """The branch the draft would follow: the whole active branch, or what precedes the message
        being edited (the draft replaces it)."""
        if self.conversation is None:
            return []
        turns = self.conversation.turns_before(self.editing_id) if self.editing_id is not None \
            else self.conversation.branch_turns()
        return self._media_the_model_takes(turns)

    def _media_the_model_takes(self, turns: list[dict], say_so: bool = False) -> list[dict]:
        """`turns` without the images or audio the loaded model has no input for: a chat begun with E4B's
        audio goes on with the 31B, which leaves its voice messages out (and, with `say_so`, says so)."""
        modalities = set(self.model_info["modalities"]) if self.model_info else set()
        missing = {kind: key for kind, key in MEDIA_KEYS.items() if kind not in modalities}
        counts = {kind: sum(len(turn[key]) for turn in turns) for kind, key in missing.items()}
        if say_so and any(counts.values()):
            words = " and ".join(f"{count} {MEDIA_WORDS[kind]}{'s' * (count != 1)}"
                                 for kind, count in counts.items() if count)
            self.notice_bar.add(f"Left out of this turn: {words} from this chat, which "
                                f"{Path(self.model_info['folder']).name} cannot take in.")
        return [{**turn, **{key: [] for key in missing.values()}} for turn in turns]

    def _request_count(self) -> None:
        """Ask the engine for the exact size of the prompt that sending the draft would build: system
        prompt, branch, text, and each attached image at its own budget and each audio clip."""
        if not self.model_loaded:
            return
        images, audio = self.media.draft_files(self.library.staging_dir)
        self._count_draft = self._draft_key()
        self._count_request = self.host.count_tokens(self.conversation.id if self.conversation else None,
                                                     self._draft_history(), self.input.toPlainText(),
                                                     self.chat_options(), images, audio)

    def _draft_key(self) -> tuple:
        """What the count of a draft depends on (besides the chat's settings, which reset the meter)."""
        items = tuple((id(item), getattr(item, "budget", None)) for item in self.media.attachments.items)
        chat = self.conversation.id if self.conversation else None
        return self.input.toPlainText(), items, self.editing_id, chat

    def _on_counted(self, request: int, counts: dict | None) -> None:
        if request != self._count_request or counts is None or self.model_info is None:
            return
        self.counted_draft = self._count_draft
        text = counts["total"] - counts["image"] - counts["audio"]
        self.context_meter.show_usage(Usage(text, counts["image"], counts["audio"], self.model_info["context_length"]))

    @staticmethod
    def copy_text(text: str) -> None:
        QGuiApplication.clipboard().setText(text)

    def _render_stream(self) -> None:
        if self.pending is None or not self.pending.dirty or self.streaming_bubble is None:
            return
        self.pending.dirty = False
        self.streaming_bubble.state.content = self.pending.text
        self.streaming_bubble.state.thinking = self.pending.thinking
        self.streaming_bubble.render_state()
        self.view.follow_stream()

    # -- turns -------------------------------------------------------------------------------------

    def send(self, text: str) -> None:
        """Send `text` with the attached media as a new turn, or as the edit of the message being edited
        (which keeps that message's media and adds what is attached now). Until it is stored, the text
        stays in the box and the media in the tray."""
        if not (text or self.media.attachments.items):
            return
        if self.pending is not None:
            self.notice_bar.add(self._busy_reason())
            return
        if not self.model_loaded:
            self.notice_bar.add(self._not_ready_reason())
            return
        if self.media.drop.busy:
            self.notice_bar.add("Still reading the attached files; send once they are in the tray.")
            return
        usage = self.context_meter.usage
        if usage is not None and usage.total > usage.limit and self.counted_draft == self._draft_key():
            self.notice_bar.add(f"This message does not fit: the chat would take {usage.total:,} tokens and the "
                                f"model holds {usage.limit:,}. Shorten it, remove an attachment, or start a new chat.")
            return
        if self.conversation is None:
            self.new_chat()
        if self.conversation is None:   # no chat could be written: the notice says why, the draft stays
            return
        try:
            user_id = self._store_user_message(text)
        except sqlite3.Error as exc:   # a full disk, or a history another program holds
            self.notice_bar.add(f"Not sent: the chat history could not be written ({exc}). Free some disk "
                                "space and send again; your message stays in the box.")
            return
        except OSError as exc:   # an attached file moved or deleted since, or a full disk
            self.notice_bar.add(f"Not sent: {exc.strerror or exc}: {exc.filename}. "
                                "Remove that attachment and attach it again.")
            return
        self.media.attachments.clear()
        self.input.clear()
        self._leave_editing()
        self.notice_bar.dismiss()
        self.refresh_sidebar()
        self._start_turn(user_id)

    def _recording_failed(self, reason: str) -> None:
        settings = ("Open Privacy Settings", lambda: QDesktopServices.openUrl(QUrl(PRIVACY_SETTINGS_URL)))
        self.notice_bar.add(reason, settings if reason == DENIED else None)

    def _show_reading(self, text: str) -> None:
        if text:
            self.statusBar().showMessage(text)
        elif self.statusBar().currentMessage().startswith("Reading "):
            self.statusBar().clearMessage()

    def _busy_reason(self) -> str:
        streaming = self.pending.conversation_id
        where = "this chat" if self.conversation and self.conversation.id == streaming else \
            f"“{self.library.conversation(streaming).title or 'another chat'}”"
        return (f"Gemma is still writing a reply in {where}. Wait for it, or press Stop (Esc), then send; "
                "your message stays in the box.")

    def _not_ready_reason(self, meanwhile: str = "Your message stays in the box.") -> str:
        if self.loading_model:
            return f"The model is still loading. {meanwhile}"
        if not self.models:
            return f"{NO_MODEL_YET} {meanwhile}"
        return f"No model is loaded: pick one above and press Load. {meanwhile}"

    def _store_user_message(self, text: str) -> int:
        attachments = self.media.to_store(self.library.staging_dir)
        if self.editing_id is not None:
            user_id = self.conversation.edit_user_message(self.editing_id, text, attachments)
        else:
            user_id = self.conversation.add_user_message(text, attachments)
        discard_staged([attachment.path for attachment in attachments], self.library.staging_dir)
        return user_id

    def begin_edit(self, message_id: int) -> None:
        """Put a user message back in the input box; sending it makes a new branch. The draft the box
        held comes back when editing ends."""
        if self.editing_id is None:
            self.draft_before_edit = self.input.toPlainText()
        self._set_editing(message_id)
        self.input.setPlainText(self.conversation.tree.by_id[message_id].content)
        self.input.setFocus()

    def cancel_edit(self) -> None:
        self._leave_editing()

    def _leave_editing(self) -> None:
        """Stop editing a message; the box gets back the draft it held before."""
        if self.editing_id is not None:
            self.input.setPlainText(self.draft_before_edit)
            self.draft_before_edit = ""
        self._set_editing(None)

    def escape(self) -> None:
        """Esc closes the find bar when typing in it, else throws away a recording, else stops the reply
        being written, else leaves editing a message."""
        if self.find_box.hasFocus():
            self.close_find()
        elif self.media.recorder.recording:
            self.media.recorder.cancel()
            self.statusBar().showMessage("Recording cancelled.", 5000)
        elif self.pending is not None:
            self.stop()
        elif self.editing_id is not None:
            self.cancel_edit()

    def _set_editing(self, message_id: int | None) -> None:
        self.editing_id = message_id
        self.edit_bar.setVisible(message_id is not None)
        if message_id is None:
            return
        attachments = self.library.attachments(message_id)
        kept = sum(attachment.path.is_file() for attachment in attachments)
        missing = len(attachments) - kept
        media = f" Its {kept} attachment{'s' * (kept != 1)} stay with it." if kept else ""
        if missing:
            media += (f" {missing} attachment{'s are' if missing != 1 else ' is'} missing from the history folder "
                      "and left out.")
        self.edit_label.setText(f"Editing a message: sending it starts a new branch, and the old one stays "
                                f"reachable with ‹ ›.{media} Esc cancels.")

    def regenerate(self, message_id: int) -> None:
        self._answer_again(self.conversation.regeneration_parent(message_id))

    def _answer_again(self, user_id: int) -> None:
        if self.pending is not None:
            self.notice_bar.add(self._busy_reason())
        elif not self.model_loaded:
            self.notice_bar.add(self._not_ready_reason("Regenerate once it is ready."))
        else:
            self._start_turn(user_id)

    def switch_variant(self, message_id: int, step: int) -> None:
        if self.pending is not None and self.pending.conversation_id == self.conversation.id:
            self.notice_bar.add(self._busy_reason())   # the branch being answered stays in view until it ends
            return
        with self._history_change():
            self.conversation.switch_variant(message_id, step)
            self.render_conversation()

    def _start_turn(self, user_id: int) -> None:
        """Answer user message `user_id`; its media, their budgets and the branch before it come from
        the library."""
        conversation = self.conversation
        *history, media = self._media_the_model_takes(
            [*conversation.turns_before(user_id), conversation.media_of(user_id)], say_so=True)
        turn_id = self.host.start_turn(conversation.id, history, conversation.tree.by_id[user_id].content,
                                       self.chat_options(), media["images"], media["audio"])
        self.pending = PendingTurn(turn_id, conversation.id, user_id)
        self._set_busy(True)
        self.render_conversation()

    def stop(self) -> None:
        if self.pending is not None:
            self.host.cancel(self.pending.turn_id)

    def _set_busy(self, busy: bool) -> None:
        self.stop_button.setEnabled(busy)
        self.send_button.setEnabled(not busy)
        for timer in (self.render_timer, self.save_timer):
            if busy:
                timer.start()
            else:
                timer.stop()

    def _save_partial(self) -> None:
        """Write the reply so far, so that a crash of the window loses at most the last second of it."""
        if self.pending is not None and self.pending.unsaved:
            self._store_answer(self.pending, {"stop_reason": INTERRUPTED})

    def _store_answer(self, pending: PendingTurn, stats: dict) -> bool:
        """The answer as it stands: a new message the first time, an update of that message after.

        False when the history cannot be written (a full disk): the user hears of it once per reply,
        and the next save tries again.
        """
        try:
            if pending.message_id is None:
                pending.message_id = Conversation(self.library, pending.conversation_id).add_answer(
                    pending.user_id, pending.text, pending.thinking, stats)
            else:
                self.library.update_message(pending.message_id, pending.text, pending.thinking, stats)
        except sqlite3.Error as exc:
            if not pending.save_failed:
                pending.save_failed = True
                self.notice_bar.add(f"The reply could not be saved ({exc}). It stays on screen; free some "
                                    "disk space, then regenerate it or copy it before you leave this chat.")
            return False
        pending.unsaved = False
        return True

    def _on_event(self, turn_id: int, kind: str, text: str) -> None:
        if self.pending is not None and self.pending.turn_id == turn_id:
            self.pending.add(kind, text)
        elif self.dictation is not None and self.dictation.turn_id == turn_id and kind == "text":
            self.dictation.text += text

    # -- dictation ---------------------------------------------------------------------------------

    def dictate(self, waveform) -> None:
        """Transcribe a recording in a side turn (outside every conversation); the text lands in the
        input box for editing before it is sent."""
        if not self.model_loaded:
            self.notice_bar.add("Dictation needs a loaded model with audio (E2B or E4B).")
            return
        if self.dictation is not None:
            self.notice_bar.add("Still writing down the last dictation; dictate again once it is in the box.")
            return
        clip = self.media.recording_file(waveform, self.library.staging_dir)
        options = {"thinking": False, "temperature": 0.0,
                   "max_tokens": min(DICTATION_MAX_TOKENS, self.chat_options().get("max_tokens", DICTATION_MAX_TOKENS))}
        turn_id = self.host.start_turn(None, [], DICTATION_PROMPT, options, audio=[clip])
        self.dictation = Dictation(turn_id, clip)
        self.statusBar().showMessage("Transcribing what you said…")

    def _finish_dictation(self, turn_id: int, error: str | None) -> bool:
        """True when `turn_id` was the dictation (which then ends)."""
        if self.dictation is None or self.dictation.turn_id != turn_id:
            return False
        dictation, self.dictation = self.dictation, None
        discard_staged([dictation.clip], self.library.staging_dir)
        if error is not None:
            self.notice_bar.add(f"Dictation failed: {error}")
            self.statusBar().showMessage("Dictation failed.", 5000)
            return True
        self.input.textCursor().insertText(dictation.text.strip())
        self.input.setFocus()
        self.announce("Dictation is in the message box: edit it, then send.")
        return True

    def _on_finished(self, turn_id: int, stats: dict) -> None:
        if self._finish_dictation(turn_id, None) or self.pending is None or self.pending.turn_id != turn_id:
            return
        pending, self.pending = self.pending, None
        self._set_busy(False)
        if stats.get("stop_reason") == "cancelled" and pending.wrote_nothing:
            # Stopped before a word: no empty answer is kept; Regenerate answers the question again.
            self.render_conversation(keep_place=True)
            return
        stored = self._store_answer(pending, stats)
        self.refresh_sidebar()   # the chat was just updated: it moves up the list
        if self.conversation and self.conversation.id == pending.conversation_id:
            self._show_answer(pending, stored)
        self.announce(f"Gemma finished replying: {len(pending.text.split())} words.")

    def _on_failed(self, turn_id: int, message: str) -> None:
        if self._finish_dictation(turn_id, message) or self.pending is None or self.pending.turn_id != turn_id:
            return
        pending, self.pending = self.pending, None
        self._set_busy(False)
        if pending.wrote_nothing:   # the failure is shown, not stored
            keys = self.actions_by_name["regenerate"].shortcut().toString(QKeySequence.SequenceFormat.NativeText)
            self.render_conversation(MessageState(None, "assistant", "",
                                                  error=f"{message} (Regenerate Answer, {keys}, tries again; "
                                                        "Edit changes the question)"))
        else:
            self._show_answer(pending, self._store_answer(pending, {"stop_reason": "failed", "error": message}))
        self.statusBar().showMessage(f"Error: {message}", 10000)

    def _show_answer(self, pending: PendingTurn, stored: bool) -> None:
        """The finished answer as stored or, in its chat when storing failed, as it streamed, marked unsaved."""
        if stored and self.conversation is not None:
            self.conversation.reload()
        here = self.conversation is not None and self.conversation.id == pending.conversation_id
        self.render_conversation(None if stored or not here else MessageState(
            None, "assistant", pending.text, pending.thinking, error="Not saved: the chat history could not be written."),
            keep_place=True)

    # -- window state ------------------------------------------------------------------------------

    def _restore_geometry(self) -> None:
        geometry = QSettings().value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1000, 700)

    def closeEvent(self, event) -> None:
        if self.pending is not None:
            if not self.confirm("Gemma is still writing a reply. Stop it and quit? What it wrote so far is kept."):
                event.ignore()
                return
            self._save_partial()
        if not self.shut_down:   # a window can be closed twice (by the user, then by Qt at exit)
            self._shut_down()
        super().closeEvent(event)

    def _shut_down(self) -> None:
        self.shut_down = True
        QSettings().setValue("window/geometry", self.saveGeometry())
        if self.model_library is not None:
            self.model_library.shutdown()
            self.model_library.close()
        for timer in (self.count_timer, self.render_timer, self.save_timer):
            timer.stop()
        if self.loading_model:   # the user quit during a load: no crash to remember at the next start
            self._end_load()
        if self.owns_host:
            self.host.stop()
        else:   # a shared engine outlives this window: stop listening to it
            for signal, slot in self._engine_links():
                signal.disconnect(slot)
