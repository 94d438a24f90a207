"""Hub search and file listing through huggingface_hub's `HfApi`.

Blocking calls (run them with `asyncio.to_thread` from the engine loop); each lifts the
offline mode for itself only (`online.hub_online`). Licenses and gating come with the
listing, so the user sees them before anything is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.hub.errors import HubNotFoundError
from bastion_desktop.core.hub.filenames import (
    is_gguf,
    is_projector,
    model_stem,
    quantization_from_name,
    split_part,
)
from bastion_desktop.core.hub.online import hub_error, hub_online

# How long a metadata call may take before the Hub counts as unreachable.
API_TIMEOUT_SECONDS = 20.0
_EXPAND = ["downloads", "likes", "gated", "tags", "lastModified"]


@dataclass(frozen=True)
class HubRepo:
    """One search result."""

    id: str
    downloads: int
    likes: int
    gated: bool
    license: str | None
    last_modified: datetime | None


@dataclass(frozen=True)
class HubFile:
    path: str
    size: int
    sha256: str | None  # from the LFS pointer; None for a small file kept in git
    blob_id: str | None  # the git object id (what a non-LFS file is checked against)


@dataclass(frozen=True)
class GgufChoice:
    """One model a user can download: a GGUF file, or all the parts of a split one."""

    name: str
    quantization: str | None
    parts: tuple[HubFile, ...]

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)

    @property
    def first(self) -> HubFile:
        return self.parts[0]

    @property
    def is_split(self) -> bool:
        return len(self.parts) > 1


@dataclass(frozen=True)
class RepoListing:
    repo: str
    revision: str  # the commit the listing describes; downloads pin to it
    gated: bool
    license: str | None
    choices: tuple[GgufChoice, ...]
    incomplete_splits: tuple[str, ...]  # split models with parts missing from the repo
    context_length: int | None  # from the Hub's own GGUF summary, when it has one
    architecture: str | None

    def choice_for(self, file: str) -> GgufChoice:
        """The model a file name belongs to (any part of a split model names all of it)."""
        wanted = file.strip("/")
        for choice in self.choices:
            if any(p.path == wanted for p in choice.parts) or choice.name == wanted:
                return choice
        if any(wanted.startswith(s) for s in self.incomplete_splits):
            raise HubNotFoundError(
                f"{self.repo} holds only some parts of {wanted}; it cannot be downloaded."
            )
        names = ", ".join(c.first.path for c in self.choices[:8]) or "none"
        raise HubNotFoundError(f"{self.repo} has no GGUF file {wanted!r} (it has: {names}).")


def _license_of(tags: Iterable[str] | None, card_data: Any) -> str | None:
    if card_data is not None:
        found = getattr(card_data, "license", None)
        name = getattr(card_data, "license_name", None)
        if isinstance(found, str):
            return name if found == "other" and isinstance(name, str) else found
    for tag in tags or ():
        if tag.startswith("license:"):
            return tag.removeprefix("license:")
    return None


def search_gguf_repos(query: str, *, limit: int = 30) -> list[HubRepo]:
    """Repositories with GGUF files whose name matches `query`, most downloaded first."""
    from huggingface_hub import HfApi

    try:
        with hub_online() as endpoint:
            api = HfApi(endpoint=endpoint)
            found = list(
                api.list_models(
                    search=query, filter="gguf", sort="downloads", limit=limit, expand=_EXPAND
                )
            )
    except BastionError:
        raise  # already a sentence (the policy's offline mode)
    except Exception as error:
        raise hub_error(error, repo=query) from error
    return [
        HubRepo(
            id=info.id,
            downloads=info.downloads or 0,
            likes=info.likes or 0,
            gated=bool(info.gated),
            license=_license_of(info.tags, None),
            last_modified=info.last_modified,
        )
        for info in found
    ]


def group_gguf_files(files: Iterable[HubFile]) -> tuple[list[GgufChoice], list[str]]:
    """GGUF files as downloadable models: split parts grouped (in order), projector
    files left out. Returns the choices and the stems of incomplete split models."""
    singles: list[GgufChoice] = []
    splits: dict[tuple[str, str, int], dict[int, HubFile]] = {}
    for file in files:
        if not is_gguf(file.path) or is_projector(file.path):
            continue
        part = split_part(file.path)
        if part is None:
            singles.append(GgufChoice(file.path, quantization_from_name(file.path), (file,)))
            continue
        folder = file.path.rpartition("/")[0]
        splits.setdefault((folder, part.stem, part.count), {})[part.index] = file
    incomplete: list[str] = []
    for (folder, stem, count), parts in splits.items():
        prefix = f"{folder}/{stem}" if folder else stem
        if sorted(parts) != list(range(1, count + 1)):
            incomplete.append(prefix)
            continue
        ordered = tuple(parts[i] for i in range(1, count + 1))
        singles.append(GgufChoice(prefix, quantization_from_name(ordered[0].path), ordered))
    singles.sort(key=lambda c: (c.size, c.name))
    return singles, incomplete


def list_repo_gguf_files(repo: str, *, revision: str | None = None) -> RepoListing:
    """A repository's GGUF models with sizes, quantizations and LFS sha256s."""
    from huggingface_hub import HfApi

    try:
        with hub_online() as endpoint:
            info = HfApi(endpoint=endpoint).model_info(
                repo, revision=revision, files_metadata=True, timeout=API_TIMEOUT_SECONDS
            )
    except BastionError:
        raise  # already a sentence (the policy's offline mode)
    except Exception as error:
        raise hub_error(error, repo=repo, revision=revision) from error
    files = [
        HubFile(
            path=s.rfilename,
            size=(s.lfs.size if s.lfs is not None else s.size) or 0,
            sha256=s.lfs.sha256 if s.lfs is not None else None,
            blob_id=s.blob_id,
        )
        for s in info.siblings or ()
    ]
    choices, incomplete = group_gguf_files(files)
    summary = info.gguf if isinstance(info.gguf, dict) else {}
    context = summary.get("context_length")
    arch = summary.get("architecture")
    return RepoListing(
        repo=info.id,
        revision=info.sha or revision or "main",
        gated=bool(info.gated),
        license=_license_of(info.tags, info.card_data),
        choices=tuple(choices),
        incomplete_splits=tuple(incomplete),
        context_length=context if isinstance(context, int) else None,
        architecture=arch if isinstance(arch, str) else None,
    )


def display_name(choice: GgufChoice) -> str:
    return model_stem(choice.first.path)
