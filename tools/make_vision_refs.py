"""Write the vision test images and the transformers reference outputs the vision tests compare against.

    /work/venv/bin/python tools/make_vision_refs.py            # images (if missing) and every reference
    /work/venv/bin/python tools/make_vision_refs.py --images   # regenerate the images too

Outputs (all under tests/fixtures/):
* images/*: small synthetic images in every colour mode the preprocessing handles, plus animations;
* reference/vision_preprocess.npz: `Gemma4ImageProcessorPil` output for every image and budget, as
  positions, soft-token counts and pixel checksums (weighted row sums, column sums, sample rows;
  the full arrays would be tens of MB);
* reference/vision_features_<source>.npz: `get_image_features` (tower + embed_vision) output, float32
  and bfloat16, for the images and budgets whose patch grid fits the source's position table.
  Sources: two tiny towers built here (`own-clipped`: clipping bounds that bite; `own-standardize`:
  head_dim 72 and std_bias/std_scale), whose weights go into the npz, and the shared fixture models
  tests/fixtures/models/tiny-e2b and tiny-26b when they exist.

Two images are fed to the reference in the form Lantern deliberately reads them (see
engine/vision/image_io.py): the EXIF-rotated JPEG upright, and the 16-bit PNG scaled to 8 bits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps
from transformers import Gemma4Config, Gemma4ForConditionalGeneration, Gemma4TextConfig, Gemma4VisionConfig
from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "tests" / "fixtures" / "images"
REFERENCE = ROOT / "tests" / "fixtures" / "reference"
MODELS = ROOT / "tests" / "fixtures" / "models"
BUDGETS = (70, 140, 280, 560, 1120)
SAMPLE_ROWS = 8
EXIF_ORIENTATION = 0x0112

# Which images get tower references, per budget (the others are covered by preprocessing refs).
FEATURE_CASES = {
    70: ("noise_37x91.png", "scene_640x480.png", "line_1x300.png", "rgba_120x80.png", "cmyk_80x50.tiff"),
    140: ("scene_640x480.png",),
    280: ("noise_37x91.png", "palette_alpha_100x60.png"),
    560: ("gray_50x200.png",),  # the largest budget only multiplies the patch count (preprocessing refs cover it)
}
BF16_CASES = {70: ("scene_640x480.png",)}

OWN_VISION = {
    "own-clipped": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                        num_key_value_heads=2, head_dim=16, position_embedding_size=320,
                        use_clipped_linears=True, standardize=False),
    "own-standardize": dict(hidden_size=80, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
                            num_key_value_heads=2, head_dim=72, position_embedding_size=320,
                            use_clipped_linears=False, standardize=True),
}
OWN_TEXT_HIDDEN = 40
FIXTURES = ("tiny-e2b", "tiny-26b")


# -- images ----------------------------------------------------------------------------------------

def _scene(width: int, height: int, seed: int, noise: float) -> np.ndarray:
    """Gradients, rings and hard-edged shapes (so resampling is exercised), plus optional noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    rings = 0.5 + 0.5 * np.sin(40 * np.hypot(u - 0.3, v - 0.6))
    rgb = np.stack([u, v, rings], axis=-1) * 255
    rgb += rng.normal(0, noise, rgb.shape)
    image = Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = (x0, y0, x0 + int(rng.integers(1, width // 3 + 2)), y0 + int(rng.integers(1, height // 3 + 2)))
        draw.rectangle(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return np.asarray(image)


def _exif_jpeg(path: Path) -> None:
    image = Image.fromarray(_scene(60, 40, 9, 0))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored sideways: viewers rotate it 90 degrees clockwise
    image.save(path, quality=95, exif=exif)


def _animation(path: Path, frames: int, size: tuple[int, int], durations: list[int]) -> None:
    images = [Image.fromarray(_scene(*size, 20 + i, 0)) for i in range(frames)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)


def write_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_scene(37, 91, 1, 40)).save(folder / "noise_37x91.png")
    Image.fromarray(_scene(640, 480, 2, 0)).save(folder / "scene_640x480.png")
    Image.fromarray(_scene(1, 300, 3, 10)).save(folder / "line_1x300.png")
    Image.fromarray(_scene(3000, 20, 4, 0)).save(folder / "strip_3000x20.png")
    rgb = _scene(120, 80, 5, 0)
    alpha = np.tile(np.linspace(0, 255, 120).astype(np.uint8), (80, 1))
    Image.fromarray(np.dstack([rgb, alpha])).save(folder / "rgba_120x80.png")
    palette = Image.fromarray(_scene(100, 60, 6, 0)).quantize(colors=16)
    palette.save(folder / "palette_alpha_100x60.png", transparency=3)
    Image.fromarray(_scene(64, 64, 7, 0)).quantize(colors=32).save(folder / "palette_64x64.png")
    gray = _scene(50, 200, 8, 5)[..., 0]
    Image.fromarray(gray).save(folder / "gray_50x200.png")
    Image.fromarray(np.dstack([gray[:40, :40], gray[:40, 10:50]])).save(folder / "la_40x40.png")
    wide = (_scene(90, 70, 10, 0)[..., 1].astype(np.uint16) * 257 + np.arange(90, dtype=np.uint16)).astype(np.uint16)
    Image.fromarray(wide).save(folder / "gray16_90x70.png")
    Image.fromarray(_scene(80, 50, 11, 0)).convert("CMYK").save(folder / "cmyk_80x50.tiff")
    _exif_jpeg(folder / "exif_rotated_60x40.jpg")
    _animation(folder / "animation_48x32.gif", 7, (48, 32), [100, 100, 200, 50, 0, 100, 100])
    _animation(folder / "animation_40x30.webp", 5, (40, 30), [80, 120, 80, 120, 80])


def still_images(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("animation_"))


def reference_view(image: Image.Image) -> Image.Image:
    """The image as Lantern reads it, built independently of engine/vision/image_io.py."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16"):
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.rint(wide * 255 / 65535).astype(np.uint8))
    return image


# -- preprocessing references ----------------------------------------------------------------------

def row_weights(width: int) -> np.ndarray:
    """Weights 1..2 across a patch vector: a weighted sum notices both changed and reordered values."""
    return 1 + np.arange(width) / width


def pixel_checksums(pixels: np.ndarray, valid: int) -> dict[str, np.ndarray]:
    rows = pixels[:valid].astype(np.float64)
    picks = np.linspace(0, valid - 1, min(SAMPLE_ROWS, valid)).round().astype(np.int64)
    return {
        "row_signature": (rows @ row_weights(rows.shape[1])).astype(np.float32),
        "column_sums": rows.sum(axis=0),
        "sample_index": picks,
        "sample_rows": pixels[picks],
        "padding_abs_sum": np.abs(pixels[valid:].astype(np.float64)).sum(keepdims=True),
    }


def preprocess_refs(folder: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in still_images(folder):
        image = reference_view(Image.open(folder / name))
        for budget in BUDGETS:
            ref = Gemma4ImageProcessorPil(max_soft_tokens=budget)(image, return_tensors="np")
            pixels, positions = ref["pixel_values"][0], ref["image_position_ids"][0]
            count = int(ref["num_soft_tokens_per_image"][0])
            valid = int((positions[:, 0] >= 0).sum())
            key = f"{name}/{budget}"
            out[f"{key}/num_soft_tokens"] = np.array(count)
            out[f"{key}/positions"] = positions.astype(np.int16)
            for field, value in pixel_checksums(pixels, valid).items():
                out[f"{key}/{field}"] = value
    return out


# -- feature references ----------------------------------------------------------------------------

def own_model(name: str, seed: int) -> Gemma4ForConditionalGeneration:
    """A tiny full model (one text layer) whose vision weights are all non-trivial."""
    torch.manual_seed(seed)
    vision = Gemma4VisionConfig(**OWN_VISION[name])
    text = Gemma4TextConfig(vocab_size=64, hidden_size=OWN_TEXT_HIDDEN, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=1, num_key_value_heads=1, head_dim=8, global_head_dim=8,
                            layer_types=["full_attention"], hidden_size_per_layer_input=0)
    config = Gemma4Config(text_config=text, vision_config=vision, audio_config=None, boi_token_id=60,
                          eoi_token_id=61, image_token_id=62, video_token_id=63, boa_token_id=59,
                          eoa_token_index=58, audio_token_id=57)
    for sub in (config, config.text_config, config.vision_config):
        sub._attn_implementation = "eager"
    model = Gemma4ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for key, tensor in _vision_state(model).items():
            # float16-representable values, so the npz can store the weights in half the bytes exactly
            tensor.copy_(_perturbed(key, tensor).half().float())
    return model


def _perturbed(key: str, tensor: torch.Tensor) -> torch.Tensor:
    bounds = {"input_min": -1.5, "input_max": 1.7, "output_min": -0.6, "output_max": 0.55}
    for suffix, bound in bounds.items():
        if key.endswith(suffix):
            return torch.full_like(tensor, bound)
    if key.endswith("std_bias"):
        return torch.randn_like(tensor) * 300
    if key.endswith("std_scale"):
        return torch.rand_like(tensor) * 0.02 + 0.005
    if "norm" in key:
        return 1 + 0.3 * torch.randn_like(tensor)
    if key.endswith("position_embedding_table"):
        return torch.randn_like(tensor) * 0.5
    return torch.randn_like(tensor) * tensor.shape[-1] ** -0.5


def _vision_state(model: Gemma4ForConditionalGeneration) -> dict[str, torch.Tensor]:
    """`vision_tower.*` / `embed_vision.*` tensors (parameters and persistent buffers) by canonical name."""
    state = {}
    for prefix in ("vision_tower", "embed_vision"):
        module = getattr(model.model, prefix)
        for key, tensor in module.state_dict(keep_vars=True).items():
            state[f"{prefix}.{key}"] = tensor
    return state


def weights_digest(weights: dict[str, np.ndarray]) -> str:
    """SHA-256 over the float32 vision weights by name: the tests notice references older than a fixture."""
    digest = hashlib.sha256()
    for key in sorted(weights):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(weights[key], dtype=np.float32).tobytes())
    return digest.hexdigest()


def fixture_model(name: str) -> Gemma4ForConditionalGeneration | None:
    folder = MODELS / name
    if not (folder / "config.json").is_file():
        return None
    model = Gemma4ForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    model.config.vision_config._attn_implementation = "eager"
    return model.eval()


def _fits(image: Image.Image, budget: int, table: int) -> bool:
    positions = Gemma4ImageProcessorPil(max_soft_tokens=budget)(image, return_tensors="np")["image_position_ids"]
    return int(positions.max()) < table


def image_features(model: Gemma4ForConditionalGeneration, image: Image.Image, budget: int) -> np.ndarray:
    ref = Gemma4ImageProcessorPil(max_soft_tokens=budget)(image, return_tensors="pt")
    with torch.no_grad():
        out = model.model.get_image_features(ref["pixel_values"], ref["image_position_ids"])
    return out.pooler_output[0].float().numpy()


def feature_refs(model: Gemma4ForConditionalGeneration, folder: Path, store_weights: bool) -> dict[str, np.ndarray]:
    vision = model.config.vision_config
    out: dict[str, np.ndarray] = {
        "vision_config": np.array(json.dumps(vision.to_dict())),
        "text_hidden": np.array(model.config.text_config.hidden_size),
    }
    state = _vision_state(model)
    out["weights_sha256"] = np.array(weights_digest({k: t.detach().float().numpy() for k, t in state.items()}))
    if store_weights:
        for key, tensor in state.items():
            out[f"weight/{key}"] = tensor.detach().half().numpy()
    for kind, cases, dtype in (("float32", FEATURE_CASES, torch.float32), ("bfloat16", BF16_CASES, torch.bfloat16)):
        model.to(dtype)
        for budget, names in cases.items():
            for name in names:
                image = reference_view(Image.open(folder / name))
                if _fits(image, budget, vision.position_embedding_size):
                    out[f"{kind}/{name}/{budget}"] = image_features(model, image, budget)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", action="store_true", help="regenerate tests/fixtures/images as well")
    args = parser.parse_args()
    if args.images or not IMAGES.is_dir():
        write_images(IMAGES)
    REFERENCE.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(REFERENCE / "vision_preprocess.npz", **preprocess_refs(IMAGES))
    sources = [(name, own_model(name, seed), True) for seed, name in enumerate(OWN_VISION)]
    sources += [(name, fixture_model(name), False) for name in FIXTURES]
    for name, model, own in sources:
        if model is None:
            print(f"skipped {name}: no fixture model under {MODELS}")
            continue
        np.savez_compressed(REFERENCE / f"vision_features_{name}.npz", **feature_refs(model, IMAGES, own))
        print(f"wrote vision_features_{name}.npz")


if __name__ == "__main__":
    main()
