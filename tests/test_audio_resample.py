"""The polyphase resampler: pass band, stop band (no aliasing), lengths, and the array front end."""

from __future__ import annotations

import numpy as np
import pytest

from engine.audio import (SAMPLE_RATE, audio_token_count, resample, resampled_length, to_model_rate,
                          token_count_at_rate)
from engine.errors import EngineError

RATES = (8_000, 11_025, 22_050, 44_100, 48_000, 96_000, 12_345)


def tone(frequency: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * frequency * np.arange(round(seconds * rate)) / rate)


def interior(x: np.ndarray) -> np.ndarray:
    """Away from the ends, where the filter runs into the zero padding."""
    return x[2_000:-2_000]


def rms_db(x: np.ndarray, reference: float) -> float:
    return 20 * np.log10(np.sqrt(np.mean(x**2)) / reference)


@pytest.mark.parametrize("rate", RATES)
def test_pass_band_tone_comes_out_as_the_same_tone(rate: int) -> None:
    out = resample(tone(1_000, rate, 1.0).astype(np.float32), rate, SAMPLE_RATE)
    assert out.dtype == np.float32
    expected = tone(1_000, SAMPLE_RATE, len(out) / SAMPLE_RATE)
    assert np.abs(interior(out) - interior(expected)).max() < 1e-4


@pytest.mark.parametrize("rate", [r for r in RATES if r > 2 * 9_000])
def test_tones_above_8_khz_do_not_alias_into_the_band(rate: int) -> None:
    out = resample(tone(9_000, rate, 1.0, amplitude=1.0).astype(np.float32), rate, SAMPLE_RATE)
    assert rms_db(interior(out), np.sqrt(0.5)) < -70


@pytest.mark.parametrize("rate", RATES)
def test_top_of_the_mel_range_passes(rate: int) -> None:
    out = resample(tone(7_000, rate, 1.0, amplitude=1.0).astype(np.float32), rate, SAMPLE_RATE)
    assert abs(rms_db(interior(out), np.sqrt(0.5))) < 0.01


@pytest.mark.parametrize("rate", RATES + (16_000,))
@pytest.mark.parametrize("samples", [1, 7, 441, 44_101])
def test_output_length_covers_the_input_duration(rate: int, samples: int) -> None:
    out = resample(np.ones(samples, np.float32), rate, SAMPLE_RATE)
    assert len(out) == resampled_length(samples, rate, SAMPLE_RATE)
    # Every output instant lies inside the input, and the next one would not.
    assert (len(out) - 1) / SAMPLE_RATE < samples / rate <= len(out) / SAMPLE_RATE


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("samples", [1_000, 4_411, 16_161, 100_003])
def test_token_count_at_rate_needs_no_resampling_but_agrees_with_it(rate: int, samples: int) -> None:
    resampled = to_model_rate(np.zeros(samples, np.float32), rate)
    assert token_count_at_rate(samples, rate) == audio_token_count(len(resampled))


def test_stereo_integer_pcm_is_scaled_and_downmixed() -> None:
    left = tone(440, SAMPLE_RATE, 0.5, amplitude=0.5)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    for pcm, scale in ((np.int16, 32_768), (np.int32, 2**31)):
        out = to_model_rate((stereo * scale).astype(pcm), SAMPLE_RATE)
        assert np.abs(out - left / 2).max() < 1e-4


def test_unsigned_8_bit_pcm_is_centred() -> None:
    out = to_model_rate(np.full(1_600, 192, np.uint8), SAMPLE_RATE)
    assert np.allclose(out, 0.5)


def test_float_sample_rate_with_whole_value_is_accepted() -> None:
    assert len(to_model_rate(np.zeros(4_410, np.float32), 44_100.0)) == 1_600


@pytest.mark.parametrize(("rate", "fragment"), [(0, "sample rate 0"), (44_100.5, "sample rate 44100.5"),
                                                (True, "sample rate True"), (10_000_000, "between")])
def test_bad_sample_rates_are_refused(rate: object, fragment: str) -> None:
    with pytest.raises(EngineError, match=fragment):
        to_model_rate(np.zeros(1_000, np.float32), rate)


def test_channels_first_arrays_are_refused_with_a_hint() -> None:
    with pytest.raises(EngineError, match="transpose"):
        to_model_rate(np.zeros((2, 48_000), np.float32), 48_000)


def test_non_audio_dtypes_are_refused() -> None:
    with pytest.raises(EngineError, match="complex128"):
        to_model_rate(np.zeros(1_000, np.complex128), SAMPLE_RATE)
