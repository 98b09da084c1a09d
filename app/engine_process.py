"""The engine process: loads one model and answers turns for the window, over stdin/stdout.

It runs apart from the window so that an MLX abort (out of memory on a Mac) or any crash takes only
this process down; the window notices, keeps the history and can start a new one. MLX streams belong
to the thread that created them, so the main thread here both loads and generates. A second thread
reads requests, so that cancelling (a turn or a load) and token counts are answered at once, even
mid-generation.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import queue
import sys
import threading
import traceback
from pathlib import Path
from typing import BinaryIO

from . import engine_protocol as protocol

SESSION_OPTIONS = ("thinking", "max_tokens", "image_budget", "temperature", "top_p", "top_k", "seed")
# Where each stage the engine reports sits in the whole load: (start, share). Reading the weights is
# nearly all of the time on a real model; the warm-up token after it is the rest.
LOAD_STAGES = {"checking weight files": (0.0, 0.04), "building the model": (0.04, 0.01),
               "reading weights": (0.05, 0.9), "ready": (1.0, 0.0)}
COUNT_CACHE_SIZE = 32
# Chats other than the one answering keep their prompt caches, the most recently used first, within this
# share of the machine's memory and this count: going back to one prefills only its new turn, and many
# chats never add up to more memory than the machine has (a 31B chat of 8k tokens holds about 1.5 GB).
IDLE_CACHE_SHARE = 0.125
MAX_IDLE_CHATS = 8


ImageRef = tuple[str, int | None]   # (path, budget); None: the chat's default budget


def image_refs(items) -> tuple[ImageRef, ...]:
    """Wire images as (path, budget) pairs: a bare path, or a [path, budget] pair."""
    return tuple((item, None) if isinstance(item, str) else (item[0], item[1]) for item in items or ())


@dataclasses.dataclass(frozen=True)
class Turn:
    """One history item as the window sends it; media are file paths, images with their budgets."""
    role: str
    text: str
    images: tuple[ImageRef, ...] = ()
    audio: tuple[str, ...] = ()

    @classmethod
    def from_wire(cls, item: dict) -> "Turn":
        return cls(item["role"], item["text"], image_refs(item.get("images")), tuple(item.get("audio", ())))


def open_media(images: tuple[ImageRef, ...], audio: tuple[str, ...], open_image=None, load_audio=None):
    """(images, audio) as ChatSession takes them: an image with a budget of its own goes as a pair."""
    from engine.audio.io import load_audio as read_audio
    from engine.vision import open_image as read_image

    open_image, load_audio = open_image or read_image, load_audio or read_audio
    opened = [open_image(path) if budget is None else (open_image(path), budget) for path, budget in images]
    return opened, [load_audio(path) for path in audio]


@functools.lru_cache(maxsize=COUNT_CACHE_SIZE)
def _cached_image(path: str):
    from engine.vision import open_image

    return open_image(path)


@functools.lru_cache(maxsize=COUNT_CACHE_SIZE)
def _cached_audio(path: str):
    from engine.audio.io import load_audio

    return load_audio(path)


def reuse_messages(old: list, old_turns: list[Turn], history: list[Turn], opener=open_media) -> list:
    """The session messages for `history`, keeping the old Message objects (and the token ids the
    prompt cache knows them by) for the leading turns that did not change."""
    from engine.chat import Message

    messages = []
    for index, turn in enumerate(history):
        if index >= len(old) or index >= len(old_turns) or old_turns[index] != turn:
            for rest in history[index:]:
                images, audio = opener(rest.images, rest.audio)
                messages.append(Message(rest.role, rest.text, images, audio))
            return messages
        messages.append(old[index])
    return messages


def machine_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _free_dropped() -> None:
    """A dropped model or chat session lives on in reference cycles (a compiled decode step, finished
    generators) until the garbage collector next runs: collect now, so its memory is free for what follows."""
    import gc

    import mlx.core as mx

    gc.collect()
    mx.clear_cache()


def _answer_turn(session, history: list[Turn]) -> list[Turn]:
    """The answer the session just added, as the window will send it back with the next turn: known, it
    keeps its Message and so the token ids the prompt cache holds it by, instead of being re-encoded."""
    added = session.messages[len(history) + 1:]
    return [Turn("assistant", added[0].text)] if len(added) == 1 and added[0].role == "assistant" else []


def open_for_count(images: tuple[ImageRef, ...], audio: tuple[str, ...]):
    """Like open_media, but remembering recent files: the draft is counted again at every pause in typing."""
    return open_media(images, audio, _cached_image, _cached_audio)


def user_turn(request: dict) -> Turn:
    return Turn("user", request["text"], image_refs(request.get("images")), tuple(request.get("audio", ())))


def load_fraction(stage: str, fraction: float, last: float) -> float:
    """How far the whole load is, from the engine's (stage, fraction of that stage); never backwards."""
    start, share = LOAD_STAGES.get(stage, (last, 0.0))
    return max(last, min(1.0, start + share * fraction))


