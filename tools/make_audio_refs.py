"""Write the transformers reference outputs the audio tests compare against.

    /work/venv/bin/python tools/make_audio_refs.py

Outputs (under tests/fixtures/reference/):
* audio_features.npz: for several generated 16 kHz waveforms (stored as 16-bit PCM), the input
  features and frame mask of `Gemma4AudioFeatureExtractor`; and, for many clip lengths, the soft-token
  count the reference produces (the tower's own mask arithmetic, and the processor's formula);
* audio_tower_<source>.npz: `get_audio_features` output for those waveforms: the tower's last hidden
  state and the `embed_audio` projection at the valid positions, plus the token mask. Sources: two tiny
  towers built here, whose weights (Hugging Face names and layout) and configs go into the npz
  (`own-clipped`: the fixture geometry with clip bounds that bite; `own-geometry`: no clipping, odd
  attention chunking with look-ahead), and the shared fixture models tests/fixtures/models/tiny-e2b and
  tiny-e4b when they exist.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from transformers import Gemma4AudioConfig, Gemma4ForConditionalGeneration, Gemma4TextConfig
from transformers.models.gemma4 import Gemma4AudioFeatureExtractor
from transformers.models.gemma4.modeling_gemma4 import Gemma4AudioModel, Gemma4MultimodalEmbedder
from transformers.models.gemma4.processing_gemma4 import Gemma4Processor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from fixturelib.randomize import calibrate_clipping, randomize  # noqa: E402

REFERENCE = ROOT / "tests" / "fixtures" / "reference"
MODELS = ROOT / "tests" / "fixtures" / "models"
RATE = 16_000
FIXTURES = ("tiny-e2b", "tiny-e4b")

OWN_AUDIO = {
    "own-clipped": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        subsampling_conv_channels=[128, 8], output_proj_dims=48, use_clipped_linears=True),
    "own-geometry": dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                         subsampling_conv_channels=[128, 4], output_proj_dims=20, use_clipped_linears=False,
                         attention_chunk_size=5, attention_context_left=4, attention_context_right=3,
                         conv_kernel_size=3, residual_weight=0.7, attention_logit_cap=4.0),
}
OWN_TEXT_HIDDEN = 40

# Lengths (samples) whose token count is checked; many of them are where ceil(ms / 40) is one too high.
COUNT_LENGTHS = sorted({
    *range(0, 2_000, 7), *range(155, 170), *(640 * k + d for k in range(1, 40) for d in (-1, 0, 1, 161)),
    *range(30_000, 50_000, 997), 16_000, 16_160, 36_800, 479_840, 479_999, 480_000,
})


def waveforms() -> dict[str, np.ndarray]:
    """Test signals as 16-bit PCM: what a WAV file holds, so tests can rebuild the exact float input."""
    rng = np.random.default_rng(1234)

    def seconds(duration: float) -> np.ndarray:
        return np.arange(round(duration * RATE)) / RATE

    t = seconds(0.5)
    tone = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1_320 * t)
    t = seconds(1.01)
    chirp = 0.6 * np.sin(2 * np.pi * (150 * t + 2_500 * t**2))
    t = seconds(2.3)
    noise = rng.uniform(-0.7, 0.7, t.size) * np.abs(np.sin(2 * np.pi * 1.5 * t))
    t = seconds(30.0)
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    pitch = 2 * np.pi * (120 * t + 15 * np.sin(2 * np.pi * 0.3 * t))
    voice = syllables * sum(0.3 / k * np.sin(k * pitch) for k in range(1, 12)) + 0.02 * rng.normal(size=t.size)
    short = 0.4 * np.sin(2 * np.pi * 3_000 * seconds(0.0127))  # 203 samples: a single token
    signals = {"tone_0.5s": tone, "chirp_1.01s": chirp, "noise_2.3s": noise, "voice_30s": voice,
               "short_203": short}
    return {name: np.clip(np.rint(x * 32_767), -32_768, 32_767).astype(np.int16) for name, x in signals.items()}


def as_float(pcm: np.ndarray) -> np.ndarray:
    return (pcm / 32_768.0).astype(np.float32)


def reference_features(pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # The extractor wants a list of clips (a bare 1-D array trips over its own batching).
    batch = Gemma4AudioFeatureExtractor()([as_float(pcm)], return_tensors="np")
    return batch["input_features"][0], batch["input_features_mask"][0]


def token_counts() -> dict[str, np.ndarray]:
    extractor = Gemma4AudioFeatureExtractor()
    processor = SimpleNamespace(feature_extractor=extractor, audio_seq_length=750)
    mask_counts, formula_counts = [], []
    for length in COUNT_LENGTHS:
        formula_counts.append(Gemma4Processor._compute_audio_num_tokens(processor, np.zeros(length), RATE))
        if length == 0:
            mask_counts.append(0)
            continue
        mask = extractor([np.zeros(length, np.float32)], return_tensors="np")["input_features_mask"][0]
        # The tower keeps every second position of the mask after each of its two subsampling convolutions.
        mask_counts.append(int(mask[::2][::2].sum()))
    return {"count/lengths": np.array(COUNT_LENGTHS), "count/tower_mask": np.array(mask_counts),
            "count/processor": np.array(formula_counts)}


def features_refs(signals: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = token_counts()
    for name, pcm in signals.items():
        features, mask = reference_features(pcm)
        out[f"pcm/{name}"] = pcm
        out[f"features/{name}"] = features
        out[f"mask/{name}"] = mask
    return out


class AudioSource:
    """The audio half of a model: the tower and embed_audio, with HF-named state."""

    def __init__(self, tower: Gemma4AudioModel, embedder: Gemma4MultimodalEmbedder, text_hidden: int):
        self.tower = tower.eval()
        self.embedder = embedder.eval()
        self.text_hidden = text_hidden

    def state(self) -> dict[str, np.ndarray]:
        out = {}
        for prefix, module in (("model.audio_tower.", self.tower), ("model.embed_audio.", self.embedder)):
            for key, tensor in module.state_dict().items():
                out[prefix + key] = tensor.detach().float().numpy()
        return out

    @torch.no_grad()
    def run(self, features: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        result = self.tower(torch.from_numpy(features)[None], torch.from_numpy(mask)[None])
        hidden = result.last_hidden_state
        token_mask = result.attention_mask[0].numpy()
        embedded = self.embedder(hidden)[0].numpy()
        return hidden[0].numpy()[token_mask], embedded[token_mask], token_mask


def own_source(name: str, seed: int, signals: dict[str, np.ndarray]) -> AudioSource:
    torch.manual_seed(seed)
    config = Gemma4AudioConfig(**OWN_AUDIO[name])
    config._attn_implementation = "eager"
    text = Gemma4TextConfig(hidden_size=OWN_TEXT_HIDDEN)
    source = AudioSource(Gemma4AudioModel(config), Gemma4MultimodalEmbedder(config, text), OWN_TEXT_HIDDEN)
    randomize(source.tower, seed)
    randomize(source.embedder, seed + 100)
    if config.use_clipped_linears:
        calibration = [reference_features(signals[key]) for key in ("chirp_1.01s", "noise_2.3s")]
        clipped = calibrate_clipping(source.tower, lambda: [source.run(*case) for case in calibration], seed)
        print(f"{name}: smallest fraction of values clamped by a bound: {min(clipped.values()):.4f}")
    return source


def fixture_source(name: str) -> AudioSource | None:
    folder = MODELS / name
    if not (folder / "config.json").is_file():
        return None
    model = Gemma4ForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    model.config.audio_config._attn_implementation = "eager"
    return AudioSource(model.model.audio_tower, model.model.embed_audio, model.config.text_config.hidden_size)


def tower_refs(source: AudioSource, signals: dict[str, np.ndarray], store_weights: bool) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {"text_hidden": np.array(source.text_hidden)}
    if store_weights:
        out["audio_config"] = np.array(json.dumps(source.tower.config.to_dict()))
        out.update({f"weight/{key}": value for key, value in source.state().items()})
    for name, pcm in signals.items():
        hidden, embedded, token_mask = source.run(*reference_features(pcm))
        out[f"tower/{name}"] = hidden
        out[f"embedded/{name}"] = embedded
        out[f"token_mask/{name}"] = token_mask
    return out


def main() -> None:
    torch.set_num_threads(1)
    REFERENCE.mkdir(parents=True, exist_ok=True)
    signals = waveforms()
    np.savez_compressed(REFERENCE / "audio_features.npz", **features_refs(signals))
    print("wrote audio_features.npz")
    sources = [(name, own_source(name, seed, signals), True) for seed, name in enumerate(OWN_AUDIO)]
    sources += [(name, fixture_source(name), False) for name in FIXTURES]
    for name, source, own in sources:
        if source is None:
            print(f"skipped {name}: no fixture model under {MODELS}")
            continue
        np.savez_compressed(REFERENCE / f"audio_tower_{name}.npz", **tower_refs(source, signals, own))
        print(f"wrote audio_tower_{name}.npz")


if __name__ == "__main__":
    main()
