#!/usr/bin/env bash
# Signs Bastion.app, then makes its macOS installers: a .pkg (what MDMs deploy) and a .dmg.
#
#   packaging/macos/make_installers.sh APP VERSION OUTDIR
#   packaging/macos/make_installers.sh dist/Bastion.app 0.1.0 dist
#
# packaging/build.py runs it on macOS once the frozen app has passed its self-test. It
# writes OUTDIR/Bastion-VERSION-ARCH.pkg and OUTDIR/Bastion-VERSION-ARCH.dmg, ARCH being
# `uname -m` (arm64 or x86_64).
#
# Each step that needs credentials is skipped, with one line saying so, when they are unset:
#   MACOS_SIGNING_IDENTITY    "Developer ID Application: ..." signs the app and the dmg.
#                             Without it the app keeps PyInstaller's ad-hoc signature.
#   MACOS_INSTALLER_IDENTITY  "Developer ID Installer: ..." signs the pkg.
#   Notarization, with an App Store Connect API key:
#     APPLE_API_KEY_PATH (the .p8 file), APPLE_API_KEY_ID, APPLE_API_ISSUER
#   or with an Apple ID:
#     APPLE_ID, APPLE_TEAM_ID, APPLE_APP_PASSWORD (an app-specific password)
#   Notarization needs both identities: Apple accepts only signed code in signed packages.
#
# Written for the bash 3.2 that macOS ships: no mapfile, no associative arrays, and an
# array that may be empty is expanded as ${a[@]+"${a[@]}"} (set -u rejects "${a[@]}" of an
# empty array before bash 4.4).
set -euo pipefail

readonly BUNDLE_ID="org.bastion.Bastion"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly entitlements="$here/entitlements.plist"

say() { printf 'make_installers: %s\n' "$*"; }
die() {
    printf 'make_installers: %s\n' "$*" >&2
    exit 1
}

if [[ $# -ne 3 ]]; then
    die "usage: make_installers.sh APP VERSION OUTDIR"
fi
app="${1%/}"
version="$2"
outdir="$3"
executable="$app/Contents/MacOS/bastion"
[[ -x "$executable" ]] || die "$app is not Bastion's app bundle: $executable is missing"
# The version goes into file names and into the pkg's distribution XML.
[[ "$version" =~ ^[0-9][0-9A-Za-z.+-]*$ ]] || die "'$version' is not a version such as 1.2.3"
for tool in codesign ditto file hdiutil lipo otool pkgbuild plutil productbuild; do
    command -v "$tool" > /dev/null || die "$tool is missing (otool and lipo come with the Xcode Command Line Tools)"
done

arch="$(uname -m)"
case " $(lipo -archs "$executable") " in
    *" $arch "*) ;;
    *) die "$executable is not built for this Mac's architecture ($arch)" ;;
esac
minimum="$(plutil -extract LSMinimumSystemVersion raw -o - "$app/Contents/Info.plist")" ||
    die "$app/Contents/Info.plist has no LSMinimumSystemVersion (packaging/macos/info_plist.py)"

sign_identity="${MACOS_SIGNING_IDENTITY:-}"
installer_identity="${MACOS_INSTALLER_IDENTITY:-}"

# configured NAME...: true when every variable is set, false when none is, and an error
# when only some are, since that is a typo or a missing secret rather than a choice.
configured() {
    local name present=0 missing=""
    for name in "$@"; do
        if [[ -n "${!name:-}" ]]; then
            present=$((present + 1))
        else
            missing="$missing $name"
        fi
    done
    [[ $present -gt 0 ]] || return 1
    [[ -z "$missing" ]] || die "notarization is half configured: set$missing as well, or none of $*"
}

notarizing=false
if configured APPLE_API_KEY_PATH APPLE_API_KEY_ID APPLE_API_ISSUER; then
    [[ -f "$APPLE_API_KEY_PATH" ]] || die "APPLE_API_KEY_PATH names no file: $APPLE_API_KEY_PATH"
    notarizing=true
    notary_auth=(--key "$APPLE_API_KEY_PATH" --key-id "$APPLE_API_KEY_ID" --issuer "$APPLE_API_ISSUER")
elif configured APPLE_ID APPLE_TEAM_ID APPLE_APP_PASSWORD; then
    notarizing=true
    notary_auth=(--apple-id "$APPLE_ID" --team-id "$APPLE_TEAM_ID" --password "$APPLE_APP_PASSWORD")
fi
if [[ $notarizing == true ]]; then
    command -v xcrun > /dev/null || die "xcrun is missing (it comes with the Xcode Command Line Tools)"
    [[ -n "$sign_identity" ]] || die "notarization needs MACOS_SIGNING_IDENTITY: Apple notarizes signed code only"
    [[ -n "$installer_identity" ]] || die "notarization needs MACOS_INSTALLER_IDENTITY: Apple notarizes signed packages only"
