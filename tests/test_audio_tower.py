"""The MLX audio tower and embed_audio against transformers' Gemma 4 outputs (tools/make_audio_refs.py)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from safetensors.numpy import load_file

from engine.audio import AudioTower, audio_token_count, encode_audio, extract_features, resampled_length
from engine.config import AudioConfig, parse_audio_config, read_config
from engine.errors import EngineError
from engine.multimodal_embedder import MultimodalEmbedder

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = FIXTURES / "reference"
SOURCES = ("own-clipped", "own-geometry", "tiny-e2b", "tiny-e4b")
SIGNALS = ("tone_0.5s", "chirp_1.01s", "noise_2.3s", "voice_30s", "short_203")
TOLERANCE = 1e-4  # float32, relative to the scale of the reference values


@lru_cache(maxsize=None)
def reference(source: str) -> dict[str, np.ndarray]:
    with np.load(REFERENCE / f"audio_tower_{source}.npz") as data:
        return dict(data)


@lru_cache(maxsize=1)
def signals() -> dict[str, np.ndarray]:
    with np.load(REFERENCE / "audio_features.npz") as data:
        return {name: data[f"pcm/{name}"] for name in SIGNALS}


def as_float(pcm: np.ndarray) -> np.ndarray:
    return (pcm / 32_768.0).astype(np.float32)


def mlx_layout(hf_weights: dict[str, np.ndarray], prefix: str) -> list[tuple[str, mx.array]]:
    """Checkpoint tensors under `prefix`, renamed and with convolutions transposed as the engine loader does:
    Conv2d [out, in, kH, kW] -> [out, kH, kW, in], depthwise Conv1d [C, 1, K] -> [C, K, 1]."""
    out = []
    for key, value in hf_weights.items():
        if not key.startswith(prefix):
            continue
        if value.ndim == 4:
            value = value.transpose(0, 2, 3, 1)
        elif value.ndim == 3:
            value = value.transpose(0, 2, 1)
        out.append((key.removeprefix(prefix), mx.array(value)))
    return out


def source_weights(source: str) -> tuple[AudioConfig, dict[str, np.ndarray]]:
    ref = reference(source)
    if "audio_config" in ref:
        weights = {key.removeprefix("weight/"): value for key, value in ref.items() if key.startswith("weight/")}
        return parse_audio_config(json.loads(str(ref["audio_config"]))), weights
    folder = FIXTURES / "models" / source
    return read_config(folder).audio, load_file(folder / "model.safetensors")


def assemble(config: AudioConfig, text_hidden: int, tower_weights: list, embedder_weights: list,
             ) -> tuple[AudioTower, MultimodalEmbedder]:
    tower = AudioTower(config)
    tower.load_weights(tower_weights, strict=True)
    embedder = MultimodalEmbedder(config.output_proj_dims, text_hidden, config.rms_norm_eps)
    embedder.load_weights(embedder_weights, strict=True)
    return tower, embedder


@lru_cache(maxsize=None)
def build(source: str) -> tuple[AudioTower, MultimodalEmbedder]:
    config, weights = source_weights(source)
    return assemble(config, int(reference(source)["text_hidden"]), mlx_layout(weights, "model.audio_tower."),
                    mlx_layout(weights, "model.embed_audio."))


def assert_close(actual: mx.array | np.ndarray, expected: np.ndarray) -> None:
    actual = np.asarray(actual)
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    error = float(np.abs(actual - expected).max())
    assert error <= TOLERANCE * scale, f"max abs error {error:.3g} at scale {scale:.3g}"


@pytest.mark.parametrize("source", SOURCES)
def test_parameter_names_are_the_checkpoint_names(source: str) -> None:
    config, weights = source_weights(source)
    names = {key.removeprefix("model.audio_tower.") for key in weights if key.startswith("model.audio_tower.")}
    assert {name for name, _ in tree_flatten(AudioTower(config).parameters())} == names


@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("source", SOURCES)
def test_tower_and_embedder_match_reference_on_reference_features(source: str, signal: str) -> None:
    with np.load(REFERENCE / "audio_features.npz") as data:
        features, mask = data[f"features/{signal}"], data[f"mask/{signal}"]
    tower, embedder = build(source)
    ref = reference(source)
    hidden, token_mask = tower(mx.array(features)[None], mx.array(mask)[None])
    token_mask = np.asarray(token_mask[0])
    np.testing.assert_array_equal(token_mask, ref[f"token_mask/{signal}"])
    assert_close(hidden[0][mx.array(np.flatnonzero(token_mask))], ref[f"tower/{signal}"])
    assert_close(embedder(hidden[0])[mx.array(np.flatnonzero(token_mask))], ref[f"embedded/{signal}"])


@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("source", SOURCES)
def test_encode_audio_matches_reference_end_to_end(source: str, signal: str) -> None:
    tower, embedder = build(source)
    pcm = signals()[signal]
    embedded = encode_audio(tower, embedder, as_float(pcm), 16_000)
    assert embedded.dtype == mx.float32
    assert embedded.shape[0] == audio_token_count(len(pcm))
    assert_close(embedded, reference(source)[f"embedded/{signal}"])


def test_encode_audio_takes_integer_stereo_at_another_rate() -> None:
    tower, embedder = build("own-clipped")
    rate = 44_100
    t = np.arange(round(1.7 * rate)) / rate
    left = 0.3 * np.sin(2 * np.pi * 500 * t)
    stereo = (np.stack([left, -0.5 * left], axis=1) * 32_767).astype(np.int16)
    embedded = encode_audio(tower, embedder, stereo, rate)
    expected_tokens = audio_token_count(resampled_length(len(t), rate, 16_000))
    assert embedded.shape == (expected_tokens, int(reference("own-clipped")["text_hidden"]))
    assert bool(mx.all(mx.isfinite(embedded)))


def test_encode_audio_refuses_clips_over_30_seconds() -> None:
    tower, embedder = build("own-clipped")
    with pytest.raises(EngineError, match="at most 30 s"):
        encode_audio(tower, embedder, np.zeros(480_001, np.float32), 16_000)


def test_encode_audio_of_exactly_30_seconds_gives_750_tokens() -> None:
    tower, embedder = build("own-clipped")
    assert encode_audio(tower, embedder, as_float(signals()["voice_30s"]), 16_000).shape[0] == 750


def test_extracted_features_feed_the_tower_with_the_reference_mask() -> None:
    tower, _ = build("own-geometry")
    pcm = signals()["chirp_1.01s"]
    features, mask = extract_features(as_float(pcm))
    _, token_mask = tower(mx.array(features)[None], mx.array(mask)[None])
    assert int(token_mask.sum()) == audio_token_count(len(pcm)) == 25


def test_mlx_community_layout_loads_as_is_and_matches_reference() -> None:
    folder = FIXTURES / "models" / "tiny-e2b-mlx"
    weights = {}
    for shard in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(shard))

    def named(prefix: str) -> list[tuple[str, mx.array]]:
        return [(key.removeprefix(prefix), mx.array(value)) for key, value in weights.items() if key.startswith(prefix)]

    config = read_config(folder)
    tower, embedder = assemble(config.audio, config.text.hidden_size, named("audio_tower."), named("embed_audio."))
    pcm = signals()["noise_2.3s"]
    assert_close(encode_audio(tower, embedder, as_float(pcm), 16_000), reference("tiny-e2b")["embedded/noise_2.3s"])
