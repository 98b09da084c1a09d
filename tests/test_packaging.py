"""The macOS bundle's metadata (Info.plist, entitlements), the spec's hidden imports, the icon and the verifier.

The bundle itself is built and run by .ci/run (packaging/build_linux.sh); these tests keep its inputs honest.
"""

from __future__ import annotations

import ast
import importlib.util
import plistlib
import tomllib
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"


def load_packaging_module(name: str):
    # By path: packaging/ is not a package (it would shadow PyPI's `packaging`).
    spec = importlib.util.spec_from_file_location(f"lantern_{name}", PACKAGING / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_plist(path: Path) -> dict:
    with path.open("rb") as handle:
        return plistlib.load(handle)


def spec_list(name: str) -> list[str]:
    """The string items of a top-level list assignment in packaging/lantern.spec."""
    tree = ast.parse((PACKAGING / "lantern.spec").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == name for target in node.targets):
            return [item.value for item in node.value.elts
                    if isinstance(item, ast.Constant) and isinstance(item.value, str)]
    raise AssertionError(f"lantern.spec assigns no {name}")


@pytest.fixture(scope="module")
def info_plist() -> dict:
    return load_plist(PACKAGING / "Info.plist")


def test_info_plist_identity_and_floor(info_plist):
    identifier = info_plist["CFBundleIdentifier"]
    assert identifier.count(".") >= 2 and " " not in identifier
    assert info_plist["LSMinimumSystemVersion"] == "14.0"
    assert info_plist["LSArchitecturePriority"] == ["arm64"]
    assert info_plist["LSRequiresNativeExecution"] is True
    assert info_plist["CFBundleIconFile"] == "lantern.icns"


def test_microphone_usage_is_explained(info_plist):
    text = info_plist["NSMicrophoneUsageDescription"]
    assert "microphone" in text.lower() and len(text) > 40


def test_app_nap_cannot_stall_a_reply_in_the_background(info_plist):
    # A napped window reads the engine's pipe late; a full pipe would stop the engine mid-reply.
    assert info_plist["NSAppSleepDisabled"] is True


def test_document_types_accept_images_and_audio(info_plist):
    types = {entry["CFBundleTypeName"]: entry for entry in info_plist["CFBundleDocumentTypes"]}
    assert "public.image" in types["Image"]["LSItemContentTypes"]
    assert "public.audio" in types["Audio"]["LSItemContentTypes"]
    assert "com.microsoft.waveform-audio" in types["Audio"]["LSItemContentTypes"]
    # Lantern opens dropped files but must not take over as the default viewer.
    assert {entry["LSHandlerRank"] for entry in types.values()} == {"Alternate"}


def test_bundle_version_comes_from_pyproject():
    with (ROOT / "pyproject.toml").open("rb") as handle:
        version = tomllib.load(handle)["project"]["version"]
    values = load_packaging_module("bundle_info").info_plist()
    assert values["CFBundleShortVersionString"] == version
    assert values["CFBundleVersion"] == version
    assert "CFBundleShortVersionString" not in load_plist(PACKAGING / "Info.plist")


def test_entitlements_are_hardened_runtime_with_audio_input_only():
    entitlements = load_plist(PACKAGING / "entitlements.plist")
    assert entitlements == {"com.apple.security.device.audio-input": True}
    # The sandbox-only microphone key would be silently ignored by a hardened, non-sandboxed app.
    assert "com.apple.security.device.microphone" not in entitlements


def test_spec_names_the_hidden_imports_and_they_exist():
    hidden = spec_list("HIDDEN_IMPORTS")
    assert {"mlx._reprlib_fix", "mlx.__array_api_info", "PySide6.QtMultimedia"} <= set(hidden)
    missing = [name for name in hidden if importlib.util.find_spec(name) is None]
    assert not missing, f"hidden imports that no longer exist: {missing}"


def test_spec_excludes_what_lantern_never_loads():
    excludes = set(spec_list("EXCLUDES"))
    assert {"torch", "PySide6.QtWebEngineCore", "PySide6.QtQuick", "PySide6.Qt3DCore"} <= excludes
    assert not excludes & {"mlx", "mlx.core", "PySide6.QtMultimedia", "PySide6.QtWidgets", "jinja2", "tokenizers",
                           "soundfile", "transformers"}


def test_icon_files_hold_the_sizes_macos_needs():
    png = Image.open(ROOT / "resources" / "icons" / "lantern.png")
    assert png.size == (1024, 1024) and png.mode == "RGBA"
    assert png.getpixel((0, 0))[3] == 0 and png.getpixel((512, 512))[3] == 255
    icns = Image.open(ROOT / "resources" / "icons" / "lantern.icns")
    assert {(16, 16, 2), (128, 128, 1), (256, 256, 2), (512, 512, 2)} <= set(icns.info["sizes"])


def make_bundle(root: Path, libmlx: list[str], metallib: list[str]) -> Path:
    root.mkdir()
    for relative in libmlx + metallib:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"\0")
    return root


