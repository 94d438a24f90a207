"""The scripts under packaging/, loaded by path for the tests: packaging/ is no import
package (and its name must not shadow the PyPI `packaging`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_script(path: Path) -> ModuleType:
    """The script at `path` (or relative to the repository's root) as a module of its own."""
    path = ROOT / path
    spec = importlib.util.spec_from_file_location(f"bastion_script_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
