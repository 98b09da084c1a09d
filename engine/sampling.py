"""Sampling settings and the per-generation token sampler (mlx-lm's samplers and logits processors)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from numbers import Integral, Real
from pathlib import Path
from typing import Sequence

import mlx.core as mx
from mlx_lm.sample_utils import make_logits_processors, make_sampler

from .errors import EngineError


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 64
    min_p: float = 0.0
    repetition_penalty: float | None = None
    seed: int | None = None

    def validated(self) -> "SamplingOptions":
        """These options checked, with plain Python numbers (a NumPy scalar would reach MLX's compiled
        samplers, which refuse it)."""
        temperature, top_p, min_p = (_number(name, value) for name, value in
                                     (("temperature", self.temperature), ("top-p", self.top_p), ("min-p", self.min_p)))
        if temperature < 0:
            raise EngineError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < top_p <= 1:
            raise EngineError(f"top-p must be in (0, 1], got {self.top_p}")
        if (top_k := _whole("top-k", self.top_k)) < 0:
            raise EngineError(f"top-k must be >= 0 (0 turns it off), got {self.top_k}")
        if not 0 <= min_p < 1:
            raise EngineError(f"min-p must be in [0, 1), got {self.min_p}")
        penalty = None if self.repetition_penalty is None else _number("repetition penalty", self.repetition_penalty)
        if penalty is not None and penalty <= 0:
            raise EngineError(f"repetition penalty must be > 0, got {self.repetition_penalty}")
        seed = None if self.seed is None else _whole("seed", self.seed)
        if seed is not None and not 0 <= seed < 2**64:
            raise EngineError(f"seed must be a whole number from 0 to 2**64 - 1, got {self.seed}")
        return SamplingOptions(temperature, top_p, top_k, min_p, penalty, seed)

    def with_overrides(self, **changes) -> "SamplingOptions":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def generation_defaults(folder: Path) -> SamplingOptions:
    """The model's own defaults from generation_config.json (Gemma 4 ships 1.0 / 0.95 / 64)."""
    path = Path(folder) / "generation_config.json"
    if not path.is_file():
        return SamplingOptions()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise EngineError(f"{path} is not valid JSON") from None
    if not isinstance(raw, dict):
        raise EngineError(f"{path} does not hold a JSON object of settings; download the model folder again")
    defaults = SamplingOptions().with_overrides(temperature=raw.get("temperature"), top_p=raw.get("top_p"),
                                                top_k=raw.get("top_k"), min_p=raw.get("min_p"),
                                                repetition_penalty=raw.get("repetition_penalty"))
    try:
        return defaults.validated()
    except EngineError as exc:
        raise EngineError(f"{path} has a bad sampling setting: {exc}; download the model folder again") from None


def generation_stop_ids(folder: Path) -> list[int]:
    path = Path(folder) / "generation_config.json"
    if not path.is_file():
        return []
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return []
    ids = value if isinstance(value, list) else [value]
    return [i for i in ids if isinstance(i, int)]


# The repetition penalty looks at this many latest tokens (prompt and answer), as llama.cpp and Ollama do by
# default; penalising a whole long chat would push the model off every word it has used.
REPETITION_WINDOW = 64


class TokenSampler:
    """Turns the last position's logits into the next token, lazily (no host sync)."""

    def __init__(self, options: SamplingOptions, history: Sequence[int], vocab_size: int | None = None):
        options = options.validated()
        self._greedy = options.temperature == 0
        # Keeping the top `vocab_size` or more tokens keeps them all; mlx-lm refuses such a top-k.
        top_k = 0 if vocab_size is not None and options.top_k >= vocab_size else int(options.top_k)
        self._sample = make_sampler(temp=options.temperature, top_p=options.top_p if options.top_p < 1 else 0.0,
                                    min_p=options.min_p, top_k=top_k)
        penalty = options.repetition_penalty
        self._processors = ([] if penalty in (None, 1.0) else
                            make_logits_processors(repetition_penalty=penalty, repetition_context_size=REPETITION_WINDOW))
        self._history = mx.array([int(t) for t in history], dtype=mx.int32)
        if options.seed is not None:
            mx.random.seed(int(options.seed))

    def observe(self, token: mx.array) -> None:
        if self._processors:
            self._history = mx.concatenate([self._history, token.reshape(-1).astype(mx.int32)])

    def __call__(self, logits: mx.array) -> mx.array:
        if self._greedy and not self._processors:
            # keepdims: argmax drops the axis with a squeeze, one more node in every step's graph
            return mx.argmax(logits, axis=-1, keepdims=True).reshape(-1)  # the log-softmax would not change it
        for process in self._processors:
            logits = process(self._history, logits)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        return self._sample(logprobs).reshape(-1)


def make_token_sampler(options: SamplingOptions, history: Sequence[int], vocab_size: int | None = None) -> TokenSampler:
    return TokenSampler(options, history, vocab_size)


def _number(name: str, value) -> float:
    """`value` if it is a finite number; NaN fails every comparison, so range checks alone let it through."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise EngineError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _whole(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise EngineError(f"{name} must be a whole number, got {value!r}")
    return int(value)
