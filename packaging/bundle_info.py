"""Values the PyInstaller spec and the packaging tests share: names, paths, version and the Info.plist.

Loaded by file path (packaging/ is deliberately not a Python package: it would shadow PyPI's `packaging`).
"""

from __future__ import annotations

import plistlib
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
APP_NAME = "Lantern"
EXECUTABLE = "lantern"
ICON_PNG = ROOT / "resources" / "icons" / "lantern.png"
ICON_ICNS = ROOT / "resources" / "icons" / "lantern.icns"
ENTITLEMENTS = PACKAGING / "entitlements.plist"
ENTRY_SCRIPT = PACKAGING / "lantern_main.py"


def project_version(pyproject: Path = ROOT / "pyproject.toml") -> str:
    with pyproject.open("rb") as handle:
        return tomllib.load(handle)["project"]["version"]


def info_plist(template: Path = PACKAGING / "Info.plist") -> dict:
    """The committed Info.plist with the version keys taken from pyproject.toml, the one place it is kept."""
    with template.open("rb") as handle:
        values = plistlib.load(handle)
    version = project_version()
    values["CFBundleShortVersionString"] = version
    values["CFBundleVersion"] = version
    return values
