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

# Widths shrunk until a whole checkpoint is a few megabytes; every matrix width stays a multiple of 64
# so group-64 quantization applies to exactly the same tensors as in the real model.
TINY = dict(hidden_size=128, intermediate_size=192, num_attention_heads=2, num_key_value_heads=1,
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
