"""The window's side of the engine process: starts it, speaks the protocol, notices when it dies.

Nothing here blocks the GUI thread: replies arrive through QProcess's readyRead signals and are
turned into Qt signals. When the process dies (an MLX out-of-memory abort on a Mac, a crash, a kill)
`died` says so in plain words; the next request starts a fresh process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QSignalBlocker, Signal

from . import engine_protocol as protocol

STDERR_TAIL_LINES = 20
MEMORY_HINTS = ("out of memory", "insufficient memory", "outofmemory", "std::bad_alloc", "memoryerror")


def engine_command() -> list[str]:
    """How to start the engine process: this same program, also inside a frozen (PyInstaller) bundle."""
    return [sys.executable] + ([] if getattr(sys, "frozen", False) else ["-m", "app"]) + [protocol.ENGINE_FLAG]


def explain_exit(exit_code: int, crashed: bool, stderr_tail: list[str]) -> str:
    """What happened to the engine, in words a user can act on."""
    text = "\n".join(stderr_tail).lower()
    if any(hint in text for hint in MEMORY_HINTS):
        return ("The model ran out of memory and the engine stopped. Your chat is safe. "
                "Try a smaller model or a 4-bit copy, or start a new, shorter chat.")
    how = "crashed" if crashed else f"stopped (exit code {exit_code})"
    last = next((line for line in reversed(stderr_tail) if line.strip()), "")
    detail = f" Last message from the engine: {last.strip()[:200]}" if last else ""
    return (f"The engine {how}. Your chat is safe; restart the engine to go on. If this happens again, "
            f"the model may be too large for this Mac: try a smaller one.{detail}")


class EngineHost(QObject):
    ready = Signal()
    loading = Signal(str, float)         # text, fraction of the whole load done
    loaded = Signal(dict)                # model info
    load_failed = Signal(str)
    load_cancelled = Signal()
    event = Signal(int, str, str)        # turn id, kind, new text
    turn_finished = Signal(int, dict)    # turn id, stats
    turn_failed = Signal(int, str)
    counted = Signal(int, object)        # request id, {"total", "image", "audio"} or None
    died = Signal(str)                   # plain-words explanation

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.process: QProcess | None = None
        self.folder: str | None = None
        self.info: dict | None = None      # the loaded model's info, None while none is loaded
        self._buffer = b""
        self._stderr_tail: list[str] = []
        self._expected_exit = False
        self._next_turn = 0
        self._next_count = 0
        self._turns_running: set[int] = set()   # sent and not yet answered with done or failed
        self._loads_pending = 0   # load requests sent and not yet answered: only the last one's answer counts

    # -- the process ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning

    def pid(self) -> int:
        return int(self.process.processId()) if self.running else 0

    def start(self) -> None:
        if self.running:
            return
        process = QProcess(self)
        command = engine_command()
        process.setProgram(command[0])
        process.setArguments(command[1:])
        process.setProcessEnvironment(_child_environment())
        process.readyReadStandardOutput.connect(self._read_replies)
        process.readyReadStandardError.connect(self._read_stderr)
        process.finished.connect(self._on_finished)
        process.errorOccurred.connect(self._on_error)
        self.process, self._buffer, self._stderr_tail, self._expected_exit = process, b"", [], False
        self.info, self._turns_running, self._loads_pending = None, set(), 0
        process.start()

    def _send(self, message: dict) -> None:
        self.start()
        self.process.write(protocol.encode(message))

    def stop(self, timeout_ms: int = 3000) -> None:
        """End the process: cancel what it is doing, ask it to quit, then kill it if it has not. Nothing it
        says meanwhile is reported, and no `died` signal follows."""
        if not self.running:
            return
        self._expected_exit = True
        self._cancel_work()   # the engine reads "quit" only between requests: a reply or load would hold it up
        self.process.write(protocol.encode({"op": "quit"}))
        self.process.closeWriteChannel()
        # The end of a cancelled reply must not reach the window: it has kept the reply as shown, interrupted.
        with QSignalBlocker(self):
            finished = self.process.waitForFinished(timeout_ms)
        if not finished:
            self.kill()

    def _cancel_work(self) -> None:
        for turn_id in sorted(self._turns_running):
            self.cancel(turn_id)
        if self._loads_pending:
            self.process.write(protocol.encode({"op": "cancel_load"}))

    def kill(self) -> None:
        """Stop now, whatever runs (cancelling a load, or quitting mid-generation)."""
        if self.running:
            self._expected_exit = True
            self.process.kill()
            self.process.waitForFinished(3000)


    # -- requests ---------------------------------------------------------------------------------

    def load(self, folder: str | Path) -> None:
        """Load `folder`; `loaded`, `load_failed` or `load_cancelled` answers the last load asked for, and
        an earlier one still under way is answered by nothing (the engine goes on to the next)."""
        self.folder, self.info = str(folder), None
        self._send({"op": "load", "folder": self.folder})
        self._loads_pending += 1

    def cancel_load(self) -> None:
        """The engine stops between two weight reads and answers load_cancelled; the process stays. A load
        that has just ended is not undone: its `loaded` still comes."""
        if self.running:
            self.process.write(protocol.encode({"op": "cancel_load"}))

    def restart(self) -> None:
        """A fresh process with the last model (after it died)."""
        self.kill()
        if self.folder is not None:
            self.load(self.folder)
        else:
            self.start()

    def start_turn(self, conversation_id: int | None, history: list[dict], user_text: str, options: dict,
                   images: list = (), audio: list[str] = ()) -> int:
        """A turn of conversation `conversation_id` (None: a side turn such as dictation); `images` are
        paths or [path, budget] pairs."""
        self._next_turn += 1
        self._send({"op": "turn", "turn": self._next_turn, "conversation": conversation_id, "history": history,
                    "text": user_text, "options": options, "images": list(images), "audio": list(audio)})
        self._turns_running.add(self._next_turn)
        return self._next_turn

    def cancel(self, turn_id: int) -> None:
        if self.running:
            self.process.write(protocol.encode({"op": "cancel", "turn": turn_id}))

    def count_tokens(self, conversation_id: int | None, history: list[dict], text: str, options: dict,
                     images: list = (), audio: list[str] = ()) -> int:
        """Ask for the exact prompt size of sending this draft; `counted` answers with the returned id."""
        self._next_count += 1
        if self.running:
            self.process.write(protocol.encode({
                "op": "count", "request": self._next_count, "conversation": conversation_id, "history": history,
                "text": text, "options": options, "images": list(images), "audio": list(audio)}))
        return self._next_count

    # -- replies ----------------------------------------------------------------------------------

    def _read_replies(self) -> None:
        self._buffer += bytes(self.process.readAllStandardOutput().data())
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self._dispatch(protocol.decode(line))

    def _dispatch(self, message: dict) -> None:
        kind = message["ev"]
        if kind in ("loaded", "load_failed", "load_cancelled"):
            self._loads_pending -= 1
            if self._loads_pending == 0:   # an earlier load's answer would tell of a model already being replaced
                self._answer_load(message)
        elif kind in ("done", "failed"):
            self._turns_running.discard(message["turn"])
        if kind == "ready":
            self.ready.emit()
        elif kind == "stage" and self._loads_pending <= 1:   # an earlier load's progress would mislead
            self.loading.emit(message["text"], message["fraction"])
        elif kind == "event":
            self.event.emit(message["turn"], message["kind"], message["text"])
        elif kind == "done":
            self.turn_finished.emit(message["turn"], message["stats"])
        elif kind == "failed":
            self.turn_failed.emit(message["turn"], message["error"])
        elif kind == "counted":
            self.counted.emit(message["request"], message["counts"])

    def _answer_load(self, message: dict) -> None:
        """The engine's answer to the last load: `folder` becomes the model it holds (a restart loads it again)."""
        if message["ev"] == "loaded":
            self.info = message["info"]
            self.folder = self.info["folder"]
            self.loaded.emit(self.info)
        elif message["ev"] == "load_failed":
            self.load_failed.emit(message["error"])
            self.folder = None
        else:
            self.folder = None
            self.load_cancelled.emit()

    def _read_stderr(self) -> None:
        text = bytes(self.process.readAllStandardError().data()).decode("utf-8", "replace")
        sys.stderr.write(text)
        self._stderr_tail = (self._stderr_tail + text.splitlines())[-STDERR_TAIL_LINES:]

    def _on_finished(self, exit_code: int, status: QProcess.ExitStatus) -> None:
        if self.sender() is not self.process:
            return
        self._read_replies()
        self.info = None
        if not self._expected_exit:
            crashed = status == QProcess.ExitStatus.CrashExit
            self.died.emit(explain_exit(exit_code, crashed, self._stderr_tail))

    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart and self.sender() is self.process:
            self.died.emit(f"The engine could not be started ({self.process.errorString()}).")


def _child_environment() -> QProcessEnvironment:
    """Our environment, plus this checkout on the module path so `-m app` finds the package."""
    environment = QProcessEnvironment.systemEnvironment()
    root = str(Path(__file__).resolve().parents[1])
    existing = environment.value("PYTHONPATH", "")
    environment.insert("PYTHONPATH", root + (os.pathsep + existing if existing else ""))
    environment.insert("PYTHONUNBUFFERED", "1")
    return environment
