"""Regenerate every tiny Gemma 4 test fixture under tests/fixtures from scratch (dev only).

    /work/venv/bin/python tools/make_fixtures.py

Builds four random checkpoints with transformers' reference classes (tiny-e2b, tiny-e4b, tiny-26b, tiny-31b),
writes them in the Hugging Face layout, derives the MLX-layout, bfloat16 and quantised copies, and stores
reference outputs computed by the Hugging Face model in float32 with eager attention. Seeds are fixed, so a
rerun writes the same files. See tools/README.md.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import transformers
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixturelib.configs import SPECS, ModelSpec, hf_config, released_config_json  # noqa: E402
from fixturelib.files import chat_template, save_npz, write_json, write_model_files  # noqa: E402
from fixturelib.layouts import as_mlx, hf_tensors, to_mlx_layout, unused_shared_kv, write_hf, write_mlx  # noqa: E402
from fixturelib.media import AUDIO, IMAGES, load_audio, load_images, write_media  # noqa: E402
from fixturelib.quantize import (QuantPlan, dequantized_hf_state, quantize_arrays, quantized_paths,  # noqa: E402
                                 text_layer_override, text_module_override)
from fixturelib.randomize import CLIP_BOUNDS, calibrate_clipping, randomize  # noqa: E402
from fixturelib.reference import (MIN_ROUTER_MARGIN, MultimodalCase, NearTie, audio_features,  # noqa: E402
                                  image_features, multimodal_reference, text_reference)
from fixturelib.tokenizer import TOKEN_IDS, build_tokenizer  # noqa: E402
from transformers.models.gemma4.modeling_gemma4 import Gemma4ForConditionalGeneration  # noqa: E402

SEED = 20260402
ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
MODELS = FIXTURES / "models"
REFERENCE = FIXTURES / "reference"
MEDIA = FIXTURES / "media"
MANIFEST = FIXTURES / "manifest.json"

# Tried in order until the prompt keeps every expert choice away from near-ties.
MM_QUESTIONS = ("Describe what you see and hear.", "What is in this picture?", "Tell me about it, please.",
                "Is it day or night there?", "Which colors do you notice?")


_STARTED = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _STARTED:6.1f}s] {message}", flush=True)


def seed_for(name: str) -> int:
    return SEED + zlib.crc32(name.encode())


def render_chat(template: str, **context: object) -> str:
    environment = ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"])
    return environment.from_string(template).render(**context)


# ----------------------------------------------------------------------------------------- model building

def media_case(spec: ModelSpec, question: str) -> MultimodalCase:
    """E2B/E4B: one image and one clip; 26B/31B: two images, so the bidirectional groups are two runs."""
    names = list(IMAGES)[: 1 if spec.audio else 2]
    content = [{"type": "image"} for _ in names]
    if spec.audio:
        content.append({"type": "audio"})
    content.append({"type": "text", "text": question})
    prompt = render_chat(chat_template(spec.large_template), add_generation_prompt=True,
                         messages=[{"role": "user", "content": content}])
    return MultimodalCase(prompt=prompt, image_names=names, images=load_images(MEDIA, names),
                          audio=load_audio(MEDIA) if spec.audio else None)


def build_model(spec: ModelSpec, seed: int) -> Gemma4ForConditionalGeneration:
    model = Gemma4ForConditionalGeneration(hf_config(spec)).eval()
    randomize(model, seed)
    images = load_images(MEDIA, list(IMAGES))
    audio = load_audio(MEDIA) if spec.audio else None

    def run_towers() -> None:
        image_features(model, images)
        if audio is not None:
            audio_features(model, audio)

    clipped = calibrate_clipping(model, run_towers, seed + 1)
    unclipped = [name for name, fraction in clipped.items() if fraction <= 0.0]
    if unclipped:
        raise RuntimeError(f"{spec.name}: clip bounds that clamp nothing: {unclipped}")
    if clipped:
        log(f"{spec.name}: {len(clipped)} clippable linears clamp {min(clipped.values()):.1%}-"
            f"{max(clipped.values()):.1%} of their values")
    return model


def check_randomised(name: str, tensors: dict[str, torch.Tensor]) -> None:
    """No tensor may keep a trivial value: constant arrays, unit scalars or infinite clip bounds hide bugs."""
    for key, value in tensors.items():
        value = value.float()
        if not torch.isfinite(value).all():
            raise RuntimeError(f"{name}: {key} is not finite")
        trivial = value.numel() == 1 and (value.item() in (0.0, 1.0) and not key.endswith(CLIP_BOUNDS))
        if trivial or value.numel() > 1 and bool((value == value.flatten()[0]).all()):
            raise RuntimeError(f"{name}: {key} was left at a trivial value")


def saved_config(model: Gemma4ForConditionalGeneration) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        model.config.save_pretrained(scratch)
        return json.loads((Path(scratch) / "config.json").read_text())


def round_embedding_scales(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Give the scaled embeddings the scale they use when the model runs in its stored `dtype`.

    transformers casts sqrt(width) to the table's dtype; a float32 run of a bf16 checkpoint would not.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(getattr(module, "embed_scale", None), torch.Tensor):
                module.embed_scale.copy_(module.embed_scale.to(dtype).float())
    return model


@torch.no_grad()
def check_reload(folder: Path, ids: np.ndarray, expected: np.ndarray, stored: torch.dtype = torch.float32) -> None:
    """The folder loads in transformers from config.json as written, and gives the same logits."""
    model, info = Gemma4ForConditionalGeneration.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    round_embedding_scales(model, stored)
    problems = {kind: keys for kind, keys in info.items() if keys and kind != "unexpected_keys"}
    if problems:
        raise RuntimeError(f"{folder.name}: transformers reports {problems}")
    logits = model.eval()(input_ids=torch.tensor([ids.tolist()]), use_cache=False).logits[0].numpy()
    error = float(np.abs(logits - expected).max())
    if error > 1e-5:
        raise RuntimeError(f"{folder.name}: reloaded model differs from the reference by {error:.2e}")


def reference_for(model: Gemma4ForConditionalGeneration, spec: ModelSpec, tokenizer: Tokenizer,
                  seed: int) -> dict[str, np.ndarray]:
    arrays = text_reference(model, seed)
    arrays.update(multimodal_reference_without_ties(model, spec, tokenizer))
    spread = float(arrays["logits"].std(axis=-1).mean())
    if not 1.0 <= spread <= 10.0:
        raise RuntimeError(f"{spec.name}: logits spread {spread:.2f} is outside [1, 10]")
    return arrays


def multimodal_reference_without_ties(model: Gemma4ForConditionalGeneration, spec: ModelSpec,
                                      tokenizer: Tokenizer) -> dict[str, np.ndarray]:
    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    for question in MM_QUESTIONS:
        arrays, margin = multimodal_reference(model, media_case(spec, question), encode)
        if margin >= MIN_ROUTER_MARGIN:
            return arrays
        log(f"{spec.name}: {question!r} gives a router near-tie ({margin:.1e}), trying the next question")
    raise NearTie(f"{spec.name}: every multimodal question routes some token with a near-tie")


def fresh_folder(name: str) -> Path:
    folder = MODELS / name
    folder.mkdir(parents=True)
    return folder


# ----------------------------------------------------------------------------------------- variants

@dataclass(frozen=True)
class Source:
    spec: ModelSpec
    model: Gemma4ForConditionalGeneration
    tensors: dict[str, torch.Tensor]  # the HF file contents, unused KV weights included
    config: dict
    reference: dict[str, np.ndarray]


def mlx_copy(name: str, source: Source, tokenizer: Tokenizer, shards: int) -> dict:
    folder = fresh_folder(name)
    write_mlx(as_mlx(to_mlx_layout(source.tensors)), folder, shards=shards)
    write_model_files(folder, source.spec, source.config, tokenizer)
    save_npz(REFERENCE / f"{name}.npz", source.reference)
    return {"layout": "mlx", "dtype": "float32", "shards": shards, "quantization": None}


def with_weights(source: Source, state: dict[str, torch.Tensor]) -> Gemma4ForConditionalGeneration:
    """A copy of the source model holding `state` (HF names); keys the model does not build are ignored."""
    model = copy.deepcopy(source.model)
    live = model.state_dict()
    missing = set(live) - set(state) - {"lm_head.weight"}
    if missing:
        raise RuntimeError(f"weights missing from the converted state: {sorted(missing)[:3]}")
    model.load_state_dict({key: value for key, value in state.items() if key in live}, strict=False)
    return model.eval()


def bf16_copy(name: str, source: Source, tokenizer: Tokenizer) -> dict:
    """HF layout in bfloat16; the reference runs in float32 on the bf16-rounded weights, with the
    embedding scales rounded to bf16 as they are when the checkpoint runs in its own dtype."""
    folder = fresh_folder(name)
    write_hf(source.tensors, folder, dtype=torch.bfloat16)
    config = released_config_json(source.spec, saved_config(source.model), "bfloat16")
    write_model_files(folder, source.spec, config, tokenizer)
    rounded = {key: value.to(torch.bfloat16).float() for key, value in source.tensors.items()}
    model = round_embedding_scales(with_weights(source, rounded), torch.bfloat16)
    reference = reference_for(model, source.spec, tokenizer, seed_for(name))
    save_npz(REFERENCE / f"{name}.npz", reference)
    check_reload(folder, reference["input_ids"], reference["logits"], stored=torch.bfloat16)
    return {"layout": "hf", "dtype": "bfloat16", "shards": 1, "quantization": None}


def quantized_copy(name: str, source: Source, tokenizer: Tokenizer, plan: QuantPlan) -> dict:
    """MLX layout, quantised; the reference runs the HF model on the dequantised weights."""
    folder = fresh_folder(name)
    arrays, block = quantize_arrays(to_mlx_layout(source.tensors), plan)
    write_mlx(arrays, folder)
    config = dict(source.config, quantization=block, quantization_config=copy.deepcopy(block))
    write_model_files(folder, source.spec, config, tokenizer)
    model = with_weights(source, dequantized_hf_state(arrays, block))
    save_npz(REFERENCE / f"{name}.npz", reference_for(model, source.spec, tokenizer, seed_for(name)))
    log(f"{name}: {len(quantized_paths(arrays))} quantised modules, {len(block) - 3} overrides")
    return {"layout": "mlx", "dtype": "float32", "shards": 1,
            "quantization": {"bits": plan.bits, "group_size": plan.group_size}}


Variant = Callable[[str, Source, Tokenizer], dict]
VARIANTS: dict[str, list[tuple[str, Variant]]] = {
    "tiny-e2b": [
        ("tiny-e2b-mlx", partial(mlx_copy, shards=2)),
        ("tiny-e2b-q4", partial(quantized_copy, plan=QuantPlan(
            bits=4, group_size=32, override=text_module_override("per_layer_model_projection", 8, 32)))),
    ],
    "tiny-e4b": [("tiny-e4b-bf16", bf16_copy)],
    "tiny-26b": [
        ("tiny-26b-mlx", partial(mlx_copy, shards=1)),
        ("tiny-26b-q4", partial(quantized_copy, plan=QuantPlan(bits=4, group_size=32, override=text_layer_override(
            ("router.proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"), 8, 32)))),
    ],
    "tiny-31b": [("tiny-31b-q8", partial(quantized_copy, plan=QuantPlan(bits=8, group_size=64,
                                                                         fallback_group_size=32)))],
}


# ----------------------------------------------------------------------------------------- main

def build_source(spec: ModelSpec, tokenizer: Tokenizer, seed: int) -> Source:
    model = build_model(spec, seed)
    tensors = hf_tensors(model.state_dict(), unused_shared_kv(spec, seed + 2))
    check_randomised(spec.name, tensors)
    config = released_config_json(spec, saved_config(model), "float32")
    folder = fresh_folder(spec.name)
    write_hf(tensors, folder)
    write_model_files(folder, spec, config, tokenizer)
    reference = reference_for(model, spec, tokenizer, seed_for(spec.name))
    save_npz(REFERENCE / f"{spec.name}.npz", reference)
    check_reload(folder, reference["input_ids"], reference["logits"])
    return Source(spec, model, tensors, config, reference)


def build_family(spec: ModelSpec, tokenizer: Tokenizer, seed: int) -> dict[str, dict]:
    """The checkpoint of `spec` and every copy derived from it; returns their manifest entries."""
    source = build_source(spec, tokenizer, seed)
    entries = {spec.name: manifest_entry(spec, {"layout": "hf", "dtype": "float32", "shards": 1,
                                               "quantization": None})}
    log(f"{spec.name}: written")
    for name, make in VARIANTS[spec.name]:
        entries[name] = manifest_entry(spec, make(name, source, tokenizer))
        log(f"{name}: written")
    return entries


def remove_family(spec: ModelSpec) -> None:
    for name in [spec.name] + [name for name, _ in VARIANTS[spec.name]]:
        shutil.rmtree(MODELS / name, ignore_errors=True)
        (REFERENCE / f"{name}.npz").unlink(missing_ok=True)


def build_family_without_ties(spec: ModelSpec, tokenizer: Tokenizer) -> dict[str, dict]:
    """Redraw the weights until no reference input of the family puts the router near a tie."""
    for attempt in range(20):
        try:
            return build_family(spec, tokenizer, seed_for(spec.name) + 10 * attempt)
        except NearTie as tie:
            log(f"{spec.name}: {tie}; drawing new weights")
            remove_family(spec)
    raise RuntimeError(f"{spec.name}: every weight draw leads to router near-ties")


def manifest_entry(spec: ModelSpec, details: dict) -> dict:
    modalities = ["text", "image", "video"] + (["audio"] if spec.audio else [])
    return {"source": spec.name, **details, "template": "large" if spec.large_template else "small",
            "modalities": modalities}


def check_tokenizer_agrees(folder: Path, tokenizer: Tokenizer, template: str) -> None:
    """transformers' AutoTokenizer and apply_chat_template see the same ids and text as the raw files."""
    auto = transformers.AutoTokenizer.from_pretrained(folder)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello café 日本 🚀"}]
    ours = render_chat(template, messages=messages, add_generation_prompt=True, enable_thinking=True)
    theirs = auto.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    if ours != theirs:
        raise RuntimeError(f"apply_chat_template renders {theirs!r}, jinja2 renders {ours!r}")
    if auto(ours, add_special_tokens=False)["input_ids"] != tokenizer.encode(ours, add_special_tokens=False).ids:
        raise RuntimeError("AutoTokenizer and tokenizer.json disagree on the same text")
    for token, index in TOKEN_IDS.items():
        if auto.convert_tokens_to_ids(token) != index:
            raise RuntimeError(f"AutoTokenizer maps {token} to {auto.convert_tokens_to_ids(token)}, expected {index}")


def main() -> None:
    torch.set_num_threads(1)  # one thread: reproducible sums, and the machine is shared
    # Other suites keep their own files under tests/fixtures: remove only what this script writes.
    for name in (*IMAGES, AUDIO):
        (MEDIA / name).unlink(missing_ok=True)
    for spec in SPECS.values():
        remove_family(spec)
    REFERENCE.mkdir(parents=True, exist_ok=True)
    write_media(MEDIA, SEED)
    tokenizer = build_tokenizer(SEED)
    manifest: dict[str, dict] = {}
    for spec in SPECS.values():
        manifest.update(build_family_without_ties(spec, tokenizer))
    check_tokenizer_agrees(MODELS / "tiny-e2b", tokenizer, chat_template(large=False))
    write_json(MANIFEST, {name: manifest[name] for name in sorted(manifest)})
    log("done")


if __name__ == "__main__":
    main()
