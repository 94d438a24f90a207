"""Build llama.cpp's GPU backends as loadable modules and add them to the runtime wheel.

    python packaging/runtime/build_gpu.py vulkan     # build (or reuse); print the module
    python packaging/runtime/build_gpu.py --add WHEEL  # the runtime wheel with every module

The distribution runtime (build_runtime.py) ships llama.cpp's CPU backend as modules, one
per instruction-set level. GPU backends come the same way, each in a folder of its own
beside libllama (`llama_cpp/lib/vulkan/libggml-vulkan.so`, `llama_cpp/lib/cuda_v12/...`),
the layout Ollama uses: `ggml_backend_load_all_from_path(llama_cpp/lib)` does not look
into the folders, so no GPU backend is loaded until Bastion's probe
(`bastion_desktop.core.inference.runtime_probe`) has tried it in a child process and the
model host loads it by path. A driver that crashes then takes down a probe, not the app.

A module is built from the same llama.cpp source as the wheel (the vendored copy in the
pinned llama-cpp-python's source archive), with the same `GGML_BACKEND_DL` interface, and
only its own target: it links the wheel's libggml-base by soname, so it needs none of the
CPU variants' twenty minutes. It is cached by version, flags and platform, like the wheel.

Vulkan, the one GPU backend for NVIDIA, AMD and Intel on Linux and Windows:

- Linux: ggml-vulkan needs Vulkan headers newer than Debian 12's 1.3.239 (it uses
  `vk::LayerSettingEXT` unguarded). The Debian 13 packages of the headers and of the
  SPIR-V headers (pinned below by sha256; both are headers and CMake files only) are
  unpacked into a private folder of the build cache and named to CMake; nothing of the
  system is replaced. The shader compiler is `GLSLC`, or else the system's `glslc`
  (Debian 12: 2023.2; it lacks the cooperative-matrix and integer-dot-product
  extensions, so those shader variants are left out). Ubuntu 22.04, the release's
  machine, has no glslc package: the release workflow sets GLSLC to the LunarG SDK's.
  The library linked is the system's `libvulkan.so.1` loader, which users' systems have
  (the package recommends it; without it the probe skips Vulkan with a sentence).
- Windows and macOS: the LunarG Vulkan SDK (`VULKAN_SDK`), as llama.cpp's releases do.

CUDA (`cuda_v12`, `cuda_v13`) is built only where that CUDA toolkit is (`nvcc` on PATH,
with cuBLAS): the release machines (Linux: NVIDIA's apt packages; Windows: cuda_toolkit.py
assembles one from NVIDIA's archives) and GPU benchmark hosts. Its runtime libraries
(cudart, cublas, cublasLt) are copied beside the module, so users need only the driver.

Standard library only: it runs before any environment exists.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_runtime  # a sibling script, not a package

IS_WINDOWS = sys.platform == "win32"
IS_LINUX = sys.platform.startswith("linux")
DEBIAN_MIRROR = os.environ.get("BASTION_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# Debian 13's Vulkan and SPIR-V headers (see the module's docstring): path, sha256.
VULKAN_HEADER_PACKAGES = (
    (
        "pool/main/v/vulkan-loader/libvulkan-dev_1.4.309.0-1_amd64.deb",
        "8d329d465e16168afff58b1bd0dd6db46aac2cc3f56054a481b25a04e90b345a",
    ),
    (
        "pool/main/s/spirv-headers/spirv-headers_1.6.1+1.4.309.0-1_all.deb",
        "dc18db866d63680351c40ac6b6bece34cb52da64a7799ce1cc4f16f6bff4d064",
    ),
)
# flavour folder -> (ggml's CMake option, the backend's library name)
FLAVOURS = {
    "vulkan": ("GGML_VULKAN", "ggml-vulkan"),
    "cuda_v12": ("GGML_CUDA", "ggml-cuda"),
    "cuda_v13": ("GGML_CUDA", "ggml-cuda"),
}


class CudaFlavour(NamedTuple):
    major: str  # the toolkit's major release, which the runtime libraries' names carry
    oldest_minor: int  # the oldest minor release of it that builds every architecture
    architectures: str  # CMAKE_CUDA_ARCHITECTURES


# The GPU architectures, as llama.cpp's own non-native default: machine code ("-real")
# for the consumer GPUs most users have (RTX 30: 86, RTX 40: 89, RTX 50: 120a, which
# needs CUDA 12.8), PTX ("-virtual") for the rest, which the driver compiles on first use
# and keeps in its cache. A GPU with PTX only waits for that compilation the first time
# each kernel runs (seconds to minutes, once), and PTX made by a newer toolkit needs a
# driver at least as new; machine code runs on any driver of the major release. Each
# "-real" adds tens of MB. CUDA 13 (driver 580 or newer) dropped everything before
# Turing. BASTION_CUDA_ARCHITECTURES replaces the list, e.g. "90-real" for a benchmark
# build on an H100/H200 alone.
CUDA_FLAVOURS = {
    "cuda_v12": CudaFlavour(
        "12",
        8,
        "50-virtual;61-virtual;70-virtual;75-virtual;80-virtual;86-real;89-real;"
        "90-virtual;120a-real",
    ),
    "cuda_v13": CudaFlavour(
        "13",
        0,
        "75-virtual;80-virtual;86-real;89-real;90-virtual;100-virtual;120a-real",
    ),
}
# The CUDA runtime libraries a CUDA module needs beside it, by soname stem; the suffix is
# the flavour's release ("libcudart.so.13"). Windows names them cudart64_13.dll.
CUDA_RUNTIME = ("libcudart.so", "libcublas.so", "libcublasLt.so")
CUDA_RUNTIME_WINDOWS = ("cudart64_", "cublas64_", "cublasLt64_")
# Extra CMake arguments for a CUDA module, split on spaces (e.g. "-DGGML_CUDA_NCCL=OFF"
# for a benchmark build); they are part of the cache key like the others.
CUDA_ARGS_VARIABLE = "BASTION_CUDA_CMAKE_ARGS"


class BuildError(build_runtime.BuildError):
    pass


def log(message: str) -> None:
    print(f"[gpu] {message}", file=sys.stderr, flush=True)


def module_file_name(flavour: str) -> str:
    library = FLAVOURS[flavour][1]
    return f"{library}.dll" if IS_WINDOWS else f"lib{library}.so"


# -- the toolchain ----------------------------------------------------------------------


def _deb_members(data: bytes) -> dict[str, bytes]:
    """The members of a .deb (an `ar` archive)."""
    if not data.startswith(b"!<arch>\n"):
        raise BuildError("not a Debian package")
    members, offset = {}, 8
    while offset + 60 <= len(data):
        header = data[offset : offset + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        members[name] = data[offset + 60 : offset + 60 + size]
        offset += 60 + size + (size % 2)
    return members


def _unpack_deb(data: bytes, into: Path) -> None:
    members = _deb_members(data)
    name = next((n for n in members if n.startswith("data.tar")), None)
    if name is None:
        raise BuildError("a Debian package without data")
    with tarfile.open(fileobj=io.BytesIO(members[name])) as archive:
        archive.extractall(into, filter="tar")


def vulkan_headers() -> Path:
    """A folder (a `usr` prefix) holding the pinned Debian 13 Vulkan and SPIR-V headers."""
    digest = hashlib.sha256("".join(s for _, s in VULKAN_HEADER_PACKAGES).encode()).hexdigest()
    prefix = build_runtime.wheel_cache().parent / "vulkan-headers" / digest[:16]
    if (prefix / "usr" / "include" / "vulkan" / "vulkan.hpp").is_file():
        return prefix / "usr"
    partial = prefix.with_name(prefix.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for path, sha256 in VULKAN_HEADER_PACKAGES:
        url = f"{DEBIAN_MIRROR}/{path}"
        log(f"fetching {url}")
        try:
            # An http(s) URL of this script's own (S310 guards against file: URLs).
            with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310
                data = response.read()
        except OSError as error:
            raise BuildError(f"could not fetch {url}: {error}") from error
        if hashlib.sha256(data).hexdigest() != sha256:
            raise BuildError(f"{url} does not have the sha256 this script pins")
        _unpack_deb(data, partial)
    shutil.rmtree(prefix, ignore_errors=True)
    partial.replace(prefix)
    return prefix / "usr"


def vulkan_cmake_args() -> list[str]:
    """CMake arguments that find Vulkan's headers, loader and shader compiler."""
    if not IS_LINUX:
        if not os.environ.get("VULKAN_SDK"):
            raise BuildError("the Vulkan backend needs the LunarG Vulkan SDK (set VULKAN_SDK)")
        return []
    glslc = os.environ.get("GLSLC") or shutil.which("glslc")
    if not glslc:
        raise BuildError(
            "the Vulkan backend needs the glslc shader compiler (apt install glslc, or set "
            "GLSLC to one, such as the LunarG Vulkan SDK's)"
        )
    loader = next(
        (
            path
            for path in (
                Path(f"/usr/lib/{platform.machine()}-linux-gnu/libvulkan.so.1"),
                Path("/usr/lib64/libvulkan.so.1"),
                Path("/usr/lib/libvulkan.so.1"),
            )
            if path.is_file()
        ),
        None,
    )
    if loader is None:
        raise BuildError("the Vulkan backend needs the Vulkan loader (apt install libvulkan1)")
    headers = vulkan_headers()
    return [
        f"-DCMAKE_PREFIX_PATH={headers}",
        f"-DVulkan_INCLUDE_DIR={headers / 'include'}",
        f"-DVulkan_LIBRARY={loader}",
        f"-DVulkan_GLSLC_EXECUTABLE={glslc}",
    ]


