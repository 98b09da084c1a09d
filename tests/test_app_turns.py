"""Turn control on the real window: stopping, regenerating, editing, retrying, refusing to send, quitting."""

import shutil
import threading

import numpy as np

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QAbstractItemView, QApplication

from app.conversation import Conversation
from app.main_window import MainWindow
from app.storage import Library
from app.settings_dialog import ChatSettingsDialog, presets
from tests.conftest import FIXTURES
from tests.test_app_window import send, shared_host, window  # noqa: F401  (fixtures)

IMAGE = FIXTURES / "media" / "image_wide.png"


def start_long_reply(qtbot, window, text="Tell me a long story"):
    window.options["max_tokens"] = 100000
    window.send(text)
    qtbot.waitUntil(lambda: window.pending is not None and window.pending.text != "", timeout=20000)


def focus_input(qtbot, window):
    window.activateWindow()
    window.input.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is window.input, timeout=5000)


def test_the_stop_shortcut_stops_a_reply(qtbot, window):
    start_long_reply(qtbot, window)
    focus_input(qtbot, window)
    qtbot.keyClick(window.input, Qt.Key.Key_Period, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.pending is None, timeout=20000)
    assert window.conversation.path[-1].stats["stop_reason"] == "cancelled"


def test_a_regenerated_earlier_answer_streams_under_its_own_question(qtbot, window):
    send(qtbot, window, "first question")
    send(qtbot, window, "second question")
    first_answer = window.conversation.path[1]
    window.options["max_tokens"] = 100000
    window.regenerate(first_answer.id)
    qtbot.waitUntil(lambda: window.pending.text != "", timeout=20000)
    qtbot.wait(1300)   # past one save interval, so the partial answer is stored
    shown = [(bubble.state.role, bubble.state.content) for bubble in window.view.bubbles]
    assert shown[0] == ("user", "first question") and len(shown) == 2 and shown[1][0] == "assistant"
    window.stop()
    qtbot.waitUntil(lambda: window.pending is None, timeout=20000)
    path = window.conversation.path
    assert [m.content for m in path][:1] == ["first question"] and len(path) == 2
    assert window.conversation.tree.variant(path[1].id).count == 2


def test_editing_shows_a_bar_esc_cancels_and_new_media_join_the_edited_message(qtbot, window):
    send(qtbot, window, "a question")
    question = window.conversation.path[0]
    window.begin_edit(question.id)
    assert window.edit_bar.isVisible() and window.input.toPlainText() == "a question"
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert not window.edit_bar.isVisible() and window.editing_id is None and window.input.toPlainText() == ""

    window.begin_edit(question.id)
    window.media.drop.attach_paths([IMAGE])
    send(qtbot, window, "a better question")
    edited = window.conversation.path[0]
    assert edited.id != question.id and edited.content == "a better question"
    assert [a.name for a in window.library.attachments(edited.id)] == [IMAGE.name]
    assert window.media.attachments.items == [] and not window.edit_bar.isVisible()


def test_sending_without_a_model_keeps_the_draft_and_says_why(qtbot, window):
    window.model_loaded = False
    window.input.setPlainText("are you there?")
    qtbot.keyClick(window.input, Qt.Key.Key_Return)
    assert window.pending is None and window.conversation is None
    assert window.input.toPlainText() == "are you there?"
    assert "No model is loaded" in window.notice_bar.label.text()


def test_an_attachment_deleted_before_sending_is_reported_and_nothing_is_lost(qtbot, window, tmp_path):
    photo = tmp_path / "photo.png"
    shutil.copy(IMAGE, photo)
    window.media.drop.attach_paths([photo])
    photo.unlink()
    window.input.setPlainText("what is this?")
    window.send("what is this?")
    assert window.pending is None and not window.conversation.path
    assert "Not sent" in window.notice_bar.label.text() and "photo.png" in window.notice_bar.label.text()
    assert len(window.media.attachments.items) == 1 and window.input.toPlainText() == "what is this?"


