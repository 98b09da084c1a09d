"""One Lantern per data folder: a second start brings the first one's window forward and quits.

Two instances would each load a model (twice the memory) and each purge the other's deleted chats at
start. Double-clicking the app on a Mac already reuses the running one; this covers `lantern-app`
from a terminal and `open -n`. A lock file decides who runs (Qt notices the lock of a crashed process
is stale); a local socket carries the second start's knock to the first.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from PySide6.QtCore import QLockFile, QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

_KNOCK_TIMEOUT_MS = 1000


class SingleInstance(QObject):
    knocked = Signal()   # another start of Lantern found this one running

    def __init__(self, folder: Path, parent: QObject | None = None):
        super().__init__(parent)
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = QLockFile(str(folder / "lantern.lock"))
        self._name = "lantern-" + hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
        self._server: QLocalServer | None = None

    def claim(self) -> bool:
        """True when this process is the one Lantern for the folder; otherwise the running one is told."""
        if not self._lock.tryLock(0):
            self._knock()
            return False
        QLocalServer.removeServer(self._name)   # a socket file left by a crash; the lock says nobody owns it
        self._server = QLocalServer(self)
        self._server.newConnection.connect(self._answer)
        self._server.listen(self._name)
        return True

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
