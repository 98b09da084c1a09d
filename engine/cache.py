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

    def update(self, keys: mx.array, values: mx.array) -> tuple[mx.array | QuantizedKV, mx.array | QuantizedKV,
                                                                  mx.array | None]:
        """Append [B, heads, T, d] keys/values; return all keys, values and their positions."""
        start, count = self.length, keys.shape[2]
        new_keys, new_values = _planes(keys, self.bits, self.group_size), _planes(values, self.bits, self.group_size)
        if self.key_planes is None:
            self.key_planes, self.value_planes = _empty_like(new_keys), _empty_like(new_values)
        slots = mx.array(np.arange(start, start + count, dtype=np.int32))
        self.key_planes = _write(_reserved(self.key_planes, start + count), new_keys, slots)
        self.value_planes = _write(_reserved(self.value_planes, start + count), new_values, slots)
        self.length = start + count
        # A single new query is the newest position: it sees every key, so no positions are needed.
        positions = None if count == 1 else mx.arange(self.length, dtype=mx.int32)
        return self._view(self.key_planes), self._view(self.value_planes), positions

    def _view(self, planes: list[mx.array]) -> mx.array | QuantizedKV:
        return _kv_view([plane[:, :, : self.length] for plane in planes], self.bits, self.group_size)

    def step_arrays(self) -> list[mx.array]:
        """The planes, with room for one more position: the inputs of a compiled decode step."""
        self.key_planes = _reserved(self.key_planes, self.length + 1)
        self.value_planes = _reserved(self.value_planes, self.length + 1)
        return self.key_planes + self.value_planes

    def traced(self, arrays: list[mx.array], slots: StepSlots) -> "TracedFullCache":
        return TracedFullCache(arrays, slots.position, slots.full_slot, self.bits, self.group_size)

    def accept_step(self, arrays: list[mx.array]) -> None:
        """Take the planes a compiled decode step returned: one position longer."""
        half = len(arrays) // 2
        self.key_planes, self.value_planes = arrays[:half], arrays[half:]
        self.length += 1

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


def _planes(x: mx.array, bits: int | None, group_size: int) -> list[mx.array]:
    return [x] if bits is None else list(mx.quantize(x, group_size, bits))


def _kv_view(planes: list[mx.array], bits: int | None, group_size: int) -> mx.array | QuantizedKV:
    return planes[0] if bits is None else QuantizedKV(*planes, group_size, bits)


def _empty_like(new: list[mx.array]) -> list[mx.array]:
    return [mx.zeros((*x.shape[:2], 0, x.shape[3]), x.dtype) for x in new]


