"""The public Model: what `engine.load` returns (see shared/reference/engine-api.md)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import mlx.core as mx
import numpy as np

from .config import ModelConfig, detect_variant
from .decode_step import DecodeStep
from .errors import EngineError
from .fused import on_main_thread
from .network import Gemma4Network
from .quantized import float_type


# Downloads carry these with the tokenizer; a folder with any of them is meant for chat.
_CHAT_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


@dataclass(frozen=True)
class ModelInfo:
    variant: str                      # "e2b" | "e4b" | "26b-a4b" | "31b" | "custom"
    modalities: frozenset[str]        # subset of {"text", "image", "audio", "video"}
    context_length: int
    parameter_count: int
    weight_bytes: int
    quantization: tuple[int, int] | None  # (bits, group size) of the bulk of the weights


def default_compute_dtype(net: Gemma4Network) -> mx.Dtype:
    """float32 on the CPU (its bf16 matmuls are far slower); the weights' own float type elsewhere."""
    if mx.default_device() == mx.cpu:
        return mx.float32
    stored = float_type(net.text.embed_tokens, fallback=mx.bfloat16)  # float codes come from bf16 models
    return stored if stored in (mx.float16, mx.bfloat16, mx.float32) else mx.float32


def _modalities(config: ModelConfig) -> frozenset[str]:
    found = {"text"}
    if config.vision is not None:
        found |= {"image", "video"}
    if config.audio is not None:
        found.add("audio")
    return frozenset(found)


