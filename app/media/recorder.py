"""Recording a clip from the microphone: permission, push-mode capture, level, 30 s countdown.

QtMultimedia's `QAudioSource` runs in push mode: `source.start()` returns a QIODevice that Qt
fills, and its `readyRead` tells us to drain it. (A QIODevice subclass of our own, pull mode, is
not an option: PySide6 cannot route the C++ writeData call back into Python reliably.)

The bytes are consumed by `PcmCapture`, which knows nothing about where they come from: the
recorder attaches it to the real audio source's device, the tests attach it to a QBuffer they
write a generated tone into. Samples are kept in the device's own format (whatever it prefers:
8/16/32-bit integer or float, any channel count) and converted once, when recording stops, to
16 kHz mono float32 by the engine's `to_model_rate`, so the whole clip goes through one
resampling pass instead of block-wise filtering with seams.

QtMultimedia is imported only when recording starts: on a Linux machine without PulseAudio its
import fails, and the rest of the app must not care.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PySide6 import QtCore
from PySide6.QtCore import QCoreApplication, QIODevice, QObject, Qt, Signal

from engine.audio import to_model_rate
from engine.errors import EngineError

CLIP_LIMIT_SECONDS = 30.0
MODES = ("ask", "dictate")
DICTATION_PROMPT = "Transcribe this recording word for word. Reply with the transcription only."

# QAudioFormat.SampleFormat names -> numpy sample types (UInt8 is offset binary, centred on 128).
_SAMPLE_TYPES = {"UInt8": np.uint8, "Int16": np.int16, "Int32": np.int32, "Float": np.float32}
DENIED = ("Lantern may not use the microphone. Allow it in System Settings > Privacy & Security > "
          "Microphone, then try again.")
# macOS's own page for that setting (System Settings on 13 and later, System Preferences before).
PRIVACY_SETTINGS_URL = "x-apple.systempreferences:com.apple.preference.security?Privacy_Microphone"


@dataclass(frozen=True)
class PcmFormat:
    sample_rate: int
    channels: int
    sample_type: type[np.generic]

    @property
    def frame_bytes(self) -> int:
        return self.channels * np.dtype(self.sample_type).itemsize

    @classmethod
    def of(cls, audio_format) -> PcmFormat:
        """The format of a QAudioFormat (read by name, so QtMultimedia need not be imported here)."""
        name = audio_format.sampleFormat().name
        if name not in _SAMPLE_TYPES:
            raise EngineError(f"the microphone delivers samples as {name}, which Lantern cannot read")
        return cls(audio_format.sampleRate(), audio_format.channelCount(), _SAMPLE_TYPES[name])


def _as_float(frames: np.ndarray) -> np.ndarray:
    """Samples in [-1, 1] for the level meter."""
    if frames.dtype == np.uint8:
        return (frames.astype(np.float32) - 128) / 128
    if frames.dtype.kind == "i":
        return frames.astype(np.float32) / np.float32(np.iinfo(frames.dtype).max + 1)
    return frames.astype(np.float32, copy=False)


class PcmCapture(QObject):
    """Drains a QIODevice of raw PCM as it arrives and keeps at most `limit_seconds` of it."""

    level = Signal(float, float)    # RMS and peak of the newest block, 0..1
    progress = Signal(float)        # seconds captured so far
    full = Signal()                 # the clip limit is reached; later bytes are ignored

    def __init__(self, pcm: PcmFormat, limit_seconds: float = CLIP_LIMIT_SECONDS, parent: QObject | None = None):
        super().__init__(parent)
        self.pcm = pcm
        self.limit_frames = int(round(limit_seconds * pcm.sample_rate))
        self.frames = 0
        self._blocks: list[np.ndarray] = []
        self._partial = b""
        self._device: QIODevice | None = None

    def attach(self, device: QIODevice) -> None:
        self._device = device
        device.readyRead.connect(self.drain)

    def detach(self) -> None:
        """Stop listening, after taking what the device still holds."""
        if self._device is not None:
            self.drain()
            self._device.readyRead.disconnect(self.drain)
            self._device = None

    def drain(self) -> None:
        if self._device is not None:
            self.consume(self._device.readAll().data())

    def consume(self, data: bytes) -> None:
        """Take raw interleaved PCM; a frame split across two reads is kept until its rest arrives."""
        data = self._partial + data
        whole = len(data) - len(data) % self.pcm.frame_bytes
        self._partial = data[whole:]
        room = self.limit_frames - self.frames
        if whole == 0 or room <= 0:
            return
        frames = np.frombuffer(data[:whole], dtype=self.pcm.sample_type).reshape(-1, self.pcm.channels)[:room]
        self._blocks.append(frames.copy())
        self.frames += len(frames)
        samples = _as_float(frames)
        self.level.emit(float(np.sqrt(np.mean(samples**2))), float(np.max(np.abs(samples))))
        self.progress.emit(self.seconds)
        if self.frames >= self.limit_frames:
            self.full.emit()

    @property
    def seconds(self) -> float:
        return self.frames / self.pcm.sample_rate

    def waveform(self) -> np.ndarray:
        """The recording as 16 kHz mono float32; EngineError when it is empty or too short."""
        if not self._blocks:
            raise EngineError("the recording is empty: no sound arrived from the microphone")
        return to_model_rate(np.concatenate(self._blocks), self.pcm.sample_rate, "the recording")


def request_microphone(context: QObject, on_result: Callable[[bool, str], None]) -> None:
    """Ask for microphone access where the platform has a permission system (macOS); elsewhere grant.

    `on_result(granted, reason)` runs once, possibly later, after the user answered the system prompt.
    """
    app = QCoreApplication.instance()
    permission_type = getattr(QtCore, "QMicrophonePermission", None)  # Qt >= 6.5
    if app is None or permission_type is None:
        on_result(True, "")
        return
    permission = permission_type()
    status = app.checkPermission(permission)
    if status == Qt.PermissionStatus.Undetermined:
        app.requestPermission(permission, context, lambda answered: _report(app.checkPermission(answered), on_result))
        return
    _report(status, on_result)


def _report(status, on_result: Callable[[bool, str], None]) -> None:
    granted = status == Qt.PermissionStatus.Granted
    on_result(granted, "" if granted else DENIED)


class Recorder(QObject):
    """One clip at a time from the default microphone; stop (or the 30 s limit) hands it over."""

    recording_changed = Signal(bool)
    level = Signal(float, float)
    remaining = Signal(float)          # seconds left before the clip limit stops the recording
    finished = Signal(object, str)     # 16 kHz mono float32 waveform, mode ("ask" | "dictate")
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None, limit_seconds: float = CLIP_LIMIT_SECONDS):
        super().__init__(parent)
        self.limit_seconds = limit_seconds
        self.mode = MODES[0]
        self.capture: PcmCapture | None = None
        self._source = None

    @property
    def recording(self) -> bool:
        return self.capture is not None

    def start(self, mode: str = "ask") -> None:
        """Ask for permission if needed, then record from the default input device."""
        if mode not in MODES:
            raise EngineError(f"recording mode {mode!r} is not one of {', '.join(MODES)}")
        if self.recording:
            return
        self.mode = mode
        request_microphone(self, self._on_permission)

    def _on_permission(self, granted: bool, reason: str) -> None:
        if not granted:
            self.failed.emit(reason)
            return
        try:
            from PySide6.QtMultimedia import QAudioSource, QMediaDevices
        except ImportError as exc:
            self.failed.emit(f"The microphone is unavailable: Qt Multimedia could not load ({exc}).")
            return
        device = QMediaDevices.defaultAudioInput()
        if device.isNull():
            self.failed.emit("No microphone was found. Connect one or pick an input in the system's sound settings.")
            return
        audio_format = device.preferredFormat()
        try:
            pcm = PcmFormat.of(audio_format)
        except EngineError as exc:
            self.failed.emit(str(exc))
            return
        self._source = QAudioSource(device, audio_format, self)
        self.start_capture(self._source.start(), pcm)

    def start_capture(self, device: QIODevice, pcm: PcmFormat, mode: str | None = None) -> None:
        """Record from an open device that delivers `pcm` (the audio source's, or a test's buffer)."""
        self.mode = mode or self.mode
        self.capture = PcmCapture(pcm, self.limit_seconds, self)
        self.capture.level.connect(self.level)
        self.capture.progress.connect(lambda seconds: self.remaining.emit(max(0.0, self.limit_seconds - seconds)))
        self.capture.full.connect(self.stop)
        self.capture.attach(device)
        self.remaining.emit(self.limit_seconds)
        self.recording_changed.emit(True)

    def stop(self) -> None:
        """End the recording and emit `finished` with the clip (or `failed` saying why there is none)."""
        capture = self._end()
        if capture is None:
            return
        try:
            waveform = capture.waveform()
        except EngineError as exc:
            self.failed.emit(str(exc)[0].upper() + str(exc)[1:])
            return
        self.finished.emit(waveform, self.mode)

    def cancel(self) -> None:
        self._end()

    def _end(self) -> PcmCapture | None:
        capture, self.capture = self.capture, None
        if capture is None:
            return None
        capture.detach()  # first, while the source's device still holds the last bytes
        if self._source is not None:
            self._source.stop()
            self._source = None
        self.recording_changed.emit(False)
        return capture
