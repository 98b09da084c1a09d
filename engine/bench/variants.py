"""The four released Gemma 4 text configs and their shape-true truncations.

Numbers are the public config.json values (gemma4-architecture.md §1.1). A truncated model keeps every
per-layer shape, the sliding/full pattern and a proportional KV-shared tail, so each layer costs what it
costs in the real model; only the layer count changes.
"""

from __future__ import annotations

import copy

from ..errors import EngineError

SLIDING = "sliding_attention"
FULL = "full_attention"

_ROPE = {
    SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
    FULL: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0},
}
_COMMON = dict(model_type="gemma4_text", vocab_size=262_144, vocab_size_per_layer_input=262_144, head_dim=256,
               global_head_dim=512, rms_norm_eps=1e-6, final_logit_softcapping=30.0, tie_word_embeddings=True,
               hidden_activation="gelu_pytorch_tanh", attention_bias=False, pad_token_id=0, eos_token_id=1,
               bos_token_id=2, rope_parameters=_ROPE, use_bidirectional_attention=None)

# (text fields, period of the sliding:full pattern)
VARIANTS: dict[str, tuple[dict, int]] = {
    "e2b": (dict(hidden_size=1536, num_hidden_layers=35, intermediate_size=6144, num_attention_heads=8,
                 num_key_value_heads=1, num_global_key_value_heads=None, num_kv_shared_layers=20,
                 hidden_size_per_layer_input=256, sliding_window=512, use_double_wide_mlp=True,
                 attention_k_eq_v=False, enable_moe_block=False, max_position_embeddings=131_072), 5),
    "e4b": (dict(hidden_size=2560, num_hidden_layers=42, intermediate_size=10240, num_attention_heads=8,
                 num_key_value_heads=2, num_global_key_value_heads=None, num_kv_shared_layers=18,
                 hidden_size_per_layer_input=256, sliding_window=512, use_double_wide_mlp=False,
                 attention_k_eq_v=False, enable_moe_block=False, max_position_embeddings=131_072), 6),
    "26b-a4b": (dict(hidden_size=2816, num_hidden_layers=30, intermediate_size=2112, num_attention_heads=16,
                     num_key_value_heads=8, num_global_key_value_heads=2, num_kv_shared_layers=0,
                     hidden_size_per_layer_input=0, sliding_window=1024, use_double_wide_mlp=False,
                     attention_k_eq_v=True, enable_moe_block=True, num_experts=128, top_k_experts=8,
                     moe_intermediate_size=704, use_bidirectional_attention="vision",
                     max_position_embeddings=262_144), 6),
    "31b": (dict(hidden_size=5376, num_hidden_layers=60, intermediate_size=21504, num_attention_heads=32,
                 num_key_value_heads=16, num_global_key_value_heads=4, num_kv_shared_layers=0,
                 hidden_size_per_layer_input=0, sliding_window=1024, use_double_wide_mlp=False,
                 attention_k_eq_v=True, enable_moe_block=False, use_bidirectional_attention="vision",
                 max_position_embeddings=262_144), 6),
}

# Widths shrunk as far as group-64 quantization allows (every matrix width stays a multiple of 64, so it
# applies to exactly the same tensors as in the real model): on a CPU the quantized matmuls of a 128-wide
# skeleton took about 40 % of a decode step, and a skeleton is meant to measure per-step overhead.
TINY = dict(hidden_size=64, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1,
            num_global_key_value_heads=1, head_dim=64, global_head_dim=128,
            vocab_size=1024, vocab_size_per_layer_input=1024, hidden_size_per_layer_input=64,
            sliding_window=16, moe_intermediate_size=64, num_experts=4, top_k_experts=2)


def _shrink(text: dict) -> dict:
    kept_absent = {k for k in ("hidden_size_per_layer_input", "num_global_key_value_heads") if not text[k]}
    small = {k: v for k, v in TINY.items() if k in text and k not in kept_absent}
    return dict(text, **small)


def _layer_types(count: int, period: int) -> list[str]:
    return [FULL if i % period == period - 1 else SLIDING for i in range(count)]


