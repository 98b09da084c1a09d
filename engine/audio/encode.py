"""From a waveform to the soft tokens that replace the audio placeholders of a prompt."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from ..errors import EngineError
from ..multimodal_embedder import MultimodalEmbedder
from .clips import audio_token_count
from .features import MAX_CLIP_SAMPLES, SAMPLE_RATE, extract_features
from .tower import AudioTower
from .waveform import to_model_rate


def encode_audio(tower: AudioTower, embedder: MultimodalEmbedder, waveform: np.ndarray,
                 sample_rate: int) -> mx.array:
    """One clip of at most 30 s (any rate, mono or (samples, channels)) -> (N, text hidden) float32,
    N = audio_token_count of the clip at 16 kHz. Longer audio goes through split_clips first."""
    signal = to_model_rate(waveform, sample_rate)
    if len(signal) > MAX_CLIP_SAMPLES:
        raise EngineError(
            f"an audio clip is at most 30 s long, this one is {len(signal) / SAMPLE_RATE:.1f} s; "
            "cut it with split_clips and encode each clip"
        )
    features, mask = extract_features(signal)
    tokens, _ = tower(mx.array(features)[None], mx.array(mask)[None])
    # Real frames come first, so the valid tokens are a prefix as long as the token count.
    count = audio_token_count(len(signal))
    return embedder(tokens[0, :count]).astype(mx.float32)
