"""llama.cpp's compute backends in the model host: load them, then say what runs where.

A distribution build of llama.cpp (`packaging/runtime/build_runtime.py`) links no backend
into libggml: the CPU backend comes as modules, one per instruction-set level
(`libggml-cpu-x64.so` ... `libggml-cpu-haswell.so` ...), and GPU backends would come the
same way. Such a build registers nothing until someone loads the modules, and
llama-cpp-python never does: `Llama()` then fails with "no backends are loaded"
(https://github.com/abetlen/llama-cpp-python/issues/2069). `load_backends()` loads them,
in the model host process, before the first `Llama()`; ggml keeps the best CPU variant
this CPU can run. In the ordinary build the CPU backend is registered statically: the
count is not zero, nothing is loaded, and nothing changes.

The functions must be called on the very libggml that libllama uses. Wheels cannot hold
symlinks, so `llama_cpp/lib` may hold `libggml.so` and `libggml.so.0` as two files;
llama-cpp-python's own `_ggml` module loads the first, libllama links the second, and
backends registered through the first are invisible to libllama. So the library is
looked up among those already loaded, by the name libllama asked for, never loaded anew.

Everything here reads plain data back (`RuntimeInfo`); it crosses the pipe to the app.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from bastion_desktop.core.errors import ModelLoadError

log = logging.getLogger(__name__)

IS_WINDOWS = sys.platform == "win32"


class DeviceType(StrEnum):
    """ggml's `enum ggml_backend_dev_type`, in its order (ggml-backend.h)."""

    CPU = "cpu"
    GPU = "gpu"  # dedicated memory
    IGPU = "igpu"  # integrated: shares the host's memory
    ACCEL = "accel"  # works beside the CPU backend (BLAS, AMX)
    META = "meta"  # several devices as one, for tensor parallelism
    UNKNOWN = "unknown"  # a value this Bastion does not know


_DEVICE_TYPES = (DeviceType.CPU, DeviceType.GPU, DeviceType.IGPU, DeviceType.ACCEL, DeviceType.META)


@dataclass(frozen=True)
class RuntimeDevice:
    name: str  # "CPU", "Vulkan0", "CUDA0"
    description: str  # the CPU's or GPU's model name
    type: DeviceType
    backend: str  # the registered backend it belongs to: "CPU", "Vulkan", ...
    memory_free: int  # bytes
    memory_total: int  # bytes


@dataclass(frozen=True)
class RuntimeInfo:
    """What llama.cpp runs on in this process."""

    backends: tuple[str, ...]  # registered backends, in ggml's order: ("CPU",)
    devices: tuple[RuntimeDevice, ...]
    # The CPU backend's library as mapped in this process ("libggml-cpu-haswell.so");
    # None where that cannot be read (only Linux is read, from /proc/self/maps).
    cpu_library: str | None
    # The CPU variant ggml chose ("haswell"), None for a build with a single CPU target.
    cpu_variant: str | None
    # The folder backend modules were loaded from by this call; None when the build had
    # its backends already (the ordinary build, or a second call).
    loaded_from: Path | None
    # libllama's own view (`llama_print_system_info`): the CPU features in use.
    system_info: str
    # GPU modules asked for that did not load, each with llama.cpp's reason.
    gpu_failures: tuple[str, ...] = ()


# A GPU backend module: libggml-vulkan.so, ggml-cuda.dll, libggml-metal.so ...
_GPU_MODULE = re.compile(r"(?:lib)?ggml-(?!cpu|base)(?P<backend>[a-z]+)\.(?:so|dll|dylib)")
_CPU_LIBRARY = re.compile(r"(?:lib)?ggml-cpu(?:-(?P<variant>[\w.]+?))?\.(?:so|dll|dylib)(?:\.\d+)*")


def _encode_path(path: Path) -> bytes:
    # ggml reads the folder with std::filesystem::u8path: UTF-8 on Windows, bytes as they
    # are elsewhere.
    return str(path).encode("utf-8") if sys.platform == "win32" else os.fsencode(path)


def _llama_lib_dir() -> Path:
    """The folder llama-cpp-python loaded libllama from (it honours LLAMA_CPP_LIB_PATH;
    in a frozen app this is inside the bundle, wherever PyInstaller put llama_cpp)."""
    import llama_cpp.llama_cpp as bindings

    return Path(str(getattr(bindings, "_base_path", Path(bindings.__file__).parent / "lib")))


