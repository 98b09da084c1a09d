"""The engine thread: one QThread that loads the model and runs every generation.

MLX streams belong to the thread that created them and the engine refuses a model used off its
loading thread, so loading and generating both happen here. The GUI asks through queued signals;
only `cancel` reaches across directly, because a session's cancel is thread-safe and the worker's
event loop is busy while it generates.
"""

from __future__ import annotations

import dataclasses
import threading
import traceback
from pathlib import Path

from PySide6.QtCore import QObject, QThread, Signal, Slot

import engine
from engine.chat import Message


@dataclasses.dataclass(frozen=True)
class TurnRequest:
    turn_id: int
    conversation_id: int
    history: tuple[tuple[str, str], ...]   # (role, text) before the user turn: answers only
    user_text: str
    options: dict                           # system, thinking, max_tokens, temperature, top_p, top_k, ...


SESSION_OPTIONS = ("thinking", "max_tokens", "image_budget", "temperature", "top_p", "top_k", "seed")


def reuse_messages(old: list[Message], history: tuple[tuple[str, str], ...]) -> list[Message]:
    """The session history for `history`, keeping old Message objects (and their cached token ids)
    for the leading turns that did not change."""
    messages: list[Message] = []
    for index, (role, text) in enumerate(history):
        same = index < len(old) and old[index].role == role and old[index].text == text
        if not same:
            return messages + [Message(r, t) for r, t in history[index:]]
        messages.append(old[index])
    return messages


class EngineWorker(QObject):
    """Lives on the engine thread; every slot runs there."""

    loading = Signal(str)                 # human-readable progress
    loaded = Signal(object)               # engine ModelInfo
    load_failed = Signal(str)
    event = Signal(int, str, str)         # turn id, kind ("thinking" | "text"), new text
    turn_finished = Signal(int, object)   # turn id, GenerationStats
    turn_failed = Signal(int, str)

    def __init__(self):
        super().__init__()
        self.model = None
        self._sessions: dict[int, tuple[tuple, object]] = {}
        self._running = None
        self._cancelled: set[int] = set()
        self._lock = threading.Lock()

    @Slot(str)
    def load(self, folder: str) -> None:
        self.loading.emit(f"Loading {Path(folder).name}…")
        self.model, self._sessions = None, {}
        try:
            self.model = engine.load(folder)
        except engine.EngineError as error:
            self.load_failed.emit(str(error))
            return
        except Exception as error:  # a broken file must never take the window down
            self.load_failed.emit(f"could not load {folder}: {error}")
            traceback.print_exc()
            return
        self.loaded.emit(self.model.info)

    def _session_for(self, request: TurnRequest):
        options = {key: request.options[key] for key in SESSION_OPTIONS if request.options.get(key) is not None}
        key = (request.options.get("system") or None, tuple(sorted(options.items())))
        known = self._sessions.get(request.conversation_id)
        if known is None or known[0] != key:
            session = self.model.chat(system=key[0], **options)
            self._sessions[request.conversation_id] = (key, session)
            return session
        return known[1]

    @Slot(object)
    def run_turn(self, request: TurnRequest) -> None:
        if self.model is None:
            self.turn_failed.emit(request.turn_id, "No model is loaded. Pick a model first.")
            return
        try:
            session = self._session_for(request)
            session.messages = reuse_messages(session.messages, request.history)
            with self._lock:
                self._running = (request.turn_id, session)
                if request.turn_id in self._cancelled:
                    session.cancel()
            stats = None
            for item in session.send(request.user_text):
                if item.kind == "done":
                    stats = item.stats
                elif item.kind in ("thinking", "text"):
                    self.event.emit(request.turn_id, item.kind, item.text)
            self.turn_finished.emit(request.turn_id, stats)
        except engine.EngineError as error:
            self.turn_failed.emit(request.turn_id, str(error))
        except Exception as error:
            traceback.print_exc()
            self.turn_failed.emit(request.turn_id, f"the engine failed: {error}")
        finally:
            with self._lock:
                self._running = None
                self._cancelled.discard(request.turn_id)

    def cancel(self, turn_id: int) -> None:
        """Called from the GUI thread: stops turn `turn_id` now, or before it starts."""
        with self._lock:
            self._cancelled.add(turn_id)
            if self._running is not None and self._running[0] == turn_id:
                self._running[1].cancel()

    def cancel_running(self) -> None:
        with self._lock:
            if self._running is not None:
                self._cancelled.add(self._running[0])
                self._running[1].cancel()


class EngineHost(QObject):
    """The GUI side: owns the engine thread and forwards requests to the worker."""

    load_requested = Signal(str)
    turn_requested = Signal(object)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.thread = QThread(self)
        self.thread.setObjectName("lantern-engine")
        self.worker = EngineWorker()
        self.worker.moveToThread(self.thread)
        # The worker belongs to the engine thread, so that thread must be the one to delete it.
        self.thread.finished.connect(self.worker.deleteLater)
        self.load_requested.connect(self.worker.load)
        self.turn_requested.connect(self.worker.run_turn)
        self.thread.start()
        self._next_turn = 0

    def load(self, folder: str | Path) -> None:
        self.load_requested.emit(str(folder))

    def start_turn(self, conversation_id: int, history: list[tuple[str, str]], user_text: str,
                   options: dict) -> int:
        self._next_turn += 1
        self.turn_requested.emit(TurnRequest(self._next_turn, conversation_id, tuple(history), user_text,
                                             dict(options)))
        return self._next_turn

    def cancel(self, turn_id: int) -> None:
        self.worker.cancel(turn_id)

    def shutdown(self) -> None:
        """Stop the engine thread, cancelling whatever it runs."""
        self.worker.cancel_running()
        self.thread.quit()
        self.thread.wait()
