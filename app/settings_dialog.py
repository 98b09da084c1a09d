"""Presets (system prompt + sampling + thinking + image budget) and a chat's own overrides of them."""

from __future__ import annotations

import sqlite3
from contextlib import suppress

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout,
                               QHBoxLayout, QInputDialog, QLabel, QPlainTextEdit, QPushButton, QSpinBox,
                               QVBoxLayout, QWidget)

from .storage import Library, change_or_report

IMAGE_BUDGETS = (70, 140, 280, 560, 1120)
PRESET_KEYS = ("system", "temperature", "top_p", "top_k", "max_tokens", "thinking", "image_budget")
# Gemma 4's recommended sampling (temperature 1.0, top-p 0.95, top-k 64) unless a preset says otherwise.
BUILT_IN_PRESETS = {
    "Balanced": {"system": "", "temperature": 1.0, "top_p": 0.95, "top_k": 64, "max_tokens": 2048,
                 "thinking": False, "image_budget": 280},
    "Precise": {"system": "Answer accurately and concisely. Say when you are not sure.", "temperature": 0.3,
                "top_p": 0.9, "top_k": 40, "max_tokens": 2048, "thinking": False, "image_budget": 280},
    "Reasoning": {"system": "", "temperature": 1.0, "top_p": 0.95, "top_k": 64, "max_tokens": 8192,
                  "thinking": True, "image_budget": 280},
    "Read documents (OCR)": {"system": "Transcribe the text in images exactly, keeping the layout.",
                             "temperature": 0.2, "top_p": 0.9, "top_k": 40, "max_tokens": 4096,
                             "thinking": False, "image_budget": 1120},
}
DEFAULT_PRESET = "Balanced"


def presets(library: Library) -> dict[str, dict]:
    """The user's presets; the built-in ones are stored the first time, so they can be edited too."""
    stored = library.presets()
    if not stored:
        with suppress(sqlite3.Error):   # a history that cannot be written (a full disk) uses them unsaved
            for name, settings in BUILT_IN_PRESETS.items():
                library.save_preset(name, settings)
        stored = library.presets() or dict(BUILT_IN_PRESETS)
    return stored


def chat_options(library: Library, chat_settings: dict, over_preset: dict | None = None) -> dict:
    """A chat's effective options: its preset, then `over_preset` (the window's own choices), then the chat's
    overrides, then its thinking toggle."""
    available = presets(library)
    preset = available.get(chat_settings.get("preset", DEFAULT_PRESET)) or available.get(DEFAULT_PRESET, {})
    overrides = {key: value for key, value in chat_settings.get("overrides", {}).items() if key in PRESET_KEYS}
    toggle = {"thinking": chat_settings["thinking"]} if "thinking" in chat_settings else {}
    return {**preset, **(over_preset or {}), **overrides, **toggle}


