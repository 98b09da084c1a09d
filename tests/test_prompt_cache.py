"""PromptCache's record of what the caches hold: appends that outgrow their buffer, rewinds and resets."""

import numpy as np

from engine.prompt_cache import PromptCache


def test_keys_survive_growth_rewind_and_reset():
    cache = PromptCache(lambda: [None])
    ids = np.arange(3000, dtype=np.int32)
    for start in range(0, ids.size, 7):
        cache.append(ids[start: start + 7])
    assert cache.length == ids.size and cache.keys.dtype == np.int64
    assert np.array_equal(cache.keys, ids)

    edited = ids.copy()
    edited[2000] = -1
    assert cache.rewind(edited) == 2000
    assert np.array_equal(cache.keys, ids[:2000])
    cache.append(edited[2000:2010])
    assert np.array_equal(cache.keys, edited[:2010])

    cache.reset()
    assert cache.length == 0 and cache.keys.size == 0
    cache.append(np.array([5]))
    assert cache.keys.tolist() == [5]
