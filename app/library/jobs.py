"""Long library tasks on worker threads: a Hub download and a conversion.

The page polls them with a QTimer instead of receiving Qt signals: with PySide6 6.12 on Python 3.11,
every Signal.emit() from Python drops one reference to True (its return value is not owned), so a
progress signal emitted thousands of times during a download ends in a 'bool_dealloc' fatal error.
"""

from __future__ import annotations

import threading
from pathlib import Path

from engine.errors import EngineError

from .download import HubDownload


class Job:
    """Runs `work()` on its own thread; `progress`, `folder` and `error` are read by the GUI's timer."""

    what = "The task"

    def __init__(self) -> None:
        self.progress = None
        self.folder: str | None = None
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def done(self) -> bool:
        return not self._thread.is_alive() and (self.folder is not None or self.error is not None)

    def wait(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _report(self, step) -> None:
        self.progress = step

    def _run(self) -> None:
        try:
            self.folder = str(self.work())
        except EngineError as exc:
            self.error = str(exc)
        except Exception as exc:  # a full disk, a lost permission...: the page must hear of it, not wait forever
            self.error = f"{self.what} failed: {exc}"

    def work(self) -> Path:
        raise NotImplementedError


class DownloadJob(Job):
    what = "The download"

    def __init__(self, download: HubDownload):
        super().__init__()
        self.download = download

    def work(self) -> Path:
        return self.download.run(self._report)

    def pause(self) -> None:
        self.download.pause()

    def cancel(self) -> None:
        self.download.cancel()


class ConvertJob(Job):
    """Conversion uses MLX only on its own thread: it loads and evaluates its own arrays (one-thread rule)."""

    what = "The conversion"

    def __init__(self, source: Path, out: Path, bits: int, group_size: int = 64):
        super().__init__()
        self.source, self.out, self.bits, self.group_size = source, out, bits, group_size
        self._cancel = threading.Event()

    def work(self) -> Path:
        from engine import finish_thread
        from engine.convert import convert

        try:
            return convert(self.source, self.out, self.bits, self.group_size, progress=self._report,
                           cancel=self._cancel).folder
        finally:
            finish_thread()  # or quitting the app after a conversion may end in a crash report

    def cancel(self) -> None:
        self._cancel.set()
