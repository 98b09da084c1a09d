"""Getting images and audio into the composer: drag-and-drop, paste, a file picker, files opened with the app.

An event filter makes any widget (the window, the input box, the chat view) a drop target without
subclassing it. Files opened with the app arrive as application events, which only an application-wide
filter sees, and that one is called for every event of every object: it does as little as it can.
Local files win over image data in the same mime payload: a file copied in the Finder carries its icon
as image data, and the user meant the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray, QEvent, QIODevice, QMimeData, QObject, QTimer, Signal
from PySide6.QtGui import QDropEvent, QFileOpenEvent, QGuiApplication, QImage, QImageReader, QKeyEvent, QKeySequence
from PySide6.QtWidgets import QAbstractScrollArea, QFileDialog, QWidget

from engine.errors import EngineError

from .attachments import AUDIO_SUFFIXES, IMAGE_SUFFIXES, Attachments, AudioAttachment, ImageAttachment

FILE_FILTER = (f"Images and audio ({' '.join('*' + s for s in sorted(IMAGE_SUFFIXES | AUDIO_SUFFIXES))});;"
               f"Images ({' '.join('*' + s for s in sorted(IMAGE_SUFFIXES))});;"
               f"Audio ({' '.join('*' + s for s in sorted(AUDIO_SUFFIXES))})")
_COLLECT_MS = 30
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
    reading = Signal(str)       # "Reading photo.jpg…" while files are decoded, "" when done

    def __init__(self, attachments: Attachments, parent: QObject | None = None):
        super().__init__(parent)
        self.attachments = attachments
        self._pasted = 0
        self._targets = _DropTargets(self)
        # A phone photo takes a good part of a second to decode and measure: never on the GUI thread.
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="media-reader")
        self._being_read: list[tuple[str, Future]] = []
        self._collector = QTimer(self, interval=_COLLECT_MS)
        self._collector.timeout.connect(self._collect)

    def install(self, widget: QWidget) -> None:
        """Make `widget` (and its viewport, for text boxes and scroll areas) take drops and media pastes."""
        targets = [widget] + ([widget.viewport()] if isinstance(widget, QAbstractScrollArea) else [])
        for target in targets:
            target.setAcceptDrops(True)
            target.installEventFilter(self._targets)

    def install_file_open(self, app: QGuiApplication) -> None:
        """Files dropped on the Dock icon or opened with Lantern (QFileOpenEvent, macOS) attach too."""
        app.installEventFilter(self)

    # -- sources ----------------------------------------------------------------------------------

    def attach_mime(self, mime: QMimeData) -> None:
        """Attach the files (read in the background) or the image in `mime`."""
        files = local_files(mime)
        if files:
            self.read_paths(files)
        elif mime.hasImage():
            self.attach_image(QImage(mime.imageData()))

    def attach_paths(self, paths: Iterable[str | Path]) -> int:
        """Attach files now, on this thread; returns how many were attached."""
        return sum(self._attach(lambda path=Path(path): self.attachments.add_decoded(self._decode(path)))
                   for path in paths)

    def read_paths(self, paths: Iterable[str | Path]) -> None:
        """Decode files on worker threads and attach them in the given order as they are ready."""
        for path in map(Path, paths):
            self._being_read.append((path.name, self._readers.submit(self._decode, path)))
        self._collector.start()
        self._announce()

    @property
    def busy(self) -> bool:
        """Whether files are still being read."""
        return bool(self._being_read)

    def _collect(self) -> None:
        collected = False
        while self._being_read and self._being_read[0][1].done():
            _, future = self._being_read.pop(0)
            self._attach(lambda: self.attachments.add_decoded(future.result()))
            collected = True
        if not self._being_read:
            self._collector.stop()
        if collected:   # said again only when it changed, not at every tick of the timer
            self._announce()

    def _announce(self) -> None:
        names = [name for name, _ in self._being_read]
        self.reading.emit(f"Reading {', '.join(names)}…" if names else "")

    def _decode(self, path: Path) -> ImageAttachment | AudioAttachment:
        if path.suffix.lower() in _SYSTEM_DECODED:
            reader = QImageReader(str(path))
            reader.setAutoTransform(True)   # the photo's orientation tag, as for every other image
            if reader.canRead():
                image = reader.read()
                if image.isNull():
                    raise EngineError(f"{path.name} could not be decoded: {reader.errorString()}")
                return self.attachments.decode_image(png_bytes(image), path.name)
        return self.attachments.decode_path(path)

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

    def pick_files(self, parent: QWidget | None = None) -> None:
        paths, _ = QFileDialog.getOpenFileNames(parent, "Attach images or audio", "", FILE_FILTER)
        self.read_paths(paths)

    def _attach(self, add) -> int:
        try:
            self.attached.emit(add())
        except EngineError as exc:  # engine messages start with the file's name: keep its spelling
            self.error.emit(str(exc))
            return 0
        return 1

    # -- events -----------------------------------------------------------------------------------

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """The application's events (see install_file_open). Redrawing a long chat alone sends hundreds of
        thousands, so anything but an opened file costs one class test: cheaper than asking its type()."""
        if isinstance(event, QFileOpenEvent) and event.file():
            self.read_paths([event.file()])
            return True
        return False


class _DropTargets(QObject):
    """The event filter of the widgets given to `MediaDrop.install`: media drags, drops and pastes."""

    def __init__(self, drop: MediaDrop):
        super().__init__(drop)
        self._drop = drop

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if isinstance(event, QDropEvent):   # drag enter and drag move events are drop events too
            return self._take(event)
        if isinstance(event, QKeyEvent) and event.type() == QEvent.Type.KeyPress:
            # Plain text falls through to the text box's own paste.
            return event.matches(QKeySequence.StandardKey.Paste) and self._drop.paste()
        return False

    def _take(self, event: QDropEvent) -> bool:
        """Accept a drag that carries media, and attach that media when it is dropped."""
        if not carries_media(event.mimeData()):
            return False
        if event.type() == QEvent.Type.Drop:
            self._drop.attach_mime(event.mimeData())
        event.acceptProposedAction()
        return True
