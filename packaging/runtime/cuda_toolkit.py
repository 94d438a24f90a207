"""Assemble the part of a CUDA toolkit that builds llama.cpp's CUDA backend, from NVIDIA's
redistributable archives, where no installer is wanted (a Windows release machine).

    python packaging/runtime/cuda_toolkit.py 12.8.1 C:/cuda   # prints C:/cuda/bin

NVIDIA publishes every CUDA release as one archive per component under
https://developer.download.nvidia.com/compute/cuda/redist/, with a manifest,
`redistrib_<version>.json`, that names each component's archive for each platform
(`relative_path`) and its sha256. This reads the manifest, downloads the components
below for this platform, checks each sha256, and merges them into one folder laid out as
the installer lays out a toolkit: `bin/nvcc`, `include/`, `lib/` (and on Linux
`lib64` and `targets/x86_64-linux/{include,lib}`, where nvcc.profile looks).

On Windows, CMake's Visual Studio generators build CUDA with the toolkit's MSBuild
files; a toolkit that was not installed is named to CMake as `-T cuda=<folder>`
(build_gpu.py does), which needs them in `extras/visual_studio_integration/
MSBuildExtensions` (CMake's CMAKE_VS_PLATFORM_TOOLSET_CUDA_CUSTOM_DIR).

The components: the compiler (nvcc, and from CUDA 13 on its crt and nvvm, which became
components of their own), the runtime (cudart), the CUB and Thrust headers (cccl) and
cuBLAS, which ggml-cuda links, and on Windows the Visual Studio integration.
BASTION_CUDA_REDIST replaces NVIDIA's address (a mirror; the tests' local server).

Standard library only: it runs before any environment exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

REDIST = "https://developer.download.nvidia.com/compute/cuda/redist"
# Taken when the release lists them (cuda_crt and libnvvm only from CUDA 13 on).
COMPONENTS = ("cuda_nvcc", "cuda_crt", "libnvvm", "cuda_cudart", "cuda_cccl", "libcublas")
WINDOWS_COMPONENTS = ("visual_studio_integration",)
REQUIRED = ("cuda_nvcc", "cuda_cudart", "libcublas")
MSBUILD_FILES = Path("extras") / "visual_studio_integration" / "MSBuildExtensions"


class ToolkitError(Exception):
    pass


def platform_key() -> str:
    if sys.platform == "win32":
        return "windows-x86_64"
    if sys.platform.startswith("linux"):
        return "linux-x86_64"
    raise ToolkitError(f"NVIDIA publishes no CUDA toolkit for {sys.platform}")


def _fetch(url: str, into: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=120) as response, into.open("wb") as out:  # noqa: S310
            shutil.copyfileobj(response, out, 1 << 20)
    except OSError as error:
        raise ToolkitError(f"could not download {url}: {error}") from error


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unpack(archive: Path, into: Path) -> Path:
    """The archive's one top folder (`<component>-<platform>-<version>-archive`)."""
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as opened:
            opened.extractall(into)  # noqa: S202 (zipfile drops ".." and roots from names)
    else:
        with tarfile.open(archive) as opened:
            opened.extractall(into, filter="data")
    tops = [p for p in into.iterdir() if p.is_dir()]
    if len(tops) != 1:
        raise ToolkitError(f"{archive.name} does not hold one folder")
    return tops[0]


def _merge(source: Path, target: Path) -> None:
    for path in sorted(source.rglob("*")):
        destination = target / path.relative_to(source)
        if path.is_symlink():
            destination.unlink(missing_ok=True)
            destination.symlink_to(path.readlink())
        elif path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)


def assemble(version: str, into: Path, *, platform: str | None = None) -> Path:
    """The toolkit of CUDA `version` ("12.8.1") in `into`; returns its bin folder."""
    platform = platform or platform_key()
    base = os.environ.get("BASTION_CUDA_REDIST", REDIST).rstrip("/")
    wanted = COMPONENTS + (WINDOWS_COMPONENTS if platform.startswith("windows") else ())
    with tempfile.TemporaryDirectory(prefix="bastion-cuda-") as scratch:
        manifest_path = Path(scratch) / "redistrib.json"
        _fetch(f"{base}/redistrib_{version}.json", manifest_path)
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise ToolkitError(f"redistrib_{version}.json is not JSON: {error}") from error
        missing = [c for c in REQUIRED if platform not in manifest.get(c, {})]
        if missing:
            raise ToolkitError(
                f"CUDA {version}'s manifest has no {', '.join(missing)} for {platform}"
            )
        into.mkdir(parents=True, exist_ok=True)
        for component in wanted:
            entry = manifest.get(component, {}).get(platform)
            if entry is None:
                continue
            archive = Path(scratch) / Path(entry["relative_path"]).name
            _fetch(f"{base}/{entry['relative_path']}", archive)
            if _sha256(archive) != entry["sha256"]:
                raise ToolkitError(f"{archive.name} does not match its sha256 in the manifest")
            top = _unpack(archive, Path(scratch) / component)
            if component == "visual_studio_integration":
                msbuild = next((p for p in top.rglob("MSBuildExtensions") if p.is_dir()), None)
                if msbuild is None:
                    raise ToolkitError(f"{archive.name} holds no MSBuildExtensions folder")
                _merge(msbuild, into / MSBUILD_FILES)
            else:
                _merge(top, into)
            archive.unlink()
    if platform.startswith("linux"):
        _link_target_folders(into)
    nvcc = into / "bin" / ("nvcc.exe" if platform.startswith("windows") else "nvcc")
    if not nvcc.is_file():
        raise ToolkitError(f"CUDA {version}'s compiler archive put no {nvcc.name} in bin")
    return nvcc.parent


def _link_target_folders(toolkit: Path) -> None:
    """Where an installed toolkit keeps the headers and libraries for x86_64, as links."""
    links = {
        toolkit / "lib64": "lib",
        toolkit / "targets" / "x86_64-linux" / "include": "../../include",
        toolkit / "targets" / "x86_64-linux" / "lib": "../../lib",
    }
    for link, target in links.items():
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("version", help="a CUDA release, e.g. 12.8.1")
    parser.add_argument("folder", type=Path, help="where the toolkit goes")
    args = parser.parse_args(argv)
    try:
        print(assemble(args.version, args.folder.resolve()))
    except ToolkitError as error:
        print(f"cuda_toolkit.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
