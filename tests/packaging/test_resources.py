"""The Linux desktop integration in resources/: the desktop entry and the AppStream
metainfo pass their validators, the hicolor icons have the sizes their folders say, and
every name that ties them together (the app id) agrees.

The validators are Debian's desktop-file-utils and appstream; where they are missing
these tests skip, unless BASTION_REQUIRE_PACKAGING_TOOLS=1 (CI) makes that a failure."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESOURCES = ROOT / "resources"
APP_ID = "org.bastion.Bastion"
DESKTOP_ENTRY = RESOURCES / "linux" / f"{APP_ID}.desktop"
METAINFO = RESOURCES / "linux" / f"{APP_ID}.metainfo.xml"
HICOLOR = RESOURCES / "icons" / "hicolor"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tool(name: str, debian_package: str) -> str:
    found = shutil.which(name)
    if found is not None:
        return found
    why = f"{name} is not installed (Debian package: {debian_package})"
    if os.environ.get("BASTION_REQUIRE_PACKAGING_TOOLS") == "1":
        pytest.fail(f"{why}; BASTION_REQUIRE_PACKAGING_TOOLS=1 requires it")
    pytest.skip(why)


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def desktop_entry() -> dict[str, str]:
    """The [Desktop Entry] group's keys (the file has no other group)."""
    keys: dict[str, str] = {}
    for line in DESKTOP_ENTRY.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            keys[key.strip()] = value.strip()
    return keys


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk, which comes first."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert head[12:16] == b"IHDR", f"{path} does not start with its IHDR chunk"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_the_desktop_entry_validates() -> None:
    done = run(tool("desktop-file-validate", "desktop-file-utils"), str(DESKTOP_ENTRY))
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    # Hints (suggestions) are fine; errors and warnings are not.
    assert not re.search(r": (error|warning): ", said), said


def test_the_metainfo_validates() -> None:
    done = run(tool("appstreamcli", "appstream"), "validate", "--no-net", str(METAINFO))
    assert done.returncode == 0, done.stdout + done.stderr


def test_each_hicolor_icon_has_the_size_its_folder_says() -> None:
    for size in SIZES:
        path = HICOLOR / f"{size}x{size}" / "apps" / f"{APP_ID}.png"
        assert path.is_file(), f"{path} is missing (resources/icons/render.sh makes it)"
        assert png_size(path) == (size, size), path
    folders = {p.name for p in HICOLOR.iterdir()}
    assert folders == {f"{n}x{n}" for n in SIZES} | {"scalable"}
    scalable = HICOLOR / "scalable" / "apps" / f"{APP_ID}.svg"
    assert scalable.read_bytes() == (RESOURCES / "icons" / "bastion.svg").read_bytes()


def test_the_window_icon_in_the_package_is_the_256_px_icon() -> None:
    packaged = ROOT / "desktop" / "bastion_desktop" / "resources" / "bastion.png"
    hicolor = HICOLOR / "256x256" / "apps" / f"{APP_ID}.png"
    assert packaged.read_bytes() == hicolor.read_bytes()


def test_the_windows_icon_holds_each_size() -> None:
    data = (RESOURCES / "icons" / "bastion.ico").read_bytes()
    reserved, kind, count = struct.unpack("<HHH", data[:6])
    assert (reserved, kind) == (0, 1)
    sizes = []
    for index in range(count):
        width, height, *_, length, offset = struct.unpack(
            "<BBBBHHII", data[6 + 16 * index : 22 + 16 * index]
        )
        sizes.append((width or 256, height or 256))
        assert offset + length <= len(data)
    assert sizes == [(n, n) for n in (16, 24, 32, 48, 64, 128, 256)]


def test_the_macos_icon_is_a_whole_icns_file() -> None:
    data = (RESOURCES / "icons" / "bastion.icns").read_bytes()
    assert data[:4] == b"icns"
    assert struct.unpack(">I", data[4:8])[0] == len(data)
    kinds, at = [], 8
    while at < len(data):
        kinds.append(data[at : at + 4])
        at += struct.unpack(">I", data[at + 4 : at + 8])[0]
    assert at == len(data)
    assert {b"is32", b"il32", b"it32", b"ic08", b"ic09"} <= set(kinds)


def test_the_names_agree_on_the_app_id() -> None:
    entry = desktop_entry()
    assert entry["Icon"] == APP_ID
    assert entry["Exec"] == "bastion"
    metainfo = METAINFO.read_text(encoding="utf-8")
    assert f"<id>{APP_ID}</id>" in metainfo
    assert f'<launchable type="desktop-id">{DESKTOP_ENTRY.name}</launchable>' in metainfo
    assert "<binary>bastion</binary>" in metainfo
