import os
import shutil
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
