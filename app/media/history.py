"""Attachments inside the history: a strip of thumbnails under a message; a click opens the image full size.

Thumbnails are decoded at their small size straight from the stored file (QImageReader scales while
it decodes), and kept, so re-rendering a conversation does not decode every image again.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon, QImageReader, QPixmap
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QToolButton, QWidget

from ..storage import Attachment
from .tray import picture_dialog

HISTORY_THUMBNAIL_SIDE = 96
_CACHE_LIMIT = 256
_thumbnails: dict[Path, QPixmap] = {}


def _read(path: Path, side: int | None = None) -> QPixmap:
    reader = QImageReader(str(path))
    reader.setAutoTransform(True)   # EXIF orientation, as the model sees it
    if side is not None and reader.size().isValid():
        reader.setScaledSize(reader.size().scaled(QSize(side, side), Qt.AspectRatioMode.KeepAspectRatio))
    return QPixmap.fromImage(reader.read())


def history_thumbnail(path: Path) -> QPixmap:
    """A small copy of a stored image (null when the file is gone or unreadable)."""
    if path not in _thumbnails:
        if len(_thumbnails) >= _CACHE_LIMIT:
            _thumbnails.pop(next(iter(_thumbnails)))
        _thumbnails[path] = _read(path, HISTORY_THUMBNAIL_SIDE)
    return _thumbnails[path]


class AttachmentStrip(QWidget):
    """The images (as buttons that open them) and audio (as labels) a message carried."""

    def __init__(self, attachments: list[Attachment], parent: QWidget | None = None):
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.image_buttons: list[QToolButton] = []
        for attachment in attachments:
            row.addWidget(self._image_button(attachment) if attachment.kind == "image"
                          else QLabel(f"🎵 {attachment.name}"))
        row.addStretch(1)

    def _image_button(self, attachment: Attachment) -> QToolButton:
        pixmap = history_thumbnail(attachment.path)
        button = QToolButton()
        button.setAutoRaise(True)
        if pixmap.isNull():
            button.setText(f"{attachment.name} (missing)")
        else:
            button.setIcon(QIcon(pixmap))
            button.setIconSize(pixmap.size())
        button.setToolTip(f"{attachment.name}: click to open full size")
        button.setAccessibleName(f"Open {attachment.name} full size")
        button.clicked.connect(lambda: self.open_full_size(attachment))
        self.image_buttons.append(button)
        return button

    def open_full_size(self, attachment: Attachment) -> QDialog:
        full = _read(attachment.path)
        dialog = picture_dialog(self, f"{attachment.name}: {full.width()}×{full.height()}", full)
        dialog.show()
        return dialog