def flavour_cmake_args(flavour: str) -> list[str]:
    option = FLAVOURS[flavour][0]
    args = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=ON",
        "-DGGML_BACKEND_DL=ON",
        "-DGGML_NATIVE=OFF",
        "-DGGML_CPU=OFF",
        f"-D{option}=ON",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_TOOLS=OFF",
        "-DLLAMA_BUILD_SERVER=OFF",
        "-DLLAMA_CURL=OFF",
    ]
    if IS_LINUX:
        # The module lies one folder below libggml-base; a CUDA module's runtime
        # libraries (cudart, cublas) lie beside it.
        rpath = "$ORIGIN;$ORIGIN/.." if flavour in CUDA_FLAVOURS else "$ORIGIN/.."
        args += ["-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON", f"-DCMAKE_INSTALL_RPATH={rpath}"]
    if flavour == "vulkan":
        args += vulkan_cmake_args()
    elif flavour in CUDA_FLAVOURS:
        cuda = CUDA_FLAVOURS[flavour]
        architectures = os.environ.get("BASTION_CUDA_ARCHITECTURES") or cuda.architectures
        _require_cuda(flavour, cuda, architectures)
        args.append(f"-DCMAKE_CUDA_ARCHITECTURES={architectures}")
        if IS_WINDOWS and os.environ.get("CMAKE_GENERATOR", "Visual Studio").startswith("Visual"):
            # Visual Studio builds CUDA with the toolkit's MSBuild files: named by folder,
            # a toolkit that was not installed (cuda_toolkit.py) works too. It compiles a
            # project's .cu files one after another: nvcc compiles each file's
            # architectures in parallel instead (--threads 0: as many as cores).
            args += ["-T", f"cuda={_cuda_toolkit()}", "-DCMAKE_CUDA_FLAGS=--threads=0"]
        args += os.environ.get(CUDA_ARGS_VARIABLE, "").split()
    return args


