"""The four tiny Gemma 4 configurations and the `config.json` the released checkpoints would carry."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from transformers import Gemma4AudioConfig, Gemma4Config, Gemma4TextConfig, Gemma4VisionConfig

from .tokenizer import TOKEN_IDS, VOCAB_SIZE

SLIDING = "sliding_attention"
FULL = "full_attention"

ROPE = {
    SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
    FULL: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0},
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    text: dict
    vision: dict
    audio: dict | None
    eos_token_ids: tuple[int, ...]
    large_template: bool  # 26B / 31B: the generation prompt pre-fills an empty thought block


def _pattern(sliding_per_full: int, repeats: int) -> list[str]:
    return ([SLIDING] * sliding_per_full + [FULL]) * repeats


_TEXT_COMMON = dict(
    vocab_size=VOCAB_SIZE,
    vocab_size_per_layer_input=VOCAB_SIZE,
    hidden_size=64,
    head_dim=32,
    global_head_dim=64,
    sliding_window=16,
    rope_parameters=ROPE,
    final_logit_softcapping=30.0,
    hidden_activation="gelu_pytorch_tanh",
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    attention_bias=False,
    pad_token_id=TOKEN_IDS["<pad>"],
    eos_token_id=TOKEN_IDS["<eos>"],
    bos_token_id=TOKEN_IDS["<bos>"],
)

_SMALL_VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
    head_dim=16, position_embedding_size=256, use_clipped_linears=True, standardize=False,
)
_LARGE_VISION = dict(
    hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
    head_dim=24, position_embedding_size=256, use_clipped_linears=False, standardize=True,
)
# channels[0] stays 128 (the mel bins): HF sizes the input projection as (channels[0] // 4) * channels[1].
_AUDIO = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, subsampling_conv_channels=[128, 8],
              output_proj_dims=48, use_clipped_linears=True)

_SMALL_EOS = (TOKEN_IDS["<eos>"], TOKEN_IDS["<turn|>"])

SPECS: dict[str, ModelSpec] = {
    "tiny-e2b": ModelSpec(
        name="tiny-e2b",
        text=dict(_TEXT_COMMON, intermediate_size=128, num_hidden_layers=10, layer_types=_pattern(4, 2),
                  num_attention_heads=2, num_key_value_heads=1, num_global_key_value_heads=None,
                  attention_k_eq_v=False, num_kv_shared_layers=5, use_double_wide_mlp=True,
                  hidden_size_per_layer_input=32, enable_moe_block=False, max_position_embeddings=131_072),
        vision=_SMALL_VISION, audio=_AUDIO, eos_token_ids=_SMALL_EOS, large_template=False,
    ),
    "tiny-e4b": ModelSpec(
        name="tiny-e4b",
        text=dict(_TEXT_COMMON, intermediate_size=128, num_hidden_layers=12, layer_types=_pattern(5, 2),
                  num_attention_heads=4, num_key_value_heads=2, num_global_key_value_heads=None,
                  attention_k_eq_v=False, num_kv_shared_layers=6, use_double_wide_mlp=False,
                  hidden_size_per_layer_input=32, enable_moe_block=False, max_position_embeddings=131_072),
        vision=_SMALL_VISION, audio=_AUDIO, eos_token_ids=_SMALL_EOS, large_template=False,
    ),
    "tiny-26b": ModelSpec(
        name="tiny-26b",
        text=dict(_TEXT_COMMON, intermediate_size=96, num_hidden_layers=6, layer_types=_pattern(5, 1),
                  num_attention_heads=4, num_key_value_heads=2, num_global_key_value_heads=1,
                  attention_k_eq_v=True, num_kv_shared_layers=0, use_double_wide_mlp=False,
                  hidden_size_per_layer_input=0, enable_moe_block=True, num_experts=8, top_k_experts=2,
                  moe_intermediate_size=32, use_bidirectional_attention="vision", max_position_embeddings=262_144),
        vision=_LARGE_VISION, audio=None,
        eos_token_ids=(*_SMALL_EOS, TOKEN_IDS["<|tool_response>"]), large_template=True,
    ),
    "tiny-31b": ModelSpec(
        name="tiny-31b",
        text=dict(_TEXT_COMMON, intermediate_size=128, num_hidden_layers=6, layer_types=_pattern(5, 1),
                  num_attention_heads=4, num_key_value_heads=2, num_global_key_value_heads=1,
                  attention_k_eq_v=True, num_kv_shared_layers=0, use_double_wide_mlp=False,
                  hidden_size_per_layer_input=0, enable_moe_block=False,
                  use_bidirectional_attention="vision", max_position_embeddings=262_144),
        vision=_LARGE_VISION, audio=None, eos_token_ids=_SMALL_EOS, large_template=True,
    ),
}

_MEDIA_IDS = dict(
    boi_token_id=TOKEN_IDS["<|image>"],
    eoi_token_id=TOKEN_IDS["<image|>"],
    image_token_id=TOKEN_IDS["<|image|>"],
    video_token_id=TOKEN_IDS["<|video|>"],
    boa_token_id=TOKEN_IDS["<|audio>"],
    eoa_token_index=TOKEN_IDS["<audio|>"],
    audio_token_id=TOKEN_IDS["<|audio|>"],
)


def hf_config(spec: ModelSpec) -> Gemma4Config:
    """The transformers config object; eager attention so the reference runs the plain softmax path."""
    text = Gemma4TextConfig(**copy.deepcopy(spec.text))
    vision = Gemma4VisionConfig(**copy.deepcopy(spec.vision))
    audio = Gemma4AudioConfig(**copy.deepcopy(spec.audio)) if spec.audio else None
    config = Gemma4Config(text_config=text, vision_config=vision, audio_config=audio,
                          eos_token_id=list(spec.eos_token_ids), tie_word_embeddings=True, **_MEDIA_IDS)
    config._attn_implementation = "eager"
    for sub in (config.text_config, config.vision_config, config.audio_config):
        if sub is not None:
            sub._attn_implementation = "eager"
    return config


def released_config_json(spec: ModelSpec, saved: dict, dtype: str) -> dict:
    """Turn what `save_pretrained` writes into what the released files carry.

    transformers 5.23 folds `global_head_dim` / `num_global_key_value_heads` into `per_layer_config`; the
    released configs carry the two keys instead, plus `eoa_token_id` beside `eoa_token_index`.
    """
    config = copy.deepcopy(saved)
    text = config["text_config"]
    text.pop("per_layer_config", None)
    text["global_head_dim"] = spec.text["global_head_dim"]
    text["num_global_key_value_heads"] = spec.text["num_global_key_value_heads"]
    text["layer_types"] = list(spec.text["layer_types"])
    text["rope_parameters"] = copy.deepcopy(ROPE)
    text["dtype"] = dtype
    config["eoa_token_id"] = _MEDIA_IDS["eoa_token_index"]
    config["eos_token_id"] = list(spec.eos_token_ids)
    config["vision_soft_tokens_per_image"] = 280
    # mlx-lm sizes the embedding from a top-level vocab_size (default 262144), not from text_config.
    config["vocab_size"] = spec.text["vocab_size"]
    config["vision_config"]["default_output_length"] = 280
    config["vision_config"]["dtype"] = dtype
    if config.get("audio_config"):
        config["audio_config"]["dtype"] = dtype
    config["dtype"] = dtype
    config["architectures"] = ["Gemma4ForConditionalGeneration"]
    for key in ("_name_or_path", "transformers_version"):
        config.pop(key, None)
    config["transformers_version"] = saved.get("transformers_version")
    return dict(sorted(config.items()))
