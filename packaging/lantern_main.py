"""Entry script of the frozen app: the same `main` as `python -m app`, so every flag (--self-test,
--engine-process for the engine's child process, which is started as [sys.executable, ...]) works frozen too."""

import sys

from app.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
