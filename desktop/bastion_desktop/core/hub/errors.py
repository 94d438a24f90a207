"""What can go wrong between Bastion and the Hub, each a sentence the user can act on."""

from __future__ import annotations

from bastion_desktop.core.errors import BastionError, ModelLoadError


class HubError(BastionError):
    """Searching or downloading from the Hub failed."""


class HubUnreachableError(HubError):
    """No network, the Hub is down, or it did not answer in time."""


class HubNotFoundError(HubError):
    """The repository, revision or file does not exist (or is private)."""


class HubAccessError(HubError):
    """The repository is gated or the Hub refused access (401/403)."""


class NotEnoughSpaceError(HubError):
    """The models folder's disk cannot hold the download."""


class DownloadFailedError(HubError):
    """The transfer gave up after its retries; the partial file is kept for a resume."""


class ChecksumMismatchError(HubError):
    """The bytes received do not match the sha256 the Hub published."""


class DownloadCancelledError(HubError):
    """The user cancelled the download; its partial file was deleted."""


class GgufFormatError(ModelLoadError):
    """A file is not a readable GGUF (cut short, damaged, or not GGUF at all)."""


class ModelImportError(BastionError):
    """A local GGUF file cannot be imported."""
