"""One decode step of the text decoder as a single compiled graph.

A decode step builds the same graph every time: only the token, its position and the cache contents
change. Tracing it once with `mx.compile` (the position, the cache slots it writes and every cache
array as inputs) replaces thousands of Python-built operations per token with one call that replays
the recorded graph, fused where MLX can fuse it. The weights are read before the first trace and
captured as constants: passing a thousand weight arrays as inputs costs more per call than the rest
of the call, and the weights of a loaded model never change. The caches' capacity is part of the
trace's shapes, so a full-attention cache that grows (every 256 positions) costs one new trace.

Compiled functions may only be traced on the main thread (see fused.py); other threads keep the
uncompiled step, which gives the same tokens.
"""

from __future__ import annotations

import mlx.core as mx

from .cache import LayerCache, SlidingCache, StepSlots
from .text_model import TextModel


class DecodeStep:
    """Logits after one new token, with every owning cache advanced by one position."""

    def __init__(self, text: TextModel, dtype: mx.Dtype):
        self.text = text
        self.dtype = dtype
        self._caches: list[LayerCache | None] = []
        mx.eval(text.parameters())  # an unread (lazily loaded) weight would put its file read into the trace
        # One trace while the sliding rings fill, one once they are full: a full ring needs no mask.
        self._compiled = {full: mx.compile(self._traced) for full in (False, True)}

    def __call__(self, token: mx.array, caches: list[LayerCache | None]) -> mx.array:
        owners = [cache for cache in caches if cache is not None]
        slots = StepSlots.at(owners[0].length, self.text.config.sliding_window)
        rings_full = all(cache.full for cache in owners if isinstance(cache, SlidingCache))
        self._caches = caches
        try:
            logits, updated = self._compiled[rings_full](token.reshape(1, 1), list(slots),
                                                          [cache.step_arrays() for cache in owners])
        finally:
            self._caches = []  # read while tracing only; holding them would keep a finished chat's caches alive
        for cache, arrays in zip(owners, updated):
            cache.accept_step(arrays)
        return logits

    def _traced(self, ids: mx.array, slots: list[mx.array], arrays: list[list[mx.array]]):
        given, where = iter(arrays), StepSlots(*slots)
        traced = [None if cache is None else cache.traced(next(given), where) for cache in self._caches]
        logits = self.text.next_token_logits(ids, traced, where.position, self.dtype)
        return logits, [cache.arrays for cache in traced if cache is not None]
