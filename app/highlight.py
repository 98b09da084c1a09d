"""Syntax colouring for code blocks in replies: a few regular-expression rules per language family.

Small on purpose (no Pygments in the bundle): keywords, strings, comments, numbers and a few
language-specific tokens cover what chat answers contain. Colours follow the light or dark palette.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from PySide6.QtGui import QColor, QFont, QSyntaxHighlighter, QTextCharFormat, QTextDocument

PYTHON = ("and as assert async await break class continue def del elif else except False finally for from "
          "global if import in is lambda None nonlocal not or pass raise return True try while with yield match "
          "case self")
C_FAMILY = ("auto bool break case catch char class const constexpr continue default delete do double else enum "
            "extern false final float fn for func go if impl import include int interface let long match mod "
            "mut namespace new nil null override package private protected pub public return self short signed "
            "sizeof static struct super switch template this throw true try type typedef typename union "
            "unsigned use using var virtual void volatile where while string val fun when object")
JAVASCRIPT = ("async await break case catch class const continue debugger default delete do else export extends "
              "false finally for from function if import in instanceof let new null of return static super switch "
              "this throw true try typeof undefined var void while yield interface type enum implements readonly")
SHELL = ("if then else elif fi for while until do done case esac function in return export local echo cd set "
         "unset source exit")
SQL = ("select from where insert into values update set delete create table index view drop alter join left "
       "right inner outer on group by order having limit offset as and or not null is in like distinct union "
       "primary key references default begin commit rollback with case when then else end")


@dataclass(frozen=True)
class Language:
    keywords: frozenset[str]
    line_comment: re.Pattern | None
    block_comment: tuple[str, str] | None
    case_sensitive: bool = True


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


LANGUAGES = {
    "python": Language(_words(PYTHON), re.compile(r"#"), ('"""', '"""')),
    "c": Language(_words(C_FAMILY), re.compile(r"//"), ("/*", "*/")),
    "javascript": Language(_words(JAVASCRIPT), re.compile(r"//"), ("/*", "*/")),
    "shell": Language(_words(SHELL), re.compile(r"(?<![\w$])#"), None),
    "sql": Language(_words(SQL), re.compile(r"--"), ("/*", "*/"), case_sensitive=False),
    "json": Language(_words("true false null"), None, None),
}
ALIASES = {
    "py": "python", "python3": "python", "py3": "python",
    "js": "javascript", "jsx": "javascript", "ts": "javascript", "tsx": "javascript", "typescript": "javascript",
    "cpp": "c", "c++": "c", "cc": "c", "h": "c", "hpp": "c", "java": "c", "rust": "c", "rs": "c", "go": "c",
    "golang": "c", "swift": "c", "kotlin": "c", "kt": "c", "csharp": "c", "cs": "c", "c#": "c", "objc": "c",
    "bash": "shell", "sh": "shell", "zsh": "shell", "console": "shell", "shell-session": "shell",
    "sqlite": "sql", "postgresql": "sql", "mysql": "sql",
}

STRING = re.compile(r"\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'|`(?:[^`\\\n]|\\.)*`")
NUMBER = re.compile(r"\b(?:0[xX][0-9a-fA-F_]+|\d[\d_]*(?:\.\d+)?(?:[eE][+-]?\d+)?)\b")
WORD = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*(?=\()")

LIGHT = {"keyword": "#a626a4", "string": "#50a14f", "comment": "#8a8f98", "number": "#b76b01", "call": "#4078f2"}
DARK = {"keyword": "#c678dd", "string": "#98c379", "comment": "#7f848e", "number": "#d19a66", "call": "#61afef"}


def language_for(name: str) -> Language | None:
    name = name.lower()
    return LANGUAGES.get(ALIASES.get(name, name))


def _format(color: str, italic: bool = False, bold: bool = False) -> QTextCharFormat:
    chosen = QTextCharFormat()
    chosen.setForeground(QColor(color))
    chosen.setFontItalic(italic)
    if bold:
        chosen.setFontWeight(QFont.Weight.Bold)
    return chosen


class CodeHighlighter(QSyntaxHighlighter):
    """Colours one code block; an unknown language stays plain (still monospaced)."""

    IN_BLOCK_COMMENT = 1

    def __init__(self, document: QTextDocument, language: str, dark: bool = False):
        super().__init__(document)
        self.language = language_for(language)
        colors = DARK if dark else LIGHT
        self.formats = {"keyword": _format(colors["keyword"], bold=True), "string": _format(colors["string"]),
                        "comment": _format(colors["comment"], italic=True), "number": _format(colors["number"]),
                        "call": _format(colors["call"])}

    def highlightBlock(self, text: str) -> None:
        if self.language is None:
            return
        taken = [False] * len(text)
        start = self._continue_block_comment(text, taken)
        self._mark_comments_and_strings(text, start, taken)
        self._mark_words(text, taken)

    def _apply(self, start: int, end: int, kind: str, taken: list[bool]) -> None:
        self.setFormat(start, end - start, self.formats[kind])
        taken[start:end] = [True] * (end - start)

    def _continue_block_comment(self, text: str, taken: list[bool]) -> int:
        """Finish a block comment (or docstring) opened on an earlier line; returns where code resumes."""
        self.setCurrentBlockState(0)
        if self.previousBlockState() != self.IN_BLOCK_COMMENT:
            return 0
        closing = self.language.block_comment[1]
        end = text.find(closing)
        if end < 0:
            self._apply(0, len(text), "comment", taken)
            self.setCurrentBlockState(self.IN_BLOCK_COMMENT)
            return len(text)
        self._apply(0, end + len(closing), "comment", taken)
        return end + len(closing)

    def _mark_comments_and_strings(self, text: str, position: int, taken: list[bool]) -> None:
        """Left to right, since a quote inside a comment or a # inside a string changes everything after."""
        language = self.language
        block = language.block_comment
        while position < len(text):
            if block and text.startswith(block[0], position):
                end = text.find(block[1], position + len(block[0]))
                if end < 0:
                    self._apply(position, len(text), "comment", taken)
                    self.setCurrentBlockState(self.IN_BLOCK_COMMENT)
                    return
                self._apply(position, end + len(block[1]), "comment", taken)
                position = end + len(block[1])
                continue
            if language.line_comment and language.line_comment.match(text, position):
                self._apply(position, len(text), "comment", taken)
                return
            string = STRING.match(text, position)
            if string:
                self._apply(position, string.end(), "string", taken)
                position = string.end()
                continue
            position += 1

    def _mark_words(self, text: str, taken: list[bool]) -> None:
        keywords = self.language.keywords
        for match in NUMBER.finditer(text):
            if not taken[match.start()]:
                self._apply(match.start(), match.end(), "number", taken)
        for match in CALL.finditer(text):
            if not taken[match.start()] and match.group(1) not in keywords:
                self._apply(match.start(1), match.end(1), "call", taken)
        for match in WORD.finditer(text):
            word = match.group(0) if self.language.case_sensitive else match.group(0).lower()
            if not taken[match.start()] and word in keywords:
                self._apply(match.start(), match.end(), "keyword", taken)
