"""The main window on real widgets (offscreen) with the tiny E2B fixture on the real engine thread."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QAbstractButton

from app.engine_host import EngineHost
from app.main_window import MainWindow
from app.models import remembered_folders
from app.storage import Library
from app.widgets import MessageState, MessageWidget
from tests.conftest import MODELS

REPO = Path(__file__).resolve().parents[1]

TINY = MODELS / "tiny-e2b"


@pytest.fixture(scope="module")
def shared_host(qapp):
    """One engine process for the module: starting one and its first turn cost seconds each time."""
    host = EngineHost()
    yield host
    host.stop()


def isolate(monkeypatch, tmp_path) -> None:
    """Data, model cache and settings under `tmp_path`: nothing of the machine's user is read or written."""
    monkeypatch.setenv("LANTERN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch, shared_host):
    isolate(monkeypatch, tmp_path)
    library = Library()
    win = MainWindow(library, host=shared_host, model_folders=[MODELS],
                     options={"max_tokens": 6, "temperature": 0.0})
    qtbot.addWidget(win)
    win.confirm = lambda question: True   # a question dialog would wait for a click that never comes
    win.show()
    assert win.select_model(TINY)
    if not win.model_loaded or shared_host.info["folder"] != str(TINY):
        assert win.load_selected_model()
        qtbot.waitUntil(lambda: win.model_loaded, timeout=20000)
    yield win
    win.close()
    library.close()


def send(qtbot, win, text):
    win.input.setPlainText(text)
    qtbot.keyClick(win.input, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: win.pending is None, timeout=20000)


def test_send_streams_a_reply_with_stats_and_saves_it(qtbot, window):
    qtbot.keyClicks(window.input, "line one")
    qtbot.keyClick(window.input, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    assert window.pending is None and "\n" in window.input.toPlainText()  # Shift+Enter: new line only
    streamed = []
    window.host.event.connect(lambda turn, kind, text: streamed.append(text))
    qtbot.keyClicks(window.input, "Hello there")
    qtbot.keyClick(window.input, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: window.pending is None, timeout=20000)
    path = window.conversation.path
    assert [m.role for m in path] == ["user", "assistant"]
    assert path[0].content == "line one\nHello there"
    assert streamed and path[1].content == "".join(streamed)
    assert path[1].stats["generated_tokens"] == 6
    stats_line = window.view.bubbles[-1].stats_label.text()
    assert "6 tokens" in stats_line and "tok/s" in stats_line and "TTFT" in stats_line
    assert window.input.toPlainText() == ""
    assert window.sidebar.list.item(0).text() == "line one Hello there"
    # The engine can take video, but a message here cannot, so the status names what can be sent.
    assert "text, image, audio)" in window.model_status.text() and "video" not in window.model_status.text()


def test_the_reply_is_saved_while_it_streams_and_escape_stops_it(qtbot, window):
    window.options["max_tokens"] = 100000
    started = []
    window.host.event.connect(lambda *args: started.append(args[2]))
    window.input.setPlainText("Tell me a long story")
    qtbot.keyClick(window.input, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: len(started) > 0, timeout=20000)
    qtbot.wait(1300)   # past one save interval
    on_disk = Library(window.library.folder)   # what a crash of the window right now would leave
    saved = on_disk.messages(window.conversation.id)[-1]
    on_disk.close()
    assert saved.role == "assistant" and saved.content and "".join(started).startswith(saved.content)
    assert saved.stats["stop_reason"] == "interrupted" and window.pending.message_id == saved.id
    assert [b.state.message_id for b in window.view.bubbles] == [window.conversation.path[0].id, None]
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: window.pending is None, timeout=20000)
    answer = window.conversation.path[-1]
    assert answer.role == "assistant" and answer.id == saved.id   # the same message, completed
    assert len(window.conversation.tree.by_id) == 2
    assert answer.stats["stop_reason"] == "cancelled"
    assert 0 < answer.stats["generated_tokens"] < 100000
    assert window.stop_button.isEnabled() is False and window.send_button.isEnabled()


def test_regenerate_keeps_variants_and_switches(qtbot, window):
    window.options["temperature"] = 1.0
    send(qtbot, window, "Pick a word")
    first = window.conversation.path[-1]
    window.view.bubbles[-1].regenerate.emit(first.id)
    qtbot.waitUntil(lambda: window.pending is None, timeout=20000)
    second = window.conversation.path[-1]
    assert second.id != first.id and second.parent_id == first.parent_id
    assert window.view.bubbles[-1].variant_label.text() == "2/2"
    window.view.bubbles[-1].switch_variant.emit(second.id, -1)
    assert window.conversation.path[-1].id == first.id
    assert window.view.bubbles[-1].variant_label.text() == "1/2"


def test_edit_branches_and_search_and_delete_with_undo(qtbot, window):
    send(qtbot, window, "original question about otters")
    original = window.conversation.path[0]
    window.begin_edit(original.id)
    assert window.input.toPlainText() == original.content
    send(qtbot, window, "edited question about beavers")
    path = window.conversation.path
    assert path[0].content == "edited question about beavers" and path[0].parent_id is None
    assert window.conversation.tree.variant(path[0].id).count == 2

    window.sidebar.search_box.setText("otters")
    assert window.sidebar.list.count() == 1
    assert "[otters]" in window.sidebar.list.item(0).text()
    window.sidebar.search_box.setText("")

    chat_id = window.conversation.id
    window.delete_conversation(chat_id)
    assert window.sidebar.list.count() == 0 and window.sidebar.undo_button.isVisible()
    window.sidebar.undo_button.click()
    assert window.sidebar.list.count() == 1 and window.conversation.id == chat_id


def test_thinking_toggle_is_stored_per_chat(qtbot, window):
    window.new_chat()
    window.thinking_box.setChecked(True)
    thinking_chat = window.conversation.id
    send(qtbot, window, "Think first")
    assert window.library.conversation(thinking_chat).settings["thinking"] is True
    window.new_chat()
    assert not window.thinking_box.isChecked()
    window.open_conversation(thinking_chat)
    assert window.thinking_box.isChecked()


def test_memory_check_refuses_an_oversize_model(qtbot, window):
    window.ram_bytes = 1024 * 1024
    assert not window.load_selected_model()
    assert "Not loaded" in window.model_status.text() and "4-bit" in window.model_status.text()
    assert window.model_loaded  # the model that was loaded stays usable


def test_a_broken_model_folder_shows_an_error_and_the_app_keeps_working(qtbot, window, model_copy):
    broken = model_copy("tiny-e2b")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    window.add_model_folder(broken)
    assert window.select_model(broken)
    window.load_selected_model()
    assert not window.media.controls.dictate_button.isEnabled()   # the engine let go of the model it had
    qtbot.waitUntil(lambda: "Could not load" in window.model_status.text(), timeout=20000)
    notice = window.view.bubbles[-1]
    assert notice.state.role == "notice" and "Could not load the model" in notice.body.toPlainText()
    assert "safetensors" in notice.body.toPlainText()
    assert "press Load to go back" in window.model_status.text()
    assert Path(window.model_picker.currentData()).resolve() == TINY.resolve()   # the model loaded before
    assert window.select_model(TINY) and window.load_selected_model()
    qtbot.waitUntil(lambda: window.model_loaded, timeout=20000)
    send(qtbot, window, "still alive?")
    assert window.conversation.path[-1].role == "assistant"


def test_a_folder_gone_or_damaged_since_it_was_listed_is_refused_and_the_loaded_model_stays(qtbot, window,
                                                                                             model_copy):
    gone = model_copy("tiny-e2b")
    window.add_model_folder(gone)
    assert window.select_model(gone)
    shutil.rmtree(gone)
    assert not window.load_selected_model()
    assert "no longer exists" in window.model_status.text() and "still loaded" in window.model_status.text()
    assert window.model_loaded and not window.select_model(gone)   # the list was refreshed
    damaged = model_copy("tiny-e4b")
    window.add_model_folder(damaged)
    assert window.select_model(damaged)
    (damaged / "config.json").write_text("{ cut short")
    assert not window.load_selected_model() and "cannot be read" in window.model_status.text()
    assert window.model_loaded
    send(qtbot, window, "still here?")
    assert window.conversation.path[-1].role == "assistant"


def test_adding_a_folder_whose_model_config_is_damaged_says_so(qtbot, window, model_copy):
    damaged = model_copy("tiny-e4b")
    (damaged / "config.json").write_text("{ cut short")
    window.add_model_folder(damaged)
    assert "Found a model, but" in window.notice_bar.label.text() and "cannot be read" in window.notice_bar.label.text()


def test_icon_only_buttons_have_names_and_tooltips(qtbot, window):
    send(qtbot, window, "one")
    window.regenerate_last()
    qtbot.waitUntil(lambda: window.pending is None, timeout=20000)
    glyphs = [b for b in window.findChildren(QAbstractButton) if b.text() and not any(c.isalnum() for c in b.text())]
    assert len(glyphs) >= 3   # the notice bar's dismiss button and an answer's two variant arrows at least
    for button in glyphs:
        assert button.accessibleName() and button.toolTip(), button.text()


def test_tab_in_the_message_box_moves_on_instead_of_typing_a_tab(qtbot, window):
    window.input.setPlainText("")
    qtbot.keyClick(window.input, Qt.Key.Key_Tab)
    assert window.input.toPlainText() == ""


def test_first_run_without_any_model_points_to_the_model_library(qtbot, tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))   # no LM Studio folders either
    library = Library()
    win = MainWindow(library, model_folders=[])   # its own engine: the shared one holds a model
    qtbot.addWidget(win)
    try:
        assert win.models == [] and not win.load_button.isEnabled() and not win.model_loaded
        dictate = win.media.controls.dictate_button
        assert not dictate.isEnabled() and "load a model first" in dictate.toolTip().lower()
        assert win.export_chat_markdown(tmp_path) is None and "Open a chat" in win.statusBar().currentMessage()
        assert "Model Library" in win.model_status.text()
        win.input.setPlainText("hello?")
        qtbot.keyClick(win.input, Qt.Key.Key_Return)
        assert "Model Library" in win.notice_bar.label.text() and win.input.toPlainText() == "hello?"
        win.library_button.click()
        assert win.model_library is not None and win.model_library.isVisible()
        win.model_library.shutdown()
    finally:
        win.close()
        library.close()


