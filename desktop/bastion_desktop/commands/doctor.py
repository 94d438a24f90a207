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

from bastion_desktop.context import AppContext
from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.inference.backends import RuntimeDevice
from bastion_desktop.core.inference.host import ModelHost
from bastion_desktop.core.inference.runtime_probe import plan_placement, runtime_report
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


def _device(device: RuntimeDevice) -> dict[str, Any]:
    return {
        "name": device.name,
        "description": device.description,
        "type": device.type.value,
        "backend": device.backend,
        "memory_free": device.memory_free,
        "memory_total": device.memory_total,
    }


def runtime_section(context: AppContext) -> dict[str, Any]:
    """What llama.cpp can run here (the runtime probe's children), and where models run
    with this machine's device settings."""
    report = runtime_report()
    inference = context.settings.inference
    placement = plan_placement(report, inference.device, inference.cpu_compatibility)
    cpu = report.cpu
    return {
        "ok": report.problem is None,
        "problem": report.problem,
        "cpu_variant": report.cpu_variant,
        "cpu_library": cpu.cpu_library if cpu else None,
        "cpu_features": list(report.cpu_features),
        "backends": [
            *(cpu.backends if cpu else ()),
            *(c.label for c in report.gpu_backends if c.problem is None),
        ],
        "devices": [_device(d) for d in (cpu.devices if cpu else ())]
        + [_device(d) for c in report.gpu_backends for d in c.devices],
        "gpu_backends": [
            {
                "flavour": check.flavour,
                "module": str(check.module),
                "devices": [d.description or d.name for d in check.devices],
                "problem": check.problem,
            }
            for check in report.gpu_backends
        ],
        "device_setting": inference.device,
        "cpu_compatibility": inference.cpu_compatibility,
        "placement": placement.sentence(),
        "system_info": cpu.system_info if cpu else "",
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
            # Met while reading since the last repair: the window offers one at its start.
            "damage_noted": context.history_damage_noted(),
        },
        "runtime": runtime_section(context),
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
    if history["damage_noted"]:
        print(f"  {'damaged':<20} yes: run `bastion history repair`")
    _print_runtime(report["runtime"])
    starter = report["starter_model"]
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


def _print_runtime(runtime: dict[str, Any]) -> None:
    print("llama.cpp")
    if not runtime["ok"]:
        print(f"  {'problem':<20} {runtime['problem']}")
        return
    variant = runtime["cpu_variant"] or f"single build ({runtime['cpu_library']})"
    print(f"  {'CPU variant':<20} {variant}")
    print(f"  {'CPU features':<20} {', '.join(runtime['cpu_features']) or 'none reported'}")
    for device in runtime["devices"]:
        print(
            f"  {device['name']:<20} {device['description']} ({device['type']}, "
            f"{device['memory_free'] / 2**30:.1f} of {device['memory_total'] / 2**30:.1f} "
            "GiB free)"
        )
    for check in runtime["gpu_backends"]:
        found = check["problem"] or "finds " + ", ".join(check["devices"])
        print(f"  {check['flavour'] + ' backend':<20} {found}")
    print(f"  {'models':<20} {runtime['placement']}")
