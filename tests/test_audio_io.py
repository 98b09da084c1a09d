"""Reading audio files, and refusing bad audio with a clear EngineError."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from engine.audio import SAMPLE_RATE, audio_token_count, load_audio, read_audio, split_clips, to_model_rate
from engine.errors import EngineError


def tone(rate: int, seconds: float, frequency: float = 440.0) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * frequency * np.arange(round(seconds * rate)) / rate)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


# The start of an MP4 container: a 'ftyp' box with the M4A brand, then an (empty) 'mdat' box.
M4A_HEAD = b"\x00\x00\x00\x1cftypM4A \x00\x00\x00\x00M4A isommp42" + b"\x00\x00\x00\x08mdat"


@pytest.mark.parametrize(("suffix", "fmt", "subtype", "rate"), [
    ("wav", "WAV", "PCM_16", 16_000), ("flac", "FLAC", "PCM_24", 44_100), ("ogg", "OGG", "VORBIS", 22_050),
    ("opus", "OGG", "OPUS", 48_000), ("mp3", "MP3", "MPEG_LAYER_III", 44_100), ("aiff", "AIFF", "PCM_16", 8_000),
])
def test_common_formats_decode_to_16_khz_mono(tmp_path: Path, suffix: str, fmt: str, subtype: str, rate: int) -> None:
    path = tmp_path / f"clip.{suffix}"
    soundfile.write(path, tone(rate, 1.0), rate, format=fmt, subtype=subtype)
    waveform = read_audio(path)
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    assert abs(len(waveform) - SAMPLE_RATE) <= 0.05 * SAMPLE_RATE  # lossy codecs may add priming samples
    # The same tone at 16 kHz, up to the codec's delay: look for the best alignment.
    expected = tone(SAMPLE_RATE, 1.2)
    best = max(correlation(waveform[2_000:14_000], expected[shift:]) for shift in range(0, 400))
    assert best > 0.99


def test_8_khz_stereo_24_bit_is_downmixed_and_resampled(tmp_path: Path) -> None:
    path = tmp_path / "phone.wav"
    left = tone(8_000, 0.75, 300.0)
    soundfile.write(path, np.stack([left, left], axis=1), 8_000, subtype="PCM_24")
    waveform, rate = load_audio(path)
    assert rate == 8_000 and waveform.shape == (6_000,)
    resampled = read_audio(path)
    assert len(resampled) == 12_000
    assert np.abs(resampled[1_000:-1_000] - tone(SAMPLE_RATE, 0.75, 300.0)[1_000:-1_000]).max() < 1e-3


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(EngineError, match=r"empty.wav is empty \(0 bytes\)"):
        read_audio(path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="no such audio file"):
        read_audio(tmp_path / "nothing.wav")


def test_file_with_zero_samples_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "silent.wav"
    soundfile.write(path, np.zeros(0, np.float32), 16_000)
    with pytest.raises(EngineError, match="contains no audio samples"):
        read_audio(path)


def test_10_ms_of_audio_is_refused_as_too_short(tmp_path: Path) -> None:
    path = tmp_path / "blip.wav"
    soundfile.write(path, tone(16_000, 0.010), 16_000)
    with pytest.raises(EngineError, match=r"too short \(10 ms\).*at least 10.1 ms"):
        read_audio(path)


def test_shortest_usable_clip_gives_one_token() -> None:
    waveform = to_model_rate(tone(16_000, 0.0101), 16_000)
    assert audio_token_count(len(waveform)) == 1


def test_nan_samples_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.wav"
    samples = tone(16_000, 0.5).astype(np.float32)
    samples[1234] = np.nan
    samples[4000] = np.inf
    soundfile.write(path, samples, 16_000, subtype="FLOAT")
    with pytest.raises(EngineError, match="2 NaN or infinite samples.*sample 1234"):
        read_audio(path)


def test_text_file_named_wav_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("Shopping list: milk, eggs, café au lait\n", encoding="utf-8")
    with pytest.raises(EngineError, match="notes.wav is not an audio file: it holds text"):
        read_audio(path)


def test_random_bytes_name_the_decoder_failure(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(bytes(np.random.default_rng(3).integers(0, 256, 4_096, dtype=np.uint8)))
    with pytest.raises(EngineError, match="noise.wav could not be decoded as audio.*convert it to WAV"):
        read_audio(path)


def test_m4a_from_voice_memos_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "New Recording.m4a"
    path.write_bytes(M4A_HEAD)   # on a machine without macOS's converter
    with pytest.raises(EngineError, match="MP4/M4A.*Voice Memos.*convert it to WAV"):
        read_audio(path)


# Stands in for macOS's afconvert: checks the arguments Lantern passes, then writes a 1 s 440 Hz tone as
# the 16 kHz mono WAV that afconvert would (or fails as afconvert does on a file it cannot read).
FAKE_AFCONVERT = """#!{python}
import sys
import numpy as np
import soundfile
args = sys.argv[1:]
if args[:6] != ["-f", "WAVE", "-d", "LEI16@16000", "-c", "1"] or len(args) != 8:
    sys.exit("unexpected arguments: " + " ".join(args))