class EngineService:
    """The model and one chat session per conversation; every method but `cancel`, `cancel_load` and
    `count` runs on the thread that loaded the model."""

    def __init__(self, reply):
        self.reply = reply
        self.model = None
        self._sessions: dict[int, tuple[tuple, object, list[Turn]]] = {}
        self._counting: dict[int | None, tuple[tuple, object, list[Turn]]] = {}
        self._running: tuple[int, object] | None = None
        self._cancelled: set[int] = set()
        self._load_cancel = threading.Event()
        self._lock = threading.Lock()

    # -- loading ----------------------------------------------------------------------------------

    def expect_load(self) -> threading.Event:
        """From the reader thread, in request order: the cancel switch of the load just read, so a
        cancel that follows it at once is never lost."""
        self._load_cancel = threading.Event()
        return self._load_cancel

    def cancel_load(self) -> None:
        self._load_cancel.set()

    def load(self, folder: str, cancel: threading.Event) -> None:
        import engine

        self.model, self._sessions, self._counting = None, {}, {}
        _free_dropped()
        name = Path(folder).name
        progress = self._progress_reporter(name)
        try:
            model = engine.load(folder, progress=progress)
            if cancel.is_set():
                raise engine.EngineError("loading was cancelled")
            # Every weight read from disk and one token through the model: the first turn starts at full speed.
            model.warm_up(progress=progress, cancel=cancel)
        except engine.EngineError as error:
            self.reply({"ev": "load_cancelled"} if cancel.is_set() else {"ev": "load_failed", "error": str(error)})
            return
        except Exception as error:  # a broken file must end in a message, not a dead engine
            traceback.print_exc()
            self.reply({"ev": "load_failed", "error": f"could not load {name}: {error}"})
            return
        self.model = model
        info = model.info
        self.reply({"ev": "loaded", "info": {**dataclasses.asdict(info), "modalities": sorted(info.modalities),
                                             "folder": str(folder)}})

    def _progress_reporter(self, name: str):
        done = [0.0]

        def report(stage: str, fraction: float) -> None:
            done[0] = load_fraction(stage, fraction, done[0])
            self.reply({"ev": "stage", "text": f"{stage.capitalize()} ({name})…", "fraction": done[0]})
        return report

    # -- turns ------------------------------------------------------------------------------------

    def _session_for(self, sessions: dict, conversation: int | None, options: dict, model):
        """The conversation's session, new when its options changed. Conversation None is a side turn
        (dictation): a fresh session each time, remembered nowhere."""
        chosen = {key: options[key] for key in SESSION_OPTIONS if options.get(key) is not None}
        key = (options.get("system") or None, tuple(sorted(chosen.items())))
        known = sessions.get(conversation) if conversation is not None else None
        if known is None or known[0] != key:
            known = (key, model.chat(system=key[0], **chosen), [])
            if conversation is not None:
                sessions[conversation] = known
        return known

    def turn(self, request: dict) -> None:
        turn_id = request["turn"]
        if self.model is None:
            self.reply({"ev": "failed", "turn": turn_id, "error": "No model is loaded. Pick a model first."})
            return
        import engine

        try:
            conversation = request.get("conversation")
            key, session, old_turns = self._session_for(self._sessions, conversation, request.get("options", {}),
                                                        self.model)
            history = [Turn.from_wire(item) for item in request.get("history", ())]
            session.messages = reuse_messages(session.messages, old_turns, history)
            user = user_turn(request)
            if conversation is not None:
                self._remember(conversation, (key, session, history + [user]))
            images, audio = open_media(user.images, user.audio)
            events = session.send(user.text, images=images, audio=audio)   # a session cancel stops it from here
            with self._lock:
                self._running = (turn_id, session)
                if turn_id in self._cancelled:
                    session.cancel()
            self._stream(turn_id, events)
            if conversation is not None:
                self._remember(conversation, (key, session, history + [user, *_answer_turn(session, history)]))
                self._forget_idle_chats(conversation)
        except engine.EngineError as error:
            self.reply({"ev": "failed", "turn": turn_id, "error": str(error)})
        except Exception as error:
            traceback.print_exc()
            self.reply({"ev": "failed", "turn": turn_id, "error": f"the engine failed: {error}"})
        finally:
            with self._lock:
                self._running = None
                self._cancelled.discard(turn_id)

    def _remember(self, conversation: int, known: tuple) -> None:
        """Keep `conversation`'s session as the most recently used (the dict's order is the order of use)."""
        self._sessions.pop(conversation, None)
        self._sessions[conversation] = known

    def _forget_idle_chats(self, current: int) -> None:
        """Drop the prompt caches of the chats used longest ago beyond IDLE_CACHE_SHARE and MAX_IDLE_CHATS."""
        budget, used, kept = IDLE_CACHE_SHARE * machine_memory(), 0, 0
        dropped = False
        for conversation in [c for c in reversed(self._sessions) if c != current]:
            size = self._sessions[conversation][1].generator.cache.nbytes
            if kept < MAX_IDLE_CHATS and used + size <= budget:
                used, kept = used + size, kept + 1
            else:
                del self._sessions[conversation]
                self._counting.pop(conversation, None)
                dropped = True
        if dropped:
            _free_dropped()

    def _stream(self, turn_id: int, events) -> None:
        stats = None
        for item in events:
            if item.kind == "done":
                stats = dataclasses.asdict(item.stats) if item.stats is not None else {}
            elif item.kind in ("thinking", "text", "notice"):
                self.reply({"ev": "event", "turn": turn_id, "kind": item.kind, "text": item.text})
        self.reply({"ev": "done", "turn": turn_id, "stats": stats or {}})

    def cancel(self, turn_id: int) -> None:
        """From the reader thread: stops turn `turn_id` now, or before it starts."""
        with self._lock:
            self._cancelled.add(turn_id)
            if self._running is not None and self._running[0] == turn_id:
                self._running[1].cancel()

    def count(self, request: dict) -> None:
        """The exact prompt that sending the draft would build, counted (ChatSession.count_tokens needs
        the tokenizer, the template and image sizes, no MLX, so the reader thread may answer)."""
        model = self.model
        try:
            counts = None if model is None else self._count(model, request)
        except (ValueError, OSError) as error:   # a draft file that went away: no count, no dead reader
            print(f"count failed: {error}", file=sys.stderr)
            counts = None
        self.reply({"ev": "counted", "request": request["request"], "counts": counts})

    def _count(self, model, request: dict) -> dict:
        conversation = request.get("conversation")
        # The dicts of the model this count began with: a load meanwhile replaces them, and drops what this keeps.
        counting, answering = self._counting, self._sessions
        key, session, old_turns = self._session_for(counting, conversation, request.get("options", {}), model)
        history = [Turn.from_wire(item) for item in request.get("history", ())]
        old_messages = session.messages
        chat = answering.get(conversation) if conversation is not None else None
        if chat is not None and chat[0] == key:
            # The chat's own session holds earlier answers as their generated ids, as the next prompt will.
            old_messages, old_turns = list(chat[1].messages), chat[2]
        session.messages = reuse_messages(old_messages, old_turns, history, open_for_count)
        counting[conversation] = (key, session, history)
        draft = user_turn(request)
        images, audio = open_for_count(draft.images, draft.audio)
        return session.count_tokens(draft.text, images=images, audio=audio)


