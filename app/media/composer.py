"""Everything media the main window needs, in one object: state, tray, buttons, drop/paste, microphone.

The engine runs in its own process and takes media as file paths, so `draft_files` writes pasted
images and recordings into the library's staging folder (named by content, so the same image is stored
once) and hands back paths for everything attached, each image with the budget chosen in the tray.
A staged file is removed once the history holds its own copy, or its dictation is written down.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

import numpy as np
import soundfile
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QWidget

from engine.audio import SAMPLE_RATE

from ..storage import Attachment, write_whole
from .attachments import Attachments, AudioAttachment, ImageAttachment
from .controls import MediaControls
from .drop import MediaDrop
from .recorder import Recorder
from .tray import AttachmentTray


def _content_path(folder: Path, data: bytes, suffix: str) -> Path:
    return folder / (hashlib.sha256(data).hexdigest()[:24] + suffix)


def image_file(item: ImageAttachment, folder: Path) -> Path:
    """The attached file itself, or the pasted image's bytes stored under `folder`."""
    if item.path is not None:
        return item.path
    path = _content_path(folder, item.data, ".png")
    if not path.exists():
        write_whole(path, item.data)
    return path


def audio_file(item: AudioAttachment, folder: Path) -> Path:
    """The attached file itself, or the recording stored under `folder` as float WAV (lossless)."""
    if item.path is not None:
        return item.path
    wave = np.ascontiguousarray(item.waveform, dtype=np.float32)
    path = _content_path(folder, wave.tobytes() + str(item.sample_rate).encode(), ".wav")
    if not path.exists():
        wav = io.BytesIO()
        soundfile.write(wav, wave, item.sample_rate, subtype="FLOAT", format="WAV")
        write_whole(path, wav.getvalue())
    return path


def discard_staged(paths: Iterable[Path | str], folder: Path) -> None:
    """Remove those of `paths` that were staged in `folder`; files the user attached from elsewhere stay."""
    for path in map(Path, paths):
        if path.parent == folder:
            with suppress(OSError):
                path.unlink()


class MediaComposer(QObject):
    recorded = Signal()            # an "ask" recording was attached: the window sends the message
    dictated = Signal(object)      # a "dictate" recording (16 kHz waveform) for a transcription turn

    def __init__(self, parent: QWidget):
        super().__init__(parent)
        self.attachments = Attachments()
        self.tray = AttachmentTray(self.attachments)
        self.recorder = Recorder(self)
        self.controls = MediaControls(self.attachments, self.recorder)
        self.drop = MediaDrop(self.attachments, self)
        self.controls.attach_requested.connect(lambda: self.drop.pick_files(parent))
        self.recorder.finished.connect(self._on_recording)
        self._recordings = 0

    def install(self, *widgets: QWidget) -> None:
        for widget in widgets:
            self.drop.install(widget)

    def set_model(self, modalities, variant: str = "") -> list[str]:
        return self.controls.set_model(frozenset(modalities), variant)

    def _on_recording(self, waveform: np.ndarray, mode: str) -> None:
        if mode == "dictate":
            self.dictated.emit(waveform)
            return
        self._recordings += 1
        self.attachments.add_audio(waveform, SAMPLE_RATE, f"Recording {self._recordings}")
        self.recorded.emit()

    def recording_file(self, waveform: np.ndarray, folder: Path) -> str:
        """A 16 kHz recording written under `folder` (for a dictation turn)."""
        return str(audio_file(AudioAttachment("Dictation", waveform, SAMPLE_RATE), folder))

    def to_store(self, folder: Path) -> list[Attachment]:
        """What the tray holds as the library stores it: each file with the name the user knows it by
        ("Pasted image 1.png", "Recording 2") and each image's budget."""
        images = [Attachment("image", image_file(item, folder), item.name, item.budget)
                  for item in self.attachments.images]
        return images + [Attachment("audio", audio_file(item, folder), item.name) for item in self.attachments.audio]

    def draft_files(self, folder: Path) -> tuple[list[list], list[str]]:
        """([image path, budget] pairs, audio paths) of what the tray holds, as the engine process takes them."""
        images = [[str(image_file(item, folder)), item.budget] for item in self.attachments.images]
        return images, [str(audio_file(item, folder)) for item in self.attachments.audio]
