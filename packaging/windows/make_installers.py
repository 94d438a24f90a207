#!/usr/bin/env python3
"""Build Bastion's Windows installers from the PyInstaller onedir folder.

    python packaging/windows/make_installers.py --payload dist/Bastion --version 0.1.0 \\
        --out dist/installers [--msi] [--nsis] [--icon resources/icons/bastion.ico]

With neither --msi nor --nsis it builds both:

* `Bastion-<version>-x64.msi`: per-machine, for GPO/Intune/SCCM (recipe: bastion.wxs).
* `Bastion-<version>-setup.exe`: per-user NSIS installer, no admin rights (bastion.nsi).

On Windows it drives the WiX Toolset v3 (heat, candle, light; on PATH or in %WIX%bin) and
makensis. Elsewhere it drives wixl and wixl-heat (Debian package wixl) and makensis (nsis),
which is how the recipes are checked on Linux (tests/packaging/test_windows_installers.py).
The payload's hundreds of files are harvested into a fragment at build time; the fragment is
never committed, so it cannot fall behind the payload.

Stdlib only, so that it runs on a bare CI runner before anything is installed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
WXS_RECIPE = HERE / "bastion.wxs"
NSIS_RECIPE = HERE / "bastion.nsi"
POLICY_DIR = REPO_ROOT / "packaging" / "policy"
POLICY_FILES = ("bastion.admx", "en-US/bastion.adml")
DEFAULT_ICON = REPO_ROOT / "resources" / "icons" / "bastion.ico"

MAIN_EXE = "Bastion.exe"
CLI_EXE = "bastion-cli.exe"
INTERNAL_DIR = "_internal"
# bastion.nsi's uninstaller deletes these by name rather than the whole install folder, so
# an NSIS build refuses a payload that has anything else at its top level.
PAYLOAD_TOP_LEVEL = frozenset({MAIN_EXE, CLI_EXE, INTERNAL_DIR})

# Windows Installer stores ProductVersion as major.minor.build with these limits, and
# compares only those three fields when deciding whether an MSI is an upgrade.
_VERSION = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")
_MSI_VERSION_LIMITS = (255, 255, 65535)

# The name of the harvested ComponentGroup and the folder it goes into, as bastion.wxs has them.
_HARVEST_GROUP = "PayloadFiles"
_HARVEST_DIRECTORY = "INSTALLDIR"
# xml.sax.saxutils.escape handles &, < and >; attribute values also need the double quote.
_QUOTE_ENTITY = {'"': "&quot;"}


class PackagingError(Exception):
    """A problem the person building can fix: a missing tool, a bad version, a wrong folder."""


def msi_file_name(version: str) -> str:
    return f"Bastion-{version}-x64.msi"


def nsis_file_name(version: str) -> str:
    return f"Bastion-{version}-setup.exe"


def check_version(version: str) -> None:
    match = _VERSION.fullmatch(version)
    if match is None:
        raise PackagingError(
            f"The version must look like 1.2.3 (three whole numbers), not {version!r}: "
            "Windows Installer compares only those three fields."
        )
    for part, limit in zip(match.groups(), _MSI_VERSION_LIMITS, strict=True):
        if int(part) > limit:
            raise PackagingError(
                f"Windows Installer versions are at most 255.255.65535; {version!r} is too large."
            )


def check_payload(payload: Path) -> None:
    """Refuse a folder that is not a PyInstaller onedir build of Bastion."""
    if not payload.is_dir():
        raise PackagingError(f"The payload folder {payload} does not exist.")
    expected = {MAIN_EXE: Path.is_file, CLI_EXE: Path.is_file, INTERNAL_DIR: Path.is_dir}
    missing = [name for name, exists in expected.items() if not exists(payload / name)]
    if missing:
        raise PackagingError(
            f"{payload} is not a frozen Bastion for Windows: it has no {', '.join(missing)}. "
            "Give --payload the PyInstaller onedir folder built on Windows."
        )
    for path in payload.rglob("*"):
        if "\n" in path.name or "\r" in path.name:
            raise PackagingError(f"A file name in the payload contains a line break: {path!r}.")


def payload_files(payload: Path) -> list[str]:
    """Every file under the payload, as a relative POSIX path, in harvest order.

    Top-level files come first, then the tree sorted by path components, so that every
    folder's entries are contiguous: wixl-heat opens a <Directory> whenever the folder of
    the next line differs from the last one, and would otherwise open the same folder twice.
    """
    relative = [path.relative_to(payload) for path in payload.rglob("*") if path.is_file()]
    relative.sort(key=lambda path: (len(path.parts) > 1, path.parts))
    return [path.as_posix() for path in relative]


def build_msi(payload: Path, version: str, out_dir: Path, icon: Path | None) -> Path:
    """Build `Bastion-<version>-x64.msi` into out_dir and return its path."""
    check_version(version)
    check_payload(payload)
    _check_icon(icon)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / msi_file_name(version)
    with tempfile.TemporaryDirectory(prefix="bastion-msi-") as scratch:
        work = Path(scratch)
        if sys.platform == "win32":
            built = _build_msi_with_wix(payload.resolve(), version, work, icon)
        else:
            built = _build_msi_with_wixl(payload.resolve(), version, work, icon)
        shutil.move(built, target)
    return target


def build_nsis(payload: Path, version: str, out_dir: Path, icon: Path | None) -> Path:
    """Build `Bastion-<version>-setup.exe` into out_dir and return its path."""
    check_version(version)
    check_payload(payload)
    unexpected = sorted(
        entry.name for entry in payload.iterdir() if entry.name not in PAYLOAD_TOP_LEVEL
    )
    if unexpected:
        raise PackagingError(
            f"The payload has {', '.join(unexpected)} at its top level, which the NSIS "
            "uninstaller would leave behind: it deletes only "
            f"{', '.join(sorted(PAYLOAD_TOP_LEVEL))} by name. Add the new entries to "
            "both sections of packaging/windows/bastion.nsi and to PAYLOAD_TOP_LEVEL."
        )
    _check_icon(icon)
    makensis = _find_makensis()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / nsis_file_name(version)
    with tempfile.TemporaryDirectory(prefix="bastion-nsis-") as scratch:
        built = Path(scratch) / nsis_file_name(version)
        defines = {
            "VERSION": version,
            "PAYLOAD_DIR": str(payload.resolve()),
            "POLICY_DIR": str(POLICY_DIR),
            "OUT_FILE": str(built),
        }
        if icon is not None:
            defines["ICON"] = str(icon.resolve())
        # -WX: a warning (say, a wildcard that matched nothing) fails the build rather than
        # shipping an installer that differs from the recipe.
        _run(
            [
                makensis,
                "-V2",
                "-WX",
                "-INPUTCHARSET",
                "UTF8",
                *(f"-D{name}={value}" for name, value in defines.items()),
                NSIS_RECIPE,
            ]
        )
        shutil.move(built, target)
    return target


def make_stand_in_payload(root: Path) -> Path:
    """Write a small fake of the frozen app under root/Bastion and return that folder.

    It has the real shape (the two executables, a nested _internal) and the names that
    break naive tooling: a space, and an ampersand, which wixl-heat does not escape.
    """
    payload = root / "Bastion"
    files = {
        MAIN_EXE: b"MZ stand-in for the windowed Bastion.exe\n",
        CLI_EXE: b"MZ stand-in for the console bastion-cli.exe\n",
        f"{INTERNAL_DIR}/python312.dll": b"MZ stand-in for python312.dll\n",
        f"{INTERNAL_DIR}/base_library.zip": b"PK stand-in for the frozen stdlib\n",
        f"{INTERNAL_DIR}/PySide6/plugins/platforms/qwindows.dll": b"MZ stand-in Qt plugin\n",
        f"{INTERNAL_DIR}/llama_cpp/lib/llama.dll": b"MZ stand-in for llama.dll\n",
        f"{INTERNAL_DIR}/llama_cpp/lib/ggml-cpu.dll": b"MZ stand-in for ggml-cpu.dll\n",
        f"{INTERNAL_DIR}/bastion_desktop/resources/starter model card.txt": b"stand-in\n",
        f"{INTERNAL_DIR}/licenses/Terms & Conditions.txt": b"stand-in\n",
    }
    for relative, content in files.items():
        path = payload / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return payload


def _check_icon(icon: Path | None) -> None:
    if icon is not None and not icon.is_file():
        raise PackagingError(f"The icon {icon} does not exist.")


def _build_msi_with_wixl(payload: Path, version: str, work: Path, icon: Path | None) -> Path:
    wixl = _find_linux_tool("wixl", "wixl")
    wixl_heat = _find_linux_tool("wixl-heat", "wixl")
    # wixl 0.101 cannot open an absolute Source path with GLib >= 2.71 (g_file_get_child
    # asserts; fixed after 0.101 in msitools commit 18bc0b2), so every input is linked into
    # the working folder and named relative to it.
    (work / "payload").symlink_to(payload, target_is_directory=True)
    (work / "policy").symlink_to(POLICY_DIR, target_is_directory=True)
    defines = {"Version": version, "PayloadDir": "payload", "PolicyDir": "policy", "Win64": "yes"}
    if icon is not None:
        (work / "bastion.ico").symlink_to(icon.resolve())
        defines["IconFile"] = "bastion.ico"
    # No AddToPath: wixl 0.101 has no <Environment> (see bastion.wxs).

    # wixl-heat writes each line into XML attributes unescaped (it escapes only "$"), so the
    # lines are escaped here. It stats a line only to tell folders from files, and every
    # line is a file, so an escaped name that does not exist on disk is still harvested.
    file_list = "".join(
        f"payload/{escape(relative, _QUOTE_ENTITY)}\n" for relative in payload_files(payload)
    )
    harvest = _run(
        [
            wixl_heat,
            "--directory-ref",
            _HARVEST_DIRECTORY,
            "--component-group",
            _HARVEST_GROUP,
            "--var",
            "var.PayloadDir",
            "--prefix",
            "payload/",
            "--win64",
        ],
        cwd=work,
        stdin=file_list,
        fail_on_warnings=True,
    )
    fragment = work / "payload.wxs"
    fragment.write_text(harvest, encoding="utf-8")

    built = work / msi_file_name(version)
    _run(
        [
            wixl,
            "--arch",
            "x64",
            *_defines("-D", defines),
            "--output",
            built,
            WXS_RECIPE,
            fragment,
        ],
        cwd=work,
        fail_on_warnings=True,
    )
    return built


def _build_msi_with_wix(payload: Path, version: str, work: Path, icon: Path | None) -> Path:
    heat = _find_wix_tool("heat")
    candle = _find_wix_tool("candle")
    light = _find_wix_tool("light")
    fragment = work / "payload.wxs"
    # -ag: component GUIDs computed at compile time from the install path, so they stay the
    # same from build to build; -srd: the payload folder itself is INSTALLDIR, not a child
    # of it; -sreg/-scom: no COM registration harvested from the DLLs.
    _run(
        [
            heat,
            "dir",
            payload,
            "-nologo",
            "-ag",
            "-srd",
            "-sreg",
            "-scom",
            "-cg",
            _HARVEST_GROUP,
            "-dr",
            _HARVEST_DIRECTORY,
            "-var",
            "var.PayloadDir",
            "-out",
            fragment,
        ]
    )
    defines = {
        "Version": version,
        "PayloadDir": str(payload),
        "PolicyDir": str(POLICY_DIR),
        "Win64": "yes",
        "AddToPath": "yes",
    }
    if icon is not None:
        defines["IconFile"] = str(icon.resolve())
    _run(
        [
            candle,
            "-nologo",
            "-arch",
            "x64",
            *_defines("-d", defines),
            "-out",
            f"{work}{os.sep}",
            WXS_RECIPE,
            fragment,
        ]
    )
    built = work / msi_file_name(version)
    _run(
        [
            light,
            "-nologo",
            "-spdb",
            "-out",
            built,
            work / "bastion.wixobj",
            work / "payload.wixobj",
        ]
    )
    return built


def _defines(flag: str, defines: Mapping[str, str]) -> list[str]:
    if flag == "-D":
        return [part for name, value in defines.items() for part in (flag, f"{name}={value}")]
    return [f"{flag}{name}={value}" for name, value in defines.items()]


def _find_linux_tool(name: str, debian_package: str) -> Path:
    found = shutil.which(name)
    if found is None:
        raise PackagingError(
            f"{name} was not found on PATH. On Debian or Ubuntu install it with "
            f"`apt-get install {debian_package}`."
        )
    return Path(found)


def _find_wix_tool(name: str) -> Path:
    found = shutil.which(name)
    if found is not None:
        return Path(found)
    # The WiX v3 installer sets WIX to its folder (with a trailing backslash) rather than
    # adding bin\ to PATH.
    wix_home = os.environ.get("WIX")
    if wix_home:
        candidate = Path(wix_home) / "bin" / f"{name}.exe"
        if candidate.is_file():
            return candidate
    raise PackagingError(
        f"{name}.exe of the WiX Toolset v3 was not found on PATH or in %WIX%bin. Install "
        "WiX v3 (for example `choco install wixtoolset`) or put its bin folder on PATH."
    )


def _find_makensis() -> Path:
    found = shutil.which("makensis")
    if found is not None:
        return Path(found)
    if sys.platform == "win32":
        # The NSIS installer (and Chocolatey's package) does not put makensis on PATH.
        for variable in ("ProgramFiles(x86)", "ProgramFiles"):
            folder = os.environ.get(variable)
            if folder and (Path(folder) / "NSIS" / "makensis.exe").is_file():
                return Path(folder) / "NSIS" / "makensis.exe"
        raise PackagingError(
            "makensis.exe was not found on PATH or in Program Files\\NSIS. Install NSIS 3 "
            "(for example `choco install nsis`)."
        )
    raise PackagingError(
        "makensis was not found on PATH. On Debian or Ubuntu install it with "
        "`apt-get install nsis`."
    )


def _run(
    command: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    stdin: str | None = None,
    fail_on_warnings: bool = False,
) -> str:
    args = [str(part) for part in command]
    tool = Path(args[0]).name
    result = subprocess.run(
        args,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        check=False,
    )
    output = "\n".join(part.strip() for part in (result.stdout, result.stderr) if part.strip())
    if result.returncode != 0:
        raise PackagingError(f"{tool} failed (exit status {result.returncode}):\n{output}")
    if fail_on_warnings:
        # wixl ignores what it does not support with a GLib warning and exit status 0 (an
        # unknown attribute, say); the MSI would then silently differ from the recipe.
        warnings = [
            line for line in result.stderr.splitlines() if "WARNING" in line or "CRITICAL" in line
        ]
        if warnings:
            raise PackagingError(
                f"{tool} ignored parts of the recipe that it does not support:\n"
                + "\n".join(warnings)
            )
    return result.stdout


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build Bastion's Windows installers (MSI and per-user NSIS setup.exe)."
    )
    parser.add_argument("--payload", type=Path, required=True, help="the PyInstaller onedir")
    parser.add_argument("--version", required=True, help="X.Y.Z")
    parser.add_argument("--out", type=Path, required=True, help="folder for the installers")
    parser.add_argument("--msi", action="store_true", help="build the MSI")
    parser.add_argument("--nsis", action="store_true", help="build the NSIS setup.exe")
    icon_default = DEFAULT_ICON if DEFAULT_ICON.is_file() else None
    parser.add_argument(
        "--icon",
        type=Path,
        default=icon_default,
        help=f"the .ico for Add/Remove Programs and the installer (default: {DEFAULT_ICON}"
        " when it exists)",
    )
    parser.add_argument("--no-icon", action="store_true", help="build without an icon")
    args = parser.parse_args(argv)
    icon: Path | None = None if args.no_icon else args.icon
    both = not args.msi and not args.nsis

    builders = []
    if args.msi or both:
        builders.append(build_msi)
    if args.nsis or both:
        builders.append(build_nsis)
    try:
        for build in builders:
            started = time.monotonic()
            built = build(args.payload, args.version, args.out, icon)
            elapsed = time.monotonic() - started
            size_mib = built.stat().st_size / 2**20
            print(f"{built} ({size_mib:.1f} MiB, {elapsed:.1f} s)")
    except PackagingError as error:
        print(f"make_installers: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