class SettingsForm(QWidget):
    """The fields a preset carries."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        form = QFormLayout(self)
        self.system = QPlainTextEdit(accessibleName="System prompt", maximumHeight=90)
        self.temperature = QDoubleSpinBox(accessibleName="Temperature", minimum=0.0, maximum=2.0, singleStep=0.05)
        # The engine takes top-p in (0, 1]: a 0 here would make every reply of the preset fail.
        self.top_p = QDoubleSpinBox(accessibleName="Top p", minimum=0.01, maximum=1.0, singleStep=0.01)
        self.top_k = QSpinBox(accessibleName="Top k", minimum=0, maximum=1000)
        self.max_tokens = QSpinBox(accessibleName="Maximum reply tokens", minimum=1, maximum=131072, singleStep=256)
        self.thinking = QCheckBox("Think before answering", accessibleName="Thinking")
        self.image_budget = QComboBox(accessibleName="Image token budget")
        for budget in IMAGE_BUDGETS:
            self.image_budget.addItem(f"{budget} tokens per image", budget)
        for label, widget in (("System prompt", self.system), ("Temperature", self.temperature),
                              ("Top-p", self.top_p), ("Top-k", self.top_k), ("Max tokens", self.max_tokens),
                              ("Thinking", self.thinking), ("Images", self.image_budget)):
            form.addRow(label, widget)

    def values(self) -> dict:
        return {"system": self.system.toPlainText().strip(), "temperature": round(self.temperature.value(), 3),
                "top_p": round(self.top_p.value(), 3), "top_k": self.top_k.value(),
                "max_tokens": self.max_tokens.value(), "thinking": self.thinking.isChecked(),
                "image_budget": self.image_budget.currentData()}

    def set_values(self, values: dict) -> None:
        defaults = BUILT_IN_PRESETS[DEFAULT_PRESET]
        values = {**defaults, **values}
        self.system.setPlainText(values["system"])
        self.temperature.setValue(values["temperature"])
        self.top_p.setValue(values["top_p"])
        self.top_k.setValue(values["top_k"])
        self.max_tokens.setValue(values["max_tokens"])
        self.thinking.setChecked(bool(values["thinking"]))
        self.image_budget.setCurrentIndex(max(0, self.image_budget.findData(values["image_budget"])))


class PresetsDialog(QDialog):
    """Settings (Cmd+,): edit, add and delete presets."""

    def __init__(self, library: Library, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.library = library
        self.picker = QComboBox(accessibleName="Preset")
        self.form = SettingsForm()
        self.save_button = QPushButton("Save preset", accessibleName="Save preset")
        self.new_button = QPushButton("New preset…", accessibleName="New preset")
        self.delete_button = QPushButton("Delete preset", accessibleName="Delete preset")
        self.status = QLabel(wordWrap=True)
        self.shown: str | None = None
        buttons = QHBoxLayout()
        for button in (self.new_button, self.delete_button, self.save_button):
            buttons.addWidget(button)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, rejected=self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.picker)
        layout.addWidget(self.form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(close)
        self.picker.currentTextChanged.connect(self._show)
        self.save_button.clicked.connect(self.save)
        self.new_button.clicked.connect(self._ask_new)
        self.delete_button.clicked.connect(self.delete)
        self._fill()

    def _fill(self, current: str | None = None) -> None:
        self.picker.blockSignals(True)
        self.picker.clear()
        self.picker.addItems(sorted(presets(self.library)))
        self.picker.blockSignals(False)
        self.picker.setCurrentIndex(max(0, self.picker.findText(current or DEFAULT_PRESET)))
        self._show(self.picker.currentText())

    def _show(self, name: str) -> None:
        """Switch the form to preset `name`, saving the edits of the one shown before (never lost)."""
        self._keep_edits()
        self.shown = name
        self.form.set_values(presets(self.library).get(name, {}))
        self._sync_buttons()

    def _keep_edits(self) -> None:
        """Save the form into the preset it shows, when that preset still exists and the form differs."""
        if self.shown in presets(self.library) and self.unsaved():
            with change_or_report(self.status.setText):
                self.library.save_preset(self.shown, self.form.values())

    def unsaved(self) -> bool:
        return self.form.values() != {**BUILT_IN_PRESETS[DEFAULT_PRESET], **presets(self.library).get(self.shown, {})}

    def save(self) -> None:
        with change_or_report(self.status.setText):
            self.library.save_preset(self.picker.currentText(), self.form.values())

    def add(self, name: str) -> bool:
        """A new preset with the form's values, shown next; the preset shown before keeps its saved values.
        False (and nothing changes) when the name is taken."""
        if name in presets(self.library):
            self.status.setText(f"There is already a preset named {name!r}; pick another name.")
            return False
        with change_or_report(self.status.setText):
            self.library.save_preset(name, self.form.values())
            self.shown = None   # "save as": the edits went into the new preset; the one shown keeps its saved values
            self._fill(name)
            return True
        return False

    def _ask_new(self) -> None:
        name, accepted = QInputDialog.getText(self, "New preset", "Name:")
        if accepted and name.strip():
            self.add(name.strip())

    def delete(self) -> None:
        """Delete the shown preset; chats that used it fall back to the default preset, which stays."""
        name = self.picker.currentText()
        if name == DEFAULT_PRESET:
            return
        with change_or_report(self.status.setText):
            self.library.delete_preset(name)
            self.shown = None   # its edits go with it
            self.status.setText(f"Deleted {name!r}; chats that used it now use {DEFAULT_PRESET!r}.")
            self._fill()

    def _sync_buttons(self) -> None:
        default = self.picker.currentText() == DEFAULT_PRESET
        self.delete_button.setEnabled(not default)
        self.delete_button.setToolTip(f"{DEFAULT_PRESET} is the preset every chat falls back to; edit it instead"
                                      if default else "")

    def done(self, result: int) -> None:
        """Closing keeps the edits of the preset shown, as switching to another one does."""
        self._keep_edits()
        super().done(result)


class ChatSettingsDialog(QDialog):
    """One chat's preset and its own changes to it (stored with the chat)."""

    def __init__(self, library: Library, chat_settings: dict, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Chat settings")
        self.library = library
        self.preset = QComboBox(accessibleName="Preset for this chat")
        self.preset.addItems(sorted(presets(library)))
        chosen = chat_settings.get("preset", DEFAULT_PRESET)   # a deleted preset: the default stands in, as in use
        self.preset.setCurrentText(chosen if chosen in presets(library) else DEFAULT_PRESET)
        self.form = SettingsForm()
        self.form.set_values(chat_options(library, chat_settings))
        self.preset.currentTextChanged.connect(lambda name: self.form.set_values(presets(library)[name]))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel,
                                   accepted=self.accept, rejected=self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.preset)
        layout.addWidget(self.form)
        layout.addWidget(buttons)

    def chat_settings(self) -> dict:
        """The preset's name and only the values that differ from it."""
        name = self.preset.currentText()
        base = presets(self.library)[name]
        overrides = {key: value for key, value in self.form.values().items() if base.get(key) != value}
        return {"preset": name, "overrides": overrides}
