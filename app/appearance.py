"""Light or dark, as the system says, and Lantern's small stylesheet.

On a Mac the native style already follows the system appearance; the palette here matters where
the style does not (Fusion on Linux, offscreen screenshots), and the stylesheet only uses palette
roles, so it follows either way.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

APPEARANCE_ENV = "LANTERN_APPEARANCE"
STYLESHEET = Path(__file__).resolve().parents[1] / "resources" / "styles" / "lantern.qss"

DARK_COLORS = {
    QPalette.ColorRole.Window: "#1e1f22", QPalette.ColorRole.WindowText: "#e6e6e6",
    QPalette.ColorRole.Base: "#2b2d31", QPalette.ColorRole.AlternateBase: "#33363c",
    QPalette.ColorRole.Text: "#e6e6e6", QPalette.ColorRole.Button: "#2f3136",
    QPalette.ColorRole.ButtonText: "#e6e6e6", QPalette.ColorRole.Highlight: "#3d6fd1",
    QPalette.ColorRole.HighlightedText: "#ffffff", QPalette.ColorRole.ToolTipBase: "#2b2d31",
    QPalette.ColorRole.ToolTipText: "#e6e6e6", QPalette.ColorRole.PlaceholderText: "#9a9ca3",
    QPalette.ColorRole.Link: "#7aa7ff",
}
LIGHT_COLORS = {
    QPalette.ColorRole.Window: "#f5f5f7", QPalette.ColorRole.WindowText: "#1d1d1f",
    QPalette.ColorRole.Base: "#ffffff", QPalette.ColorRole.AlternateBase: "#e9eef7",
    QPalette.ColorRole.Text: "#1d1d1f", QPalette.ColorRole.Button: "#ececee",
    QPalette.ColorRole.ButtonText: "#1d1d1f", QPalette.ColorRole.Highlight: "#0a64d8",
    QPalette.ColorRole.HighlightedText: "#ffffff", QPalette.ColorRole.ToolTipBase: "#ffffff",
    QPalette.ColorRole.ToolTipText: "#1d1d1f", QPalette.ColorRole.PlaceholderText: "#6e6e73",
    QPalette.ColorRole.Link: "#0a64d8",
}


def is_dark_scheme() -> bool:
    """The system's choice; LANTERN_APPEARANCE=light|dark overrides it (screenshots, platforms whose
    theme does not report one)."""
    forced = os.environ.get(APPEARANCE_ENV, "").lower()
    if forced in ("light", "dark"):
        return forced == "dark"
    return QGuiApplication.styleHints().colorScheme() == Qt.ColorScheme.Dark


def palette_for(dark: bool) -> QPalette:
    palette = QPalette()
    for role, color in (DARK_COLORS if dark else LIGHT_COLORS).items():
        palette.setColor(role, QColor(color))
    return palette


def apply_scheme(app: QApplication) -> None:
    if app.style().name().lower() != "macos":   # the Mac style draws the system appearance itself
        app.setPalette(palette_for(is_dark_scheme()))


def follow_system_appearance(app: QApplication) -> None:
    """Apply the palette now and again whenever the system switches between light and dark."""
    apply_scheme(app)
    app.styleHints().colorSchemeChanged.connect(lambda _scheme: apply_scheme(app))
    if STYLESHEET.is_file():
        app.setStyleSheet(STYLESHEET.read_text(encoding="utf-8"))
