"""`--vlm`: vision and audio encoders and image-prompt time to first token, ours against mlx-vlm.

Both engines load the same checkpoint folder (towers in the MLX-community layout) and get the same PIL
images and waveforms; each side's time includes its own preprocessing (resize and patching, log-mel
features). Every trial uses a fresh image, so our feature cache never answers from an earlier trial.
Gates, reported per cell: the image and audio features (max difference relative to mlx-vlm's largest
magnitude) and the first token of the image prompt.
"""

from __future__ import annotations

import importlib
import importlib.util
import statistics
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import mlx.core as mx
import numpy as np
from PIL import Image

import engine

SAMPLE_RATE = 16_000
TEXT_AROUND_IMAGE = (8, 16)  # text tokens before and after the image in the image prompt


def synthetic_image(seed: int, size: tuple[int, int] = (1024, 768)) -> Image.Image:
    """Seeded RGB noise, large enough that every budget scales it down."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def noise_clip(seconds: float, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)


def _timed(work: Callable[[], mx.array | int]) -> tuple[float, mx.array | int]:
    mx.synchronize()
    started = time.perf_counter()
    result = work()
    if isinstance(result, mx.array):
        mx.eval(result)
    return time.perf_counter() - started, result


def mlx_vlm_missing() -> str | None:
    """Why mlx-vlm cannot run here, or None when it can."""
    if importlib.util.find_spec("mlx_vlm") is None:
        return "mlx-vlm is not installed (pip install --no-deps mlx-vlm==0.7.10)"
    if "requests" not in sys.modules and importlib.util.find_spec("requests") is None:
        # mlx_vlm/utils.py imports requests at module level only to fetch images by URL, which the bench never
        # does; an empty module lets the package import without its server/download dependencies.
        sys.modules["requests"] = types.ModuleType("requests")
    try:
        for module in ("mlx_vlm.generate", "mlx_vlm.models.gemma4", "mlx_vlm.utils"):
            importlib.import_module(module)
    except ImportError as exc:
        return f"mlx-vlm does not import: {exc}"
    return None


@dataclass
class Ours:
    model: object

    def image_features(self, image: Image.Image, budget: int) -> mx.array:
        return self.model.embed_image(image, budget)

    def audio_features(self, clip: np.ndarray) -> mx.array:
        return self.model.embed_audio(clip, SAMPLE_RATE)

    def first_token(self, prompt: list[int], image: Image.Image, budget: int) -> int:
        return next(self.model.generate_ids(prompt, max_tokens=1, temperature=0.0, images=[image],
                                            image_budget=budget, stop_ids=[]))


class MlxVlm:
    """mlx-vlm 0.7.10's Gemma 4 model with its own image processor and audio feature extractor."""

    def __init__(self, folder: Path):
        from mlx_vlm.models.gemma4.audio_feature_extractor import Gemma4AudioFeatureExtractor
        from mlx_vlm.models.gemma4.processing_gemma4 import Gemma4ImageProcessor
        from mlx_vlm.utils import load_model

        self.model = load_model(folder)
        self.images = Gemma4ImageProcessor()
        self.audio = Gemma4AudioFeatureExtractor()

    def _pixels(self, image: Image.Image, budget: int) -> mx.array:
        data, _ = self.images.preprocess([image], max_soft_tokens=budget)
        return mx.array(data["pixel_values"])

    def image_features(self, image: Image.Image, budget: int) -> mx.array:
        return self.model.encode_image(self._pixels(image, budget))[0]

    def audio_features(self, clip: np.ndarray) -> mx.array:
        features = self.audio(clip)
        mel = mx.array(features["input_features"][0])[None]
        invalid = ~mx.array(features["input_features_mask"][0])[None]
        encoded, _ = self.model.audio_tower(mel, invalid)
        return self.model.embed_audio(encoded)[0]

    def first_token(self, prompt: list[int], image: Image.Image, budget: int) -> int:
        from mlx_vlm.generate import generate_step

        steps = generate_step(mx.array(prompt)[None], self.model, self._pixels(image, budget), None,
                              max_tokens=1, temperature=0.0)
        return int(next(steps)[0])


def relative_difference(ours: mx.array, reference: mx.array) -> float:
    if ours.shape != reference.shape:
        return float("inf")
    diff = mx.abs(ours.astype(mx.float32) - reference.astype(mx.float32)).max().item()
    return diff / max(mx.abs(reference).max().item(), 1e-30)


