"""The guardrail audit log: what the guardrails decided, for administrators who must
show it, and never a word of what was said.

One record per chat turn (the window, `bastion chat`) and per local API request: the
time, the client, the model, the profile and its content hash, each check's verdict,
rail, category and the rails it ran, the token counts, the latency and a request id.
The GuardrailAuditLog policy turns it on and says where: a folder (a JSON-lines file
per user, appended to) or the operating system's log (the journal through syslog on
Linux, unified logging on macOS, the Windows Event Log).

A record is built from fields that hold no chat text by construction: `GuardDecision`
keeps the text it rewrote in `rewritten`, which is never read here, and an explanation
names what a rail found ("an email address"), never the thing itself.

Writing is the administrator's requirement, so a log that cannot be written is not
passed over: `AuditError` says where and why, and the turn is refused before the model
runs (`check` at start, then every record).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import logging.handlers
import os
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.events import (
    BlockedEvent,
    DoneEvent,
    ErrorEvent,
    GuardEvent,
)
from bastion_desktop.core.policy.schema import AUDIT_TO_SYSTEM
from bastion_guardrails.decisions import GuardDecision, Verdict

log = logging.getLogger(__name__)

AUDIT_VERSION = 1
SYSLOG_IDENTIFIER = "bastion-audit"


class AuditError(BastionError):
    """The audit log the policy requires cannot be written."""


def new_request_id() -> str:
    return "req_" + uuid.uuid4().hex[:24]


def _decision(decision: GuardDecision) -> dict[str, Any]:
    return {
        "stage": decision.stage.value,
        "verdict": decision.verdict.value,
        "rail": decision.rail,
        "category": decision.category,
        "masked": list(decision.masked),
        "latency_ms": round(decision.latency_ms, 3),
        "rails": [
            {"rail": t.rail, "outcome": t.outcome, "latency_ms": round(t.latency_ms, 3)}
            for t in decision.trace
        ],
    }


@dataclass
class TurnAudit:
    """A turn's record being gathered from its events (`take`), then `record()`."""

    client: str  # "window", "cli", or "api:<token name>"
    model: str
    profile: str
    profile_sha256: str | None
    request_id: str = field(default_factory=new_request_id)
    decisions: list[GuardDecision] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    outcome: str = "allowed"
    finish_reason: str | None = None
    error: str | None = None

    def take(self, event: object) -> None:
        """Note what `event` (a ChatEvent; anything else is passed over) says."""
        if isinstance(event, GuardEvent | BlockedEvent):
            if not self.decisions or self.decisions[-1] is not event.decision:
                self.decisions.append(event.decision)
            if isinstance(event, BlockedEvent):
                self.outcome = Verdict.BLOCKED.value
            elif event.decision.verdict is Verdict.MASKED and self.outcome == "allowed":
                self.outcome = Verdict.MASKED.value
        elif isinstance(event, DoneEvent):
            self.prompt_tokens = event.prompt_tokens
            self.completion_tokens = event.tokens
            self.finish_reason = event.finish_reason
        elif isinstance(event, ErrorEvent):
            self.outcome, self.error = "error", event.kind

    def record(self) -> dict[str, Any]:
        return {
            "version": AUDIT_VERSION,
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "request_id": self.request_id,
            "user": _user(),
            "client": self.client,
            "model": self.model,
            "profile": self.profile,
            "profile_sha256": self.profile_sha256,
            "outcome": self.outcome,
            "error": self.error,
            "finish_reason": self.finish_reason,
            "decisions": [_decision(d) for d in self.decisions],
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_ms": round(self.latency_ms, 1),
        }


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no name for this uid (a container)
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


