"""Decoding user images and bringing them to 8-bit RGB the way the reference processor does.

The conversion follows transformers' `Gemma4ImageProcessorPil` (`convert_to_rgb`): images with an
alpha band or a palette transparency are composited onto white, everything else goes through
Pillow's `convert("RGB")` (CMYK, grayscale, palette, ...), ignoring any ICC profile.

Two deliberate departures from the reference, both so that what the model sees is what the user sees:

* EXIF orientation is applied (`ImageOps.exif_transpose`). The reference ignores it, so a phone photo
  stored sideways with an orientation tag reaches the model sideways.
* 16-bit and 32-bit integer images (modes `I;16*`, `I`) and float images (`F`) are scaled to 8 bits.
  Pillow's `convert` clips them at 255 instead, which turns an ordinary 16-bit PNG almost white.
  Values above 255 are read as 16-bit (0..65535); images whose values all fit 0..255 keep them.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import EngineError

_WIDE_MODES = ("I", "F")
# Formats opened at all: a short list keeps Pillow's rarer parsers (and their bugs) out of reach. MPO is
# how Pillow before 13 names the JPEG files of many phones and cameras (13 reads them as JPEG).
_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "TIFF")
# Far above what the model can use (1120 soft tokens cover about 2.6 megapixels), above the 108-megapixel
# photos of some phones, and just below the size at which Pillow refuses an image as a decompression bomb.
MAX_PIXELS = 178_000_000
_SCALE_DOWN = "Scale it down first: the model sees at most about 2.6 megapixels of it anyway."
# ISO media "ftyp" brands of HEIC / HEIF still images (iPhone photos), which Pillow cannot decode.
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"hevc", b"hevx")
_ORIENTATION_TAG = 0x0112
_QUARTER_TURNS = (5, 6, 7, 8)  # EXIF orientations stored rotated by 90 degrees one way or the other


def open_image(source: str | Path | bytes, label: str | None = None) -> Image.Image:
    """Decode an image file (path or raw bytes) completely, or raise EngineError saying why not.
    `label` names the image in messages (default: its path)."""
    name = label or ("the image data" if isinstance(source, (bytes, bytearray)) else str(source))
    with _decoding(name):
        head = _head(source)
    _refuse_known_unreadable(head, name)
    with _decoding(name):
        with _open(source) as probe:
            _check_pixel_count(probe.size, name)
            probe.verify()  # checks the container and checksums without decoding pixels
        image = _open(source)
        image.load()  # decodes every pixel, so a truncated file fails here, not later
    if image.width == 0 or image.height == 0:
        raise EngineError(f"{name} has no pixels ({image.width}x{image.height})")
    return image


@contextmanager
def _decoding(name: str) -> Iterator[None]:
    """Turn Pillow's many ways of failing on a bad file into one EngineError that names it."""
    try:
        yield
    except EngineError:   # already says what is wrong (a ValueError, which the last clause would rewrap)
        raise
    except FileNotFoundError:
        raise EngineError(f"{name}: no such image file") from None
    except UnidentifiedImageError:
        raise EngineError(f"{name} is not an image Lantern can read (it reads PNG, JPEG, WebP, GIF, BMP and "
                          "TIFF)") from None
    except Image.DecompressionBombError:
        raise EngineError(f"{name} has more than {MAX_PIXELS // 1_000_000} megapixels, more than Lantern takes. "
                          + _SCALE_DOWN) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise EngineError(f"{name} is damaged or truncated and cannot be decoded: {exc}") from None


def _head(source: str | Path | bytes) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source[:16])
    with open(source, "rb") as handle:
        return handle.read(16)


def _refuse_known_unreadable(head: bytes, name: str) -> None:
    if not head:
        raise EngineError(f"{name} is empty (0 bytes), not an image")
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        raise EngineError(f"{name} is a HEIC photo, which Lantern cannot decode here; export it as JPEG or PNG "
                          "(in Preview: File → Export) and attach that")


def _check_pixel_count(size: tuple[int, int], name: str) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise EngineError(f"{name} is {width}x{height} ({width * height / 1e6:.0f} megapixels); Lantern takes images "
                          f"of up to {MAX_PIXELS // 1_000_000} megapixels. " + _SCALE_DOWN)


def _open(source: str | Path | bytes) -> Image.Image:
    data = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray)) else Path(source)
    Image.init()   # registers every format plugin; returns at once after the first call
    with warnings.catch_warnings():   # Pillow only warns from 89 megapixels; our own cap refuses them
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(data, formats=[name for name in _FORMATS if name in Image.OPEN])


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright 8-bit RGB version of `image` (see the module docstring for the two departures)."""
    _check_is_image(image)
    if image.width == 0 or image.height == 0:
        raise EngineError(f"an image of {image.width}x{image.height} pixels has no area; it cannot be encoded")
    _load_pixels(image)
    image = _upright(image)
    if image.mode.startswith(_WIDE_MODES):
        image = _to_8bit(image)
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) after the EXIF orientation is applied, without touching pixels (token meter)."""
    _check_is_image(image)
    try:
        orientation = image.getexif().get(_ORIENTATION_TAG)
    except (OSError, SyntaxError, ValueError, struct.error):
        orientation = None
    if orientation in _QUARTER_TURNS:
        return image.height, image.width
    return image.width, image.height


def _load_pixels(image: Image.Image) -> None:
    """`Image.open` reads only the header, so an image given that way is decoded here, where a damaged
    file can still fail with a clear error."""
    name = getattr(image, "filename", None) or "the image"
    if getattr(image, "tile", None) and getattr(image, "fp", True) is None:
        raise EngineError(f"{name} was closed before its pixels were read; call image.load() inside its "
                          "`with Image.open(...)` block, or open it with engine.vision.open_image(path)")
    with _decoding(name):
        image.load()


def _check_is_image(image: object) -> None:
    if not isinstance(image, Image.Image):
        raise EngineError(f"an image must be a PIL image, not {type(image).__name__}: read a file with "
                          "engine.vision.open_image(path), or an array with PIL.Image.fromarray(array)")


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, struct.error):
        return image  # unreadable EXIF: the stored orientation is all there is


def _to_8bit(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    if values.max(initial=0.0) > 255:
        values = values * (255 / 65535)
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