class Model:
    def __init__(self, folder: Path, config: ModelConfig, net: Gemma4Network, *, weight_bytes: int,
                 parameter_count: int, dtype: mx.Dtype | None = None):
        self.folder = folder
        self.config = config
        self.net = net
        self.dtype = dtype or default_compute_dtype(net)
        self._image_cache = None
        self._decode_step = None
        self._thread = threading.get_ident()
        self._tokenizer = None
        self._template = None
        quant = config.quantization
        self.info = ModelInfo(
            variant=detect_variant(config.text),
            modalities=_modalities(config),
            context_length=config.text.max_position_embeddings,
            parameter_count=parameter_count,
            weight_bytes=weight_bytes,
            quantization=(quant.default.bits, quant.default.group_size) if quant else None,
        )

    def warm_up(self, progress=None, cancel: threading.Event | None = None) -> None:
        """Read every weight from disk (reporting progress, stoppable) and run one token through the model,
        so the first real turn starts at full speed."""
        self.check_thread()
        modules = [*self.net.text.layers, self.net.text]
        modules += [getattr(self.net, name) for name in ("vision_tower", "embed_vision", "audio_tower", "embed_audio")
                    if name in self.net]
        for done, module in enumerate(modules):
            if cancel is not None and cancel.is_set():
                raise EngineError("loading was cancelled")
            if progress:
                progress("reading weights", done / len(modules))
            mx.eval(module.parameters())
        self._run_first_token()
        if progress:
            progress("ready", 1.0)

    def _run_first_token(self) -> None:
        """One prompt token and one decode step, so the step is compiled before the first real turn."""
        text = self.net.text
        caches = text.make_caches()
        ids = mx.array([[self.config.text.bos_token_id]])
        mx.eval(text.next_token_logits(ids, caches, 0, self.dtype))
        if on_main_thread():
            mx.eval(self.decode_step(ids[0], caches))

    def decode_step(self, token: mx.array, caches: list) -> mx.array:
        """The logits after `token`, advancing `caches` by one position, as one compiled graph (main thread)."""
        if self._decode_step is None:
            self._decode_step = DecodeStep(self.net.text, self.dtype)
        return self._decode_step(token, caches)

    def check_thread(self) -> None:
        """MLX runs a thread's work on that thread's streams, and the lazily loaded weights belong to the
        loading thread: a model must be loaded and used on one thread (the app's engine thread)."""
        if threading.get_ident() != self._thread:
            raise EngineError("this model can only be used on the thread that loaded it; load and run it on "
                              "one thread, and call engine.finish_thread() last on it if it is a worker thread")

    # -- media -----------------------------------------------------------------------------------

    def require(self, modality: str) -> None:
        if modality not in self.info.modalities:
            tower = {"image": "vision", "video": "vision"}.get(modality, modality)
            advice = " Use Gemma 4 E2B or E4B for audio." if modality == "audio" else ""
            raise EngineError(f"this model ({self.info.variant}) has no {tower} tower, so it cannot take "
                              f"{modality}.{advice}")

    def encode_images(self, images, budget: int = 280) -> list[mx.array]:
        """Soft tokens for each image (a PIL image, or an (image, budget) pair with its own budget); an
        image seen before at its budget is not encoded again."""
        from . import vision
        from .media import budgeted_images

        self.require("image")
        self.check_thread()
        if self._image_cache is None:
            self._image_cache = vision.FeatureCache()
        pairs = budgeted_images(images, budget)
        features: list[mx.array | None] = [None] * len(pairs)
        for each_budget in sorted({b for _, b in pairs}):
            chosen = [i for i, (_, b) in enumerate(pairs) if b == each_budget]
            encoded = vision.encode_images(self.net.vision_tower, self.net.embed_vision,
                                           [pairs[i][0] for i in chosen], each_budget, cache=self._image_cache)
            for index, rows in zip(chosen, encoded):
                features[index] = rows
        return features

    def embed_image(self, image, budget: int = 280) -> mx.array:
        """PIL image -> (N, text hidden) float32 soft tokens (preprocessing included)."""
        return self.encode_images([image], budget)[0]

    def embed_audio(self, waveform, sample_rate: int) -> mx.array:
        """Mono or (samples, channels) audio at any rate (30 s at most) -> (N, text hidden) float32."""
        from .audio.encode import encode_audio

        self.require("audio")
        self.check_thread()
        return encode_audio(self.net.audio_tower, self.net.embed_audio, np.asarray(waveform), sample_rate)

    def image_token_count(self, image, budget: int = 280) -> int:
        from .vision import soft_token_count
        from .vision.image_io import upright_size

        return soft_token_count(*upright_size(image), budget)

    def audio_token_count(self, waveform, sample_rate: int) -> int:
        from .audio.clips import token_count_at_rate

        return token_count_at_rate(len(np.asarray(waveform)), sample_rate)

    @property
    def stop_ids(self) -> list[int]:
        """Every end-of-sequence id the config and generation_config name (`<turn|>` among them)."""
        from .sampling import generation_stop_ids

        return sorted({*self.config.eos_token_ids, *generation_stop_ids(self.folder)})

    def generate_ids(self, input_ids, max_tokens: int = 64, temperature: float = 0.0, images=None, audio=None,
                     image_budget: int = 280, *, videos=None, video_budget: int = 70, top_p: float | None = None,
                     top_k: int | None = None, min_p: float | None = None, repetition_penalty: float | None = None,
                     seed: int | None = None, stop_ids=None, prefill_chunk: int | None = None,
                     kv_bits: int | None = None):
        """Cached generation of token ids; greedy when temperature == 0. Stops after a stop id.

        `kv_bits` (4 or 8) quantizes the full-attention layers' KV cache.
        """
        from .generate import DEFAULT_PREFILL_CHUNK, Generator, Prompt
        from .sampling import generation_defaults

        ids = self.check_ids(input_ids)
        sampling = generation_defaults(self.folder).with_overrides(
            temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
            repetition_penalty=repetition_penalty, seed=seed)
        generator = Generator(self, prefill_chunk=prefill_chunk or DEFAULT_PREFILL_CHUNK, kv_bits=kv_bits)
        prompt = Prompt(ids, list(images or []), list(audio or []), image_budget, video_frames(videos), video_budget)
        yield from generator.run(prompt, max_tokens=max_tokens, sampling=sampling,
                                 stop_ids=self.stop_ids if stop_ids is None else stop_ids)

    # -- chat --------------------------------------------------------------------------------------

    @property
    def tokenizer(self):
        from .tokenizer import Tokenizer

        if self._tokenizer is None:
            self._tokenizer = Tokenizer(self.folder)
        return self._tokenizer

    @property
    def chat_template(self):
        from .chat_template import ChatTemplate

        if self._template is None:
            self._template = ChatTemplate.from_folder(self.folder, self.tokenizer.config)
        return self._template

    def open_chat_files(self) -> None:
        """Read the tokenizer and the chat template now and keep them, so a missing or damaged one fails
        `engine.load` rather than the first chat.

        A folder with none of the files that come with a tokenizer holds weights only (the benchmarks
        write such folders): token ids work, and `chat()` says what is missing.
        """
        if any((self.folder / name).is_file() for name in _CHAT_FILES):
            self._template = self.chat_template  # built from the tokenizer, which is kept too

    def chat(self, system: str | None = None, thinking: bool = False, *, max_tokens: int = 2048,
             image_budget: int = 280, tools: list[dict] | None = None, kv_bits: int | None = None, **sampling):
        """A chat session whose prompt cache survives between turns.

        `sampling` may set temperature, top_p, top_k, min_p, repetition_penalty and seed; the rest come
        from the model's generation_config.json.
        """
        from .chat import ChatOptions, ChatSession
        from .sampling import generation_defaults

        unknown = set(sampling) - {"temperature", "top_p", "top_k", "min_p", "repetition_penalty", "seed"}
        if unknown:
            raise EngineError(f"unknown chat option(s): {', '.join(sorted(unknown))}")
        options = ChatOptions(sampling=generation_defaults(self.folder).with_overrides(**sampling).validated(),
                              max_tokens=max_tokens, image_budget=image_budget, tools=tools, kv_bits=kv_bits)
        return ChatSession(self, self.tokenizer, self.chat_template, system=system, thinking=thinking,
                           options=options)

    # -- token ids -------------------------------------------------------------------------------

    def check_ids(self, input_ids: Sequence[int] | mx.array | np.ndarray) -> np.ndarray:
        """Validate a prompt: a non-empty 1-D list of ids inside the vocabulary and the context window."""
        self.check_thread()
        ids = np.asarray(input_ids.tolist() if isinstance(input_ids, mx.array) else input_ids)
        if ids.ndim != 1 or ids.size == 0:
            raise EngineError("a prompt must be a non-empty 1-D sequence of token ids")
        if not np.issubdtype(ids.dtype, np.integer):
            raise EngineError("token ids must be integers")
        vocab = self.config.text.vocab_size
        if ids.min() < 0 or ids.max() >= vocab:
            raise EngineError(f"token ids must lie in [0, {vocab}); got {int(ids.min())}..{int(ids.max())}")
        if ids.size > self.info.context_length:
            raise EngineError(f"the prompt has {ids.size} tokens but the model's context window is "
                              f"{self.info.context_length}; shorten the conversation or start a new chat")
        return ids.astype(np.int32)

    # -- the reference forward -------------------------------------------------------------------

    def logits(self, input_ids, images=None, image_budget: int = 280, audio=None, videos=None,
               video_budget: int = 70) -> mx.array:
        """One full, uncached, causal pass: float32 logits (T, vocab) after the final soft-cap.

        `videos`: VideoFrames or lists of PIL frames whose runs of video placeholders are in input_ids.
        """
        ids = self.check_ids(input_ids)
        embeddings, ple_ids, groups = self.prepare_inputs(ids, images, image_budget, audio,
                                                            video_frames(videos), video_budget)
        text = self.net.text
        hidden = text(embeddings, ple_ids, text.make_caches(), offset=0, groups=groups)
        out = text.logits(hidden)[0]
        mx.eval(out)
        return out

    def prepare_inputs(self, ids: np.ndarray, images=None, image_budget: int = 280, audio=None, frames=None,
                       frame_budget: int = 70):
        """Embeddings [1, T, H] with media features scattered in, the ids for the per-layer embeddings
        (placeholders as pad), and vision groups."""
        from .media import media_inputs

        text = self.net.text
        media = media_inputs(self, ids, images, image_budget, audio, frames, frame_budget)
        text_ids = mx.array(media.text_ids)[None]
        embeddings = text.embed(text_ids, self.dtype)
        if media.features is not None:
            embeddings = _scatter_rows(embeddings, media.positions, media.features.astype(self.dtype))
        return embeddings, text_ids, media.groups


def video_frames(videos) -> list:
    """The frames of every video, in order: each video is VideoFrames or a list of PIL images."""
    return [frame for video in videos or [] for frame in getattr(video, "frames", video)]


def _scatter_rows(embeddings: mx.array, positions: np.ndarray, rows: mx.array) -> mx.array:
    index = mx.array(positions.astype(np.int32))
    flat = embeddings[0]
    flat[index] = rows
    return flat[None]
