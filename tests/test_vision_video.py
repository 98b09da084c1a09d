"""Video frames: uniform sampling like the reference, timestamps, and the per-frame prompt text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine import EngineError
from engine.vision.sizing import soft_token_count
from engine.vision.video import (DEFAULT_FPS, frame_token_counts, frames_from_file, frames_from_images,
                                 sample_indices, timestamp_label, video_prompt_text)

IMAGES = Path(__file__).parent / "fixtures" / "images"
GIF_DURATIONS_MS = [100, 100, 200, 50, 0, 100, 100]  # as tools/make_vision_refs.py writes the GIF


@pytest.mark.parametrize("total, wanted", [(100, 32), (32, 32), (33, 32), (7, 3), (1000, 60), (5, 1)])
def test_sampling_matches_the_reference_rule(total: int, wanted: int) -> None:
    video_utils = pytest.importorskip("transformers.video_utils")
    metadata = video_utils.VideoMetadata(total_num_frames=total, fps=24.0)
    expected = video_utils.default_sample_indices_fn(metadata, num_frames=wanted)
    assert sample_indices(total, wanted) == expected.tolist()


def test_short_video_keeps_every_frame() -> None:
    assert sample_indices(5, 32) == [0, 1, 2, 3, 4]


def test_frames_from_images_use_the_given_rate() -> None:
    frames = [Image.new("RGB", (32, 32), (i, i, i)) for i in range(10)]
    video = frames_from_images(frames, fps=2.0, max_frames=4)
    assert [f.getpixel((0, 0))[0] for f in video.frames] == [0, 2, 5, 7]
    assert video.timestamps == [0.0, 1.0, 2.5, 3.5]
    assert frames_from_images(frames[:2]).timestamps == [0.0, 1 / DEFAULT_FPS]


@pytest.mark.parametrize("frames, fps, message", [([], 1.0, "at least one frame"),
                                                  ([Image.new("RGB", (8, 8))], 0.0, "frame rate")])
def test_bad_video_inputs_are_refused(frames, fps: float, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        frames_from_images(frames, fps=fps)


def test_max_frames_must_be_positive() -> None:
    with pytest.raises(EngineError, match="max_frames"):
        sample_indices(10, 0)


def test_animated_gif_frames_and_timestamps_follow_the_frame_delays() -> None:
    video = frames_from_file(IMAGES / "animation_48x32.gif", max_frames=4)
    total = len(GIF_DURATIONS_MS)
    chosen = [i * total // 4 for i in range(4)]
    delays = [d if d > 0 else 1000 / DEFAULT_FPS for d in GIF_DURATIONS_MS]
    assert video.timestamps == pytest.approx([sum(delays[:i]) / 1000 for i in chosen])
    reference = Image.open(IMAGES / "animation_48x32.gif")
    for frame, index in zip(video.frames, chosen):
        reference.seek(index)
        np.testing.assert_array_equal(np.asarray(frame.convert("RGB")), np.asarray(reference.convert("RGB")))
    assert len({np.asarray(f.convert("RGB")).tobytes() for f in video.frames}) == 4


def test_animated_webp_gives_all_its_frames() -> None:
    video = frames_from_file(IMAGES / "animation_40x30.webp")
    assert len(video.frames) == Image.open(IMAGES / "animation_40x30.webp").n_frames == 5
    assert video.timestamps == pytest.approx([0.0, 0.08, 0.2, 0.28, 0.4])


def test_still_image_is_a_one_frame_video() -> None:
    video = frames_from_file(IMAGES / "scene_640x480.png")
    assert len(video.frames) == 1 and video.timestamps == [0.0]


def test_undecodable_video_file_is_refused() -> None:
    with pytest.raises(EngineError):
        frames_from_file(b"GIF89a broken")


@pytest.mark.parametrize("seconds, label", [(0, "00:00"), (59.9, "00:59"), (61, "01:01"), (3725, "62:05")])
def test_timestamp_labels(seconds: float, label: str) -> None:
    assert timestamp_label(seconds) == label


def test_prompt_text_per_frame() -> None:
    video = frames_from_images([Image.new("RGB", (640, 480))] * 3, fps=0.5)
    counts = frame_token_counts(video)
    assert counts == [soft_token_count(640, 480, 70)] * 3
    text = video_prompt_text(video.timestamps, counts, "<B>", "<V>", "<E>")
    pieces = text.split(" ")
    assert [pieces[0], pieces[2], pieces[4]] == ["00:00", "00:02", "00:04"]
    assert pieces[1] == "<B>" + "<V>" * counts[0] + "<E>"
    assert text.count("<V>") == sum(counts) and len(pieces) == 6


def test_prompt_text_needs_one_count_per_frame() -> None:
    with pytest.raises(EngineError, match="2 frame timestamps but 1"):
        video_prompt_text([0.0, 1.0], [64], "<B>", "<V>", "<E>")