def read_requests(stream: BinaryIO, service: EngineService, work: queue.Queue) -> None:
    """Reader thread: cancels and counts at once, everything else in order to the engine thread."""
    for line in stream:
        if not line.strip():
            continue
        request = protocol.decode(line)
        if request["op"] == "cancel":
            service.cancel(request["turn"])
        elif request["op"] == "cancel_load":
            service.cancel_load()
        elif request["op"] == "count":
            service.count(request)
        else:
            if request["op"] == "load":
                request["cancel"] = service.expect_load()
            work.put(request)
            if request["op"] == "quit":
                return   # nobody may still be reading stdin when the interpreter shuts down
    work.put({"op": "quit"})  # the window closed our stdin: it is gone


def serve(requests: BinaryIO, replies: BinaryIO) -> int:
    lock = threading.Lock()

    def reply(message: dict) -> None:
        with lock:
            protocol.write(replies, message)

    service = EngineService(reply)
    work: queue.Queue = queue.Queue()
    threading.Thread(target=read_requests, args=(requests, service, work), daemon=True,
                     name="lantern-requests").start()
    reply({"ev": "ready", "pid": os.getpid()})
    while True:
        request = work.get()
        if request["op"] == "quit":
            return 0
        if request["op"] == "load":
            service.load(request["folder"], request["cancel"])
        elif request["op"] == "turn":
            service.turn(request)


def main() -> int:
    """Entry point of `--engine-process`: the protocol gets the real stdout, all prints go to stderr."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return serve(sys.stdin.buffer, replies)