def _loaded_libggml(lib_dir: Path) -> ctypes.CDLL:
    """The libggml that libllama uses, from among the libraries already loaded."""
    if sys.platform == "win32":
        # One ggml.dll, and Windows knows a loaded module by its name: take its handle
        # without loading anything (unverified on Windows so far).
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.GetModuleHandleW.restype = ctypes.c_void_p
        kernel32.GetModuleHandleW.argtypes = [ctypes.c_wchar_p]
        handle = kernel32.GetModuleHandleW("ggml.dll")
        if not handle:
            raise RuntimeError("ggml.dll is not loaded: import llama_cpp first")
        return ctypes.CDLL("ggml.dll", handle=handle)
    if sys.platform == "darwin":
        # libllama links @rpath/libggml.0.dylib, found beside it through @loader_path
        # (unverified on macOS so far; the wheel holds libggml.dylib as another copy).
        names = [str(lib_dir / "libggml.0.dylib"), "libggml.0.dylib"]
    else:
        # By soname, glibc answers with the copy libllama's DT_NEEDED entry loaded
        # (checked: see ../shared/research/runtime.md), whatever folder it came from.
        names = ["libggml.so.0", str(lib_dir / "libggml.so.0")]
    # RTLD_NOLOAD: a handle to a library already loaded, or none; never a new copy.
    mode = os.RTLD_NOLOAD | os.RTLD_LAZY | os.RTLD_LOCAL
    for name in names:
        try:
            return ctypes.CDLL(name, mode=mode)
        except OSError:
            continue
    raise RuntimeError(f"libllama's libggml is not loaded (looked for {', '.join(names)})")


