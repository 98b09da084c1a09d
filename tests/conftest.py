import os
import resource
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

FIXTURES = Path(__file__).parent / "fixtures"
MODELS = FIXTURES / "models"
REFERENCE = FIXTURES / "reference"


@pytest.fixture
def model_copy(tmp_path):
    """A writable copy of a fixture model folder, for tests that damage it."""
    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(MODELS / name, target)
        return target
    return copy


@contextmanager
def files_cut_at(size: int):
    """Every file this process writes stops growing at `size` bytes, the write failing (EFBIG) as on a full
    disk: what a crash or a full disk in the middle of a save leaves behind."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    signal_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, signal_handler)
