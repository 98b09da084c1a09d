"""Lantern's Gemma 4 engine on MLX. The public surface is `load`, `EngineError` and what they return, and
`finish_thread` for a thread that used them and is about to end."""

from .errors import EngineError
from .loader import load
from .threads import finish_thread

__all__ = ["EngineError", "finish_thread", "load"]
