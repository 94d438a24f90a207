"""The one door to the network: Hub calls happen inside `hub_online()`, and nowhere else.

Bastion runs with `HF_HUB_OFFLINE=1` for the whole process (see `core.privacy`).
huggingface_hub reads that variable once, at import, into `constants.HF_HUB_OFFLINE`,
and checks `constants.is_offline_mode()` in the request hook of every HTTP client it
makes (`utils/_http.py`, `hf_request_event_hook`), raising `OfflineModeIsEnabled`.
There is no per-call switch, and flipping the module flag would open the door for every
thread of the process at once. So the check is made context-local: `hub_online()` sets a
`ContextVar` that only the calling thread or asyncio task (and what it starts with
`asyncio.to_thread`, which copies the context) can see. Code that reads the flag
directly (agent detection, telemetry) keeps seeing offline mode.

The administrator's OfflineMode closes the door for good: `AppContext.start` hands the
policy to `set_network_policy`, and from then on `hub_online()` itself refuses with the
policy's sentence, so no window or command can reach the Hub by forgetting to ask.

`HF_ENDPOINT` is likewise read at import; the endpoint is read again here on every call
and passed explicitly (`HfApi(endpoint=...)`, `hf_hub_url(endpoint=...)`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from bastion_desktop.core.hub.errors import (
    HubAccessError,
    HubError,
    HubNotFoundError,
    HubUnreachableError,
)

if TYPE_CHECKING:
    from bastion_desktop.core.policy import EffectivePolicy

DEFAULT_ENDPOINT = "https://huggingface.co"

_ONLINE: ContextVar[bool] = ContextVar("bastion_hub_online", default=False)
_GATE_LOCK = threading.Lock()
# Process-wide on purpose (unlike _ONLINE): the policy holds for every thread and task.
_NETWORK_POLICY: list[EffectivePolicy] = []


def set_network_policy(policy: EffectivePolicy | None) -> None:
    """The policy `hub_online()` obeys from now on, in every thread; None forgets it."""
    _NETWORK_POLICY[:] = [policy] if policy is not None else []


def hub_endpoint() -> str:
    """The Hub to talk to: `HF_ENDPOINT` (a mirror, or the test emulator) or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _install_context_gate() -> None:
    from huggingface_hub import constants

    with _GATE_LOCK:
        if getattr(constants.is_offline_mode, "_bastion_gate", False):
            return

        def is_offline_mode() -> bool:
            return bool(constants.HF_HUB_OFFLINE) and not _ONLINE.get()

        is_offline_mode._bastion_gate = True  # type: ignore[attr-defined]
        constants.is_offline_mode = is_offline_mode


@contextlib.contextmanager
def hub_online() -> Iterator[str]:
    """Lift the Hub's offline mode for the calling context only; yields the endpoint.
    Raises PolicyRefusedError, before any request, when the policy says offline."""
    for policy in tuple(_NETWORK_POLICY):
        policy.require_network()
    _install_context_gate()
    token = _ONLINE.set(True)
    try:
        yield hub_endpoint()
    finally:
        _ONLINE.reset(token)


def is_online_here() -> bool:
    return _ONLINE.get()


def hub_error(  # noqa: PLR0911  (one sentence per kind of failure)
    error: BaseException,
    *,
    repo: str,
    file: str | None = None,
    revision: str | None = None,
) -> HubError:
    """Turn an exception from huggingface_hub or httpx into one sentence."""
    import httpx
    from huggingface_hub import errors as hf

    endpoint = hub_endpoint()
    what = f"{repo}/{file}" if file else repo
    if isinstance(error, hf.OfflineModeIsEnabled):
        return HubError("Bastion is set to work offline, so it cannot reach the Hub.")
    if isinstance(error, hf.GatedRepoError):
        return HubAccessError(
            f"{repo} is gated: accept its terms at {endpoint}/{repo}, log in with a token "
            "(`hf auth login`), then try again."
        )
    if isinstance(error, hf.RevisionNotFoundError):
        return HubNotFoundError(f"{repo} has no revision {revision or 'main'!r} on the Hub.")
    if isinstance(error, hf.RemoteEntryNotFoundError):
        return HubNotFoundError(f"{repo} has no file {file!r}; list its files and pick one.")
    if isinstance(error, hf.RepositoryNotFoundError):
        return HubNotFoundError(
            f"No repository {repo} on the Hub (or it is private): check the name."
        )
    if isinstance(error, hf.HfHubHTTPError) and error.response is not None:
        status = error.response.status_code
        if status in (401, 403):
            return HubAccessError(
                f"The Hub refused access to {what} (HTTP {status}): it may be gated or "
                f"private; check it at {endpoint}/{repo} and log in with a token."
            )
        if status == 404:
            return HubNotFoundError(f"The Hub has no {what} (HTTP 404): check the name.")
        if status == 429:
            return HubError("The Hub is rate-limiting requests (HTTP 429); try again in a minute.")
        return HubError(f"The Hub answered with an error (HTTP {status}); try again later.")
    if isinstance(error, httpx.TimeoutException):
        return HubUnreachableError(
            f"The Hub at {endpoint} did not answer in time; check your connection and try again."
        )
    if isinstance(error, httpx.TransportError | OSError):
        return HubUnreachableError(
            f"Cannot reach the Hub at {endpoint}; check your internet connection and try again."
        )
    return HubError(f"The Hub request for {what} failed: {error}.")


def http_status_error(status: int, headers: Any, *, repo: str, file: str) -> HubError:
    """A sentence for an HTTP error status from a file transfer, using the Hub's error
    headers the way huggingface_hub does (`X-Error-Code`)."""
    code = headers.get("X-Error-Code")
    endpoint = hub_endpoint()
    if code == "GatedRepo":
        return HubAccessError(
            f"{repo} is gated: accept its terms at {endpoint}/{repo}, log in with a token "
            "(`hf auth login`), then try again."
        )
    if code == "EntryNotFound" or (status == 404 and code != "RepoNotFound"):
        return HubNotFoundError(f"{repo} has no file {file!r}; list its files and pick one.")
    if code == "RepoNotFound":
        return HubNotFoundError(f"No repository {repo} on the Hub (or it is private).")
    if status in (401, 403):
        return HubAccessError(
            f"The Hub refused access to {repo}/{file} (HTTP {status}): it may be gated or "
            f"private; check it at {endpoint}/{repo} and log in with a token."
        )
    return HubError(f"The Hub answered with an error (HTTP {status}); try again later.")
