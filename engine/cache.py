"""KV caches shaped for Gemma 4.

Only layers that own their K/V get a cache (KV-shared consumers read their producer's). Full layers
keep every position; sliding layers keep a ring of `window` slots in which position p lives in slot
p % window. Every cache reports the absolute position of each key it returns (or that the single new
query sees them all), so masks are built from positions and never depend on slot order.

Updates are functional (new arrays, never writes into an array someone else holds), so a snapshot of
a ring is just a reference to the arrays of the moment: later updates leave it untouched. A full
cache's snapshot is only its length, since appends never change earlier positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

_GROWTH_STEP = 256


@dataclass(frozen=True)
class CacheState:
    """An immutable copy-free snapshot of one cache."""

    keys: mx.array | None
    values: mx.array | None
    length: int


class FullCache:
    """Every position of a full-attention layer, in a buffer that grows in steps."""

    def __init__(self) -> None:
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.length = 0

    def update(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        """Append [B, heads, T, d] keys/values; return all keys, values and their positions."""
        start, count = self.length, keys.shape[2]
        self._reserve(start + count, keys, values)
        at = mx.array([start])
        self.keys = mx.slice_update(self.keys, keys, at, axes=(2,))
        self.values = mx.slice_update(self.values, values, at, axes=(2,))
        self.length = start + count
        return (self.keys[:, :, : self.length], self.values[:, :, : self.length],
                mx.arange(self.length, dtype=mx.int32))

    def _reserve(self, needed: int, keys: mx.array, values: mx.array) -> None:
        capacity = 0 if self.keys is None else self.keys.shape[2]
        if needed <= capacity:
            return
        grown = -(-needed // _GROWTH_STEP) * _GROWTH_STEP
        extra_k = mx.zeros((*keys.shape[:2], grown - capacity, keys.shape[3]), keys.dtype)
        extra_v = mx.zeros((*values.shape[:2], grown - capacity, values.shape[3]), values.dtype)
        if self.keys is None:
            self.keys, self.values = extra_k, extra_v
        else:
            self.keys = mx.concatenate([self.keys, extra_k], axis=2)
            self.values = mx.concatenate([self.values, extra_v], axis=2)

    def snapshot(self) -> CacheState:
        # Only the length: holding the arrays would force a copy of the whole history on the next
        # append. Restoring is a trim, valid while the caller knows the prefix is unchanged.
        return CacheState(None, None, self.length)

    def restore(self, state: CacheState) -> None:
        self.trim_to(state.length)

    def trim_to(self, length: int) -> bool:
        """Forget positions from `length` on; a full cache can always do that."""
        self.length = min(self.length, length)
        return True

    @property
    def nbytes(self) -> int:
        if self.keys is None:
            return 0
        return self.keys.nbytes + self.values.nbytes


class SlidingCache:
    """The last `window` positions of a sliding-attention layer, as a ring of slots.

    Slot s holds the newest position p < length with p % window == s, so which position sits in which
    slot follows from the length alone and is never stored.
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.length = 0

    def slot_positions(self, length: int | None = None) -> np.ndarray:
        """The position in each slot after `length` positions (-1 for a slot not yet written)."""
        length = self.length if length is None else length
        slots = np.arange(self.window)
        newest = slots + self.window * ((length - 1 - slots) // self.window)
        return np.where(slots < length, newest, -1).astype(np.int32)

    def update(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array, mx.array | None]:
        """Add [B, heads, T, d] keys/values; return the keys and values to attend over and their positions
        (None when every returned key is visible to the single new query)."""
        start, count = self.length, keys.shape[2]
        if self.keys is None:
            shape = (*keys.shape[:2], self.window, keys.shape[3])
            self.keys, self.values = mx.zeros(shape, keys.dtype), mx.zeros(shape, values.dtype)
        if count == 1:
            return self._write_one(keys, values)
        # A chunk's earliest queries still need the window before it: attend over ring + chunk.
        all_keys = mx.concatenate([self.keys, keys], axis=2)
        all_values = mx.concatenate([self.values, values], axis=2)
        positions = np.concatenate([self.slot_positions(), np.arange(start, start + count, dtype=np.int32)])
        self._refill(all_keys, all_values, start, count)
        return all_keys, all_values, mx.array(positions)

    def _write_one(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array, mx.array | None]:
        slot = mx.array([self.length % self.window])
        self.keys = mx.slice_update(self.keys, keys, slot, axes=(2,))
        self.values = mx.slice_update(self.values, values, slot, axes=(2,))
        self.length += 1
        full = self.length >= self.window  # every slot then holds one of the last `window` positions
        return self.keys, self.values, None if full else mx.array(self.slot_positions())

    def _refill(self, all_keys: mx.array, all_values: mx.array, start: int, count: int) -> None:
        """Rebuild the ring from the old ring followed by the chunk: slot s takes its newest position."""
        end = start + count
        source = list(range(self.window))
        for position in range(max(start, end - self.window), end):
            source[position % self.window] = self.window + position - start
        index = mx.array(source, dtype=mx.int32)
        self.keys = mx.take(all_keys, index, axis=2)
        self.values = mx.take(all_values, index, axis=2)
        self.length = end

    def snapshot(self) -> CacheState:
        return CacheState(self.keys, self.values, self.length)

    def restore(self, state: CacheState) -> None:
        self.keys, self.values, self.length = state.keys, state.values, state.length

    def trim_to(self, length: int) -> bool:
        """Only possible while nothing before `length` has been overwritten in the ring."""
        if length >= self.length:
            return True
        if self.length > self.window:
            return False
        self.length = length
        return True

    @property
    def nbytes(self) -> int:
        if self.keys is None:
            return 0
        return self.keys.nbytes + self.values.nbytes


LayerCache = FullCache | SlidingCache
