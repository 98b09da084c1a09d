"""How full the model's context window is: text, image and audio tokens of the branch plus the draft.

The engine process counts the prompt that sending the draft would build (system prompt, branch, text,
every image at its budget, every audio clip), exactly, with the model's own template and tokenizer;
it is asked asynchronously, so typing never waits.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QWidget

WARN_FRACTION = 0.85


@dataclass(frozen=True)
class Usage:
    text: int
    images: int
    audio: int
    limit: int

    @property
    def total(self) -> int:
        return self.text + self.images + self.audio

    @property
    def warning(self) -> bool:
        return self.total >= WARN_FRACTION * self.limit

    def describe(self) -> str:
        parts = f"text {self.text:,}" + (f", images {self.images:,}" if self.images else "") + \
                (f", audio {self.audio:,}" if self.audio else "")
        line = f"Context {self.total:,} / {self.limit:,} tokens ({parts})"
        if self.total > self.limit:
            return line + ". Full: start a new chat or shorten it."
        return line + (". Nearly full: start a new chat soon." if self.warning else "")


class ContextMeter(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.bar = QProgressBar(textVisible=False, maximumWidth=140, maximumHeight=8)
        self.bar.setAccessibleName("Context used")
        self.label = QLabel("Context: no model loaded")
        self.label.setObjectName("context-meter")
        layout.addWidget(self.bar)
        layout.addWidget(self.label, 1)
        self.usage: Usage | None = None

    def show_usage(self, usage: Usage) -> None:
        self.usage = usage
        self.bar.setRange(0, max(1, usage.limit))
        self.bar.setValue(min(usage.total, usage.limit))
        self.label.setText(usage.describe())
        self.label.setProperty("warning", usage.warning)
        self.label.style().unpolish(self.label)
        self.label.style().polish(self.label)
        self.bar.setAccessibleDescription(usage.describe())
