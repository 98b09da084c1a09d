"""`python -m app`: start Lantern."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Offline by construction: set before anything that might import huggingface_hub reads them.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lantern-app", description="Lantern: private, offline Gemma 4 chat")
    parser.add_argument("--model", type=Path, help="a Gemma 4 model folder to select and load at start")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from PySide6.QtWidgets import QApplication

    from .main_window import MainWindow
    from .storage import Library

    app = QApplication(sys.argv[:1])
    app.setOrganizationName("Lantern")
    app.setApplicationName("Lantern")
    window = MainWindow(Library(), model_folders=[args.model.resolve().parent] if args.model else [])
    if args.model and window.select_model(args.model.resolve()):
        window.load_selected_model()
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