def test_an_edited_message_whose_attachment_file_is_gone_is_sent_without_it(qtbot, window):
    window.media.drop.attach_paths([IMAGE])
    send(qtbot, window, "what is this?")
    question = window.conversation.path[0]
    [stored] = window.library.attachments(question.id)
    stored.path.unlink()   # as in a history copied without its attachments folder
    window.begin_edit(question.id)
    assert "1 attachment is missing" in window.edit_label.text()
    send(qtbot, window, "what was this?")
    edited = window.conversation.path[0]
    assert edited.id != question.id and edited.content == "what was this?"
    assert window.library.attachments(edited.id) == [] and window.conversation.path[-1].role == "assistant"
    window.switch_variant(edited.id, -1)   # back to the question whose image is gone: the chat goes on
    send(qtbot, window, "and now?")
    assert window.conversation.path[-1].role == "assistant" and "error" not in window.conversation.path[-1].stats


def test_regenerating_without_a_model_says_why_and_starts_nothing(qtbot, window):
    send(qtbot, window, "a question")
    window.host.died.emit("The engine stopped.")   # what the window hears when the engine process dies
    window.regenerate_last()
    assert window.pending is None and len(window.conversation.path) == 2
    assert "No model is loaded" in window.notice_bar.label.text()


def test_a_reply_that_fails_after_writing_keeps_what_it_wrote(qtbot, window):
    window.save_timer.setInterval(600_000)   # the reply fails before its first save
    start_long_reply(qtbot, window)
    pending = window.pending
    assert pending.message_id is None
    with qtbot.waitSignal(window.host.turn_finished, timeout=20000):   # the engine's own turn, stopped
        window.host.cancel(pending.turn_id)
        window.host.turn_failed.emit(pending.turn_id, "the engine ran out of memory")
    answer = window.conversation.path[-1]
    assert answer.role == "assistant" and answer.content and pending.text.startswith(answer.content)
    assert answer.stats["error"] == "the engine ran out of memory"


def test_a_reply_stopped_before_its_first_word_leaves_no_empty_answer(qtbot, window):
    send(qtbot, window, "a first question")
    window.options["max_tokens"] = 100000
    window.send("a second question")
    pending = window.pending
    with qtbot.waitSignal(window.host.turn_finished, timeout=20000):   # the engine's own turn, stopped
        window.host.cancel(pending.turn_id)
        window.host.turn_finished.emit(pending.turn_id, {"stop_reason": "cancelled", "generated_tokens": 0})
    assert window.pending is None
    assert [m.content for m in window.conversation.path][-1] == "a second question"
    window.regenerate_last()   # answers the unanswered question again
    qtbot.waitUntil(lambda: window.pending is not None and window.pending.text != "", timeout=20000)
    window.stop()
    qtbot.waitUntil(lambda: window.pending is None, timeout=20000)
    assert window.conversation.path[-1].role == "assistant"


def test_branches_of_other_chats_switch_while_a_reply_streams_and_its_own_say_why_not(qtbot, window):
    send(qtbot, window, "first")
    first = window.conversation
    window.regenerate(first.path[-1].id)
    qtbot.waitUntil(lambda: window.pending is None, timeout=20000)
    window.new_chat()
    start_long_reply(qtbot, window, "a long one")
    streaming = window.conversation.id
    window.open_conversation(first.id)
    window.switch_variant(window.conversation.path[-1].id, -1)
    assert window.conversation.path[-1].id == window.conversation.tree.siblings(window.conversation.path[-1].id)[0].id
    window.open_conversation(streaming)
    question = window.conversation.path[0]
    window.switch_variant(question.id, -1)
    assert "still writing a reply" in window.notice_bar.label.text() and window.pending is not None
    window.stop()
    qtbot.waitUntil(lambda: window.pending is None, timeout=20000)


