"""Cached generation: chunked prefill that reuses a prompt cache, then a streaming decode loop."""

from __future__ import annotations

import hashlib
import threading
from functools import partial
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import mlx.core as mx
import numpy as np

from .errors import EngineError
from .fused import on_main_thread
from .media import budgeted_images, check_run_count, placeholder_runs
from .prompt_cache import PromptCache
from .sampling import SamplingOptions, make_token_sampler

DEFAULT_PREFILL_CHUNK = 512
# The full layers' attention scores ([heads, chunk, context] in float32) may take at most this much.
SCORE_BUDGET_BYTES = 256 * 1024 * 1024
_MIN_CHUNK = 32


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0
    image_tokens: int = 0
    audio_tokens: int = 0
    time_to_first_token: float = 0.0
    prefill_tokens_per_second: float = 0.0
    decode_tokens_per_second: float = 0.0
    peak_memory_bytes: int = 0
    stop_reason: str = ""


def _content_key(data: bytes) -> int:
    """A negative id for a media item's placeholders: never equal to a real token id."""
    return -1 - int.from_bytes(hashlib.sha256(data).digest()[:7], "little")


def _image_bytes(image, budget: int) -> bytes:
    return image.tobytes() + f"{image.mode}{image.size}{budget}".encode()


def _audio_bytes(clip) -> bytes:
    wave, rate = clip
    return np.ascontiguousarray(wave).tobytes() + str(rate).encode()


@dataclass
class Prompt:
    """A prompt's token ids with its media, and the content keys that identify what a cache holds."""

    ids: np.ndarray
    images: list = field(default_factory=list)   # PIL images or (image, budget) pairs
    audio: list = field(default_factory=list)
    image_budget: int = 280
    frames: list = field(default_factory=list)   # video frames, one placeholder run each
    frame_budget: int = 70

    def runs(self, config) -> tuple[list[tuple[int, int]], list[tuple[int, int]], list[tuple[int, int]]]:
        """(start, length) of the image, audio and video-frame placeholder runs."""
        return (placeholder_runs(self.ids, config.image_token_id), placeholder_runs(self.ids, config.audio_token_id),
                placeholder_runs(self.ids, config.video_token_id))

    def keys(self, config) -> np.ndarray:
        keys = self.ids.astype(np.int64)
        image_runs, audio_runs, frame_runs = self.runs(config)
        for (start, length), (image, budget) in zip(image_runs, budgeted_images(self.images, self.image_budget)):
            keys[start:start + length] = _content_key(_image_bytes(image, budget))
        for (start, length), clip in zip(audio_runs, self.audio):
            keys[start:start + length] = _content_key(_audio_bytes(clip))
        for (start, length), frame in zip(frame_runs, self.frames):
            keys[start:start + length] = _content_key(_image_bytes(frame, self.frame_budget))
        return keys

    def check_media(self, model) -> None:
        """Refuse media the model has no tower for, or that does not match the placeholder runs one for one
        (zipping runs with media further on would drop the extras silently)."""
        for (kind, modality), runs, items in zip((("image", "image"), ("audio clip", "audio"), ("video frame", "video")),
                                                  self.runs(model.config), (self.images, self.audio, self.frames)):
            if items:
                model.require(modality)
            check_run_count(kind, runs, len(items))

    def tail(self, config, start: int) -> "Prompt":
        """The part from `start` on, with the media whose placeholders lie there."""
        image_runs, audio_runs, frame_runs = self.runs(config)
        return Prompt(self.ids[start:],
                      [img for (s, _), img in zip(image_runs, self.images) if s >= start],
                      [clip for (s, _), clip in zip(audio_runs, self.audio) if s >= start],
                      self.image_budget,
                      [frame for (s, _), frame in zip(frame_runs, self.frames) if s >= start],
                      self.frame_budget)

    def safe_reuse_limit(self, config, reused: int) -> int:
        """Never resume inside a media run: its features are computed for the whole run."""
        for start, length in (run for runs in self.runs(config) for run in runs):
            if start < reused < start + length:
                return start
        return reused


def _chunk_bounds(length: int, chunk: int, cuts: Sequence[int], keep_together: list[tuple[int, int]]) -> list[int]:
    """Chunk ends for a prefill of `length` positions: every `chunk`, at `cuts`, never inside a kept run."""
    ends = set(range(chunk, length, chunk)) | {c for c in cuts if 0 < c < length} | {length}
    for start, run in keep_together:
        for end in list(ends):
            if start < end < start + run:
                ends.discard(end)
                ends.add(start if start > 0 else start + run)
    return sorted(e for e in ends if 0 < e <= length)


def check_max_tokens(max_tokens: int) -> None:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise EngineError(f"the most tokens to generate must be a whole number >= 0, got {max_tokens!r}")


