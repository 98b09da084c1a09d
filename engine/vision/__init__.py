"""Images (and video frames) to soft tokens for the Gemma 4 text model.

Wiring an image into a prompt: the chat template emits one image placeholder per image; replace it
with `boi + image_token * n + eoi` where `n = soft_token_count(*upright_size(image), budget)` (the
number of rows `encode_images` returns for that image), then scatter the rows of `encode_images`,
in prompt order, over the `image_token_id` positions of the embedded prompt. Video frames go the same
way with `video.video_prompt_text` and the video token instead (see `video.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
from PIL import Image

from ..multimodal_embedder import MultimodalEmbedder
from .encode import encode_preprocessed
from .feature_cache import FeatureCache, content_key
from .image_io import open_image, to_rgb, upright_size
from .preprocess import PreprocessedImage, preprocess_image, preprocess_rgb
from .sizing import BUDGETS, DEFAULT_BUDGET, check_budget, soft_token_count, target_size
from .tower import VisionTower

__all__ = [
    "BUDGETS", "DEFAULT_BUDGET", "FeatureCache", "PreprocessedImage", "VisionTower", "check_budget",
    "encode_images", "open_image", "preprocess_image", "soft_token_count", "target_size", "to_rgb",
    "upright_size",
]


def encode_images(tower: VisionTower, embedder: MultimodalEmbedder, images: Sequence[Image.Image],
                  budget: int, cache: FeatureCache | None = None) -> list[mx.array]:
    """Soft tokens (N_i, text hidden) float32 for each image, N_i = soft_token_count of that image.

    With a cache, an image seen before at the same budget (or twice in `images`) is encoded once.
    """
    check_budget(budget)
    rgbs = [to_rgb(image) for image in images]
    if cache is None:
        return encode_preprocessed(tower, embedder, [preprocess_rgb(rgb, budget) for rgb in rgbs])
    keys = [content_key(rgb, budget) for rgb in rgbs]
    found: dict[str, mx.array] = {}
    todo: dict[str, Image.Image] = {}
    for key, rgb in zip(keys, rgbs):
        if key in found or key in todo:
            continue
        hit = cache.get(key)
        if hit is None:
            todo[key] = rgb
        else:
            found[key] = hit
    encoded = encode_preprocessed(tower, embedder, [preprocess_rgb(rgb, budget) for rgb in todo.values()])
    for key, features in zip(todo, encoded):
        found[key] = features
        cache.put(key, features)
    return [found[key] for key in keys]