def test_a_search_hit_on_another_branch_of_the_chat_being_answered_waits_for_the_reply(qtbot, window):
    send(qtbot, window, "tell me about pineapples")
    original = window.conversation.path[0]
    window.begin_edit(original.id)
    send(qtbot, window, "tell me about apples")
    window.options["max_tokens"] = 100000
    window.send("and pears?")
    qtbot.waitUntil(lambda: window.pending is not None and window.pending.text != "", timeout=20000)
    window.open_search_hit(window.conversation.id, original.id)
    assert "open it again once the reply is done" in window.notice_bar.label.text()
    assert window.conversation.path[0].content == "tell me about apples" and window.streaming_bubble is not None
    window.stop()
    qtbot.waitUntil(lambda: window.pending is None, timeout=20000)


def test_a_title_being_typed_in_the_sidebar_survives_a_refresh(qtbot, window):
    send(qtbot, window, "a chat to rename")
    item = window.sidebar.list.item(0)
    window.sidebar.list.editItem(item)
    assert window.sidebar.list.state() == QAbstractItemView.State.EditingState
    window.refresh_sidebar()   # as when a reply ends
    assert window.sidebar.list.state() == QAbstractItemView.State.EditingState


def test_a_chat_with_voice_messages_goes_on_with_a_model_without_audio(qtbot, window):
    window.media.drop.attach_paths([FIXTURES / "media" / "audio_16k.wav"])
    send(qtbot, window, "what do you hear?")
    assert window.library.attachments(window.conversation.path[0].id)
    assert window.select_model(FIXTURES / "models" / "tiny-31b") and window.load_selected_model()
    qtbot.waitUntil(lambda: window.model_loaded, timeout=30000)
    send(qtbot, window, "and now, in words?")
    answer = window.conversation.path[-1]
    assert answer.role == "assistant" and "error" not in answer.stats
    assert "Left out of this turn: 1 audio clip" in window.notice_bar.label.text()


def test_a_damaged_text_size_setting_falls_back_to_the_system_size(qtbot, window):
    QSettings().setValue("view/text_points", "big")
    reopened = MainWindow(window.library, host=window.host, model_folders=[])
    qtbot.addWidget(reopened)
    assert reopened.text_points == QApplication.font().pointSizeF()
    QSettings().setValue("view/text_points", "1e9")
    assert MainWindow._saved_text_points() == QApplication.font().pointSizeF() + 16


def test_loading_a_model_mid_reply_asks_then_stops_the_reply_first(qtbot, window):
    start_long_reply(qtbot, window)
    questions = []
    window.confirm = lambda question: questions.append(question) or False
    assert not window.load_selected_model() and window.pending is not None   # "no": the reply goes on
    window.confirm = lambda question: True
    assert window.load_selected_model()
    qtbot.waitUntil(lambda: window.model_loaded, timeout=30000)
    assert "still writing a reply" in questions[0]
    assert window.pending is None and window.conversation.path[-1].stats["stop_reason"] == "cancelled"


def test_a_read_only_history_is_shown_and_every_change_is_refused_with_the_reason(qtbot, window, tmp_path):
    writable = Library(tmp_path / "history")
    chat = Conversation(writable, writable.create_conversation("Kept chat"))
    chat.add_answer(chat.add_user_message("a question"), "an answer")
    writable.close()
    library = Library(tmp_path / "history", read_only=True)
    shown = MainWindow(library, host=window.host, model_folders=[])
    qtbot.addWidget(shown)
    shown.open_conversation(chat.id)
    assert [b.state.content for b in shown.view.bubbles] == ["a question", "an answer"]

    def refused(action) -> str:
        shown.notice_bar.dismiss()
        action()
        return shown.notice_bar.label.text()

    assert "could not be written" in refused(lambda: shown._rename(chat.id, "New title"))
    assert "could not be written" in refused(lambda: shown.delete_conversation(chat.id))
    assert "could not be written" in refused(lambda: shown._set_thinking(True))
    shown.input.setPlainText("another question")
    assert "could not be written" in refused(lambda: shown.send("another question"))
    assert shown.input.toPlainText() == "another question" and shown.pending is None
    assert "could not be written" in refused(shown.new_chat)
    assert shown.conversation.id == chat.id and [row.title for row in library.conversations()] == ["Kept chat"]
    assert [shown.sidebar.list.item(row).text() for row in range(shown.sidebar.list.count())] == ["Kept chat"]
    shown.close()
    library.close()


