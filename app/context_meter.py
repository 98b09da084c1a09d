"""How full the model's context window is: text, image and audio tokens of the branch plus the draft.

Text is counted by the model's own tokenizer in the engine process (asked asynchronously, so typing
never waits); image and audio tokens are computed here from file headers, without decoding pixels
or samples and without MLX.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QWidget

from .storage import Attachment

TURN_OVERHEAD_TOKENS = 4     # <|turn>role\n ... <turn|>\n around every message
WARN_FRACTION = 0.85
DEFAULT_IMAGE_BUDGET = 280


def image_tokens(path: Path, budget: int) -> int:
    from PIL import Image

    from engine.vision import soft_token_count, upright_size

    with Image.open(path) as image:
        return soft_token_count(*upright_size(image), budget)


def audio_tokens(path: Path) -> int:
    import soundfile

    from engine.audio.clips import token_count_at_rate

    info = soundfile.info(str(path))
    return token_count_at_rate(info.frames, info.samplerate)


def media_tokens(attachments: list[Attachment], budget: int = DEFAULT_IMAGE_BUDGET) -> tuple[int, int]:
    """(image tokens, audio tokens) of stored attachments; unreadable files count as nothing."""
    images = audio = 0
    for attachment in attachments:
        try:
            if attachment.kind == "image":
                images += image_tokens(attachment.path, budget)
            else:
                audio += audio_tokens(attachment.path)
        except (OSError, ValueError, RuntimeError):
            continue
    return images, audio


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
