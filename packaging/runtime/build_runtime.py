"""Build the distribution llama.cpp runtime: llama-cpp-python with every CPU variant.

    python packaging/runtime/build_runtime.py            # build (or reuse) and print the wheel
    python packaging/runtime/build_runtime.py --check WHEEL   # only run the checks on a wheel

The wheel is llama-cpp-python (the version pyproject.toml pins) built with

    GGML_NATIVE=OFF GGML_BACKEND_DL=ON GGML_CPU_ALL_VARIANTS=ON BUILD_SHARED_LIBS=ON

so that the CPU backend is not linked into libggml but shipped as loadable modules, one
per instruction-set level (`libggml-cpu-x64.so`, `-sse42`, ..., `-haswell`, `-skylakex`,
...), and ggml picks the best one the user's CPU can run (its `ggml_backend_score()`).
Nothing registers a backend in such a build until someone loads the modules: Bastion's
model host does, through `bastion_desktop.core.inference.backends.load_backends()`.

How the variants get into `llama_cpp/lib`: llama-cpp-python's CMakeLists installs a fixed
list of targets beside libllama, with only the plain `ggml-cpu` among them, which
GGML_CPU_ALL_VARIANTS does not create (llama-cpp-python issue #2069). ggml itself,
though, installs every backend module of a BACKEND_DL build to `${CMAKE_INSTALL_BINDIR}`
(ggml/src/CMakeLists.txt, `ggml_add_backend_library`), and scikit-build-core installs
with the wheel's platlib folder as the prefix. So `CMAKE_INSTALL_BINDIR=llama_cpp/lib`
puts the modules exactly where they belong, by the build's own install rules: no
patched sources, no hand-picked files from a temporary build tree, no rewritten RECORD.
(`GGML_BACKEND_DIR` would do the same but also compile that relative path into
`ggml_backend_load_all()`'s search list, which would then look in a folder relative to
the working directory.) The modules get `$ORIGIN` (`@loader_path`) as their run path so
that they find libggml-base beside them even when loaded without libllama.

One variant is then taken out of the wheel: `sapphirerapids`, the only one using AMX.
GCC (12, Debian 12's; checked) drops the stores that fill the AMX tile configuration in
`ggml_tile_config_init` (ggml-cpu/amx/mmq.cpp), as it does not know that `ldtilecfg`
reads them: the module loads a configuration with every tile empty, and the first tile
instruction of a generation raises SIGILL, on any CPU with AMX, which is also the one
CPU ggml would choose it for (seen on this project's build machines: every reply of the
starter died). Upstream fix under review: https://github.com/ggml-org/llama.cpp/pull/26954.
Without it, a Sapphire Rapids (or later Xeon) runs the `zen4` variant: AVX-512 with VNNI
and BF16, everything but AMX. No consumer CPU has AMX.

The wheel is then checked: the variants must be in it, the AMX one must not, and on
x86-64 Linux no library outside the AVX-and-later variants may hold an AVX instruction.

Like build.py's portable wheel, the result is cached outside the tree by version, flags
and platform (pip's own cache keys a built wheel by its source, not by CMAKE_ARGS), in a
folder named `llama-cpp-python-dl-<version>-<key>`. Build parallelism follows
CMAKE_BUILD_PARALLEL_LEVEL; on a shared machine run it as
`CMAKE_BUILD_PARALLEL_LEVEL=2 nice -n 19 python packaging/runtime/build_runtime.py`.

Standard library only: it runs before any environment exists.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent.parent
IS_WINDOWS = sys.platform == "win32"
IS_MACOS = sys.platform == "darwin"
IS_X86_64 = platform.machine().lower() in {"x86_64", "amd64"}

# The variants that must be in an x86-64 build (ggml/src/CMakeLists.txt builds more,
# and skips some under MSVC); the first two are the ones with no AVX at all.
REQUIRED_X86_VARIANTS = ("x64", "sse42", "sandybridge", "haswell", "skylakex", "alderlake")
NO_AVX_VARIANTS = ("x64", "sse42")
# Variants built but not shipped, and why (see the module's docstring).
DROPPED_VARIANTS = {"sapphirerapids": "GCC miscompiles its AMX tile configuration"}


class BuildError(Exception):
    """A step failed; the message says which and why."""


def log(message: str) -> None:
    print(f"[runtime] {message}", file=sys.stderr, flush=True)


def pinned_version() -> str:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for requirement in data["project"]["dependencies"]:
        match = re.fullmatch(r"llama-cpp-python==([\w.]+)", str(requirement).strip())
        if match:
            return match.group(1)
    raise BuildError("pyproject.toml does not pin llama-cpp-python exactly")


def cmake_args() -> list[str]:
    args = [
        "-DGGML_NATIVE=OFF",
        "-DGGML_BACKEND_DL=ON",
        "-DGGML_CPU_ALL_VARIANTS=ON",
        "-DBUILD_SHARED_LIBS=ON",
        # ggml installs backend modules to the bin folder; make that llama_cpp/lib.
        "-DCMAKE_INSTALL_BINDIR=llama_cpp/lib",
    ]
    if IS_MACOS:
        # Unverified on macOS: MODULE libraries take no version there, and the run path
        # syntax is @loader_path. Homebrew's libomp would need a newer macOS than the app.
        args += ["-DCMAKE_INSTALL_RPATH=@loader_path", "-DGGML_OPENMP=OFF"]
        if platform.machine() == "arm64":
            args += ["-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON"]
    elif IS_WINDOWS:
        # As build.py: OpenMP would need vcomp140.dll, which only the Visual C++
        # redistributable puts on a user's machine; ggml's own thread pool needs nothing.
        args.append("-DGGML_OPENMP=OFF")
    else:
        # scikit-build-core splits CMAKE_ARGS with shlex: no shell sees this `$`.
        args.append("-DCMAKE_INSTALL_RPATH=$ORIGIN")
    return args


def wheel_cache() -> Path:
    configured = os.environ.get("BASTION_WHEEL_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "bastion-build" / "wheels"


def cache_folder(version: str, args: list[str]) -> Path:
    target = os.environ.get("MACOSX_DEPLOYMENT_TARGET", "") if IS_MACOS else ""
    inputs = (
        version,
        " ".join(args),
        " ".join(sorted(DROPPED_VARIANTS)),
        target,
        sys.platform,
        platform.machine(),
        sys.version[:4],
    )
    hasher = hashlib.sha256()
    for part in inputs:
        hasher.update(part.encode() + b"\0")
    return wheel_cache() / f"llama-cpp-python-dl-{version}-{hasher.hexdigest()[:16]}"


def build_wheel() -> Path:
    """The distribution wheel, built once per version, flags and platform."""
    version = pinned_version()
    args = cmake_args()
    folder = cache_folder(version, args)
    found = cached_wheel()
    if found:
        log(f"reusing {found}")
        return found
    partial = folder.with_name(folder.name + ".partial")
    pip_wheel(version, args, partial)
    wheel = sorted(partial.glob("llama_cpp_python-*.whl"))[0]
    drop_variants(wheel)
    check_wheel(wheel)
    partial.replace(folder)
    return folder / wheel.name


def pip_wheel(version: str, args: list[str], into: Path, env: dict[str, str] | None = None) -> None:
    """Build llama-cpp-python `version` from source with CMAKE_ARGS `args` into the
    (emptied) folder `into`. Shared with build.py's macOS build."""
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    env = {**(os.environ if env is None else env), "CMAKE_ARGS": " ".join(args)}
    env["FORCE_CMAKE"] = "1"
    # ggml reads SOURCE_DATE_EPOCH to choose its default instruction sets; the variants
    # set theirs explicitly, but the same build must not depend on the caller's shell.
    env.pop("SOURCE_DATE_EPOCH", None)
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-cache-dir",
        "--no-binary",
        "llama-cpp-python",
        "--wheel-dir",
        str(into),
        f"llama-cpp-python=={version}",
    ]
    log(f"building llama-cpp-python {version} with {' '.join(args)} (many minutes)")
    log("$ " + " ".join(command))
    started = time.monotonic()
    # pip's output goes to stderr: callers read the wheel's path from stdout
    # (`build.py --runtime-wheel` in ./dev).
    result = subprocess.run(command, env=env, check=False, stdout=sys.stderr)
    if result.returncode != 0:
        raise BuildError(f"pip wheel failed with exit status {result.returncode}")
    log(f"built in {time.monotonic() - started:.0f} s")


