"""Reading audio files with libsndfile (WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF, CAF ...) into mono float32.

On a Mac, AAC and ALAC (Voice Memos' M4A, iTunes purchases), which libsndfile cannot read, are decoded by
the system's own converter, `afconvert`, into a temporary WAV first.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from ..errors import EngineError
from .features import SAMPLE_RATE
from .waveform import MAX_AUDIO_SECONDS, check_duration, check_sample_rate, to_model_rate

_BLOCK_FRAMES = 1 << 16
_CONVERT_HINT = "convert it to WAV, FLAC, MP3 or Ogg first (for example with ffmpeg or an audio editor's export)"

# Containers people commonly have that libsndfile cannot open, recognised by their first bytes, and
# whether macOS's converter decodes them.
_UNSUPPORTED_MAGIC = (
    (4, b"ftyp", "an MP4/M4A file (AAC or ALAC audio, as Voice Memos and iTunes save)", True),
    (0, b"\x1a\x45\xdf\xa3", "a WebM/Matroska file", False),
    (0, b"#!AMR", "an AMR voice recording", True),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "a Windows Media (WMA/ASF) file", False),
    (0, b"\xff\xf1", "a raw AAC (ADTS) stream", True),
    (0, b"\xff\xf9", "a raw AAC (ADTS) stream", True),
)
# A compressed file the system converter is given at most: well over 10 minutes of AAC or even ALAC, so
# only what would be refused as too long anyway is refused unread. Its WAV is 16 kHz mono, 32 kB a second.
_MAX_CONVERTED_BYTES = 64 * 1024 * 1024
_CONVERT_TIMEOUT_S = 120


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
    unsupported, system_decodes = _unsupported_format(head)
    converter = system_converter() if system_decodes else None
    if converter:
        return _decode_with(converter, path)
    if unsupported:
        raise EngineError(f"{path.name} is {unsupported}, which Lantern cannot decode; {_CONVERT_HINT}")
    try:
        return _decode(path)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        detail = getattr(exc, "error_string", None) or str(exc)
    if _looks_like_text(head):
        raise EngineError(f"{path.name} is not an audio file: it holds text")
    raise EngineError(f"{path.name} could not be decoded as audio ({detail.rstrip('.')}); {_CONVERT_HINT}")


def system_converter() -> str | None:
    """macOS's `afconvert` (on every Mac), which decodes AAC and ALAC; None elsewhere."""
    return shutil.which("afconvert") if sys.platform == "darwin" else None


def _decode_with(converter: str, path: Path) -> tuple[np.ndarray, int]:
    """Decode `path` with the system converter into a temporary 16 kHz mono WAV, then read that."""
    if path.stat().st_size > _MAX_CONVERTED_BYTES:
        raise EngineError(f"{path.name} is {path.stat().st_size / 2**20:.0f} MB, far longer than the "
                          f"{MAX_AUDIO_SECONDS // 60} minutes of audio Lantern takes; trim it first")
    with tempfile.TemporaryDirectory(prefix="lantern-audio-") as folder:
        wav = Path(folder) / "decoded.wav"
        command = [converter, "-f", "WAVE", "-d", f"LEI16@{SAMPLE_RATE}", "-c", "1", str(path), str(wav)]
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=_CONVERT_TIMEOUT_S)
        except subprocess.CalledProcessError as exc:
            detail = exc.stderr.decode("utf-8", "replace").strip() or f"exit status {exc.returncode}"
            raise EngineError(f"{path.name} could not be decoded as audio (afconvert: {detail}); "
                              f"{_CONVERT_HINT}") from exc
        except (subprocess.TimeoutExpired, OSError) as exc:
            raise EngineError(f"{path.name} could not be decoded as audio ({exc}); {_CONVERT_HINT}") from exc
        return _decode(wav, path.name)


def _decode(path: Path, name: str | None = None) -> tuple[np.ndarray, int]:
    name = name or path.name
    with soundfile.SoundFile(path) as audio:
        rate = check_sample_rate(audio.samplerate, name)
        if audio.frames > 0:  # streams that do not know their length report 0 or less
            check_duration(audio.frames, rate, name)
        limit = MAX_AUDIO_SECONDS * rate
        blocks, total = [], 0
        while total <= limit:
            block = audio.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
            if not len(block):
                break
            # Downmixed block by block so that only one mono copy of the audio is ever held.
            blocks.append(block.mean(axis=1))
            total += len(block)
    check_duration(total, rate, name)
    return np.concatenate(blocks), rate


def _unsupported_format(head: bytes) -> tuple[str | None, bool]:
    """(what the file is, whether macOS's converter decodes it) for a container libsndfile cannot open."""
    for offset, magic, name, system_decodes in _UNSUPPORTED_MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return name, system_decodes
    return None, False


def _looks_like_text(head: bytes) -> bool:
    text = head.decode("utf-8", errors="replace").rstrip("\ufffd")  # the 64 bytes may end mid-character
    return bool(text) and all(char.isprintable() or char in "\t\r\n" for char in text)