def _rounded_up(needed: int) -> int:
    return -(-needed // _GROWTH_STEP) * _GROWTH_STEP


def _reserved(planes: list[mx.array], needed: int, limit: int | None = None) -> list[mx.array]:
    """The planes with room for `needed` positions, grown in steps (never past `limit`)."""
    capacity = planes[0].shape[2]
    if needed <= capacity:
        return planes
    grown = _rounded_up(needed) if limit is None else min(limit, _rounded_up(needed))
    return [mx.concatenate([plane, mx.zeros((*plane.shape[:2], grown - capacity, plane.shape[3]), plane.dtype)],
                           axis=2) for plane in planes]


def _put_rows(plane: mx.array, rows: mx.array, slots: mx.array) -> mx.array:
    """`plane` with the positions `slots` (int32, one per row of `rows` along axis 2) replaced by `rows`.

    Every cache write is a scatter. A slice update at an offset held in an array costs a GPU two kernels
    (one computes the offset), and on Metal, before MLX's fix for it (ml-explore/mlx#4099), that offset
    kernel could read a donated index before its producer finished and write the rows at a stale
    position.
    """
    return mx.put_along_axis(plane, mx.broadcast_to(slots.reshape(1, 1, -1, 1), rows.shape), rows, axis=2)


def _write(planes: list[mx.array], new: list[mx.array], slots: mx.array) -> list[mx.array]:
    return [_put_rows(plane, rows, slots) for plane, rows in zip(planes, new)]


class StepSlots(NamedTuple):
    """Where a compiled decode step writes, given to it as inputs: numbers from the host, not graph nodes."""
    position: mx.array   # the new position, a scalar
    full_slot: mx.array  # [1]: the slot a full-attention cache writes, the position itself
    ring_slot: mx.array  # [1]: the slot a sliding ring writes, the position modulo the window

    @classmethod
    def at(cls, position: int, window: int) -> "StepSlots":
        return cls(mx.array(position, dtype=mx.int32), mx.array([position], dtype=mx.int32),
                   mx.array([position % window], dtype=mx.int32))


class TracedFullCache:
    """A FullCache inside a compiled decode step, where the new position is an array, not a number.

    Attention runs over the whole capacity; slots past the new position report position -1, which
    every mask hides.
    """

    def __init__(self, arrays: list[mx.array], position: mx.array, slot: mx.array, bits: int | None,
                 group_size: int):
        half = len(arrays) // 2
        self.key_planes, self.value_planes = arrays[:half], arrays[half:]
        self.position, self.slot, self.bits, self.group_size = position, slot, bits, group_size

    def update(self, keys: mx.array, values: mx.array) -> tuple[mx.array | QuantizedKV, mx.array | QuantizedKV,
                                                                  mx.array]:
        self.key_planes = _write(self.key_planes, _planes(keys, self.bits, self.group_size), self.slot)
        self.value_planes = _write(self.value_planes, _planes(values, self.bits, self.group_size), self.slot)
        slots = mx.array(np.arange(self.key_planes[0].shape[2], dtype=np.int32))
        positions = mx.where(slots <= self.position, slots, -1)
        return (_kv_view(self.key_planes, self.bits, self.group_size),
                _kv_view(self.value_planes, self.bits, self.group_size), positions)

    @property
    def arrays(self) -> list[mx.array]:
        return self.key_planes + self.value_planes


def ring_positions(length, window: int, slots: int, xp=np):
    """The position held by each of a ring's first `slots` slots after `length` positions, -1 where none yet.

    `xp` is numpy, or mlx.core for a length that is an array inside a compiled step.
    """
    slot = xp.array(np.arange(slots, dtype=np.int32))  # for mlx: a constant, not an Arange node in a step
    newest = slot + window * ((length - 1 - slot) // window)
    return xp.where(slot < length, newest, -1).astype(xp.int32)


class SlidingCache:
    """The last `window` positions of a sliding-attention layer, as a ring of slots.

    Slot s holds the newest position p < length with p % window == s, so which position sits in which
    slot follows from the length alone and is never stored. The ring's arrays grow in steps up to the
    window, so a short chat does not hold a whole window of empty slots.
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.length = 0

    @property
    def capacity(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def slot_positions(self, length: int | None = None) -> np.ndarray:
        """The position in each slot after `length` positions (-1 for a slot not yet written)."""
        return ring_positions(self.length if length is None else length, self.window, self.capacity, np)

    def update(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array, mx.array | None]:
        """Add [B, heads, T, d] keys/values; return the keys and values to attend over and their positions
        (None when every returned key is visible to the single new query)."""
        if self.keys is None:
            self.keys, self.values = _empty_like([keys])[0], _empty_like([values])[0]
        if keys.shape[2] == 1:
            return self._write_one(keys, values)
        if self.capacity == 0:
            all_keys, all_values = keys, values
        else:  # a chunk's earliest queries still need the window before it: attend over ring + chunk
            all_keys = mx.concatenate([self.keys, keys], axis=2)
            all_values = mx.concatenate([self.values, values], axis=2)
        start, count = self.length, keys.shape[2]
        positions = np.concatenate([self.slot_positions(), np.arange(start, start + count, dtype=np.int32)])
        self._refill(all_keys, all_values, start + count)
        return all_keys, all_values, mx.array(positions)

    def _grown_to(self, needed: int) -> None:
        """Room for `needed` slots (at most the window), grown in steps."""
        if needed > self.capacity:
            self.keys, self.values = _reserved([self.keys, self.values], min(needed, self.window), self.window)

    def _write_one(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array, mx.array | None]:
        self._grown_to(self.length + 1)
        slot = mx.array([self.length % self.window], dtype=mx.int32)
        self.keys, self.values = _put_rows(self.keys, keys, slot), _put_rows(self.values, values, slot)
        self.length += 1
        full = self.length >= self.window  # every slot then holds one of the last `window` positions
        return self.keys, self.values, None if full else mx.array(self.slot_positions())

    def _refill(self, all_keys: mx.array, all_values: mx.array, end: int) -> None:
        """Rebuild the ring from the old ring followed by the chunk: slot s takes its newest position.

        Slots with no position yet take any key: their position -1 hides it.
        """
        old, start = self.capacity, self.length
        slots = max(old, min(self.window, end))  # no more than the prompt needs; decode steps grow it in steps
        newest = ring_positions(end, self.window, slots, np)
        source = np.where(newest >= start, old + newest - start, np.arange(slots))
        index = np.where(newest < 0, 0, source)
        self.length = end
        if np.array_equal(index, np.arange(all_keys.shape[2])):  # a first chunk within the window
            self.keys, self.values = all_keys, all_values  # is already the ring: no copy
            return
        gather = mx.array(index, dtype=mx.int32)
        self.keys = mx.take(all_keys, gather, axis=2)
        self.values = mx.take(all_values, gather, axis=2)

    def step_arrays(self) -> list[mx.array]:
        """The ring, with room for the next position: the inputs of a compiled decode step."""
        self._grown_to(self.length + 1)
        return [self.keys, self.values]

    @property
    def full(self) -> bool:
        """Every slot holds one of the last `window` positions: the next query sees every key."""
        return self.length >= self.window

    def traced(self, arrays: list[mx.array], slots: StepSlots) -> "TracedSlidingCache":
        """The ring inside a step traced now; the trace is valid only while `full` stays as it is now."""
        return TracedSlidingCache(arrays, slots.position, slots.ring_slot, self.window, self.full)

    def accept_step(self, arrays: list[mx.array]) -> None:
        """Take the ring a compiled decode step returned: one position longer."""
        self.keys, self.values = arrays
        self.length += 1

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


class TracedSlidingCache:
    """A SlidingCache inside a compiled decode step: the new position is an array, and so are the slots'."""

    def __init__(self, arrays: list[mx.array], position: mx.array, slot: mx.array, window: int, full: bool):
        self.keys, self.values = arrays
        self.position, self.slot, self.window, self.full = position, slot, window, full

    def update(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array, mx.array | None]:
        self.keys, self.values = _put_rows(self.keys, keys, self.slot), _put_rows(self.values, values, self.slot)
        if self.full:  # as in SlidingCache: a full ring holds exactly the keys the new query sees
            return self.keys, self.values, None
        return self.keys, self.values, ring_positions(self.position + 1, self.window, self.keys.shape[2], mx)

    @property
    def arrays(self) -> list[mx.array]:
        return [self.keys, self.values]


LayerCache = FullCache | SlidingCache
