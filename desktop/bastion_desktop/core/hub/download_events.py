"""What a download tells its listener: plain data, relayed as Qt signals by the UI."""

from __future__ import annotations

from dataclasses import dataclass

from bastion_desktop.core.hub.filenames import format_duration, format_size
from bastion_desktop.core.installed_models import RegisteredModel


@dataclass(frozen=True)
class DownloadQueued:
    download_id: str
    name: str
    total_bytes: int


@dataclass(frozen=True)
class DownloadStarted:
    download_id: str
    done_bytes: int  # more than 0 when it resumes
    total_bytes: int


@dataclass(frozen=True)
class DownloadProgress:
    download_id: str
    done_bytes: int
    total_bytes: int
    bytes_per_second: float
    seconds_left: float | None


@dataclass(frozen=True)
class DownloadRetrying:
    """A stall or a lost connection; the transfer resumes after `delay_seconds`."""

    download_id: str
    attempt: int
    max_attempts: int
    reason: str
    delay_seconds: float
    done_bytes: int


@dataclass(frozen=True)
class DownloadVerifying:
    download_id: str


@dataclass(frozen=True)
class DownloadPaused:
    download_id: str
    done_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class DownloadFinished:
    download_id: str
    model: RegisteredModel


@dataclass(frozen=True)
class DownloadFailed:
    download_id: str
    message: str
    resumable: bool  # bytes are kept on disk; trying again continues from them


@dataclass(frozen=True)
class DownloadCancelled:
    download_id: str


DownloadEvent = (
    DownloadQueued | DownloadStarted | DownloadProgress | DownloadRetrying | DownloadVerifying
    | DownloadPaused | DownloadFinished | DownloadFailed | DownloadCancelled
)  # fmt: skip


def describe_event(event: DownloadEvent) -> str:  # noqa: PLR0911  (one line per kind)
    """One line for a terminal or a log: what the event means to the user."""
    match event:
        case DownloadQueued(name=name, total_bytes=total):
            return f"Queued {name} ({format_size(total)})."
        case DownloadStarted(done_bytes=done, total_bytes=total) if done:
            return f"Resuming from {format_size(done)} of {format_size(total)}."
        case DownloadStarted(total_bytes=total):
            return f"Downloading {format_size(total)}."
        case DownloadProgress(done_bytes=done, total_bytes=total, bytes_per_second=rate):
            percent = 100 * done / total if total else 100.0
            eta = event.seconds_left
            left = "" if eta is None else f", {format_duration(eta)} left"
            return (
                f"{percent:5.1f}%  {format_size(done)} of {format_size(total)}, "
                f"{format_size(rate)}/s{left}"
            )
        case DownloadRetrying(reason=reason, attempt=attempt, max_attempts=most):
            return f"Retrying ({attempt} of {most}): {reason}."
        case DownloadVerifying():
            return "Checking the sha256 against the Hub's..."
        case DownloadPaused(done_bytes=done, total_bytes=total):
            return f"Paused at {format_size(done)} of {format_size(total)}."
        case DownloadFinished(model=model):
            return f"Installed {model.name} as {model.id}."
        case DownloadFailed(message=message):
            return message
        case DownloadCancelled():
            return "Cancelled; the partial file was deleted."
