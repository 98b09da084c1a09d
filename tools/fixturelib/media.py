"""Small synthetic media files and their Hugging Face preprocessing for the multimodal references.

The image processor is the PIL backend (`Gemma4ImageProcessorPil`): the torchvision backend is not
installed here, and its antialiased resize gives slightly different pixels. Audio is written as 16-bit PCM,
and the reference reads it back the way soundfile does (int16 / 32768), so the engine sees the same samples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
from PIL import Image
from transformers.models.gemma4 import Gemma4AudioFeatureExtractor
from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil

from .tokenizer import TOKEN_IDS

IMAGE_BUDGET = 70
SAMPLE_RATE = 16_000
# Not a multiple of the extractor's 128-sample padding, so the last mel frames are padding.
AUDIO_SAMPLES = 18_080

IMAGES = {"image_wide.png": (48, 64), "image_tall.png": (80, 40)}  # name -> (height, width)
AUDIO = "audio_16k.wav"


def _image(height: int, width: int, rng: np.random.Generator) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 127 + 120 * np.sin(x / width * 2 * np.pi)
    green = 255 * y / max(height - 1, 1)
    blue = np.where((x // 8 + y // 8) % 2 == 0, 40.0, 220.0)
    pixels = np.stack([red, green, blue], axis=-1) + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")


def _waveform(rng: np.random.Generator) -> np.ndarray:
    t = np.arange(AUDIO_SAMPLES) / SAMPLE_RATE
    chirp = 0.4 * np.sin(2 * np.pi * (220 * t + 900 * t**2))
    return chirp + 0.05 * rng.normal(size=t.shape)


def write_media(folder: Path, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, (height, width) in IMAGES.items():
        _image(height, width, rng).save(folder / name, format="PNG")
    soundfile.write(folder / AUDIO, _waveform(rng), SAMPLE_RATE, subtype="PCM_16")


@dataclass(frozen=True)
class ImageBatch:
    pixel_values: torch.Tensor
    position_ids: torch.Tensor
    soft_tokens: list[int]


@dataclass(frozen=True)
class AudioBatch:
    features: torch.Tensor
    mask: torch.Tensor


def load_images(folder: Path, names: list[str]) -> ImageBatch:
    processor = Gemma4ImageProcessorPil()
    images = [Image.open(folder / name).convert("RGB") for name in names]
    batch = processor(images, max_soft_tokens=IMAGE_BUDGET, return_tensors="pt")
    return ImageBatch(batch["pixel_values"], batch["image_position_ids"],
                      [int(n) for n in batch["num_soft_tokens_per_image"]])


def load_audio(folder: Path) -> AudioBatch:
    samples, rate = soundfile.read(folder / AUDIO, dtype="float64")
    if rate != SAMPLE_RATE:
        raise RuntimeError(f"{AUDIO} has rate {rate}, expected {SAMPLE_RATE}")
    batch = Gemma4AudioFeatureExtractor()([samples], return_tensors="pt")
    return AudioBatch(batch["input_features"].float(), batch["input_features_mask"])


_WRAPS = {"<|image|>": ("<|image>", "<image|>"), "<|audio|>": ("<|audio>", "<audio|>")}


def expand_placeholders(prompt: str, image_tokens: list[int], audio_tokens: list[int]) -> str:
    """Each `<|image|>` / `<|audio|>` of the template becomes `<|image>` + soft tokens + `<image|>` (and the same
    for audio), the way the Hugging Face processor expands them."""
    counts = {"<|image|>": list(image_tokens), "<|audio|>": list(audio_tokens)}
    pieces = []
    for piece in re.split(r"(<\|image\|>|<\|audio\|>)", prompt):
        if piece in _WRAPS:
            if not counts[piece]:
                raise RuntimeError(f"more {piece} placeholders in the prompt than media items")
            opening, closing = _WRAPS[piece]
            piece = opening + piece * counts[piece].pop(0) + closing
        pieces.append(piece)
    if any(counts.values()):
        raise RuntimeError("fewer media placeholders in the prompt than media items")
    return "".join(pieces)


def mm_token_types(ids: list[int]) -> list[int]:
    """HF `mm_token_type_ids`: 1 on image soft tokens, 2 on video, 3 on audio, 0 elsewhere."""
    kinds = {TOKEN_IDS["<|image|>"]: 1, TOKEN_IDS["<|video|>"]: 2, TOKEN_IDS["<|audio|>"]: 3}
    return [kinds.get(token, 0) for token in ids]
