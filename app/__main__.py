"""`python -m app`: start Lantern."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .engine_protocol import ENGINE_FLAG

# Offline by construction: set before anything that might import huggingface_hub reads them.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lantern-app", description="Lantern: private, offline Gemma 4 chat")
    parser.add_argument("--model", type=Path, help="a Gemma 4 model folder to select and load at start")
    parser.add_argument("--self-test", action="store_true",
                        help="load --model, send one message, wait for the streamed reply, then exit (0 = all worked)")
    parser.add_argument("--screenshot", type=Path, help="with --self-test: save the window as this PNG")
    return parser.parse_args(argv)


def run_self_test(app, window, screenshot: Path | None, timeout_ms: int = 120_000) -> int:
    """Drive the real window through one turn; the exit code says whether every step worked."""
    from PySide6.QtCore import QDeadlineTimer, QThread

    deadline = QDeadlineTimer(timeout_ms)

    def wait_for(condition) -> bool:
        while not condition() and not deadline.hasExpired():
            app.processEvents()
            QThread.msleep(10)
        return condition()

    if not window.load_selected_model() or not wait_for(lambda: window.model_loaded):
        print(f"self-test: model not loaded: {window.model_status.text()}", file=sys.stderr)
        return 1
    window.send("Say hello in one short sentence.")
    if not wait_for(lambda: window.pending is None):
        print("self-test: no reply in time", file=sys.stderr)
        return 1
    if window.conversation is None or not window.conversation.path:
        print(f"self-test: the message was not sent: {window.notice_bar.label.text()}", file=sys.stderr)
        return 1
    answer = window.conversation.path[-1]
    if screenshot is not None:
        # The finished reply's bubbles were rebuilt just now; their layout settles over the next event passes.
        settled = QDeadlineTimer(300)
        wait_for(settled.hasExpired)
        window.grab().save(str(screenshot))
    print(f"self-test: reply of {answer.stats.get('generated_tokens', 0)} tokens")
    return 0 if answer.role == "assistant" and answer.stats else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if ENGINE_FLAG in argv:
        # The engine process (see engine_host.engine_command): no Qt, just the protocol.
        from .engine_process import main as engine_main

        return engine_main()
    args = parse_args(argv)
    from PySide6.QtWidgets import QApplication, QMessageBox

    from .appearance import follow_system_appearance
    from .main_window import MainWindow
    from .single_instance import SingleInstance
    from engine.convert import remove_abandoned_staging

    from .models import converted_models_dir
    from .storage import Library, LibraryUnavailable, data_dir

    app = QApplication(sys.argv[:1])
    app.setOrganizationName("Lantern")
    app.setApplicationName("Lantern")
    instance = SingleInstance(data_dir())
    if not instance.claim():
        print("Lantern is already running: its window was brought forward.")
        return 0
    follow_system_appearance(app)
    try:
        library, notice = Library.open_at_start()
    except LibraryUnavailable as error:   # nothing is damaged: say why and leave the file as it is
        print(error, file=sys.stderr)
        if not args.self_test:   # a self-test has nobody to click the dialog away
            QMessageBox.critical(None, "Lantern", str(error))
        instance.release()
        return 1
    # What a conversion killed midway left (often gigabytes): no other Lantern is converting, it runs once.
    remove_abandoned_staging(converted_models_dir())
    # A short reply is enough to prove the whole path works.
    options = {"max_tokens": 64} if args.self_test else None
    window = MainWindow(library, model_folders=[args.model.resolve().parent] if args.model else [],
                        options=options)
    if notice:
        window.show_notice(notice)
    selected = bool(args.model) and window.select_model(args.model.resolve())
    instance.knocked.connect(lambda: bring_forward(window))
    window.show()
    if args.self_test:
        status = run_self_test(app, window, args.screenshot) if selected else 1
        window.confirm = lambda question: True   # nobody is there to answer "stop the reply and quit?"
        window.close()
    else:
        if selected:
            window.auto_load()
        status = app.exec()
    dispose(window)
    instance.release()
    return status


def bring_forward(window) -> None:
    if window.isMinimized():
        window.showNormal()
    window.raise_()
    window.activateWindow()


def dispose(window) -> None:
    """Let Qt delete the window: Python's garbage collector deleting widgets directly at exit crashes."""
    from PySide6.QtCore import QCoreApplication, QEvent

    window.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


if __name__ == "__main__":
    sys.exit(main())