def test_an_image_alone_can_be_sent(qtbot, window):
    window.media.drop.attach_paths([IMAGE])
    qtbot.keyClick(window.input, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: window.pending is None and window.conversation is not None
                    and len(window.conversation.path) == 2, timeout=20000)
    question = window.conversation.path[0]
    assert question.content == "" and [a.kind for a in window.library.attachments(question.id)] == ["image"]


def test_regenerate_answers_a_question_whose_turn_failed_unanswered(qtbot, window):
    window.new_chat()
    window.conversation.add_user_message("left unanswered")
    window.render_conversation()
    window.actions_by_name["regenerate"].trigger()
    qtbot.waitUntil(lambda: window.pending is None and window.conversation.path[-1].role == "assistant",
                    timeout=20000)
    assert [m.role for m in window.conversation.path] == ["user", "assistant"]


def test_chat_settings_show_and_keep_the_chat_s_thinking_toggle(qtbot, window):
    window.new_chat()
    window.thinking_box.setChecked(True)
    dialog = ChatSettingsDialog(window.library, window.conversation.settings, window)
    qtbot.addWidget(dialog)
    assert dialog.form.thinking.isChecked()
    window.set_chat_settings(dialog.chat_settings())   # OK without a change
    assert window.thinking_box.isChecked() and window.chat_options()["thinking"] is True


def test_media_a_new_model_cannot_take_are_named_in_the_notice_bar(qtbot, window):
    window.media.drop.attach_paths([FIXTURES / "media" / "audio_16k.wav"])
    window._on_loaded({**window.model_info, "modalities": ["image", "text"], "variant": "26b-a4b"})
    assert window.media.attachments.items == []
    assert "audio_16k.wav removed" in window.notice_bar.label.text()


def test_new_chat_stays_in_a_chat_that_is_still_empty(qtbot, window):
    before = len(window.library.conversations())
    for _ in range(3):
        window.actions_by_name["new"].trigger()
    assert len(window.library.conversations()) == before + 1


def test_quitting_during_a_reply_asks_first_and_keeps_what_was_written(qtbot, window):
    start_long_reply(qtbot, window)
    questions = []
    window.confirm = lambda question: questions.append(question) and False
    window.close()
    assert window.isVisible() and window.pending is not None and "Stop it and quit?" in questions[0]
    window.confirm = lambda question: True
    turn, conversation = window.pending.turn_id, window.pending.conversation_id
    with qtbot.waitSignal(window.host.turn_finished, timeout=20000):
        window.close()
        window.host.cancel(turn)   # the shared engine outlives this window: end the turn for the next test
    assert not window.isVisible()
    answer = window.library.messages(conversation)[-1]
    assert answer.role == "assistant" and answer.content and answer.stats["stop_reason"] == "interrupted"


def test_text_size_changes_and_is_remembered(qtbot, window):
    standard = QApplication.font().pointSizeF()
    window.actions_by_name["bigger"].trigger()
    window.actions_by_name["bigger"].trigger()
    assert window.view.font().pointSizeF() == window.input.font().pointSizeF() == standard + 2
    assert float(QSettings().value("view/text_points")) == standard + 2
    window.actions_by_name["actual_size"].trigger()
    assert window.view.font().pointSizeF() == standard


def test_view_window_and_edit_menu_commands(qtbot, window):
    window.actions_by_name["sidebar"].trigger()
    assert not window.sidebar.isVisible()
    window.actions_by_name["sidebar"].trigger()
    assert window.sidebar.isVisible()
    send(qtbot, window, "edit me later")
    window.actions_by_name["edit_last"].trigger()
    assert window.editing_id == window.conversation.path[0].id and window.input.toPlainText() == "edit me later"
    focus_input(qtbot, window)
    window.actions_by_name["selectAll"].trigger()
    window.actions_by_name["copy"].trigger()
    assert QApplication.clipboard().text() == "edit me later"


