"""packaging/runtime/build_gpu.py's own steps: GPU modules added to a runtime wheel that pip
installs, Debian packages unpacked without dpkg, and the built Vulkan module, where
`./dev` built one, checked like the wheel's baseline libraries. (The Vulkan build
itself takes about two minutes and runs in `./dev`; tests/core/inference/test_vulkan.py
runs what it built on Mesa's lavapipe.)"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from bastion_desktop.core.inference.backends import gpu_module_folders
from bastion_desktop.core.inference.runtime_probe import llama_lib_dir
from tests.packaging.scripts import load_script

from .test_build_runtime import make_wheel, record_line


@pytest.fixture(scope="module")
def build_gpu() -> ModuleType:
    return load_script(Path("packaging/runtime/build_gpu.py"))


def test_gpu_modules_join_the_wheel_in_their_own_folder_and_pip_installs_it(
    build_gpu: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_WHEEL_CACHE", str(tmp_path / "cache"))
    wheel = make_wheel(tmp_path, ["libllama.so", "libggml-base.so.0", "libggml-cpu-x64.so"])
    flavour = tmp_path / "built" / "vulkan"
    flavour.mkdir(parents=True)
    module = flavour / "libggml-vulkan.so"
    module.write_bytes(b"a Vulkan backend" * 100)
    combined = Path(build_gpu.add_modules(wheel, [flavour]))
    assert combined != wheel, "the CPU-only wheel stays as it was, for its cache"
    with zipfile.ZipFile(combined) as archive:
        record = archive.read("llama_cpp_python-0.3.36.dist-info/RECORD").decode()
        info = archive.getinfo("llama_cpp/lib/vulkan/libggml-vulkan.so")
    assert record_line("llama_cpp/lib/vulkan/libggml-vulkan.so", module.read_bytes()) in record
    assert (info.external_attr >> 16) & stat.S_IXUSR
    assert build_gpu.add_modules(wheel, [flavour]) == combined, "made once, then reused"
    # pip checks every file against RECORD's hash while installing.
    target = tmp_path / "installed"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--target", str(target), str(combined)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    lib = target / "llama_cpp" / "lib"
    assert gpu_module_folders(lib) == {"vulkan": lib / "vulkan" / "libggml-vulkan.so"}
    assert (lib / "libggml-cpu-x64.so").is_file()


def _deb(files: dict[str, bytes]) -> bytes:
    """A Debian package (an ar archive of debian-binary, control and data) in memory."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as archive:
        for name, content in files.items():
            entry = tarfile.TarInfo(f"./{name}")
            entry.size = len(content)
            archive.addfile(entry, io.BytesIO(content))
    members = {"debian-binary": b"2.0\n", "control.tar.xz": b"", "data.tar.xz": data.getvalue()}
    out = bytearray(b"!<arch>\n")
    for name, content in members.items():
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(content):<10}`\n".encode()
        out += content + (b"\n" if len(content) % 2 else b"")
    return bytes(out)


def test_debian_packages_unpack_without_dpkg(build_gpu: ModuleType, tmp_path: Path) -> None:
    package = _deb({"usr/include/vulkan/vulkan.hpp": b"// headers\n", "usr/share/x": b"odd"})
    build_gpu._unpack_deb(package, tmp_path)
    assert (tmp_path / "usr/include/vulkan/vulkan.hpp").read_bytes() == b"// headers\n"
    assert (tmp_path / "usr/share/x").read_bytes() == b"odd"
    with pytest.raises(build_gpu.BuildError, match="not a Debian package"):
        build_gpu._unpack_deb(b"PK\x03\x04 a zip", tmp_path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux build's own search")
def test_glslc_is_the_one_glslc_names_as_on_a_release_machine_without_one(
    build_gpu: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build_gpu, "vulkan_headers", lambda: tmp_path / "usr")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.delenv("GLSLC", raising=False)
    with pytest.raises(build_gpu.BuildError, match="apt install glslc, or set GLSLC"):
        build_gpu.vulkan_cmake_args()
    sdk_glslc = tmp_path / "vulkan-sdk" / "x86_64" / "bin" / "glslc"
    monkeypatch.setenv("GLSLC", str(sdk_glslc))
    try:
        args = build_gpu.vulkan_cmake_args()
    except build_gpu.BuildError as error:  # past glslc: the loader, which tests need too
        pytest.skip(str(error))
    assert f"-DVulkan_GLSLC_EXECUTABLE={sdk_glslc}" in args


def test_the_shipped_vulkan_module_runs_on_any_x86_64_cpu_and_finds_its_libraries(
    build_gpu: ModuleType,
) -> None:
    folder = llama_lib_dir()
    modules = gpu_module_folders(folder) if folder else {}
    if "vulkan" not in modules:
        if os.environ.get("BASTION_REQUIRE_GPU_BACKENDS") == "1":
            pytest.fail("the runtime has no Vulkan module (BASTION_REQUIRE_GPU_BACKENDS=1)")
        pytest.skip("the runtime has no Vulkan module (./dev builds it where glslc is)")
    module = modules["vulkan"]
    assert build_gpu.build_runtime.avx_count(module) == (0, 0), "no AVX outside the variants"
    dynamic = subprocess.run(
        ["objdump", "-p", str(module)], capture_output=True, text=True, check=True
    ).stdout
    assert "RUNPATH              $ORIGIN/.." in dynamic, "libggml-base lies one folder up"
    assert "NEEDED               libvulkan.so.1" in dynamic


def test_the_installers_carry_vulkan_or_the_flavours_a_release_names(
    build_gpu: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BASTION_GPU_FLAVOURS", raising=False)
    assert build_gpu.default_flavours() == ([] if sys.platform == "darwin" else ["vulkan"])
    monkeypatch.setenv("BASTION_GPU_FLAVOURS", "vulkan, cuda_v12 vulkan")
    assert build_gpu.default_flavours() == ["vulkan", "cuda_v12"]
    monkeypatch.setenv("BASTION_GPU_FLAVOURS", "")
    assert build_gpu.default_flavours() == []
    monkeypatch.setenv("BASTION_GPU_FLAVOURS", "vulkan,cuda")
    with pytest.raises(build_gpu.BuildError, match="names cuda: the flavours are cuda_v12"):
        build_gpu.default_flavours()


def fake_nvcc(folder: Path, release: str) -> Path:
    """A stand-in for a CUDA toolkit's nvcc that only says its release: this machine has
    no CUDA 12 toolkit (and no Windows one), whose checks these are."""
    nvcc = folder / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text(
        "#!/bin/sh\necho 'nvcc: NVIDIA (R) Cuda compiler driver'\n"
        f"echo 'Cuda compilation tools, release {release}, V{release}.1'\n"
    )
    nvcc.chmod(0o755)
    return nvcc


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script stands in for nvcc")
def test_a_cuda_flavour_needs_its_toolkit_release_and_carries_machine_code_for_rtx_gpus(
    build_gpu: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BASTION_CUDA_ARCHITECTURES", raising=False)
    monkeypatch.delenv("BASTION_CUDA_CMAKE_ARGS", raising=False)
    for release in ("12.4", "12.8", "13.0"):
        fake_nvcc(tmp_path / release, release)
    monkeypatch.setenv("PATH", f"{tmp_path / '12.4' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    # RTX 50's sm_120a came with CUDA 12.8; a list without it builds with an older one.
    with pytest.raises(build_gpu.BuildError, match=r"cuda_v12 needs CUDA 12\.8 or a newer 12"):
        build_gpu.flavour_cmake_args("cuda_v12")
    monkeypatch.setenv("BASTION_CUDA_ARCHITECTURES", "86-real")
    assert "-DCMAKE_CUDA_ARCHITECTURES=86-real" in build_gpu.flavour_cmake_args("cuda_v12")
    monkeypatch.delenv("BASTION_CUDA_ARCHITECTURES")
    monkeypatch.setenv("PATH", f"{tmp_path / '12.8' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(build_gpu.BuildError, match="cuda_v13 needs CUDA 13's nvcc"):
        build_gpu.flavour_cmake_args("cuda_v13")
    args = build_gpu.flavour_cmake_args("cuda_v12")
    monkeypatch.setenv("PATH", f"{tmp_path / '13.0' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    for flavour, flavour_args in (
        ("cuda_v12", args),
        ("cuda_v13", build_gpu.flavour_cmake_args("cuda_v13")),
    ):
        listed = next(a for a in flavour_args if a.startswith("-DCMAKE_CUDA_ARCHITECTURES="))
        architectures = listed.split("=", 1)[1].split(";")
        # Machine code for RTX 30, 40 and 50: no compilation by the driver on first use.
        assert {"86-real", "89-real", "120a-real"} <= set(architectures), flavour
        # PTX for the architecture before each, so older and newer GPUs still run it.
        assert "75-virtual" in architectures, flavour
        assert "90-virtual" in architectures, flavour


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script stands in for nvcc")
@pytest.mark.parametrize(
    ("windows", "layout"),
    [
        # Linux: sonames linking to the versioned files, in lib64 (the packages') or lib.
        (
            False,
            {
                "lib64/libcudart.so.12.8.90": None,
                "lib64/libcudart.so.12": "libcudart.so.12.8.90",
                "lib64/libcublas.so.12": None,
                "lib64/libcublasLt.so.12": None,
            },
        ),
        # Windows: the DLLs in bin (CUDA 12) or bin/x64 (CUDA 13).
        (
            True,
            {
                "bin/x64/cudart64_12.dll": None,
                "bin/x64/cublas64_12.dll": None,
                "bin/cublasLt64_12.dll": None,
            },
        ),
    ],
)
def test_the_cuda_runtime_is_copied_beside_the_module_under_the_names_it_is_linked_by(
    build_gpu: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    windows: bool,
    layout: dict[str, str | None],
) -> None:
    toolkit = tmp_path / "cuda"
    nvcc = fake_nvcc(toolkit, "12.8")
    monkeypatch.setenv("PATH", f"{nvcc.parent}{os.pathsep}{os.environ['PATH']}")
    for name, target in layout.items():
        path = toolkit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if target is None:
            path.write_bytes(name.encode())
        else:
            path.symlink_to(target)
    module = tmp_path / "module"
    module.mkdir()
    build_gpu.copy_cuda_runtime(module, "12", windows=windows)
    copied = sorted(p.name for p in module.iterdir())
    assert copied == sorted(build_gpu.cuda_runtime_names("12", windows=windows))
    assert not any(p.is_symlink() for p in module.iterdir()), "the files, not links"
    if not windows:
        assert (module / "libcudart.so.12").read_bytes() == b"lib64/libcudart.so.12.8.90"
    # A toolkit without cuBLAS says so.
    next(toolkit.rglob("cublas64_12.dll" if windows else "libcublas.so.12")).unlink()
    with pytest.raises(build_gpu.BuildError, match=r"cublas(64_12\.dll|\.so\.12) is not in"):
        build_gpu.copy_cuda_runtime(tmp_path / "again", "12", windows=windows)