# -- the build ---------------------------------------------------------------------------


def _source(version: str, scratch: Path) -> Path:
    """The vendored llama.cpp of llama-cpp-python `version`'s source archive."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    command += ["--dest", str(scratch), f"llama-cpp-python=={version}"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    archives = sorted(scratch.glob("llama_cpp_python-*.tar.gz"))
    if result.returncode != 0 or not archives:
        raise BuildError(
            f"could not download llama-cpp-python {version}'s source: "
            f"{result.stderr.strip()[-300:]}"
        )
    with tarfile.open(archives[0]) as archive:
        archive.extractall(scratch, filter="data")
    source = scratch / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not (source / "ggml" / "CMakeLists.txt").is_file():
        raise BuildError(f"llama-cpp-python {version}'s source has no vendored llama.cpp")
    return source


def cache_folder(flavour: str, version: str, args: list[str]) -> Path:
    inputs = (flavour, version, " ".join(args), sys.platform, platform.machine())
    key = hashlib.sha256("\0".join(inputs).encode()).hexdigest()[:16]
    return build_runtime.wheel_cache() / f"ggml-{flavour}-{version}-{key}"


def build_module(flavour: str) -> Path:
    """The module of `flavour`, built once per version, flags and platform."""
    version = build_runtime.pinned_version()
    args = flavour_cmake_args(flavour)
    folder = cache_folder(flavour, version, args)
    module = folder / flavour / module_file_name(flavour)
    if module.is_file():
        log(f"reusing {module}")
        return module
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / flavour).mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix=f"bastion-{flavour}-") as scratch:
        source = _source(version, Path(scratch))
        build = Path(scratch) / "build"
        log(f"building {module.name} of llama.cpp in llama-cpp-python {version}")
        started = time.monotonic()
        for command in (
            ["cmake", "-S", str(source), "-B", str(build), *args],
            [
                "cmake",
                "--build",
                str(build),
                "--config",
                "Release",
                "--target",
                FLAVOURS[flavour][1],
            ],
        ):
            log("$ " + " ".join(command))
            # Its output goes to stderr: stdout carries the path (see main).
            if subprocess.run(command, check=False, stdout=sys.stderr).returncode != 0:
                raise BuildError(f"building the {flavour} backend failed")
        built = next(build.rglob(module.name), None)
        if built is None:
            raise BuildError(f"the {flavour} build made no {module.name}")
        shutil.copy2(built, partial / flavour / module.name)
        if flavour in CUDA_FLAVOURS:
            copy_cuda_runtime(partial / flavour, CUDA_FLAVOURS[flavour].major)
        log(f"built in {time.monotonic() - started:.0f} s")
    check_module(partial / flavour / module.name)
    shutil.rmtree(folder, ignore_errors=True)
    partial.replace(folder)
    return module


def _require_cuda(flavour: str, cuda: CudaFlavour, architectures: str) -> None:
    """A CUDA flavour needs its own release's nvcc: 13 refuses the architectures below
    sm_75 that cuda_v12 lists, and a module links its release's runtime by soname; and
    where its list has them, sm_120a (RTX 50) needs CUDA 12.8."""
    wanted = f"CUDA {cuda.major}.{cuda.oldest_minor} or a newer {cuda.major}.x"
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise BuildError(f"the CUDA backend needs nvcc on PATH ({wanted})")
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"release (\d+)\.(\d+)", version.stdout)
    if found is None or found.group(1) != cuda.major:
        raise BuildError(f"{flavour} needs CUDA {cuda.major}'s nvcc; {nvcc} is another release")
    blackwell = any(a.startswith("12") for a in architectures.split(";"))
    if blackwell and int(found.group(2)) < cuda.oldest_minor:
        raise BuildError(
            f"{flavour} needs {wanted} for RTX 50 (sm_120a); {nvcc} is {found.group(0)} "
            "(or set BASTION_CUDA_ARCHITECTURES to a list without it)"
        )


def _cuda_toolkit() -> Path:
    """The CUDA toolkit folder of the nvcc on PATH."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise BuildError("the CUDA backend needs nvcc on PATH")
    return Path(nvcc).resolve().parent.parent


