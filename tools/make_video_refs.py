"""Write a small animated GIF and the transformers reference for a video prompt on the fixture models.

    /work/venv/bin/python tools/make_video_refs.py

transformers' video processor needs torchvision (not installed here), so the frames are preprocessed
with the image processor (the path Lantern takes for frames) and handed to the model as
`pixel_values_videos`. The prompt follows the reference expansion of one video placeholder:
per frame `mm:ss <|image>` + `<|video|>` * n + `<image|>`, joined by single spaces.

Outputs: tests/fixtures/media/clip.gif and tests/fixtures/reference/video_<model>.npz holding
`input_ids`, `frame_token_counts`, `logit_rows` and `logits` (every text position and every 4th
soft-token position).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tokenizers import Tokenizer
from transformers import Gemma4ForConditionalGeneration
from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "fixtures" / "models"
REFERENCE = ROOT / "tests" / "fixtures" / "reference"
CLIP = ROOT / "tests" / "fixtures" / "media" / "clip.gif"
FRAME_MS = 600
FRAME_BUDGET = 70
ROW_STRIDE = 4


def write_clip() -> list[Image.Image]:
    frames = []
    for index in range(3):
        frame = Image.new("RGB", (160, 96), (30 + 60 * index, 90, 160 - 40 * index))
        draw = ImageDraw.Draw(frame)
        draw.ellipse((20 + 40 * index, 20, 70 + 40 * index, 70), fill=(250, 220, 40))
        draw.rectangle((0, 80, 160, 96), fill=(20, 120 + 30 * index, 40))
        frames.append(frame)
    frames[0].save(CLIP, save_all=True, append_images=frames[1:], duration=FRAME_MS, loop=0)
    with Image.open(CLIP) as clip:
        decoded = []
        for number in range(clip.n_frames):
            clip.seek(number)
            decoded.append(clip.convert("RGB"))
    return decoded


def clock(seconds: float) -> str:
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"


def reference(name: str, frames: list[Image.Image]) -> dict[str, np.ndarray]:
    folder = MODELS / name
    model = Gemma4ForConditionalGeneration.from_pretrained(folder, dtype=torch.float32,
                                                           attn_implementation="eager").eval()
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    batch = Gemma4ImageProcessorPil()(frames, max_soft_tokens=FRAME_BUDGET, return_tensors="pt")
    counts = [int(n) for n in batch["num_soft_tokens_per_image"]]
    video = " ".join(f"{clock(i * FRAME_MS / 1000)} <|image>" + "<|video|>" * n + "<image|>"
                     for i, n in enumerate(counts))
    prompt = f"<bos><|turn>user\n{video}What happens?<turn|>\n<|turn>model\n"
    ids = tokenizer.encode(prompt, add_special_tokens=False).ids
    video_id = tokenizer.token_to_id("<|video|>")
    types = [2 if token == video_id else 0 for token in ids]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), pixel_values_videos=batch["pixel_values"],
                       video_position_ids=batch["image_position_ids"],
                       num_frames_per_video=torch.tensor([len(frames)]),
                       mm_token_type_ids=torch.tensor([types]), use_cache=False).logits[0].numpy()
    rows = np.array([i for i, kind in enumerate(types) if kind == 0 or i % ROW_STRIDE == 0], np.int32)
    return {"input_ids": np.array(ids, np.int32), "frame_token_counts": np.array(counts, np.int32),
            "logit_rows": rows, "logits": logits[rows]}


def main() -> None:
    frames = write_clip()
    for name in ("tiny-e2b", "tiny-26b"):
        np.savez_compressed(REFERENCE / f"video_{name}.npz", **reference(name, frames))
        print(f"wrote video_{name}.npz")


if __name__ == "__main__":
    main()
