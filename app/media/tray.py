"""The strip above the input box showing what goes with the next message.

Each image is a card: thumbnail, a budget combo (70 .. 1120, Auto), the soft tokens it will cost and
a preview button that shows the downscaled image the model will actually see. Each audio file or
recording is a chip with its duration and, when longer than 30 s, how many clips it becomes.
The tray only renders an `Attachments` and forwards edits to it; it rebuilds when that changes.
"""

from __future__ import annotations

from PIL import Image
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (QComboBox, QDialog, QFrame, QHBoxLayout, QLabel, QScrollArea, QToolButton,
                               QVBoxLayout, QWidget)

from engine.vision import to_rgb

from .attachments import AUTO, BUDGET_CHOICES, Attachments, AudioAttachment, ImageAttachment, format_duration

THUMBNAIL_SIDE = 72


def to_qimage(image: Image.Image) -> QImage:
    """An RGBA copy of a PIL image that owns its pixels (PIL's buffer may go away)."""
    rgba = image.convert("RGBA")
    return QImage(rgba.tobytes(), rgba.width, rgba.height, 4 * rgba.width, QImage.Format.Format_RGBA8888).copy()


def thumbnail(image: Image.Image, side: int = THUMBNAIL_SIDE) -> QPixmap:
    """The image as the model will see it (upright, 8-bit, on white), shrunk to fit `side`."""
    small = to_rgb(image)
    small.thumbnail((side, side))
    return QPixmap.fromImage(to_qimage(small))


def picture_dialog(parent: QWidget, title: str, pixmap: QPixmap) -> QDialog:
    """A window showing `pixmap` at its own size (scrolling when larger than the screen allows);
    deleted when closed."""
    dialog = QDialog(parent)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.setWindowTitle(title)
    picture = QLabel()
    picture.setPixmap(pixmap)
    picture.setAccessibleName(title)
    scroll = QScrollArea()
    scroll.setWidget(picture)
    QVBoxLayout(dialog).addWidget(scroll)
    dialog.resize(min(pixmap.width() + 40, 1000), min(pixmap.height() + 40, 800))
    return dialog


def budget_label(choice: int | str, item: ImageAttachment) -> str:
    return f"Auto ({item.auto})" if choice == AUTO else str(choice)


def _remove_button(tip: str) -> QToolButton:
    button = QToolButton()
    button.setText("✕")
    button.setToolTip(tip)
    button.setAccessibleName(tip)  # a screen reader would otherwise read the glyph
    button.setAutoRaise(True)
    return button


class ImageCard(QFrame):
    budget_chosen = Signal(object)
    remove_requested = Signal()

    def __init__(self, item: ImageAttachment, parent: QWidget | None = None):
        super().__init__(parent)
        self.item = item
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.thumb = QLabel()
        self.thumb.setPixmap(thumbnail(item.image))
        self.thumb.setToolTip(f"{item.name}: {item.size[0]}×{item.size[1]}")
        self.budget_combo = QComboBox()
        self.budget_combo.setToolTip("Soft-token budget: more tokens let the model see finer detail")
        self.budget_combo.setAccessibleName("Image detail budget")
        for choice in BUDGET_CHOICES:
            self.budget_combo.addItem(budget_label(choice, item), choice)
        self.budget_combo.setCurrentIndex(BUDGET_CHOICES.index(item.choice))
        self.budget_combo.currentIndexChanged.connect(lambda index: self.budget_chosen.emit(BUDGET_CHOICES[index]))
        self.tokens_label = QLabel()
        self.note_label = QLabel(item.note or "", wordWrap=True, visible=bool(item.note))
        self.note_label.setMaximumWidth(2 * THUMBNAIL_SIDE)
        self.preview_button = QToolButton()
        self.preview_button.setText("Model view")
        self.preview_button.clicked.connect(self.show_preview)
        self.remove_button = _remove_button(f"Remove {item.name}")
        self.remove_button.clicked.connect(self.remove_requested)
        self._lay_out()
        self.refresh()

    def _lay_out(self) -> None:
        top = QHBoxLayout()
        top.addWidget(self.thumb)
        top.addWidget(self.remove_button, alignment=Qt.AlignmentFlag.AlignTop)
        column = QVBoxLayout(self)
        column.setContentsMargins(4, 4, 4, 4)
        column.addLayout(top)
        column.addWidget(self.note_label)
        column.addWidget(self.budget_combo)
        row = QHBoxLayout()
        row.addWidget(self.tokens_label)
        row.addWidget(self.preview_button)
        column.addLayout(row)

    def refresh(self) -> None:
        width, height = self.item.model_size
        self.tokens_label.setText(f"{self.item.tokens} tokens")
        self.tokens_label.setToolTip(f"The model sees this image at {width}×{height}")

    def preview_dialog(self) -> QDialog:
        """A window with the image exactly as the model receives it."""
        width, height = self.item.model_size
        return picture_dialog(self, f"{self.item.name} as the model sees it: {width}×{height}, "
                                    f"{self.item.tokens} tokens", QPixmap.fromImage(to_qimage(self.item.model_view())))

    def show_preview(self) -> None:
        self.preview_dialog().show()


