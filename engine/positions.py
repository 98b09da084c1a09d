"""The positions of one chunk's queries, and what every layer derives from them.

Every layer of a type sees the same keys and turns its queries and keys by the same rotary embedding,
so a chunk's masks and rotations are built once per layer type, by the first layer that asks.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from .config import SLIDING, TextConfig
from .masks import attention_mask
from .rope import Rope, Rotation


class ChunkPositions:
    def __init__(self, config: TextConfig, offset: int | mx.array, count: int, groups: mx.array | None):
        """Queries at positions offset .. offset + count - 1; `groups` gives each its image group id (-1: none)."""
        self.config = config
        self.offset = offset
        self.count = count
        ramp = np.arange(count, dtype=np.int32)  # a constant, not an Arange node in every decode step
        self.positions = offset + mx.array(ramp)
        self._positions_column = offset + mx.array(ramp[:, None])
        self.chunk_groups = groups
        self.query_groups = groups
        self._masks: dict[str, mx.array | None] = {}
        self._rotations: dict[str, Rotation] = {}
        self._last: ChunkPositions | None = None

    def last_only(self) -> "ChunkPositions":
        """The chunk's last query alone, against the same keys (one object, so it too builds everything once)."""
        if self._last is None:
            self._last = ChunkPositions(self.config, self.offset + self.count - 1, 1, self.chunk_groups)
            if self.chunk_groups is not None:
                self._last.query_groups = self.chunk_groups[-1:]
        return self._last

    def rotation(self, kind: str, rope: Rope) -> Rotation:
        """`rope` at these positions; every layer of type `kind` must pass an equal rope."""
        if kind not in self._rotations:
            self._rotations[kind] = rope.at(self.offset, self.positions)
        return self._rotations[kind]

    def mask(self, kind: str, key_positions: mx.array | None) -> mx.array | None:
        """The mask of these queries over a layer of type `kind`'s keys (None: every key is visible)."""
        if kind not in self._masks:
            self._masks[kind] = self._build_mask(kind, key_positions)
        return self._masks[kind]

    def _build_mask(self, kind: str, key_positions: mx.array | None) -> mx.array | None:
        if key_positions is None:
            return None  # the cache says every key it returned is visible
        sliding = kind == SLIDING
        window = self.config.sliding_window if sliding else None
        if not sliding or self.query_groups is None:
            return attention_mask(self._positions_column, key_positions, window)
        return attention_mask(self._positions_column, key_positions, window, self.query_groups, self.chunk_groups)
