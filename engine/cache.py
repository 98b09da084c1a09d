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
from typing import NamedTuple

import mlx.core as mx
import numpy as np

_GROWTH_STEP = 256


@dataclass(frozen=True)
class CacheState:
    """An immutable copy-free snapshot of one cache."""

    keys: mx.array | None
    values: mx.array | None
    length: int


class QuantizedKV(NamedTuple):
    """Keys or values stored with affine group quantization along the head dim."""

    packed: mx.array
    scales: mx.array
    biases: mx.array
    group_size: int
    bits: int


class FullCache:
    """Every position of a full-attention layer, in buffers that grow in steps.

    With `bits`, keys and values are stored quantized (packed words, scales, biases: three planes
    each), which shrinks long contexts; sliding layers keep their small rings in full precision.
    """

    def __init__(self, bits: int | None = None, group_size: int = 64) -> None:
        self.bits, self.group_size = bits, group_size
        self.key_planes: list[mx.array] | None = None
        self.value_planes: list[mx.array] | None = None
        self.length = 0

    def _planes(self, x: mx.array) -> list[mx.array]:
        if self.bits is None:
            return [x]
        return list(mx.quantize(x, self.group_size, self.bits))

    def _view(self, planes: list[mx.array]) -> mx.array | QuantizedKV:
        used = [plane[:, :, : self.length] for plane in planes]
        return used[0] if self.bits is None else QuantizedKV(*used, self.group_size, self.bits)

    def update(self, keys: mx.array, values: mx.array) -> tuple[mx.array | QuantizedKV, mx.array | QuantizedKV,
                                                                  mx.array]:
        """Append [B, heads, T, d] keys/values; return all keys, values and their positions."""
        start, count = self.length, keys.shape[2]
        new_keys, new_values = self._planes(keys), self._planes(values)
        self.key_planes = _append(self.key_planes, new_keys, start)
        self.value_planes = _append(self.value_planes, new_values, start)
        self.length = start + count
        return (self._view(self.key_planes), self._view(self.value_planes),
                mx.arange(self.length, dtype=mx.int32))

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
    def state(self) -> list[mx.array]:
        """Every array the cache holds (to evaluate them together)."""
        return [] if self.key_planes is None else self.key_planes + self.value_planes

    @property
    def nbytes(self) -> int:
        return sum(plane.nbytes for plane in self.state)


def _append(planes: list[mx.array] | None, new: list[mx.array], start: int) -> list[mx.array]:
    """Write `new` at position `start` of each growing plane, growing it in steps when full."""
    needed = start + new[0].shape[2]
    if planes is None:
        planes = [mx.zeros((*x.shape[:2], 0, x.shape[3]), x.dtype) for x in new]
    capacity = planes[0].shape[2]
    if needed > capacity:
        grown = -(-needed // _GROWTH_STEP) * _GROWTH_STEP
        planes = [mx.concatenate([plane, mx.zeros((*x.shape[:2], grown - capacity, x.shape[3]), x.dtype)], axis=2)
                  for plane, x in zip(planes, new)]
    at = mx.array([start])
    return [mx.slice_update(plane, x, at, axes=(2,)) for plane, x in zip(planes, new)]


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
    def state(self) -> list[mx.array]:
        return [] if self.keys is None else [self.keys, self.values]

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.state)


LayerCache = FullCache | SlidingCache
