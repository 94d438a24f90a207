"""What every benchmark here shares: argument checks, medians, the verdict word, and a
Bastion home with the starter model in it. Run the benchmarks as scripts
(`python benchmarks/bench_x.py`): this folder is then on the import path."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path

from bastion_desktop.core.paths import HOME_VARIABLE, AppPaths
from bastion_desktop.core.registry import ModelRegistry
from bastion_desktop.core.starter import ensure_starter_model


def positive(value: str) -> int:
    """An argparse type: a whole number of 1 or more."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def met(flag: bool) -> str:
    """How a target is reported: met, or MISSED (in capitals, to be seen)."""
    return "met" if flag else "MISSED"


def prepare_home(home: Path) -> Path:
    """Bastion's folders under `home`, with the starter model written and registered;
    returns the starter's path."""
    paths = AppPaths.discover({HOME_VARIABLE: str(home)})
    paths.ensure()
    return ensure_starter_model(paths.models, ModelRegistry(paths.registry_file)).path
