"""The ring cache's slot bookkeeping, derived from its length alone."""

import mlx.core as mx
import numpy as np
import pytest

from engine.cache import FullCache, SlidingCache, StepSlots


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


def test_a_first_chunk_within_the_window_becomes_the_ring_without_a_copy():
    ring = SlidingCache(window=8)
    keys, values = _kv(5)
    attended_keys, attended_values, positions = ring.update(keys, values)
    assert attended_keys is keys and attended_values is values  # nothing cached yet: no concatenation
    assert ring.keys is keys and ring.values is values  # slot s holds position s already: no gather
    assert np.array(positions).tolist() == [0, 1, 2, 3, 4]
    stepped, _, _ = ring.update(*_kv(1, start=5))
    assert np.array(stepped).ravel().tolist()[:6] == [0, 1, 2, 3, 4, 5]


def test_a_full_cache_snapshot_is_its_length():
    cache = FullCache()
    cache.update(*_kv(300))
    state = cache.snapshot()
    cache.update(*_kv(5, start=300))
    cache.restore(state)
    keys, _, positions = cache.update(*_kv(2, start=300))
    assert keys.shape[2] == 302 and np.array(keys).ravel()[-3:].tolist() == [299, 300, 301]
    assert int(positions[-1]) == 301
    _, _, positions = cache.update(*_kv(1, start=302))
    assert positions is None  # the single newest query sees every key


def _step_through_traced(cache, position):
    """What a compiled decode step does with a cache: its arrays in, one position written, arrays back."""
    window = cache.window if isinstance(cache, SlidingCache) else 1  # a full cache never reads the ring slot
    traced = cache.traced(cache.step_arrays(), StepSlots.at(position, window))
    keys, _, positions = traced.update(*_kv(1, start=position))
    cache.accept_step(traced.arrays)
    return keys, positions


@pytest.mark.parametrize("window,prefill", [(4, 2), (600, 254)])  # the second grows the ring past 256 slots
def test_a_traced_ring_steps_like_the_plain_ring(window, prefill):
    traced_ring, ring = SlidingCache(window=window), SlidingCache(window=window)
    traced_ring.update(*_kv(prefill))
    ring.update(*_kv(prefill))
    for position in range(prefill, prefill + 5):
        was_full = traced_ring.full
        keys, positions = _step_through_traced(traced_ring, position)
        expected_keys, _, expected_positions = ring.update(*_kv(1, start=position))
        assert np.array(keys).ravel().tolist() == np.array(expected_keys).ravel().tolist()
        if was_full:  # a step traced for a full ring hides nothing, like the plain ring
            assert positions is None and expected_positions is None
        else:
            assert np.array(positions).tolist() == ring.slot_positions().tolist()
        assert traced_ring.length == ring.length == position + 1
    assert traced_ring.capacity == ring.capacity == min(window, 512)


def test_a_traced_full_cache_hides_the_room_past_the_new_position():
    cache = FullCache()
    cache.update(*_kv(256))  # exactly full: the step must grow it first
    keys, positions = _step_through_traced(cache, 256)
    assert keys.shape[2] == 512 and cache.length == 257
    assert np.array(positions)[:258].tolist() == list(range(257)) + [-1]
    assert (np.array(positions)[257:] == -1).all()
    assert np.array(cache.key_planes[0]).ravel()[:257].tolist() == list(range(257))


def test_a_traced_quantized_full_cache_stores_what_an_append_stores():
    traced, appended = FullCache(bits=8), FullCache(bits=8)
    keys = mx.random.normal((1, 1, 6, 64))
    traced.update(keys[:, :, :5], keys[:, :, :5])
    appended.update(keys, keys)
    traced_view = traced.traced(traced.step_arrays(), StepSlots.at(5, 1))
    stored, _, _ = traced_view.update(keys[:, :, 5:], keys[:, :, 5:])
    expected, _, _ = appended.update(keys[:, :, :1], keys[:, :, :1])  # one more, to compare the first six
    for got, want in zip(stored[:3], expected[:3]):
        assert mx.array_equal(got[:, :, :6], want[:, :, :6])


def _check_ring(keys, positions):
    """Every key the ring returns is the key of the position it reports (the _kv keys are positions)."""
    keys, positions = np.array(keys).ravel(), np.array(positions)
    assert (keys[positions >= 0] == positions[positions >= 0]).all()


def test_a_ring_longer_than_a_growth_step_grows_up_to_its_window():
    ring = SlidingCache(window=600)
    capacities, position = [], 0
    for count in (100, 300, 1, 1, 150, 400, 1):
        keys, _, positions = ring.update(*_kv(count, start=position))
        position += count
        if positions is not None:
            _check_ring(keys, positions)
            visible = np.array(positions)[np.array(positions) >= 0]
            assert set(range(max(0, position - 600), position)) <= set(visible.tolist())
        capacities.append(ring.capacity)
    assert capacities == [100, 400, 512, 512, 552, 600, 600]
    _check_ring(ring.keys, ring.slot_positions())
