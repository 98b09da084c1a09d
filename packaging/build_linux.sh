#!/usr/bin/env bash
# Build the onedir bundle from packaging/lantern.spec and prove it runs from a clean environment. The same spec
# makes Lantern.app on macOS, so a module or file the spec forgets fails here, before any Mac sees the build.
#   packaging/build_linux.sh [PYTHON]        (default: .venv/bin/python, which needs the `packaging` extra)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-.venv/bin/python}
BUNDLE=$PWD/dist/lantern
MODEL=$PWD/tests/fixtures/models/tiny-e2b

start=$SECONDS
"$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN --distpath dist --workpath build/pyinstaller \
    packaging/lantern.spec
build_s=$((SECONDS - start))
"$PYTHON" packaging/verify_bundle.py "$BUNDLE"

# env -i: no PATH, PYTHONPATH, HF_HOME or LD_* of the developer can mask a missing piece. Run from an empty
# folder so nothing in the checkout can be imported by accident.
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
start=$SECONDS
(cd "$home" && env -i HOME="$home" PATH=/usr/bin:/bin QT_QPA_PLATFORM=offscreen \
    "$BUNDLE/lantern" --self-test --model "$MODEL" --screenshot "$home/self-test.png")
self_test_s=$((SECONDS - start))
test -s "$home/self-test.png" || { echo "bundle self-test wrote no screenshot" >&2; exit 1; }
echo "bundle: $(du -sh "$BUNDLE" | cut -f1) in $BUNDLE; build ${build_s}s, self-test ${self_test_s}s"
