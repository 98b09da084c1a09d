"""Log-mel features and soft-token counts against transformers' Gemma4AudioFeatureExtractor."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from engine.audio import MAX_TOKENS_PER_CLIP, audio_token_count, extract_features
from engine.errors import EngineError

REFERENCE = Path(__file__).parent / "fixtures" / "reference" / "audio_features.npz"
SIGNALS = ("tone_0.5s", "chirp_1.01s", "noise_2.3s", "voice_30s", "short_203")


@lru_cache(maxsize=1)
def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as data:
        return dict(data)


@pytest.mark.parametrize("signal", SIGNALS)
def test_features_match_reference(signal: str) -> None:
    ref = reference()
    waveform = (ref[f"pcm/{signal}"] / 32_768.0).astype(np.float32)
    features, mask = extract_features(waveform)
    assert features.dtype == np.float32
    assert features.shape == ref[f"features/{signal}"].shape
    np.testing.assert_array_equal(mask, ref[f"mask/{signal}"])
    assert np.abs(features - ref[f"features/{signal}"]).max() <= 1e-5


def test_padding_frames_are_masked_and_zero() -> None:
    # 1.01 s is not a multiple of the 128-sample padding: the reference adds one frame of padding.
    features, mask = extract_features(np.full(16_160, 0.25, np.float32))
    assert mask.sum() == 100 and len(mask) == 101
    assert not mask[-1] and np.all(features[-1] == 0.0)
    assert np.all(features[:100] != 0.0)


def test_features_refuse_more_than_30_seconds() -> None:
    with pytest.raises(EngineError, match="at most 480000 samples"):
        extract_features(np.zeros(480_001, np.float32))


def test_token_counts_match_reference_for_many_lengths() -> None:
    ref = reference()
    lengths = ref["count/lengths"]
    counts = np.array([audio_token_count(int(n)) for n in lengths])
    np.testing.assert_array_equal(counts, ref["count/tower_mask"])
    np.testing.assert_array_equal(counts, ref["count/processor"])


def test_count_table_covers_the_lengths_where_naive_ceil_is_off_by_one() -> None:
    ref = reference()
    naive = np.array([min(math.ceil(n / 16_000 * 1000 / 40), MAX_TOKENS_PER_CLIP) for n in ref["count/lengths"]])
    off_by_one = ref["count/tower_mask"] != naive
    assert off_by_one.sum() >= 20
    assert np.all(naive[off_by_one] - ref["count/tower_mask"][off_by_one] == 1)


def test_token_count_examples_from_the_blueprint() -> None:
    assert [audio_token_count(n) for n in (16_000, 16_160, 32_000, 160_000, 480_000)] == [25, 25, 50, 250, 750]
    assert audio_token_count(160) == 0 and audio_token_count(161) == 1
