"""Load llama.cpp's backends the model host's way, then let the starter say a few words.

    python backend_probe_script.py MODEL [--skip-load-backends | --cpu-variant V]
        [--tokens N] [--n-ctx N]
    python backend_probe_script.py --ggml-only LIB_DIR

Run as its own process by test_backends.py: with the development environment's
llama.cpp, with the distribution build put first on PYTHONPATH, and under qemu-user with
an older emulated CPU. Prints one JSON object: the ggml libraries mapped before and
after `load_backends()`, its `RuntimeInfo`, and the greedy completion (or the error).
Standard library and Bastion only, so that any Python with llama_cpp can run it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


def mapped_ggml_files() -> list[str]:
    """Every ggml/llama library file this process has mapped (Linux)."""
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    paths = {line.split(maxsplit=5)[-1] for line in maps.splitlines() if "/" in line}
    return sorted(p for p in paths if "/libggml" in p or "/libllama" in p)


def ggml_only(lib_dir: Path) -> int:
    """ggml's own choice of CPU variant, through ctypes alone: for CPUs below numpy's
    floor (numpy 2.4 needs x86-64-v2), where neither llama_cpp nor Bastion can start."""
    import ctypes
    import os

    ctypes.CDLL(str(lib_dir / "libllama.so"))  # brings libggml.so.0 through its RUNPATH
    ggml = ctypes.CDLL("libggml.so.0", mode=os.RTLD_NOLOAD)
    ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    ggml.ggml_backend_load_all_from_path(os.fsencode(lib_dir))
    ggml.ggml_backend_reg_count.restype = ctypes.c_size_t
    after = mapped_ggml_files()
    cpu = [Path(p).name for p in after if "libggml-cpu" in p]
    print(json.dumps({"backends": ggml.ggml_backend_reg_count(), "cpu_libraries": cpu}))
    return 0


def main() -> int:
    if sys.argv[1:2] == ["--ggml-only"]:
        return ggml_only(Path(sys.argv[2]))
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--skip-load-backends", action="store_true")
    parser.add_argument("--twice", action="store_true", help="call load_backends() again")
    parser.add_argument("--cpu-variant")
    parser.add_argument("--tokens", type=int, default=4)
    parser.add_argument("--n-ctx", type=int, default=64)
    args = parser.parse_args()

    import ctypes

    import llama_cpp
    import llama_cpp._ggml  # loads libggml.so: the second copy, as a wheel has no symlinks

    from bastion_desktop.core.inference.backends import load_backends

    errors: list[str] = []

    @llama_cpp.llama_log_callback
    def keep_errors(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        if level == 4:  # GGML_LOG_LEVEL_ERROR
            errors.append(text.decode("utf-8", errors="replace").strip())

    llama_cpp.llama_log_set(keep_errors, ctypes.c_void_p(0))
    result: dict[str, object] = {"llama_cpp": str(Path(llama_cpp.__file__).parent)}
    result["before"] = mapped_ggml_files()
    if not args.skip_load_backends:
        info = load_backends(cpu_variant=args.cpu_variant)
        result["runtime"] = dataclasses.asdict(info)
    result["after"] = mapped_ggml_files()
    if args.twice:
        result["second"] = dataclasses.asdict(load_backends(cpu_variant=args.cpu_variant))
        result["after_second"] = mapped_ggml_files()
    try:
        llm = llama_cpp.Llama(
            model_path=str(args.model), n_ctx=args.n_ctx, n_threads=2, verbose=False
        )
        answer = llm.create_completion(
            "The capital of France is", max_tokens=args.tokens, temperature=0.0
        )
        result["text"] = answer["choices"][0]["text"]
        llm.close()
    except Exception as error:  # reported to the test, which decides
        result["error"] = f"{type(error).__name__}: {error}"
    result["log_errors"] = errors
    # Back to llama.cpp's own logging before the callback object is freed at exit.
    llama_cpp.llama_log_set(llama_cpp.llama_log_callback(), ctypes.c_void_p(0))
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