def copy_cuda_runtime(into: Path, release: str, *, windows: bool = IS_WINDOWS) -> None:
    """cudart, cublas and cublasLt beside the CUDA module (NVIDIA's EULA, Attachment A,
    allows redistributing them), so that users need only the driver."""
    toolkit = _cuda_toolkit()
    names = cuda_runtime_names(release, windows=windows)
    found = {name: next(iter(sorted(toolkit.rglob(name))), None) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise BuildError(f"{', '.join(missing)} is not in the CUDA toolkit at {toolkit}")
    for name, path in found.items():
        assert path is not None
        shutil.copy2(path, into / name)  # a link's file, under the link's name


def cuda_runtime_names(release: str, *, windows: bool = IS_WINDOWS) -> list[str]:
    """The file names of the CUDA runtime libraries copied beside a CUDA module."""
    if windows:  # in the toolkit's bin (CUDA 12) or bin/x64 (CUDA 13)
        return [f"{stem}{release}.dll" for stem in CUDA_RUNTIME_WINDOWS]
    return [f"{stem}.{release}" for stem in CUDA_RUNTIME]


def check_module(module: Path) -> None:
    """A GPU module is loaded on any x86-64 CPU: it must hold no AVX instruction."""
    if not (IS_LINUX and build_runtime.IS_X86_64):
        return
    ymm, zmm = build_runtime.avx_count(module)
    log(f"  {module.name}: {ymm} ymm, {zmm} zmm")
    if ymm or zmm:
        raise BuildError(f"{module.name} must run on any x86-64 CPU but holds AVX instructions")


# -- into the wheel ----------------------------------------------------------------------


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}\n"


