"""The Windows installers, built here from a stand-in payload of the real shape and read
back the way a deployer's tools read them.

The MSI is built with wixl (the same recipe WiX v3 builds on the Windows runner) and read
with msiinfo and msiextract; the NSIS setup.exe is built with makensis and its bytes read.
Without those tools the tests skip, naming the Debian package, unless
BASTION_REQUIRE_PACKAGING_TOOLS=1 (CI installs them): then a missing tool fails.

`packaging/` is not an import package (and `packaging` is a PyPI package that must not be
shadowed), so the scripts are loaded from their files.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.packaging.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
WINDOWS = ROOT / "packaging" / "windows"
ICON = ROOT / "resources" / "icons" / "bastion.ico"
REQUIRED = os.environ.get("BASTION_REQUIRE_PACKAGING_TOOLS") == "1"

# The one UpgradeCode every Bastion MSI carries. If this test fails because the recipe's
# code changed, the recipe is wrong, not this constant: a new code makes the next release
# install beside the old one instead of replacing it.
UPGRADE_CODE = "{A8CA0B9D-A706-4592-9910-690C44AC3C85}"
OLD, NEW = "0.1.0", "0.2.0"

# Windows Installer's component attribute msidbComponentAttributes64bit, and its HKLM root.
COMPONENT_64BIT = 0x100
HKLM = "2"


make_installers = load_script(WINDOWS / "make_installers.py")
version_info = load_script(WINDOWS / "version_info.py")


def _need(*tools: tuple[str, str]) -> None:
    missing = [f"{tool} (Debian package {package})" for tool, package in tools if not _has(tool)]
    if not missing:
        return
    message = "missing " + ", ".join(missing)
    if REQUIRED:
        pytest.fail(f"{message}, and BASTION_REQUIRE_PACKAGING_TOOLS=1")
    pytest.skip(message)


def _has(tool: str) -> bool:
    return shutil.which(tool) is not None


def _need_wixl() -> None:
    _need(("wixl", "wixl"), ("wixl-heat", "wixl"), ("msiinfo", "msitools"))


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(arg) for arg in args], capture_output=True, encoding="utf-8", check=False, cwd=cwd
    )
    assert result.returncode == 0, f"{args[0]} failed: {result.stderr[-2000:]}"
    return result.stdout


def _table(msi: Path, table: str) -> list[dict[str, str]]:
    """One table as rows of column -> value (msiinfo's IDT export: names, types, key, rows)."""
    # Exporting a table of binary streams (Icon) writes them into a folder named after
    # the table in the working folder: keep that beside the MSI, not in the checkout.
    lines = _run("msiinfo", "export", msi, table, cwd=msi.parent).splitlines()
    columns = lines[0].split("\t")
    return [dict(zip(columns, line.split("\t"), strict=True)) for line in lines[3:]]


def _properties(msi: Path) -> dict[str, str]:
    return {row["Property"]: row["Value"] for row in _table(msi, "Property")}


def _long_name(file_name: str) -> str:
    # WiX writes "SHORT~1.EXT|long name"; wixl writes the long name alone.
    return file_name.rsplit("|", maxsplit=1)[-1]


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    built: Path = make_installers.make_stand_in_payload(tmp_path_factory.mktemp("frozen"))
    return built


@pytest.fixture(scope="module")
def payload_files(payload: Path) -> list[str]:
    return sorted(p.relative_to(payload).as_posix() for p in payload.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def msi(payload: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The older release, with the icon, as the release build has it."""
    _need_wixl()
    icon = ICON if ICON.is_file() else None
    built: Path = make_installers.build_msi(payload, OLD, tmp_path_factory.mktemp("msi"), icon)
    return built


@pytest.fixture(scope="module")
def newer_msi(payload: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _need_wixl()
    built: Path = make_installers.build_msi(payload, NEW, tmp_path_factory.mktemp("msi"), None)
    return built


# -- the MSI ---------------------------------------------------------------------------------


def test_msi_is_named_for_its_version_and_architecture(msi: Path) -> None:
    assert msi.name == f"Bastion-{OLD}-x64.msi"
    assert "Template: x64;1033" in _run("msiinfo", "suminfo", msi)


def test_msi_file_table_holds_every_payload_file_and_the_policy_templates(
    msi: Path, payload_files: list[str]
) -> None:
    names = Counter(_long_name(row["FileName"]) for row in _table(msi, "File"))
    expected = Counter(Path(relative).name for relative in payload_files)
    expected.update(["bastion.admx", "bastion.adml"])
    assert names == expected
    assert "Terms & Conditions.txt" in names  # wixl-heat does not escape this itself


def test_msi_extracts_the_payload_into_the_install_folder(
    msi: Path, payload: Path, payload_files: list[str], tmp_path: Path
) -> None:
    _need(("msiextract", "msitools"))
    _run("msiextract", "-C", tmp_path, msi)
    # ProgramFiles64Folder is a property resolved at install time; msiextract drops it.
    install_dir = tmp_path / "Bastion"
    extracted = sorted(
        p.relative_to(install_dir).as_posix() for p in install_dir.rglob("*") if p.is_file()
    )
    policies = ["policies/bastion.admx", "policies/en-US/bastion.adml"]
    assert extracted == sorted(payload_files + policies)
    nested = "_internal/PySide6/plugins/platforms/qwindows.dll"
    assert (install_dir / nested).read_bytes() == (payload / nested).read_bytes()
    admx = ROOT / "packaging" / "policy" / "bastion.admx"
    assert (install_dir / "policies" / "bastion.admx").read_bytes() == admx.read_bytes()


def test_msi_installs_per_machine_into_program_files(msi: Path) -> None:
    properties = _properties(msi)
    assert properties["ALLUSERS"] == "1"
    directories = {row["Directory"]: row for row in _table(msi, "Directory")}
    assert directories["INSTALLDIR"]["Directory_Parent"] == "ProgramFiles64Folder"
    assert directories["INSTALLDIR"]["DefaultDir"].rsplit("|", maxsplit=1)[-1] == "Bastion"
    components = _table(msi, "Component")
    # A 32-bit component would write its registry values under WOW6432Node.
    assert all(int(row["Attributes"]) & COMPONENT_64BIT for row in components), components


def test_msi_properties_carry_the_version_and_the_upgrade_code(msi: Path) -> None:
    properties = _properties(msi)
    assert properties["ProductName"] == "Bastion"
    assert properties["ProductVersion"] == OLD
    assert properties["UpgradeCode"] == UPGRADE_CODE
    assert properties["ARPNOMODIFY"] == "1"


def test_msi_start_menu_shortcut_starts_bastion(msi: Path) -> None:
    shortcuts = _table(msi, "Shortcut")
    assert [(row["Directory_"], row["Target"], row["WkDir"]) for row in shortcuts] == [
        ("ProgramMenuFolder", "[INSTALLDIR]Bastion.exe", "INSTALLDIR")
    ]
    assert _long_name(shortcuts[0]["Name"]) == "Bastion"
    sequence = {row["Action"] for row in _table(msi, "InstallExecuteSequence")}
    assert {"CreateShortcuts", "RemoveShortcuts"} <= sequence


def test_msi_upgrade_table_replaces_older_releases_and_refuses_downgrades(msi: Path) -> None:
    rows = _table(msi, "Upgrade")
    assert {row["UpgradeCode"] for row in rows} == {UPGRADE_CODE}
    older = [row for row in rows if row["ActionProperty"] == "WIX_UPGRADE_DETECTED"]
    assert [(row["VersionMin"], row["VersionMax"]) for row in older] == [("", OLD)]
    newer = [row for row in rows if row["ActionProperty"] == "WIX_DOWNGRADE_DETECTED"]
    assert [(row["VersionMin"], row["VersionMax"]) for row in newer] == [(OLD, "")]
    sequence = {row["Action"] for row in _table(msi, "InstallExecuteSequence")}
    assert {"FindRelatedProducts", "RemoveExistingProducts"} <= sequence
    conditions = [row["Condition"] for row in _table(msi, "LaunchCondition")]
    assert "NOT WIX_DOWNGRADE_DETECTED" in conditions


def test_a_newer_msi_is_a_major_upgrade_of_the_older_one(msi: Path, newer_msi: Path) -> None:
    old, new = _properties(msi), _properties(newer_msi)
    assert new["UpgradeCode"] == old["UpgradeCode"] == UPGRADE_CODE
    assert new["ProductCode"] != old["ProductCode"]
    assert new["ProductVersion"] == NEW
    # The newer MSI's FindRelatedProducts must match the installed older one.
    replaced = [
        row
        for row in _table(newer_msi, "Upgrade")
        if row["ActionProperty"] == "WIX_UPGRADE_DETECTED"
    ]
    assert [row["VersionMax"] for row in replaced] == [NEW]
    assert _version_key(OLD) < _version_key(NEW)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def test_msi_registry_records_the_install_folder_and_app_path(msi: Path) -> None:
    rows = {(row["Root"], row["Key"], row["Name"]): row["Value"] for row in _table(msi, "Registry")}
    assert rows[(HKLM, "SOFTWARE\\Bastion", "InstallDir")] == "[INSTALLDIR]"
    assert rows[(HKLM, "SOFTWARE\\Bastion", "Version")] == OLD
    app_path = "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\App Paths\\Bastion.exe"
    assert rows[(HKLM, app_path, "")] == "[INSTALLDIR]Bastion.exe"
    # The policy key is the administrator's; the installer must never write there.
    assert not [key for (_, key, _) in rows if key.upper().startswith("SOFTWARE\\POLICIES")]


def test_msi_add_remove_programs_icon_is_the_bastion_icon(msi: Path, newer_msi: Path) -> None:
    if not ICON.is_file():
        pytest.skip(f"{ICON} is not made yet")
    assert _properties(msi)["ARPPRODUCTICON"] == "BastionIcon.ico"
    assert [row["Name"] for row in _table(msi, "Icon")] == ["BastionIcon.ico"]
    # Built without an icon, the MSI still builds and names none.
    assert "ARPPRODUCTICON" not in _properties(newer_msi)


def test_msi_built_by_wixl_leaves_path_alone(msi: Path) -> None:
    # wixl 0.101 has no <Environment>, and later wixl inverts its Permanent flag; a PATH
    # entry that an uninstall left behind would be worse than none (see bastion.wxs).
    assert "Environment" not in _run("msiinfo", "tables", msi).split()


def test_msi_recipe_adds_the_install_folder_to_path_for_wix() -> None:
    _need(("wixl", "wixl"))
    # WiX builds the release MSI with AddToPath; wixl can still show what the preprocessor
    # hands the compiler.
    defines = ["-D", "Version=1.2.3", "-D", "PolicyDir=policy", "-D", "Win64=yes"]
    without = _run("wixl", "-E", *defines, WINDOWS / "bastion.wxs")
    text = _run("wixl", "-E", *defines, "-D", "AddToPath=yes", WINDOWS / "bastion.wxs")
    assert "<Environment" not in without
    assert (
        '<Environment Id="BastionOnPath" Name="PATH" Value="[INSTALLDIR]" Action="set" '
        'Part="last" System="yes" Permanent="no"/>'
    ) in text
    assert '<ComponentRef Id="SystemPath"/>' in text


# -- the NSIS setup.exe ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def setups(payload: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    _need(("makensis", "nsis"))
    icon = ICON if ICON.is_file() else None
    return {
        version: make_installers.build_nsis(
            payload, version, tmp_path_factory.mktemp(version), icon
        )
        for version in (OLD, NEW)
    }


def test_nsis_setup_is_a_32_bit_windows_nsis_installer(setups: dict[str, Path]) -> None:
    setup = setups[OLD]
    assert setup.name == f"Bastion-{OLD}-setup.exe"
    data = setup.read_bytes()
    assert data[:2] == b"MZ"
    (pe_offset,) = struct.unpack_from("<I", data, 0x3C)
    assert data[pe_offset : pe_offset + 4] == b"PE\0\0"
    (optional_magic,) = struct.unpack_from("<H", data, pe_offset + 24)
    assert optional_magic == 0x10B  # PE32: one stub that runs on every Windows
    # NSIS's first header: flags, then 0xDEADBEEF and "NullsoftInst".
    assert b"\xef\xbe\xad\xdeNullsoftInst" in data


def test_nsis_setup_carries_the_version_it_was_built_for(setups: dict[str, Path]) -> None:
    old, new = setups[OLD].read_bytes(), setups[NEW].read_bytes()
    # The version resource's strings are UTF-16LE, uncompressed in the stub.
    assert OLD.encode("utf-16-le") in old
    assert NEW.encode("utf-16-le") not in old
    assert NEW.encode("utf-16-le") in new
    assert OLD.encode("utf-16-le") not in new


def test_nsis_setup_installs_the_payload_and_the_policy_templates(
    setups: dict[str, Path], payload_files: list[str]
) -> None:
    # 7-Zip reads NSIS archives; it is a check beyond the brief, so it only ever skips.
    if not _has("7z"):
        pytest.skip("7z is missing (Debian package p7zip-full)")
    listing = _run("7z", "l", "-slt", setups[OLD])
    paths = {
        line.removeprefix("Path = ").replace("\\", "/")
        for line in listing.splitlines()
        if line.startswith("Path = ")
    }
    installed = {path for path in paths if not path.startswith("$PLUGINSDIR/")}
    installed.discard(str(setups[OLD]))  # 7z lists the archive itself first
    policies = {"policies/bastion.admx", "policies/en-US/bastion.adml"}
    assert installed == {*payload_files, *policies, "Uninstall.exe"}


def test_nsis_refuses_a_payload_its_uninstaller_would_leave_behind(
    payload: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "Bastion"
    shutil.copytree(payload, copy)
    (copy / "README.txt").write_text("not deleted by name on uninstall\n")
    with pytest.raises(make_installers.PackagingError, match=r"README\.txt"):
        make_installers.build_nsis(copy, OLD, tmp_path / "out", None)
    assert not (tmp_path / "out").exists()


def test_nsis_uninstaller_never_deletes_the_whole_install_folder() -> None:
    # The install folder may hold things that are not ours; the user's history must never
    # be one recursive delete away. Only our own entries go, by name.
    script = (WINDOWS / "bastion.nsi").read_text()
    uninstall = script[script.index('Section "Uninstall"') :]
    commands = [line.strip() for line in uninstall.splitlines()]
    recursive = [line for line in commands if line.startswith("RMDir /r")]
    assert recursive == ['RMDir /r "$INSTDIR\\_internal"']
    assert 'InstallDir "$LOCALAPPDATA\\Programs\\${APP_NAME}"' in script


# -- errors a builder can cause ----------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.2", "1.2.3.4", "v1.2.3", "1.2.3rc1", "256.0.0"])
def test_a_version_windows_installer_cannot_compare_is_refused(
    payload: Path, tmp_path: Path, version: str
) -> None:
    with pytest.raises(make_installers.PackagingError, match=r"version|Windows Installer"):
        make_installers.build_msi(payload, version, tmp_path, None)


def test_a_folder_that_is_not_the_frozen_app_is_refused(tmp_path: Path) -> None:
    (tmp_path / "Bastion.exe").write_bytes(b"MZ")
    with pytest.raises(make_installers.PackagingError, match=r"bastion-cli\.exe, _internal"):
        make_installers.build_nsis(tmp_path, OLD, tmp_path / "out", None)


@pytest.mark.skipif(sys.platform == "win32", reason="Windows uses WiX, found differently")
def test_a_missing_tool_is_named_with_its_package(
    payload: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(make_installers.PackagingError, match=r"apt-get install wixl"):
        make_installers.build_msi(payload, OLD, tmp_path, None)
    with pytest.raises(make_installers.PackagingError, match=r"apt-get install nsis"):
        make_installers.build_nsis(payload, OLD, tmp_path, None)


def test_cli_builds_both_installers_and_reports_errors_in_one_sentence(
    payload: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _need_wixl()
    _need(("makensis", "nsis"))
    out = tmp_path / "out"
    args = ["--payload", str(payload), "--version", OLD, "--out", str(out), "--no-icon"]
    assert make_installers.main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        f"Bastion-{OLD}-setup.exe",
        f"Bastion-{OLD}-x64.msi",
    ]
    capsys.readouterr()
    assert make_installers.main([*args[:3], "one", *args[4:]]) == 1
    assert capsys.readouterr().err.startswith("make_installers: The version must look like")


# -- the version resource for PyInstaller ------------------------------------------------------


class _Recorded:
    """Stands in for PyInstaller's versioninfo classes (they need pefile, Windows-only)."""

    def __init__(self, kind: str, *args: Any, **kwargs: Any) -> None:
        self.kind, self.args, self.kwargs = kind, args, kwargs


def _evaluate_like_pyinstaller(text: str) -> _Recorded:
    # PyInstaller's load_version_info_from_text_file eval()s the file with these names.
    names = (
        "VSVersionInfo",
        "FixedFileInfo",
        "StringFileInfo",
        "StringTable",
        "StringStruct",
        "VarFileInfo",
        "VarStruct",
    )
    scope = {name: (lambda *a, _n=name, **k: _Recorded(_n, *a, **k)) for name in names}
    # The text is our own generated file, evaluated with no builtins, as PyInstaller does.
    result = eval(text, {"__builtins__": {}}, scope)  # noqa: S307
    assert isinstance(result, _Recorded)
    return result


def test_version_file_is_what_pyinstaller_reads(tmp_path: Path) -> None:
    path = tmp_path / "version_info.txt"
    version_info.write_version_file("1.2.3", path)
    info = _evaluate_like_pyinstaller(path.read_text(encoding="utf-8"))
    assert info.kind == "VSVersionInfo"
    ffi = info.kwargs["ffi"]
    assert ffi.kwargs["filevers"] == ffi.kwargs["prodvers"] == (1, 2, 3, 0)
    string_file_info, var_file_info = info.kwargs["kids"]
    (table,) = string_file_info.args[0]
    language, structs = table.args
    strings = dict(struct.args for struct in structs)
    assert strings == {
        "CompanyName": "Bastion",
        "FileDescription": "Bastion",
        "FileVersion": "1.2.3.0",
        "InternalName": "Bastion",
        "LegalCopyright": "Apache-2.0",
        "OriginalFilename": "Bastion.exe",
        "ProductName": "Bastion",
        "ProductVersion": "1.2.3",
    }
    # The string table's language/code page must be the one the Translation entry names.
    (translation,) = var_file_info.args[0]
    assert translation.args == ("Translation", [0x0409, 1200])
    assert language.upper() == "040904B0"


def test_version_file_for_the_console_companion(tmp_path: Path) -> None:
    path = tmp_path / "cli_version.txt"
    version_info.write_version_file(
        "0.1.0",
        path,
        original_filename="bastion-cli.exe",
        file_description="Bastion command line",
    )
    info = _evaluate_like_pyinstaller(path.read_text(encoding="utf-8"))
    (table,) = info.kwargs["kids"][0].args[0]
    strings = dict(struct.args for struct in table.args[1])
    assert strings["OriginalFilename"] == "bastion-cli.exe"
    assert strings["FileDescription"] == "Bastion command line"


@pytest.mark.parametrize("version", ["1.2", "1.2.3.4", "1.2.x", "70000.0.0"])
def test_version_file_refuses_what_windows_cannot_store(tmp_path: Path, version: str) -> None:
    with pytest.raises(ValueError, match="version"):
        version_info.write_version_file(version, tmp_path / "v.txt")
