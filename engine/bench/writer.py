"""Writes a random, shape-true checkpoint in the MLX-community layout, one tensor at a time.

Every matrix is drawn N(0, 1/fan_in) in float32 and quantized with mx.quantize, so activations stay O(1),
logits stay finite and routing is near-uniform; norms and scalars are ones. Only one tensor (or one slice
of rows of a large table) is materialised at a time, and shards are flushed as they fill, so the peak is
bounded by the shard size, not the model size.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import mlx.core as mx

from ..config import parse_text_config

PREFIX = "language_model.model"
INDEX_FILE = "model.safetensors.index.json"
GROUP_SIZE = 64
ROUTER_BITS = 8
_ROWS_PER_SLICE_ELEMENTS = 1 << 26  # 256 MB of float32 per generated slice of a big table
_SHARD_BYTES = 2 << 30


@dataclass(frozen=True)
class TensorSpec:
    name: str          # module path without the .weight suffix for matrices; the full name for vectors
    shape: tuple[int, ...]
    matrix: bool       # quantized (and stored as weight/scales/biases) when the checkpoint is quantized
    bits_override: int | None = None


def _attention(layer: str, text, i: int) -> list[TensorSpec]:
    hd, heads, kv = text.layer_head_dim(i), text.num_attention_heads, text.layer_kv_heads(i)
    h = text.hidden_size
    specs = [TensorSpec(f"{layer}.self_attn.q_proj", (heads * hd, h), True),
             TensorSpec(f"{layer}.self_attn.o_proj", (h, heads * hd), True),
             TensorSpec(f"{layer}.self_attn.q_norm.weight", (hd,), False)]
    if not text.is_kv_consumer(i):
        specs += [TensorSpec(f"{layer}.self_attn.k_proj", (kv * hd, h), True),
                  TensorSpec(f"{layer}.self_attn.k_norm.weight", (hd,), False)]
        if text.has_value_proj(i):
            specs.append(TensorSpec(f"{layer}.self_attn.v_proj", (kv * hd, h), True))
    return specs


def _feed_forward(layer: str, text, i: int) -> list[TensorSpec]:
    h, w = text.hidden_size, text.mlp_width(i)
    specs = [TensorSpec(f"{layer}.mlp.gate_proj", (w, h), True), TensorSpec(f"{layer}.mlp.up_proj", (w, h), True),
             TensorSpec(f"{layer}.mlp.down_proj", (h, w), True)]
    if text.enable_moe_block:
        e, m = text.num_experts, text.moe_intermediate_size
        glu = f"{layer}.experts.switch_glu"
        specs += [TensorSpec(f"{glu}.gate_proj", (e, m, h), True), TensorSpec(f"{glu}.up_proj", (e, m, h), True),
                  TensorSpec(f"{glu}.down_proj", (e, h, m), True),
                  TensorSpec(f"{layer}.router.proj", (e, h), True, ROUTER_BITS),
                  TensorSpec(f"{layer}.router.scale", (h,), False),
                  TensorSpec(f"{layer}.router.per_expert_scale", (e,), False)]
        specs += [TensorSpec(f"{layer}.{norm}.weight", (h,), False) for norm in
                  ("post_feedforward_layernorm_1", "post_feedforward_layernorm_2", "pre_feedforward_layernorm_2")]
    return specs


def _layer(text, i: int) -> list[TensorSpec]:
    layer, h = f"{PREFIX}.layers.{i}", text.hidden_size
    specs = _attention(layer, text, i) + _feed_forward(layer, text, i)
    specs += [TensorSpec(f"{layer}.{norm}.weight", (h,), False) for norm in
              ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
               "post_feedforward_layernorm")]
    specs.append(TensorSpec(f"{layer}.layer_scalar", (1,), False))
    if text.has_ple:
        p = text.hidden_size_per_layer_input
        specs += [TensorSpec(f"{layer}.per_layer_input_gate", (p, h), True),
                  TensorSpec(f"{layer}.per_layer_projection", (h, p), True),
                  TensorSpec(f"{layer}.post_per_layer_input_norm.weight", (h,), False)]
    return specs


def tensor_plan(text_raw: dict) -> list[TensorSpec]:
    """Every tensor of the text model, in the order it is written."""
    text = parse_text_config(text_raw)
    h, v = text.hidden_size, text.vocab_size
    specs = [TensorSpec(f"{PREFIX}.embed_tokens", (v, h), True), TensorSpec(f"{PREFIX}.norm.weight", (h,), False)]
    if text.has_ple:
        width = text.num_hidden_layers * text.hidden_size_per_layer_input
        specs += [TensorSpec(f"{PREFIX}.embed_tokens_per_layer", (text.vocab_size_per_layer_input, width), True),
                  TensorSpec(f"{PREFIX}.per_layer_model_projection", (width, h), True),
                  TensorSpec(f"{PREFIX}.per_layer_projection_norm.weight",
                             (text.hidden_size_per_layer_input,), False)]
    for i in range(text.num_hidden_layers):
        specs += _layer(text, i)
    return specs


def _random_rows(shape: tuple[int, ...], rows: slice) -> mx.array:
    fan_in = shape[-1]
    return mx.random.normal((rows.stop - rows.start, *shape[1:])) * (fan_in ** -0.5)


def _row_slices(shape: tuple[int, ...]) -> Iterator[slice]:
    per_row = math.prod(shape[1:])
    step = max(1, _ROWS_PER_SLICE_ELEMENTS // per_row)
    for start in range(0, shape[0], step):
        yield slice(start, min(start + step, shape[0]))


def _materialise(spec: TensorSpec, bits: int | None, dtype: mx.Dtype) -> dict[str, mx.array]:
    if not spec.matrix:
        return {spec.name: mx.ones(spec.shape, dtype=dtype)}
    if bits is None:
        parts = [_random_rows(spec.shape, rows).astype(dtype) for rows in _row_slices(spec.shape)]
        return {f"{spec.name}.weight": mx.concatenate(parts) if len(parts) > 1 else parts[0]}
    spec_bits = spec.bits_override or bits
    pieces: dict[str, list[mx.array]] = {"weight": [], "scales": [], "biases": []}
    for rows in _row_slices(spec.shape):
        codes, scales, biases = mx.quantize(_random_rows(spec.shape, rows), group_size=GROUP_SIZE, bits=spec_bits)
        mx.eval(codes, scales, biases)  # bound the live float32 slice
        pieces["weight"].append(codes)
        pieces["scales"].append(scales.astype(dtype))
        pieces["biases"].append(biases.astype(dtype))
    return {f"{spec.name}.{leaf}": mx.concatenate(parts) if len(parts) > 1 else parts[0]
            for leaf, parts in pieces.items()}


def _quantization_block(plan: list[TensorSpec], bits: int) -> dict:
    block: dict = {"group_size": GROUP_SIZE, "bits": bits, "mode": "affine"}
    for spec in plan:
        if spec.bits_override:
            block[spec.name] = {"group_size": GROUP_SIZE, "bits": spec.bits_override}
    return block


def model_config(text_raw: dict, plan: list[TensorSpec], bits: int | None, dtype: mx.Dtype) -> dict:
    """A text-only top-level gemma4 config; both engines read the vocabulary from it."""
    config = {"architectures": ["Gemma4ForConditionalGeneration"], "model_type": "gemma4",
              "text_config": dict(text_raw, dtype=str(dtype).split(".")[-1]), "vocab_size": text_raw["vocab_size"],
              "eos_token_id": [text_raw["eos_token_id"]], "tie_word_embeddings": True, "audio_config": None,
              "vision_config": None}
    if bits is not None:
        config["quantization"] = _quantization_block(plan, bits)
    return config


def _flush(folder: Path, shard: dict[str, mx.array], number: int) -> str:
    name = f"model-{number:05d}.safetensors"  # mlx-lm globs model*.safetensors
    mx.save_safetensors(str(folder / name), shard, metadata={"format": "mlx"})
    return name


def write_checkpoint(folder: Path, text_raw: dict, bits: int | None, dtype: mx.Dtype = mx.bfloat16,
                     seed: int = 0) -> int:
    """Write config.json, the shards and their index; return the bytes of weights written."""
    folder.mkdir(parents=True, exist_ok=True)
    mx.random.seed(seed)
    plan = tensor_plan(text_raw)
    weight_map: dict[str, str] = {}
    shard: dict[str, mx.array] = {}
    shard_bytes = total = 0
    for spec in plan:
        tensors = _materialise(spec, bits, dtype)
        mx.eval(list(tensors.values()))
        shard.update(tensors)
        size = sum(t.nbytes for t in tensors.values())
        shard_bytes, total = shard_bytes + size, total + size
        if shard_bytes >= _SHARD_BYTES:
            name = _flush(folder, shard, len(set(weight_map.values())) + 1)
            weight_map.update(dict.fromkeys(shard, name))
            shard, shard_bytes = {}, 0
    if shard:
        name = _flush(folder, shard, len(set(weight_map.values())) + 1)
        weight_map.update(dict.fromkeys(shard, name))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=1, sort_keys=True))
    (folder / "config.json").write_text(json.dumps(model_config(text_raw, plan, bits, dtype), indent=1))
    return total
