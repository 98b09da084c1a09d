"""How long the window takes for what grows with a chat: opening a long one, and rendering a long reply
as it streams. Prints milliseconds; run it before and after a change to the conversation view.

    QT_QPA_PLATFORM=offscreen python tools/app_timings.py [--turns 150] [--lines 1200]

Offscreen on Linux the figures are larger than on a Mac, but their ratios carry over.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPLY = ("Here is how you can do it:\n\n1. First step with **bold** and `code`\n2. Second step\n\n```python\n"
         + "\n".join(f"def f{i}(x):\n    return x * {i}" for i in range(15))
         + "\n```\n\n" + "And some more prose explaining the approach in detail. " * 5)


def open_long_chat(turns: int) -> None:
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from app.storage import Library

    library = Library()
    chat = library.create_conversation("Long chat")
    parent = None
    for turn in range(turns):
        question = library.add_message(chat, parent, "user", f"question {turn}: how do I do thing {turn}?")
        parent = library.add_message(chat, question, "assistant", REPLY, stats={"generated_tokens": 300})
    other = library.create_conversation("Short chat")
    window = MainWindow(library, model_folders=[])
    window.resize(1000, 700)
    window.show()
    for attempt in (1, 2):
        start = time.perf_counter()
        window.open_conversation(chat)
        QApplication.processEvents()
        print(f"open a {turns}-turn chat (#{attempt}): {1e3 * (time.perf_counter() - start):.0f} ms, "
              f"{len(window.view.bubbles)} of {2 * turns} bubbles built")
        window.open_conversation(other)
        QApplication.processEvents()
    window.close()
    window.host.stop()


def stream_long_reply(lines: int) -> None:
    from PySide6.QtWidgets import QApplication

    from app.widgets import ConversationView, MessageState

    for kind, opening, line in (("code block", "```python\n", "    x = compute(x, y) + 1  # step\n"),
                                ("prose", "", "word " * 6 + "\n")):
        view = ConversationView()
        view.resize(800, 600)
        view.show()
        reply = MessageState(None, "assistant", opening)
        view.show_messages([MessageState(1, "user", "write a lot"), reply])
        bubble = view.bubble_showing(reply)
        renders = []
        for index in range(1, lines + 1):
            reply.content += line
            if index % 40 == 0:   # a render every 40 lines, as the window's throttle would
                start = time.perf_counter()
                bubble.render_state()
                view.follow_stream()
                QApplication.processEvents()
                renders.append(time.perf_counter() - start)
        print(f"stream a {len(reply.content):,}-character {kind}: a render took {1e3 * renders[0]:.1f} ms at "
              f"first, {1e3 * renders[-1]:.1f} ms at the end")
        view.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=150)
    parser.add_argument("--lines", type=int, default=1200)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="lantern-timings-"))
    os.environ["LANTERN_DATA_DIR"] = str(scratch / "data")   # never the user's own history or settings
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(scratch / "settings"))

    app = QApplication.instance() or QApplication([])
    app.setApplicationName("LanternTimings")
    open_long_chat(args.turns)
    stream_long_reply(args.lines)


if __name__ == "__main__":
    main()
