"""Presets, per-chat overrides, the context meter, menus and appearance on the real window."""

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QGuiApplication, QPalette

from app.appearance import apply_scheme
from app.context_meter import Usage
from app.settings_dialog import BUILT_IN_PRESETS, ChatSettingsDialog, PresetsDialog, chat_options, presets
from app.storage import Library
from tests.conftest import FIXTURES
from tests.test_app_window import send, shared_host, window  # noqa: F401  (fixtures)


def test_presets_are_seeded_edited_and_chosen_per_chat_with_overrides(qtbot, window):
    library = window.library
    assert set(presets(library)) == set(BUILT_IN_PRESETS)
    dialog = window.open_settings()
    qtbot.addWidget(dialog)
    dialog.picker.setCurrentText("Precise")
    dialog.form.temperature.setValue(0.55)
    dialog.form.system.setPlainText("Be brief.")
    dialog.save()
    dialog.add("Mine")
    assert presets(library)["Precise"]["temperature"] == 0.55 and presets(library)["Mine"]["system"] == "Be brief."

    window.new_chat()
    chat = ChatSettingsDialog(library, window.conversation.settings, window)
    qtbot.addWidget(chat)
    chat.preset.setCurrentText("Reasoning")
    assert chat.form.thinking.isChecked()    # the form shows the preset's values
    chat.form.top_k.setValue(7)
    window.set_chat_settings(chat.chat_settings())
    assert window.conversation.settings["overrides"] == {"top_k": 7}
    assert window.thinking_box.isChecked()   # the toggle follows the preset
    options = window.chat_options()
    assert options["top_k"] == 7 and options["thinking"] is True
    assert options["max_tokens"] == window.options["max_tokens"]   # the window's explicit choice wins
    assert chat_options(library, {"preset": "gone"}) == presets(library)["Balanced"]
    send(qtbot, window, "Hello with a preset")
    assert window.conversation.path[-1].role == "assistant"


def test_a_new_preset_takes_the_edits_and_the_preset_shown_keeps_its_values(qtbot, tmp_path):
    library = Library(tmp_path)
    dialog = PresetsDialog(library)
    qtbot.addWidget(dialog)
    assert dialog.picker.currentText() == "Balanced"
    dialog.form.temperature.setValue(0.2)
    assert dialog.add("Cool") and dialog.picker.currentText() == "Cool"
    dialog.done(0)
    assert presets(library)["Cool"]["temperature"] == 0.2
    assert presets(library)["Balanced"] == BUILT_IN_PRESETS["Balanced"]
    library.close()


def test_context_meter_is_the_exact_prompt_that_sending_the_draft_builds(qtbot, window):
    window.new_chat()
    window.set_chat_settings({"overrides": {"system": "Answer in one word."}})
    send(qtbot, window, "A first turn, so the draft follows a branch")
    window.media.drop.attach_paths([FIXTURES / "media" / "image_wide.png", FIXTURES / "media" / "image_tall.png"])
    window.media.attachments.set_budget(window.media.attachments.images[0], 70)
    tray_images = window.media.attachments.image_tokens
    window.input.setPlainText("some words to count " * 20)
    qtbot.waitUntil(lambda: window.context_meter.usage is not None and window.context_meter.usage.text > 80
                    and window.context_meter.usage.images == tray_images, timeout=10000)
    promised = window.context_meter.usage
    assert promised.limit == window.model_info["context_length"] and "images" in window.context_meter.label.text()
    qtbot.keyClick(window.input, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: window.pending is None, timeout=20000)
    stats = window.conversation.path[-1].stats
    assert stats["prompt_tokens"] == promised.total and stats["image_tokens"] == promised.images == tray_images

    nearly = Usage(text=900, images=0, audio=0, limit=1000)
    assert nearly.warning and "Nearly full" in nearly.describe()
    assert "Full" in Usage(1001, 0, 0, 1000).describe() and not Usage(10, 5, 5, 1000).warning
    window.context_meter.show_usage(nearly)
    assert window.context_meter.label.property("warning") is True


def test_menus_have_mac_roles_and_shortcuts(qtbot, window, tmp_path):
    actions = window.actions_by_name
    assert actions["settings"].menuRole() == QAction.MenuRole.PreferencesRole
    assert actions["about"].menuRole() == QAction.MenuRole.AboutRole
    assert actions["quit"].menuRole() == QAction.MenuRole.QuitRole
    assert actions["export_json"].menuRole() == QAction.MenuRole.NoRole
    assert actions["settings"].shortcut().toString() == "Ctrl+,"
    assert actions["search"].shortcut().toString() == "Ctrl+K"
    assert actions["new"].shortcut().toString() == "Ctrl+N"
    before = len(window.library.conversations())
    actions["new"].trigger()
    assert len(window.library.conversations()) == before + 1
    send(qtbot, window, "export me")
    markdown = window.export_chat_markdown(tmp_path / "md")
    assert "export me" in markdown.read_text(encoding="utf-8")
    assert window.backup_library(tmp_path / "backup").exists()
    unnamed = [w for w in window.findChildren(type(window.send_button)) if not w.accessibleName()]
    assert unnamed == []   # every push button has an accessible name


def test_finished_reply_is_announced(qtbot, window):
    send(qtbot, window, "announce me")
    assert "Gemma finished replying" in window.view.accessibleDescription()
    assert "Gemma finished replying" in window.statusBar().currentMessage()


def test_palette_follows_the_chosen_scheme(qapp, monkeypatch):
    original = qapp.palette()
    try:
        monkeypatch.setenv("LANTERN_APPEARANCE", "dark")
        apply_scheme(qapp)
        assert qapp.palette().color(QPalette.ColorRole.Window).lightness() < 80
        monkeypatch.setenv("LANTERN_APPEARANCE", "light")
        apply_scheme(qapp)
        assert qapp.palette().color(QPalette.ColorRole.Window).lightness() > 200
        monkeypatch.delenv("LANTERN_APPEARANCE")
        apply_scheme(qapp)   # no override: whatever the platform reports (offscreen: not dark)
        dark = QGuiApplication.styleHints().colorScheme() == Qt.ColorScheme.Dark
        assert (qapp.palette().color(QPalette.ColorRole.Window).lightness() < 80) == dark
    finally:
        qapp.setPalette(original)


def test_presets_of_a_read_only_history_are_shown_and_changes_say_why_they_are_not_kept(qtbot, tmp_path):
    Library(tmp_path).close()   # a history that never stored its presets
    library = Library(tmp_path, read_only=True)
    dialog = PresetsDialog(library)
    qtbot.addWidget(dialog)
    assert dialog.picker.currentText() == "Balanced" and dialog.picker.count() == len(BUILT_IN_PRESETS)
    dialog.form.temperature.setValue(0.2)
    dialog.save()
    assert "could not be written" in dialog.status.text()
    dialog.status.clear()
    assert not dialog.add("Cool") and "could not be written" in dialog.status.text()
    dialog.done(0)   # closing keeps edits where it can, and says so where it cannot
    assert presets(library) == BUILT_IN_PRESETS
    library.close()