def variant_of(name: str) -> str | None:
    """`libggml-cpu-haswell.so` / `ggml-cpu-haswell.dll` -> `haswell`."""
    match = re.fullmatch(r"(?:lib)?ggml-cpu-([\w.]+)\.(?:so|dll|dylib)", name)
    return match.group(1) if match else None


def drop_variants(wheel: Path) -> None:
    """Rewrite the wheel without the DROPPED_VARIANTS modules, and its RECORD without
    their lines (every other file and its hash stays as the build wrote it)."""
    dropped = {f"llama_cpp/lib/{cpu_variant_file_name(v)}" for v in DROPPED_VARIANTS}
    rewritten = wheel.with_suffix(".rewriting")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(rewritten, "w") as target:
        found = dropped & set(source.namelist())
        for member in source.infolist():
            if member.filename in found:
                continue
            data = source.read(member)
            if member.filename.endswith(".dist-info/RECORD"):
                lines = data.decode("utf-8").splitlines(keepends=True)
                data = "".join(line for line in lines if line.split(",", 1)[0] not in found).encode(
                    "utf-8"
                )
            target.writestr(member, data)
    rewritten.replace(wheel)
    for name in sorted(found):
        log(f"dropped {name}: {DROPPED_VARIANTS[variant_of(PurePosixPath(name).name) or '']}")


