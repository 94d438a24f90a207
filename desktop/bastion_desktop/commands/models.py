"""`bastion models ...`"""

from __future__ import annotations

import argparse
import json

from bastion_desktop.app import AppContext


def _size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size = size / 1000  # type: ignore[assignment]
    return str(size)


def run_models(context: AppContext, args: argparse.Namespace) -> int:
    context.ensure_starter()
    models = context.registry.list()
    if args.json:
        print(json.dumps([m.model_dump(mode="json") for m in models], indent=2))
        return 0
    if not models:
        print("No models installed.")
        return 0
    width = max(len(m.id) for m in models)
    for model in models:
        present = "" if model.path.is_file() else "  (file missing)"
        print(
            f"{model.id:<{width}}  {_size(model.size):>9}  {model.role:<6}  {model.name}{present}"
        )
    return 0
