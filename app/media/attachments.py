"""What the user has attached to the message being composed: images and audio, with their token cost.

Plain Python (no Qt), so the tray, the drop helper, the recorder and the tests share one state.
Every file is decoded when it is attached, so a broken file is refused with the engine's own
message at once instead of failing later in the middle of a turn.

Auto budget: an image's budget is chosen from how much detail it holds. `native_tokens` is the
number of soft tokens that would cover the image at its own resolution (each soft token sees a
48x48 pixel block); the image gets the smallest budget that covers `native_tokens * detail`,
where `detail` (0.25 .. 1) is the share of edge pixels on a downscaled grayscale copy scaled so
that a page of text counts as 1. Photos survive downscaling well, text does not, so a large
screenshot of a document gets 1120 tokens while a photo of the same size gets far fewer, and a
text-heavy image never goes below 280 tokens, where small print starts to blur.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from engine.audio.clips import audio_token_count, split_clips
from engine.audio.features import MAX_CLIP_SAMPLES, SAMPLE_RATE
from engine.audio.io import load_audio
from engine.audio.resample import resampled_length
from engine.audio.waveform import checked_mono
from engine.errors import EngineError
from engine.vision import BUDGETS, open_image, soft_token_count, target_size, to_rgb, upright_size

AUTO = "Auto"
BUDGET_CHOICES: tuple[int | str, ...] = (*BUDGETS, AUTO)
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".heic"})
# M4A and AAC are decoded by macOS's own converter; elsewhere the engine says to convert them first.
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".caf",
                            ".m4a", ".aac"})

# Side of the grayscale copy the detail measure looks at: big enough that body text keeps its strokes.
_DETAIL_SIDE = 512
# A luminance step (0..255, summed over x and y) that counts as an edge.
_EDGE_STEP = 48
# Edge-pixel share of a typical page of body text; at or above it an image counts as all detail.
_TEXT_EDGE_SHARE = 0.2
_MIN_DETAIL = 0.25
_TEXT_MIN_BUDGET = 280
_TOKEN_BLOCK = 48

_NEEDS_AUDIO = "audio needs Gemma 4 E2B or E4B"


def detail_share(image: Image.Image) -> float:
    """Share (0..1) of edge pixels in a downscaled grayscale copy, scaled so that a page of text is 1."""
    gray = to_rgb(image).convert("L")
    gray.thumbnail((_DETAIL_SIDE, _DETAIL_SIDE))
    pixels = np.asarray(gray, dtype=np.float32)
    if min(pixels.shape) < 2:
        return _MIN_DETAIL
    steps = np.abs(np.diff(pixels, axis=1))[:-1, :] + np.abs(np.diff(pixels, axis=0))[:, :-1]
    share = float(np.mean(steps > _EDGE_STEP))
    return min(1.0, max(_MIN_DETAIL, share / _TEXT_EDGE_SHARE))


def auto_budget(image: Image.Image) -> int:
    """The budget Auto picks for `image` (see the module docstring)."""
    width, height = upright_size(image)
    detail = detail_share(image)
    wanted = width * height / _TOKEN_BLOCK**2 * detail
    floor = _TEXT_MIN_BUDGET if detail >= 1.0 else BUDGETS[0]
    return next((b for b in BUDGETS if b >= wanted and b >= floor), BUDGETS[-1])


def _check_choice(choice: int | str) -> int | str:
    if choice not in BUDGET_CHOICES or isinstance(choice, bool):
        raise EngineError(f"image budget {choice!r} is not offered; choose one of "
                          f"{', '.join(map(str, BUDGET_CHOICES))}")
    return choice


@dataclass(eq=False)  # items are compared by identity: the tray and remove() track objects
class ImageAttachment:
    name: str
    image: Image.Image                      # decoded; handed to the engine as is
    size: tuple[int, int]                   # upright (EXIF applied) width, height
    auto: int                               # what Auto resolves to for this image
    choice: int | str = AUTO
    path: Path | None = None                # the file it came from, or None when pasted
    data: bytes | None = None               # the pasted bytes, or None when it came from a file

    @property
    def budget(self) -> int:
        return self.auto if self.choice == AUTO else int(self.choice)

    @property
    def tokens(self) -> int:
        return soft_token_count(*self.size, self.budget)

    @property
    def model_size(self) -> tuple[int, int]:
        """(width, height) the model sees the image at."""
        return target_size(*self.size, self.budget)

    @property
    def note(self) -> str | None:
        """A sentence for the user when the model sees less of the file than it holds."""
        frames = getattr(self.image, "n_frames", 1)
        return f"animated ({frames} frames): the model sees the first frame" if frames > 1 else None

    def model_view(self) -> Image.Image:
        """The image as the vision tower receives it: upright RGB at the budget's size."""
        return to_rgb(self.image).resize(self.model_size, Image.Resampling.BICUBIC)


