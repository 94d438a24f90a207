"""packaging/runtime/cuda_toolkit.py: a CUDA toolkit assembled from NVIDIA's redistributable
archives, served here by a real HTTP server on 127.0.0.1 in NVIDIA's layout (a manifest
and one archive per component). The archives are small stand-ins with the real archives'
folder layout: this machine has no network, and the compiler in them is not run."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.packaging.scripts import load_script

VERSION = "12.8.1"


@pytest.fixture(scope="module")
def cuda_toolkit() -> ModuleType:
    return load_script(Path("packaging/runtime/cuda_toolkit.py"))


# Per platform: component -> {path in its archive's top folder: contents, or "->target"
# for a symbolic link}.
LINUX = {
    "cuda_nvcc": {"bin/nvcc": "nvcc", "nvvm/bin/cicc": "cicc", "include/crt/host_config.h": ""},
    "cuda_cudart": {
        "lib/libcudart.so.12.8.90": "cudart",
        "lib/libcudart.so.12": "->libcudart.so.12.8.90",
        "include/cuda_runtime.h": "",
    },
    "cuda_cccl": {"include/cub/cub.cuh": ""},
    "libcublas": {"lib/libcublas.so.12": "cublas", "lib/libcublasLt.so.12": "cublasLt"},
    "cuda_nsight": {"bin/nsight": "not wanted"},
}
WINDOWS = {
    "cuda_nvcc": {"bin/nvcc.exe": "nvcc"},
    "cuda_cudart": {"bin/cudart64_12.dll": "cudart", "include/cuda_runtime.h": ""},
    "libcublas": {"bin/cublas64_12.dll": "cublas", "bin/cublasLt64_12.dll": "cublasLt"},
    "visual_studio_integration": {
        "visual_studio_integration/MSBuildExtensions/CUDA 12.8.props": "props"
    },
}


def archive(component: str, platform: str, files: dict[str, str]) -> tuple[str, bytes]:
    top = f"{component}-{platform}-{VERSION}-archive"
    buffer = io.BytesIO()
    if platform.startswith("windows"):
        with zipfile.ZipFile(buffer, "w") as out:
            for name, text in files.items():
                out.writestr(f"{top}/{name}", text)
        return f"{top}.zip", buffer.getvalue()
    with tarfile.open(fileobj=buffer, mode="w:xz") as out:
        for name, text in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            if text.startswith("->"):
                info.type, info.linkname = tarfile.SYMTYPE, text[2:]
                out.addfile(info)
            else:
                info.size, info.mode = len(text), 0o755
                out.addfile(info, io.BytesIO(text.encode()))
    return f"{top}.tar.xz", buffer.getvalue()


class Redist:
    """NVIDIA's redist folder on disk, and the paths asked of the server."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.requested: list[str] = []
        self.manifest: dict[str, object] = {"release_label": VERSION}

    def publish(self, platform: str, components: dict[str, dict[str, str]]) -> None:
        for component, files in components.items():
            name, data = archive(component, platform, files)
            relative = f"{component}/{platform}/{name}"
            (self.folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (self.folder / relative).write_bytes(data)
            entry = self.manifest.setdefault(component, {"version": VERSION})
            assert isinstance(entry, dict)
            entry[platform] = {
                "relative_path": relative,
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        (self.folder / f"redistrib_{VERSION}.json").write_text(json.dumps(self.manifest))


@pytest.fixture
def redist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Redist]:
    served = Redist(tmp_path / "redist")
    served.folder.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            served.requested.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(served.folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("BASTION_CUDA_REDIST", f"http://127.0.0.1:{server.server_port}/")
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(sys.platform == "win32", reason="a Linux toolkit's symbolic links")
def test_a_linux_toolkit_is_laid_out_as_installed(
    cuda_toolkit: ModuleType, redist: Redist, tmp_path: Path
) -> None:
    redist.publish("linux-x86_64", LINUX)
    toolkit = tmp_path / "cuda"
    bin_folder = cuda_toolkit.assemble(VERSION, toolkit, platform="linux-x86_64")
    assert bin_folder == toolkit / "bin"
    assert (toolkit / "bin" / "nvcc").read_text() == "nvcc"
    assert (toolkit / "bin" / "nvcc").stat().st_mode & 0o111, "still executable"
    assert (toolkit / "nvvm" / "bin" / "cicc").is_file()
    assert (toolkit / "lib" / "libcudart.so.12").is_symlink()
    assert (toolkit / "lib" / "libcudart.so.12").read_text() == "cudart"
    # Where nvcc.profile and CMake look on an installed toolkit.
    assert (toolkit / "lib64" / "libcublasLt.so.12").read_text() == "cublasLt"
    targets = toolkit / "targets" / "x86_64-linux"
    assert (targets / "include" / "cub" / "cub.cuh").is_file()
    assert (targets / "lib" / "libcublas.so.12").is_file()
    # Only what the CUDA backend needs was downloaded.
    assert not (toolkit / "bin" / "nsight").exists()
    assert not any("cuda_nsight" in path for path in redist.requested)


def test_a_windows_toolkit_carries_visual_studios_build_files_where_cmake_looks(
    cuda_toolkit: ModuleType, redist: Redist, tmp_path: Path
) -> None:
    redist.publish("windows-x86_64", WINDOWS)
    redist.publish("linux-x86_64", LINUX)  # the same manifest lists both
    toolkit = tmp_path / "cuda"
    assert cuda_toolkit.assemble(VERSION, toolkit, platform="windows-x86_64") == toolkit / "bin"
    msbuild = toolkit / "extras" / "visual_studio_integration" / "MSBuildExtensions"
    assert (msbuild / "CUDA 12.8.props").read_text() == "props"
    found = sorted(p.name for p in (toolkit / "bin").iterdir())
    assert found == ["cublas64_12.dll", "cublasLt64_12.dll", "cudart64_12.dll", "nvcc.exe"]
    assert not any("linux" in path for path in redist.requested)


def test_an_archive_that_does_not_match_its_sha256_is_refused(
    cuda_toolkit: ModuleType, redist: Redist, tmp_path: Path
) -> None:
    redist.publish("linux-x86_64", LINUX)
    cublas = next(redist.folder.rglob("libcublas-*.tar.xz"))
    cublas.write_bytes(cublas.read_bytes()[:-1] + b"!")
    with pytest.raises(cuda_toolkit.ToolkitError, match=r"libcublas-.* does not match its sha256"):
        cuda_toolkit.assemble(VERSION, tmp_path / "cuda", platform="linux-x86_64")


def test_a_release_without_a_needed_component_says_which(
    cuda_toolkit: ModuleType, redist: Redist, tmp_path: Path
) -> None:
    redist.publish("linux-x86_64", {k: v for k, v in LINUX.items() if k != "libcublas"})
    with pytest.raises(cuda_toolkit.ToolkitError, match="no libcublas for linux-x86_64"):
        cuda_toolkit.assemble(VERSION, tmp_path / "cuda", platform="linux-x86_64")
    # An unknown release: the server's 404, in a sentence.
    with pytest.raises(cuda_toolkit.ToolkitError, match=r"could not download .*redistrib_9\.9"):
        cuda_toolkit.assemble("9.9", tmp_path / "cuda", platform="linux-x86_64")
