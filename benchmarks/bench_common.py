"""What every benchmark here shares: argument checks, medians, the verdict word, and a
Bastion home with the starter model in it. Run the benchmarks as scripts
(`python benchmarks/bench_x.py`): this folder is then on the import path."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path

from bastion_desktop.core.installed_models import ModelRegistry
from bastion_desktop.core.paths import HOME_VARIABLE, AppPaths
from bastion_desktop.core.starter import ensure_starter_model

# Prose a prompt-processing measurement reads, repeated and cut to the tokens it needs.
PP_TEXT = (
    "The keeper climbed the spiral stairs of the lighthouse every evening at dusk, "
    "counting the one hundred and twelve steps as his father had done before him. "
    "From the lantern room he could see the whole bay: the fishing boats returning "
    "with their catch, the gulls circling the harbour wall, the dark line of the reef "
    "where the water turned white in every storm. He kept a logbook of the weather, "
    "the ships that passed, the hours the lamp burned and the oil it used. "
)


def add_home_argument(parser: argparse.ArgumentParser) -> None:
    """--home: a Bastion home the benchmark keeps (see `prepare_home`)."""
    parser.add_argument(
        "--home",
        type=Path,
        help="Bastion home to use and keep (the starter model is written there once); "
        "default: a temporary folder, removed afterwards",
    )


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