@dataclass(eq=False)
class AudioAttachment:
    name: str
    waveform: np.ndarray                    # mono float32 at `sample_rate`
    sample_rate: int
    path: Path | None = None                # the file it came from, or None when recorded

    @property
    def seconds(self) -> float:
        return len(self.waveform) / self.sample_rate

    @property
    def model_samples(self) -> int:
        return resampled_length(len(self.waveform), self.sample_rate, SAMPLE_RATE)

    @property
    def clip_count(self) -> int:
        return max(1, -(-self.model_samples // MAX_CLIP_SAMPLES))

    @property
    def tokens(self) -> int:
        # The engine cuts long audio with split_clips; a zero-stride stand-in gives the same clip
        # lengths without resampling or allocating anything.
        stand_in = np.broadcast_to(np.float32(0), (self.model_samples,))
        clips, _ = split_clips(stand_in)
        return sum(audio_token_count(len(clip)) for clip in clips)

    @property
    def split_note(self) -> str | None:
        """A sentence for the user when the audio is longer than one 30 s clip."""
        if self.clip_count == 1:
            return None
        return f"longer than 30 s: will be split into {self.clip_count} clips"


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}:{secs:04.1f}"


def unavailable_reason(modalities: frozenset[str] | set[str], kind: str, variant: str = "") -> str | None:
    """Why the loaded model cannot take `kind` ("image" or "audio"), or None when it can."""
    if kind in modalities:
        return None
    model = f"this model ({variant})" if variant else "this model"
    if kind == "audio":
        return f"{_NEEDS_AUDIO}; {model} has no audio tower"
    return f"{model} has no vision tower, so it cannot see images"


@dataclass
class Attachments:
    """The images and audio of the message being composed, in the order they were added."""

    modalities: frozenset[str] = frozenset({"text", "image", "audio"})
    variant: str = ""
    items: list[ImageAttachment | AudioAttachment] = field(default_factory=list)
    listeners: list[Callable[[], None]] = field(default_factory=list)

    # -- adding -----------------------------------------------------------------------------------

    def add_path(self, path: str | Path) -> ImageAttachment | AudioAttachment:
        """Attach an image or audio file, chosen by its suffix; raises EngineError with the reason."""
        return self.add_decoded(self.decode_path(path))

    def add_image(self, source: str | Path | bytes, name: str) -> ImageAttachment:
        return self.add_decoded(self.decode_image(source, name))

    def decode_path(self, path: str | Path) -> ImageAttachment | AudioAttachment:
        """The attachment a file would make, decoded and checked but not added: the slow half of
        `add_path`, safe on a worker thread."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix in AUDIO_SUFFIXES:
            self.require("audio")
            waveform, rate = checked_mono(*load_audio(path), path.name)
            return AudioAttachment(path.name, waveform, rate, path)
        if suffix in IMAGE_SUFFIXES:
            return self.decode_image(path, path.name)
        raise EngineError(f"{path.name}: Lantern attaches images ({', '.join(sorted(IMAGE_SUFFIXES))}) and "
                          f"audio ({', '.join(sorted(AUDIO_SUFFIXES))}), not {suffix or 'files without a suffix'}")

    def decode_image(self, source: str | Path | bytes, name: str) -> ImageAttachment:
        """An image attachment from a file or encoded bytes, decoded and checked but not added."""
        self.require("image")
        image = open_image(source, label=name)
        pasted = isinstance(source, (bytes, bytearray))
        return ImageAttachment(name, image, upright_size(image), auto_budget(image),
                               path=None if pasted else Path(source), data=bytes(source) if pasted else None)

    def add_decoded(self, item: ImageAttachment | AudioAttachment) -> ImageAttachment | AudioAttachment:
        """Add an attachment made by `decode_path` or `decode_image`, if the model (maybe switched while
        it was decoded) can take it."""
        self.require("image" if isinstance(item, ImageAttachment) else "audio")
        return self._add(item)

    def add_audio(self, waveform: np.ndarray, sample_rate: int, name: str) -> AudioAttachment:
        self.require("audio")
        waveform, rate = checked_mono(waveform, sample_rate, name)
        return self._add(AudioAttachment(name, waveform, rate))

    def _add(self, item):
        self.items.append(item)
        self._changed()
        return item

    # -- editing ----------------------------------------------------------------------------------

    def remove(self, item: ImageAttachment | AudioAttachment) -> None:
        self.items.remove(item)
        self._changed()

    def set_budget(self, item: ImageAttachment, choice: int | str) -> None:
        item.choice = _check_choice(choice)
        self._changed()

    def clear(self) -> None:
        self.items.clear()
        self._changed()

    def set_model(self, modalities: frozenset[str] | set[str], variant: str = "") -> list[str]:
        """Switch to another model; drops what it cannot take and returns why, one line per item."""
        self.modalities, self.variant = frozenset(modalities), variant
        dropped = [item for item in self.items if self.reason_for(item)]
        self.items = [item for item in self.items if item not in dropped]
        self._changed()
        return [f"{item.name} removed: {self.reason_for(item)}" for item in dropped]

    # -- reading ----------------------------------------------------------------------------------

    def require(self, kind: str) -> None:
        reason = unavailable_reason(self.modalities, kind, self.variant)
        if reason:
            raise EngineError(reason[0].upper() + reason[1:])

    def reason_for(self, item: ImageAttachment | AudioAttachment) -> str | None:
        kind = "image" if isinstance(item, ImageAttachment) else "audio"
        return unavailable_reason(self.modalities, kind, self.variant)

    @property
    def images(self) -> list[ImageAttachment]:
        return [item for item in self.items if isinstance(item, ImageAttachment)]

    @property
    def audio(self) -> list[AudioAttachment]:
        return [item for item in self.items if isinstance(item, AudioAttachment)]

    @property
    def image_tokens(self) -> int:
        return sum(item.tokens for item in self.images)

    @property
    def audio_tokens(self) -> int:
        return sum(item.tokens for item in self.audio)

    @property
    def budgets(self) -> list[int]:
        return [item.budget for item in self.images]

    def engine_media(self) -> tuple[list[Image.Image], list[tuple[np.ndarray, int]]]:
        """(images, audio) in the form ChatSession.send takes them."""
        return [item.image for item in self.images], [(item.waveform, item.sample_rate) for item in self.audio]

    def _changed(self) -> None:
        for listener in list(self.listeners):
            listener()
