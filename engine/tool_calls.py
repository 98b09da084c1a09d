"""Parsing Gemma 4 tool calls: `call:NAME{key:<|"|>text<|"|>,n:3,flag:true,list:[1,2],obj:{a:1}}`.

Keys are bare, strings are wrapped in the `<|"|>` escape token, everything else is a JSON-like literal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

QUOTE = '<|"|>'


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict = field(default_factory=dict)


class ToolCallError(ValueError):
    pass


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.at = 0

    def peek(self, literal: str) -> bool:
        return self.text.startswith(literal, self.at)

    def expect(self, literal: str) -> None:
        if not self.peek(literal):
            raise ToolCallError(f"expected {literal!r} at {self.at} in {self.text!r}")
        self.at += len(literal)

    def skip_space(self) -> None:
        while self.at < len(self.text) and self.text[self.at].isspace():
            self.at += 1

    def until(self, stops: str) -> str:
        start = self.at
        while self.at < len(self.text) and self.text[self.at] not in stops:
            self.at += 1
        return self.text[start:self.at].strip()

    def value(self):
        self.skip_space()
        if self.peek(QUOTE):
            self.at += len(QUOTE)
            end = self.text.find(QUOTE, self.at)
            if end < 0:
                raise ToolCallError("an argument string is not closed")
            text, self.at = self.text[self.at:end], end + len(QUOTE)
            return text
        if self.peek("{"):
            return self.mapping()
        if self.peek("["):
            return self.sequence()
        return _literal(self.until(",}]"))

    def mapping(self) -> dict:
        self.expect("{")
        result = {}
        self.skip_space()
        while not self.peek("}"):
            key = self.until(":")
            self.expect(":")
            result[key] = self.value()
            self.skip_space()
            if self.peek(","):
                self.at += 1
                self.skip_space()
        self.expect("}")
        return result

    def sequence(self) -> list:
        self.expect("[")
        items = []
        self.skip_space()
        while not self.peek("]"):
            items.append(self.value())
            self.skip_space()
            if self.peek(","):
                self.at += 1
                self.skip_space()
        self.expect("]")
        return items


def _literal(text: str):
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_tool_call(text: str) -> ToolCall:
    """Parse the text between `<|tool_call>` and `<tool_call|>`."""
    parser = _Parser(text.strip())
    parser.expect("call:")
    name = parser.until("{")
    if not name:
        raise ToolCallError(f"a tool call without a name: {text!r}")
    arguments = parser.mapping() if parser.peek("{") else {}
    return ToolCall(name, arguments)


def format_arguments(arguments: dict) -> str:
    """The inverse of the argument grammar, for rendering earlier calls back into a prompt."""
    def render(value) -> str:
        if isinstance(value, str):
            return f"{QUOTE}{value}{QUOTE}"
        if isinstance(value, bool):
            return "true" if value else "false"
        if value is None:
            return "null"
        if isinstance(value, dict):
            return "{" + ",".join(f"{k}:{render(v)}" for k, v in value.items()) + "}"
        if isinstance(value, (list, tuple)):
            return "[" + ",".join(render(v) for v in value) + "]"
        return str(value)
    return render(arguments)