def test_up_in_an_empty_box_edits_the_last_message(qtbot, window):
    send(qtbot, window, "first")
    send(qtbot, window, "second")
    qtbot.keyClick(window.input, Qt.Key.Key_Up)
    assert window.editing_id == window.conversation.path[2].id and window.input.toPlainText() == "second"
    qtbot.keyClick(window.input, Qt.Key.Key_Up)   # a box with text: Up moves the cursor, nothing else
    assert window.input.toPlainText() == "second"


def test_a_search_hit_opens_its_branch_scrolled_to_the_marked_message(qtbot, window):
    send(qtbot, window, "tell me about pineapples")
    original = window.conversation.path[0]
    for index in range(6):   # enough turns that the hit is out of sight at the end
        send(qtbot, window, f"filler question number {index} " * 8)
    window.begin_edit(original.id)
    send(qtbot, window, "tell me about apples")   # the active branch no longer holds the hit
    window.new_chat()
    window.sidebar.search_box.setText("pineapples")
    qtbot.waitUntil(lambda: window.sidebar.list.count() == 1, timeout=5000)
    window.sidebar.list.setCurrentRow(0)
    assert window.conversation.path[0].id == original.id
    bubble = next(b for b in window.view.bubbles if b.state.message_id == original.id)
    assert bubble.property("found") is True
    qtbot.waitUntil(lambda: window.view.verticalScrollBar().maximum() > 0, timeout=5000)
    qtbot.wait(50)
    top = bubble.mapTo(window.view.widget(), bubble.rect().topLeft()).y()
    bar = window.view.verticalScrollBar()
    assert bar.value() <= top < bar.value() + window.view.viewport().height()


def test_pasted_images_and_recordings_keep_their_names_in_the_history(qtbot, window):
    import numpy as np
    from PySide6.QtGui import QImage

    window.media.drop.attach_image(QImage(str(IMAGE)))
    tone = (0.3 * np.sin(np.arange(16_000) * 0.1)).astype(np.float32)
    window.media.attachments.add_audio(tone, 16_000, "Recording 1")
    send(qtbot, window, "what do you make of these?")
    stored = window.library.attachments(window.conversation.path[0].id)
    assert [(a.kind, a.name) for a in stored] == [("image", "Pasted image 1.png"), ("audio", "Recording 1")]


def test_sending_while_attached_files_are_still_read_waits_for_them(qtbot, window, monkeypatch):
    release = threading.Event()
    decode = window.media.attachments.decode_path
    monkeypatch.setattr(window.media.attachments, "decode_path", lambda path: release.wait(10) and decode(path))
    window.media.drop.read_paths([IMAGE])
    assert window.statusBar().currentMessage() == f"Reading {IMAGE.name}…"
    window.input.setPlainText("what is this?")
    window.send("what is this?")
    assert window.pending is None and "Still reading" in window.notice_bar.label.text()
    assert window.input.toPlainText() == "what is this?"
    release.set()
    qtbot.waitUntil(lambda: not window.media.drop.busy, timeout=10000)
    assert window.statusBar().currentMessage() == ""
    send(qtbot, window, "what is this?")
    assert [a.name for a in window.library.attachments(window.conversation.path[0].id)] == [IMAGE.name]


def test_find_in_the_chat_marks_each_match_in_turn_and_esc_closes_it(qtbot, window):
    for text in ("apples are red", "bananas are yellow", "more APPLES please"):
        send(qtbot, window, text)
    window.actions_by_name["find"].trigger()
    assert window.find_bar.isVisible() and window.find_box.hasFocus()
    qtbot.keyClicks(window.find_box, "apples")
    marked = [b.state.content for b in window.view.bubbles if b.property("found")]
    assert marked == ["more APPLES please"] and window.find_status.text() == "2 of 2"   # the newest first
    qtbot.keyClick(window.find_box, Qt.Key.Key_Return)   # next, wrapping around to the top
    assert [b.state.content for b in window.view.bubbles if b.property("found")] == ["apples are red"]
    assert window.find_status.text() == "1 of 2"
    window.actions_by_name["find_next"].trigger()
    assert window.find_status.text() == "2 of 2"
    window.actions_by_name["find_previous"].trigger()
    assert window.find_status.text() == "1 of 2"
    qtbot.keyClicks(window.find_box, " pie")
    assert window.find_status.text() == "Not found" and not any(b.property("found") for b in window.view.bubbles)
    qtbot.keyClick(window.find_box, Qt.Key.Key_Escape)
    assert not window.find_bar.isVisible()


