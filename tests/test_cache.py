"""The ring cache's slot bookkeeping, derived from its length alone."""

import mlx.core as mx
import numpy as np

from engine.cache import FullCache, SlidingCache


def _kv(count, start=0):
    values = mx.arange(start, start + count, dtype=mx.float32).reshape(1, 1, count, 1)
    return values, values


def test_each_slot_holds_its_newest_position():
    ring = SlidingCache(window=4)
    ring.update(*_kv(6))
    assert ring.slot_positions().tolist() == [4, 5, 2, 3]
    keys, _, positions = ring.update(*_kv(1, start=6))
    assert positions is None  # a full ring: the new query sees every slot
    assert np.array(keys).ravel().tolist() == [4, 5, 6, 3]


def test_a_ring_that_has_not_wrapped_reports_empty_slots_and_can_be_trimmed():
    ring = SlidingCache(window=8)
    ring.update(*_kv(3))
    _, _, positions = ring.update(*_kv(1, start=3))
    assert positions.tolist() == [0, 1, 2, 3, -1, -1, -1, -1]
    assert ring.trim_to(2) and ring.slot_positions().tolist() == [0, 1] + [-1] * 6
    ring.update(*_kv(7, start=2))
    assert not ring.trim_to(3)


def test_a_chunk_attends_over_the_ring_then_itself():
    ring = SlidingCache(window=4)
    ring.update(*_kv(5))
    keys, _, positions = ring.update(*_kv(3, start=5))
    assert np.array(positions).tolist() == [4, 1, 2, 3, 5, 6, 7]
    assert np.array(keys).ravel().tolist() == [4, 1, 2, 3, 5, 6, 7]


def test_a_full_cache_snapshot_is_its_length():
    cache = FullCache()
    cache.update(*_kv(300))
    state = cache.snapshot()
    cache.update(*_kv(5, start=300))
    cache.restore(state)
    keys, _, positions = cache.update(*_kv(1, start=300))
    assert keys.shape[2] == 301 and int(positions[-1]) == 300
