"""Media in the main window: dropped images travel to the engine process and the reply's stats count them."""

import pytest
from PySide6.QtCore import QMimeData, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

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


def drop_files(widget, *paths):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path)) for path in paths])
    where = QPointF(5.5, 5.5)
    rest = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, QDragEnterEvent(where.toPoint(), *rest))  # enter events take a QPoint
    QApplication.sendEvent(widget, QDropEvent(where, *rest))


def test_two_dropped_images_reach_the_model_each_at_its_own_budget(qtbot, window):
    load(qtbot, window, "tiny-e2b")
    assert window.media.controls.mic_button.isEnabled()
    drop_files(window.input.viewport(), MEDIA / "image_wide.png", MEDIA / "image_tall.png")
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
    user = window.conversation.path[0]
    assert [a.budget for a in window.library.attachments(user.id)] == [70, 560]   # kept for regenerate


def test_mic_and_audio_drop_are_refused_with_the_reason_on_tiny_31b(qtbot, window):
    load(qtbot, window, "tiny-31b")
    reason = window.media.controls.mic_button.toolTip()
    assert not window.media.controls.mic_button.isEnabled() and reason.startswith("Audio needs Gemma 4 E2B or E4B")
    drop_files(window.input.viewport(), MEDIA / "audio_16k.wav")
    assert window.media.attachments.items == [] and window.model_status.text() == reason
