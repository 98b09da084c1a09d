"""Log-mel features exactly as the reference Gemma 4 audio feature extractor computes them.

20 ms periodic-Hann frames every 10 ms over 16 kHz audio, zero-padded to a 512-point FFT, magnitude
(not power) spectrum, 128 HTK-scale triangular mel filters spanning 0-8000 Hz, then log(mel + 0.001).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import EngineError

SAMPLE_RATE = 16_000
FRAME_LENGTH = 320  # 20 ms
HOP_LENGTH = 160  # 10 ms
FFT_LENGTH = 512  # next power of two above the frame
NUM_MEL_BINS = 128
MAX_FREQUENCY = 8_000.0
MEL_FLOOR = 1e-3
# "Semicausal" framing: half a frame of silence in front, so frame i is centred on sample i * hop.
_LEFT_PAD = FRAME_LENGTH // 2
# The reference cuts one sample more than a frame (room for pre-emphasis, which is off) and calls a
# frame valid only when that last sample is still real audio.
_FRAME_SPAN = FRAME_LENGTH + 1
# The reference pads every clip to a multiple of 128 samples; the extra frames are masked out.
_PAD_MULTIPLE = 128
MAX_CLIP_SAMPLES = 30 * SAMPLE_RATE
# The shortest clip with one whole frame, hence one token.
MIN_CLIP_SAMPLES = _FRAME_SPAN - _LEFT_PAD


def valid_frame_count(num_samples: int) -> int:
    """Mel frames whose whole analysis window lies inside `num_samples` samples of real audio."""
    return max(0, (num_samples + _LEFT_PAD - _FRAME_SPAN) // HOP_LENGTH + 1)


def extract_features(waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel features [frames, 128] float32 and the frame validity mask [frames] of one 16 kHz clip.

    Invalid frames (those reaching into the padding) are zero, as in the reference.
    """
    signal = np.asarray(waveform, dtype=np.float32)
    if signal.ndim != 1:
        raise EngineError(f"audio features need a mono waveform, got an array of shape {signal.shape}")
    if signal.size > MAX_CLIP_SAMPLES:
        raise EngineError(
            f"an audio clip holds at most {MAX_CLIP_SAMPLES} samples (30 s at 16 kHz), got {signal.size}; "
            "split longer audio into clips first"
        )
    padded_length = -(-signal.size // _PAD_MULTIPLE) * _PAD_MULTIPLE
    framed = np.zeros(_LEFT_PAD + padded_length, dtype=np.float32)
    framed[_LEFT_PAD:_LEFT_PAD + signal.size] = signal
    frames = np.lib.stride_tricks.sliding_window_view(framed, _FRAME_SPAN)[::HOP_LENGTH, :FRAME_LENGTH]
    # float32 FFT, float64 filter product and log: the reference's precision at every step.
    magnitude = np.abs(np.fft.rfft(frames * _hann_window(), n=FFT_LENGTH, axis=-1))
    log_mel = np.log(magnitude @ _mel_filters() + MEL_FLOOR).astype(np.float32)
    mask = np.arange(len(frames)) < valid_frame_count(signal.size)
    log_mel[~mask] = 0.0
    return log_mel, mask


@lru_cache(maxsize=1)
def _hann_window() -> np.ndarray:
    """Periodic Hann: the window of length N+1 with its last sample dropped, so frames overlap-add flat."""
    n = np.arange(FRAME_LENGTH, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / FRAME_LENGTH)).astype(np.float32)


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=1)
def _mel_filters() -> np.ndarray:
    """[257 FFT bins, 128 mel bins] triangles in Hz between mel-spaced corners, peak 1, no area norm.

    The top filter falls between FFT bins and stays all zero; the reference has the same dead bin.
    """
    corners = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(MAX_FREQUENCY), NUM_MEL_BINS + 2))
    bins = np.linspace(0.0, SAMPLE_RATE // 2, FFT_LENGTH // 2 + 1)
    lower, centre, upper = corners[:-2], corners[1:-1], corners[2:]
    rising = (bins[:, None] - lower) / (centre - lower)
    falling = (upper - bins[:, None]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))
