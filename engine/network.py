"""The whole Gemma 4 module tree, named exactly like the canonical (MLX-community) checkpoint keys."""

from __future__ import annotations

import mlx.nn as nn

from .config import ModelConfig
from .multimodal_embedder import MultimodalEmbedder
from .text_model import TextModel


class LanguageModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.model = TextModel(config.text)


class Gemma4Network(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        text_hidden = config.text.hidden_size
        self.language_model = LanguageModel(config)
        if config.vision is not None:
            from .vision.tower import VisionTower

            self.vision_tower = VisionTower(config.vision)
            self.embed_vision = MultimodalEmbedder(config.vision.hidden_size, text_hidden, config.vision.rms_norm_eps)
        if config.audio is not None:
            from .audio.tower import AudioTower

            self.audio_tower = AudioTower(config.audio)
            self.embed_audio = MultimodalEmbedder(config.audio.output_proj_dims, text_hidden, config.audio.rms_norm_eps)

    @property
    def text(self) -> TextModel:
        return self.language_model.model
