"""Image -> patch vectors and patch positions, as `Gemma4ImageProcessorPil` produces them.

The image is brought to RGB (`image_io.to_rgb`), resized with Pillow's bicubic filter to the budget's
size (`sizing.target_size`), scaled to [0, 1] and cut into 16x16 patches in row-major order. Each
patch vector is laid out [row, column, channel] with the channel fastest; its position is (x, y) =
(column, row) on the patch grid. The list is padded to `budget * 9` entries with zero pixels and
position (-1, -1), exactly like the reference, so outputs can be compared one to one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .image_io import to_rgb
from .sizing import PATCH_SIZE, POOLING_KERNEL, check_budget, target_size


@dataclass(frozen=True)
class PreprocessedImage:
    patches: np.ndarray    # float32 [budget * 9, 3 * 16 * 16]
    positions: np.ndarray  # int32 [budget * 9, 2], (x, y), (-1, -1) for padding
    num_soft_tokens: int
    grid: tuple[int, int]  # (rows, columns) of real patches

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]


def resized_pixels(rgb: Image.Image, budget: int) -> np.ndarray:
    """Pixels of an RGB image (`image_io.to_rgb`) at the budget's size, float32 [height, width, 3] in [0, 1]."""
    size = target_size(rgb.width, rgb.height, budget)
    if size != rgb.size:
        rgb = rgb.resize(size, resample=Image.Resampling.BICUBIC)
    # Scaling in float64 before rounding to float32 gives the reference's bits exactly.
    return (np.asarray(rgb, dtype=np.float64) * (1 / 255)).astype(np.float32)


def patchify(pixels: np.ndarray) -> np.ndarray:
    """[H, W, 3] -> [(H/16) * (W/16), 16 * 16 * 3], patches row-major, each [row, column, channel]."""
    height, width, channels = pixels.shape
    rows, cols = height // PATCH_SIZE, width // PATCH_SIZE
    blocks = pixels.reshape(rows, PATCH_SIZE, cols, PATCH_SIZE, channels).transpose(0, 2, 1, 3, 4)
    return blocks.reshape(rows * cols, PATCH_SIZE * PATCH_SIZE * channels)


def patch_positions(rows: int, cols: int) -> np.ndarray:
    ys, xs = np.divmod(np.arange(rows * cols, dtype=np.int32), cols)
    return np.stack([xs, ys], axis=-1)


def preprocess_image(image: Image.Image, budget: int) -> PreprocessedImage:
    """Any decoded PIL image -> the tower's input at `budget` soft tokens at most."""
    return preprocess_rgb(to_rgb(image), budget)


def preprocess_rgb(rgb: Image.Image, budget: int) -> PreprocessedImage:
    budget = check_budget(budget)
    pixels = resized_pixels(rgb, budget)
    rows, cols = pixels.shape[0] // PATCH_SIZE, pixels.shape[1] // PATCH_SIZE
    real = patchify(pixels)
    max_patches = budget * POOLING_KERNEL**2
    patches = np.zeros((max_patches, real.shape[1]), dtype=np.float32)
    patches[: len(real)] = real
    positions = np.full((max_patches, 2), -1, dtype=np.int32)
    positions[: len(real)] = patch_positions(rows, cols)
    return PreprocessedImage(patches=patches, positions=positions,
                             num_soft_tokens=len(real) // POOLING_KERNEL**2, grid=(rows, cols))
