"""Lantern's Gemma 4 engine on MLX. The public surface is `load`, `EngineError` and what they return."""

from .errors import EngineError
from .loader import load

__all__ = ["EngineError", "load"]