def test_a_message_the_meter_counts_as_too_long_is_not_sent(qtbot, window):
    window.model_info = {**window.model_info, "context_length": 40}   # as a model with a tiny context
    window.input.setPlainText("many words to count " * 30)
    qtbot.waitUntil(lambda: window.context_meter.usage is not None and window.context_meter.usage.total > 40
                    and window.counted_draft is not None, timeout=10000)
    qtbot.keyClick(window.input, Qt.Key.Key_Return)
    assert window.pending is None and window.conversation is None
    assert "This message does not fit" in window.notice_bar.label.text()
    assert window.input.toPlainText() == "many words to count " * 30


def test_a_new_question_after_an_unanswered_one_is_asked_beside_it(qtbot, window):
    window.new_chat()
    failed = window.conversation.add_user_message("a question whose turn failed")
    send(qtbot, window, "the next question")
    path = window.conversation.path
    assert [m.content for m in path][:1] == ["the next question"] and path[1].role == "assistant"
    assert window.conversation.tree.variant(path[0].id).count == 2 and failed not in [m.id for m in path]


def test_the_first_thinking_click_without_a_chat_shows_what_the_chat_stores(qtbot, window):
    assert window.conversation is None
    window.thinking_box.click()
    assert window.thinking_box.isChecked() and window.conversation.settings["thinking"] is True


def test_the_meter_counts_again_when_the_chat_settings_change(qtbot, window):
    send(qtbot, window, "hello")
    qtbot.waitUntil(lambda: window.context_meter.usage is not None, timeout=10000)
    before = window.context_meter.usage.total
    window.set_chat_settings({"overrides": {"system": "You answer in the style of a pirate. " * 20}})
    qtbot.waitUntil(lambda: window.context_meter.usage.total > before + 100, timeout=10000)


def test_esc_throws_a_recording_away_and_each_button_stops_only_its_own_mode(qtbot, window):
    from tests.test_app_media_recorder import FakeMicrophone, tone_bytes
    from app.media.recorder import PcmFormat

    recorder, controls = window.media.recorder, window.media.controls
    finished = []
    recorder.finished.connect(lambda wave, mode: finished.append(mode))
    pcm = PcmFormat(16_000, 1, np.int16)
    recorder.start_capture((mic := FakeMicrophone()).buffer, pcm, mode="ask")
    mic.speak(qtbot, tone_bytes(pcm, 1.0))
    controls.dictate_button.click()   # the other mode's button: nothing happens
    assert recorder.recording and finished == []
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert not recorder.recording and finished == [] and window.pending is None
    assert window.conversation is None   # nothing was sent


def test_dictation_needs_a_model_and_one_at_a_time(qtbot, window):
    tone = (0.3 * np.sin(np.arange(16_000) * 0.1)).astype(np.float32)
    window.model_loaded = False
    window.dictate(tone)
    assert window.dictation is None and "Dictation needs a loaded model" in window.notice_bar.label.text()
    window.model_loaded = True
    window.dictate(tone)
    first = window.dictation
    window.dictate(tone)
    assert window.dictation is first and "Still writing down the last dictation" in window.notice_bar.label.text()
    qtbot.waitUntil(lambda: window.dictation is None, timeout=20000)


def test_the_voice_buttons_have_names_a_screen_reader_can_say(window):
    controls = window.media.controls
    assert [b.accessibleName() for b in (controls.attach_button, controls.mic_button, controls.dictate_button)] == \
        ["Attach files", "Record a spoken question", "Dictate into the message box"]


