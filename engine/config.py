"""Parsing and validating a Gemma 4 `config.json` into plain dataclasses.

Only what the files say is trusted: layer types, RoPE parameters and special token ids are read,
never assumed, because defaults differ between the reference libraries.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EngineError

SLIDING = "sliding_attention"
FULL = "full_attention"

# Sizes past these are not a Gemma 4 model but a corrupt or hostile file.
_MAX_DIM = 1 << 20
_MAX_LAYERS = 1024
_MAX_VOCAB = 1 << 24


def _int(raw: dict, key: str, default: Any = None, *, where: str, minimum: int = 1,
         maximum: int = _MAX_DIM) -> int:
    value = raw.get(key, default)
    if value is None:
        raise EngineError(f"config.json: {where}.{key} is missing")
    if isinstance(value, bool) or not isinstance(value, int):
        raise EngineError(f"config.json: {where}.{key} must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise EngineError(
            f"config.json: {where}.{key} = {value} is outside the sane range [{minimum}, {maximum}]"
        )
    return value


def _float(raw: dict, key: str, default: float, *, where: str, positive: bool = False,
           maximum: float = math.inf) -> float:
    """A finite number; `positive` for scales, epsilons and bases where zero or less only yields NaN."""
    value = raw.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EngineError(f"config.json: {where}.{key} must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an integer past the float range
        number = math.inf
    if not math.isfinite(number):
        raise EngineError(f"config.json: {where}.{key} = {value} is not a finite number")
    if positive and not 0 < number <= maximum:
        limit = "" if maximum == math.inf else f" and at most {maximum:g}"
        raise EngineError(f"config.json: {where}.{key} = {value} must be greater than 0{limit}")
    return number


def _section(raw: dict, key: str, *, where: str) -> dict:
    """An optional nested object of the config: {} when absent, an error when it is something else."""
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EngineError(f"config.json: {where}.{key} must be an object, got {value!r}")
    return value


@dataclass(frozen=True)
class RopeConfig:
    theta: float
    partial_rotary_factor: float = 1.0
    factor: float = 1.0
    proportional: bool = False


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    global_head_dim: int
    num_global_key_value_heads: int
    layer_types: tuple[str, ...]
    sliding_window: int
    rope_sliding: RopeConfig
    rope_full: RopeConfig
    max_position_embeddings: int
    final_logit_softcapping: float | None
    rms_norm_eps: float
    attention_k_eq_v: bool
    num_kv_shared_layers: int
    use_double_wide_mlp: bool
    enable_moe_block: bool
    num_experts: int
    top_k_experts: int
    moe_intermediate_size: int
    hidden_size_per_layer_input: int
    vocab_size_per_layer_input: int
    use_bidirectional_attention: str | None
    pad_token_id: int
    bos_token_id: int
    eos_token_ids: tuple[int, ...]

    # Per-layer geometry, derived once from the fields above.
    @property
    def first_kv_shared_layer(self) -> int:
        return self.num_hidden_layers - self.num_kv_shared_layers

    def is_full(self, layer: int) -> bool:
        return self.layer_types[layer] == FULL

    def layer_head_dim(self, layer: int) -> int:
        return self.global_head_dim if self.is_full(layer) else self.head_dim

    def layer_kv_heads(self, layer: int) -> int:
        if self.is_full(layer) and self.attention_k_eq_v:
            return self.num_global_key_value_heads
        return self.num_key_value_heads

    def has_value_proj(self, layer: int) -> bool:
        return not (self.is_full(layer) and self.attention_k_eq_v)

    def is_kv_consumer(self, layer: int) -> bool:
        return layer >= self.first_kv_shared_layer

    def kv_producer(self, layer: int) -> int:
        """The layer whose K/V this layer attends over (itself unless it is a KV-shared consumer)."""
        if not self.is_kv_consumer(layer):
            return layer
        kind = self.layer_types[layer]
        for source in range(self.first_kv_shared_layer - 1, -1, -1):
            if self.layer_types[source] == kind:
                return source
        raise EngineError(f"config.json: no layer of type {kind} produces the KV that layer {layer} shares")

    def mlp_width(self, layer: int) -> int:
        wide = self.use_double_wide_mlp and self.is_kv_consumer(layer)
        return self.intermediate_size * (2 if wide else 1)

    @property
    def has_ple(self) -> bool:
        return self.hidden_size_per_layer_input > 0


@dataclass(frozen=True)
class VisionConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rope_theta: float
    pooling_kernel_size: int
    patch_size: int
    position_embedding_size: int
    use_clipped_linears: bool
    standardize: bool
    rms_norm_eps: float
    default_output_length: int


@dataclass(frozen=True)
class AudioConfig:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    subsampling_conv_channels: tuple[int, ...]
    conv_kernel_size: int
    residual_weight: float
    attention_chunk_size: int
    attention_context_left: int
    attention_context_right: int
    attention_logit_cap: float
    attention_invalid_logits_value: float
    use_clipped_linears: bool
    rms_norm_eps: float
    gradient_clipping: float
    output_proj_dims: int


@dataclass(frozen=True)
class QuantSpec:
    bits: int
    group_size: int
    mode: str = "affine"


@dataclass(frozen=True)
class QuantConfig:
    """The `quantization` block of an MLX conversion: a default and per-module overrides."""

    default: QuantSpec
    overrides: dict[str, QuantSpec | None] = field(default_factory=dict)

    def for_module(self, path: str) -> QuantSpec | None:
        if path in self.overrides:
            return self.overrides[path]
        return self.default


@dataclass(frozen=True)
class ModelConfig:
    model_type: str
    text: TextConfig
    vision: VisionConfig | None
    audio: AudioConfig | None
    quantization: QuantConfig | None
    image_token_id: int | None
    video_token_id: int | None
    audio_token_id: int | None
    boi_token_id: int | None
    eoi_token_id: int | None
    boa_token_id: int | None
    eoa_token_id: int | None
    eos_token_ids: tuple[int, ...]
    raw: dict = field(repr=False, compare=False, default_factory=dict)


def _rope(raw: dict | None, *, where: str, default_theta: float) -> RopeConfig:
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise EngineError(f"config.json: {where} must be an object with rope_type and rope_theta, got {raw!r}")
    rope_type = raw.get("rope_type", "default")
    if rope_type not in ("default", "proportional"):
        raise EngineError(f"config.json: {where}.rope_type {rope_type!r} is not supported")
    return RopeConfig(
        theta=_float(raw, "rope_theta", default_theta, where=where, positive=True),
        partial_rotary_factor=_float(raw, "partial_rotary_factor", 1.0, where=where, positive=True, maximum=1.0),
        factor=_float(raw, "factor", 1.0, where=where, positive=True),
        proportional=rope_type == "proportional",
    )


def _eos_ids(value: Any, *, where: str) -> tuple[int, ...]:
    if value is None:
        return ()
    ids = value if isinstance(value, list) else [value]
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise EngineError(f"config.json: {where}.eos_token_id must be an id or a list of ids, got {value!r}")
    return tuple(ids)


def _full_layer_override(raw: dict, layer_types: list[str], key: str) -> Any:
    """`save_pretrained` may move the full-layer sizes into `per_layer_config`; read them back."""
    per_layer = raw.get("per_layer_config") or {}
    for index, kind in enumerate(layer_types):
        if kind == FULL:
            entry = per_layer.get(str(index), per_layer.get(index)) if isinstance(per_layer, dict) else None
            if isinstance(entry, dict) and key in entry:
                return entry[key]
    return None


def _check_activation(raw: dict, key: str, built: str, where: str) -> None:
    """The towers compute one activation; a config naming another describes a model they are not."""
    named = raw.get(key, built)
    if named != built:
        raise EngineError(f"config.json: {where}.{key} = {named!r} is not supported (Gemma 4 uses {built!r})")


def parse_text_config(raw: dict) -> TextConfig:
    where = "text_config"
    _check_activation(raw, "hidden_activation", "gelu_pytorch_tanh", where)
    layers = _int(raw, "num_hidden_layers", where=where, maximum=_MAX_LAYERS)
    layer_types = raw.get("layer_types")
    if layer_types is None:
        layer_types = [FULL if (i + 1) % 6 == 0 else SLIDING for i in range(layers)]
    if not isinstance(layer_types, list) or len(layer_types) != layers:
        raise EngineError(f"config.json: {where}.layer_types must list one type for each of the {layers} layers")
    unknown = sorted({t for t in layer_types if t not in (SLIDING, FULL)})
    if unknown:
        raise EngineError(f"config.json: {where}.layer_types has unsupported types {unknown}")
    layer_types = list(layer_types)
    layer_types[-1] = FULL  # the reference forces the last layer to full attention

    rope = _section(raw, "rope_parameters", where=where)
    heads = _int(raw, "num_attention_heads", where=where)
    kv_heads = _int(raw, "num_key_value_heads", where=where)
    head_dim = _int(raw, "head_dim", where=where)
    global_head_dim = raw.get("global_head_dim") or _full_layer_override(raw, layer_types, "head_dim") or head_dim
    k_eq_v = bool(raw.get("attention_k_eq_v", False))
    global_kv = raw.get("num_global_key_value_heads") or _full_layer_override(
        raw, layer_types, "num_key_value_heads") or kv_heads
    moe = bool(raw.get("enable_moe_block", False))
    shared = _int(raw, "num_kv_shared_layers", 0, where=where, minimum=0, maximum=layers - 1)
    bidirectional = raw.get("use_bidirectional_attention")
    if bidirectional not in (None, "vision"):
        raise EngineError(f"config.json: {where}.use_bidirectional_attention = {bidirectional!r} is not supported")
    softcap = raw.get("final_logit_softcapping")

    config = TextConfig(
        vocab_size=_int(raw, "vocab_size", where=where, maximum=_MAX_VOCAB),
        hidden_size=_int(raw, "hidden_size", where=where),
        intermediate_size=_int(raw, "intermediate_size", where=where),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        global_head_dim=_int({"v": global_head_dim}, "v", where=f"{where}.global_head_dim"),
        num_global_key_value_heads=_int({"v": global_kv}, "v", where=f"{where}.num_global_key_value_heads"),
        layer_types=tuple(layer_types),
        sliding_window=_int(raw, "sliding_window", 512, where=where, maximum=1 << 24),
        rope_sliding=_rope(rope.get(SLIDING), where=f"{where}.rope_parameters.{SLIDING}", default_theta=10_000.0),
        rope_full=_rope(rope.get(FULL, {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                                       "rope_theta": 1_000_000.0}),
                        where=f"{where}.rope_parameters.{FULL}", default_theta=1_000_000.0),
        max_position_embeddings=_int(raw, "max_position_embeddings", 131_072, where=where, maximum=1 << 24),
        final_logit_softcapping=None if softcap is None else _float(raw, "final_logit_softcapping", 0.0, where=where),
        rms_norm_eps=_float(raw, "rms_norm_eps", 1e-6, where=where, positive=True),
        attention_k_eq_v=k_eq_v,
        num_kv_shared_layers=shared,
        use_double_wide_mlp=bool(raw.get("use_double_wide_mlp", False)),
        enable_moe_block=moe,
        num_experts=_int(raw, "num_experts", where=where, maximum=4096) if moe else 0,
        top_k_experts=_int(raw, "top_k_experts", where=where, maximum=4096) if moe else 0,
        moe_intermediate_size=_int(raw, "moe_intermediate_size", where=where) if moe else 0,
        hidden_size_per_layer_input=_int(raw, "hidden_size_per_layer_input", 0, where=where, minimum=0),
        vocab_size_per_layer_input=_int(raw, "vocab_size_per_layer_input", raw.get("vocab_size"), where=where,
                                        maximum=_MAX_VOCAB),
        use_bidirectional_attention=bidirectional,
        pad_token_id=_int(raw, "pad_token_id", 0, where=where, minimum=0, maximum=_MAX_VOCAB),
        bos_token_id=_int(raw, "bos_token_id", 2, where=where, minimum=0, maximum=_MAX_VOCAB),
        eos_token_ids=_eos_ids(raw.get("eos_token_id", 1), where=where),
    )
    _check_text_geometry(config)
    return config


def _check_text_geometry(c: TextConfig) -> None:
    for heads_name, kv in (("num_key_value_heads", c.num_key_value_heads),
                           ("num_global_key_value_heads", c.num_global_key_value_heads)):
        if c.num_attention_heads % kv:
            raise EngineError(
                f"config.json: num_attention_heads ({c.num_attention_heads}) is not a multiple of {heads_name} ({kv})"
            )
    if c.enable_moe_block and not 0 < c.top_k_experts <= c.num_experts:
        raise EngineError(f"config.json: top_k_experts ({c.top_k_experts}) must be in 1..num_experts ({c.num_experts})")
    for layer in range(c.num_hidden_layers):
        c.kv_producer(layer)  # raises when a shared layer type has no producer


def parse_vision_config(raw: dict) -> VisionConfig:
    where = "vision_config"
    _check_activation(raw, "hidden_activation", "gelu_pytorch_tanh", where)
    heads = _int(raw, "num_attention_heads", where=where)
    hidden = _int(raw, "hidden_size", where=where)
    return VisionConfig(
        hidden_size=hidden,
        intermediate_size=_int(raw, "intermediate_size", where=where),
        num_hidden_layers=_int(raw, "num_hidden_layers", where=where, maximum=_MAX_LAYERS),
        num_attention_heads=heads,
        num_key_value_heads=_int(raw, "num_key_value_heads", heads, where=where),
        head_dim=_int(raw, "head_dim", hidden // heads, where=where),
        rope_theta=_float(_section(raw, "rope_parameters", where=where), "rope_theta", 100.0,
                          where=f"{where}.rope_parameters", positive=True),
        pooling_kernel_size=_int(raw, "pooling_kernel_size", 3, where=where),
        patch_size=_int(raw, "patch_size", 16, where=where),
        position_embedding_size=_int(raw, "position_embedding_size", 10240, where=where),
        use_clipped_linears=bool(raw.get("use_clipped_linears", False)),
        standardize=bool(raw.get("standardize", False)),
        rms_norm_eps=_float(raw, "rms_norm_eps", 1e-6, where=where, positive=True),
        default_output_length=_int(raw, "default_output_length", 280, where=where),
    )


def parse_audio_config(raw: dict) -> AudioConfig:
    where = "audio_config"
    _check_activation(raw, "hidden_act", "silu", where)
    channels = raw.get("subsampling_conv_channels", [128, 32])
    if not (isinstance(channels, list) and len(channels) == 2 and all(isinstance(c, int) and c > 0 for c in channels)):
        raise EngineError(f"config.json: {where}.subsampling_conv_channels must be two positive integers")
    return AudioConfig(
        hidden_size=_int(raw, "hidden_size", 1024, where=where),
        num_hidden_layers=_int(raw, "num_hidden_layers", 12, where=where, maximum=_MAX_LAYERS),
        num_attention_heads=_int(raw, "num_attention_heads", 8, where=where),
        subsampling_conv_channels=tuple(channels),
        conv_kernel_size=_int(raw, "conv_kernel_size", 5, where=where),
        residual_weight=_float(raw, "residual_weight", 0.5, where=where),
        attention_chunk_size=_int(raw, "attention_chunk_size", 12, where=where),
        attention_context_left=_int(raw, "attention_context_left", 13, where=where),
        attention_context_right=_int(raw, "attention_context_right", 0, where=where, minimum=0),
        attention_logit_cap=_float(raw, "attention_logit_cap", 50.0, where=where, positive=True),
        attention_invalid_logits_value=_float(raw, "attention_invalid_logits_value", -1e9, where=where),
        use_clipped_linears=bool(raw.get("use_clipped_linears", True)),
        rms_norm_eps=_float(raw, "rms_norm_eps", 1e-6, where=where, positive=True),
        gradient_clipping=_float(raw, "gradient_clipping", 1e10, where=where, positive=True),
        output_proj_dims=_int(raw, "output_proj_dims", 1536, where=where),
    )


# Microscaling float formats: 4- or 8-bit float codes with an 8-bit power-of-two scale per 32 values and no
# biases. nvfp4 also needs a per-tensor global scale, which no MLX checkpoint layout carries yet.
FLOAT_CODED_MODES = {"mxfp4": (4, 32), "mxfp8": (8, 32)}


def _quant_spec(raw: Any, *, where: str, default: QuantSpec | None = None) -> QuantSpec:
    """A module's settings; an override names what differs from the default, except its mode, which is
    affine unless named (as MLX reads it: mlx-lm writes an mxfp4 model's 8-bit router without a mode)."""
    if not isinstance(raw, dict):
        raise EngineError(f"config.json: {where} must be an object with bits and group_size")
    bits = raw.get("bits", default.bits if default else None)
    group = raw.get("group_size", default.group_size if default else None)
    mode = raw.get("mode", "affine")
    if mode in FLOAT_CODED_MODES:
        if (bits, group) != FLOAT_CODED_MODES[mode]:
            expected_bits, expected_group = FLOAT_CODED_MODES[mode]
            raise EngineError(f"config.json: {where} in mode {mode} must have bits {expected_bits} and group_size "
                              f"{expected_group}, not {bits!r} and {group!r}")
        return QuantSpec(bits=bits, group_size=group, mode=mode)
    if mode != "affine":
        raise EngineError(f"config.json: {where}.mode = {mode!r} is not supported (affine, mxfp4 or mxfp8)")
    if bits not in (2, 3, 4, 5, 6, 8):
        raise EngineError(f"config.json: {where}.bits = {bits!r} is not supported (2, 3, 4, 5, 6 or 8)")
    if group not in (32, 64, 128):
        raise EngineError(f"config.json: {where}.group_size = {group!r} is not supported (32, 64 or 128)")
    return QuantSpec(bits=bits, group_size=group, mode=mode)


def _foreign_quant_method(raw: dict) -> str | None:
    """The method of a Hugging Face `quantization_config` (GPTQ, AWQ, FP8, bitsandbytes, ...); MLX blocks name none."""
    if "quant_method" in raw:
        return str(raw["quant_method"])
    if raw.get("load_in_4bit") or raw.get("load_in_8bit"):  # bitsandbytes configs older than quant_method
        return "bitsandbytes"
    return None


def parse_quantization(raw: dict | None) -> QuantConfig | None:
    if not raw:
        return None
    if not isinstance(raw, dict):
        raise EngineError("config.json: quantization must be an object with bits and group_size")
    method = _foreign_quant_method(raw)
    if method is not None:
        raise EngineError(f"config.json: quantization method {method!r} is not supported; use the bf16 build of this "
                          "model or an MLX 4-/8-bit build (`lantern convert` makes one from the bf16 build)")
    default = _quant_spec({k: raw[k] for k in ("bits", "group_size", "mode") if k in raw}, where="quantization")
    overrides: dict[str, QuantSpec | None] = {}
    for key, value in raw.items():
        if key in ("bits", "group_size", "mode"):
            continue
        if value is False:
            overrides[key] = None
        elif isinstance(value, dict):
            overrides[key] = _quant_spec(value, where=f"quantization.{key}", default=default)
        elif value is not True:
            raise EngineError(f"config.json: quantization.{key} must be an object or a boolean")
    return QuantConfig(default=default, overrides=overrides)


def parse_config(raw: dict) -> ModelConfig:
    if not isinstance(raw, dict):
        raise EngineError("config.json does not hold a JSON object")
    model_type = raw.get("model_type")
    if model_type == "gemma4":
        text_raw = raw.get("text_config")
        if not isinstance(text_raw, dict):
            raise EngineError("config.json: a gemma4 config needs a text_config object")
    elif model_type == "gemma4_text":
        text_raw = raw
    else:
        raise EngineError(
            f"config.json: model_type {model_type!r} is not supported; Lantern runs Gemma 4 models "
            "(model_type 'gemma4' or 'gemma4_text')"
        )
    text = parse_text_config(text_raw)
    vision_raw = raw.get("vision_config")
    audio_raw = raw.get("audio_config")
    eos = _eos_ids(raw.get("eos_token_id"), where="") or text.eos_token_ids

    def token(key: str, *fallbacks: str) -> int | None:
        for name in (key, *fallbacks):
            if raw.get(name) is not None:
                return _int(raw, name, where="config", minimum=0, maximum=_MAX_VOCAB)
        return None

    return ModelConfig(
        model_type=model_type,
        text=text,
        vision=parse_vision_config(vision_raw) if isinstance(vision_raw, dict) else None,
        audio=parse_audio_config(audio_raw) if isinstance(audio_raw, dict) else None,
        quantization=parse_quantization(raw.get("quantization") or raw.get("quantization_config")),
        image_token_id=token("image_token_id"),
        video_token_id=token("video_token_id"),
        audio_token_id=token("audio_token_id"),
        boi_token_id=token("boi_token_id"),
        eoi_token_id=token("eoi_token_id"),
        boa_token_id=token("boa_token_id"),
        eoa_token_id=token("eoa_token_id", "eoa_token_index"),
        eos_token_ids=eos,
        raw=raw,
    )


def read_config(folder: Path) -> ModelConfig:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise EngineError(f"{folder} is not a model folder: it has no config.json")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineError(f"{path} is not valid JSON: {exc}") from None
    return parse_config(raw)


# The released text configs, recognised by their geometry.
_VARIANTS = {
    "e2b": dict(hidden_size=1536, num_hidden_layers=35, enable_moe_block=False),
    "e4b": dict(hidden_size=2560, num_hidden_layers=42, enable_moe_block=False),
    "26b-a4b": dict(hidden_size=2816, num_hidden_layers=30, enable_moe_block=True),
    "31b": dict(hidden_size=5376, num_hidden_layers=60, enable_moe_block=False),
}


def detect_variant(text: TextConfig) -> str:
    for name, signature in _VARIANTS.items():
        if all(getattr(text, key) == value for key, value in signature.items()):
            return name
    return "custom"
