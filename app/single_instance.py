"""One Lantern per data folder: a second start brings the first one's window forward and quits.

Two instances would each load a model (twice the memory) and each purge the other's deleted chats at
start. Double-clicking the app on a Mac already reuses the running one; this covers `lantern-app`
from a terminal and `open -n`. A lock file decides who runs (Qt notices the lock of a crashed process
is stale); a local socket carries the second start's knock to the first.

Only a lock held by someone else means "already running". A lock that cannot be written at all (disk
full, read-only folder) lets Lantern start unprotected, so that storage can explain the real problem.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from pathlib import Path

from PySide6.QtCore import QLockFile, QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

_KNOCK_TIMEOUT_MS = 1000


class SingleInstance(QObject):
    knocked = Signal()   # another start of Lantern found this one running

    def __init__(self, folder: Path, parent: QObject | None = None):
        super().__init__(parent)
        _try_to_make(folder)
        self._lock = QLockFile(str(folder / "lantern.lock"))
        self._name = "lantern-" + hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
        self._server: QLocalServer | None = None

    def claim(self) -> bool:
        """True when this process should run: it holds the folder's lock, or nobody can (the lock file
        cannot be written). False when another Lantern holds it; that one is told to come forward."""
        if self._lock.tryLock(0):
            self._listen()
            return True
        if self._lock.error() == QLockFile.LockError.LockFailedError:
            self._knock()
            return False
        print(f"Lantern could not write its lock file {self._lock.fileName()} ({self._lock.error().name}); "
              "starting without checking for another running Lantern.", file=sys.stderr)
        return True

    def _listen(self) -> None:
        QLocalServer.removeServer(self._name)   # a socket file left by a crash; the lock says nobody owns it
        self._server = QLocalServer(self)
        self._server.newConnection.connect(self._answer)
        self._server.listen(self._name)

    def release(self) -> None:
        if self._server is not None:
            self._server.close()
        self._lock.unlock()

    def _answer(self) -> None:
        while self._server.hasPendingConnections():
            self._server.nextPendingConnection().deleteLater()
            self.knocked.emit()

    def _knock(self) -> None:
        socket = QLocalSocket()
        socket.connectToServer(self._name)
        socket.waitForConnected(_KNOCK_TIMEOUT_MS)
        socket.disconnectFromServer()


def _try_to_make(folder: Path) -> None:
    # A folder that cannot be made is storage's to report, in words; here it only means no lock.
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
