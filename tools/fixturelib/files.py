"""The non-weight files of a model folder: configs, tokenizer, chat template, and deterministic `.npz` files."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .configs import ModelSpec
from .tokenizer import TOKEN_IDS, write_tokenizer

TEMPLATE_SOURCE = Path(__file__).resolve().parent.parent / "chat_template.jinja"
_SMALL_SWITCH = "{%- set empty_thought_prefill = false -%}"
_LARGE_SWITCH = "{%- set empty_thought_prefill = true -%}"


def chat_template(large: bool) -> str:
    """The one template source; the 26B / 31B copies flip the switch that pre-fills the empty thought."""
    source = TEMPLATE_SOURCE.read_text(encoding="utf-8")
    if source.count(_SMALL_SWITCH) != 1:
        raise RuntimeError(f"{TEMPLATE_SOURCE} must contain the line {_SMALL_SWITCH!r} exactly once")
    return source.replace(_SMALL_SWITCH, _LARGE_SWITCH) if large else source


def write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def generation_config(spec: ModelSpec, transformers_version: str) -> dict:
    return {
        "bos_token_id": TOKEN_IDS["<bos>"],
        "pad_token_id": TOKEN_IDS["<pad>"],
        "eos_token_id": list(spec.eos_token_ids),
        "do_sample": True,
        "temperature": 1.0,
        "top_p": 0.95,
        "top_k": 64,
        "transformers_version": transformers_version,
    }


_IMAGE_PROCESSOR = {
    "image_processor_type": "Gemma4ImageProcessor",
    "do_convert_rgb": True,
    "do_resize": True,
    "resample": 3,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": False,
    "image_mean": [0.0, 0.0, 0.0],
    "image_std": [1.0, 1.0, 1.0],
    "patch_size": 16,
    "pooling_kernel_size": 3,
    "max_soft_tokens": 280,
    "image_seq_length": 280,
}

_FEATURE_EXTRACTOR = {
    "feature_extractor_type": "Gemma4AudioFeatureExtractor",
    "feature_size": 128,
    "sampling_rate": 16_000,
    "padding_value": 0.0,
    "padding_side": "right",
    "return_attention_mask": True,
    "frame_length": 320,
    "hop_length": 160,
    "fft_length": 512,
    "min_frequency": 0.0,
    "max_frequency": 8000.0,
    "mel_floor": 0.001,
    "preemphasis": 0.0,
    "preemphasis_htk_flavor": True,
    "fft_overdrive": False,
    "dither": 0.0,
    "input_scale_factor": 1.0,
    "per_bin_mean": None,
    "per_bin_stddev": None,
}


def processor_config(spec: ModelSpec) -> dict:
    config: dict = {
        "processor_class": "Gemma4Processor",
        "image_seq_length": 280,
        "audio_seq_length": 750,
        "audio_ms_per_token": 40,
        "image_processor": dict(_IMAGE_PROCESSOR),
    }
    if spec.audio is not None:
        config["feature_extractor"] = dict(_FEATURE_EXTRACTOR)
    return config


def write_model_files(folder: Path, spec: ModelSpec, config: dict, tokenizer: Tokenizer) -> None:
    """Everything a model folder holds besides the weights."""
    write_json(folder / "config.json", config)
    write_json(folder / "generation_config.json", generation_config(spec, config["transformers_version"]))
    write_json(folder / "processor_config.json", processor_config(spec))
    write_tokenizer(tokenizer, folder)
    (folder / "chat_template.jinja").write_text(chat_template(spec.large_template), encoding="utf-8")


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like `np.savez`, but byte-for-byte reproducible (fixed member timestamps)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buffer.getvalue())
