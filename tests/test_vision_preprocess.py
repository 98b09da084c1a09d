"""Image preprocessing against `Gemma4ImageProcessorPil` (tools/make_vision_refs.py) and its own rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine import EngineError
from engine.vision.image_io import to_rgb
from engine.vision.preprocess import patchify, preprocess_image
from engine.vision.sizing import BUDGETS, soft_token_count

FIXTURES = Path(__file__).parent / "fixtures"
IMAGES = FIXTURES / "images"
REFERENCE = np.load(FIXTURES / "reference" / "vision_preprocess.npz")
STILLS = sorted({key.split("/")[0] for key in REFERENCE.files})


def test_reference_covers_every_colour_mode() -> None:
    modes = {Image.open(IMAGES / name).mode for name in STILLS}
    assert {"RGB", "RGBA", "P", "L", "LA", "I;16", "CMYK"} <= modes


@pytest.mark.parametrize("name", STILLS)
@pytest.mark.parametrize("budget", BUDGETS)
def test_matches_reference_processor(name: str, budget: int) -> None:
    image = Image.open(IMAGES / name)
    ours = preprocess_image(image, budget)
    ref = {field: REFERENCE[f"{name}/{budget}/{field}"] for field in (
        "num_soft_tokens", "positions", "row_signature", "column_sums", "sample_index", "sample_rows",
        "padding_abs_sum")}
    assert ours.num_soft_tokens == int(ref["num_soft_tokens"])
    assert ours.num_soft_tokens == soft_token_count(*to_rgb(image).size, budget)
    np.testing.assert_array_equal(ours.positions, ref["positions"])
    assert ours.patches.shape == (budget * 9, 768) and ours.patches.dtype == np.float32

    valid = ours.num_patches
    rows = ours.patches[:valid].astype(np.float64)
    weights = 1 + np.arange(768) / 768
    np.testing.assert_allclose(rows @ weights, ref["row_signature"], rtol=0, atol=2e-4)
    np.testing.assert_allclose(rows.sum(axis=0), ref["column_sums"], rtol=0, atol=1e-6 * valid)
    np.testing.assert_allclose(ours.patches[ref["sample_index"]], ref["sample_rows"], rtol=0, atol=1e-6)
    assert np.abs(ours.patches[valid:]).sum() == ref["padding_abs_sum"].item() == 0.0


def test_patch_vector_is_row_column_channel_with_channel_fastest() -> None:
    height, width = 32, 48
    ys, xs, cs = np.meshgrid(np.arange(height), np.arange(width), np.arange(3), indexing="ij")
    pixels = (ys * 1000 + xs * 10 + cs).astype(np.float32)
    patches = patchify(pixels)
    assert patches.shape == (2 * 3, 768)
    for index in range(6):
        row, col = divmod(index, 3)
        for py, px, c in [(0, 0, 0), (0, 0, 2), (0, 1, 0), (1, 0, 0), (15, 15, 2), (3, 7, 1)]:
            expected = (row * 16 + py) * 1000 + (col * 16 + px) * 10 + c
            assert patches[index, (py * 16 + px) * 3 + c] == expected


def test_positions_are_column_row_and_padding_is_minus_one() -> None:
    ours = preprocess_image(Image.new("RGB", (96, 48), (10, 20, 30)), 70)
    rows, cols = ours.grid
    assert (rows, cols) == (ours.num_patches // cols, cols)
    grid = ours.positions[: ours.num_patches].reshape(rows, cols, 2)
    assert (grid[..., 0] == np.arange(cols)[None, :]).all() and (grid[..., 1] == np.arange(rows)[:, None]).all()
    assert (ours.positions[ours.num_patches:] == -1).all()
    np.testing.assert_allclose(ours.patches[0, :3], np.array([10, 20, 30]) / 255, rtol=0, atol=1e-7)


def test_exif_orientation_is_applied_unlike_the_reference() -> None:
    stored = Image.open(IMAGES / "exif_rotated_60x40.jpg")
    assert stored.getexif().get(0x0112) == 6 and stored.size == (60, 40)
    upright = stored.convert("RGB").transpose(Image.Transpose.ROTATE_270)  # orientation 6 = turn clockwise
    assert to_rgb(stored).size == (40, 60)
    np.testing.assert_array_equal(np.asarray(to_rgb(stored)), np.asarray(upright))
    ours = preprocess_image(stored, 70)
    ignoring_exif = preprocess_image(Image.fromarray(np.asarray(stored.convert("RGB"))), 70)  # reference's view
    assert ours.grid == ignoring_exif.grid[::-1] and ours.grid[0] != ours.grid[1]


def test_sixteen_bit_images_are_scaled_not_clipped_unlike_the_reference() -> None:
    stored = Image.open(IMAGES / "gray16_90x70.png")
    assert stored.mode == "I;16"
    wide = np.asarray(stored, dtype=np.float64)
    assert wide.max() > 255
    expected = np.rint(wide * 255 / 65535).astype(np.uint8)
    ours = np.asarray(to_rgb(stored))
    for channel in range(3):
        np.testing.assert_array_equal(ours[..., channel], expected)
    clipped = np.asarray(stored.convert("RGB"))  # the reference's conversion: nearly all white
    assert (clipped == 255).mean() > 0.9 and (ours == 255).mean() < 0.1


def test_thirty_two_bit_image_with_eight_bit_values_keeps_them() -> None:
    values = np.arange(0, 250, 10, dtype=np.int32).reshape(5, 5)
    ours = np.asarray(to_rgb(Image.fromarray(values)))
    np.testing.assert_array_equal(ours[..., 1], values)


def test_transparency_is_composited_onto_white() -> None:
    rgba = Image.open(IMAGES / "rgba_120x80.png")
    pixels = np.asarray(rgba, dtype=np.float64)
    alpha = pixels[..., 3:] / 255
    expected = pixels[..., :3] * alpha + 255 * (1 - alpha)
    np.testing.assert_allclose(np.asarray(to_rgb(rgba), dtype=np.float64), expected, atol=1.0)
    assert (np.asarray(to_rgb(rgba))[:, 0] == 255).all()  # alpha 0 in the first column

    palette = Image.open(IMAGES / "palette_alpha_100x60.png")
    transparent = np.asarray(palette) == palette.info["transparency"]
    assert transparent.any()
    assert (np.asarray(to_rgb(palette))[transparent] == 255).all()


@pytest.mark.parametrize("size", [(0, 5), (5, 0)])
def test_image_without_pixels_is_refused(size: tuple[int, int]) -> None:
    with pytest.raises(EngineError, match="no area"):
        preprocess_image(Image.new("RGB", size), 280)


def test_unsupported_budget_is_refused() -> None:
    with pytest.raises(EngineError, match="budget 300"):
        preprocess_image(Image.new("RGB", (64, 64)), 300)