class Generator:
    """Runs prompts through a model against one PromptCache."""

    def __init__(self, model, prompt_cache: PromptCache | None = None, prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
                 kv_bits: int | None = None):
        if kv_bits not in (None, 4, 8):
            raise EngineError(f"a quantized KV cache has 4 or 8 bits, not {kv_bits}")
        self.model = model
        self.cache = prompt_cache or PromptCache(partial(model.net.text.make_caches, kv_bits))
        self.prefill_chunk = prefill_chunk
        self.stats = GenerationStats()

    def _prefill(self, prompt: Prompt, snapshot_at: Sequence[int],
                 cancel: threading.Event | None = None) -> mx.array | None:
        """Bring the cache up to the whole prompt; return the logits after its last position.

        Returns None when `cancel` is set between two chunks: the cache then holds the chunks done so far,
        which a later prompt with the same start reuses.
        """
        config = self.model.config
        keys = prompt.keys(config)
        reused = self.cache.rewind(keys)
        limit = prompt.safe_reuse_limit(config, reused)
        if limit != reused:
            reused = self.cache.rewind(keys[: limit + 1])
        self.stats.cached_tokens = reused
        tail = prompt.tail(config, reused)
        embeddings, ple_ids, groups = self.model.prepare_inputs(tail.ids, tail.images, tail.image_budget,
                                                                  tail.audio, tail.frames, tail.frame_budget)
        image_runs, _, frame_runs = tail.runs(config)
        bidirectional = config.text.use_bidirectional_attention == "vision"
        ends = _chunk_bounds(tail.ids.size, self._chunk_size(prompt.ids.size), [s - reused for s in snapshot_at],
                             image_runs + frame_runs if bidirectional else [])
        text = self.model.net.text
        begin = 0
        for end in ends:
            last = end == tail.ids.size
            hidden = text(embeddings[:, begin:end], ple_ids[:, begin:end],
                          self.cache.caches, offset=reused + begin,
                          groups=None if groups is None else groups[begin:end], last_only=last, fill_only=not last)
            self.cache.append(keys[reused + begin: reused + end])
            if last:
                return text.logits(hidden[:, -1])
            mx.eval([c.state for c in self.cache.caches if c is not None])
            if reused + end in snapshot_at:
                self.cache.snapshot()
            if cancel is not None and cancel.is_set():
                return None
            begin = end
        raise AssertionError("a prefill always ends with the prompt's last position")

    def _chunk_size(self, context: int) -> int:
        """The prefill chunk, shrunk for long contexts so the score matrix stays within its budget."""
        heads = self.model.config.text.num_attention_heads
        fitting = SCORE_BUDGET_BYTES // (heads * context * 4)
        return max(_MIN_CHUNK, min(self.prefill_chunk, fitting))

    def _step(self, token: mx.array) -> mx.array:
        if on_main_thread():
            return self.model.decode_step(token, self.cache.caches)
        return self.model.net.text.next_token_logits(token.reshape(1, 1), self.cache.caches, self.cache.length,
                                                     self.model.dtype)

    def run(self, prompt: Prompt, *, max_tokens: int, sampling: SamplingOptions, stop_ids: Sequence[int],
            cancel: threading.Event | None = None, snapshot_at: Sequence[int] = ()) -> Iterator[int]:
        """Yield generated token ids; `self.stats` is complete once the iterator is exhausted.

        `cancel` is looked at before the prefill, between its chunks and before every token.
        """
        check_max_tokens(max_tokens)
        self.model.check_ids(prompt.ids)
        prompt.check_media(self.model)
        self.stats = GenerationStats(prompt_tokens=int(prompt.ids.size))
        image_runs, audio_runs, frame_runs = prompt.runs(self.model.config)
        self.stats.image_tokens = sum(length for _, length in image_runs + frame_runs)
        self.stats.audio_tokens = sum(length for _, length in audio_runs)
        mx.reset_peak_memory()
        started = time.perf_counter()
        sample = make_token_sampler(sampling, history=prompt.ids, vocab_size=self.model.config.text.vocab_size)
        snapshot_points = sorted({*snapshot_at, prompt.ids.size - 1})
        try:
            logits = None if cancel is not None and cancel.is_set() else self._prefill(prompt, snapshot_points, cancel)
            if logits is None:
                self._finish(0, started, None, "cancelled")
                return
            yield from self._decode(sample(logits), sample, max_tokens, set(stop_ids), cancel, started)
        except Exception:
            self._drop_torn_cache()
            raise

    def _drop_torn_cache(self) -> None:
        """After a failure inside a forward pass, some layers may hold positions the prompt cache never
        recorded; the next prompt would attend to them, so the cache starts over."""
        if any(c is not None and c.length != self.cache.length for c in self.cache.caches):
            self.cache.reset()

    def _decode(self, token: mx.array, sample, max_tokens: int, stops: set[int], cancel: threading.Event | None,
                started: float) -> Iterator[int]:
        context = self.model.info.context_length
        mx.async_eval(token)
        first_token_at = None
        produced = 0
        reason = "length"
        while produced < max_tokens:
            if cancel is not None and cancel.is_set():
                reason = "cancelled"
                break
            following = None
            if produced + 1 < max_tokens and self.cache.length < context:
                sample.observe(token)
                following = sample(self._step(token))
                mx.async_eval(following)
            token_id = int(token.item())
            if following is not None:
                self.cache.append(np.array([token_id]))
            if first_token_at is None:
                first_token_at = time.perf_counter()
                self.stats.time_to_first_token = first_token_at - started
            produced += 1
            yield token_id
            if token_id in stops:
                reason = "stop"
                break
            if following is None:
                reason = "length" if produced >= max_tokens else "context"
                break
            token = following
        self._finish(produced, started, first_token_at, reason)

    def _finish(self, produced: int, started: float, first_token_at: float | None, reason: str) -> None:
        now = time.perf_counter()
        s = self.stats
        s.generated_tokens = produced
        s.stop_reason = reason
        new_tokens = max(s.prompt_tokens - s.cached_tokens, 1)
        if first_token_at is not None:
            s.prefill_tokens_per_second = new_tokens / max(first_token_at - started, 1e-9)
            if produced > 1:
                s.decode_tokens_per_second = (produced - 1) / max(now - first_token_at, 1e-9)
        s.peak_memory_bytes = int(mx.get_peak_memory())