def test_opened_thoughts_stay_open_when_the_chat_is_drawn_again(qtbot, window):
    window.thinking_box.click()
    send(qtbot, window, "think about it")
    answer = window.conversation.path[-1]
    window.library.update_message(answer.id, answer.content or "ok", "some thoughts", answer.stats)
    window.conversation.reload()
    window.render_conversation()
    bubble = window.view.bubbles[-1]
    assert bubble.thoughts_toggle.isVisibleTo(bubble) and not bubble.thoughts.isVisibleTo(bubble)
    bubble.thoughts_toggle.click()
    chat = window.conversation.id
    window.open_conversation(window.library.create_conversation())
    window.open_conversation(chat)
    redrawn = window.view.bubbles[-1]
    assert redrawn is not bubble and redrawn.thoughts.isVisibleTo(redrawn)


def test_a_new_turn_keeps_the_bubbles_before_it_and_they_still_answer_once(qtbot, window, monkeypatch):
    send(qtbot, window, "first question")
    earlier = list(window.view.bubbles)
    send(qtbot, window, "second question")
    assert window.view.bubbles[:2] == earlier and len(window.view.bubbles) == 4
    asked = []
    monkeypatch.setattr(window, "_start_turn", asked.append)
    earlier[1].regenerate.emit(earlier[1].state.message_id)
    assert len(asked) == 1


def test_stats_say_when_a_reply_was_cut_off():
    from app.widgets import format_stats

    base = {"generated_tokens": 4, "time_to_first_token": 0.1, "decode_tokens_per_second": 9.0, "cached_tokens": 0}
    assert format_stats({**base, "stop_reason": "context"}).endswith("cut off: the context window is full")
    assert "token limit" in format_stats({**base, "stop_reason": "length"})
    assert format_stats({**base, "stop_reason": "stop"}).endswith("0 cached")


def test_presets_keep_edits_refuse_taken_names_and_keep_the_default(qtbot, window):
    dialog = window.open_settings()
    qtbot.addWidget(dialog)
    dialog.picker.setCurrentText("Precise")
    dialog.form.temperature.setValue(0.42)
    dialog.picker.setCurrentText("Reasoning")   # switching away keeps the edit
    assert presets(window.library)["Precise"]["temperature"] == 0.42
    system = presets(window.library)["Reasoning"]["system"]
    dialog.form.system.setPlainText("something else")
    assert not dialog.add("Reasoning") and "already a preset" in dialog.status.text()
    dialog.form.system.setPlainText(system)
    assert presets(window.library)["Reasoning"]["system"] == system
    dialog.picker.setCurrentText("Balanced")
    assert not dialog.delete_button.isEnabled()
    dialog.delete()
    assert "Balanced" in presets(window.library)
    dialog.form.top_p.setValue(0.0)
    assert dialog.form.top_p.value() == 0.01
    dialog.form.top_k.setValue(12)
    dialog.reject()   # closing keeps the edit too
    assert presets(window.library)["Balanced"]["top_k"] == 12


def test_a_refused_microphone_offers_the_privacy_settings(qtbot, window, monkeypatch):
    from PySide6.QtGui import QDesktopServices

    from app.media.recorder import DENIED, PRIVACY_SETTINGS_URL

    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toString()))
    window.media.recorder.failed.emit(DENIED)
    assert window.notice_bar.label.text() == DENIED and window.notice_bar.action_button.isVisibleTo(window)
    window.notice_bar.action_button.click()
    assert opened == [PRIVACY_SETTINGS_URL]
    window.media.recorder.failed.emit("No microphone was found.")   # nothing to open for that
    assert not window.notice_bar.action_button.isVisibleTo(window)


def test_an_export_or_backup_that_cannot_be_written_says_why(qtbot, window, tmp_path):
    send(qtbot, window, "keep me")
    blocker = tmp_path / "not a folder"
    blocker.write_text("a file where a folder should be")
    assert window.export_chat_markdown(blocker) is None
    assert "could not be exported" in window.notice_bar.label.text()
    assert window.backup_library(blocker) is None
    assert "could not be backed up" in window.notice_bar.label.text()
