"""Writes a random, shape-true checkpoint in the MLX-community layout, one tensor at a time.

Every matrix is drawn N(0, 1/fan_in) in float32 (and quantized with mx.quantize where the checkpoint is), so
activations stay O(1), logits stay finite and routing is near-uniform. Norm weights and scalars are drawn
around per-role levels (specs.py) so greedy decoding does not collapse onto one token. Only one tensor (or
one slice of rows of a large table) is materialised at a time, and shards are flushed as they fill, so the
peak is bounded by the shard size, not the model size.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterator

import mlx.core as mx

from ..config import parse_text_config
from .specs import CONSTANT, FINAL_NORM_LEVEL, MATRIX, JITTER, TensorSpec, matrix, norm, post_norm, vector
from .towers import audio_plan, vision_plan

PREFIX = "language_model.model"
INDEX_FILE = "model.safetensors.index.json"
GROUP_SIZE = 64
ROUTER_BITS = 8
_ROWS_PER_SLICE_ELEMENTS = 1 << 26  # 256 MB of float32 per generated slice of a big table
_SHARD_BYTES = 2 << 30


def _qk_level(head_dim: int) -> float:
    """q/k norm weights of head_dim^-1/4: attention scores (scale 1) of unit spread, as trained models have.

    With weights of 1 the scores spread by sqrt(head_dim), softmax picks single keys, and deep random
    models turn chaotic: a 1e-6 change of one weight moved a 60-layer skeleton's logits by 22%, so
    no logits gate could compare two engines on them.
    """
    return head_dim ** -0.25


def _attention(layer: str, text, i: int) -> list[TensorSpec]:
    hd, heads, kv = text.layer_head_dim(i), text.num_attention_heads, text.layer_kv_heads(i)
    h = text.hidden_size
    specs = [matrix(f"{layer}.self_attn.q_proj", (heads * hd, h)), matrix(f"{layer}.self_attn.o_proj", (h, heads * hd)),
             norm(f"{layer}.self_attn.q_norm.weight", hd, _qk_level(hd))]
    if not text.is_kv_consumer(i):
        specs += [matrix(f"{layer}.self_attn.k_proj", (kv * hd, h)),
                  norm(f"{layer}.self_attn.k_norm.weight", hd, _qk_level(hd))]
        if text.has_value_proj(i):
            specs.append(matrix(f"{layer}.self_attn.v_proj", (kv * hd, h)))
    return specs


def _feed_forward(layer: str, text, i: int) -> list[TensorSpec]:
    h, w = text.hidden_size, text.mlp_width(i)
    specs = [matrix(f"{layer}.mlp.gate_proj", (w, h)), matrix(f"{layer}.mlp.up_proj", (w, h)),
             matrix(f"{layer}.mlp.down_proj", (h, w))]
    if text.enable_moe_block:
        e, m = text.num_experts, text.moe_intermediate_size
        glu = f"{layer}.experts.switch_glu"
        specs += [matrix(f"{glu}.gate_proj", (e, m, h)), matrix(f"{glu}.up_proj", (e, m, h)),
                  matrix(f"{glu}.down_proj", (e, h, m)), matrix(f"{layer}.router.proj", (e, h), ROUTER_BITS),
                  norm(f"{layer}.router.scale", h), norm(f"{layer}.router.per_expert_scale", e),
                  post_norm(f"{layer}.post_feedforward_layernorm_1.weight", h),
                  post_norm(f"{layer}.post_feedforward_layernorm_2.weight", h),
                  norm(f"{layer}.pre_feedforward_layernorm_2.weight", h)]
    return specs


def _layer(text, i: int) -> list[TensorSpec]:
    layer, h = f"{PREFIX}.layers.{i}", text.hidden_size
    specs = _attention(layer, text, i) + _feed_forward(layer, text, i)
    specs += [norm(f"{layer}.input_layernorm.weight", h), norm(f"{layer}.pre_feedforward_layernorm.weight", h),
              post_norm(f"{layer}.post_attention_layernorm.weight", h),
              post_norm(f"{layer}.post_feedforward_layernorm.weight", h),
              vector(f"{layer}.layer_scalar", (1,), 1.0, JITTER)]
    if text.has_ple:
        p = text.hidden_size_per_layer_input
        specs += [matrix(f"{layer}.per_layer_input_gate", (p, h)), matrix(f"{layer}.per_layer_projection", (h, p)),
                  post_norm(f"{layer}.post_per_layer_input_norm.weight", h)]
    return specs


def tensor_plan(text_raw: dict) -> list[TensorSpec]:
    """Every tensor of the text model, in the order it is written."""
    text = parse_text_config(text_raw)
    h, v = text.hidden_size, text.vocab_size
    specs = [matrix(f"{PREFIX}.embed_tokens", (v, h)), norm(f"{PREFIX}.norm.weight", h, FINAL_NORM_LEVEL)]
    if text.has_ple:
        width = text.num_hidden_layers * text.hidden_size_per_layer_input
        specs += [matrix(f"{PREFIX}.embed_tokens_per_layer", (text.vocab_size_per_layer_input, width)),
                  matrix(f"{PREFIX}.per_layer_model_projection", (width, h)),
                  norm(f"{PREFIX}.per_layer_projection_norm.weight", text.hidden_size_per_layer_input)]
    for i in range(text.num_hidden_layers):
        specs += _layer(text, i)
    return specs


def checkpoint_plan(text_raw: dict, media: dict | None = None) -> list[TensorSpec]:
    """The text plan plus the towers that `media` (vision_config / audio_config) describes."""
    plan = tensor_plan(text_raw)
    hidden = text_raw["hidden_size"]
    if media and media.get("vision_config"):
        plan += vision_plan(media["vision_config"], hidden)
    if media and media.get("audio_config"):
        plan += audio_plan(media["audio_config"], hidden)
    return plan


def _random_rows(spec: TensorSpec, rows: slice) -> mx.array:
    fan_in = spec.fan_in or spec.shape[-1]
    return mx.random.normal((rows.stop - rows.start, *spec.shape[1:])) * (fan_in ** -0.5)


def _row_slices(shape: tuple[int, ...]) -> Iterator[slice]:
    if not shape:
        yield slice(0, 1)
        return
    per_row = math.prod(shape[1:])
    step = max(1, _ROWS_PER_SLICE_ELEMENTS // per_row)
    for start in range(0, shape[0], step):
        yield slice(start, min(start + step, shape[0]))


def _joined(parts: list[mx.array]) -> mx.array:
    return mx.concatenate(parts) if len(parts) > 1 else parts[0]


def _materialise(spec: TensorSpec, bits: int | None, dtype: mx.Dtype) -> dict[str, mx.array]:
    if spec.kind == CONSTANT:
        return {spec.name: mx.full(spec.shape, spec.value, dtype=dtype)}
    if spec.kind != MATRIX:
        spread = mx.random.uniform(-1.0, 1.0, spec.shape) * spec.jitter
        return {spec.name: (spread + spec.value).astype(dtype)}
    if bits is None or not spec.quantizable:
        return {spec.float_key: _joined([_random_rows(spec, rows).astype(dtype) for rows in _row_slices(spec.shape)])}
    spec_bits = spec.bits_override or bits
    pieces: dict[str, list[mx.array]] = {"weight": [], "scales": [], "biases": []}
    for rows in _row_slices(spec.shape):
        codes, scales, biases = mx.quantize(_random_rows(spec, rows), group_size=GROUP_SIZE, bits=spec_bits)
        mx.eval(codes, scales, biases)  # bound the live float32 slice
        pieces["weight"].append(codes)
        pieces["scales"].append(scales.astype(dtype))
        pieces["biases"].append(biases.astype(dtype))
    return {f"{spec.name}.{leaf}": _joined(parts) for leaf, parts in pieces.items()}


def _quantization_block(plan: list[TensorSpec], bits: int) -> dict:
    block: dict = {"group_size": GROUP_SIZE, "bits": bits, "mode": "affine"}
    for spec in plan:
        if spec.bits_override:
            block[spec.name] = {"group_size": GROUP_SIZE, "bits": spec.bits_override}
    return block


def model_config(text_raw: dict, plan: list[TensorSpec], bits: int | None, dtype: mx.Dtype,
                 media: dict | None = None) -> dict:
    """A top-level gemma4 config (text-only unless `media` adds towers and their token ids)."""
    config = {"architectures": ["Gemma4ForConditionalGeneration"], "model_type": "gemma4",
              "text_config": dict(text_raw, dtype=str(dtype).split(".")[-1]), "vocab_size": text_raw["vocab_size"],
              "eos_token_id": [text_raw["eos_token_id"]], "tie_word_embeddings": True, "audio_config": None,
              "vision_config": None, **(media or {})}
    if bits is not None:
        config["quantization"] = _quantization_block(plan, bits)
    return config


def _flush(folder: Path, shard: dict[str, mx.array], number: int) -> str:
    name = f"model-{number:05d}.safetensors"  # mlx-lm globs model*.safetensors
    mx.save_safetensors(str(folder / name), shard, metadata={"format": "mlx"})
    return name


def write_checkpoint(folder: Path, text_raw: dict, bits: int | None, dtype: mx.Dtype = mx.bfloat16,
                     seed: int = 0, media: dict | None = None) -> int:
    """Write config.json, the shards and their index; return the bytes of weights written."""
    folder.mkdir(parents=True, exist_ok=True)
    mx.random.seed(seed)
    plan = checkpoint_plan(text_raw, media)
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
    config = model_config(text_raw, plan, bits, dtype, media)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    return total
