"""Chat sessions: a conversation whose KV cache survives between turns.

Each turn renders the whole conversation with the model's own chat template, expands every media
placeholder, and hands the prompt to a Generator that reuses the longest cached prefix. Snapshots
at the end of the history and just before the prompt's last token make regenerate, edit and the
templates that rewrite earlier turns (stripped thinking, the pre-filled empty thought block) cheap.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from .chat_template import ChatTemplate
from .errors import EngineError
from .generate import Generator, Prompt, check_max_tokens
from .media import budgeted_images
from .output_stream import ChatEvent, OutputStream
from .sampling import SamplingOptions, generation_defaults
from .tokenizer import Tokenizer
from .tool_calls import ToolCall, format_arguments


_MARK_OPEN, _MARK_CLOSE = "\ue000", "\ue001"
_MARK = re.compile(f"{_MARK_OPEN}(\\d+){_MARK_CLOSE}")
_TRIE_DEPTH = 64  # longer special-token strings stay flat alternatives, so the regex never nests deeply


@functools.lru_cache(maxsize=8)
def _literal_pattern(specials: frozenset[str]) -> re.Pattern:
    """Finds our marker characters and every special-token string, the longest where several start.

    Shaped as a trie: a tokenizer may have thousands of special tokens, and a flat alternation would try
    each of them at every position of the text.
    """
    words = [*specials, _MARK_OPEN, _MARK_CLOSE]
    trie: dict = {}
    for word in (w for w in words if 0 < len(w) <= _TRIE_DEPTH):
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}
    long = sorted((w for w in words if len(w) > _TRIE_DEPTH), key=len, reverse=True)
    return re.compile("|".join([_trie_regex(trie), *map(re.escape, long)]))


def _trie_regex(node: dict) -> str:
    branches = "|".join(re.escape(char) + _trie_regex(child) for char, child in sorted(node.items()) if char)
    if not branches:
        return ""
    return f"(?:{branches})?" if "" in node else f"(?:{branches})"


class _Splices:
    """What must not reach the tokenizer as rendered text: an earlier answer's own ids, and special-token
    strings inside text that users or tools supplied.

    Each goes through the template as a private-use marker. Everything else is encoded with special-token
    matching on, which then only meets the template's own structural tokens. User text cannot forge a
    marker: the marker characters in it are spliced back as literal text like the special-token strings.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.pieces: list[str | list[int]] = []
        self._literal = _literal_pattern(tokenizer.special_strings)

    def marker(self, piece: str | list[int]) -> str:
        self.pieces.append(piece)
        return f"{_MARK_OPEN}{len(self.pieces) - 1}{_MARK_CLOSE}"

    def escaped(self, value):
        """`value` (a string, or dicts and lists holding strings) with its special-token strings made literal."""
        if isinstance(value, str):
            return self._literal.sub(lambda match: self.marker(match.group()), value)
        if isinstance(value, dict):
            return {self.escaped(key): self.escaped(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.escaped(item) for item in value]
        return value

    def encode(self, rendered: str) -> list[int]:
        ids: list[int] = []
        for position, piece in enumerate(_MARK.split(rendered)):
            if position % 2 == 0:  # text between markers (re.split puts the captured indexes at odd places)
                ids += self.tokenizer.encode(piece) if piece else []
                continue
            spliced = self.pieces[int(piece)]
            ids += spliced if isinstance(spliced, list) else self.tokenizer.encode_literal(spliced)
        return ids


@dataclass
class Message:
    role: str                                  # "system" | "user" | "assistant" | "tool"
    text: str = ""
    images: list = field(default_factory=list)  # PIL images or (image, budget) pairs
    audio: list = field(default_factory=list)  # (waveform, sample_rate) clips of at most 30 s
    videos: list = field(default_factory=list)  # engine.vision.video.VideoFrames
    tool_calls: list[ToolCall] = field(default_factory=list)
    name: str | None = None                    # the tool's name, for role "tool"
    token_ids: list[int] | None = None         # an answer's own generated ids, whose KV the cache holds

    def template_form(self) -> dict:
        if self.role == "assistant":
            form = {"role": "assistant", "content": self.text}
            if self.tool_calls:
                form["tool_calls"] = [{"type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                                      for c in self.tool_calls]
            return form
        if self.role == "tool":
            return {"role": "tool", "name": self.name, "content": self.text}
        if not (self.images or self.audio or self.videos):
            return {"role": self.role, "content": self.text}
        parts = ([{"type": "image"} for _ in self.images] + [{"type": "video"} for _ in self.videos]
                 + [{"type": "audio"} for _ in self.audio])
        return {"role": self.role, "content": parts + [{"type": "text", "text": self.text}]}


def _model_rate_clips(audio) -> tuple[list, list[str]]:
    """Validate and resample every clip to 16 kHz; cut audio over 30 s into clips the model can hear.

    Returns the clips and one notice per cut recording, for the user.
    """
    from .audio.clips import split_clips
    from .audio.features import SAMPLE_RATE
    from .audio.waveform import to_model_rate

    clips, notices = [], []
    for clip in audio:
        if not isinstance(clip, (tuple, list)) or len(clip) != 2:
            raise EngineError("each audio clip is a (waveform, sample_rate) pair")
        waveform, rate = clip
        pieces, notice = split_clips(to_model_rate(np.asarray(waveform), rate))
        clips += [(piece, SAMPLE_RATE) for piece in pieces]
        if notice:
            notices.append(notice)
    return clips, notices


def _as_video(video):
    from .vision.video import DEFAULT_FPS, VideoFrames, frames_from_file, frames_from_images

    if isinstance(video, VideoFrames):
        return video
    if isinstance(video, (list, tuple)):
        return frames_from_images(list(video), fps=DEFAULT_FPS)
    return frames_from_file(video)


@dataclass
class ChatOptions:
    sampling: SamplingOptions | None = None
    max_tokens: int = 2048
    image_budget: int = 280
    video_budget: int = 70
    tools: list[dict] | None = None
    kv_bits: int | None = None


class ChatSession:
    def __init__(self, model, tokenizer: Tokenizer, template: ChatTemplate, system: str | None = None,
                 thinking: bool = False, options: ChatOptions | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.system = system
        self.thinking = thinking
        self.options = options or ChatOptions()
        check_max_tokens(self.options.max_tokens)
        self.sampling = self.options.sampling or generation_defaults(model.folder)
        self.messages: list[Message] = []
        self.generator = Generator(model, kv_bits=self.options.kv_bits)
        self._cancel = threading.Event()
        self._current_turn: object | None = None
        self.last_stats = None

    # -- the conversation ------------------------------------------------------------------------

    def send(self, text: str, images=None, audio=None, videos=None) -> Iterator[ChatEvent]:
        """Add a user turn and stream the model's answer.

        `images`: PIL images, or (image, budget) pairs for images that need a budget of their own.
        `videos`: VideoFrames, lists of PIL frames, or paths of animated GIF / WebP / PNG files.
        """
        user, notices = self._user_message(text, images, audio, videos)
        return self._turn([*self.messages, user], notices)

    def _user_message(self, text: str, images, audio, videos) -> tuple[Message, list[str]]:
        """A user message with its media checked against the model and in the form prompts take, and the
        notices about cut recordings."""
        for modality, given in (("image", images), ("audio", audio), ("video", videos)):
            if given:
                self.model.require(modality)
        clips, notices = _model_rate_clips(audio or [])
        return Message("user", text, list(images or []), clips, [_as_video(v) for v in videos or []]), notices

    def count_tokens(self, text: str, images=None, audio=None, videos=None) -> dict[str, int]:
        """What sending this message would put into the prompt, without sending it: the whole prompt's
        tokens and, among them, the image (video frames included) and audio soft tokens."""
        draft, _ = self._user_message(text, images, audio, videos)
        prompt, _ = self._prompt_for([*self.messages, draft])
        image_runs, audio_runs, frame_runs = prompt.runs(self.model.config)
        return {"total": int(prompt.ids.size),
                "image": sum(length for _, length in image_runs + frame_runs),
                "audio": sum(length for _, length in audio_runs)}

    def add_tool_result(self, name: str, result: str) -> Iterator[ChatEvent]:
        return self._turn([*self.messages, Message("tool", result, name=name)])

    def regenerate(self) -> Iterator[ChatEvent]:
        """Answer the last user turn again (the previous answer is dropped from the history)."""
        history = list(self.messages)
        while history and history[-1].role == "assistant":
            history.pop()
        if not history:
            raise EngineError("there is nothing to regenerate yet")
        return self._turn(history)

    def edit(self, index: int, text: str, images=None, audio=None, videos=None) -> Iterator[ChatEvent]:
        """Replace user message `index`, forget everything after it, and answer it. Media not given are
        the message's own."""
        if not 0 <= index < len(self.messages) or self.messages[index].role != "user":
            raise EngineError(f"message {index} is not a user message of this chat")
        old = self.messages[index]
        edited, notices = self._user_message(text, old.images if images is None else images,
                                             old.audio if audio is None else audio,
                                             old.videos if videos is None else videos)
        return self._turn([*self.messages[:index], edited], notices)

    def cancel(self) -> None:
        """Stop the running answer within one decode step; safe from any thread."""
        self._cancel.set()

    # -- prompt building -------------------------------------------------------------------------

    def _tokens(self, messages: list[Message], generation_prompt: bool) -> list[int]:
        """The conversation rendered by the model's template and tokenized."""
        splices = _Splices(self.tokenizer)
        forms = [splices.escaped({"role": "system", "content": self.system})] if self.system else []
        for message in messages:
            form = splices.escaped(message.template_form())
            if self._reuses_ids(message):
                form["content"] = splices.marker(message.token_ids)
            forms.append(form)
        rendered = self.template.render(
            messages=forms, add_generation_prompt=generation_prompt, enable_thinking=self.thinking,
            tools=splices.escaped(self.options.tools), bos_token="<bos>", eos_token="<eos>",
            format_arguments=format_arguments)
        return splices.encode(rendered)

    def _reuses_ids(self, message: Message) -> bool:
        """Whether an earlier answer goes back as the very ids that were generated.

        Re-tokenizing generated text does not always give the same ids, and templates trim the
        whitespace around answers; either would defeat the prompt cache. The generated ids are used
        as long as they still spell the stored text (an edited answer goes back as text).
        """
        return (message.role == "assistant" and bool(message.token_ids) and not message.tool_calls
                and self.tokenizer.decode(message.token_ids) == message.text)

    def _expand_media(self, ids: list[int], messages: list[Message]) -> Prompt:
        """Replace each media placeholder by its soft-token slots: begin + N slots + end for an image or a
        clip, and `mm:ss begin N*video end` per frame for a video."""
        config = self.model.config
        images = [image for m in messages for image in m.images]
        clips = [clip for m in messages for clip in m.audio]
        videos = [video for m in messages for video in m.videos]
        budget, frame_budget = self.options.image_budget, self.options.video_budget
        replacements = {
            config.image_token_id: iter([[config.boi_token_id, *[config.image_token_id] * n, config.eoi_token_id]
                                         for n in (self.model.image_token_count(image, image_budget)
                                                   for image, image_budget in budgeted_images(images, budget))]),
            config.audio_token_id: iter([[config.boa_token_id, *[config.audio_token_id] * n, config.eoa_token_id]
                                         for n in (self.model.audio_token_count(w, r) for w, r in clips)]),
            config.video_token_id: iter([self._video_ids(video, frame_budget) for video in videos]),
        }
        expanded: list[int] = []
        for token in ids:
            if token not in replacements:
                expanded.append(token)
                continue
            replacement = next(replacements[token], None)
            if replacement is None:
                raise EngineError("the chat template placed more media placeholders than the chat has media")
            expanded += replacement
        frames = [frame for video in videos for frame in video.frames]
        return Prompt(np.array(expanded, dtype=np.int32), images, clips, budget, frames, frame_budget)

    def _video_ids(self, video, budget: int) -> list[int]:
        from .vision.video import frame_token_counts, video_prompt_text

        config, token = self.model.config, self.tokenizer.token
        text = video_prompt_text(video.timestamps, frame_token_counts(video, budget), token(config.boi_token_id),
                                 token(config.video_token_id), token(config.eoi_token_id))
        return self.tokenizer.encode(text)

    def _prompt(self) -> tuple[Prompt, int]:
        return self._prompt_for(self.messages)

    def _prompt_for(self, messages: list[Message]) -> tuple[Prompt, int]:
        """The prompt to answer `messages`, and where the history before its generation prompt ends."""
        prompt = self._expand_media(self._tokens(messages, True), messages)
        history = self._expand_media(self._tokens(messages, False), messages)
        boundary = history.ids.size if np.array_equal(history.ids, prompt.ids[: history.ids.size]) else 0
        return prompt, boundary

    # -- answering -------------------------------------------------------------------------------

    def _turn(self, history: list[Message], notices: Sequence[str] = ()) -> Iterator[ChatEvent]:
        """Make `history` the conversation and answer it. The turn exists from this call on, so a cancel
        from here to its end stops it, and a cancel made earlier (for a turn already over) does not."""
        before = list(self.messages)
        self.messages[:] = history
        self._cancel.clear()
        self._current_turn = turn = object()
        return self._answer(notices, before, turn)

    def _answer(self, notices: Sequence[str], before: list[Message], turn: object) -> Iterator[ChatEvent]:
        """Stream the answer to the conversation as it stands.

        A turn that fails puts the history back to `before`, since keeping the turn would make every later
        one rebuild it and fail the same way. A turn the user stops (cancel, closing the iterator, Ctrl-C)
        keeps its partial answer. A turn superseded by a later one, whose iterator ends late, touches
        the history neither way: it is no longer this turn's.
        """
        stream = OutputStream(self.tokenizer, self.tokenizer.special_ids)
        try:
            for notice in notices:
                yield ChatEvent("notice", notice)
            yield from self._generate(stream)
        except Exception:
            if self._current_turn is turn:
                self.messages[:] = before
            raise
        except BaseException:  # GeneratorExit or KeyboardInterrupt: stopped by the user
            if self._current_turn is turn:
                self._keep_answer(stream)
            raise
        self._keep_answer(stream)
        yield ChatEvent("done", stats=self.generator.stats)

    def _generate(self, stream: OutputStream) -> Iterator[ChatEvent]:
        prompt, boundary = self._prompt()
        tokens = self.generator.run(prompt, max_tokens=self.options.max_tokens, sampling=self.sampling,
                                    stop_ids=self.model.stop_ids, cancel=self._cancel,
                                    snapshot_at=[boundary] if boundary else [])
        try:
            for token in tokens:
                yield from stream.push(token)
            yield from stream.finish()
        finally:
            tokens.close()
            self.last_stats = self.generator.stats

    def _keep_answer(self, stream: OutputStream) -> None:
        self.messages.append(Message("assistant", stream.answer, tool_calls=stream.tool_calls,
                                     token_ids=stream.answer_ids))
