"""Placing image and audio features into a prompt: placeholder runs, count checks, vision groups."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from .errors import EngineError


@dataclass(frozen=True)
class MediaInputs:
    text_ids: np.ndarray            # the prompt with every media placeholder replaced by the pad id
    positions: np.ndarray           # where `features` rows go, in prompt order
    features: mx.array | None       # [N, text hidden]
    groups: mx.array | None         # per position: image group id, -1 elsewhere (vision-bidirectional models)


def budgeted_images(images, default_budget: int) -> list[tuple[object, int]]:
    """(image, budget) for each item: a PIL image takes the default budget, an (image, budget) pair its own."""
    return [item if isinstance(item, tuple) else (item, default_budget) for item in images or []]


def placeholder_runs(ids: np.ndarray, token_id: int | None) -> list[tuple[int, int]]:
    """(start, length) of every maximal run of `token_id` in ids."""
    if token_id is None:
        return []
    hits = np.concatenate([[False], ids == token_id, [False]])
    edges = np.flatnonzero(hits[1:] != hits[:-1])
    return [(int(start), int(end - start)) for start, end in zip(edges[::2], edges[1::2])]


def check_run_count(kind: str, runs: list[tuple[int, int]], given: int) -> None:
    """One placeholder run per media item of `kind`, no more and no fewer."""
    if len(runs) != given:
        raise EngineError(f"the prompt has {len(runs)} {kind} placeholder run(s) but {given} {kind}(s) were given")


def _match_runs(kind: str, runs: list[tuple[int, int]], features: list[mx.array]) -> None:
    check_run_count(kind, runs, len(features))
    for number, ((_, length), rows) in enumerate(zip(runs, features), start=1):
        if length != rows.shape[0]:
            raise EngineError(f"{kind} {number} has {rows.shape[0]} soft tokens but its placeholder run in the "
                              f"prompt has {length} tokens")


def _vision_groups(length: int, runs: list[tuple[int, int]]) -> mx.array:
    groups = np.full(length, -1, dtype=np.int32)
    for number, (start, run) in enumerate(runs):
        groups[start:start + run] = number
    return mx.array(groups)


def media_inputs(model, ids: np.ndarray, images=None, image_budget: int = 280, audio=None,
                 frames=None, frame_budget: int = 70) -> MediaInputs:
    """Features for every media run of `ids`: images, audio clips and video frames, each in prompt order."""
    config = model.config
    image_runs = placeholder_runs(ids, config.image_token_id)
    audio_runs = placeholder_runs(ids, config.audio_token_id)
    frame_runs = placeholder_runs(ids, config.video_token_id)
    image_features = model.encode_images(images, image_budget) if images else []
    audio_features = [model.embed_audio(wave, rate) for wave, rate in audio or []]
    frame_features = model.encode_images(frames, frame_budget) if frames else []
    _match_runs("image", image_runs, image_features)
    _match_runs("audio clip", audio_runs, audio_features)
    _match_runs("video frame", frame_runs, frame_features)

    pieces = sorted(zip(image_runs + audio_runs + frame_runs, image_features + audio_features + frame_features),
                    key=lambda item: item[0][0])
    text_ids = ids.copy()
    for token in (config.image_token_id, config.audio_token_id, config.video_token_id):
        if token is not None:
            text_ids[ids == token] = config.text.pad_token_id
    groups = None
    vision_runs = sorted(image_runs + frame_runs)
    if config.text.use_bidirectional_attention == "vision" and vision_runs:
        groups = _vision_groups(len(ids), vision_runs)
    if not pieces:
        return MediaInputs(text_ids, np.zeros(0, dtype=np.int32), None, groups)
    positions = np.concatenate([np.arange(start, start + length) for (start, length), _ in pieces])
    features = mx.concatenate([rows for _, rows in pieces], axis=0)
    return MediaInputs(text_ids, positions, features, groups)
