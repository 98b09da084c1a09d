"""Soft tokens of images already encoded, keyed by content, so a later turn does not re-encode them.

The key is the SHA-256 of the upright 8-bit RGB pixels (and the size) plus the budget: the same picture
sent again, even from another file name or format, hits; a different budget misses. Entries are
dropped least-recently-used first once their bytes pass the bound. One cache belongs to one loaded
model: features from another model's tower are not interchangeable.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import mlx.core as mx
from PIL import Image

DEFAULT_MAX_BYTES = 256 * 1024 * 1024


def content_key(rgb: Image.Image, budget: int) -> str:
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:{budget}:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


class FeatureCache:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, mx.array] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: str) -> mx.array | None:
        with self._lock:
            features = self._entries.get(key)
            if features is not None:
                self._entries.move_to_end(key)
            return features

    def put(self, key: str, features: mx.array) -> None:
        with self._lock:
            if key in self._entries:
                self._bytes -= self._entries.pop(key).nbytes
            if features.nbytes > self.max_bytes:
                return  # would evict everything and still not fit
            self._entries[key] = features
            self._bytes += features.nbytes
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
