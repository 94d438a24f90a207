"""`bastion chat`: one message, or an interactive conversation, streamed to stdout."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TextIO

from bastion_desktop.commands.passphrase import passphrase_prompt
from bastion_desktop.context import AppContext
from bastion_desktop.core.attachments import Attachment, read_attachment, with_attachments
from bastion_desktop.core.chat import ChatService, NewConversation
from bastion_desktop.core.conversation_store import ConversationStore, InMemoryConversationStore
from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.events import (
    BlockedEvent,
    ChatEvent,
    ContextTrimmedEvent,
    ConversationEvent,
    DoneEvent,
    ErrorEvent,
    GuardEvent,
    NoticeEvent,
    TokenEvent,
    event_to_json,
)
from bastion_desktop.core.files import DiskFullError
from bastion_desktop.core.history.encrypted_store import EncryptedConversationStore
from bastion_desktop.core.inference.types import SamplingParams
from bastion_desktop.core.models import ChatModelSlot, keep_unloading_idle
from bastion_desktop.core.starter import STARTER_ID
from bastion_guardrails.explain import ProfileStatus
from bastion_guardrails.runtime import GuardProfileRuntime

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


class EventPrinter:
    """Writes events for a person (text) or a program (one JSON object per line)."""

    def __init__(
        self,
        as_json: bool,
        show_stats: bool,
        out: TextIO,
        err: TextIO,
        *,
        ephemeral: bool = False,
    ) -> None:
        self.as_json = as_json
        self.show_stats = show_stats
        self.out = out
        self.err = err
        self.ephemeral = ephemeral  # conversations are kept in memory only (--ephemeral)
        self.failed = False
        self.cancelled = False

    def guardrails(self, status: ProfileStatus) -> None:
        """Which checks are in force: a program gets it as data; a person is told when
        the profile runs without some of its checks (an interactive session always
        shows the profile's sentence)."""
        if self.as_json:
            payload = {
                "type": "guardrails",
                "profile": status.profile_id,
                "name": status.profile_name,
                "in_force": [c.rail for c in status.active],
                "not_in_force": [c.rail for c in status.missing],
                "message": status.sentence,
            }
            self.out.write(json.dumps(payload) + "\n")
            self.out.flush()
        elif self.show_stats or status.missing or not status.active:
            print(f"[guardrails] {status.sentence}", file=self.err)

    def __call__(self, event: ChatEvent) -> None:
        if isinstance(event, ErrorEvent):
            self.failed = True
        if isinstance(event, DoneEvent) and event.finish_reason == "cancelled":
            self.cancelled = True
        if self.as_json:
            payload = event_to_json(event)
            if isinstance(event, ConversationEvent):
                # Which conversation the turn went to, so a script can continue it.
                payload["ephemeral"] = self.ephemeral
            self.out.write(json.dumps(payload, ensure_ascii=False) + "\n")
            self.out.flush()
            if isinstance(event, ErrorEvent):
                print(f"bastion: {event.message}", file=self.err)
        else:
            self._print_text(event)

    async def reporting(self, events: AsyncIterator[ChatEvent]) -> AsyncIterator[ChatEvent]:
        """`events`; a turn they end with an error no event carries (the disk filled
        up, the history could not be written) is told as a last `error` event too, so
        that a program reading them learns of it there (main says it on stderr)."""
        try:
            async for event in events:
                yield event
        except BastionError as error:
            if self.as_json:
                kind = "disk_full" if isinstance(error, DiskFullError) else "failed"
                payload = {"type": "error", "kind": kind, "message": str(error)}
                self.out.write(json.dumps({**payload, "partial_reply_kept": False}) + "\n")
                self.out.flush()
            raise

    def _print_text(self, event: ChatEvent) -> None:
        if isinstance(event, TokenEvent):
            self.out.write(event.text)
            self.out.flush()
        elif isinstance(event, ContextTrimmedEvent):
            print(f"note: {event.sentence}", file=self.err)
        elif isinstance(event, NoticeEvent):
            print(f"note: {event.message}", file=self.err)
        elif isinstance(event, GuardEvent):
            if event.decision.verdict.value == "masked":
                print(f"[guardrails] {event.decision.explanation}", file=self.err)
        elif isinstance(event, BlockedEvent):
            if event.retracted:
                self.out.write("\n[reply withdrawn]")
            self.out.write(f"\n[blocked by guardrails] {event.decision.explanation}\n")
            self.out.flush()
        elif isinstance(event, ErrorEvent):
            self.out.write("\n" if event.partial_reply_kept else "")
            self.out.flush()
            print(f"bastion: {event.message}", file=self.err)
        elif isinstance(event, DoneEvent):
            self.out.write("\n")
            self.out.flush()
            if event.finish_reason == "cancelled":
                print("[stopped]", file=self.err)
            if self.show_stats and event.tokens:
                print(
                    f"[{event.tokens} tokens · {event.tokens_per_second:.1f} tokens/s · "
                    f"first token in {event.ttft_ms:.0f} ms]",
                    file=self.err,
                )


class _StdinLines:
    """Reads stdin on a daemon thread, so a pending read never keeps the process alive."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._loop = loop
        self._wanted = threading.Event()
        threading.Thread(target=self._read, name="stdin-reader", daemon=True).start()

    def _read(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            line = sys.stdin.readline()
            self._loop.call_soon_threadsafe(self.queue.put_nowait, line or None)
            if not line:
                return

    async def next(self) -> str | None:
        self._wanted.set()
        return await self.queue.get()


def _params(context: AppContext, args: argparse.Namespace) -> SamplingParams:
    params = context.sampling()
    overrides = {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "seed": args.seed,
    }
    return dataclasses.replace(params, **{k: v for k, v in overrides.items() if v is not None})


async def _chat(context: AppContext, args: argparse.Namespace) -> int:
    store: ConversationStore
    history: EncryptedConversationStore | None = None
    if args.ephemeral:
        context.policy.require_ephemeral()
        store = InMemoryConversationStore()
    else:
        # Deriving a key from a passphrase takes a while: off the loop.
        prompt = passphrase_prompt(args.passphrase_file)
        history = await asyncio.to_thread(context.open_history, prompt)
        store = history
    try:
        if history is not None:
            await context.sweep_history(history)
        return await _chat_in(context, args, store)
    finally:
        if history is not None:
            history.close()


async def _open_guard(
    context: AppContext, profile_id: str | None, model_id: str
) -> tuple[GuardProfileRuntime, ProfileStatus]:
    """The profile to chat with, and which of its checks are in force with the models
    installed; what the administrator's policy changed or refused is said once each."""
    told = (context.policy.banner, *context.policy_notices, context.guard_choice(profile_id).notice)
    for notice in dict.fromkeys(n for n in told if n):
        print(notice, file=sys.stderr)
    guard = await context.open_guard(profile_id, model_id, _calibration_progress)
    return guard, context.guard_status(guard.profile_id, model_id)


def _calibration_progress(judge: str, done: int, total: int) -> None:
    if done == 1:
        print(
            f"Testing whether {judge} can judge content safety (once per model, "
            f"{total} test requests)...",
            file=sys.stderr,
        )
    elif done == total:
        print(f"Tested {judge} on {total} requests.", file=sys.stderr)


async def _chat_in(context: AppContext, args: argparse.Namespace, store: ConversationStore) -> int:
    profile_id = args.profile
    if args.conversation:
        existing = await store.get_conversation(args.conversation)
        model_id = existing.model_id
        profile_id = profile_id or existing.profile_id
        # AllowedModels holds for a saved conversation too (off the loop: it may hash).
        await asyncio.to_thread(context.resolve_model, model_id)
    else:
        # Off the loop: it writes or checks the starter, and may hash a model file.
        model_id, _path = await asyncio.to_thread(context.resolve_model, args.model)
    guard, status = await _open_guard(context, profile_id, model_id)
    slot = ChatModelSlot(context.load_options())
    service = ChatService(
        store,
        slot,
        lambda ref: context.registry.resolve(ref)[1],
        guard,
        audit=context.audit_log(),
        client="cli",
    )
    system = args.system if args.system is not None else context.settings.system_prompt
    params = _params(context, args)
    interactive = args.message is None
    printer = EventPrinter(
        args.json,
        interactive and not args.json,
        sys.stdout,
        sys.stderr,
        ephemeral=bool(args.ephemeral),
    )
    printer.guardrails(status)

    loop = asyncio.get_running_loop()
    streaming = False

    def on_interrupt() -> None:
        # Ctrl+C stops the reply; at the prompt (or pressed twice) it leaves.
        if streaming and not printer.cancelled:
            printer.cancelled = True
            service.cancel()
        else:
            raise KeyboardInterrupt

    _handle_signals(loop, on_interrupt)

    async def turn(conversation_id: str | None, text: str) -> str | None:
        """One message, to that conversation or a new one; the conversation it went to."""
        nonlocal streaming
        streaming, printer.cancelled = True, False
        target = conversation_id or NewConversation(model_id, system)
        try:
            async for event in printer.reporting(service.send(target, text, params)):
                if isinstance(event, ConversationEvent):
                    conversation_id = event.conversation.id
                printer(event)
        finally:
            streaming = False
        return conversation_id

    try:
        if not interactive:
            await turn(args.conversation, args.message)
            if printer.failed:
                return EXIT_FAILED
            return EXIT_INTERRUPTED if printer.cancelled else EXIT_OK
        ended = await _converse(context, model_id, status, turn, args.conversation, slot=slot)
        # A script piping messages in learns that a turn failed, as with one message.
        return EXIT_FAILED if printer.failed else ended
    finally:
        with contextlib.suppress(NotImplementedError):
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        await slot.close()
        await context.close_guard_models()


def _handle_signals(loop: asyncio.AbstractEventLoop, on_interrupt: Callable[[], None]) -> None:
    """Ctrl+C as `on_interrupt` says. SIGTERM (`kill`, a logout, a service manager)
    leaves at once, as a second Ctrl+C does: the reply streaming is saved whole (as
    interrupted) and the model host stopped, where dying at once would lose what came
    after the last save."""

    def on_terminate() -> None:
        raise KeyboardInterrupt

    with contextlib.suppress(NotImplementedError):  # Windows event loops
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
        loop.add_signal_handler(signal.SIGTERM, on_terminate)


async def _converse(
    context: AppContext,
    model_id: str,
    status: ProfileStatus,
    turn: Callable[[str | None, str], Awaitable[str | None]],
    conversation_id: str | None,
    *,
    slot: ChatModelSlot,
) -> int:
    tty = sys.stdin.isatty()
    if tty:
        model = context.registry.get(model_id)
        name = model.name if model else model_id
        print(
            f"Bastion — chatting with {name}. Guardrails: {status.profile_name}.", file=sys.stderr
        )
        if model_id == STARTER_ID:
            print(
                "This is a tiny base model for a first test: its answers are poor. "
                "Catalog models give real answers.",
                file=sys.stderr,
            )
        print("Enter sends. /new starts over, /exit leaves, Ctrl+C stops a reply.", file=sys.stderr)
    lines = _StdinLines(asyncio.get_running_loop())
    # A terminal left at the prompt gives the models' memory back, as the window does.
    unloading = asyncio.ensure_future(keep_unloading_idle(lambda: context.unload_idle_models(slot)))
    try:
        return await _read_and_send(lines, turn, conversation_id, tty)
    finally:
        unloading.cancel()


async def _read_and_send(
    lines: _StdinLines,
    turn: Callable[[str | None, str], Awaitable[str | None]],
    conversation_id: str | None,
    tty: bool,
) -> int:
    while True:
        if tty:
            print("> ", end="", file=sys.stderr, flush=True)
        line = await lines.next()
        if line is None:
            return EXIT_OK
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return EXIT_OK
        if text == "/new":
            conversation_id = None
            print("The next message starts a new conversation.", file=sys.stderr)
            continue
        conversation_id = await turn(conversation_id, text)


def _attach(args: argparse.Namespace) -> None:
    """`--attach`: the files written into the one message (which may then be empty),
    read before anything else runs, so a file that cannot be attached costs nothing."""
    if not args.attach:
        return
    attachments: list[Attachment] = []
    for path in args.attach:
        attachments.append(read_attachment(path, sum(a.size for a in attachments)))
    args.message = with_attachments(args.message or "", attachments)


def run_chat(context: AppContext, args: argparse.Namespace) -> int:
    _attach(args)
    return asyncio.run(_chat(context, args))
