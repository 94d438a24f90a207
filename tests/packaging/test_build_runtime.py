"""packaging/runtime/build_runtime.py's own steps, on small wheels made here: taking the
broken CPU variant out leaves a wheel pip installs, and the checks refuse what must not
ship. (The real build takes 15-25 minutes; tests/core/inference/test_backends.py runs
the wheel it left, when there is one.)"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from tests.packaging.scripts import load_script


@pytest.fixture(scope="module")
def build_runtime() -> ModuleType:
    return load_script(Path("packaging/runtime/build_runtime.py"))


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}\n"


def make_wheel(folder: Path, libraries: list[str]) -> Path:
    """A wheel shaped like llama-cpp-python's, with stand-in libraries."""
    dist_info = "llama_cpp_python-0.3.36.dist-info"
    files = {
        "llama_cpp/__init__.py": b'__version__ = "0.3.36"\n',
        **{f"llama_cpp/lib/{name}": name.encode() * 10 for name in libraries},
        f"{dist_info}/METADATA": b"Metadata-Version: 2.1\nName: llama_cpp_python\n"
        b"Version: 0.3.36\n",
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
        b"Tag: py3-none-linux_x86_64\n",
    }
    record = "".join(record_line(name, data) for name, data in files.items())
    record += f"{dist_info}/RECORD,,\n"
    wheel = folder / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(f"{dist_info}/RECORD", record)
    return wheel


VARIANTS = ["libggml-cpu-x64.so", "libggml-cpu-haswell.so", "libggml-cpu-sapphirerapids.so"]


def test_the_amx_variant_is_taken_out_and_pip_still_installs_the_wheel(
    build_runtime: ModuleType, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path, ["libllama.so", "libggml.so.0", *VARIANTS])
    build_runtime.drop_variants(wheel)
    assert build_runtime.library_names(wheel) == [
        "libggml-cpu-haswell.so",
        "libggml-cpu-x64.so",
        "libggml.so.0",
        "libllama.so",
    ]
    with zipfile.ZipFile(wheel) as archive:
        record = archive.read("llama_cpp_python-0.3.36.dist-info/RECORD").decode()
    assert "sapphirerapids" not in record
    assert "llama_cpp/lib/libggml-cpu-haswell.so,sha256=" in record
    # pip checks every file against RECORD's hash while installing.
    target = tmp_path / "installed"
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    subprocess.run(
        [*install, "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    assert (target / "llama_cpp" / "lib" / "libggml-cpu-haswell.so").is_file()
    assert not (target / "llama_cpp" / "lib" / "libggml-cpu-sapphirerapids.so").exists()


def test_a_wheel_holding_the_broken_variant_is_refused(
    build_runtime: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build_runtime, "REQUIRED_X86_VARIANTS", ("x64",))
    # Only the variant lists are under test here, not objdump on stand-in files.
    monkeypatch.setattr(build_runtime, "avx_counts", lambda wheel, names: {})
    wheel = make_wheel(tmp_path, ["libllama.so", *VARIANTS])
    with pytest.raises(build_runtime.BuildError, match="sapphirerapids"):
        build_runtime.check_wheel(wheel)
    build_runtime.drop_variants(wheel)
    build_runtime.check_wheel(wheel)


def test_a_wheel_without_variants_is_refused(build_runtime: ModuleType, tmp_path: Path) -> None:
    # What llama-cpp-python's own CMake installs with GGML_BACKEND_DL: no CPU module.
    wheel = make_wheel(tmp_path, ["libllama.so", "libggml.so.0", "libggml-base.so.0"])
    with pytest.raises(build_runtime.BuildError, match="no CPU variant"):
        build_runtime.check_wheel(wheel)


@pytest.mark.parametrize(
    ("name", "anywhere"),
    [
        ("libllama.so.0", True),
        ("libggml-base.so", True),
        ("libggml-cpu-x64.so", True),
        ("libggml-cpu-sse42.so", True),
        ("libggml-cpu-haswell.so", False),
        ("ggml-cpu-skylakex.dll", False),
    ],
)
def test_only_the_avx_variants_may_hold_avx(
    build_runtime: ModuleType, name: str, anywhere: bool
) -> None:
    assert build_runtime.must_run_anywhere(name) is anywhere
