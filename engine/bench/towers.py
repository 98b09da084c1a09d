"""Tensor plans of the vision and audio towers and their embedders, in the MLX-community layout.

Names and shapes follow gemma4-architecture.md §8 (convolutions in MLX layout). Towers and `embed_vision`
stay unquantized as mlx-vlm's converter leaves them; `embed_audio` is kept unquantized too, so a tower's
cost never depends on which engine quantizes what.
"""

from __future__ import annotations

from .specs import TensorSpec, constant, float_matrix, norm, post_norm, vector

CLIP_BOUND = 10.0  # clip bounds a random activation crosses now and then, so the clamps do work
PER_DIM_SCALE_JITTER = 0.25  # per_dim_scale around 0: softplus(0) = ln 2 is the untrained query scale


def _clippable(module: str, shape: tuple[int, int], clipped: bool) -> list[TensorSpec]:
    specs = [float_matrix(f"{module}.linear.weight", shape)]
    if clipped:
        specs += [constant(f"{module}.input_min", -CLIP_BOUND), constant(f"{module}.input_max", CLIP_BOUND),
                  constant(f"{module}.output_min", -CLIP_BOUND), constant(f"{module}.output_max", CLIP_BOUND)]
    return specs


def _embedder(name: str, width: int, text_hidden: int) -> list[TensorSpec]:
    return [float_matrix(f"{name}.embedding_projection.weight", (text_hidden, width))]


def _vision_layer(prefix: str, v: dict) -> list[TensorSpec]:
    h, inner, clipped = v["hidden_size"], v["intermediate_size"], v["use_clipped_linears"]
    attn_width = v["num_attention_heads"] * v["head_dim"]
    kv_width = v["num_key_value_heads"] * v["head_dim"]
    specs = _clippable(f"{prefix}.self_attn.q_proj", (attn_width, h), clipped)
    specs += _clippable(f"{prefix}.self_attn.k_proj", (kv_width, h), clipped)
    specs += _clippable(f"{prefix}.self_attn.v_proj", (kv_width, h), clipped)
    specs += _clippable(f"{prefix}.self_attn.o_proj", (h, attn_width), clipped)
    specs += [norm(f"{prefix}.self_attn.q_norm.weight", v["head_dim"]),
              norm(f"{prefix}.self_attn.k_norm.weight", v["head_dim"])]
    specs += _clippable(f"{prefix}.mlp.gate_proj", (inner, h), clipped)
    specs += _clippable(f"{prefix}.mlp.up_proj", (inner, h), clipped)
    specs += _clippable(f"{prefix}.mlp.down_proj", (h, inner), clipped)
    specs += [norm(f"{prefix}.input_layernorm.weight", h), norm(f"{prefix}.pre_feedforward_layernorm.weight", h),
              post_norm(f"{prefix}.post_attention_layernorm.weight", h),
              post_norm(f"{prefix}.post_feedforward_layernorm.weight", h)]
    return specs


def vision_plan(v: dict, text_hidden: int) -> list[TensorSpec]:
    h, patch = v["hidden_size"], v["patch_size"]
    specs = [float_matrix("vision_tower.patch_embedder.input_proj.weight", (h, 3 * patch * patch)),
             float_matrix("vision_tower.patch_embedder.position_embedding_table",
                          (2, v["position_embedding_size"], h), fan_in=1)]
    for i in range(v["num_hidden_layers"]):
        specs += _vision_layer(f"vision_tower.encoder.layers.{i}", v)
    if v["standardize"]:
        specs += [vector("vision_tower.std_bias", (h,), 0.0, 0.5), vector("vision_tower.std_scale", (h,), 1.0, 0.25)]
    return specs + _embedder("embed_vision", h, text_hidden)


def _audio_feed_forward(prefix: str, h: int) -> list[TensorSpec]:
    return (_clippable(f"{prefix}.ffw_layer_1", (4 * h, h), True)
            + _clippable(f"{prefix}.ffw_layer_2", (h, 4 * h), True)
            + [norm(f"{prefix}.pre_layer_norm.weight", h), post_norm(f"{prefix}.post_layer_norm.weight", h)])


def _audio_layer(prefix: str, a: dict) -> list[TensorSpec]:
    h, kernel = a["hidden_size"], a["conv_kernel_size"]
    specs = _audio_feed_forward(f"{prefix}.feed_forward1", h) + _audio_feed_forward(f"{prefix}.feed_forward2", h)
    for proj in ("q_proj", "k_proj", "v_proj", "post"):
        specs += _clippable(f"{prefix}.self_attn.{proj}", (h, h), True)
    specs += [float_matrix(f"{prefix}.self_attn.relative_k_proj.weight", (h, h)),
              vector(f"{prefix}.self_attn.per_dim_scale", (h // a["num_attention_heads"],), 0.0, PER_DIM_SCALE_JITTER)]
    specs += _clippable(f"{prefix}.lconv1d.linear_start", (2 * h, h), True)
    specs += _clippable(f"{prefix}.lconv1d.linear_end", (h, h), True)
    specs += [float_matrix(f"{prefix}.lconv1d.depthwise_conv1d.weight", (h, kernel, 1), fan_in=kernel),
              norm(f"{prefix}.lconv1d.pre_layer_norm.weight", h), norm(f"{prefix}.lconv1d.conv_norm.weight", h)]
    specs += [norm(f"{prefix}.norm_pre_attn.weight", h), post_norm(f"{prefix}.norm_post_attn.weight", h),
              norm(f"{prefix}.norm_out.weight", h)]
    return specs


def audio_plan(a: dict, text_hidden: int) -> list[TensorSpec]:
    h, (c0, c1), out = a["hidden_size"], a["subsampling_conv_channels"], a["output_proj_dims"]
    sub = "audio_tower.subsample_conv_projection"
    freq_after = 128 // 4  # 128 mel bins, halved by each of the two stride-2 convolutions
    specs = [float_matrix(f"{sub}.layer0.conv.weight", (c0, 3, 3, 1), fan_in=9),
             norm(f"{sub}.layer0.norm.weight", c0),
             float_matrix(f"{sub}.layer1.conv.weight", (c1, 3, 3, c0), fan_in=9 * c0),
             norm(f"{sub}.layer1.norm.weight", c1),
             float_matrix(f"{sub}.input_proj_linear.weight", (h, c1 * freq_after))]
    for i in range(a["num_hidden_layers"]):
        specs += _audio_layer(f"audio_tower.layers.{i}", a)
    specs += [float_matrix("audio_tower.output_proj.weight", (out, h)),
              vector("audio_tower.output_proj.bias", (out,), 0.0, 0.1)]
    return specs + _embedder("embed_audio", out, text_hidden)