@pytest.mark.parametrize("libmlx, metallib, expected", [
    (["Frameworks/mlx/lib/libmlx.dylib"], ["Frameworks/mlx/lib/mlx.metallib"], None),
    (["Frameworks/mlx/lib/libmlx.dylib"], ["Frameworks/mlx/lib/Resources/mlx.metallib"], None),
    (["Frameworks/mlx/lib/libmlx.dylib", "Frameworks/libmlx.dylib"], ["Frameworks/mlx/lib/mlx.metallib"],
     "2 real copies of libmlx"),
    (["Frameworks/mlx/lib/libmlx.dylib"], ["Resources/mlx.metallib"], "no mlx.metallib next to"),
    (["Frameworks/mlx/lib/libmlx.dylib"], ["Frameworks/mlx/lib/mlx.metallib", "Resources/mlx.metallib"],
     "2 copies of mlx.metallib"),
    ([], [], "0 real copies of libmlx"),
])
def test_verifier_checks_one_libmlx_with_its_metallib(tmp_path, libmlx, metallib, expected):
    verify = load_packaging_module("verify_bundle")
    problems = verify.bundle_problems(make_bundle(tmp_path / "lantern", libmlx, metallib), ROOT / "pyproject.toml")
    if expected is None:
        assert problems == []
    else:
        assert any(expected in problem for problem in problems), problems


def test_verifier_follows_a_metallib_symlink_to_the_one_real_copy(tmp_path):
    verify = load_packaging_module("verify_bundle")
    bundle = make_bundle(tmp_path / "Lantern", ["Frameworks/mlx/lib/libmlx.dylib"], ["Resources/mlx/lib/mlx.metallib"])
    (bundle / "Frameworks/mlx/lib/mlx.metallib").symlink_to("../../../Resources/mlx/lib/mlx.metallib")
    assert verify.bundle_problems(bundle, ROOT / "pyproject.toml") == []


def test_verifier_rejects_torch_in_the_bundle(tmp_path):
    verify = load_packaging_module("verify_bundle")
    bundle = make_bundle(tmp_path / "lantern", ["mlx/lib/libmlx.so", "torch/lib/libtorch_cpu.so"], [])
    assert any("torch" in problem for problem in verify.bundle_problems(bundle, ROOT / "pyproject.toml"))


def test_verifier_rejects_a_link_whose_target_was_dropped(tmp_path):
    verify = load_packaging_module("verify_bundle")
    bundle = make_bundle(tmp_path / "lantern", ["_internal/mlx/lib/libmlx.so"], [])
    (bundle / "_internal/libQt6Quick.so.6").symlink_to("PySide6/Qt/lib/libQt6Quick.so.6")
    assert verify.bundle_problems(bundle, ROOT / "pyproject.toml") == ["broken link: _internal/libQt6Quick.so.6"]


def test_every_file_the_spec_is_given_exists():
    info = load_packaging_module("bundle_info")
    for path in (info.ICON_PNG, info.ICON_ICNS, info.ENTITLEMENTS, info.ENTRY_SCRIPT):
        assert path.is_file(), path
