"""How bubbles show text: the user's as typed, replies as Markdown without HTML, links that never blank
a reply, a stats line that says why a reply ended, and a view that keeps to the newest message."""

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtTest import QTest

from app.widgets import ConversationView, MessageState, MessageWidget, format_stats


def bubble(qtbot, role: str, text: str, **fields) -> MessageWidget:
    widget = MessageWidget(MessageState(1, role, text, **fields))
    qtbot.addWidget(widget)
    return widget


def test_user_messages_show_exactly_what_was_typed(qtbot):
    typed = "Why does List<String> fail?\ndef f(x):\n    return x*2\n__init__ and *stars*"
    assert bubble(qtbot, "user", typed).body.toPlainText() == typed


def test_replies_keep_markdown_but_show_html_tags_as_text(qtbot):
    reply = bubble(qtbot, "assistant", "In Java, **List<String>** holds strings.",
                   thinking="Is <T> generic?")
    assert reply.body.toPlainText() == "In Java, List<String> holds strings."
    assert reply.thoughts.toPlainText() == "Is <T> generic?"


def click_on(block, text: str) -> None:
    cursor = block.document().find(text)
    cursor.setPosition(cursor.selectionStart() + 2)
    QTest.mouseClick(block.viewport(), Qt.MouseButton.LeftButton, pos=block.cursorRect(cursor).center())


def test_links_open_in_the_browser_only_for_web_and_mail_and_never_blank_the_reply(qtbot, monkeypatch):
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toString()))
    reply = bubble(qtbot, "assistant", "See the [setup guide](docs/setup.md) or [the site](https://example.com).")
    reply.resize(600, 200)
    reply.show()
    block = reply.body.widgets[0]
    click_on(block, "setup guide")
    click_on(block, "the site")
    block.anchorClicked.emit(QUrl("file:///etc/passwd"))
    block.anchorClicked.emit(QUrl("mailto:someone@example.com"))
    assert opened == ["https://example.com", "mailto:someone@example.com"]
    assert block.toPlainText() == "See the setup guide or the site."


def test_stats_of_a_reply_that_ended_without_figures_say_why():
    assert format_stats({"stop_reason": "engine stopped", "error": "crashed"}) == "stopped: the engine stopped"
    assert format_stats({"stop_reason": "failed", "error": "boom"}) == "stopped: an error ended this reply"
    assert format_stats({"stop_reason": "odd"}) == "stopped: odd"
    assert format_stats({"stop_reason": "interrupted"}).startswith("interrupted:")
    normal = {"stop_reason": "stop", "generated_tokens": 3, "time_to_first_token": 0.5,
              "decode_tokens_per_second": 9.0, "cached_tokens": 0}
    assert format_stats(normal) == "3 tokens · TTFT 0.50 s · 9.0 tok/s · 0 cached"


def long_view(qtbot) -> tuple[ConversationView, list[MessageWidget]]:
    view = ConversationView()
    qtbot.addWidget(view)
    view.resize(500, 300)
    view.show()
    view.show_messages([MessageState(i, "assistant", f"answer {i}\n\n" + "word " * 80) for i in range(1, 9)])
    return view, view.bubbles


def test_opening_a_long_conversation_ends_at_the_newest_message(qtbot):
    view, _ = long_view(qtbot)
    bar = view.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 1000)
    qtbot.wait(50)
    assert bar.value() == bar.maximum()


def grow(qtbot, view: ConversationView, last: MessageWidget) -> int:
    """One streamed update as the window makes it; the new scroll range once laid out."""
    bar = view.verticalScrollBar()
    before = bar.maximum()
    last.state.content += "\n\nmore " * 20
    last.render_state()
    view.follow_stream()
    qtbot.waitUntil(lambda: bar.maximum() > before)
    qtbot.wait(20)
    return bar.maximum()


def test_a_streaming_reply_is_followed_only_while_the_view_is_at_the_end(qtbot):
    view, bubbles = long_view(qtbot)
    bar = view.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 1000 and bar.value() == bar.maximum())
    end = grow(qtbot, view, bubbles[-1])
    assert bar.value() == end
    bar.setValue(100)   # the user scrolls up to read
    grow(qtbot, view, bubbles[-1])
    assert bar.value() == 100
    bar.setValue(bar.maximum() - 3)   # and back down, near enough to the end
    end = grow(qtbot, view, bubbles[-1])
    assert bar.value() == end


def very_long_view(qtbot, turns: int = 100, words: int = 30, height: int = 400) -> ConversationView:
    view = ConversationView()
    qtbot.addWidget(view)
    view.resize(500, height)
    view.show()
    view.show_messages([MessageState(i, "assistant" if i % 2 else "user", f"message {i}\n\n" + "word " * words)
                        for i in range(turns)])
    return view


