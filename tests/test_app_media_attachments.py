"""Attachment state: decoding on attach, token costs, Auto budget, audio clips, capability checks."""

import numpy as np
import pytest
import soundfile
from PIL import Image, ImageDraw, ImageFont

from app.media.attachments import AUTO, Attachments, ImageAttachment, auto_budget, detail_share
from engine.audio import MAX_CLIP_SAMPLES, audio_token_count, read_audio, split_clips
from engine.errors import EngineError
from engine.vision import BUDGETS, open_image, soft_token_count, target_size
from tests.conftest import FIXTURES

MEDIA = FIXTURES / "media"


def text_page(width: int, height: int) -> Image.Image:
    page = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=max(10, height // 60))
    line = "The quick brown fox jumps over the lazy dog. 0123456789 " * 4
    for top in range(10, height - 20, max(14, height * 14 // 600)):
        draw.text((10, top), line, fill="black", font=font)
    return page


def smooth_photo(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 1, width)[None, :]
    y = np.linspace(0, 1, height)[:, None]
    red = 127 + 80 * np.sin(6 * x + 3 * y) + 30 * np.cos(10 * y)
    pixels = np.stack([red, red * 0.8, 255 - red], axis=-1)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    import io
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_image_from_path_costs_what_the_engine_counts_at_every_budget():
    attachments = Attachments()
    item = attachments.add_path(MEDIA / "image_wide.png")
    assert isinstance(item, ImageAttachment) and item.size == (64, 48)
    counts = {}
    for budget in BUDGETS:
        attachments.set_budget(item, budget)
        counts[budget] = item.tokens
        assert item.tokens == soft_token_count(64, 48, budget)
        assert item.model_view().size == target_size(64, 48, budget)
    assert len(set(counts.values())) == len(BUDGETS)  # every budget step changes the count
    assert attachments.image_tokens == counts[BUDGETS[-1]]


def test_auto_gives_text_pages_and_large_images_more_tokens():
    text, photo = text_page(1600, 1200), smooth_photo(1600, 1200)
    assert detail_share(text) == 1.0 and detail_share(photo) < 0.5
    assert auto_budget(text) > auto_budget(photo)
    assert auto_budget(smooth_photo(3000, 2000)) > auto_budget(smooth_photo(300, 200))
    assert auto_budget(text_page(400, 300)) >= 280  # small print never drops to the lowest budgets
    attachments = Attachments()
    item = attachments.add_image(png_bytes(text), "page.png")
    assert item.choice == AUTO and item.budget == auto_budget(text)


def test_corrupt_image_and_text_named_wav_give_clear_errors(tmp_path):
    broken = tmp_path / "photo.png"
    broken.write_bytes((MEDIA / "image_wide.png").read_bytes()[:60])
    fake = tmp_path / "voice.wav"
    fake.write_text("this is a shopping list, not a recording\n")
    attachments = Attachments()
    with pytest.raises(EngineError, match="photo.png is (damaged|not an image)"):
        attachments.add_path(broken)
    with pytest.raises(EngineError, match="voice.wav is not an audio file: it holds text"):
        attachments.add_path(fake)
    with pytest.raises(EngineError, match="notes.txt: Lantern attaches images .* not .txt"):
        attachments.add_path(tmp_path / "notes.txt")
    assert attachments.items == []


def test_an_animated_image_says_that_the_model_sees_its_first_frame():
    attachments = Attachments()
    animated = attachments.add_path(FIXTURES / "images" / "animation_48x32.gif")
    still = attachments.add_path(MEDIA / "image_wide.png")
    frames = Image.open(FIXTURES / "images" / "animation_48x32.gif").n_frames
    assert frames > 1 and animated.note == f"animated ({frames} frames): the model sees the first frame"
    assert still.note is None


def test_audio_the_engine_would_refuse_is_refused_when_attached(tmp_path):
    rate = 16_000
    corrupt = np.zeros(rate, dtype=np.float32)
    corrupt[100:110] = np.nan
    soundfile.write(tmp_path / "corrupt.wav", corrupt, rate, subtype="FLOAT")
    soundfile.write(tmp_path / "blip.wav", np.zeros(96, dtype=np.float32), rate)  # 6 ms
    attachments = Attachments()
    with pytest.raises(EngineError, match="corrupt.wav contains 10 NaN"):
        attachments.add_path(tmp_path / "corrupt.wav")
    with pytest.raises(EngineError, match=r"blip.wav is too short \(6 ms\)"):
        attachments.add_path(tmp_path / "blip.wav")
    with pytest.raises(EngineError, match="Recording 1 contains 10 NaN"):
        attachments.add_audio(corrupt, rate, "Recording 1")
    assert attachments.items == []


def test_audio_file_duration_tokens_and_long_audio_split_note(tmp_path):
    attachments = Attachments()
    item = attachments.add_path(MEDIA / "audio_16k.wav")
    info = soundfile.info(MEDIA / "audio_16k.wav")
    assert item.seconds == pytest.approx(info.frames / info.samplerate)
    assert item.tokens == audio_token_count(len(read_audio(MEDIA / "audio_16k.wav")))
    assert item.split_note is None

    rate = 22_050
    long_wave = (0.1 * np.sin(np.arange(int(rate * 71.5)) * 0.05)).astype(np.float32)
    path = tmp_path / "lecture.flac"
    soundfile.write(path, long_wave, rate)
    long_item = attachments.add_path(path)
    clips, _ = split_clips(read_audio(path))
    assert long_item.clip_count == len(clips) == 3
    assert long_item.split_note == "longer than 30 s: will be split into 3 clips"
    assert long_item.tokens == sum(audio_token_count(len(clip)) for clip in clips)
    assert all(len(clip) <= MAX_CLIP_SAMPLES for clip in clips)


def test_mac_audio_formats_are_attached_aiff_and_caf_here_and_m4a_with_the_engine_s_reason(tmp_path):
    attachments = Attachments()
    wave = (0.3 * np.sin(np.arange(16_000) * 0.05)).astype(np.float32)
    for name, fmt in (("GarageBand export.aiff", "AIFF"), ("Recording.caf", "CAF")):
        soundfile.write(tmp_path / name, wave, 16_000, format=fmt)
        assert attachments.add_path(tmp_path / name).seconds == pytest.approx(1.0)
    memo = tmp_path / "New Recording.m4a"
    memo.write_bytes(b"\x00\x00\x00\x1cftypM4A \x00\x00\x00\x00M4A isommp42")
    # Decoded by macOS's converter on a Mac (tests/test_audio_io.py); here the engine's own words say why not.
    with pytest.raises(EngineError, match="New Recording.m4a is an MP4/M4A file"):
        attachments.add_path(memo)


def test_models_without_audio_refuse_audio_with_the_reason():
    attachments = Attachments(modalities=frozenset({"text", "image"}), variant="31b")
    with pytest.raises(EngineError, match=r"Audio needs Gemma 4 E2B or E4B; this model \(31b\) has no audio tower"):
        attachments.add_path(MEDIA / "audio_16k.wav")
    with_audio = Attachments()
    with_audio.add_path(MEDIA / "audio_16k.wav")
    with_audio.add_path(MEDIA / "image_tall.png")
    notes = with_audio.set_model(frozenset({"text", "image"}), "26b-a4b")
    assert [type(item).__name__ for item in with_audio.items] == ["ImageAttachment"]
    assert notes == ["audio_16k.wav removed: audio needs Gemma 4 E2B or E4B; this model (26b-a4b) has no audio tower"]


def test_engine_media_hands_over_decoded_images_and_waveforms():
    attachments = Attachments()
    changes = []
    attachments.listeners.append(lambda: changes.append(len(attachments.items)))
    attachments.add_path(MEDIA / "image_tall.png")
    attachments.add_path(MEDIA / "audio_16k.wav")
    images, audio = attachments.engine_media()
    assert images[0].size == open_image(MEDIA / "image_tall.png").size
    assert audio[0][1] == soundfile.info(MEDIA / "audio_16k.wav").samplerate and audio[0][0].dtype == np.float32
    with pytest.raises(EngineError, match="budget 100 is not offered"):
        attachments.set_budget(attachments.images[0], 100)
    attachments.clear()
    assert changes == [1, 2, 0]