class AuditLog(Protocol):
    @property
    def where(self) -> str: ...

    def check(self) -> None:
        """Raise AuditError unless records can be written."""
        ...

    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class FolderAudit:
    """JSON lines, appended to `<folder>/bastion-audit-<user>.jsonl`: one file per
    user, so users of one machine never write into each other's file."""

    def __init__(self, folder: Path) -> None:
        name = re.sub(r"[^A-Za-z0-9._-]", "_", _user())
        self.file = folder / f"bastion-audit-{name}.jsonl"
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return str(self.file)

    def check(self) -> None:
        self._append(b"")

    def close(self) -> None:
        """Nothing stays open between records."""

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        self._append(line.encode("utf-8"))

    def _append(self, data: bytes) -> None:
        try:
            with self._lock:
                self.file.parent.mkdir(parents=True, exist_ok=True)
                # One write of a whole line with O_APPEND: two processes' lines never
                # interleave within a line.
                fd = os.open(self.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    if data:
                        os.write(fd, data)
                finally:
                    os.close(fd)
        except OSError as error:
            raise AuditError(
                f"Your organization requires Bastion to record what the guardrails decide in "
                f"{self.file}, and it cannot be written ({error.strerror or error}). Chats "
                "are paused until this is fixed; ask your administrator."
            ) from error


class SystemAudit:
    """The operating system's log, one JSON record per entry."""

    def __init__(self, socket_path: str | None = None) -> None:
        # Where syslog listens: journald's /dev/log on Linux, /var/run/syslog on macOS.
        default = "/var/run/syslog" if sys.platform == "darwin" else "/dev/log"
        self.socket_path = socket_path or default
        self._handler: logging.Handler | None = None
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        if sys.platform == "win32":
            return "the Windows Event Log (Application, source Bastion)"
        if sys.platform == "darwin":
            return "macOS unified logging (process bastion-audit)"
        return "the system log (journal or syslog, identifier bastion-audit)"

    def check(self) -> None:
        self._open()

    def close(self) -> None:
        with self._lock:
            handler, self._handler = self._handler, None
        if handler is not None:
            handler.close()

    def write(self, record: dict[str, Any]) -> None:
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        handler = self._open()
        entry = logging.LogRecord(SYSLOG_IDENTIFIER, logging.INFO, "", 0, text, None, None)
        try:
            with self._lock:
                handler.emit(entry)
        except OSError as error:
            self.close()  # the next check connects again, or stops the turn
            raise self._unreachable(error) from error

    def _unreachable(self, error: OSError) -> AuditError:
        return AuditError(
            "Your organization requires Bastion to record what the guardrails decide in "
            f"{self.where}, and it cannot be reached ({error.strerror or error}). Chats "
            "are paused until this is fixed; ask your administrator."
        )

    def _open(self) -> logging.Handler:
        if self._handler is not None:
            return self._handler
        try:
            if sys.platform == "win32":
                handler: logging.Handler = _WindowsEventLog()
            else:
                # The handler connects lazily and says nothing when no one listens.
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
                    probe.connect(self.socket_path)
                handler = _Syslog(
                    address=self.socket_path,
                    facility=logging.handlers.SysLogHandler.LOG_AUTHPRIV,
                )
                handler.ident = f"{SYSLOG_IDENTIFIER}[{os.getpid()}]: "
        except OSError as error:
            raise self._unreachable(error) from error
        self._handler = handler
        return handler


class _Syslog(logging.handlers.SysLogHandler):
    def handleError(self, record: logging.LogRecord) -> None:
        # A record that did not reach the log must fail the write, not be printed to
        # stderr and forgotten (logging's default). Called inside emit's `except`.
        raise  # noqa: PLE0704


class _WindowsEventLog(logging.Handler):
    """The Application event log through advapi32 (no pywin32 needed)."""

    def __init__(self) -> None:
        super().__init__()
        import ctypes

        advapi = ctypes.WinDLL("advapi32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
        self._advapi = advapi
        self._source = advapi.RegisterEventSourceW(None, "Bastion")
        if not self._source:
            raise OSError(ctypes.get_last_error(), "RegisterEventSourceW failed")  # type: ignore[attr-defined,unused-ignore]

    def emit(self, record: logging.LogRecord) -> None:
        import ctypes

        strings = (ctypes.c_wchar_p * 1)(record.getMessage())
        information = 0x0004  # EVENTLOG_INFORMATION_TYPE
        reported = self._advapi.ReportEventW(
            self._source, information, 0, 1, None, 1, 0, strings, None
        )
        if not reported:
            raise OSError(ctypes.get_last_error(), "ReportEventW failed")  # type: ignore[attr-defined,unused-ignore]


def audit_log_for(where: str | None) -> AuditLog | None:
    """The audit log GuardrailAuditLog names ("system", or a folder), or None (off)."""
    if where is None:
        return None
    if where == AUDIT_TO_SYSTEM:
        return SystemAudit()
    return FolderAudit(Path(where))


_Event = TypeVar("_Event")


async def audited(
    events: AsyncIterator[_Event], audit: AuditLog, turn: TurnAudit
) -> AsyncIterator[_Event]:
    """`events` passed on, and the turn's record written when they end, however they
    end (a cancelled turn is recorded as such). The log is checked before the first
    event: a log that cannot be written stops the turn before the model runs."""
    await asyncio.to_thread(audit.check)
    started = time.perf_counter()
    try:
        async for event in events:
            turn.take(event)
            yield event
    except BaseException:
        if turn.outcome in ("allowed", "masked"):
            turn.outcome = "cancelled"
        raise
    finally:
        turn.latency_ms = (time.perf_counter() - started) * 1000
        try:
            await asyncio.shield(asyncio.to_thread(audit.write, turn.record()))
        except AuditError:
            # Said at the next turn, which the failed check stops; this one is done.
            log.error("the audit record of %s could not be written", turn.request_id)
