"""One Lantern per data folder: a second start knocks on the first and quits."""

import os
import subprocess
import sys
from pathlib import Path

from app.single_instance import SingleInstance

REPO = Path(__file__).resolve().parents[1]


def test_a_second_instance_knocks_on_the_first_and_does_not_run(qtbot, tmp_path):
    first, second = SingleInstance(tmp_path), SingleInstance(tmp_path)
    assert first.claim()
    with qtbot.waitSignal(first.knocked, timeout=5000):
        assert not second.claim()
    first.release()
    third = SingleInstance(tmp_path)
    assert third.claim()   # a Lantern that quit leaves the folder free
    third.release()


def test_the_lock_of_a_crashed_lantern_does_not_block_the_next_start(qtbot, tmp_path):
    crashed = subprocess.run(
        [sys.executable, "-c", "import os, sys; from pathlib import Path\n"
         "from PySide6.QtCore import QCoreApplication\n"
         "from app.single_instance import SingleInstance\n"
         "app = QCoreApplication([])\n"
         "instance = SingleInstance(Path(sys.argv[1]))\n"
         "assert instance.claim()\n"
         "os._exit(0)   # no release: as if it crashed\n", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert crashed.returncode == 0, crashed.stderr
    assert (tmp_path / "lantern.lock").exists()
    later = SingleInstance(tmp_path)
    assert later.claim()
    later.release()


def test_a_second_app_start_says_so_and_exits(tmp_path):
    holder = SingleInstance(tmp_path / "data")
    assert holder.claim()
    try:
        env = {**os.environ, "LANTERN_DATA_DIR": str(tmp_path / "data"), "QT_QPA_PLATFORM": "offscreen",
               "XDG_CONFIG_HOME": str(tmp_path / "config"), "HF_HUB_CACHE": str(tmp_path / "hub")}
        result = subprocess.run([sys.executable, "-m", "app"], cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=60)
    finally:
        holder.release()
    assert result.returncode == 0 and "already running" in result.stdout


def test_a_lock_that_cannot_be_written_lets_lantern_start_and_says_so(tmp_path, capsys):
    # Like a full disk or a read-only folder: the lock file cannot be created, yet nobody else holds it.
    (tmp_path / "a file").write_text("")
    instance = SingleInstance(tmp_path / "a file" / "data")
    assert instance.claim()
    assert "starting without checking for another running Lantern" in capsys.readouterr().err
    instance.release()
