"""The window when the history cannot be written, when a reply streams elsewhere, and around editing."""

import os
import sqlite3
import subprocess
import sys

from PySide6.QtCore import Qt

from app.conversation import Conversation
from app.storage import Library
from tests.test_app_turns import start_long_reply
from tests.test_app_window import send, shared_host, window  # noqa: F401  (fixtures)

DISK_FULL = sqlite3.OperationalError("database or disk is full")


def _fail(*args, **kwargs):
    raise DISK_FULL


def test_a_message_the_history_cannot_take_stays_in_the_box_with_a_reason(qtbot, window, monkeypatch):
    monkeypatch.setattr(Conversation, "add_user_message", _fail)
    window.input.setPlainText("are you there?")
    window.send("are you there?")
    assert window.pending is None and window.input.toPlainText() == "are you there?"
    assert "could not be written" in window.notice_bar.label.text()


def test_an_answer_the_history_cannot_take_stays_on_screen_and_the_buttons_come_back(qtbot, window, monkeypatch):
    send(qtbot, window, "first question")
    monkeypatch.setattr(Conversation, "add_answer", _fail)
    monkeypatch.setattr(window.library, "update_message", _fail)
    window.input.setPlainText("second question")
    window.send("second question")
    qtbot.waitUntil(lambda: window.pending is None, timeout=20000)
    assert window.send_button.isEnabled() and not window.stop_button.isEnabled()
    last = window.view.bubbles[-1].state
    assert last.role == "assistant" and last.content and "Not saved" in last.error
    assert "could not be saved" in window.notice_bar.label.text()


def test_deleting_the_chat_whose_reply_streams_stops_that_reply_and_undo_brings_it_back(qtbot, window):
    start_long_reply(qtbot, window)
    chat = window.conversation.id
    window.delete_conversation(chat)
    qtbot.waitUntil(lambda: window.pending is None, timeout=20000)
    window.undo_delete()
    answer = window.conversation.path[-1]
    assert window.conversation.id == chat and answer.role == "assistant" and answer.content
    assert answer.stats["stop_reason"] == "cancelled"


def test_sending_while_another_chat_streams_says_why_and_keeps_the_message(qtbot, window):
    start_long_reply(qtbot, window)
    streaming = window.conversation.id
    window.new_chat()
    window.input.setPlainText("a question here")
    window.send("a question here")
    assert window.input.toPlainText() == "a question here" and window.pending.conversation_id == streaming
    assert "still writing a reply in" in window.notice_bar.label.text()
    window.stop()
    qtbot.waitUntil(lambda: window.pending is None, timeout=20000)


def test_editing_a_message_gives_the_draft_back_when_cancelled_or_sent(qtbot, window):
    send(qtbot, window, "a question")
    question = window.conversation.path[0]
    window.input.setPlainText("my unfinished draft")
    window.begin_edit(question.id)
    assert window.input.toPlainText() == "a question"
    window.cancel_edit()
    assert window.input.toPlainText() == "my unfinished draft"
    window.begin_edit(question.id)
    window.input.setPlainText("a better question")
    window.send("a better question")
    qtbot.waitUntil(lambda: window.pending is None, timeout=20000)
    assert window.input.toPlainText() == "my unfinished draft"
    assert window.conversation.path[0].content == "a better question"


def test_a_regenerated_answer_moves_its_chat_to_the_top(qtbot, window):
    send(qtbot, window, "in the older chat")
    older = window.conversation.id
    window.new_chat()
    send(qtbot, window, "in the newer chat")
    window.open_conversation(older)
    window.regenerate(window.conversation.path[-1].id)
    qtbot.waitUntil(lambda: window.pending is None, timeout=20000)
    assert window.sidebar.list.item(0).data(Qt.ItemDataRole.UserRole) == older


def test_a_history_another_program_holds_ends_the_start_with_the_reason_and_stays_as_it_is(tmp_path):
    data = tmp_path / "data"
    Library(data).close()
    before = sorted(path.name for path in data.iterdir())
    holder = sqlite3.connect(data / "history.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    env = {**os.environ, "LANTERN_DATA_DIR": str(data), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "QT_QPA_PLATFORM": "offscreen"}
    try:
        result = subprocess.run([sys.executable, "-m", "app", "--self-test"], env=env, capture_output=True,
                                text=True, timeout=120)
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode == 1 and "another program is using" in result.stderr
    assert "Traceback" not in result.stderr
    assert not [name for name in os.listdir(data) if "corrupt" in name] and (data / "history.sqlite3").exists()
    assert set(before) <= set(os.listdir(data))