def test_a_long_chat_opens_with_its_newest_bubbles_and_builds_older_ones_when_scrolled_to(qtbot):
    view = very_long_view(qtbot)
    bar = view.verticalScrollBar()
    first_built = len(view.bubbles)
    assert first_built < 100 and [b.state.message_id for b in view.bubbles] == list(range(100 - first_built, 100))
    qtbot.waitUntil(lambda: bar.maximum() > 0 and bar.value() == bar.maximum())
    top = view.bubbles[0]
    bar.setValue(0)   # the user scrolls to the top of what is built
    margin = top.y()
    qtbot.waitUntil(lambda: len(view.bubbles) > first_built)
    assert view.bubbles[-first_built:][0] is top
    assert [b.state.message_id for b in view.bubbles] == list(range(100 - len(view.bubbles), 100))
    qtbot.waitUntil(lambda: top.y() > margin)
    qtbot.wait(50)
    assert bar.value() == top.y() - margin   # what the user was reading stays in place, older bubbles above it


def test_a_long_chat_finds_and_jumps_to_messages_not_built_yet(qtbot):
    view = very_long_view(qtbot)
    built = len(view.bubbles)
    assert view.bubbles[0].state.message_id > 3
    found = view.states_containing("message 3\n")
    assert [state.message_id for state in found] == [3] and len(view.bubbles) == built   # finding builds nothing
    shown = view.show_found(found[0])
    assert shown.state.message_id == 3 and shown.property("found") and view.bubbles[0] is shown
    view = very_long_view(qtbot)
    shown = view.show_message(1)
    assert shown is not None and shown.state.message_id == 1 and shown.property("found")
    assert view.bubbles[0].state.message_id == 1


def test_scrolling_up_from_a_found_message_builds_above_it_without_pulling_the_view_back(qtbot):
    view = very_long_view(qtbot)
    bar = view.verticalScrollBar()
    shown = view.show_message(50)
    qtbot.waitUntil(lambda: bar.maximum() > 0)
    qtbot.wait(50)
    reading = view.bubbles[0]
    built = len(view.bubbles)
    bar.setValue(0)   # the user scrolls up past the found message to the top of what is built
    margin = reading.y()
    qtbot.waitUntil(lambda: len(view.bubbles) > built and reading.y() > margin)
    qtbot.wait(50)
    assert bar.value() == reading.y() - margin and shown.property("found")


def test_a_redraw_of_a_long_chat_keeps_what_is_built_and_a_new_chat_drops_the_rest(qtbot):
    view = very_long_view(qtbot)
    states = view.unbuilt + [b.state for b in view.bubbles]
    built = list(view.bubbles)
    view.show_messages(states + [MessageState(100, "user", "one more")])
    assert view.bubbles[:-1] == built and len(view.unbuilt) == 100 - len(built)
    view.show_messages([MessageState(500, "user", "another chat")])
    assert view.unbuilt == [] and [b.state.message_id for b in view.bubbles] == [500]


def test_a_long_chat_of_short_messages_fills_a_tall_window_and_still_ends_at_the_newest(qtbot):
    view = very_long_view(qtbot, words=0, height=3000)
    first_built = len(view.bubbles)
    bar = view.verticalScrollBar()
    qtbot.waitUntil(lambda: len(view.bubbles) > first_built and bar.maximum() > 0)
    qtbot.wait(100)
    assert bar.value() == bar.maximum() and view.bubbles[-1].state.message_id == 99


def test_a_reply_that_ends_leaves_the_reader_where_they_are_or_at_the_end_if_they_were_there(qtbot):
    view, bubbles = long_view(qtbot)
    bar = view.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 1000 and bar.value() == bar.maximum())
    stored = [bubble.state for bubble in bubbles]
    streaming = MessageState(None, "assistant", "the reply so far")
    view.show_messages(stored + [streaming])
    qtbot.wait(50)
    bar.setValue(100)   # the user scrolls up to read while the reply streams
    view.show_messages(stored + [MessageState(99, "assistant", "the reply, stored " + "word " * 200)], keep_place=True)
    qtbot.wait(50)
    assert bar.value() == 100
    found = view.show_message(3)   # a find match marked while a reply streams stays marked when it ends
    view.show_messages(stored + [MessageState(99, "assistant", "the reply, stored " + "word " * 200),
                                 MessageState(None, "assistant", "")], keep_place=True)
    assert found.property("found") and view.shown_bubble is found
    view.show_bubble(None)
    qtbot.wait(50)
    view.scroll_to_end()   # the user scrolls back down to the end
    view.follow_stream()
    assert view.keeping_to_end
    before = bar.maximum()
    view.show_messages(stored + [MessageState(99, "assistant", "the reply, stored " + "word " * 200),
                                 MessageState(100, "user", "and one more " * 50)], keep_place=True)
    qtbot.waitUntil(lambda: bar.maximum() > before)
    qtbot.wait(50)
    assert bar.value() == bar.maximum()   # a reader at the end follows it