fi

mkdir -p "$outdir"
pkg="$outdir/Bastion-$version-$arch.pkg"
dmg="$outdir/Bastion-$version-$arch.dmg"
work="$(mktemp -d "${TMPDIR:-/tmp}/bastion-installers.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Every Mach-O file in the bundle but the main executable (signed with the bundle itself),
# sorted into programs, which carry entitlements, and libraries, which take their host's.
programs=()
libraries=()
while IFS= read -r -d '' path; do
    [[ "$path" != "$executable" ]] || continue
    kind="$(file -b "$path")" || die "file could not read $path"
    case "$kind" in
        *Mach-O*executable*) programs+=("$path") ;;
        *Mach-O*) libraries+=("$path") ;;
    esac
done < <(find "$app/Contents" -type f -print0)

# is_newer A B: is the dotted version A above B?
is_newer() {
    local IFS=. i
    local -a a b
    read -r -a a <<< "$1"
    read -r -a b <<< "$2"
    for i in 0 1 2; do
        if ((10#${a[i]:-0} != 10#${b[i]:-0})); then
            ((10#${a[i]:-0} > 10#${b[i]:-0}))
            return
        fi
    done
    return 1
}

# The oldest macOS a Mach-O file loads on, once per architecture it holds.
required_macos() {
    otool -l "$1" | awk '
        $1 == "cmd" { legacy = ($2 == "LC_VERSION_MIN_MACOSX") }
        $1 == "minos" { print $2 }
        legacy && $1 == "version" { print $2; legacy = 0 }'
}

# LSMinimumSystemVersion is a promise to the user's Mac: a library built for a newer macOS
# (a new PySide6 wheel, llama.cpp compiled without MACOSX_DEPLOYMENT_TARGET) would make the
# app crash at launch there instead of Finder saying it needs a newer macOS.
too_new=""
for path in "$executable" ${programs[@]+"${programs[@]}"} ${libraries[@]+"${libraries[@]}"}; do
    requirements="$(required_macos "$path")" || die "otool could not read $path"
    while IFS= read -r required; do
        if [[ -n "$required" ]] && is_newer "$required" "$minimum"; then
            too_new="$too_new
  ${path#"$app/"} needs macOS $required"
        fi
    done <<< "$requirements"
done
[[ -z "$too_new" ]] ||
    die "binaries that need a newer macOS than LSMinimumSystemVersion $minimum (packaging/macos/info_plist.py):$too_new"

sign() {
    codesign --force --options runtime --timestamp --sign "$sign_identity" "$@"
}

if [[ -n "$sign_identity" ]]; then
    say "signing $app as \"$sign_identity\", with the hardened runtime"
    # Inside out, as codesign requires: signing a bundle seals the code already in it.
    # Apple: entitlements go on executables only; libraries run with their host's.
    for path in ${libraries[@]+"${libraries[@]}"}; do
        sign "$path"
    done
    for path in ${programs[@]+"${programs[@]}"}; do
        sign --entitlements "$entitlements" "$path"
    done
    # Nested bundles (the Qt and Python .framework folders), deepest first (-depth).
    while IFS= read -r -d '' bundle; do
        sign "$bundle"
    done < <(find "$app/Contents" -depth -type d \( -name '*.framework' -o -name '*.app' \) -print0)
    sign --entitlements "$entitlements" "$app"
    codesign --verify --deep --strict --verbose=2 "$app"
    # The hardened runtime applies from now on, and build.py's self-test ran before it.
    say "running the self-test of the signed app, under the hardened runtime"
    "$executable" doctor --self-test ||
        die "the signed app failed its self-test under the hardened runtime (see packaging/macos/entitlements.plist)"
else
    say "signing skipped: MACOS_SIGNING_IDENTITY is not set, so the app keeps PyInstaller's ad-hoc signature (it runs on this Mac; Gatekeeper stops it on others)"
fi

# notarize FILE: Apple scans FILE and the code in it, then the ticket is stapled to FILE so
# that Gatekeeper accepts it offline.
notarize() {
    local file="$1" result status=0 outcome id
    result="$work/notary-$(basename "$file").json"
    say "notarizing $(basename "$file"); this waits for Apple, usually a few minutes"
    xcrun notarytool submit "$file" "${notary_auth[@]}" --wait --timeout 1h \
        --output-format json > "$result" || status=$?
    outcome="$(plutil -extract status raw -o - "$result" 2> /dev/null || echo "no answer")"
    if [[ "$outcome" != "Accepted" ]]; then
        cat "$result" >&2 || true
        id="$(plutil -extract id raw -o - "$result" 2> /dev/null || true)"
        if [[ -n "$id" ]]; then
            xcrun notarytool log "$id" "${notary_auth[@]}" >&2 || true
        fi
        die "Apple did not notarize $(basename "$file"): $outcome (notarytool exit status $status)"
    fi
    xcrun stapler staple "$file"
}

say "making $pkg"
mkdir -p "$work/root" "$work/scripts" "$work/packages"
ditto "$app" "$work/root/Bastion.app"
pkgbuild --analyze --root "$work/root" "$work/component.plist"
# pkgbuild makes an app "relocatable" by default: Installer then updates whatever copy of
# org.bastion.Bastion it finds on the disk (one in ~/Downloads, a build folder) instead of
# installing into /Applications, where the link below and the admin guide expect it.
plutil -replace 0.BundleIsRelocatable -bool NO "$work/component.plist"
cat > "$work/scripts/postinstall" << 'POSTINSTALL'
#!/bin/sh
# Puts `bastion` on every user's PATH (/usr/local/bin is listed in /etc/paths).
# $3 is the volume being installed on: "/" for the running system.
set -e
bin="${3%/}/usr/local/bin"
link="$bin/bastion"
if [ -e "$link" ] && [ ! -L "$link" ]; then
    echo "Bastion: $link exists and is not a link; it is left as it is." >&2
    exit 0
fi
mkdir -p "$bin"
ln -sfn /Applications/Bastion.app/Contents/MacOS/bastion "$link"
POSTINSTALL
chmod 755 "$work/scripts/postinstall"
pkgbuild --root "$work/root" --component-plist "$work/component.plist" \
    --identifier "$BUNDLE_ID" --version "$version" --install-location /Applications \
    --scripts "$work/scripts" "$work/packages/Bastion.pkg"
# The distribution makes Installer (and an MDM's install log) refuse, with a reason, a Mac
# of the other architecture (an x86_64 package asks for Rosetta on Apple silicon) or an
# older macOS than the app's LSMinimumSystemVersion.
cat > "$work/distribution.xml" << DISTRIBUTION
<?xml version="1.0" encoding="utf-8"?>
<installer-gui-script minSpecVersion="2">
    <title>Bastion $version</title>
    <options customize="never" require-scripts="false" hostArchitectures="$arch"/>
    <domains enable_anywhere="false" enable_currentUserHome="false" enable_localSystem="true"/>
    <volume-check>
        <allowed-os-versions>
            <os-version min="$minimum"/>
        </allowed-os-versions>
    </volume-check>
    <choices-outline>
        <line choice="$BUNDLE_ID"/>
    </choices-outline>
    <choice id="$BUNDLE_ID" title="Bastion" visible="false">
        <pkg-ref id="$BUNDLE_ID"/>
    </choice>
    <pkg-ref id="$BUNDLE_ID" version="$version" onConclusion="none">Bastion.pkg</pkg-ref>
</installer-gui-script>
DISTRIBUTION
product=(--distribution "$work/distribution.xml" --package-path "$work/packages")
if [[ -n "$installer_identity" ]]; then
    product+=(--sign "$installer_identity" --timestamp)
else
    say "pkg signing skipped: MACOS_INSTALLER_IDENTITY is not set (an MDM may refuse an unsigned package)"
fi
productbuild "${product[@]}" "$pkg"

if [[ $notarizing == true ]]; then
    notarize "$pkg"
    # The pkg's notarization covered the app's code too: staple that ticket to the app, so
    # the copy in the dmg opens offline on first launch. Without it Gatekeeper looks the
    # ticket up online instead, so this is not worth failing a release for.
    xcrun stapler staple "$app" ||
        say "the app itself could not be stapled; Gatekeeper will look its ticket up online"
else
    say "notarization skipped: set APPLE_API_KEY_PATH, APPLE_API_KEY_ID and APPLE_API_ISSUER (or APPLE_ID, APPLE_TEAM_ID and APPLE_APP_PASSWORD)"
fi

say "making $dmg"
mkdir -p "$work/dmg"
ditto "$app" "$work/dmg/Bastion.app"
ln -s /Applications "$work/dmg/Applications"
rm -f "$dmg"
# hdiutil fails now and then with "Resource busy" while macOS's malware scanner reads the
# new image (actions/runner-images#7522): try again, waiting a little longer each time.
attempt=1
until hdiutil create -volname "Bastion $version" -srcfolder "$work/dmg" -format UDZO -ov "$dmg"; do
    [[ $attempt -lt 5 ]] || die "hdiutil could not create $dmg"
    say "hdiutil failed; trying again in $((attempt * 10)) s"
    sleep $((attempt * 10))
    attempt=$((attempt + 1))
done
if [[ -n "$sign_identity" ]]; then
    codesign --force --timestamp --sign "$sign_identity" "$dmg"
fi
if [[ $notarizing == true ]]; then
    notarize "$dmg"
fi

say "wrote $pkg and $dmg"
