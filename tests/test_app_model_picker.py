"""The main window's model picker: converted and added folders survive a restart, and the picked model stays
picked while the list is rebuilt. Nothing is loaded, so these tests never wait on the engine."""

import shutil

import pytest

from app.main_window import MainWindow
from app.models import remembered_folders
from app.storage import Library
from tests.conftest import MODELS
from tests.test_app_window import isolate, shared_host  # noqa: F401  (fixture)


@pytest.fixture
def open_window(qtbot, tmp_path, monkeypatch, shared_host):
    """Opens a window as `python -m app` does without --model; call it again to restart the app."""
    isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))   # no LM Studio models of the machine's user
    library = Library()
    windows = []

    def open_(folders=()):
        win = MainWindow(library, host=shared_host, model_folders=list(folders))
        qtbot.addWidget(win)
        windows.append(win)
        return win

    yield open_
    for win in windows:
        win.close()
    library.close()


def listed(win):
    return [win.model_picker.itemData(index) for index in range(win.model_picker.count())]


def test_a_model_converted_in_the_library_is_listed_after_a_restart(open_window, tmp_path):
    converted = tmp_path / "data" / "models" / "gemma-4-e2b-it-4bit"   # where the Model Library converts to
    shutil.copytree(MODELS / "tiny-e2b-q4", converted)
    assert listed(open_window()) == [str(converted)]


def test_an_added_folder_is_listed_after_a_restart(open_window, tmp_path):
    added = tmp_path / "my-models"
    shutil.copytree(MODELS / "tiny-e2b", added / "gemma-e2b")
    open_window().add_model_folder(added)
    assert listed(open_window()) == [str(added / "gemma-e2b")]


def test_rebuilding_the_list_keeps_the_picked_model(open_window):
    win = open_window([MODELS])
    assert win.select_model(MODELS / "tiny-e4b")
    win.refresh_models()
    assert win.model_picker.currentData() == str(MODELS / "tiny-e4b")


def test_adding_a_folder_picks_its_first_model_even_two_levels_down(open_window, tmp_path):
    win = open_window([MODELS])
    assert win.select_model(MODELS / "tiny-e4b")
    lm_studio = tmp_path / "lm-studio"
    shutil.copytree(MODELS / "tiny-e2b", lm_studio / "publisher" / "gemma-a")
    shutil.copytree(MODELS / "tiny-26b", lm_studio / "publisher" / "gemma-b")
    win.add_model_folder(lm_studio)
    assert win.model_picker.currentData() == str(lm_studio / "publisher" / "gemma-a")
    assert win.model_picker.currentText().startswith("publisher/gemma-a · ")


def test_a_folder_without_models_is_reported_and_not_kept(open_window, tmp_path):
    win = open_window([MODELS])
    assert win.select_model(MODELS / "tiny-e4b")
    before = listed(win)
    empty = tmp_path / "not-models"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a model")
    win.add_model_folder(empty)
    assert win.notice_bar.lines == [f"No Gemma 4 models found in {empty}"]
    assert listed(win) == before and win.model_picker.currentData() == str(MODELS / "tiny-e4b")
    assert remembered_folders() == []


def test_a_model_listed_through_a_symlinked_folder_is_selected_by_its_real_path(open_window, tmp_path):
    real = tmp_path / "drive" / "gemma-e2b"
    shutil.copytree(MODELS / "tiny-e2b", real)
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "gemma-e2b").symlink_to(real, target_is_directory=True)
    win = open_window([tmp_path / "links", tmp_path / "drive"])
    assert listed(win) == [str(tmp_path / "links" / "gemma-e2b")]   # listed once
    assert win.select_model(real) and win.model_picker.currentData() == str(tmp_path / "links" / "gemma-e2b")
