"""Fail closed on a built bundle whose layout would only break on a clean machine.

    python packaging/verify_bundle.py dist/Lantern.app     (macOS)
    python packaging/verify_bundle.py dist/lantern         (Linux onedir)

MLX looks for mlx.metallib next to the libmlx it actually loaded (or in Resources/ beside it), so the bundle
must hold exactly one real libmlx with the one metallib there; a second libmlx copy is how clean Macs end up
with "Failed to load the default metallib" while the developer's machine works.
"""

from __future__ import annotations

import plistlib
import sys
import tomllib
from pathlib import Path

LIBMLX_NAMES = ("libmlx.dylib", "libmlx.so")
METALLIB = "mlx.metallib"
# Pulled in only through optional imports of our dependencies; their presence means an exclude stopped working.
FORBIDDEN_NAMES = ("torch", "torchgen")
FORBIDDEN_PREFIXES = ("torch-", "libtorch", "QtWebEngine", "libQt6WebEngine", "Qt3D", "libQt63D", "libQt6Pdf")
REQUIRED_PLIST_KEYS = ("CFBundleIdentifier", "CFBundleShortVersionString", "LSMinimumSystemVersion",
                       "NSMicrophoneUsageDescription", "CFBundleDocumentTypes")


def real_files(root: Path, names: tuple[str, ...]) -> list[Path]:
    """Regular files (not symlinks) with one of these names anywhere under root."""
    return sorted(path for path in root.rglob("*") if path.name in names and path.is_file() and not path.is_symlink())


def metallib_problems(libmlx: Path, root: Path) -> list[str]:
    candidates = (libmlx.parent / METALLIB, libmlx.parent / "Resources" / METALLIB)
    found = next((path for path in candidates if path.exists()), None)
    if found is None:
        return [f"no {METALLIB} next to {libmlx.relative_to(root)}: MLX cannot find its Metal kernels"]
    metallibs = real_files(root, (METALLIB,))
    if len(metallibs) != 1:
        return [f"{len(metallibs)} copies of {METALLIB}, expected 1: {[str(p.relative_to(root)) for p in metallibs]}"]
    if found.resolve() != metallibs[0].resolve():
        return [f"{found.relative_to(root)} does not lead to the bundled {metallibs[0].relative_to(root)}"]
    return []


def libmlx_problems(root: Path) -> list[str]:
    copies = real_files(root, LIBMLX_NAMES)
    if len(copies) != 1:
        return [f"{len(copies)} real copies of libmlx, expected 1: {[str(p.relative_to(root)) for p in copies]}"]
    if copies[0].suffix == ".dylib":
        return metallib_problems(copies[0], root)
    return []


def forbidden_problems(root: Path) -> list[str]:
    return [f"unwanted file in the bundle: {path.relative_to(root)}" for path in root.rglob("*")
            if path.name in FORBIDDEN_NAMES or path.name.startswith(FORBIDDEN_PREFIXES)]


def dangling_link_problems(root: Path) -> list[str]:
    """A link whose target was filtered out of the bundle: the loader fails only when something needs it."""
    return [f"broken link: {path.relative_to(root)}" for path in root.rglob("*")
            if path.is_symlink() and not path.exists()]


def info_plist_problems(app: Path, pyproject: Path) -> list[str]:
    plist_path = app / "Contents" / "Info.plist"
    if not plist_path.is_file():
        return [f"{plist_path} is missing"]
    with plist_path.open("rb") as handle:
        plist = plistlib.load(handle)
    problems = [f"Info.plist lacks {key}" for key in REQUIRED_PLIST_KEYS if not plist.get(key)]
    with pyproject.open("rb") as handle:
        version = tomllib.load(handle)["project"]["version"]
    bundled = plist.get("CFBundleShortVersionString")
    if bundled != version:
        problems.append(f"Info.plist version {bundled!r} is not pyproject's {version!r}")
    return problems


def bundle_problems(bundle: Path, pyproject: Path) -> list[str]:
    if not bundle.is_dir():
        return [f"{bundle} is not a directory"]
    problems = libmlx_problems(bundle) + forbidden_problems(bundle) + dangling_link_problems(bundle)
    if bundle.suffix == ".app":
        problems += info_plist_problems(bundle, pyproject)
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    bundle = Path(argv[0])
    problems = bundle_problems(bundle, Path(__file__).resolve().parent.parent / "pyproject.toml")
    for problem in problems:
        print(f"verify_bundle: {problem}", file=sys.stderr)
    if not problems:
        print(f"verify_bundle: {bundle} ok (one libmlx{', metallib beside it' if bundle.suffix == '.app' else ''})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
