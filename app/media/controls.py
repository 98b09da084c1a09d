"""The composer's media buttons: attach a file, record a question, dictate; a level meter and countdown.

Buttons the loaded model cannot use are disabled with the reason as their tooltip, so "why is the
microphone grey?" answers itself.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QToolButton, QWidget

from .attachments import Attachments, unavailable_reason
from .recorder import Recorder

_METER_STEPS = 100


def _button(text: str, tip: str, name: str) -> QToolButton:
    button = QToolButton()
    button.setText(text)
    button.setToolTip(tip)
    button.setAccessibleName(name)   # the glyphs mean nothing to a screen reader
    return button


class MediaControls(QWidget):
    attach_requested = Signal()

    def __init__(self, attachments: Attachments, recorder: Recorder, parent: QWidget | None = None):
        super().__init__(parent)
        self.attachments = attachments
        self.recorder = recorder
        self.attach_button = _button("📎", "Attach images or audio (or drop / paste them)", "Attach files")
        self.mic_button = _button("🎤", "Record a question for the model (stop sends it, Esc cancels)",
                                  "Record a spoken question")
        self.dictate_button = _button("✎🎤", "Dictate: the model writes what you say into the input box (Esc "
                                      "cancels)", "Dictate into the message box")
        for button in (self.mic_button, self.dictate_button):
            button.setCheckable(True)
        self.meter = QProgressBar()
        self.meter.setRange(0, _METER_STEPS)
        self.meter.setTextVisible(False)
        self.meter.setMaximumWidth(90)
        self.countdown = QLabel()
        self._tips = {button: button.toolTip() for button in (self.attach_button, self.mic_button, self.dictate_button)}
        self._lay_out()
        self._connect()
        self._show_recording(False)

    def _lay_out(self) -> None:
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        for widget in (self.attach_button, self.mic_button, self.dictate_button, self.meter, self.countdown):
            row.addWidget(widget)
        row.addStretch()

    def _connect(self) -> None:
        self.attach_button.clicked.connect(self.attach_requested)
        self.mic_button.clicked.connect(lambda: self._toggle("ask"))
        self.dictate_button.clicked.connect(lambda: self._toggle("dictate"))
        self.recorder.recording_changed.connect(self._show_recording)
        self.recorder.level.connect(lambda rms, peak: self.meter.setValue(round(min(1.0, peak) * _METER_STEPS)))
        self.recorder.remaining.connect(lambda seconds: self.countdown.setText(f"{seconds:.0f} s left"))

    def _toggle(self, mode: str) -> None:
        """Start recording in `mode`, or stop (and use) a recording in that same mode; the other
        button does nothing meanwhile, so a question is never sent by reaching for Dictate."""
        if not self.recorder.recording:
            self.recorder.start(mode)
        elif self.recorder.mode == mode:
            self.recorder.stop()
        self._show_recording(self.recorder.recording)

    def _show_recording(self, recording: bool) -> None:
        mode = self.recorder.mode if recording else None
        self.mic_button.setChecked(mode == "ask")
        self.dictate_button.setChecked(mode == "dictate")
        self.mic_button.setText("■ Stop" if mode == "ask" else "🎤")
        self.dictate_button.setText("■ Stop" if mode == "dictate" else "✎🎤")
        self.meter.setVisible(recording)
        self.countdown.setVisible(recording)
        if not recording:
            self.meter.setValue(0)

    def set_model(self, modalities: frozenset[str] | set[str], variant: str = "") -> list[str]:
        """Enable what the model can take, explain the rest; returns notes about removed attachments."""
        notes = self.attachments.set_model(modalities, variant)
        no_audio = unavailable_reason(modalities, "audio", variant)
        no_image = unavailable_reason(modalities, "image", variant)
        for button, reason in ((self.mic_button, no_audio), (self.dictate_button, no_audio)):
            self._explain(button, reason)
        self._explain(self.attach_button, no_image and no_audio)
        if no_audio and self.recorder.recording:
            self.recorder.cancel()
        return notes

    def no_model(self) -> None:
        """Before a model is loaded (or after it is gone) nothing can write a dictation down."""
        self._explain(self.dictate_button, "load a model first: the model writes down what you say")

    def _explain(self, button: QToolButton, reason: str | None) -> None:
        button.setEnabled(reason is None)
        button.setToolTip(self._tips[button] if reason is None else reason[0].upper() + reason[1:])
