#!/usr/bin/env bash
# Build dist/Lantern.app and dist/Lantern-<version>.dmg on an Apple Silicon Mac (macOS 14), sign, notarise, verify.
#
#   bash packaging/build_macos.sh
#
# Environment (all optional; without them the app is signed ad hoc and nothing is notarised):
#   PYTHON                       the interpreter with `.[packaging]` installed (default .venv/bin/python)
#   LANTERN_CODESIGN_IDENTITY    "Developer ID Application: NAME (TEAMID)", in the login or a CI keychain
#   LANTERN_NOTARY_PROFILE       a profile stored by `xcrun notarytool store-credentials`, or instead all three of
#   LANTERN_NOTARY_APPLE_ID, LANTERN_NOTARY_TEAM_ID, LANTERN_NOTARY_PASSWORD (an app-specific password)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
IDENTITY=${LANTERN_CODESIGN_IDENTITY:-}
APP=dist/Lantern.app
ENTITLEMENTS=packaging/entitlements.plist
MIN_MACOS=14.0

step() { printf '\n== %s\n' "$*"; }
die() { echo "build_macos: $*" >&2; exit 1; }

[[ $(uname -s) == Darwin && $(uname -m) == arm64 ]] || die "needs an Apple Silicon Mac (MLX has no x86-64 build)"
VERSION=$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
DMG=dist/Lantern-$VERSION.dmg

build() {
    step "build $APP $VERSION"
    rm -rf build/pyinstaller "$APP" dist/lantern
    "$PYTHON" -m PyInstaller --noconfirm --clean --distpath dist --workpath build/pyinstaller packaging/lantern.spec
}

is_macho() { file -b "$1" | grep -q 'Mach-O'; }

sign_one() {
    local timestamp=--timestamp
    [[ -n $IDENTITY ]] || timestamp=--timestamp=none
    codesign --force --sign "${IDENTITY:--}" --options runtime "$timestamp" "$@"
}

# PyInstaller signs as it collects; signing again, inside-out, makes sure the final signature of the app carries
# the entitlements (a second pass without them is how apps lose the microphone) and that nothing was missed.
sign_app() {
    step "sign every binary (${IDENTITY:-ad hoc})"
    local count=0
    while IFS= read -r -d '' file; do
        if is_macho "$file"; then
            sign_one "$file"
            count=$((count + 1))
        fi
    done < <(find "$APP/Contents/Frameworks" "$APP/Contents/Resources" -type f -print0)
    # Qt's frameworks are bundles of their own: their seal covers Info.plist, so they are signed as a whole too.
    while IFS= read -r -d '' framework; do
        sign_one "$framework"
    done < <(find "$APP/Contents/Frameworks" -type d -name '*.framework' -print0)
    sign_one --entitlements "$ENTITLEMENTS" "$APP/Contents/MacOS/lantern"
    sign_one --entitlements "$ENTITLEMENTS" "$APP"
    echo "signed $count libraries, the executable and the bundle"
}

check_metallib_target() {
    local libmlx minos
    libmlx=$(find "$APP" -name libmlx.dylib -type f | head -n 1)
    minos=$(otool -l "$libmlx" | awk '/LC_BUILD_VERSION/ {found = 1} found && $1 == "minos" {print $2; exit}')
    echo "libmlx.dylib built for macOS $minos"
    # A wheel built for a newer macOS carries a metallib that older systems refuse at the first GPU op.
    [[ $(printf '%s\n%s\n' "$minos" "$MIN_MACOS" | sort -V | tail -n 1) == "$MIN_MACOS" ]] ||
        die "libmlx targets macOS $minos, newer than LSMinimumSystemVersion $MIN_MACOS: build on macOS 14"
}

verify_app() {
    step "verify $APP"
    "$PYTHON" packaging/verify_bundle.py "$APP"
    check_metallib_target
    codesign --verify --deep --strict --verbose=2 "$APP"
    codesign -d --entitlements - --xml "$APP/Contents/MacOS/lantern" 2>/dev/null | grep -q 'device.audio-input' ||
        die "the final signature lost com.apple.security.device.audio-input"
    echo "bundle size: $(du -sh "$APP" | cut -f1)"
}

make_dmg() {
    step "make $DMG"
    local staging
    staging=$(mktemp -d)
    ditto "$APP" "$staging/Lantern.app"  # keeps links, signatures and extended attributes intact
    ln -s /Applications "$staging/Applications"
    rm -f "$DMG"
    hdiutil create -volname "Lantern" -srcfolder "$staging" -ov -format UDZO "$DMG"
    rm -rf "$staging"
    [[ -z $IDENTITY ]] || codesign --force --sign "$IDENTITY" --timestamp "$DMG"
    echo "dmg size: $(du -sh "$DMG" | cut -f1)"
}

notary_args() {
    if [[ -n ${LANTERN_NOTARY_PROFILE:-} ]]; then
        echo "--keychain-profile $LANTERN_NOTARY_PROFILE"
    elif [[ -n ${LANTERN_NOTARY_APPLE_ID:-} && -n ${LANTERN_NOTARY_TEAM_ID:-} && -n ${LANTERN_NOTARY_PASSWORD:-} ]]; then
        echo "--apple-id $LANTERN_NOTARY_APPLE_ID --team-id $LANTERN_NOTARY_TEAM_ID --password $LANTERN_NOTARY_PASSWORD"
    fi
}

notarize() {
    local args
    args=$(notary_args)
    if [[ -z $IDENTITY || -z $args ]]; then
        step "not notarised (needs LANTERN_CODESIGN_IDENTITY and notary credentials); Gatekeeper will warn"
        spctl --assess --type execute --verbose=2 "$APP" || true
        return
    fi
    step "notarise and staple $DMG"
    # shellcheck disable=SC2086 # the arguments are split on purpose
    xcrun notarytool submit "$DMG" $args --wait
    xcrun stapler staple "$DMG"
    xcrun stapler validate "$DMG"
    spctl --assess --type open --context context:primary-signature --verbose=2 "$DMG"
    spctl --assess --type execute --verbose=2 "$APP"
}

build
sign_app
verify_app
make_dmg
notarize
step "done: $DMG"
