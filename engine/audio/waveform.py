"""Turning whatever waveform a caller hands over into the 16 kHz mono float32 signal the encoder takes."""

from __future__ import annotations

import numpy as np

from ..errors import EngineError
from .clips import audio_token_count
from .features import MIN_CLIP_SAMPLES, SAMPLE_RATE
from .resample import resample, resampled_length

# Longer audio would take minutes to encode and thousands of prompt tokens; refuse it up front,
# before anything is decoded or copied.
MAX_AUDIO_SECONDS = 600
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000
# A second axis this long is a (channels, samples) array passed the wrong way round.
MAX_CHANNELS = 32
# Full scale of each integer PCM type, so that integer audio lands in [-1, 1).
_PCM_FULL_SCALE = {np.dtype(np.int8): 2.0**7, np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31}


def check_sample_rate(sample_rate: object, source: str = "audio") -> int:
    integral = isinstance(sample_rate, (int, np.integer)) or (
        isinstance(sample_rate, (float, np.floating)) and float(sample_rate).is_integer())
    if isinstance(sample_rate, bool) or not integral or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise EngineError(
            f"{source}: sample rate {sample_rate!r} is not supported; give a whole number of Hz between "
            f"{MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE}"
        )
    return int(sample_rate)


def check_duration(num_samples: int, sample_rate: int, source: str = "audio") -> None:
    if num_samples == 0:
        raise EngineError(f"{source} contains no audio samples")
    seconds = num_samples / sample_rate
    if seconds > MAX_AUDIO_SECONDS:
        raise EngineError(
            f"{source} is {_clock(seconds)} long; Lantern takes at most {MAX_AUDIO_SECONDS // 60} minutes of "
            "audio at once. Trim it or cut it into shorter files."
        )


def to_model_rate(waveform: np.ndarray, sample_rate: object, source: str = "audio") -> np.ndarray:
    """Validate, downmix and resample `waveform` ((samples,) or (samples, channels), float or integer
    PCM, any rate) to 16 kHz mono float32."""
    mono, rate = checked_mono(waveform, sample_rate, source)
    return resample(mono, rate, SAMPLE_RATE)


def checked_mono(waveform: np.ndarray, sample_rate: object, source: str = "audio") -> tuple[np.ndarray, int]:
    """(mono float32 samples, rate) after every check `to_model_rate` makes. It does not resample, so it
    is cheap enough to refuse bad audio at the moment it is attached."""
    rate = check_sample_rate(sample_rate, source)
    array = np.asarray(waveform)
    _check_layout(array, source)
    check_duration(array.shape[0], rate, source)
    mono = _mono_float32(array, source)
    _check_finite(mono, source)
    if audio_token_count(resampled_length(len(mono), rate, SAMPLE_RATE)) == 0:
        shortest_ms = 1000 * MIN_CLIP_SAMPLES / SAMPLE_RATE
        raise EngineError(
            f"{source} is too short ({1000 * array.shape[0] / rate:.0f} ms); the audio encoder needs at least "
            f"{shortest_ms:.1f} ms to produce anything"
        )
    return mono, rate


def _check_layout(array: np.ndarray, source: str) -> None:
    if array.ndim not in (1, 2):
        raise EngineError(f"{source}: expected a (samples,) or (samples, channels) array, got shape {array.shape}")
    if array.ndim == 2 and not 1 <= array.shape[1] <= MAX_CHANNELS:
        raise EngineError(
            f"{source}: an array of shape {array.shape} would have {array.shape[1]} channels; audio arrays are "
            f"(samples, channels) with at most {MAX_CHANNELS} channels (transpose a (channels, samples) array)"
        )


def _mono_float32(array: np.ndarray, source: str) -> np.ndarray:
    if array.dtype == np.uint8:  # 8-bit PCM is unsigned, centred on 128
        samples = (array.astype(np.float32) - 128.0) / 128.0
    elif array.dtype in _PCM_FULL_SCALE:
        samples = array.astype(np.float32) / np.float32(_PCM_FULL_SCALE[array.dtype])
    elif array.dtype.kind == "f":
        samples = array.astype(np.float32, copy=False)
    else:
        raise EngineError(
            f"{source}: samples of type {array.dtype} are not audio; give float samples in [-1, 1] or "
            "8/16/32-bit integer PCM"
        )
    return samples if samples.ndim == 1 else samples.mean(axis=1)


def _check_finite(signal: np.ndarray, source: str) -> None:
    bad = ~np.isfinite(signal)
    if bad.any():
        first = int(np.argmax(bad))
        raise EngineError(
            f"{source} contains {int(bad.sum())} NaN or infinite samples (the first at sample {first}); "
            "the file or array is corrupt"
        )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
