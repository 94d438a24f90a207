"""The Info.plist keys of Bastion.app beyond the ones PyInstaller writes itself.

packaging/pyinstaller/bastion.spec loads this file with `runpy.run_path` (`packaging/` is
not an import package, and `packaging` is a PyPI name that must never be shadowed), so it
uses the standard library only. The release workflow reads MINIMUM_MACOS from here too, as
the deployment target llama.cpp is compiled for, and make_installers.sh reads the value
back from the built app to check every bundled binary against it.
"""

from __future__ import annotations

import re

# The managed-preferences domain that the policy reader uses
# (bastion_desktop/core/policy/macos.py, PREFERENCE_DOMAIN): an MDM profile for
# org.bastion.Bastion reaches the app only if the bundle carries the same id.
BUNDLE_ID = "org.bastion.Bastion"

# The oldest macOS that every binary in the bundle loads on:
# - PySide6-Essentials 6.12, which `PySide6-Essentials>=6.8` resolves to on Python 3.12,
#   ships only macosx_14_0 wheels (6.10 and 6.11 were macosx_13_0, 6.8 and 6.9
#   macosx_12_0): Qt sets the floor.
# - llama.cpp builds and tests its Metal backend with a 13.3 deployment target; 14.0 is
#   above it. The release workflow exports this value as MACOSX_DEPLOYMENT_TARGET, so
#   llama.cpp's dylibs do not inherit the build runner's newer macOS as their minimum.
# make_installers.sh refuses a bundle holding a binary whose minimum is above this, so a
# new PySide6 that raises the floor again fails the build instead of the user's launch.
MINIMUM_MACOS = "14.0"

_RELEASE = re.compile(r"\d+(?:\.\d+)*")


def bundle_version(version: str) -> str:
    """The release part of a PEP 440 version as the three integers Apple requires.

    CFBundleShortVersionString and CFBundleVersion must be "period-separated integers";
    a pre-release such as 0.2.0rc1 is shown as 0.2.0 (the .pkg carries the full version).
    """
    match = _RELEASE.match(version)
    if match is None:
        raise ValueError(f"{version!r} does not start with a release number such as 1.2.3")
    numbers = [int(part) for part in match.group().split(".")][:3]
    numbers += [0] * (3 - len(numbers))
    return ".".join(str(number) for number in numbers)


def info_plist(version: str) -> dict[str, object]:
    """Keys merged over PyInstaller's defaults in BUNDLE(info_plist=...)."""
    release = bundle_version(version)
    return {
        "CFBundleIdentifier": BUNDLE_ID,
        "CFBundleName": "Bastion",
        "CFBundleDisplayName": "Bastion",
        "CFBundleShortVersionString": release,
        "CFBundleVersion": release,
        "LSMinimumSystemVersion": MINIMUM_MACOS,
        "LSApplicationCategoryType": "public.app-category.productivity",
        # Sharp text on Retina screens; without it macOS scales a 1x rendering up.
        "NSHighResolutionCapable": True,
        # Follow the system's dark mode instead of forcing the light appearance.
        "NSRequiresAquaSystemAppearance": False,
        "NSHumanReadableCopyright": "Copyright © the Bastion authors. Apache License 2.0.",
    }
