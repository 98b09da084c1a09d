"""The per-conversation KV state: caches, what they hold, and snapshots to roll back to.

`keys` describes the cached content one entry per position: the token id, or for a media
placeholder a key derived from the media's content, so an edited image never reuses stale KV.
Snapshots are taken at turn boundaries; restoring one drops every later snapshot, since the
positions after it are about to be rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .cache import CacheState, LayerCache

_MAX_SNAPSHOTS = 8


@dataclass(frozen=True)
class Snapshot:
    length: int
    states: list[CacheState | None]


class PromptCache:
    def __init__(self, make_caches: Callable[[], list[LayerCache | None]]):
        self._make_caches = make_caches
        self.reset()

    @property
    def keys(self) -> np.ndarray:
        return self._keys[: self._length]

    @property
    def length(self) -> int:
        return self._length

    def common_prefix(self, keys: np.ndarray) -> int:
        n = min(self.keys.size, keys.size)
        differ = np.flatnonzero(self.keys[:n] != keys[:n])
        return int(differ[0]) if differ.size else n

    def rewind(self, keys: np.ndarray) -> int:
        """Roll back to the longest cached prefix of `keys` that leaves at least one position to run.

        Returns how many positions are reused.
        """
        target = min(self.common_prefix(keys), keys.size - 1)
        if target == self.length:
            return target
        if self._trim(target):
            return target
        usable = [s for s in self.snapshots if s.length <= target]
        if not usable:
            self.reset()
            return 0
        best = max(usable, key=lambda s: s.length)
        for cache, state in zip(self.caches, best.states):
            if cache is not None:
                cache.restore(state)
        self._forget_after(best.length)
        return best.length

    def _trim(self, length: int) -> bool:
        """Trim every cache in place when all of them can (sliding rings only before they wrap)."""
        if not all(cache is None or _can_trim(cache, length) for cache in self.caches):
            return False
        for cache in self.caches:
            if cache is not None:
                cache.trim_to(length)
        self._forget_after(length)
        return True

    def _forget_after(self, length: int) -> None:
        self._length = length
        self.snapshots = [s for s in self.snapshots if s.length <= length]

    def append(self, keys: np.ndarray) -> None:
        """Amortised O(len(keys)): decoding appends one key per token, and the context can be 128k long."""
        end = self._length + keys.size
        if end > self._keys.size:
            grown = np.empty(max(end, 2 * self._keys.size, 1024), dtype=np.int64)
            grown[: self._length] = self.keys
            self._keys = grown
        self._keys[self._length: end] = keys
        self._length = end

    def snapshot(self) -> None:
        if any(s.length == self.length for s in self.snapshots):
            return
        states = [None if cache is None else cache.snapshot() for cache in self.caches]
        self.snapshots.append(Snapshot(self.length, states))
        self.snapshots = self.snapshots[-_MAX_SNAPSHOTS:]

    def reset(self) -> None:
        self.caches = self._make_caches()
        self._keys = np.zeros(0, dtype=np.int64)
        self._length = 0
        self.snapshots: list[Snapshot] = []

    @property
    def nbytes(self) -> int:
        return sum(cache.nbytes for cache in self.caches if cache is not None)


def _can_trim(cache: LayerCache, length: int) -> bool:
    window = getattr(cache, "window", None)
    return window is None or cache.length <= window or length >= cache.length

