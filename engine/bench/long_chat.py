"""Turn-N time to first token with the session's prompt cache versus a fresh session re-prefilling it all."""

from __future__ import annotations

from pathlib import Path

import engine


def _ttft(session, text: str, max_tokens: int) -> float:
    stats = None
    for event in session.send(text):
        if event.kind == "done":
            stats = event.stats
    return stats.time_to_first_token


def long_chat(folder: Path, turns: int, max_tokens: int = 8) -> dict:
    model = engine.load(folder)
    cached = model.chat(max_tokens=max_tokens)
    messages = [f"Turn {i}: tell me something about the number {i} and its neighbours." for i in range(turns)]
    for text in messages[:-1]:
        _ttft(cached, text, max_tokens)
    with_cache = _ttft(cached, messages[-1], max_tokens)
    fresh = model.chat(max_tokens=max_tokens)
    fresh.messages = list(cached.messages[:-2])  # same turns, nothing cached: the last turn prefills everything
    full = _ttft(fresh, messages[-1], max_tokens)
    return dict(mode="long_chat", folder=str(folder), turns=turns, ttft_cached_s=with_cache,
                ttft_full_prefill_s=full, ratio=with_cache / full)
