"""Small widgets that only render state and forward the user's intents as signals."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from PySide6.QtCore import QCoreApplication, QEvent, QSizeF, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import (QDesktopServices, QFontDatabase, QGuiApplication, QKeyEvent, QPalette, QTextCursor,
                           QTextDocument)
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFrame, QHBoxLayout, QLabel, QLineEdit, QListWidget,
                               QListWidgetItem, QPlainTextEdit, QPushButton, QScrollArea, QSizePolicy, QTextBrowser,
                               QToolButton, QVBoxLayout, QWidget)

from .highlight import CodeHighlighter
from .media.history import AttachmentStrip
from .rich_text import Block, split_blocks
from .storage import Attachment, ConversationRow, SearchHit

INTERRUPTED = "interrupted"   # the stop reason of a reply saved while it was still being written
# Replies the window saved itself, without the engine's figures, say why they ended instead.
STOPS_IN_WORDS = {
    INTERRUPTED: "interrupted: Lantern closed while this reply was being written",
    "engine stopped": "stopped: the engine stopped",
    "failed": "stopped: an error ended this reply",
}


def format_stats(stats: dict) -> str:
    """One line under a reply: tokens, time to first token, decode speed, tokens reused from the cache,
    and the image and audio tokens the prompt carried (did the model really get the attachments?)."""
    if not stats:
        return ""
    if "generated_tokens" not in stats:
        reason = stats.get("stop_reason", "")
        return STOPS_IN_WORDS.get(reason, f"stopped: {reason or 'reason unknown'}")
    parts = [f"{stats.get('generated_tokens', 0)} tokens",
             f"TTFT {stats.get('time_to_first_token', 0.0):.2f} s",
             f"{stats.get('decode_tokens_per_second', 0.0):.1f} tok/s",
             f"{stats.get('cached_tokens', 0)} cached"]
    parts += [f"{stats[key]} {kind} tokens in the prompt" for key, kind in
              (("image_tokens", "image"), ("audio_tokens", "audio")) if stats.get(key)]
    ending = {"cancelled": "stopped", "length": "cut off at the reply's token limit (Chat Settings)",
              "context": "cut off: the context window is full"}.get(stats.get("stop_reason", ""))
    return " · ".join(parts + ([ending] if ending else []))


SPEAKERS = {"user": "You", "assistant": "Gemma", "notice": "Lantern"}


class ChatInput(QPlainTextEdit):
    """Enter sends (the window decides whether there is anything to send: text or media), Shift+Enter
    starts a new line, and Up in an empty box asks to edit the last message."""

    submitted = Signal(str)
    edit_last = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setTabChangesFocus(True)  # Tab reaches Send and the media buttons, as in any text field

    def keyPressEvent(self, event: QKeyEvent) -> None:
        is_enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if is_enter and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.submitted.emit(self.toPlainText().strip())
            return
        if event.key() == Qt.Key.Key_Up and not self.toPlainText():
            self.edit_last.emit()
            return
        super().keyPressEvent(event)


class NoticeBar(QFrame):
    """Problems with what the user just did (a file that could not be attached, no microphone), shown
    above the input until dismissed or the next message goes out; the newest few lines are kept."""

    KEPT_LINES = 3

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("notice-bar")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.label = QLabel(wordWrap=True)
        self.label.setAccessibleName("Notice")
        self.close_button = QToolButton(text="✕", autoRaise=True)
        self.close_button.setAccessibleName("Dismiss notice")
        self.close_button.setToolTip("Dismiss")
        self.close_button.clicked.connect(self.dismiss)
        self.action_button = QPushButton(visible=False, accessibleName="Notice action")
        self.action_button.clicked.connect(self._act)
        self._action: Callable[[], None] | None = None
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 4, 4, 4)
        row.addWidget(QLabel("⚠"))
        row.addWidget(self.label, 1)
        row.addWidget(self.action_button, alignment=Qt.AlignmentFlag.AlignTop)
        row.addWidget(self.close_button, alignment=Qt.AlignmentFlag.AlignTop)
        self.lines: list[str] = []
        self.setVisible(False)

    def add(self, text: str, action: tuple[str, Callable[[], None]] | None = None) -> None:
        """Show `text`; `action` (a button's label and what it does) offers the way out, e.g. a settings page."""
        self.lines = (self.lines + [text])[-self.KEPT_LINES:]
        self.label.setText("\n".join(self.lines))
        self._action = action[1] if action else None
        self.action_button.setText(action[0] if action else "")
        self.action_button.setAccessibleName(action[0] if action else "Notice action")
        self.action_button.setVisible(action is not None)
        self.setVisible(True)

    def _act(self) -> None:
        if self._action is not None:
            self._action()

    def dismiss(self) -> None:
        self.lines = []
        self._action = None
        self.action_button.setVisible(False)
        self.label.clear()
        self.setVisible(False)


def is_dark(widget: QWidget) -> bool:
    return widget.palette().color(QPalette.ColorRole.Window).lightness() < 128


class CodeBlock(QFrame):
    """A fenced code block: language, a copy button, monospaced coloured text sized to its content."""

    def __init__(self, code: str, language: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("code-block")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 6)
        header = QHBoxLayout()
        self.language_label = QLabel(language or "code")
        self.language_label.setObjectName("code-language")
        self.copy_button = QToolButton(text="Copy")
        self.copy_button.setAccessibleName(f"Copy {language or 'code'} block")
        self.copy_button.clicked.connect(self.copy_code)
        header.addWidget(self.language_label)
        header.addStretch(1)
        header.addWidget(self.copy_button)
        layout.addLayout(header)
        self.editor = QPlainTextEdit(readOnly=True, frameShape=QFrame.Shape.NoFrame, undoRedoEnabled=False)
        self.editor.setAccessibleName(f"{language or 'Code'} code")
        self.editor.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.editor.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.editor.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.highlighter = CodeHighlighter(self.editor.document(), language, dark=is_dark(self))
        layout.addWidget(self.editor)
        self.language = language
        self.set_code(code)

    def set_code(self, code: str) -> None:
        shown = self.editor.toPlainText()
        if code.startswith(shown):   # a streaming block grows at its end: only the new text is laid out and coloured
            if len(code) > len(shown):
                end = QTextCursor(self.editor.document())
                end.movePosition(QTextCursor.MoveOperation.End)
                end.insertText(code[len(shown):])
        else:
            self.editor.setPlainText(code)
        lines = max(1, self.editor.document().blockCount())
        scrollbar = self.editor.horizontalScrollBar().sizeHint().height()
        self.editor.setFixedHeight(lines * self.editor.fontMetrics().lineSpacing() + scrollbar + 10)

    def code(self) -> str:
        return self.editor.toPlainText()

    def copy_code(self) -> None:
        QGuiApplication.clipboard().setText(self.code())
        self.copy_button.setText("Copied")


class MathBlock(QLabel):
    """Display math as readable Unicode in a monospaced, centred line."""

    def __init__(self, text: str, parent: QWidget | None = None):
        super().__init__(text, parent)
        self.setObjectName("math-block")
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.setAccessibleName("Formula")


class RichText(QWidget):
    """A reply as prose, code and math blocks. While it streams only the blocks that changed are
    touched (normally the last one), so a long reply never re-lays out from the top per update."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.column = QVBoxLayout(self)
        self.column.setContentsMargins(0, 0, 0, 0)
        # As tall as its blocks, never stretched: spare room belongs below the last bubble.
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self.blocks: list[Block] = []
        self.widgets: list[QWidget] = []

    def set_markdown(self, markdown: str) -> None:
        blocks = split_blocks(markdown)
        for index, block in enumerate(blocks):
            if index < len(self.blocks) and block == self.blocks[index]:
                continue
            if index >= len(self.widgets) or not self._update_in_place(self.widgets[index], self.blocks[index],
                                                                       block):
                self._put(index, self._make(block))
        for stale in self.widgets[len(blocks):]:
            self.column.removeWidget(stale)
            stale.deleteLater()
        self.widgets = self.widgets[:len(blocks)]
        self.blocks = blocks

    def _put(self, index: int, widget: QWidget) -> None:
        if index < len(self.widgets):
            self.column.replaceWidget(self.widgets[index], widget)
            self.widgets[index].deleteLater()
            self.widgets[index] = widget
        else:
            self.column.addWidget(widget)
            self.widgets.append(widget)

    @staticmethod
    def _update_in_place(widget: QWidget, old: Block, new: Block) -> bool:
        if old.kind != new.kind or old.language != new.language:
            return False
        if new.kind == "code":
            widget.set_code(new.text)
        elif new.kind == "math":
            widget.setText(new.text)
        else:
            widget.set_markdown(new.text)
        return True

    @staticmethod
    def _make(block: Block) -> QWidget:
        if block.kind == "code":
            return CodeBlock(block.text, block.language)
        if block.kind == "math":
            return MathBlock(block.text)
        return MarkdownBlock(block.text)

    def toPlainText(self) -> str:
        parts = []
        for widget in self.widgets:
            parts.append(widget.code() if isinstance(widget, CodeBlock)
                         else widget.text() if isinstance(widget, MathBlock) else widget.toPlainText())
        return "\n".join(parts)

    def code_blocks(self) -> list[CodeBlock]:
        return [widget for widget in self.widgets if isinstance(widget, CodeBlock)]


class FittedText(QTextBrowser):
    """Read-only, selectable text whose height follows its content, so the outer scroll area does the
    scrolling."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.document().documentLayout().documentSizeChanged.connect(self._fit_height)

    def _fit_height(self, size: QSizeF) -> None:
        self.setFixedHeight(int(size.height()) + 6)


class PlainText(FittedText):
    """What the user typed, exactly: line breaks, indentation, <tags> and __underscores__ as written."""

    def set_text(self, text: str) -> None:
        if text != self.toPlainText():   # an unchanged re-render keeps what the user has selected
            self.setPlainText(text)


WEB_SCHEMES = {"http", "https", "mailto"}


class MarkdownBlock(FittedText):
    """Model-written Markdown. Raw HTML in it is shown as text (a reply about List<String> keeps it),
    and only web and mail links open, in the system's browser: the block itself never navigates."""

    def __init__(self, markdown: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.setOpenLinks(False)
        self.anchorClicked.connect(self._open_link)
        self.set_markdown(markdown)

    def set_markdown(self, markdown: str) -> None:
        self.document().setMarkdown(markdown, QTextDocument.MarkdownFeature.MarkdownDialectGitHub
                                    | QTextDocument.MarkdownFeature.MarkdownNoHTML)

    @staticmethod
    def _open_link(url: QUrl) -> None:
        if url.scheme().lower() in WEB_SCHEMES:
            QDesktopServices.openUrl(url)


@dataclass
class MessageState:
    """What one bubble shows; `message_id` is None while the reply is still streaming."""
    message_id: int | None
    role: str
    content: str
    thinking: str = ""
    stats: dict | None = None
    variant: tuple[int, int] = (1, 1)
    error: str = ""
    attachments: list[Attachment] = field(default_factory=list)


class MessageWidget(QFrame):
    regenerate = Signal(int)
    edit = Signal(int)
    copy = Signal(str)
    switch_variant = Signal(int, int)
    moved = Signal()   # its position in the conversation changed (the bubbles above it grew)

    def __init__(self, state: MessageState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.setObjectName(f"message-{state.role}")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        # Bubbles keep their content height; the stretch below them takes the spare room.
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        layout = QVBoxLayout(self)
        layout.addLayout(self._header())
        self.thoughts_toggle = QToolButton(text="Thoughts", checkable=True)
        self.thoughts_toggle.setAccessibleName("Show the model's thoughts")
        self.thoughts = RichText()
        self.thoughts.setVisible(False)
        self.thoughts_toggle.toggled.connect(self.thoughts.setVisible)
        layout.addWidget(self.thoughts_toggle)
        layout.addWidget(self.thoughts)
        self.body = PlainText() if state.role == "user" else RichText()
        self.body.setAccessibleName(f"{state.role} message")
        layout.addWidget(self.body)
        self.attachment_strip = AttachmentStrip(state.attachments)
        self.attachment_strip.setVisible(bool(state.attachments))
        layout.addWidget(self.attachment_strip)
        self.stats_label = QLabel()
        self.stats_label.setObjectName("stats")
        layout.addWidget(self.stats_label)
        self.render_state()

    def moveEvent(self, event) -> None:
        super().moveEvent(event)
        self.moved.emit()

    def _header(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.addWidget(QLabel(SPEAKERS.get(self.state.role, "Gemma")))
        row.addStretch(1)
        position, count = self.state.variant
        message_id = self.state.message_id
        if count > 1 and message_id is not None:
            self.variant_label = QLabel(f"{position}/{count}")
            previous, following = QToolButton(text="‹"), QToolButton(text="›")
            for button, name in ((previous, "Previous answer"), (following, "Next answer")):
                button.setAccessibleName(name)
                button.setToolTip(name)
            previous.clicked.connect(lambda: self.switch_variant.emit(message_id, -1))
            following.clicked.connect(lambda: self.switch_variant.emit(message_id, 1))
            for widget in (previous, self.variant_label, following):
                row.addWidget(widget)
        if message_id is not None:
            row.addWidget(self._button("Copy", "Copy message", lambda: self.copy.emit(self.state.content)))
            if self.state.role == "assistant":
                row.addWidget(self._button("Regenerate", "Regenerate answer",
                                           lambda: self.regenerate.emit(message_id)))
            if self.state.role == "user":
                row.addWidget(self._button("Edit", "Edit message", lambda: self.edit.emit(message_id)))
        return row

    @staticmethod
    def _button(text: str, accessible: str, slot) -> QToolButton:
        button = QToolButton(text=text)
        button.setAccessibleName(accessible)
        button.clicked.connect(slot)
        return button

    def render_state(self) -> None:
        """Re-render only this bubble (used at a throttled rate while it streams)."""
        self.thoughts_toggle.setVisible(bool(self.state.thinking))
        self.thoughts.set_markdown(self.state.thinking)
        if self.state.role == "user":
            self.body.set_text(self.state.content)
        else:
            self.body.set_markdown(self._reply_markdown())
        self.stats_label.setText(format_stats(self.state.stats or {}))
        self.stats_label.setVisible(bool(self.state.stats))

    def _reply_markdown(self) -> str:
        waiting = self.state.message_id is None and self.state.role == "assistant"
        markdown = self.state.content or ("…" if waiting else "")
        if self.state.error:
            markdown += f"\n\n**Error:** {self.state.error}"
        return markdown


class ConversationView(QScrollArea):
    """The messages of the active branch, top to bottom.

    Bubbles get their height only when the layout runs, after the call that added or grew them, so
    keeping to the end is done when the scroll range changes: from opening a conversation, and while a
    reply streams, until the user scrolls up to read.

    A long chat opens with its newest bubbles only; older ones are built a batch at a time as the user
    scrolls up to them (or finds or jumps to one), so opening a 150-turn chat costs what opening 12 does."""

    END_SLACK = 8   # pixels from the bottom that still count as "at the end"
    FIRST_BUBBLES = 24   # built when a chat opens
    OLDER_BATCH = 24   # built each time the user nears the top of what is built
    # Every bubble's intents, forwarded: the window connects to the view once, not to each bubble.
    regenerate = Signal(int)
    edit = Signal(int)
    copy = Signal(str)
    switch_variant = Signal(int, int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setAccessibleName("Conversation")
        container = QWidget()
        self.column = QVBoxLayout(container)
        self.column.addStretch(1)
        self.setWidget(container)
        self.bubbles: list[MessageWidget] = []
        self.unbuilt: list[MessageState] = []   # the oldest messages, above the bubbles, not built yet
        # While older bubbles are laid out above it, this bubble stays where the user saw it: (bubble, offset).
        self.anchor: tuple[MessageWidget, int] | None = None
        self.keeping_to_end = False
        self.shown_bubble: MessageWidget | None = None   # kept in sight instead of the end (a search hit)
        self.open_thoughts: set[int] = set()   # messages whose thoughts the user opened: open after a redraw
        # Checked after each scroll or layout pass, never inside one, which must not be fed new widgets.
        self.near_top_check = QTimer(self, singleShot=True, interval=0, timeout=self._build_older_if_near_top)
        self.verticalScrollBar().rangeChanged.connect(self._on_range_changed)
        self.verticalScrollBar().valueChanged.connect(self._on_scrolled)

    def show_messages(self, states: list[MessageState], keep_place: bool = False) -> None:
        """Show `states`, top to bottom. The leading messages that show just as before are kept: a turn
        in a long chat then builds its new bubbles, not every bubble again. The view goes to the end,
        unless `keep_place` (a reply that ended) and bubbles were kept: it then stays where the user reads,
        or follows the end if it was there, and a found bubble kept stays marked."""
        kept = self._unchanged_lead(states)
        self._show_from(states, kept)
        if keep_place and kept:
            if self.shown_bubble is not None and self.shown_bubble not in self.bubbles:
                self.show_bubble(None)
            if self.keeping_to_end:
                self.scroll_to_end()
            return
        self._set_anchor(None)
        self.show_bubble(None)
        self.keeping_to_end = True
        self.scroll_to_end()
        self.near_top_check.start()   # bubbles that fit the window change no scroll range

    def _show_from(self, states: list[MessageState], kept: int) -> None:
        """Rebuild what follows the first `kept` messages, lazily when that is more than a window's worth."""
        if len(states) - kept > self.FIRST_BUBBLES:
            self._drop_bubbles(0)
            self.unbuilt = states[:-self.FIRST_BUBBLES]
            fresh = states[-self.FIRST_BUBBLES:]
        else:
            kept_unbuilt = min(kept, len(self.unbuilt))
            self._drop_bubbles(kept - kept_unbuilt)
            self.unbuilt = self.unbuilt[:kept_unbuilt]
            fresh = states[kept:]
        self.bubbles += [self._new_bubble(state, self.column.count() - 1) for state in fresh]

    def bubble_showing(self, state: MessageState) -> MessageWidget | None:
        """The bubble built for `state` (the very object given to `show_messages`), if it is built."""
        return next((bubble for bubble in self.bubbles if bubble.state is state), None)

    def shown_states(self) -> list[MessageState]:
        """Every message of the branch, top to bottom, built or not."""
        return self.unbuilt + [bubble.state for bubble in self.bubbles]

    def _unchanged_lead(self, states: list[MessageState]) -> int:
        """How many leading messages show a stored message exactly as `states` would (a streaming one never)."""
        kept = 0
        for shown, state in zip(self.shown_states(), states):
            if state.message_id is None or shown != state:
                break
            kept += 1
        return kept

    def _drop_bubbles(self, keep: int) -> None:
        if self.anchor is not None and self.anchor[0] in self.bubbles[keep:]:
            self._set_anchor(None)
        for bubble in self.bubbles[keep:]:
            bubble.deleteLater()
        self.bubbles = self.bubbles[:keep]

    def _new_bubble(self, state: MessageState, position: int) -> MessageWidget:
        bubble = MessageWidget(state)
        self.column.insertWidget(position, bubble)
        self._keep_thoughts_open(bubble)
        bubble.regenerate.connect(self.regenerate)
        bubble.edit.connect(self.edit)
        bubble.copy.connect(self.copy)
        bubble.switch_variant.connect(self.switch_variant)
        return bubble

    def build_older(self, count: int) -> None:
        """Build the `count` newest unbuilt messages above the bubbles, keeping the view where it is."""
        count = min(count, len(self.unbuilt))
        if not count:
            return
        if self.bubbles:
            self._set_anchor(self.bubbles[0])
        older, self.unbuilt = self.unbuilt[-count:], self.unbuilt[:-count]
        self.bubbles = [self._new_bubble(state, position) for position, state in enumerate(older)] + self.bubbles
        self.near_top_check.start()

    def _build_older_if_near_top(self) -> None:
        if not self.unbuilt or not self.isVisible():   # a hidden view's scroll value says nothing
            return
        # New bubbles take their heights over a few layout passes; judge the distance to the top after them.
        for _ in range(3):
            QCoreApplication.sendPostedEvents(None, QEvent.Type.LayoutRequest)
        if self.verticalScrollBar().value() <= self.viewport().height():
            self.build_older(self.OLDER_BATCH)

    def _keep_thoughts_open(self, bubble: MessageWidget) -> None:
        message_id = bubble.state.message_id
        if message_id is None:
            return
        bubble.thoughts_toggle.setChecked(message_id in self.open_thoughts)
        bubble.thoughts_toggle.toggled.connect(
            lambda shown: (self.open_thoughts.add if shown else self.open_thoughts.discard)(message_id))

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.near_top_check.start()

    def show_message(self, message_id: int) -> MessageWidget | None:
        """Bring the bubble of `message_id` into sight, marked as found, instead of the end."""
        state = next((state for state in self.shown_states() if state.message_id == message_id), None)
        return self.show_found(state)

    def show_found(self, state: MessageState | None) -> MessageWidget | None:
        """Mark the bubble of `state` (one of `shown_states`) as found and keep it in sight, building the
        older bubbles down to it first; None only clears the mark."""
        position = next((index for index, unbuilt in enumerate(self.unbuilt) if unbuilt is state), None)
        if position is not None:
            self.build_older(len(self.unbuilt) - position)
        bubble = None if state is None else self.bubble_showing(state)
        self.show_bubble(bubble)
        return bubble

    def show_bubble(self, bubble: MessageWidget | None) -> None:
        """Mark `bubble` as found (and no other) and keep it in sight; None only clears the mark."""
        for each in self.bubbles:
            if each.property("found") != (each is bubble):
                each.setProperty("found", each is bubble)
                each.style().polish(each)
        self.shown_bubble = bubble
        if bubble is not None:
            self.keeping_to_end = False
            self._set_anchor(None)
            self.ensureWidgetVisible(bubble)

    def states_containing(self, text: str) -> list[MessageState]:
        """The messages whose text or thoughts contain `text`, ignoring case, top to bottom, built or not."""
        wanted = text.casefold()
        return [state for state in self.shown_states()
                if wanted and wanted in (state.content + state.thinking).casefold()]

    def follow_stream(self) -> None:
        """After each streamed update: keep the newest text in sight if the view is at the end; a user
        who scrolled up to read stays where they are."""
        if self.is_at_end():
            self.keeping_to_end = True
            self.scroll_to_end()

    def is_at_end(self) -> bool:
        bar = self.verticalScrollBar()
        return bar.value() >= bar.maximum() - self.END_SLACK

    def scroll_to_end(self) -> None:
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _on_range_changed(self) -> None:
        self._hold_position()
        self.near_top_check.start()

    def _hold_position(self) -> None:
        """Keep in sight what the view is holding: the end, else the anchor (the content grows above what
        the user reads, a found bubble included), else a found bubble."""
        if self.keeping_to_end:
            self.scroll_to_end()
        elif self.anchor is not None:
            self.verticalScrollBar().setValue(self._anchored_value())
        elif self.shown_bubble is not None:
            self.ensureWidgetVisible(self.shown_bubble)

    def _set_anchor(self, bubble: MessageWidget | None) -> None:
        if self.anchor is not None:
            self.anchor[0].moved.disconnect(self._hold_position)
        self.anchor = None
        if bubble is not None:
            self.anchor = (bubble, bubble.y() - self.verticalScrollBar().value())
            # The anchor moves once the bubbles built above it have their heights: the view follows it.
            bubble.moved.connect(self._hold_position)

    def _anchored_value(self) -> int:
        bubble, offset = self.anchor
        return bubble.y() - offset

    def _on_scrolled(self, value: int) -> None:
        self.keeping_to_end = self.keeping_to_end and self.is_at_end()
        # A value the anchor did not ask for, short of the range's end, is the user's scrolling: the anchor
        # moves with them (built bubbles may still be getting their heights above it).
        if self.anchor is not None and value != min(self._anchored_value(), self.verticalScrollBar().maximum()):
            bubble = self.anchor[0]
            self.anchor = (bubble, bubble.y() - value)
        self.near_top_check.start()


_MESSAGE_ROLE = Qt.ItemDataRole.UserRole + 1   # a search hit's message


class ModelPicker(QComboBox):
    """The model list, which asks to be refreshed each time it opens: folders change while the app runs."""

    opening = Signal()

    def showPopup(self) -> None:
        self.opening.emit()
        super().showPopup()


class Sidebar(QWidget):
    """Conversation list with search, new / rename / delete (with undo) / pin."""

    new_chat = Signal()
    selected = Signal(int)
    rename = Signal(int, str)
    delete = Signal(int)
    undo_delete = Signal()
    toggle_pin = Signal(int)
    search = Signal(str)
    hit_selected = Signal(int, int)   # conversation id, id of the message that matched
    chosen = Signal()                 # a row activated without starting a rename (a search hit): on to writing

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        self.search_box = QLineEdit(placeholderText="Search all chats (⌘K)")
        self.search_box.setAccessibleName("Search chats")
        self.search_box.textChanged.connect(self.search.emit)
        layout.addWidget(self.search_box)
        self.list = QListWidget()
        self.list.setAccessibleName("Conversations")
        self.list.currentItemChanged.connect(self._on_current)
        self.list.itemActivated.connect(lambda item: self.chosen.emit())
        self.list.itemChanged.connect(self._on_renamed)
        layout.addWidget(self.list)
        buttons = QHBoxLayout()
        self.new_button = QPushButton("New")
        self.pin_button = QPushButton("Pin")
        self.delete_button = QPushButton("Delete")
        for button, name in ((self.new_button, "New chat"), (self.pin_button, "Pin or unpin chat"),
                             (self.delete_button, "Delete chat")):
            button.setAccessibleName(name)
            buttons.addWidget(button)
        self.new_button.clicked.connect(self.new_chat.emit)
        self.pin_button.clicked.connect(lambda: self._emit_current(self.toggle_pin))
        self.delete_button.clicked.connect(lambda: self._emit_current(self.delete))
        layout.addLayout(buttons)
        self.undo_button = QPushButton("Undo delete")
        self.undo_button.setAccessibleName("Undo delete")
        self.undo_button.setVisible(False)
        self.undo_button.clicked.connect(self.undo_delete.emit)
        layout.addWidget(self.undo_button)
        self._filling = False

    def current_id(self) -> int | None:
        item = self.list.currentItem()
        return None if item is None else item.data(Qt.ItemDataRole.UserRole)

    def _emit_current(self, signal) -> None:
        current = self.current_id()
        if current is not None:
            signal.emit(current)

    def _on_current(self, item: QListWidgetItem | None, _previous) -> None:
        if item is None or self._filling:
            return
        message_id = item.data(_MESSAGE_ROLE)
        if message_id is None:
            self.selected.emit(item.data(Qt.ItemDataRole.UserRole))
        else:
            self.hit_selected.emit(item.data(Qt.ItemDataRole.UserRole), message_id)

    def _on_renamed(self, item: QListWidgetItem) -> None:
        if not self._filling:
            self.rename.emit(item.data(Qt.ItemDataRole.UserRole), item.text().removeprefix("📌 "))

    def show_conversations(self, rows: list[ConversationRow], current: int | None) -> None:
        self._fill([(row.id, ("📌 " if row.pinned else "") + row.title, True) for row in rows], current)

    def show_hits(self, hits: list[SearchHit]) -> None:
        self._fill([(hit.conversation_id, f"{hit.title} — {hit.snippet}", False) for hit in hits], None,
                   [hit.message_id for hit in hits])

    def _fill(self, rows: list[tuple[int, str, bool]], current: int | None,
              message_ids: list[int] | None = None) -> None:
        if self.list.state() == QAbstractItemView.State.EditingState:
            return   # a refill would close the title being typed and lose it; the rename refills the list
        self._filling = True
        self.list.clear()
        for index, (conversation_id, text, editable) in enumerate(rows):
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, conversation_id)
            item.setData(_MESSAGE_ROLE, message_ids[index] if message_ids else None)
            if editable:
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
            self.list.addItem(item)
            if conversation_id == current:
                self.list.setCurrentItem(item)
        self._filling = False
