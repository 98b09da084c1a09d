"""The vision tower + embed_vision against transformers' `get_image_features` (tools/make_vision_refs.py).

Sources: two towers built by the reference script (clipping bounds that bite; head_dim 72 with
standardize), whose weights sit in their npz, and the shared fixture checkpoints tiny-e2b (clipped)
and tiny-26b (standardize), read from model.safetensors the way the loader names them.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from PIL import Image

import engine.vision as vision
import engine.vision.encode as encode_module
from engine import EngineError
from engine.config import VisionConfig, parse_vision_config, read_config
from engine.multimodal_embedder import MultimodalEmbedder
from engine.vision import FeatureCache, VisionTower, encode_images, preprocess_image
from engine.vision.layers import apply_rope_2d, attention, rope_2d_angles
from engine.vision.tower import pool_blocks

FIXTURES = Path(__file__).parent / "fixtures"
IMAGES = FIXTURES / "images"
SOURCES = sorted(p.stem.removeprefix("vision_features_") for p in (FIXTURES / "reference").glob("vision_features_*.npz"))
FLOAT32_TOLERANCE = 1e-4  # relative to the largest reference value


class VisionParts(nn.Module):
    """The two vision modules under their canonical checkpoint names."""

    def __init__(self, config: VisionConfig, text_hidden: int):
        super().__init__()
        self.vision_tower = VisionTower(config)
        self.embed_vision = MultimodalEmbedder(config.hidden_size, text_hidden, config.rms_norm_eps)


def reference(source: str) -> np.lib.npyio.NpzFile:
    return np.load(FIXTURES / "reference" / f"vision_features_{source}.npz")


def source_weights(source: str) -> tuple[VisionConfig, int, dict[str, mx.array]]:
    ref = reference(source)
    if source.startswith("own-"):
        config = parse_vision_config(json.loads(ref["vision_config"].item()))
        weights = {k.removeprefix("weight/"): mx.array(ref[k].astype(np.float32))
                   for k in ref.files if k.startswith("weight/")}
        return config, int(ref["text_hidden"]), weights
    folder = FIXTURES / "models" / source
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"fixture model {source} is missing")
    config = read_config(folder)
    stored = mx.load(str(folder / "model.safetensors"))
    weights = {k.removeprefix("model."): v for k, v in stored.items()
               if k.startswith(("model.vision_tower.", "model.embed_vision."))}
    return config.vision, config.text.hidden_size, weights


def load_parts(source: str, dtype: mx.Dtype = mx.float32) -> VisionParts:
    config, text_hidden, weights = source_weights(source)
    parts = VisionParts(config, text_hidden)
    parts.load_weights(list(weights.items()))  # strict: every name and shape must match
    parts.set_dtype(dtype)
    mx.eval(parts.parameters())
    return parts


@lru_cache(maxsize=None)
def float32_parts(source: str) -> VisionParts:
    return load_parts(source)


def cases(kind: str) -> list[tuple[str, str, int]]:
    found = []
    for source in SOURCES:
        for key in reference(source).files:
            if key.startswith(f"{kind}/"):
                _, name, budget = key.split("/")
                found.append((source, name, int(budget)))
    return found


def relative_error(ours: mx.array, ref: np.ndarray) -> float:
    return float(np.abs(np.asarray(ours) - ref).max() / np.abs(ref).max())


def test_every_expected_source_has_references() -> None:
    assert {"own-clipped", "own-standardize", "tiny-e2b", "tiny-26b"} <= set(SOURCES)


@pytest.mark.parametrize("source", SOURCES)
def test_references_were_made_from_these_weights(source: str) -> None:
    _, _, weights = source_weights(source)
    digest = hashlib.sha256()
    for key in sorted(weights):
        digest.update(key.encode())
        digest.update(np.asarray(weights[key].astype(mx.float32)).tobytes())
    assert digest.hexdigest() == reference(source)["weights_sha256"].item(), \
        "stale vision references: run tools/make_vision_refs.py"


@pytest.mark.parametrize("source", SOURCES)
def test_tower_covers_the_configured_features(source: str) -> None:
    config = float32_parts(source).vision_tower.config
    names = {k for k, _ in nn.utils.tree_flatten(float32_parts(source).parameters())}
    assert ("vision_tower.std_bias" in names) == config.standardize
    clip = "vision_tower.encoder.layers.0.self_attn.q_proj.input_min"
    assert (clip in names) == config.use_clipped_linears
    assert "vision_tower.encoder.layers.0.self_attn.q_proj.linear.weight" in names


@pytest.mark.parametrize("source, name, budget", cases("float32"))
def test_features_match_reference(source: str, name: str, budget: int) -> None:
    parts = float32_parts(source)
    ref = reference(source)[f"float32/{name}/{budget}"]
    [ours] = encode_images(parts.vision_tower, parts.embed_vision, [Image.open(IMAGES / name)], budget)
    assert ours.dtype == mx.float32 and ours.shape == ref.shape
    assert relative_error(ours, ref) < FLOAT32_TOLERANCE


@pytest.mark.parametrize("source", SOURCES)
def test_batched_encoding_equals_one_by_one(source: str) -> None:
    parts = float32_parts(source)
    ref = reference(source)
    names = [name for _, name, budget in cases("float32") if budget == 70 and f"float32/{name}/70" in ref.files]
    names = names + names[:1]  # a repeated image shares a batch with its first copy
    images = [Image.open(IMAGES / name) for name in names]
    batched = encode_images(parts.vision_tower, parts.embed_vision, images, 70)
    assert len(batched) == len(names) >= 3
    for name, ours in zip(names, batched):
        assert relative_error(ours, ref[f"float32/{name}/70"]) < FLOAT32_TOLERANCE


@pytest.mark.parametrize("source, name, budget", cases("bfloat16"))
def test_bfloat16_weights_stay_as_close_to_float32_as_the_reference_does(source: str, name: str,
                                                                          budget: int) -> None:
    parts = load_parts(source, mx.bfloat16)
    assert parts.vision_tower.dtype == mx.bfloat16
    [ours] = encode_images(parts.vision_tower, parts.embed_vision, [Image.open(IMAGES / name)], budget)
    assert ours.dtype == mx.float32 and bool(mx.all(mx.isfinite(ours)))
    # Rounding to bfloat16 moves both implementations a few percent from float32, in different
    # directions; ours must not drift further than transformers' own bfloat16 run.
    ref = reference(source)
    exact = ref[f"float32/{name}/{budget}"]
    reference_drift = relative_error(mx.array(ref[f"bfloat16/{name}/{budget}"]), exact)
    assert relative_error(ours, exact) < 1.5 * reference_drift


def test_image_wider_than_the_position_table_is_refused() -> None:
    parts = float32_parts("own-clipped")
    table = parts.vision_tower.config.position_embedding_size
    wide = Image.new("RGB", (table * 16 * 2, 16), (40, 80, 120))
    with pytest.raises(EngineError, match=f"{table} positions"):
        encode_images(parts.vision_tower, parts.embed_vision, [wide], 280)


def test_pooling_averages_three_by_three_blocks_found_by_position() -> None:
    rows, cols, width = 6, 9, 5
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(rows, cols, width)).astype(np.float32)
    expected = grid.reshape(rows // 3, 3, cols // 3, 3, width).mean(axis=(1, 3)).reshape(-1, width)
    ys, xs = np.divmod(np.arange(rows * cols), cols)
    order = rng.permutation(rows * cols)  # pooling must follow positions, not the patch order
    hidden = mx.array(grid.reshape(-1, width)[order][None])
    positions = mx.array(np.stack([xs, ys], axis=-1)[order][None].astype(np.int32))
    pooled = pool_blocks(hidden, positions, 3)
    assert pooled.dtype == mx.float32
    np.testing.assert_allclose(np.asarray(pooled[0]), expected, rtol=0, atol=1e-6)


def test_rope_turns_first_half_by_x_and_second_half_by_y() -> None:
    head_dim, theta = 16, 100.0
    rng = np.random.default_rng(1)
    q = rng.normal(size=(1, 1, 1, head_dim)).astype(np.float32)
    x, y = 5, 11
    cos, sin = rope_2d_angles(mx.array([[[x, y]]], dtype=mx.int32), head_dim, theta)
    ours = np.asarray(apply_rope_2d(mx.array(q), cos, sin))[0, 0, 0]
    quarter = head_dim // 4
    freqs = theta ** (-np.arange(quarter) / quarter)
    for half, coordinate in ((0, x), (1, y)):
        a = q[0, 0, 0, half * 2 * quarter: half * 2 * quarter + quarter]
        b = q[0, 0, 0, half * 2 * quarter + quarter: (half + 1) * 2 * quarter]
        angle = coordinate * freqs
        expected = np.concatenate([a * np.cos(angle) - b * np.sin(angle), b * np.cos(angle) + a * np.sin(angle)])
        np.testing.assert_allclose(ours[half * 2 * quarter:(half + 1) * 2 * quarter], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("head_dim", [16, 72])
def test_attention_is_unscaled_softmax_whatever_the_head_size(head_dim: int) -> None:
    rng = np.random.default_rng(2)
    q, k, v = (rng.normal(size=(2, 3, 7, head_dim)).astype(np.float32) * 0.5 for _ in range(3))
    scores = q @ k.transpose(0, 1, 3, 2)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    expected = (weights / weights.sum(-1, keepdims=True)) @ v
    ours = attention(mx.array(q), mx.array(k), mx.array(v))
    assert ours.shape == expected.shape
    np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-5, atol=1e-5)


def test_feature_cache_skips_the_tower_for_an_image_seen_before(monkeypatch) -> None:
    parts = float32_parts("own-clipped")
    encoded_counts = []
    real = encode_module.encode_preprocessed

    def counting(tower, embedder, images):
        encoded_counts.append(len(images))
        return real(tower, embedder, images)

    monkeypatch.setattr(vision, "encode_preprocessed", counting)
    cache = FeatureCache()
    png = Image.open(IMAGES / "scene_640x480.png")
    as_bmp = Image.fromarray(np.asarray(png))  # same pixels, no file behind it
    first = encode_images(parts.vision_tower, parts.embed_vision, [png, as_bmp], 70, cache=cache)
    again = encode_images(parts.vision_tower, parts.embed_vision, [as_bmp], 70, cache=cache)
    other_budget = encode_images(parts.vision_tower, parts.embed_vision, [png], 140, cache=cache)
    assert encoded_counts == [1, 0, 1]
    assert again[0] is first[0] and first[1] is first[0]
    assert other_budget[0].shape[0] == vision.soft_token_count(640, 480, 140) != first[0].shape[0]
    assert len(cache) == 2


def test_preprocessed_image_matches_reference_token_count() -> None:
    ref = reference("own-clipped")
    for key in ref.files:
        if key.startswith("float32/"):
            _, name, budget = key.split("/")
            assert preprocess_image(Image.open(IMAGES / name), int(budget)).num_soft_tokens == ref[key].shape[0]


def test_quantized_patch_projection_keeps_the_float_path() -> None:
    parts = load_parts("own-clipped")
    nn.quantize(parts.vision_tower.patch_embedder, group_size=32, bits=8)
    assert parts.vision_tower.patch_embedder.input_proj.weight.dtype == mx.uint32
    assert parts.vision_tower.dtype == mx.float32
    name, budget = "scene_640x480.png", 70
    [ours] = encode_images(parts.vision_tower, parts.embed_vision, [Image.open(IMAGES / name)], budget)
    assert relative_error(ours, reference("own-clipped")[f"float32/{name}/{budget}"]) < 5e-2