class AudioChip(QFrame):
    remove_requested = Signal()

    def __init__(self, item: AudioAttachment, parent: QWidget | None = None):
        super().__init__(parent)
        self.item = item
        self.setFrameShape(QFrame.Shape.StyledPanel)
        text = f"🎵 {item.name} · {format_duration(item.seconds)} · {item.tokens} tokens"
        self.label = QLabel(text + (f" · {item.split_note}" if item.split_note else ""))
        self.remove_button = _remove_button(f"Remove {item.name}")
        self.remove_button.clicked.connect(self.remove_requested)
        row = QHBoxLayout(self)
        row.setContentsMargins(6, 2, 2, 2)
        row.addWidget(self.label)
        row.addWidget(self.remove_button)


class AttachmentTray(QWidget):
    """Cards for the composer's attachments plus a one-line total; hidden while there are none."""

    def __init__(self, attachments: Attachments, parent: QWidget | None = None):
        super().__init__(parent)
        self.attachments = attachments
        self.cards: list[ImageCard | AudioChip] = []
        self.row = QHBoxLayout()
        self.row.setContentsMargins(0, 0, 0, 0)
        self.summary = QLabel()
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.addLayout(self.row)
        column.addWidget(self.summary)
        self.row.addStretch()
        attachments.listeners.append(self.rebuild)
        self.rebuild()

    def rebuild(self) -> None:
        """Cards for the current items: existing cards are kept (a budget change keeps focus), new
        items get one, removed items lose theirs at once (hidden now, deleted by the event loop)."""
        kept = {id(card.item): card for card in self.cards}
        for card in self.cards:
            self.row.removeWidget(card)
            if card.item not in self.attachments.items:
                card.hide()
                card.deleteLater()
        self.cards = [kept.get(id(item)) or self._card(item) for item in self.attachments.items]
        for index, card in enumerate(self.cards):
            self.row.insertWidget(index, card, alignment=Qt.AlignmentFlag.AlignTop)
            if isinstance(card, ImageCard):
                card.refresh()
        self.summary.setText(self.summary_text())
        self.setVisible(bool(self.cards))

    def _card(self, item: ImageAttachment | AudioAttachment) -> ImageCard | AudioChip:
        if isinstance(item, ImageAttachment):
            card = ImageCard(item)
            card.budget_chosen.connect(lambda choice, it=item: self.attachments.set_budget(it, choice))
        else:
            card = AudioChip(item)
        card.remove_requested.connect(lambda it=item: self.attachments.remove(it))
        return card

    def summary_text(self) -> str:
        parts = []
        if self.attachments.images:
            parts.append(f"{len(self.attachments.images)} image(s): {self.attachments.image_tokens} tokens")
        if self.attachments.audio:
            parts.append(f"{len(self.attachments.audio)} audio: {self.attachments.audio_tokens} tokens")
        return " · ".join(parts)
