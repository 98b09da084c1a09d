"""The content-keyed feature cache: keys follow pixels and budget, eviction follows bytes and recency."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from PIL import Image

from engine.vision.feature_cache import FeatureCache, content_key


def features(rows: int) -> mx.array:
    return mx.zeros((rows, 16), dtype=mx.float32)  # 64 bytes a row


def picture(seed: int, size: tuple[int, int] = (20, 10)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_key_follows_pixels_and_budget() -> None:
    a = picture(0)
    assert content_key(a, 280) == content_key(a.copy(), 280)
    assert content_key(a, 280) != content_key(a, 70)
    assert content_key(a, 280) != content_key(picture(1), 280)
    # Same bytes, other shape: the size is part of the key.
    assert content_key(a, 280) != content_key(Image.frombytes("RGB", (10, 20), a.tobytes()), 280)


def test_least_recently_used_entries_go_first_once_over_the_byte_bound() -> None:
    cache = FeatureCache(max_bytes=3 * 64 * 10)
    for key in "abc":
        cache.put(key, features(10))
    assert cache.nbytes == 3 * 640 and len(cache) == 3
    assert cache.get("a") is not None  # "a" is now the most recent
    cache.put("d", features(10))
    assert cache.get("b") is None
    assert all(cache.get(key) is not None for key in "acd")
    assert cache.nbytes == 3 * 640


def test_replacing_a_key_keeps_the_byte_count_right() -> None:
    cache = FeatureCache(max_bytes=10_000)
    cache.put("a", features(10))
    cache.put("a", features(20))
    assert len(cache) == 1 and cache.nbytes == 20 * 64 and cache.get("a").shape == (20, 16)


def test_entry_larger_than_the_bound_is_not_kept() -> None:
    cache = FeatureCache(max_bytes=100)
    cache.put("small", features(1))
    cache.put("huge", features(10))
    assert cache.get("huge") is None and cache.get("small") is not None


def test_clear_empties() -> None:
    cache = FeatureCache()
    cache.put("a", features(3))
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0 and cache.get("a") is None