if open(args[6], "rb").read(12)[4:8] != b"ftyp":
    sys.exit("Error: ExtAudioFileOpenURL failed ('typ?')")
soundfile.write(args[7], 0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000), 16000, subtype="PCM_16")
"""


@pytest.fixture
def fake_afconvert(tmp_path: Path, monkeypatch) -> Path:
    script = tmp_path / "afconvert"
    script.write_text(FAKE_AFCONVERT.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setattr("engine.audio.io.system_converter", lambda: str(script))
    return script


def test_m4a_is_decoded_by_the_system_converter_where_there_is_one(tmp_path: Path, fake_afconvert: Path) -> None:
    path = tmp_path / "New Recording.m4a"
    path.write_bytes(M4A_HEAD)
    waveform = read_audio(path)
    assert len(waveform) == SAMPLE_RATE and correlation(waveform, tone(SAMPLE_RATE, 1.0)) > 0.999
    assert sorted(p.name for p in tmp_path.iterdir()) == ["New Recording.m4a", "afconvert"]   # no WAV left


def test_what_the_system_converter_cannot_read_is_refused_with_its_reason(tmp_path: Path, fake_afconvert: Path) -> None:
    path = tmp_path / "broken.aac"
    path.write_bytes(b"\xff\xf1" + bytes(200))
    with pytest.raises(EngineError, match=r"broken.aac could not be decoded as audio \(afconvert: Error: Ext"):
        read_audio(path)
    big = tmp_path / "audiobook.m4a"
    big.write_bytes(M4A_HEAD)
    with big.open("r+b") as handle:
        handle.truncate(100 * 1024 * 1024)   # sparse: nothing big is written, and nothing is converted
    with pytest.raises(EngineError, match="audiobook.m4a is 100 MB, far longer than the 10 minutes"):
        read_audio(big)


def test_two_hour_file_is_refused_from_its_header_without_reading(tmp_path: Path) -> None:
    """The header says 2 hours; the sample data is a sparse hole, so nothing big is written or read."""
    path = tmp_path / "lecture.wav"
    rate, frames = 8_000, 2 * 3600 * 8_000  # 8-bit mono: one byte per frame
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate, 1, 8)
    header = b"RIFF" + struct.pack("<I", 36 + frames) + b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt
    path.write_bytes(header + b"data" + struct.pack("<I", frames))
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size + frames)
    with pytest.raises(EngineError, match=r"lecture.wav is 2:00:00 long; Lantern takes at most 10 minutes"):
        read_audio(path)


def test_two_hour_array_is_refused_before_any_copy() -> None:
    two_hours = np.broadcast_to(np.float32(0.1), (2 * 3600 * 16_000,))  # no memory behind it
    with pytest.raises(EngineError, match="is 2:00:00 long"):
        to_model_rate(two_hours, 16_000)


def test_nan_in_an_array_is_refused() -> None:
    samples = np.zeros((1_600, 2), np.float32)
    samples[7, 1] = np.nan
    with pytest.raises(EngineError, match="NaN"):
        to_model_rate(samples, 16_000)


def test_long_audio_is_split_into_equal_clips_of_at_most_30_seconds() -> None:
    waveform = np.arange(75 * SAMPLE_RATE + 3, dtype=np.float32)
    clips, message = split_clips(waveform)
    assert len(clips) == 3
    assert all(len(clip) <= 30 * SAMPLE_RATE for clip in clips)
    np.testing.assert_array_equal(np.concatenate(clips), waveform)
    assert max(map(len, clips)) - min(map(len, clips)) <= 1
    assert "75.0 s" in message and "3 consecutive clips" in message


def test_a_hair_over_30_seconds_gives_no_useless_sliver() -> None:
    clips, _ = split_clips(np.zeros(30 * SAMPLE_RATE + 10, np.float32))
    assert [audio_token_count(len(clip)) for clip in clips] == [375, 375]


def test_clips_up_to_30_seconds_are_not_split() -> None:
    waveform = np.zeros(30 * SAMPLE_RATE, np.float32)
    clips, message = split_clips(waveform)
    assert len(clips) == 1 and clips[0] is waveform and message is None