def _truncate(text: dict, period: int, layers: int) -> dict:
    """Fewer layers: the pattern kept, the KV-shared tail scaled, a full layer right before the tail."""
    total, shared = text["num_hidden_layers"], text["num_kv_shared_layers"]
    if not 1 <= layers <= total:
        raise EngineError(f"--layers must be between 1 and {total} for this variant, got {layers}")
    types = _layer_types(layers, period)
    if shared:
        owners = max(period, layers - round(layers * shared / total))
        if layers < owners:
            raise EngineError(f"--layers must be at least {period} to keep a KV-shared variant's pattern")
        shared = layers - owners
        types[owners - 1] = FULL
    types[-1] = FULL
    return dict(text, num_hidden_layers=layers, num_kv_shared_layers=shared, layer_types=types)


def text_config(variant: str, layers: int | None = None, tiny: bool = False) -> dict:
    if variant not in VARIANTS:
        raise EngineError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    text, period = copy.deepcopy(VARIANTS[variant])
    text = dict(_COMMON, **text)
    if tiny:
        text = _shrink(text)
    text["layer_types"] = _layer_types(text["num_hidden_layers"], period)
    text["layer_types"][-1] = FULL
    return _truncate(text, period, layers) if layers else text


# Vision and audio configs (gemma4-architecture.md §1.3, §1.4): the small tower with clipped linears for
# E2B/E4B, the large standardizing one for 26B/31B; the audio tower for E2B/E4B only.
VISION_SMALL = dict(model_type="gemma4_vision", hidden_size=768, intermediate_size=3072, num_hidden_layers=16,
                    num_attention_heads=12, num_key_value_heads=12, head_dim=64, global_head_dim=64, patch_size=16,
                    pooling_kernel_size=3, position_embedding_size=10240, default_output_length=280,
                    rope_parameters={"rope_type": "default", "rope_theta": 100.0}, use_clipped_linears=True,
                    standardize=False, hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6)
VISION_LARGE = dict(VISION_SMALL, hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                    num_attention_heads=16, num_key_value_heads=16, head_dim=72, global_head_dim=72,
                    use_clipped_linears=False, standardize=True)
AUDIO = dict(model_type="gemma4_audio", hidden_size=1024, num_hidden_layers=12, num_attention_heads=8,
             hidden_act="silu", subsampling_conv_channels=[128, 32], conv_kernel_size=5, residual_weight=0.5,
             attention_chunk_size=12, attention_context_left=13, attention_context_right=0,
             attention_logit_cap=50.0, attention_invalid_logits_value=-1e9, use_clipped_linears=True,
             gradient_clipping=1e10, rms_norm_eps=1e-6, output_proj_dims=1536)
MEDIA_TOKENS = dict(boi_token_id=255_999, boa_token_id=256_000, image_token_id=258_880, audio_token_id=258_881,
                    eoi_token_id=258_882, eoa_token_id=258_883, video_token_id=258_884)
TINY_VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                   num_key_value_heads=2, head_dim=32, global_head_dim=32, position_embedding_size=256)
TINY_AUDIO = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, subsampling_conv_channels=[16, 8],
                  output_proj_dims=64)


def _tiny_tokens(vocab: int) -> dict:
    """The media ids moved to the top of a shrunk vocabulary, in the same order."""
    first = vocab - len(MEDIA_TOKENS)
    return {name: first + i for i, name in enumerate(sorted(MEDIA_TOKENS, key=MEDIA_TOKENS.get))}


_TOWERS = {"e2b": (VISION_SMALL, AUDIO), "e4b": (VISION_SMALL, AUDIO), "26b-a4b": (VISION_LARGE, None),
           "31b": (VISION_LARGE, None)}


def media_config(variant: str, tiny: bool = False) -> dict:
    """The top-level config fields that add the variant's towers: vision_config, audio_config, token ids."""
    if variant not in _TOWERS:
        raise EngineError(f"unknown variant {variant!r}; choose one of {', '.join(_TOWERS)}")
    vision, audio = _TOWERS[variant]
    vision = dict(vision, **(TINY_VISION if tiny else {}))
    audio = dict(audio, **(TINY_AUDIO if tiny else {})) if audio else None
    tokens = _tiny_tokens(TINY["vocab_size"]) if tiny else dict(MEDIA_TOKENS)
    return dict(vision_config=vision, audio_config=audio, **tokens, eoa_token_index=tokens["eoa_token_id"],
                vision_soft_tokens_per_image=280)
