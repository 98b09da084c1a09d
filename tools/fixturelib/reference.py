"""Reference outputs from the Hugging Face model: float32, eager attention, one full uncached forward."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from transformers.models.gemma4.modeling_gemma4 import Gemma4ForConditionalGeneration, Gemma4TextRouter

from .media import AudioBatch, ImageBatch, expand_placeholders, mm_token_types
from .tokenizer import ordinary_ids

TEXT_PROMPT_TOKENS = 40  # more than 2x the sliding window of 16
# The multimodal logits keep every text position and every 8th soft-token position, to stay small.
SOFT_TOKEN_ROW_STRIDE = 8
# Expert choices closer than this (in router logits) could flip under a different summation order, which
# would make parity tests flaky; prompts that produce such near-ties are redrawn.
MIN_ROUTER_MARGIN = 1e-4


class NearTie(RuntimeError):
    """The reference input makes the router choose between experts whose scores nearly tie."""


def random_prompt(seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return rng.choice(ordinary_ids(), size=TEXT_PROMPT_TOKENS).tolist()


@contextmanager
def router_margins(model: torch.nn.Module) -> Iterator[list[float]]:
    """Collects, per routed token, the logit gap between the last chosen and the first rejected expert."""
    margins: list[float] = []

    def record(router: Gemma4TextRouter, args: tuple, output: tuple) -> None:
        probabilities = output[0].float()
        top = torch.topk(probabilities.log(), router.config.top_k_experts + 1, dim=-1).values
        margins.extend((top[:, -2] - top[:, -1]).tolist())

    handles = [module.register_forward_hook(record) for module in model.modules()
               if isinstance(module, Gemma4TextRouter)]
    try:
        yield margins
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def _forward(model: Gemma4ForConditionalGeneration, ids: list[int], **inputs: torch.Tensor) -> tuple[np.ndarray, float]:
    with router_margins(model) as margins:
        logits = model(input_ids=torch.tensor([ids]), use_cache=False, **inputs).logits[0]
    return logits.float().numpy(), min(margins, default=float("inf"))


def text_reference(model: Gemma4ForConditionalGeneration, seed: int) -> dict[str, np.ndarray]:
    """`input_ids` / `logits` for a random prompt whose expert choices (if any) are far from ties."""
    for attempt in range(20):
        ids = random_prompt(seed + attempt)
        logits, margin = _forward(model, ids)
        if margin >= MIN_ROUTER_MARGIN:
            return {"input_ids": np.array(ids, dtype=np.int32), "logits": logits}
    raise NearTie("no random prompt keeps the router away from near-ties")


@dataclass(frozen=True)
class MultimodalCase:
    prompt: str  # the rendered chat prompt with one placeholder per media item
    image_names: list[str]
    images: ImageBatch | None
    audio: AudioBatch | None


@torch.no_grad()
def image_features(model: Gemma4ForConditionalGeneration, images: ImageBatch) -> torch.Tensor:
    output = model.model.get_image_features(images.pixel_values, images.position_ids, return_dict=True)
    return torch.cat(output.pooler_output, dim=0)


@torch.no_grad()
def audio_features(model: Gemma4ForConditionalGeneration, audio: AudioBatch) -> torch.Tensor:
    output = model.model.get_audio_features(audio.features, audio.mask, return_dict=True)
    return output.pooler_output[output.attention_mask]


def multimodal_reference(model: Gemma4ForConditionalGeneration, case: MultimodalCase,
                         encode: Callable[[str], list[int]]) -> tuple[dict[str, np.ndarray], float]:
    """Soft tokens of every medium and the logits of a chat prompt that carries them, plus the smallest
    router margin the prompt produced (infinite without experts)."""
    result: dict[str, np.ndarray] = {}
    inputs: dict[str, torch.Tensor] = {}
    image_counts: list[int] = []
    audio_counts: list[int] = []
    if case.images is not None:
        features = image_features(model, case.images)
        image_counts = case.images.soft_tokens
        result.update(image_features=features.float().numpy(), image_token_counts=np.array(image_counts, np.int32),
                      image_files=np.array(case.image_names))
        inputs.update(pixel_values=case.images.pixel_values, image_position_ids=case.images.position_ids)
    if case.audio is not None:
        features = audio_features(model, case.audio)
        audio_counts = [features.shape[0]]
        result.update(audio_features=features.float().numpy(), audio_token_counts=np.array(audio_counts, np.int32))
        inputs.update(input_features=case.audio.features, input_features_mask=case.audio.mask)
    ids = encode(expand_placeholders(case.prompt, image_counts, audio_counts))
    inputs["mm_token_type_ids"] = torch.tensor([mm_token_types(ids)])
    logits, margin = _forward(model, ids, **inputs)
    types = mm_token_types(ids)
    rows = np.array([i for i, kind in enumerate(types) if kind == 0 or i % SOFT_TOKEN_ROW_STRIDE == 0], np.int32)
    result.update(mm_input_ids=np.array(ids, dtype=np.int32), mm_logit_rows=rows, mm_logits=logits[rows])
    return result, margin
