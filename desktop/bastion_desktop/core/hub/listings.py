"""What the models window lists, with each entry's fit on this machine: the curated
catalog in the order it is offered (chat models first, then the safety models, the
smallest of each first), and a Hub repository's GGUF files. No Qt: the window only
draws these rows, and a command or a test can list the same."""

from __future__ import annotations

from dataclasses import dataclass

from bastion_desktop.core.hub.catalog import CatalogFile, CatalogModel, load_catalog
from bastion_desktop.core.hub.fit import (
    FitEstimate,
    estimate_fit,
    shape_for_download,
    shape_from_facts,
)
from bastion_desktop.core.hub.probe import HardwareProfile
from bastion_desktop.core.hub.search import RepoListing, list_repo_gguf_files


@dataclass(frozen=True)
class CatalogEntry:
    model: CatalogModel
    file: CatalogFile  # the recommended quantization
    fit: FitEstimate | None  # None until the machine has been probed


def catalog_entries(context_length: int, hardware: HardwareProfile | None) -> list[CatalogEntry]:
    """The catalog as offered: chat models before safety models, smaller first."""
    models = sorted(load_catalog().models, key=lambda m: (m.role != "chat", m.parameters_b))
    entries = []
    for model in models:
        file = model.file_for()
        fit = None
        if hardware is not None:
            fit = estimate_fit(shape_from_facts(file.size, model.shape), context_length, hardware)
        entries.append(CatalogEntry(model, file, fit))
    return entries


def repo_files_with_fit(
    repo: str, context_length: int, hardware: HardwareProfile
) -> tuple[RepoListing, list[FitEstimate]]:
    """A repository's GGUF files (asks the Hub: blocking) and each one's fit."""
    listing = list_repo_gguf_files(repo)
    fits = [
        estimate_fit(
            shape_for_download(listing.repo, choice.size, choice.quantization),
            context_length,
            hardware,
        )
        for choice in listing.choices
    ]
    return listing, fits
