"""`bastion doctor`: versions, folders, the llama.cpp build, and a real test of the
starter model, so a support request can start from one paste."""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from bastion_desktop.app import AppContext
from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.inference.host import ModelHost
from bastion_desktop.core.inference.types import (
    ChatMessage,
    GenerationFinished,
    LoadOptions,
    Role,
    SamplingParams,
)
from bastion_desktop.core.starter import STARTER_ID

_PACKAGES = (
    "bastion",
    "llama-cpp-python",
    "nemoguardrails",
    "huggingface-hub",
    "PySide6-Essentials",
    "apsw-sqlite3mc",
    "keyring",
    "pydantic",
)


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def llama_build() -> dict[str, Any]:
    import llama_cpp

    from bastion_desktop.core.inference.backends import load_backends

    # The shipped build registers its CPU variant (and any GPU) only once loaded.
    load_backends()

    info = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace")
    features = sorted(
        part.split("=")[0].split(":")[-1].strip()
        for part in info.replace("|", "\n").splitlines()
        if part.strip().endswith("= 1")
    )
    return {
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "max_devices": int(llama_cpp.llama_max_devices()),
        "mmap": bool(llama_cpp.llama_supports_mmap()),
        "cpu_features": features,
        "system_info": info.strip(),
    }


async def _starter_check(context: AppContext) -> dict[str, Any]:
    try:
        _model_id, path = context.resolve_model(STARTER_ID)
        host = ModelHost(path, LoadOptions(context_length=512, gpu_layers="none"))
        try:
            facts = await host.load()
            text, stats = "", None
            params = SamplingParams(seed=1, max_tokens=8, temperature=0.0)
            async for event in host.stream([ChatMessage(Role.USER, "Hello")], params):
                if isinstance(event, GenerationFinished):
                    text, stats = event.text, event.stats
        finally:
            await host.close()
    except BastionError as error:
        return {"ok": False, "error": str(error)}
    assert stats is not None
    runtime = facts.runtime
    return {
        "runtime": None
        if runtime is None
        else {
            "backends": list(runtime.backends),
            "cpu_variant": runtime.cpu_variant,
            "cpu_library": runtime.cpu_library,
            "devices": [
                {
                    "name": device.name,
                    "description": device.description,
                    "type": device.type.value,
                    "memory_free": device.memory_free,
                    "memory_total": device.memory_total,
                }
                for device in runtime.devices
            ],
        },
        "ok": stats.generated_tokens > 0,
        "path": str(path),
        "architecture": facts.architecture,
        "quantization": facts.quantization,
        "chat_template": facts.chat_template_source,
        "threads": facts.threads,
        "generated_tokens": stats.generated_tokens,
        "tokens_per_second": round(stats.tokens_per_second, 1),
        "ttft_ms": round(stats.ttft_ms, 1),
        "answer_chars": len(text),
    }


def run_doctor(context: AppContext, args: argparse.Namespace) -> int:
    if args.self_test:
        from bastion_desktop.commands.self_test import run_self_test

        return run_self_test(args)
    report: dict[str, Any] = {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in _PACKAGES},
        "paths": {
            "data": str(context.paths.data),
            "models": str(context.models_dir),
            "config": str(context.paths.config),
            "logs": str(context.paths.logs),
            "cache": str(context.paths.cache),
        },
        "history": {
            "file": str(context.history_file),
            "exists": context.history_file.exists(),
            # Where the key lives, never the key: safe to paste into a support request.
            "key": context.history_keys(prompt=None).describe(),
        },
        "llama_cpp": llama_build(),
        "starter_model": asyncio.run(_starter_check(context)),
    }
    ok = bool(report["starter_model"]["ok"])
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if ok else 1
    print(f"Python        {report['python']} on {report['platform']}")
    for name, installed in report["packages"].items():
        print(f"  {name:<20} {installed}")
    print("Folders")
    for name, folder in report["paths"].items():
        print(f"  {name:<20} {folder}")
    history = report["history"]
    print("Conversation history")
    print(f"  {'file':<20} {history['file']}{'' if history['exists'] else ' (not created yet)'}")
    print(f"  {'key':<20} {history['key']}")
    build = report["llama_cpp"]
    print("llama.cpp")
    print(f"  {'GPU offload':<20} {'supported' if build['gpu_offload'] else 'not in this build'}")
    print(f"  {'CPU features':<20} {', '.join(build['cpu_features']) or 'none reported'}")
    starter = report["starter_model"]
    runtime = starter.get("runtime")
    if runtime:
        variant = runtime["cpu_variant"] or f"single build ({runtime['cpu_library']})"
        print(f"  {'CPU variant':<20} {variant}")
        for device in runtime["devices"]:
            print(
                f"  {device['name']:<20} {device['description']} ({device['type']}, "
                f"{device['memory_free'] / 2**30:.1f} of {device['memory_total'] / 2**30:.1f} "
                "GiB free)"
            )
    if ok:
        print(
            f"Starter model   loads and answers ({starter['generated_tokens']} tokens at "
            f"{starter['tokens_per_second']} tokens/s on {starter['threads']} threads, first "
            f"token in {starter['ttft_ms']} ms)"
        )
    else:
        print(
            f"Starter model   FAILED: {starter.get('error', 'no tokens generated')}",
            file=sys.stderr,
        )
    return 0 if ok else 1
