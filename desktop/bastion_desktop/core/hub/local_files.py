"""GGUF files from the user's disk: import (a copy Bastion owns, or a reference to the
file where it is) and removal. Blocking: run them with `asyncio.to_thread` from the
engine loop (hashing a large model takes seconds)."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bastion_desktop.core.errors import ModelNotFoundError
from bastion_desktop.core.files import disk_full_sentence
from bastion_desktop.core.hub.catalog import ModelRole
from bastion_desktop.core.hub.errors import ModelImportError, NotEnoughSpaceError
from bastion_desktop.core.hub.filenames import format_size, model_stem, slug
from bastion_desktop.core.hub.gguf_metadata import (
    GgufMetadata,
    read_gguf_file,
    read_gguf_metadata,
    require_whole,
)
from bastion_desktop.core.inference.gguf_file import check_gguf_header
from bastion_desktop.core.installed_models import ModelPart, ModelRegistry, RegisteredModel

if TYPE_CHECKING:
    from bastion_desktop.core.policy import EffectivePolicy

log = logging.getLogger(__name__)

IMPORTS_FOLDER = "imported"
ImportMode = Literal["copy", "reference"]


@dataclass(frozen=True)
class RemovedModel:
    model: RegisteredModel
    deleted_files: tuple[Path, ...]  # empty when the file was the user's and stays


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(4 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def _unique_id(registry: ModelRegistry, base: str, path: Path) -> str:
    candidate, number = base, 1
    while (existing := registry.get(candidate)) is not None and existing.path != path:
        number += 1
        candidate = f"{base}-{number}"
    return candidate


def _copy_into(sources: list[Path], folder: Path) -> list[Path]:
    needed = sum(p.stat().st_size for p in sources)
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed + 1024 * 1024 > free:
        raise NotEnoughSpaceError(
            f"Copying {sources[0].name} needs {format_size(needed)} on the disk holding "
            f"{folder}, but only {format_size(free)} is free. Free some space, or import the "
            "file where it is instead of copying it."
        )
    targets: list[Path] = []
    try:
        for source in sources:
            target = folder / source.name
            partial = folder / f".{source.name}.{os.getpid()}.partial"
            try:
                shutil.copyfile(source, partial)
                partial.replace(target)
            finally:
                partial.unlink(missing_ok=True)
            targets.append(target)
    except OSError as error:
        for target in targets:
            target.unlink(missing_ok=True)
        if error.errno == errno.ENOSPC:
            raise NotEnoughSpaceError(disk_full_sentence(folder)) from error
        raise ModelImportError(f"Could not copy {sources[0].name}: {error.strerror}.") from error
    return targets


def import_gguf(
    path: Path,
    registry: ModelRegistry,
    models_dir: Path,
    *,
    mode: ImportMode = "reference",
    role: ModelRole = "chat",
    name: str | None = None,
    policy: EffectivePolicy | None = None,
) -> RegisteredModel:
    """Register a GGUF from disk, reading its metadata. `copy` puts a copy Bastion owns
    in the models folder; `reference` uses the file where it is (and never deletes it).
    For a split model, pass any of its parts: all of them are taken. A `policy` with
    AllowedModels refuses (PolicyRefusedError) a file whose sha256 it does not list,
    before anything is copied or registered: a file from disk has no Hub repository."""
    path = path.expanduser().resolve()
    check_gguf_header(path)
    metadata = read_gguf_metadata(path)
    for part in metadata.paths:
        require_whole(read_gguf_file(part))
    first = metadata.paths[0]
    sources = list(metadata.paths)
    digests: list[str] | None = None
    if policy is not None and policy.value("AllowedModels") is not None:
        digests = [sha256_file(f) for f in sources]
        for source, digest in zip(sources, digests, strict=True):
            policy.require_model(source.name, None, digest)
    if mode == "copy":
        folder = models_dir / IMPORTS_FOLDER / slug(model_stem(first.name))
        files = _copy_into(sources, folder)
        digests = None  # hash the copies: what gets registered is what was written
    else:
        files = sources
    if digests is None:
        digests = [sha256_file(f) for f in files]
    stem = model_stem(first.name)
    parts = tuple(
        ModelPart(file=source.name, path=target, sha256=digest, size=target.stat().st_size)
        for source, target, digest in zip(sources, files, digests, strict=True)
    )
    model = RegisteredModel(
        id=_unique_id(registry, slug(name or stem), files[0]),
        name=name or _display_name(metadata, stem),
        path=files[0],
        sha256=digests[0],
        size=sum(p.size for p in parts),
        source="local",
        role=role,
        file=first.name,
        license=_text(metadata.values.get("general.license")),
        owns_file=mode == "copy",
        parts=parts if len(parts) > 1 else (),
        quantization=metadata.quantization,
        architecture=metadata.architecture,
        context_length=metadata.context_length,
        parameters=metadata.parameters or None,
        has_chat_template=metadata.has_chat_template,
    )
    registry.add(model)
    return model


def _display_name(metadata: GgufMetadata, stem: str) -> str:
    if metadata.name and metadata.quantization:
        return f"{metadata.name} {metadata.quantization}"
    return metadata.name or stem


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def remove_model(registry: ModelRegistry, model_id: str, models_dir: Path) -> RemovedModel:
    """Forget a model, and delete its files if Bastion owns them. Files outside the
    models folder are never deleted, whatever the registry says."""
    model = registry.get(model_id)
    if model is None:
        known = ", ".join(m.id for m in registry.list()) or "none"
        raise ModelNotFoundError(
            f"No installed model has the id {model_id!r} (installed: {known})."
        )
    registry.remove(model_id)
    deleted: list[Path] = []
    if not model.owns_file:
        return RemovedModel(model, ())
    root = models_dir.resolve()
    still_used = {f for m in registry.list() for f in m.files}
    for file in model.files:
        resolved = file.resolve()
        if not resolved.is_relative_to(root) or file in still_used:
            log.warning("not deleting %s: outside the models folder or still in use", file)
            continue
        try:
            resolved.unlink()
            deleted.append(file)
        except FileNotFoundError:
            continue
        _prune_empty_folders(resolved.parent, root)
    return RemovedModel(model, tuple(deleted))


def _prune_empty_folders(folder: Path, root: Path) -> None:
    """Remove the now-empty <owner>/<repo> folders a download created."""
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
