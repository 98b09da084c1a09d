"""Video as a sequence of timestamped frames, each encoded like an image (architecture reference §6).

What the reference does: transformers' `Gemma4VideoProcessor` decodes a video file with PyAV by
default (also decord, OpenCV, torchvision or torchcodec on request), samples `num_frames` = 32 frames
uniformly (frame indices `i * total // n`), resizes each frame like an image but with torchvision's
antialiased bicubic on tensors, and budgets 70 soft tokens per frame. The prompt for one video
placeholder becomes, per frame, `"mm:ss " + boi + video_token * n + eoi`, joined by single spaces,
with timestamps `index / fps` (fps 24 when the metadata has none). Frames reuse the image boi/eoi
tokens but their soft tokens sit on `video_token_id` positions.

What Lantern supports, with no video decoder dependency: a list of PIL frames (the caller knows
their rate), or an animated GIF / WebP / PNG file decoded by Pillow, where a frame's timestamp is the
sum of the display durations of the frames before it. Frames are sampled with the same uniform rule
(a video with fewer frames than asked for keeps them all, where the reference raises) and encoded
through the image path (Pillow bicubic), so their pixels can differ from the reference video
processor by a few 1/255 steps. Container formats such as MP4 are not decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..errors import EngineError
from .image_io import open_image
from .sizing import check_budget, soft_token_count

DEFAULT_MAX_FRAMES = 32
DEFAULT_FRAME_BUDGET = 70
DEFAULT_FPS = 24.0  # the reference's assumption when a video carries no rate


@dataclass(frozen=True)
class VideoFrames:
    frames: list[Image.Image]
    timestamps: list[float]  # seconds from the start, one per frame


def sample_indices(total: int, max_frames: int) -> list[int]:
    """Uniformly spread indices of at most `max_frames` frames out of `total`."""
    if max_frames < 1:
        raise EngineError(f"max_frames must be at least 1, got {max_frames}")
    count = min(total, max_frames)
    return [i * total // count for i in range(count)]


def frames_from_images(images: Sequence[Image.Image], fps: float = DEFAULT_FPS,
                       max_frames: int = DEFAULT_MAX_FRAMES) -> VideoFrames:
    """Sample frames given as images shown at `fps` frames per second."""
    if not images:
        raise EngineError("a video needs at least one frame")
    if fps <= 0:
        raise EngineError(f"a video's frame rate must be positive, got {fps}")
    chosen = sample_indices(len(images), max_frames)
    return VideoFrames([images[i] for i in chosen], [i / fps for i in chosen])


def frames_from_file(source: str | Path | bytes, max_frames: int = DEFAULT_MAX_FRAMES) -> VideoFrames:
    """Sample frames of an animated GIF, WebP or PNG (a still image gives one frame at 0:00)."""
    animation = open_image(source)
    total = getattr(animation, "n_frames", 1)
    chosen = set(sample_indices(total, max_frames))
    frames, timestamps, elapsed_ms = [], [], 0.0
    try:
        for index in range(total):
            animation.seek(index)
            if index in chosen:
                animation.load()
                frames.append(animation.copy())
                timestamps.append(elapsed_ms / 1000)
            elapsed_ms += _duration_ms(animation.info.get("duration"))
    except (OSError, EOFError, ValueError) as exc:
        raise EngineError(f"frame {index} of the animation cannot be decoded: {exc}") from None
    return VideoFrames(frames, timestamps)


def _duration_ms(value: object) -> float:
    # Animations often leave the delay at 0 or out; show such frames at the default rate.
    if isinstance(value, (int, float)) and value > 0:
        return float(value)
    return 1000 / DEFAULT_FPS


def timestamp_label(seconds: float) -> str:
    """`mm:ss` as the reference writes it (minutes keep counting past 59)."""
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"


def frame_token_counts(video: VideoFrames, budget: int = DEFAULT_FRAME_BUDGET) -> list[int]:
    check_budget(budget)
    return [soft_token_count(frame.width, frame.height, budget) for frame in video.frames]


def video_prompt_text(timestamps: Sequence[float], token_counts: Sequence[int], boi: str,
                      video_token: str, eoi: str) -> str:
    """The text that replaces one video placeholder: `mm:ss boi video*n eoi` per frame, space-joined."""
    if len(timestamps) != len(token_counts):
        raise EngineError(f"{len(timestamps)} frame timestamps but {len(token_counts)} frame token counts")
    return " ".join(f"{timestamp_label(t)} {boi}{video_token * n}{eoi}" for t, n in zip(timestamps, token_counts))
