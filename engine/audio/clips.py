"""How many soft tokens a clip becomes, and cutting long audio into clips the encoder accepts."""

from __future__ import annotations

import numpy as np

from .features import MAX_CLIP_SAMPLES, SAMPLE_RATE, valid_frame_count
from .resample import resampled_length

# The processor's cap; a 30 s clip gives exactly this many tokens.
MAX_TOKENS_PER_CLIP = 750
# Each of the two stride-2 subsampling convolutions (kernel 3, padding 1) halves time, rounding up.
_SUBSAMPLING_LAYERS = 2


def audio_token_count(num_samples: int) -> int:
    """Soft tokens the encoder yields for `num_samples` samples of 16 kHz audio (reference arithmetic).

    Not ceil(duration / 40 ms): the frame count first loses the partial frame at the end, which makes
    ceil() one too high for about a quarter of all lengths (1.01 s is 25 tokens, not 26).
    """
    tokens = valid_frame_count(num_samples)
    if tokens == 0:
        return 0
    for _ in range(_SUBSAMPLING_LAYERS):
        tokens = (tokens - 1) // 2 + 1
    return min(tokens, MAX_TOKENS_PER_CLIP)


def token_count_at_rate(num_samples: int, sample_rate: int) -> int:
    """audio_token_count of a clip of `num_samples` at `sample_rate` once resampled, without resampling it."""
    return audio_token_count(resampled_length(num_samples, sample_rate, SAMPLE_RATE))


def split_clips(waveform: np.ndarray) -> tuple[list[np.ndarray], str | None]:
    """Cut 16 kHz audio longer than 30 s into consecutive clips of equal length, each at most 30 s.

    Equal lengths avoid a last sliver too short to become a token. Returns the clips and, when the
    audio was cut, a sentence telling the user so.
    """
    total = len(waveform)
    count = max(1, -(-total // MAX_CLIP_SAMPLES))
    if count == 1:
        return [waveform], None
    bounds = [round(i * total / count) for i in range(count + 1)]
    clips = [waveform[start:end] for start, end in zip(bounds, bounds[1:])]
    message = (
        f"The audio is {total / SAMPLE_RATE:.1f} s long and the model listens to at most 30 s at a time, "
        f"so it was split into {count} consecutive clips of about {total / count / SAMPLE_RATE:.1f} s."
    )
    return clips, message