def add_modules(wheel: Path, folders: list[Path]) -> Path:
    """A copy of `wheel` with each flavour folder in `folders` under llama_cpp/lib/, its
    RECORD completed; cached beside the modules by the inputs' names."""
    key = hashlib.sha256("\0".join([str(wheel), *map(str, folders)]).encode()).hexdigest()
    target = wheel.parent.with_name(wheel.parent.name + f"-gpu-{key[:12]}") / wheel.name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    added: dict[str, bytes] = {}
    for folder in folders:
        for path in sorted(folder.iterdir()):
            added[f"llama_cpp/lib/{folder.name}/{path.name}"] = path.read_bytes()
    with (
        zipfile.ZipFile(wheel) as source,
        zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as out,
    ):
        for member in source.infolist():
            data = source.read(member)
            if member.filename.endswith(".dist-info/RECORD"):
                record = data.decode("utf-8")
                data = (record + "".join(_record_line(n, d) for n, d in added.items())).encode()
                for name, content in added.items():
                    info = zipfile.ZipInfo(name, date_time=member.date_time)
                    info.external_attr = 0o755 << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    out.writestr(info, content)
            out.writestr(member, data)
    partial.replace(target)
    for name in added:
        log(f"added {PurePosixPath(name).relative_to('llama_cpp/lib')}")
    return target


# The GPU backends an installer carries, replacing the OS's default: names from FLAVOURS,
# separated by commas or spaces, e.g. "vulkan,cuda_v12" on a release machine that has the
# CUDA 12 toolkit (the CUDA runtime and cuBLAS it bundles add about 600 MB); "" for none.
FLAVOURS_VARIABLE = "BASTION_GPU_FLAVOURS"


def default_flavours() -> list[str]:
    """The GPU backends this OS's installers carry: Vulkan on Linux and Windows (one build
    for NVIDIA, AMD and Intel GPUs), none on macOS (Metal is built in), or those named in
    BASTION_GPU_FLAVOURS."""
    named = os.environ.get(FLAVOURS_VARIABLE)
    if named is None:
        return [] if sys.platform == "darwin" else ["vulkan"]
    flavours = list(dict.fromkeys(named.replace(",", " ").split()))
    unknown = [f for f in flavours if f not in FLAVOURS]
    if unknown:
        raise BuildError(
            f"{FLAVOURS_VARIABLE} names {', '.join(unknown)}: the flavours are "
            f"{', '.join(sorted(FLAVOURS))}."
        )
    return flavours


def with_gpu_modules(wheel: Path, *, required: bool) -> Path:
    """`wheel` with this OS's GPU modules, or `wheel` itself, with the reason logged, when
    they cannot be built here and `required` is false (a developer's machine)."""
    folders = []
    for flavour in default_flavours():
        try:
            folders.append(build_module(flavour).parent)
        except BuildError as error:
            if required:
                raise
            log(f"no {flavour} backend in this build: {error}")
    return add_modules(wheel, folders) if folders else wheel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("flavour", nargs="?", choices=sorted(FLAVOURS), default="vulkan")
    parser.add_argument("--add", type=Path, metavar="WHEEL", help="add the modules to WHEEL")
    args = parser.parse_args(argv)
    try:
        if args.add:
            print(with_gpu_modules(args.add, required=True))
        else:
            print(build_module(args.flavour))
    except build_runtime.BuildError as error:
        log(f"error: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