def cpu_variant_file_name(variant: str) -> str:
    return f"ggml-cpu-{variant}.dll" if IS_WINDOWS else f"libggml-cpu-{variant}.so"


def library_names(wheel: Path) -> list[str]:
    """The files in the wheel's llama_cpp/lib, beside libllama."""
    with zipfile.ZipFile(wheel) as archive:
        return sorted(
            PurePosixPath(name).name
            for name in archive.namelist()
            if PurePosixPath(name).parent == PurePosixPath("llama_cpp/lib")
        )


def must_run_anywhere(name: str) -> bool:
    """Whether a library in llama_cpp/lib is loaded on every x86-64 CPU: all but the
    CPU variants that need AVX or later."""
    variant = variant_of(name)
    return variant is None or variant in NO_AVX_VARIANTS


def avx_count(library: Path) -> tuple[int, int]:
    """`objdump -d` counts of ymm and zmm registers (AVX/AVX2 and AVX-512 instructions)
    in an x86-64 ELF library."""
    if shutil.which("objdump") is None:
        raise BuildError("objdump (binutils) is needed to check the runtime's instructions")
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(library)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return listing.count("%ymm"), listing.count("%zmm")


def avx_counts(wheel: Path, names: list[str]) -> dict[str, tuple[int, int]]:
    """`avx_count` of some of the wheel's llama_cpp/lib libraries (x86-64 ELF only)."""
    counts: dict[str, tuple[int, int]] = {}
    by_content: dict[tuple[int, int], tuple[int, int]] = {}  # (crc, size): counts
    scratch = wheel.parent / "objdump-scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        with zipfile.ZipFile(wheel) as archive:
            for name in names:
                member = archive.getinfo(f"llama_cpp/lib/{name}")
                content = (member.CRC, member.file_size)
                if content in by_content:  # libllama.so, .so.0 and .so.0.5.0 are copies
                    counts[name] = by_content[content]
                    continue
                library = scratch / name
                library.write_bytes(archive.read(f"llama_cpp/lib/{name}"))
                counts[name] = by_content[content] = avx_count(library)
                library.unlink()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return counts


def check_wheel(wheel: Path) -> dict[str, tuple[int, int]]:
    """Fail unless the variants lie beside libllama and, on x86-64 Linux, no library that
    must run on any x86-64 CPU holds an AVX instruction. Returns the ymm/zmm counts."""
    names = library_names(wheel)
    variants = sorted(v for name in names if (v := variant_of(name)) is not None)
    log(f"CPU variants in llama_cpp/lib: {', '.join(variants) or 'none'}")
    if not variants:
        raise BuildError(f"{wheel.name} has no CPU variant module in llama_cpp/lib")
    if IS_X86_64:
        missing = [v for v in REQUIRED_X86_VARIANTS if v not in variants]
        if missing:
            raise BuildError(f"{wheel.name} lacks the CPU variants {', '.join(missing)}")
    shipped = sorted(set(variants) & set(DROPPED_VARIANTS))
    if shipped:
        raise BuildError(f"{wheel.name} holds the variants {', '.join(shipped)}, known broken")
    if not (IS_X86_64 and sys.platform.startswith("linux")):
        return {}
    counts = avx_counts(wheel, [name for name in names if ".so" in name])
    for name, (ymm, zmm) in counts.items():
        log(f"  {name}: {ymm} ymm, {zmm} zmm")
        if must_run_anywhere(name) and (ymm or zmm):
            raise BuildError(f"{name} must run on any x86-64 CPU but holds AVX instructions")
    return counts


def cached_wheel() -> Path | None:
    """The wheel an earlier run built for these inputs, if there is one."""
    found = sorted(cache_folder(pinned_version(), cmake_args()).glob("llama_cpp_python-*.whl"))
    return found[0] if found else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", type=Path, metavar="WHEEL", help="only check this wheel")
    parser.add_argument(
        "--drop", type=Path, metavar="WHEEL", help="only take the broken variants out of WHEEL"
    )
    args = parser.parse_args(argv)
    try:
        if args.drop:
            drop_variants(args.drop)
        elif args.check:
            check_wheel(args.check)
        else:
            print(build_wheel())
    except BuildError as error:
        log(f"error: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
