"""A note on disk while a model loads, so that a crash during loading is remembered at the next start.

On a Mac, a model too large for memory can bring the engine, or the whole app, down while it loads.
The marker is written before a load starts and removed when the load ends in a way the window sees
(loaded, refused, cancelled). One still there at start means the last load never ended, and the app
does not load that model again by itself: the user chooses.
"""

from __future__ import annotations

import json
import time
from contextlib import suppress
from pathlib import Path

from .storage import write_whole

MARKER_NAME = "loading-model.json"


class LoadMarker:
    def __init__(self, folder: Path):
        self.path = Path(folder) / MARKER_NAME

    def begin(self, model: Path) -> None:
        """Note that `model` is loading. On a full disk there is no note: the load goes ahead unguarded."""
        with suppress(OSError):
            write_whole(self.path, json.dumps({"model": str(model), "started": time.time()}).encode("utf-8"))

    def end(self) -> None:
        self.path.unlink(missing_ok=True)

    def crashed_model(self) -> Path | None:
        """The model whose load never ended, or None."""
        try:
            return Path(json.loads(self.path.read_text(encoding="utf-8"))["model"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
