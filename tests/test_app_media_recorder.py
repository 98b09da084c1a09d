"""The recorder's capture path fed a generated tone through a QBuffer standing in for the microphone."""

import numpy as np
import pytest
from PySide6.QtCore import QBuffer, QIODevice

from app.media.recorder import PcmCapture, PcmFormat, Recorder, request_microphone
from engine.audio import SAMPLE_RATE, resampled_length

TONE_HZ = 440.0


def tone_bytes(pcm: PcmFormat, seconds: float) -> bytes:
    """A 440 Hz tone in `pcm`'s layout, the same in every channel, at half scale."""
    t = np.arange(int(round(seconds * pcm.sample_rate))) / pcm.sample_rate
    wave = 0.5 * np.sin(2 * np.pi * TONE_HZ * t)
    if pcm.sample_type is np.float32:
        samples = wave.astype(np.float32)
    elif pcm.sample_type is np.uint8:
        samples = np.round(128 + 127 * wave).astype(np.uint8)
    else:
        samples = np.round(wave * np.iinfo(pcm.sample_type).max).astype(pcm.sample_type)
    return np.repeat(samples[:, None], pcm.channels, axis=1).tobytes()


class FakeMicrophone:
    """A QBuffer that receives bytes the way a push-mode audio source's device does: appended at the
    end while the reader's position stays put, announced by the buffer's own readyRead."""

    def __init__(self):
        self.buffer = QBuffer()
        self.buffer.open(QIODevice.OpenModeFlag.ReadWrite)

    def speak(self, qtbot, data: bytes, chunk: int = 4099) -> None:
        for start in range(0, len(data), chunk):  # chunks that split frames in two
            reader = self.buffer.pos()
            self.buffer.seek(self.buffer.size())
            self.buffer.write(data[start:start + chunk])
            self.buffer.seek(reader)
            qtbot.wait(0)  # QBuffer announces new data through the event loop


def dominant_hz(wave: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / SAMPLE_RATE)[np.argmax(spectrum)])


@pytest.mark.parametrize("pcm", [PcmFormat(48_000, 2, np.int16), PcmFormat(44_100, 1, np.float32),
                                 PcmFormat(96_000, 4, np.int32), PcmFormat(8_000, 1, np.uint8)],
                         ids=["48k-stereo-int16", "44k1-mono-float", "96k-4ch-int32", "8k-uint8"])
def test_tone_through_the_capture_path_becomes_16k_mono_of_the_right_length(qtbot, pcm):
    recorder = Recorder()
    mic = FakeMicrophone()
    levels, remaining = [], []
    recorder.level.connect(lambda rms, peak: levels.append((rms, peak)))
    recorder.remaining.connect(remaining.append)
    recorder.start_capture(mic.buffer, pcm)
    mic.speak(qtbot, tone_bytes(pcm, 1.25))
    with qtbot.waitSignal(recorder.finished) as finished:
        recorder.stop()
    wave, mode = finished.args
    frames = int(round(1.25 * pcm.sample_rate))
    assert mode == "ask" and wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == resampled_length(frames, pcm.sample_rate, SAMPLE_RATE) == 20_000
    assert abs(dominant_hz(wave) - TONE_HZ) < 2
    assert np.sqrt(np.mean(wave[2000:-2000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    assert levels and all(rms == pytest.approx(0.5 / np.sqrt(2), rel=0.1) and peak <= 0.51 for rms, peak in levels[1:-1])
    assert remaining[0] == 30.0 and remaining[-1] == pytest.approx(30.0 - 1.25, abs=1e-6)
    assert not recorder.recording


def test_the_clip_limit_stops_recording_at_exactly_30_seconds(qtbot):
    pcm = PcmFormat(8_000, 1, np.int16)
    recorder = Recorder()
    mic = FakeMicrophone()
    recorder.start_capture(mic.buffer, pcm, mode="dictate")
    with qtbot.waitSignal(recorder.finished, timeout=5000) as finished:
        mic.speak(qtbot, tone_bytes(pcm, 31.0), chunk=16_001)
    wave, mode = finished.args
    assert mode == "dictate" and len(wave) == 30 * SAMPLE_RATE and not recorder.recording


def test_partial_frames_wait_for_their_rest():
    pcm = PcmFormat(16_000, 2, np.int32)
    capture = PcmCapture(pcm)
    data = tone_bytes(pcm, 0.1)
    capture.consume(data[:13])
    assert capture.frames == 1
    capture.consume(data[13:])
    assert capture.frames == 1600
    left_and_right = np.frombuffer(data, np.int32).reshape(-1, 2) / 2**31
    assert np.allclose(capture.waveform(), left_and_right.mean(axis=1), atol=1e-6)  # 16 kHz in: no resampling


def test_empty_or_too_short_recordings_fail_with_a_reason(qtbot):
    recorder = Recorder()
    recorder.start_capture(FakeMicrophone().buffer, PcmFormat(48_000, 1, np.int16))
    with qtbot.waitSignal(recorder.failed) as failed:
        recorder.stop()
    assert failed.args[0] == "The recording is empty: no sound arrived from the microphone"
    recorder.start_capture((mic := FakeMicrophone()).buffer, PcmFormat(48_000, 1, np.int16))
    mic.speak(qtbot, tone_bytes(PcmFormat(48_000, 1, np.int16), 0.001))
    with qtbot.waitSignal(recorder.failed) as failed:
        recorder.stop()
    assert "too short" in failed.args[0]


def test_permission_answer_arrives_and_a_machine_without_a_microphone_says_so(qtbot):
    answers = []
    request_microphone(None, lambda granted, reason: answers.append((granted, reason)))
    assert answers == [(True, "")]  # Linux has no permission prompt: granted at once
    recorder = Recorder()
    errors, started = [], []
    recorder.failed.connect(errors.append)
    recorder.recording_changed.connect(started.append)
    recorder.start("ask")
    if started:  # a machine with a real input device: the real audio source records
        recorder.cancel()
        assert started == [True, False]
    else:
        assert errors and ("No microphone was found" in errors[0] or "Qt Multimedia could not load" in errors[0])
    with pytest.raises(ValueError, match="recording mode 'sing' is not one of ask, dictate"):
        recorder.start("sing")