def test_restart_shows_the_same_history(qtbot, window):
    send(qtbot, window, "remember me")
    chat_id, path = window.conversation.id, [m.content for m in window.conversation.path]
    reopened = MainWindow(window.library, host=window.host, model_folders=[MODELS])
    qtbot.addWidget(reopened)
    assert reopened.sidebar.list.count() == 1
    reopened.sidebar.list.setCurrentRow(0)
    assert reopened.conversation.id == chat_id
    assert [b.state.content for b in reopened.view.bubbles] == path


def test_replies_render_as_markdown(qtbot):
    bubble = MessageWidget(MessageState(1, "assistant", "**bold** and\n\n```python\nx = 1\n```\n", stats={}))
    qtbot.addWidget(bubble)
    shown = bubble.body.toPlainText()
    assert "bold" in shown and "**" not in shown and "```" not in shown and "x = 1" in shown
    assert not bubble.stats_label.isVisibleTo(bubble)


def test_self_test_command_sends_one_message_and_saves_a_screenshot(tmp_path):
    shot = tmp_path / "window.png"
    env = {**os.environ, "LANTERN_DATA_DIR": str(tmp_path / "data"), "HF_HUB_CACHE": str(tmp_path / "hub"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "QT_QPA_PLATFORM": "offscreen"}
    leftover = tmp_path / "data" / "models" / "tiny-e2b-4bit.converting"   # a conversion killed last time
    shutil.copytree(TINY, leftover)
    result = subprocess.run([sys.executable, "-m", "app", "--model", str(TINY), "--self-test", "--screenshot",
                             str(shot)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "self-test: reply of" in result.stdout
    assert shot.stat().st_size > 1000
    assert not leftover.exists() and (tmp_path / "data" / "models").is_dir()


def test_killing_the_engine_mid_reply_keeps_the_app_the_partial_reply_and_restarts(qtbot, window):
    window.options["max_tokens"] = 100000
    streamed = []
    window.host.event.connect(lambda turn, kind, text: streamed.append(text))
    window.input.setPlainText("Write forever")
    qtbot.keyClick(window.input, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: len(streamed) >= 3, timeout=20000)
    os.kill(window.host.pid(), signal.SIGKILL)
    qtbot.waitUntil(lambda: window.restart_button.isVisible(), timeout=20000)
    assert window.pending is None and window.isVisible() and not window.model_loaded
    answer = window.conversation.path[-1]
    assert answer.role == "assistant" and answer.content and "".join(streamed).startswith(answer.content)
    assert answer.stats["stop_reason"] == "engine stopped"
    assert "crashed" in window.model_status.text()
    assert "Error:" in window.view.bubbles[-1].body.toPlainText()
    reopened = Library(window.library.folder)   # what was written survives on disk
    assert reopened.messages(window.conversation.id)[-1].content == answer.content
    reopened.close()

    window.restart_button.click()
    qtbot.waitUntil(lambda: window.model_loaded, timeout=20000)
    assert not window.restart_button.isVisible()
    window.options["max_tokens"] = 4
    send(qtbot, window, "Are you back?")
    assert window.conversation.path[-1].stats["generated_tokens"] == 4


def test_loading_reports_progress_to_100_percent_and_cancels_without_killing_the_engine(qtbot, window):
    shown = []

    def record(_text, _fraction):
        shown.append(window.load_progress.value())
    window.host.loading.connect(record)
    assert window.load_selected_model()
    assert window.load_marker.crashed_model() == TINY   # written before the load, gone after it
    qtbot.waitUntil(lambda: window.model_loaded, timeout=20000)
    window.host.loading.disconnect(record)
    assert shown == sorted(shown) and shown[-1] == 100 and len(set(shown)) > 3
    assert not window.load_progress.isVisible() and not window.cancel_load_button.isVisible()
    assert window.load_marker.crashed_model() is None

    pid = window.host.pid()
    window.load_selected_model()
    assert window.cancel_load_button.isVisible()
    window.cancel_load_button.click()
    qtbot.waitUntil(lambda: window.model_status.text().startswith("Loading cancelled; no model is loaded."),
                    timeout=20000)
    assert window.host.pid() == pid and not window.model_loaded and not window.restart_button.isVisible()
    assert not window.load_progress.isVisible() and window.load_marker.crashed_model() is None
    assert window.load_selected_model()
    qtbot.waitUntil(lambda: window.model_loaded, timeout=20000)


def test_quitting_during_a_load_is_not_remembered_as_a_crash(qtbot, window):
    assert window.load_selected_model()
    assert window.load_marker.crashed_model() == TINY
    window.close()
    assert window.load_marker.crashed_model() is None


def test_a_model_that_crashed_while_loading_is_not_loaded_again_by_itself(qtbot, window):
    window.load_marker.begin(TINY)   # as a load that never ended leaves it
    window.model_loaded = False
    assert not window.auto_load() and not window.loading_model
    assert "stopped while loading tiny-e2b" in window.view.bubbles[-1].body.toPlainText()
    assert window.select_model(MODELS / "tiny-31b") and window.auto_load()   # another model loads
    qtbot.waitUntil(lambda: window.model_loaded, timeout=20000)
    assert window.load_marker.crashed_model() is None


def test_the_model_library_opens_from_the_menu_and_a_ready_model_is_loaded(qtbot, window, tmp_path):
    import shutil

    window.actions_by_name["models"].trigger()
    page = window.model_library
    assert page is not None and page.isVisible()
    copy = tmp_path / "downloaded" / "tiny-e2b-copy"
    shutil.copytree(TINY, copy)
    page.model_ready.emit(str(copy))
    qtbot.waitUntil(lambda: window.model_loaded and window.host.info.get("folder") == str(copy), timeout=20000)
    assert window.model_picker.currentData() == str(copy)


def test_next_and_previous_chat_walk_the_sidebar(qtbot, window):
    send(qtbot, window, "first chat")
    first = window.conversation.id
    window.new_chat()
    send(qtbot, window, "second chat")
    second = window.conversation.id
    order = [window.sidebar.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(window.sidebar.list.count())]
    step = 1 if order.index(first) > order.index(second) else -1
    spellings = {keys.toString() for keys in window.actions_by_name["next_chat"].shortcuts()}
    assert spellings == {"Ctrl+Shift+]", "Ctrl+Shift+}"}   # ⇧] arrives as ] or } depending on the platform
    window.actions_by_name["next_chat" if step == 1 else "previous_chat"].trigger()
    assert window.conversation.id == first
    window.actions_by_name["previous_chat" if step == 1 else "next_chat"].trigger()
    assert window.conversation.id == second


def test_an_added_folder_can_be_forgotten_without_touching_its_files(qtbot, window, model_copy):
    added = model_copy("tiny-e4b")
    window.add_model_folder(added)
    assert window.select_model(added)
    window.forget_model_folder(added)
    assert not window.select_model(added) and (added / "config.json").is_file()
    assert added not in remembered_folders()


def test_an_added_folder_that_is_gone_is_noted_once_and_can_be_forgotten(qtbot, window, model_copy):
    added = model_copy("tiny-e4b")
    window.add_model_folder(added)
    shutil.rmtree(added)
    window.refresh_models()
    assert "is not there now" in window.notice_bar.label.text() and str(added) in window.notice_bar.label.text()
    window.notice_bar.dismiss()
    window.refresh_models()
    assert str(added) not in window.notice_bar.label.text()
    window.forget_model_folder(added)
    assert added not in remembered_folders()
