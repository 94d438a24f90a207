"""The Linux packages that `./dev package` built, checked as a user and an administrator
would: the .deb installed with apt on a clean Debian 12 (mmdebstrap), the .rpm's
contents, requirements and scripts, the tarball's layout.

They need the built packages in dist/. Without them the tests skip, except where
BASTION_REQUIRE_PACKAGES=1 (CI builds the packages first): then a missing package fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packaging.linux_root import CleanRoot, can_build_roots, clean_debian_root
from tests.packaging.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
DIST = Path(os.environ.get("BASTION_DIST", ROOT / "dist"))
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
REQUIRED = os.environ.get("BASTION_REQUIRE_PACKAGES") == "1"
PASSPHRASE = "correct horse battery staple"  # noqa: S105  (a throwaway test passphrase)

pytestmark = pytest.mark.timeout(1800)


def _artifact(name: str) -> Path:
    path = DIST / name
    if not path.is_file():
        message = f"{path} is not built (run ./dev package)"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return path


def _need(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        if os.environ.get("BASTION_REQUIRE_PACKAGING_TOOLS") == "1":
            pytest.fail(f"{tool} is missing (Debian package {package})")
        pytest.skip(f"{tool} is missing (Debian package {package})")


# -- the .deb on a clean Debian ----------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CleanRoot]:
    """A clean Debian 12 with the .deb installed by apt, as a user would."""
    deb = _artifact(f"bastion_{VERSION}_amd64.deb")
    why_not = can_build_roots()
    if why_not:
        if REQUIRED:
            pytest.fail(why_not)
        pytest.skip(why_not)
    with clean_debian_root(tmp_path_factory.mktemp("clean-debian")) as root:
        shutil.copy(deb, root.file("/tmp/bastion.deb"))
        result = root.run("apt-get update -qq && apt-get install -y -qq /tmp/bastion.deb")
        assert result.returncode == 0, result.stderr[-3000:]
        yield root


def test_apt_installs_the_app_the_command_and_the_desktop_files(installed: CleanRoot) -> None:
    assert installed.file("/opt/bastion/bastion").is_file()
    assert str(installed.file("/usr/bin/bastion").readlink()) == "/opt/bastion/bastion"
    share = "/usr/share"
    for path in (
        f"{share}/applications/org.bastion.Bastion.desktop",
        f"{share}/metainfo/org.bastion.Bastion.metainfo.xml",
        f"{share}/icons/hicolor/256x256/apps/org.bastion.Bastion.png",
        f"{share}/icons/hicolor/scalable/apps/org.bastion.Bastion.svg",
    ):
        assert installed.file(path).is_file(), path
    result = installed.run("bastion --version")
    assert result.stdout.strip() == f"bastion {VERSION}", result.stderr


def test_the_policy_folders_exist_empty_and_root_owned(installed: CleanRoot) -> None:
    for level in ("managed", "recommended"):
        folder = installed.file(f"/etc/bastion/policies/{level}")
        info = folder.stat()
        assert folder.is_dir()
        assert list(folder.iterdir()) == []
        assert (info.st_uid, info.st_mode & 0o777) == (0, 0o755)
    owned = installed.run("dpkg -L bastion").stdout.splitlines()
    assert "/etc/bastion/policies/managed" in owned
    assert not [path for path in owned if path.startswith("/etc/bastion/policies/managed/")]


def test_every_library_the_bundle_loads_is_on_the_clean_machine(installed: CleanRoot) -> None:
    # What the package forgot to declare shows up here as "not found", Qt's platform
    # plug-ins included. The bundle's own libraries are found the way PyInstaller's
    # bootloader finds them at run time: its _internal folder leads the library path.
    result = installed.run(
        "export LD_LIBRARY_PATH=/opt/bastion/_internal; "
        "find /opt/bastion -type f \\( -name '*.so*' -o -name bastion \\) "
        '-exec sh -c \'ldd "$1" 2>/dev/null | grep "not found" | sed "s|^|$1: |"\' _ {} \\;'
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "", result.stdout


def test_the_vulkan_backend_ships_as_a_module_and_uses_the_systems_loader(
    installed: CleanRoot,
) -> None:
    module = installed.file("/opt/bastion/_internal/llama_cpp/lib/vulkan/libggml-vulkan.so")
    assert module.is_file()
    bundled = installed.run("find /opt/bastion -name 'libvulkan.so*'")
    assert bundled.stdout == "", "the loader must be the system's, matching its drivers"
    control = installed.run("dpkg-query -W -f '${Depends}\\n${Recommends}' bastion").stdout
    depends, recommends = control.splitlines()
    assert "libvulkan1" not in depends, "the app runs on the CPU without the loader"
    assert "libvulkan1" in recommends
    # apt installs what a package recommends: the probe finds the loader, and no GPU.
    report = json.loads(installed.run("bastion doctor --self-test --json", offline=True).stdout)
    runtime = next(step for step in report["steps"] if step["name"] == "runtime")
    assert "Vulkan: " in runtime["detail"], runtime


def test_the_installed_app_passes_its_self_test(installed: CleanRoot) -> None:
    result = installed.run("bastion doctor --self-test --json", offline=True)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["frozen"] is True
    assert [step["name"] for step in report["steps"] if step["ok"]] == [
        "policy",
        "runtime",
        "starter model",
        "encrypted history",
        "guardrails",
    ]


def test_the_installed_app_chats_with_the_starter_with_no_network(installed: CleanRoot) -> None:
    result = installed.run(
        "bastion chat --ephemeral --json --seed 1 --max-tokens 8 'Hello'", offline=True
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    done = [event for event in events if event["type"] == "done"]
    assert done, events
    assert done[0]["tokens"] > 0
    assert "".join(e["text"] for e in events if e["type"] == "token").strip()


def test_a_root_owned_policy_file_locks_the_profile(installed: CleanRoot) -> None:
    policy = installed.file("/etc/bastion/policies/managed/50-lock.json")
    policy.write_text(json.dumps({"GuardrailProfile": "strict"}))
    policy.chmod(0o644)
    try:
        shown = installed.run("bastion policy show --json")
        assert shown.returncode == 0, shown.stderr
        entries = {entry["name"]: entry for entry in json.loads(shown.stdout)["policies"]}
        assert entries["GuardrailProfile"]["value"] == "strict"
        assert entries["GuardrailProfile"]["source"] == "/" + str(
            policy.relative_to(installed.path)
        )
        chat = installed.run(
            "bastion chat --ephemeral --json --profile off --max-tokens 4 'Hello'", offline=True
        )
        assert chat.returncode == 0, chat.stderr
        guardrails = json.loads(chat.stdout.splitlines()[0])
        assert guardrails["type"] == "guardrails"
        assert guardrails["profile"] == "strict"
    finally:
        policy.unlink()


def test_removing_the_package_leaves_the_users_history(installed: CleanRoot) -> None:
    # Runs last in this module: it uninstalls.
    installed.file("/root/passphrase").write_text(PASSPHRASE)
    chat = installed.run(
        "bastion chat --passphrase-file /root/passphrase --max-tokens 4 'Remember me'",
        offline=True,
    )
    assert chat.returncode == 0, chat.stderr
    history = installed.file("/root/.local/share/Bastion/history.db")
    assert history.is_file()
    removed = installed.run("apt-get remove -y -qq bastion")
    assert removed.returncode == 0, removed.stderr
    assert not installed.file("/opt/bastion").exists()
    assert not installed.file("/usr/bin/bastion").exists()
    assert history.is_file()


# -- .rpm and .tar.gz ------------------------------------------------------------------------


def _rpm_query(rpm: Path, *options: str) -> str:
    return subprocess.run(
        ["rpm", "-qp", *options, str(rpm)], capture_output=True, text=True, check=True
    ).stdout


def test_the_rpm_holds_the_app_requires_system_libraries_and_runs_no_scripts() -> None:
    _need("rpm", "rpm")
    rpm = _artifact(f"bastion-{VERSION}-1.x86_64.rpm")
    files = _rpm_query(rpm, "-l").splitlines()
    assert "/opt/bastion/bastion" in files
    assert "/usr/bin/bastion" in files
    assert "/usr/share/applications/org.bastion.Bastion.desktop" in files
    assert "/etc/bastion/policies/managed" in files
    assert not [f for f in files if f.startswith("/etc/bastion/policies/managed/")]
    requires = _rpm_query(rpm, "--requires").splitlines()
    # What the frozen Qt needs from the system: the X server connection and OpenGL.
    # The xcb helper libraries (libxcb-cursor included: Qt >= 6.5 aborts without it)
    # travel inside the bundle.
    for library in ("libxcb.so.1", "libEGL.so.1", "libGL.so.1"):
        assert f"{library}()(64bit)" in requires
    # Only the Vulkan module needs the Vulkan loader: recommended, not required.
    assert "libvulkan.so.1()(64bit)" not in requires
    recommends = _rpm_query(rpm, "--recommends").splitlines()
    assert "libvulkan.so.1()(64bit)" in recommends
    assert "/opt/bastion/_internal/libxcb-cursor.so.0" in files
    assert any(re.fullmatch(r"libc\.so\.6\(GLIBC_2\.\d+\)\(64bit\)", r) for r in requires)
    # None of the bundle's private libraries leaks into what the package provides.
    provides = _rpm_query(rpm, "--provides").splitlines()
    assert not [p for p in provides if ".so" in p], provides
    assert _rpm_query(rpm, "--scripts").strip() == ""


def test_the_tarball_unpacks_to_a_runnable_folder() -> None:
    tarball = _artifact(f"bastion-{VERSION}-linux-x86_64.tar.gz")
    top = f"bastion-{VERSION}-linux-x86_64"
    with tarfile.open(tarball) as archive:
        members = {member.name: member for member in archive.getmembers()}
    program = members[f"{top}/bastion"]
    assert program.isfile()
    assert program.mode & 0o111
    assert f"{top}/share/applications/org.bastion.Bastion.desktop" in members
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    assert all(name.startswith(f"{top}/") or name == top for name in members)


def test_lintian_finds_nothing_the_overrides_do_not_explain() -> None:
    _need("lintian", "lintian")
    deb = _artifact(f"bastion_{VERSION}_amd64.deb")
    result = subprocess.run(
        ["lintian", "--no-tag-display-limit", str(deb)],
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    findings = [line for line in result.stdout.splitlines() if re.match(r"[EW]: ", line)]
    assert findings == [], "\n".join(findings[:40])


# -- dependencies read from the bundle -----------------------------------------------------------


def _shared_library(path: Path, source: str, *links: str, soname: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    c_file = path.with_suffix(".c")
    c_file.write_text(source)
    command = ["gcc", "-shared", "-fPIC", "-o", str(path), str(c_file), *links]
    if soname:
        command.append(f"-Wl,-soname,{soname}")
    subprocess.run(command, check=True, timeout=60)
    c_file.unlink()


def test_the_nvidia_drivers_library_is_neither_required_nor_recommended(tmp_path: Path) -> None:
    """A bundle built here with gcc: a CUDA module linking the NVIDIA driver's libcuda (a
    stand-in kept outside the bundle, as the driver is), its runtime beside it, a Vulkan
    module linking the system's loader, and a library of the app's own needing libm."""
    _need("gcc", "gcc")
    _need("objdump", "binutils")
    driver = tmp_path / "driver"
    _shared_library(driver / "libcuda.so.1", "int cuInit(unsigned f) { return 0; }\n",
                    soname="libcuda.so.1")  # fmt: skip
    (driver / "libcuda.so").symlink_to("libcuda.so.1")
    lib = tmp_path / "bundle" / "_internal" / "llama_cpp" / "lib"
    _shared_library(lib / "cuda_v12" / "libcudart.so.12", "int cudart(void) { return 1; }\n",
                    soname="libcudart.so.12")  # fmt: skip
    _shared_library(
        lib / "cuda_v12" / "libggml-cuda.so",
        "int cuInit(unsigned); int cudart(void);\n"
        "int start(void) { return cuInit(0) + cudart(); }\n",
        f"-L{driver}", "-lcuda", f"-L{lib / 'cuda_v12'}", "-l:libcudart.so.12",
    )  # fmt: skip
    vulkan = tmp_path / "vulkan"
    _shared_library(vulkan / "libvulkan.so.1", "int vkGetInstanceProcAddr(void) { return 0; }\n",
                    soname="libvulkan.so.1")  # fmt: skip
    (vulkan / "libvulkan.so").symlink_to("libvulkan.so.1")
    _shared_library(
        lib / "vulkan" / "libggml-vulkan.so",
        "int vkGetInstanceProcAddr(void); int start(void) { return vkGetInstanceProcAddr(); }\n",
        f"-L{vulkan}", "-lvulkan",
    )  # fmt: skip
    cosine = "double cos(double); double f(double x) { return cos(x); }\n"
    _shared_library(lib / "libown.so", cosine, "-lm")
    needs = load_script(Path("packaging/linux/linux_packages.py")).system_needs(tmp_path / "bundle")
    assert "libcuda.so.1" not in needs.sonames + needs.optional
    assert "libcudart.so.12" not in needs.sonames, "carried beside the module"
    assert needs.optional == ("libvulkan.so.1",)
    assert "libm.so.6" in needs.sonames
