"""What a download will fetch, decided from the Hub's listing before a byte moves:
the files (all parts of a split model), their sizes and checksums, the commit they are
pinned to, the license and whether the repository is gated."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict

from bastion_desktop.core.hub.catalog import ModelRole
from bastion_desktop.core.hub.errors import HubError
from bastion_desktop.core.hub.filenames import format_size, model_stem
from bastion_desktop.core.hub.search import list_repo_gguf_files


class PlannedFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    size: int
    sha256: str | None = None  # LFS files
    blob_id: str | None = None  # files kept in git: checked by their git blob id

    @property
    def partial_name(self) -> str:
        """Named by content: any later download of the same bytes resumes it."""
        key = self.sha256 or f"git-{self.blob_id}"
        return f"{key}.part"


class DownloadPlan(BaseModel):
    """Saved beside the partial files, so a download can be listed and resumed after a
    restart without asking the Hub again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    repo: str
    revision: str  # a commit: the bytes cannot change under a resumed download
    name: str
    quantization: str | None
    files: tuple[PlannedFile, ...]
    license: str | None
    gated: bool
    role: ModelRole = "chat"

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


def plan_download(
    repo: str, file: str, *, revision: str | None = None, role: ModelRole = "chat"
) -> DownloadPlan:
    """Ask the Hub what downloading `file` (any part of a split model names all of it)
    from `repo` means. Blocking; goes online for this call only."""
    listing = list_repo_gguf_files(repo, revision=revision)
    choice = listing.choice_for(file)
    files = tuple(
        PlannedFile(path=p.path, size=p.size, sha256=p.sha256, blob_id=p.blob_id)
        for p in choice.parts
    )
    if any(f.sha256 is None and f.blob_id is None for f in files):
        raise HubError(f"The Hub gives no checksum for {file}, so it cannot be verified.")
    key = f"{listing.repo}@{listing.revision}:{choice.first.path}"
    return DownloadPlan(
        id=hashlib.sha256(key.encode()).hexdigest()[:16],
        repo=listing.repo,
        revision=listing.revision,
        name=model_stem(choice.first.path),
        quantization=choice.quantization,
        files=files,
        license=listing.license,
        gated=listing.gated,
        role=role,
    )


def describe_plan(plan: DownloadPlan) -> str:
    """The sentence shown before a download starts: size, parts, license, gating."""
    parts = f" in {len(plan.files)} parts" if len(plan.files) > 1 else ""
    license_text = plan.license or "no license stated"
    gated = " The repository is gated: accept its terms on the Hub first." if plan.gated else ""
    return (
        f"{plan.name} from {plan.repo}: {format_size(plan.total_size)}{parts}, "
        f"license: {license_text}.{gated}"
    )
