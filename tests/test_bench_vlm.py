"""`python -m engine.bench --vlm` on a tiny checkpoint with both towers: ours against mlx-vlm where it runs."""

import json

import pytest

from engine.bench.__main__ import main
from engine.bench.variants import VISION_LARGE, VISION_SMALL, media_config
from engine.bench.vlm import mlx_vlm_missing
from engine.bench.writer import checkpoint_plan
from engine.bench.variants import text_config


def test_image_and_audio_cells_append_a_json_line(tmp_path):
    results = tmp_path / "vlm.jsonl"
    main(["--tiny", "--vlm", "--variant", "e2b", "--layers", "5", "--out", str(tmp_path / "models"),
          "--budgets", "70", "--clips", "1", "--json", str(results)])
    record = json.loads(results.read_text().splitlines()[-1])
    (image,), (audio,) = record["images"], record["audio"]
    assert image["budget"] == 70 and 0 < image["soft_tokens"] <= 70
    assert image["prompt_tokens"] == image["soft_tokens"] + 2 + 24
    assert audio["audio_tokens"] == 25  # 25 tokens per second
    assert image["ours"]["vision_encoder_s"] > 0 and image["ours"]["image_ttft_s"] > 0
    assert audio["ours"]["audio_encoder_s"] > 0
    if mlx_vlm_missing() is not None:
        pytest.skip(f"only our side ran: {record['mlx_vlm']}")
    assert image["image_features_rel_diff"] <= 1e-4 and image["first_token_equal"]
    assert audio["audio_features_rel_diff"] <= 1e-4
    assert image["mlx_vlm"]["vision_encoder_s"] > 0 and audio["mlx_vlm"]["audio_encoder_s"] > 0


@pytest.mark.parametrize("variant, vision, audio", [("e2b", VISION_SMALL, True), ("31b", VISION_LARGE, False)])
def test_tower_plans_have_the_real_shapes(variant, vision, audio):
    media = media_config(variant)
    names = {spec.float_key: spec.shape for spec in checkpoint_plan(text_config(variant, 6), media)}
    hidden, layers = vision["hidden_size"], vision["num_hidden_layers"]
    assert names["vision_tower.patch_embedder.position_embedding_table"] == (2, 10240, hidden)
    assert names[f"vision_tower.encoder.layers.{layers - 1}.mlp.gate_proj.linear.weight"] == \
        (vision["intermediate_size"], hidden)
    assert f"vision_tower.encoder.layers.{layers}.input_layernorm.weight" not in names
    assert ("vision_tower.encoder.layers.0.self_attn.q_proj.input_min" in names) == vision["use_clipped_linears"]
    assert ("vision_tower.std_bias" in names) == vision["standardize"]
    assert ("audio_tower.layers.11.lconv1d.depthwise_conv1d.weight" in names) == audio
    if audio:
        assert names["audio_tower.subsample_conv_projection.layer1.conv.weight"] == (32, 3, 3, 128)
        assert names["embed_audio.embedding_projection.weight"] == (1536, 1536)
