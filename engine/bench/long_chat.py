"""Turn-N time to first token with the session's prompt cache versus a fresh session re-prefilling it all.

The fixture model is random: sampled answers are full of stray special tokens that a real model does not
write and that the history cannot carry back, so the chats are greedy.
"""

from __future__ import annotations

from pathlib import Path

import engine


def _ttft(session, text: str, max_tokens: int) -> float:
    stats = None
    for event in session.send(text):
        if event.kind == "done":
            stats = event.stats
    return stats.time_to_first_token


def _message(turn: int, words: int) -> str:
    vocabulary = ["number", "river", "light", "stone", "seven", "window", "garden", "quiet", "north", "paper"]
    body = " ".join(vocabulary[(turn * 3 + i) % len(vocabulary)] for i in range(words))
    return f"Turn {turn}: {body}"


def long_chat(folder: Path, turns: int, max_tokens: int = 8, words_per_turn: int = 10) -> dict:
    model = engine.load(folder)
    cached = model.chat(max_tokens=max_tokens, temperature=0.0)
    messages = [_message(i, words_per_turn) for i in range(turns)]
    for text in messages[:-1]:
        _ttft(cached, text, max_tokens)
    with_cache = _ttft(cached, messages[-1], max_tokens)
    context, reused = cached.last_stats.prompt_tokens, cached.last_stats.cached_tokens
    fresh = model.chat(max_tokens=max_tokens, temperature=0.0)
    fresh.messages = list(cached.messages[:-2])  # same turns, nothing cached: the last turn prefills everything
    full = _ttft(fresh, messages[-1], max_tokens)
    return dict(mode="long_chat", folder=str(folder), turns=turns, prompt_tokens=context, cached_tokens=reused,
                ttft_cached_s=with_cache, ttft_full_prefill_s=full, ratio=with_cache / full)
