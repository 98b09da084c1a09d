"""Media in the main window: dropped images travel to the engine process and the reply's stats count them."""

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent, QImage, QTextCursor
from PySide6.QtWidgets import QApplication, QDialog, QLabel

from app.engine_host import EngineHost
from app.main_window import MainWindow
from app.storage import Library
from tests.conftest import FIXTURES, MODELS

MEDIA = FIXTURES / "media"


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LANTERN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    library = Library()
    host = EngineHost()
    win = MainWindow(library, host=host, model_folders=[MODELS], options={"max_tokens": 2, "temperature": 0.0})
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()
    host.stop()
    library.close()


def load(qtbot, win, name):
    assert win.select_model(MODELS / name)
    assert win.load_selected_model()
    qtbot.waitUntil(lambda: win.model_loaded, timeout=30000)


def drop_files(qtbot, window, *paths, widget=None):
    """Drop files on the message box (or `widget`) as the window system does, and wait until they are read."""
    widget = widget or window.input.viewport()
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path)) for path in paths])
    where = QPointF(5.5, 5.5)
    rest = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, QDragEnterEvent(where.toPoint(), *rest))  # enter events take a QPoint
    QApplication.sendEvent(widget, QDropEvent(where, *rest))
    assert window.media.drop.busy   # read on worker threads, not in the event handler
    qtbot.waitUntil(lambda: not window.media.drop.busy, timeout=10000)


def test_two_dropped_images_reach_the_model_each_at_its_own_budget(qtbot, window):
    load(qtbot, window, "tiny-e2b")
    assert window.media.controls.mic_button.isEnabled()
    drop_files(qtbot, window, MEDIA / "image_wide.png", MEDIA / "image_tall.png")
    cards = window.media.tray.cards
    for card, budget in zip(cards, (70, 560)):
        card.budget_combo.setCurrentIndex(card.budget_combo.findData(budget))
    per_image = [int(card.tokens_label.text().split()[0]) for card in cards]
    promised = window.media.attachments.image_tokens
    assert len(cards) == 2 and per_image[0] < per_image[1] and promised == sum(per_image)
    window.input.setPlainText("Compare these two pictures")
    qtbot.keyClick(window.input, Qt.Key.Key_Return)
    assert window.media.attachments.items == [] and window.media.tray.isHidden()
    qtbot.waitUntil(lambda: window.pending is None, timeout=30000)
    stats = window.conversation.path[-1].stats
    assert stats["image_tokens"] == promised and stats["audio_tokens"] == 0
    assert f"{promised} image tokens in the prompt" in window.view.bubbles[-1].stats_label.text()
    user = window.conversation.path[0]
    assert [a.budget for a in window.library.attachments(user.id)] == [70, 560]   # kept for regenerate

    # A restart: a fresh library on the same folder and a new window show the images in the history.
    library = Library(window.library.folder)
    reopened = MainWindow(library, host=window.host, model_folders=[MODELS])
    qtbot.addWidget(reopened)
    reopened.open_conversation(window.conversation.id)
    strip = reopened.view.bubbles[0].attachment_strip
    assert len(strip.image_buttons) == 2 and strip.isVisibleTo(reopened.view.bubbles[0])
    thumbs = [button.icon().pixmap(button.iconSize()) for button in strip.image_buttons]
    assert all(not t.isNull() and max(t.width(), t.height()) <= 96 for t in thumbs)
    strip.image_buttons[1].click()
    [dialog] = strip.findChildren(QDialog)
    full = dialog.findChild(QLabel).pixmap()
    assert (full.width(), full.height()) == Image.open(MEDIA / "image_tall.png").size
    dialog.close()
    reopened.close()
    library.close()


