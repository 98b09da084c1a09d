"""Turning generated token ids into chat events: thinking, answer text and tool calls.

Works on token ids, not text, because the delimiters (`<|channel>`, `<channel|>`, `<|tool_call>`,
`<tool_call|>`) are single special tokens. Text is emitted only up to the last complete character,
so every event is valid UTF-8 even when a character's bytes span several tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .tool_calls import ToolCall, ToolCallError, parse_tool_call

_THOUGHT_LABEL = "thought"
_FLUSH_AFTER = 16


@dataclass
class ChatEvent:
    kind: str                       # "thinking" | "text" | "tool_call" | "notice" | "done"
    text: str = ""
    tool_call: ToolCall | None = None
    stats: object | None = None


@dataclass
class _Segment:
    kind: str
    ids: list[int] = field(default_factory=list)
    emitted: int = 0                 # characters of the decoded ids already sent
    started: bool = False            # some of the segment was already flushed


class OutputStream:
    def __init__(self, tokenizer, special_ids: set[int]):
        self.tokenizer = tokenizer
        self.special_ids = special_ids
        self.channel_open = tokenizer.token_id("<|channel>")
        self.channel_close = tokenizer.token_id("<channel|>")
        self.call_open = tokenizer.token_id("<|tool_call>")
        self.call_close = tokenizer.token_id("<tool_call|>")
        self.segment = _Segment("text")
        self.thinking = ""
        self.answer = ""
        self.answer_ids: list[int] = []
        self.tool_calls: list[ToolCall] = []

    def push(self, token_id: int) -> list[ChatEvent]:
        if token_id == self.channel_open:
            return self._switch("thinking")
        if token_id in (self.channel_close, self.call_close):
            return self._switch("text")
        if token_id == self.call_open:
            return self._switch("tool_call")
        if token_id in self.special_ids:
            return []
        self.segment.ids.append(token_id)
        if self.segment.kind == "text":
            self.answer_ids.append(token_id)
        return self._emit(final=False)

    def finish(self) -> list[ChatEvent]:
        return self._switch("text")

    def _switch(self, kind: str) -> list[ChatEvent]:
        events = self._emit(final=True)
        if self.segment.kind == "tool_call":
            events += self._tool_call_event()
        self.segment = _Segment(kind)
        return events

    def _tool_call_event(self) -> list[ChatEvent]:
        raw = self.tokenizer.decode(self.segment.ids)
        try:
            call = parse_tool_call(raw)
        except ToolCallError:
            # A malformed call is shown to the user rather than silently dropped.
            self.answer += raw
            return [ChatEvent("text", raw)]
        self.tool_calls.append(call)
        return [ChatEvent("tool_call", tool_call=call)]

    def _emit(self, final: bool) -> list[ChatEvent]:
        segment = self.segment
        if segment.kind == "tool_call" or not segment.ids:
            return []
        text = self.tokenizer.decode(segment.ids)
        if segment.kind == "thinking" and not segment.started:
            text = _strip_label(text)
        complete = text.rstrip("\ufffd")  # an unfinished multi-byte character waits for its other bytes
        if not final:
            text = complete
        new = text[segment.emitted:]
        if not new:
            return []
        segment.emitted = len(text)
        if len(segment.ids) >= _FLUSH_AFTER and complete == text:
            # Everything decoded so far is sent and whole: start over so decoding stays linear.
            segment.ids, segment.emitted, segment.started = [], 0, True
        if segment.kind == "thinking":
            self.thinking += new
            return [ChatEvent("thinking", new)]
        self.answer += new
        return [ChatEvent("text", new)]


def _strip_label(text: str) -> str:
    """The thought channel opens with the word 'thought' and a newline, which are not part of the thought."""
    if _THOUGHT_LABEL.startswith(text):
        return ""
    if text.startswith(_THOUGHT_LABEL):
        text = text[len(_THOUGHT_LABEL):]
        return text[1:] if text.startswith("\n") else text
    return text
