"""From preprocessed images to soft tokens in the text model's embedding space.

Images that share a patch grid (same resized size: repeated images, video frames) run through the
tower together; each batch is capped so its activations stay bounded. Padding patches are dropped
before the tower, which is exact: the reference masks them out of attention and pooling anyway.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import mlx.core as mx
import numpy as np

from ..errors import EngineError
from ..multimodal_embedder import MultimodalEmbedder
from .preprocess import PreprocessedImage
from .tower import VisionTower

# Two full images at the largest budget (2 x 10080 patches) per tower call.
MAX_BATCH_PATCHES = 20_160


def _batches(images: Sequence[PreprocessedImage]) -> list[list[int]]:
    by_grid: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, image in enumerate(images):
        by_grid[image.grid].append(index)
    batches = []
    for grid, indices in by_grid.items():
        per_batch = max(1, MAX_BATCH_PATCHES // (grid[0] * grid[1]))
        batches.extend(indices[start:start + per_batch] for start in range(0, len(indices), per_batch))
    return batches


def _check_positions_fit(tower: VisionTower, images: Sequence[PreprocessedImage]) -> None:
    # Released towers have 10240 positions per axis, beyond any budget; small custom ones may not.
    table = tower.config.position_embedding_size
    for image in images:
        if max(image.grid) > table:
            rows, cols = image.grid
            raise EngineError(f"an image of {cols}x{rows} patches needs more than the vision tower's {table} "
                              "positions per side; choose a smaller image budget")


def encode_preprocessed(tower: VisionTower, embedder: MultimodalEmbedder,
                        images: Sequence[PreprocessedImage]) -> list[mx.array]:
    """Soft tokens (num_soft_tokens, text hidden) float32 for each image, in order."""
    _check_positions_fit(tower, images)
    results: list[mx.array | None] = [None] * len(images)
    for batch in _batches(images):
        count = images[batch[0]].num_patches
        patches = mx.array(np.stack([images[i].patches[:count] for i in batch]))
        positions = mx.array(np.stack([images[i].positions[:count] for i in batch]))
        features = embedder(tower(patches, positions)).astype(mx.float32)
        mx.eval(features)
        for row, index in enumerate(batch):
            results[index] = features[row]
    return results