def test_files_dropped_on_the_chat_or_the_window_are_attached(qtbot, window):
    # Files opened with the app (macOS only) are tested on the drop itself, in test_app_media_tray.py.
    load(qtbot, window, "tiny-e2b")
    drop_files(qtbot, window, MEDIA / "image_wide.png", widget=window.view.viewport())
    drop_files(qtbot, window, MEDIA / "audio_16k.wav", widget=window)
    qtbot.waitUntil(lambda: not window.media.drop.busy, timeout=10000)
    assert [item.name for item in window.media.attachments.items] == ["image_wide.png", "audio_16k.wav"]


def test_a_drag_of_plain_text_is_left_to_the_message_box(qtbot, window):
    mime = QMimeData()
    mime.setText("words")
    rest = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    where, box = QPointF(5.5, 5.5), window.input.viewport()
    for event in (QDragEnterEvent(where.toPoint(), *rest), QDragMoveEvent(where.toPoint(), *rest),
                  QDropEvent(where, *rest)):
        QApplication.sendEvent(box, event)
    assert "words" in window.input.toPlainText() and window.media.attachments.items == []


def test_dictation_fills_the_input_box_and_leaves_the_history_alone(qtbot, window):
    load(qtbot, window, "tiny-e2b")
    window.new_chat()
    window.input.setPlainText("Note: ")
    window.input.moveCursor(QTextCursor.MoveOperation.End)
    before = window.library.messages(window.conversation.id)
    assert window.media.controls.dictate_button.isVisibleTo(window)
    streamed = []
    window.host.event.connect(lambda turn, kind, text: streamed.append(text))
    tone = (0.3 * np.sin(np.arange(16_000) * 0.05)).astype(np.float32)
    window.media.recorder.finished.emit(tone, "dictate")
    assert window.dictation is not None and window.media.attachments.items == []
    qtbot.waitUntil(lambda: window.dictation is None, timeout=30000)
    assert streamed and window.input.toPlainText() == "Note: " + "".join(streamed).strip()
    assert window.library.messages(window.conversation.id) == before == []
    assert window.pending is None and len(window.view.bubbles) == 0
    assert list(window.library.staging_dir.iterdir()) == []   # the recording is gone once written down


def test_a_sent_recording_and_pasted_image_live_only_in_the_history(qtbot, window):
    load(qtbot, window, "tiny-e2b")
    window.media.drop.attach_image(QImage(str(MEDIA / "image_tall.png")))
    window.media.attachments.add_audio((0.3 * np.sin(np.arange(8_000) * 0.05)).astype(np.float32), 16_000,
                                       "Recording 1")
    window.media.drop.attach_paths([MEDIA / "image_wide.png"])
    qtbot.waitUntil(lambda: not window.media.drop.busy and len(window.media.attachments.items) == 3)
    window._request_count()   # the meter's count stages the draft's files for the engine process
    assert len(list(window.library.staging_dir.iterdir())) == 2
    window.input.setPlainText("What are these?")
    qtbot.keyClick(window.input, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: window.pending is None, timeout=30000)
    stored = window.library.attachments(window.conversation.path[0].id)
    assert [a.kind for a in stored] == ["image", "image", "audio"] and all(a.path.is_file() for a in stored)
    assert list(window.library.staging_dir.iterdir()) == []
    assert (MEDIA / "image_wide.png").is_file()   # a file attached from disk is the user's own: never removed

def test_mic_and_audio_drop_are_refused_with_the_reason_on_tiny_31b(qtbot, window):
    load(qtbot, window, "tiny-31b")
    reason = window.media.controls.mic_button.toolTip()
    assert not window.media.controls.mic_button.isEnabled() and reason.startswith("Audio needs Gemma 4 E2B or E4B")
    drop_files(qtbot, window, MEDIA / "audio_16k.wav", MEDIA / "image_wide.png")
    assert [item.name for item in window.media.attachments.items] == ["image_wide.png"]
    assert window.notice_bar.isVisible() and window.notice_bar.label.text() == reason
    window.notice_bar.close_button.click()
    assert not window.notice_bar.isVisible() and window.notice_bar.lines == []
