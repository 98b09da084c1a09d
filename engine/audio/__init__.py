"""Audio input for Gemma 4 E2B/E4B: decoding, resampling, log-mel features, the conformer tower."""

from .clips import MAX_TOKENS_PER_CLIP, audio_token_count, split_clips, token_count_at_rate
from .encode import encode_audio
from .features import MAX_CLIP_SAMPLES, SAMPLE_RATE, extract_features
from .io import load_audio, read_audio
from .resample import resample, resampled_length
from .tower import AudioTower
from .waveform import MAX_AUDIO_SECONDS, to_model_rate

__all__ = [
    "MAX_AUDIO_SECONDS",
    "MAX_CLIP_SAMPLES",
    "MAX_TOKENS_PER_CLIP",
    "SAMPLE_RATE",
    "AudioTower",
    "audio_token_count",
    "encode_audio",
    "extract_features",
    "load_audio",
    "read_audio",
    "resample",
    "resampled_length",
    "split_clips",
    "to_model_rate",
    "token_count_at_rate",
]
