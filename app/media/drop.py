"""Getting images and audio into the composer: drag-and-drop, paste, a file picker, files opened with the app.

`MediaDrop` is an event filter, so any widget (the window, the input box, the chat view) becomes a
drop target without subclassing it. Local files win over image data in the same mime payload: a
file copied in the Finder carries its icon as image data, and the user meant the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray, QEvent, QIODevice, QMimeData, QObject, Signal
from PySide6.QtGui import QGuiApplication, QImage, QImageReader, QKeySequence
from PySide6.QtWidgets import QAbstractScrollArea, QFileDialog, QWidget

from engine.errors import EngineError

from .attachments import AUDIO_SUFFIXES, IMAGE_SUFFIXES, Attachments

FILE_FILTER = (f"Images and audio ({' '.join('*' + s for s in sorted(IMAGE_SUFFIXES | AUDIO_SUFFIXES))});;"
               f"Images ({' '.join('*' + s for s in sorted(IMAGE_SUFFIXES))});;"
               f"Audio ({' '.join('*' + s for s in sorted(AUDIO_SUFFIXES))})")
_DRAG_EVENTS = (QEvent.Type.DragEnter, QEvent.Type.DragMove)
# Photos Pillow cannot decode but Qt can where the system can (macOS's image I/O reads HEIC).
_SYSTEM_DECODED = frozenset({".heic", ".heif"})


def png_bytes(image: QImage) -> bytes:
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    buffer.close()
    return data.data()


def local_files(mime: QMimeData) -> list[Path]:
    return [Path(url.toLocalFile()) for url in mime.urls() if url.isLocalFile()]


def carries_media(mime: QMimeData | None) -> bool:
    """True for local files (media or not: unsupported ones get an explanation) and image data."""
    return mime is not None and (bool(local_files(mime)) or mime.hasImage())


class MediaDrop(QObject):
    """Feeds dropped, pasted, picked and opened files into an Attachments; reports what failed."""

    attached = Signal(object)   # the new ImageAttachment / AudioAttachment
    error = Signal(str)         # a sentence for the user, one per refused file

    def __init__(self, attachments: Attachments, parent: QObject | None = None):
        super().__init__(parent)
        self.attachments = attachments
        self._pasted = 0
        self._targets: list[QObject] = []

    def install(self, widget: QWidget) -> None:
        """Make `widget` (and its viewport, for text boxes and scroll areas) take drops and media pastes."""
        targets = [widget] + ([widget.viewport()] if isinstance(widget, QAbstractScrollArea) else [])
        for target in targets:
            target.setAcceptDrops(True)
            target.installEventFilter(self)
            self._targets.append(target)

    def install_file_open(self, app: QGuiApplication) -> None:
        """Files dropped on the Dock icon or opened with Lantern (QFileOpenEvent, macOS) attach too."""
        app.installEventFilter(self)

    # -- sources ----------------------------------------------------------------------------------

    def attach_mime(self, mime: QMimeData) -> int:
        """Attach the files or the image in `mime`; returns how many were attached."""
        files = local_files(mime)
        if files:
            return self.attach_paths(files)
        if mime.hasImage():
            return self.attach_image(QImage(mime.imageData()))
        return 0

    def attach_paths(self, paths: Iterable[str | Path]) -> int:
        return sum(self._attach(lambda path=Path(path): self._add_file(path)) for path in paths)

    def _add_file(self, path: Path):
        if path.suffix.lower() in _SYSTEM_DECODED:
            reader = QImageReader(str(path))
            reader.setAutoTransform(True)   # the photo's orientation tag, as for every other image
            if reader.canRead():
                image = reader.read()
                if image.isNull():
                    raise EngineError(f"{path.name} could not be decoded: {reader.errorString()}")
                return self.attachments.add_image(png_bytes(image), path.name)
        return self.attachments.add_path(path)

    def attach_image(self, image: QImage) -> int:
        if image.isNull():
            self.error.emit("The pasted image is empty or in a format Qt cannot read.")
            return 0
        self._pasted += 1
        name = f"Pasted image {self._pasted}.png"
        return self._attach(lambda: self.attachments.add_image(png_bytes(image), name))

    def paste(self) -> bool:
        """Attach what the clipboard holds if it is media (a screenshot, copied files); False otherwise."""
        mime = QGuiApplication.clipboard().mimeData()
        if not carries_media(mime):
            return False
        self.attach_mime(mime)
        return True

    def pick_files(self, parent: QWidget | None = None) -> int:
        paths, _ = QFileDialog.getOpenFileNames(parent, "Attach images or audio", "", FILE_FILTER)
        return self.attach_paths(paths)

    def _attach(self, add) -> int:
        try:
            self.attached.emit(add())
        except EngineError as exc:  # engine messages start with the file's name: keep its spelling
            self.error.emit(str(exc))
            return 0
        return 1

    # -- events -----------------------------------------------------------------------------------

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        kind = event.type()
        if kind == QEvent.Type.FileOpen and event.file():
            self.attach_paths([event.file()])
            return True
        if watched not in self._targets:   # the application filter (file-open) sees every widget's events
            return super().eventFilter(watched, event)
        if kind in _DRAG_EVENTS and carries_media(event.mimeData()):
            event.acceptProposedAction()
            return True
        if kind == QEvent.Type.Drop and carries_media(event.mimeData()):
            self.attach_mime(event.mimeData())
            event.acceptProposedAction()
            return True
        if kind == QEvent.Type.KeyPress and event.matches(QKeySequence.StandardKey.Paste):
            return self.paste()  # plain text falls through to the text box's own paste
        return super().eventFilter(watched, event)
