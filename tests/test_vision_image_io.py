"""Opening user image files: everything readable opens, everything else is a clear EngineError."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine import EngineError
from engine.vision import open_image, soft_token_count, to_rgb, upright_size

IMAGES = Path(__file__).parent / "fixtures" / "images"


def png_bytes(size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 60)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("name", sorted(p.name for p in IMAGES.iterdir()))
def test_every_fixture_image_opens_from_path_and_bytes(name: str) -> None:
    from_path = open_image(IMAGES / name)
    from_bytes = open_image((IMAGES / name).read_bytes())
    assert from_path.size == from_bytes.size and from_path.width > 0
    np.testing.assert_array_equal(np.asarray(to_rgb(from_path)), np.asarray(to_rgb(from_bytes)))


def test_opened_image_is_fully_decoded() -> None:
    image = open_image(png_bytes())
    assert np.asarray(image).shape == (30, 40, 3)
    assert soft_token_count(*image.size, 70) > 0


@pytest.mark.parametrize("data, message", [
    (b"", "not an image"),
    (b"hello, this is a text file", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "damaged|not an image"),
])
def test_undecodable_bytes_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        open_image(data)


@pytest.mark.parametrize("make", [png_bytes, jpeg_bytes])
def test_truncated_file_is_refused(make, tmp_path: Path) -> None:
    data = make()
    path = tmp_path / "cut.img"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EngineError, match=r"cut\.img is damaged or truncated"):
        open_image(path)


def test_corrupted_png_checksum_is_refused() -> None:
    data = bytearray(png_bytes())
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(EngineError, match="damaged or truncated"):
        open_image(bytes(data))


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="no such image file"):
        open_image(tmp_path / "absent.png")


def test_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        open_image(b"nope")


@pytest.mark.parametrize("name", sorted(p.name for p in IMAGES.iterdir()))
def test_upright_size_is_the_size_the_pixels_end_up_with(name: str) -> None:
    image = open_image(IMAGES / name)
    assert upright_size(image) == to_rgb(image).size


def test_upright_size_swaps_sides_for_a_sideways_photo() -> None:
    image = open_image(IMAGES / "exif_rotated_60x40.jpg")
    assert image.size == (60, 40) and upright_size(image) == (40, 60)


def test_lazily_opened_damaged_file_is_refused_when_converted(tmp_path: Path) -> None:
    data = png_bytes((120, 90))
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EngineError, match=r"cut\.png is damaged or truncated"):
        to_rgb(Image.open(path))


def test_image_closed_before_its_pixels_were_read_is_named() -> None:
    with Image.open(IMAGES / "noise_37x91.png") as image:
        pass
    with pytest.raises(EngineError, match="closed before its pixels were read"):
        to_rgb(image)


@pytest.mark.parametrize("value", [str(IMAGES / "noise_37x91.png"), np.zeros((4, 4, 3), np.uint8), None])
def test_something_other_than_a_pil_image_is_named(value) -> None:
    for use in (to_rgb, upright_size):
        with pytest.raises(EngineError, match=f"must be a PIL image, not {type(value).__name__}"):
            use(value)


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` pixels (the pixel data is never reached)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


def test_an_image_over_the_pixel_cap_is_refused_before_decoding() -> None:
    with pytest.raises(EngineError, match=r"^the image data is 13400x13300 \(178 megapixels\); Lantern takes images "
                                          r"of up to 178 megapixels\. Scale it down"):
        open_image(png_header_claiming(13_400, 13_300))
    with pytest.raises(EngineError, match=r"^the image data has more than 178 megapixels, more than Lantern takes\."):
        open_image(png_header_claiming(20_000, 20_000))
    with pytest.raises(EngineError, match="damaged or truncated"):   # a 108-megapixel phone photo is not too big
        open_image(png_header_claiming(12_000, 9_000))


def test_formats_outside_the_allow_list_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "stars.png"
    Image.new("L", (8, 8), 7).save(path, format="PCX")   # a format Pillow reads, renamed
    with pytest.raises(EngineError, match="stars.png is not an image Lantern can read"):
        open_image(path)


def test_messages_use_the_label_and_name_heic_and_empty_files(tmp_path: Path) -> None:
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(32)
    with pytest.raises(EngineError, match="^IMG_7.HEIC is a HEIC photo, which Lantern cannot decode here"):
        open_image(heic, label="IMG_7.HEIC")
    with pytest.raises(EngineError, match=r"^blank.png is empty \(0 bytes\)"):
        open_image(b"", label="blank.png")
