"""Reading audio files with libsndfile (WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF, CAF ...) into mono float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from ..errors import EngineError
from .waveform import MAX_AUDIO_SECONDS, check_duration, check_sample_rate, to_model_rate

_BLOCK_FRAMES = 1 << 16
_CONVERT_HINT = "convert it to WAV, FLAC, MP3 or Ogg first (for example with ffmpeg or an audio editor's export)"

# Containers people commonly have that libsndfile cannot open, recognised by their first bytes.
_UNSUPPORTED_MAGIC = (
    (4, b"ftyp", "an MP4/M4A file (AAC or ALAC audio, as Voice Memos and iTunes save)"),
    (0, b"\x1a\x45\xdf\xa3", "a WebM/Matroska file"),
    (0, b"#!AMR", "an AMR voice recording"),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "a Windows Media (WMA/ASF) file"),
    (0, b"\xff\xf1", "a raw AAC (ADTS) stream"),
    (0, b"\xff\xf9", "a raw AAC (ADTS) stream"),
)


def read_audio(path: str | Path) -> np.ndarray:
    """Decode an audio file into the encoder's input: a checked 16 kHz mono float32 waveform."""
    waveform, rate = load_audio(path)
    return to_model_rate(waveform, rate, source=Path(path).name)


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode an audio file into a mono float32 waveform at its own sample rate.

    The length is checked from the header before decoding, and again while reading, so a huge or
    lying file is refused without being loaded.
    """
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"{path}: no such audio file")
    with path.open("rb") as handle:
        head = handle.read(64)
    if not head:
        raise EngineError(f"{path.name} is empty (0 bytes), not an audio file")
    unsupported = _unsupported_format(head)
    if unsupported:
        raise EngineError(f"{path.name} is {unsupported}, which Lantern cannot decode; {_CONVERT_HINT}")
    try:
        return _decode(path)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        detail = getattr(exc, "error_string", None) or str(exc)
    if _looks_like_text(head):
        raise EngineError(f"{path.name} is not an audio file: it holds text")
    raise EngineError(f"{path.name} could not be decoded as audio ({detail.rstrip('.')}); {_CONVERT_HINT}")


def _decode(path: Path) -> tuple[np.ndarray, int]:
    with soundfile.SoundFile(path) as audio:
        rate = check_sample_rate(audio.samplerate, path.name)
        if audio.frames > 0:  # streams that do not know their length report 0 or less
            check_duration(audio.frames, rate, path.name)
        limit = MAX_AUDIO_SECONDS * rate
        blocks, total = [], 0
        while total <= limit:
            block = audio.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
            if not len(block):
                break
            # Downmixed block by block so that only one mono copy of the audio is ever held.
            blocks.append(block.mean(axis=1))
            total += len(block)
    check_duration(total, rate, path.name)
    return np.concatenate(blocks), rate


def _unsupported_format(head: bytes) -> str | None:
    for offset, magic, name in _UNSUPPORTED_MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return name
    return None


def _looks_like_text(head: bytes) -> bool:
    text = head.decode("utf-8", errors="replace").rstrip("\ufffd")  # the 64 bytes may end mid-character
    return bool(text) and all(char.isprintable() or char in "\t\r\n" for char in text)
