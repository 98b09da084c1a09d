"""The engine process: loads one model and answers turns for the window, over stdin/stdout.

It runs apart from the window so that an MLX abort (out of memory on a Mac) or any crash takes only
this process down; the window notices, keeps the history and can start a new one. MLX streams belong
to the thread that created them, so the main thread here both loads and generates. A second thread
reads requests, so that cancel and token counts are answered at once, even mid-generation.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import sys
import threading
import traceback
from pathlib import Path
from typing import BinaryIO

from . import engine_protocol as protocol

SESSION_OPTIONS = ("thinking", "max_tokens", "image_budget", "temperature", "top_p", "top_k", "seed")
LOAD_STEPS = 3


@dataclasses.dataclass(frozen=True)
class Turn:
    """One history item as the window sends it; media are file paths."""
    role: str
    text: str
    images: tuple[str, ...] = ()
    audio: tuple[str, ...] = ()

    @classmethod
    def from_wire(cls, item: dict) -> "Turn":
        return cls(item["role"], item["text"], tuple(item.get("images", ())), tuple(item.get("audio", ())))


def open_media(images: tuple[str, ...], audio: tuple[str, ...]) -> tuple[list, list]:
    from engine.audio.io import load_audio
    from engine.vision import open_image

    return [open_image(path) for path in images], [load_audio(path) for path in audio]


def reuse_messages(old: list, old_turns: list[Turn], history: list[Turn]) -> list:
    """The session messages for `history`, keeping the old Message objects (and the token ids the
    prompt cache knows them by) for the leading turns that did not change."""
    from engine.chat import Message

    messages = []
    for index, turn in enumerate(history):
        if index >= len(old) or index >= len(old_turns) or old_turns[index] != turn:
            for rest in history[index:]:
                images, audio = open_media(rest.images, rest.audio)
                messages.append(Message(rest.role, rest.text, images, audio))
            return messages
        messages.append(old[index])
    return messages


class EngineService:
    """The model and one chat session per conversation; every method but `cancel` and `count`
    runs on the thread that loaded the model."""

    def __init__(self, reply):
        self.reply = reply
        self.model = None
        self._sessions: dict[int, tuple[tuple, object, list[Turn]]] = {}
        self._running: tuple[int, object] | None = None
        self._cancelled: set[int] = set()
        self._lock = threading.Lock()

    # -- loading ----------------------------------------------------------------------------------

    def load(self, folder: str) -> None:
        import engine
        from engine.config import read_config

        self.model, self._sessions = None, {}
        name = Path(folder).name
        try:
            self._stage(1, f"Reading the headers of {name}…")
            read_config(Path(folder))
            self._stage(2, f"Mapping the weights of {name}…")
            model = engine.load(folder)
            self._stage(3, "Warming up (first forward pass)…")
            # One real token through the whole chat path, so the user's first turn starts at full speed.
            for _ in model.chat(max_tokens=1).send("Hello"):
                pass
        except engine.EngineError as error:
            self.reply({"ev": "load_failed", "error": str(error)})
            return
        except Exception as error:  # a broken file must end in a message, not a dead engine
            traceback.print_exc()
            self.reply({"ev": "load_failed", "error": f"could not load {name}: {error}"})
            return
        self.model = model
        info = model.info
        self.reply({"ev": "loaded", "info": {**dataclasses.asdict(info), "modalities": sorted(info.modalities),
                                             "folder": str(folder)}})

    def _stage(self, step: int, text: str) -> None:
        self.reply({"ev": "stage", "text": text, "step": step, "steps": LOAD_STEPS})

    # -- turns ------------------------------------------------------------------------------------

    def _session_for(self, conversation: int, options: dict):
        chosen = {key: options[key] for key in SESSION_OPTIONS if options.get(key) is not None}
        key = (options.get("system") or None, tuple(sorted(chosen.items())))
        known = self._sessions.get(conversation)
        if known is None or known[0] != key:
            known = (key, self.model.chat(system=key[0], **chosen), [])
            self._sessions[conversation] = known
        return known

    def turn(self, request: dict) -> None:
        turn_id = request["turn"]
        if self.model is None:
            self.reply({"ev": "failed", "turn": turn_id, "error": "No model is loaded. Pick a model first."})
            return
        import engine

        try:
            key, session, old_turns = self._session_for(request["conversation"], request.get("options", {}))
            history = [Turn.from_wire(item) for item in request.get("history", ())]
            session.messages = reuse_messages(session.messages, old_turns, history)
            user = Turn("user", request["text"], tuple(request.get("images", ())), tuple(request.get("audio", ())))
            self._sessions[request["conversation"]] = (key, session, history + [user])
            images, audio = open_media(user.images, user.audio)
            with self._lock:
                self._running = (turn_id, session)
                if turn_id in self._cancelled:
                    session.cancel()
            self._stream(turn_id, session.send(user.text, images=images, audio=audio))
        except engine.EngineError as error:
            self.reply({"ev": "failed", "turn": turn_id, "error": str(error)})
        except Exception as error:
            traceback.print_exc()
            self.reply({"ev": "failed", "turn": turn_id, "error": f"the engine failed: {error}"})
        finally:
            with self._lock:
                self._running = None
                self._cancelled.discard(turn_id)

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
        """Token counts need only the tokenizer (no MLX), so any thread may answer them."""
        model = self.model
        counts = None if model is None else [len(model.tokenizer.encode(text)) for text in request["texts"]]
        self.reply({"ev": "counted", "request": request["request"], "counts": counts})


def read_requests(stream: BinaryIO, service: EngineService, work: queue.Queue) -> None:
    """Reader thread: cancel and count at once, everything else in order to the engine thread."""
    for line in stream:
        if not line.strip():
            continue
        request = protocol.decode(line)
        if request["op"] == "cancel":
            service.cancel(request["turn"])
        elif request["op"] == "count":
            service.count(request)
        else:
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
            service.load(request["folder"])
        elif request["op"] == "turn":
            service.turn(request)


def main() -> int:
    """Entry point of `--engine-process`: the protocol gets the real stdout, all prints go to stderr."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return serve(sys.stdin.buffer, replies)