def image_prompt(model, image: Image.Image, budget: int) -> list[int]:
    """Text, `<|image>`, one placeholder per soft token, `<image|>`, text; text ids avoid every special id."""
    config = model.config
    count = model.image_token_count(image, budget)
    lowest_special = min(i for i in (config.image_token_id, config.boi_token_id, config.audio_token_id,
                                     config.boa_token_id) if i is not None)
    before, after = TEXT_AROUND_IMAGE
    text = np.random.default_rng(budget).integers(3, lowest_special, before + after).tolist()
    return text[:before] + [config.boi_token_id] + [config.image_token_id] * count + [config.eoi_token_id] + \
        text[before:]


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def image_cell(sides: dict, model, budget: int, trials: int) -> dict:
    """Encoder time and image-prompt TTFT at one budget, medians over trials with fresh images."""
    times: dict = {name: {"vision_encoder_s": [], "image_ttft_s": []} for name in sides}
    features: dict = {}
    tokens: dict = {}
    for trial in range(trials):
        encode_image, prompt_image = synthetic_image(2 * trial + 1), synthetic_image(2 * trial + 2)
        prompt = image_prompt(model, prompt_image, budget)
        for name, side in sides.items():  # alternate so drift hits both
            seconds, features[name] = _timed(lambda: side.image_features(encode_image, budget))
            times[name]["vision_encoder_s"].append(seconds)
            seconds, tokens[name] = _timed(lambda: side.first_token(prompt, prompt_image, budget))
            times[name]["image_ttft_s"].append(seconds)
    record = dict(budget=budget, soft_tokens=int(features["ours"].shape[0]), prompt_tokens=len(prompt),
                  **{name: {k: _median(v) for k, v in figures.items()} for name, figures in times.items()})
    if "mlx_vlm" in sides:
        record.update(image_features_rel_diff=relative_difference(features["ours"], features["mlx_vlm"]),
                      first_token_equal=tokens["ours"] == tokens["mlx_vlm"])
    return record


def audio_cell(sides: dict, seconds_of_audio: float, trials: int) -> dict:
    times: dict = {name: [] for name in sides}
    features: dict = {}
    for trial in range(trials):
        clip = noise_clip(seconds_of_audio, trial)
        for name, side in sides.items():
            seconds, features[name] = _timed(lambda: side.audio_features(clip))
            times[name].append(seconds)
    record = dict(clip_s=seconds_of_audio, audio_tokens=int(features["ours"].shape[0]),
                  **{name: {"audio_encoder_s": _median(v)} for name, v in times.items()})
    if "mlx_vlm" in sides:
        record["audio_features_rel_diff"] = relative_difference(features["ours"], features["mlx_vlm"])
    return record


def _warm_up(sides: dict, model, budget: int, with_audio: bool) -> None:
    """One untimed pass per side: first calls pay for allocation and lazy weight loading."""
    image = synthetic_image(0)
    for side in sides.values():
        mx.eval(side.image_features(image, budget))
        side.first_token(image_prompt(model, image, budget), image, budget)
        if with_audio:
            mx.eval(side.audio_features(noise_clip(1.0, 0)))


def run_vlm(folder: Path, budgets: list[int], clips: list[float], trials: int,
            on_cell: Callable[[str, dict], None] = lambda kind, cell: None) -> dict:
    """Every image budget, then every audio clip; `on_cell("image"|"audio", cell)` as each one finishes."""
    model = engine.load(folder)
    sides: dict = {"ours": Ours(model)}
    missing = mlx_vlm_missing()
    if missing is None:
        sides["mlx_vlm"] = MlxVlm(folder)
    with_audio = "audio" in model.info.modalities
    _warm_up(sides, model, min(budgets), with_audio)
    images, audio = [], []
    for budget in budgets:
        images.append(image_cell(sides, model, budget, trials))
        on_cell("image", images[-1])
    for seconds in clips if with_audio else []:
        audio.append(audio_cell(sides, seconds, trials))
        on_cell("audio", audio[-1])
    return dict(mode="vlm", variant=folder.name, trials=trials, mlx=mx.__version__, device=str(mx.default_device()),
                mlx_vlm=missing or _mlx_vlm_version(), images=images, audio=audio)


def _mlx_vlm_version() -> str:
    from importlib.metadata import version

    return version("mlx-vlm")