def _declare(ggml: ctypes.CDLL) -> None:
    """The C signatures, from ggml/include/ggml-backend.h (ggml 0.25.3)."""
    size_t, pointer, text = ctypes.c_size_t, ctypes.c_void_p, ctypes.c_char_p
    signatures: dict[str, tuple[object, list[object]]] = {
        "ggml_backend_load_all_from_path": (None, [text]),
        "ggml_backend_load": (pointer, [text]),
        "ggml_backend_reg_count": (size_t, []),
        "ggml_backend_reg_get": (pointer, [size_t]),
        "ggml_backend_reg_name": (text, [pointer]),
        "ggml_backend_dev_count": (size_t, []),
        "ggml_backend_dev_get": (pointer, [size_t]),
        "ggml_backend_dev_name": (text, [pointer]),
        "ggml_backend_dev_description": (text, [pointer]),
        "ggml_backend_dev_memory": (
            None,
            [pointer, ctypes.POINTER(size_t), ctypes.POINTER(size_t)],
        ),
        "ggml_backend_dev_type": (ctypes.c_int, [pointer]),  # enum ggml_backend_dev_type
        "ggml_backend_dev_backend_reg": (pointer, [pointer]),
        "ggml_backend_dev_by_name": (pointer, [text]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(ggml, name)
        function.restype = restype
        function.argtypes = argtypes


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", errors="replace") if value else ""


def _devices(ggml: ctypes.CDLL) -> tuple[RuntimeDevice, ...]:
    devices = []
    for index in range(int(ggml.ggml_backend_dev_count())):
        device = ggml.ggml_backend_dev_get(index)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        ggml.ggml_backend_dev_memory(device, ctypes.byref(free), ctypes.byref(total))
        kind = int(ggml.ggml_backend_dev_type(device))
        reg = ggml.ggml_backend_dev_backend_reg(device)
        devices.append(
            RuntimeDevice(
                name=_text(ggml.ggml_backend_dev_name(device)),
                description=_text(ggml.ggml_backend_dev_description(device)).strip(),
                type=_DEVICE_TYPES[kind] if 0 <= kind < len(_DEVICE_TYPES) else DeviceType.UNKNOWN,
                backend=_text(ggml.ggml_backend_reg_name(reg)) if reg else "",
                memory_free=free.value,
                memory_total=total.value,
            )
        )
    return tuple(devices)


def _mapped_cpu_library() -> str | None:
    """The CPU backend's file among this process's mapped files (Linux only)."""
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    names = {line.rsplit("/", 1)[-1] for line in maps.splitlines() if "/" in line}
    found = sorted(name for name in names if _CPU_LIBRARY.fullmatch(name))
    return found[0] if found else None


def cpu_variant_of(library: str | None) -> str | None:
    """`libggml-cpu-haswell.so` -> `haswell`; a single-target `libggml-cpu.so.0` -> None."""
    match = _CPU_LIBRARY.fullmatch(library or "")
    return match.group("variant") if match else None


def cpu_variant_file(lib_dir: Path, variant: str) -> Path:
    """Where a CPU variant's module lies (ggml names modules `.so` on macOS too)."""
    if sys.platform == "win32":
        return lib_dir / f"ggml-cpu-{variant}.dll"
    return lib_dir / f"libggml-cpu-{variant}.so"


def _load_cpu_variant(ggml: ctypes.CDLL, lib_dir: Path, variant: str) -> None:
    path = cpu_variant_file(lib_dir, variant)
    if not path.is_file():
        raise ModelLoadError(
            f"llama.cpp has no {variant!r} CPU build in {lib_dir}: choose another CPU mode, "
            "or install Bastion again."
        )
    # ggml_backend_load refuses a module whose score is 0: this CPU lacks its instructions.
    if not ggml.ggml_backend_load(_encode_path(path)):
        raise ModelLoadError(
            f"This computer's processor cannot run llama.cpp's {variant!r} CPU build: "
            "choose another CPU mode."
        )


class LlamaLogTail:
    """Keeps llama.cpp's (and ggml's) last warnings and errors instead of printing them
    over the user's terminal, so that a failed load can say why in a sentence."""

    def __init__(self) -> None:
        import llama_cpp

        self.lines: collections.deque[str] = collections.deque(maxlen=20)

        @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
        def callback(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
            # ggml.h: GGML_LOG_LEVEL_INFO = 2, WARN = 3, ERROR = 4.
            if level in (3, 4):
                line = text.decode("utf-8", errors="replace").strip()
                if line:
                    self.lines.append(line)

        self._callback = callback  # the C side holds no reference: keep one
        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))

    def last_error(self) -> str | None:
        return self.lines[-1] if self.lines else None


# The libraries loaded for GPU modules (libraries_beside): kept for the process's life.
_BESIDE_MODULES: list[Any] = []


def libraries_beside(
    module: Path, *, load: Callable[[str], Any] | None = None, windows: bool = IS_WINDOWS
) -> list[Any]:
    """On Windows, load the DLLs lying beside a GPU module (a CUDA module's cudart and
    cuBLAS) by their full paths, before the module. ggml loads it with LoadLibraryW, and
    Windows looks for a DLL's imports by their names alone, in the program's folder, the
    system's and PATH, never in the module's own folder; a DLL already loaded is found by
    its name. (`ctypes.WinDLL` with a full path searches that DLL's folder for its own
    imports: cublas finds cublasLt.) Elsewhere the modules are built to find them
    (RUNPATH `$ORIGIN`). Raises OSError when one does not load."""
    if not windows:
        return []
    load = load or ctypes.WinDLL  # type: ignore[attr-defined,unused-ignore]
    return [load(str(path)) for path in sorted(module.parent.glob("*.dll")) if path != module]


def gpu_module_folders(lib_dir: Path) -> dict[str, Path]:
    """The GPU backend modules shipped beside libllama, one folder per flavour
    (`vulkan/libggml-vulkan.so`, `cuda_v12/ggml-cuda.dll`): {flavour: module}."""
    found = {}
    with contextlib.suppress(OSError):
        for folder in sorted(lib_dir.iterdir()):
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if _GPU_MODULE.fullmatch(path.name):
                    found[folder.name] = path
                    break
    return found


def load_backends(
    lib_dir: Path | None = None,
    *,
    cpu_variant: str | None = None,
    gpu_modules: Sequence[Path] = (),
    log_tail: LlamaLogTail | None = None,
) -> RuntimeInfo:
    """Make sure llama.cpp has its backends, loading the modules from `lib_dir` (default:
    the folder libllama came from) when none is registered. Call it in the process that
    will create the `Llama`, before it does; it imports llama_cpp.

    `cpu_variant` ("x64", "haswell"...) loads that CPU variant instead of the best one
    (a compatibility mode); it has no effect on a build whose CPU backend is built in.
    `gpu_modules` are GPU backend modules to load beside the CPU (paths, as
    `gpu_module_folders` finds them); one that fails is named in `gpu_failures` with
    llama.cpp's reason (read through `log_tail`, the caller's if it keeps one), and the
    CPU is used without it.

    Raises ModelLoadError when no backend can be loaded: the runtime's files are missing,
    or the variant asked for cannot run on this CPU.
    """
    import llama_cpp

    folder = lib_dir or _llama_lib_dir()
    ggml = _loaded_libggml(folder)
    _declare(ggml)
    loaded_from = None
    failures: list[str] = []
    if int(ggml.ggml_backend_reg_count()) == 0:
        loaded_from = folder
        if cpu_variant is not None:
            _load_cpu_variant(ggml, folder, cpu_variant)
        else:
            # Loads the CPU variants lying in `folder` itself, never the GPU folders.
            ggml.ggml_backend_load_all_from_path(_encode_path(folder))
        if int(ggml.ggml_backend_reg_count()) == 0:
            raise ModelLoadError(
                f"llama.cpp found no backend it can run in {folder}: this installation of "
                "Bastion is incomplete. Install it again."
            )
        tail = log_tail or (LlamaLogTail() if gpu_modules else None)
        for module in gpu_modules:
            assert tail is not None
            tail.lines.clear()
            try:
                _BESIDE_MODULES.extend(libraries_beside(module))
            except OSError as error:
                failures.append(f"{module.parent.name}: its libraries did not load: {error}")
                continue
            if not ggml.ggml_backend_load(_encode_path(module)):
                reason = tail.last_error() or "it did not load"
                failures.append(f"{module.parent.name}: {reason}")
    backends = tuple(
        _text(ggml.ggml_backend_reg_name(ggml.ggml_backend_reg_get(index)))
        for index in range(int(ggml.ggml_backend_reg_count()))
    )
    cpu_library = _mapped_cpu_library() if sys.platform.startswith("linux") else None
    info = RuntimeInfo(
        backends=backends,
        devices=_devices(ggml),
        cpu_library=cpu_library,
        cpu_variant=cpu_variant_of(cpu_library),
        loaded_from=loaded_from,
        system_info=_text(llama_cpp.llama_print_system_info()).strip(" |"),
        gpu_failures=tuple(failures),
    )
    if not info.system_info:
        # Registered on a libggml libllama does not use: a bug in finding the library.
        raise RuntimeError(f"backends {backends} were registered on another copy of libggml")
    return info


@contextlib.contextmanager
def offload_devices(names: Sequence[str], lib_dir: Path | None = None) -> Iterator[Any]:
    """While a `Llama` is made: llama.cpp offloads layers to the devices named
    ("Vulkan1", "CUDA0") and to no other, instead of choosing them itself. `Llama` has
    no setting for llama.cpp's `devices` model parameter: this swaps llama-cpp-python's
    view of llama.cpp's model defaults for the time of the call, as
    token_loop.context_settings does for contexts (a model host loads on one thread).
    Yields the parameter's array, which the caller keeps while the model lives (the
    model's parameters point at it); with no names, None and llama.cpp's own choice.
    Raises ModelLoadError for a device no loaded backend has registered."""
    if not names:
        yield None
        return
    import llama_cpp.llama_cpp as bindings

    ggml = _loaded_libggml(lib_dir or _llama_lib_dir())
    _declare(ggml)
    handles = [ggml.ggml_backend_dev_by_name(name.encode("utf-8")) for name in names]
    missing = [name for name, handle in zip(names, handles, strict=True) if not handle]
    if missing:
        raise ModelLoadError(f"llama.cpp has no device {', '.join(missing)} in the model host")
    devices = (ctypes.c_void_p * (len(handles) + 1))(*handles, None)  # NULL-terminated
    defaults = bindings.llama_model_default_params

    def with_devices() -> Any:
        params = defaults()
        params.devices = ctypes.cast(devices, ctypes.c_void_p)
        return params

    bindings.llama_model_default_params = with_devices
    try:
        yield devices
    finally:
        bindings.llama_model_default_params = defaults


def describe(info: RuntimeInfo) -> str:
    """One log line: `backends CPU; CPU variant haswell (loaded from ...); devices ...`."""
    if info.cpu_variant:
        cpu = f"CPU variant {info.cpu_variant}"
    else:
        cpu = f"CPU backend {info.cpu_library or 'built in'}"
    where = f" (loaded from {info.loaded_from})" if info.loaded_from else ""
    devices = ", ".join(
        f"{d.name} [{d.type}] {d.description}: {d.memory_free / 2**30:.1f} of "
        f"{d.memory_total / 2**30:.1f} GiB free"
        for d in info.devices
    )
    return f"backends {', '.join(info.backends)}; {cpu}{where}; devices {devices}"
