"""The model host's app side: `ModelHost` starts, talks to and restarts the child
process that owns one loaded model (see `host_process`).

A reader thread turns the pipe into an asyncio queue, so the engine loop never blocks
on the child. If the child dies — killed, out of memory, a llama.cpp crash on a bad
file — the stream in progress ends with `ModelHostCrashedError`, and the next request
starts a fresh host with the same model and options.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from bastion_desktop.core.errors import (
    BastionError,
    ContextOverflowError,
    ModelHostCrashedError,
    ModelLoadError,
    OutputFormatError,
)
from bastion_desktop.core.inference.children import describe_exit
from bastion_desktop.core.inference.gguf_file import check_gguf_header
from bastion_desktop.core.inference.host_process import run_host
from bastion_desktop.core.inference.runtime_probe import (
    BASELINE_CPU_VARIANT,
    CPU_ONLY,
    Placement,
    llama_lib_dir,
    plan_placement,
    runtime_report,
)
from bastion_desktop.core.inference.templates import ChatTemplateError
from bastion_desktop.core.inference.types import (
    ChatMessage,
    FinishReason,
    GenerationFinished,
    GenerationStats,
    HostEvent,
    LoadOptions,
    ModelFacts,
    PromptTrimmed,
    SamplingParams,
    TokenText,
)

log = logging.getLogger(__name__)

# How long a cancelled generation may take to notice before the host is killed
# (prompt processing of a long prompt cannot be interrupted between tokens).
CANCEL_GRACE_SECONDS = 3.0
SHUTDOWN_GRACE_SECONDS = 5.0
_EXITED = ("exited",)
# The user-caused errors a host reports for one request; each keeps its type here.
_REQUEST_ERRORS: dict[str, type[BastionError]] = {
    error.__name__: error for error in (ContextOverflowError, ChatTemplateError, OutputFormatError)
}


@contextlib.contextmanager
def _terminal_interrupts_blocked() -> Iterator[None]:
    """Start children with SIGINT blocked. Ctrl+C in a terminal signals the whole
    process group; the app decides what it means (stop the reply), so the model host
    must not die of it. The mask is per thread and survives exec, so the child starts
    with SIGINT blocked before Python runs a line."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: run_host ignores it instead
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _abandon_started(starting: asyncio.Future[_Process]) -> None:
    """A process whose start was cancelled midway: abandon it once it exists."""
    if not starting.cancelled() and starting.exception() is None:
        starting.result().abandon()


def placement_for(options: LoadOptions) -> Placement:
    """Where a model loaded with `options` runs: the device setting applied to the
    runtime probe's report. Blocks while the probe runs (once per app run); a build
    that ships no GPU module, or a model kept on the CPU, needs no probe."""
    from bastion_desktop.core.inference.backends import gpu_module_folders

    if options.gpu_layers == "none":
        variant = BASELINE_CPU_VARIANT if options.cpu_compatibility else None
        return Placement(cpu_variant=variant, reason="GPU offload is off", expected=True)
    folder = llama_lib_dir()
    needs_probe = options.device != CPU_ONLY and folder and gpu_module_folders(folder)
    report = runtime_report() if needs_probe else None
    return plan_placement(report, options.device, options.cpu_compatibility)


# Models that crashed on a GPU in this run, by file and the options they loaded with: how
# they ended. Every host of that file (the chat's, a judge's) loads it on the CPU with
# those options from then on; other options (Settings saved) try the GPU again.
_GPU_FAILURES: dict[tuple[Path, LoadOptions], str] = {}


def forget_gpu_failures() -> None:
    """Let every model try its GPU again (as a new run of the app would)."""
    _GPU_FAILURES.clear()


def _driver_may_have_failed(exitcode: int | None) -> bool:
    """Whether a model host that ended with `exitcode` may have been ended by its GPU's
    driver: a crash or an abort. Not SIGKILL (the out-of-memory killer's or a person's),
    nor an exit of its own. On Windows, abort()'s code 3 or an NTSTATUS error
    (0xC0000005, an access violation...); TerminateProcess's codes are neither."""
    if exitcode is None:
        return False
    if sys.platform == "win32":
        return exitcode == 3 or exitcode >= 0xC0000000
    return exitcode < 0 and exitcode != -signal.SIGKILL


class _Process:
    """One running child: the process, its pipe, and the thread reading the pipe."""

    def __init__(
        self,
        path: Path,
        options: LoadOptions,
        placement: Placement,
        loop: asyncio.AbstractEventLoop,
        background: bool = False,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child_conn = context.Pipe(duplex=True)
        self.process: BaseProcess = context.Process(
            target=run_host,
            args=(child_conn, str(path), options, placement, background),
            name=f"bastion-model-host:{path.name}",
            daemon=True,
        )
        with _terminal_interrupts_blocked():
            self.process.start()
        # Only the child holds its end now, so its death reads as end-of-file here.
        child_conn.close()
        self.inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._loop = loop
        self._reader = threading.Thread(
            target=self._read, name=f"model-host-reader:{self.process.pid}", daemon=True
        )
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                message = _EXITED
            try:
                self._loop.call_soon_threadsafe(self.inbox.put_nowait, message)
            except RuntimeError:
                return  # the loop is closed: nobody is listening any more
            if message is _EXITED:
                return

    def send(self, message: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(message)

    def abandon(self) -> None:
        """Kill the child now and reap it on a thread: for a start that was cancelled,
        whose model (and VRAM) nobody would otherwise free until the app exits."""
        self.kill()
        self.conn.close()
        threading.Thread(
            target=self.process.join, name=f"model-host-reaper:{self.process.pid}", daemon=True
        ).start()

    async def exit_description(self) -> str:
        await asyncio.to_thread(self.process.join, 2.0)
        return describe_exit(self.process.exitcode)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()

    async def stop(self) -> None:
        self.send(("shutdown",))
        await asyncio.to_thread(self.process.join, SHUTDOWN_GRACE_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            await asyncio.to_thread(self.process.join, SHUTDOWN_GRACE_SECONDS)
        self.conn.close()


@dataclass(frozen=True)
class CompletionResult:
    """A raw completion's answer, and what it cost as the app saw it."""

    text: str = field(repr=False)
    latency_ms: float  # from the request to the whole answer, pipe included
    prompt_tokens: int
    generated_tokens: int
    finish_reason: FinishReason


@dataclass(frozen=True)
class ScoreResult:
    """The next-token probability of each class of answers, and what it cost."""

    masses: tuple[float, ...]  # one per class of answer words, in the order asked
    latency_ms: float
    prompt_tokens: int
    evaluated_tokens: int  # those not already in the host's context


class ModelHost:
    """A model loaded in its own process. Use from one asyncio loop."""

    def __init__(
        self, path: Path, options: LoadOptions | None = None, *, background: bool = False
    ) -> None:
        """`background`: a model that works beside the chat model (a judge of content
        safety) runs at a lower priority than the chat model's host, so checking a reply
        while it streams takes the cores the reply leaves free, not the reply's own."""
        self.path = path
        # What the next load uses: set it to change them (Settings saved), and the
        # model is loaded again with them before the next request, never under one.
        self.options = options or LoadOptions()
        self.background = background
        self.facts: ModelFacts | None = None
        self._loaded_with: LoadOptions | None = None  # the options of the running load
        self._process: _Process | None = None
        self._lock = asyncio.Lock()
        self._request_id = 0
        self._active_request: int | None = None
        self._cancel_handle: asyncio.TimerHandle | None = None
        self._killed_on_cancel = False
        # Loads and requests under way; a cancel arriving before the request reaches
        # the process (the model is still loading) is kept for it.
        self._busy = 0
        self._cancel_before_start = False
        self._last_used = time.monotonic()  # when the last load or request ended
        # A process unloaded while idle, still stopping: the next load waits for it.
        self._stopping: asyncio.Future[None] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.process.pid if self._process else None

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.process.is_alive()

    @property
    def is_loaded(self) -> bool:
        """Whether a request needs no load first: the model is loaded, with `options`."""
        return self.is_running and self.facts is not None and self._loaded_with == self.options

    async def load(self) -> ModelFacts:
        """Start the host process and load the model (again, if it had died)."""
        self._busy += 1
        try:
            return await self._load()
        finally:
            self._rest()

    async def _load(self) -> ModelFacts:
        if self.is_loaded:
            assert self.facts is not None
            return self.facts
        await self._discard_process()
        # The header check here catches the common mistakes without a process start.
        check_gguf_header(self.path)
        options = requested = self.options
        crashed_on_gpu = ""
        failed = _GPU_FAILURES.get((self.path, requested))
        if failed is not None:
            options = dataclasses.replace(options, gpu_layers="none")
            crashed_on_gpu = (
                f"The model stopped on the GPU ({failed}), so it runs on the CPU until "
                "Bastion starts again or its load settings change (Settings → Model)."
            )
        while True:
            process, reply, gpu_layers = await self._start(options)
            if reply[0] == "loaded":
                self._process = process
                facts: ModelFacts = dataclasses.replace(reply[1], runtime=reply[2])
                if crashed_on_gpu:
                    facts = dataclasses.replace(facts, gpu_note=crashed_on_gpu)
                self.facts = facts
                self._loaded_with = requested
                return facts
            if reply[0] == "load_failed":
                await process.stop()
                raise ModelLoadError(reply[1])
            how = await process.exit_description()
            if gpu_layers and not crashed_on_gpu:
                # A GPU backend that aborts when its memory runs out takes the process with
                # it: try once more with the model on the CPU.
                log.warning("model host crashed loading with GPU layers (%s); retrying on CPU", how)
                crashed_on_gpu = (
                    f"Loading with layers on the GPU crashed ({how}); the model runs on the CPU."
                )
                options = dataclasses.replace(options, gpu_layers="none")
                continue
            raise ModelLoadError(
                f"llama.cpp crashed while loading {self.path.name} ({how}). The file is "
                "probably corrupt or incomplete; download or copy it again."
            )

    async def _start(self, options: LoadOptions) -> tuple[_Process, tuple[Any, ...], int]:
        """Start a host process; returns it, its first reply that is not an attempt
        notice, and the GPU layers of its last attempt."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        # The runtime probe's children run once per app run, on a thread.
        placement = await asyncio.to_thread(placement_for, options)
        starting = asyncio.ensure_future(
            asyncio.to_thread(_Process, self.path, options, placement, loop, self.background)
        )
        try:
            # Shielded: a cancel here must not lose the process the thread is starting.
            process = await asyncio.shield(starting)
        except asyncio.CancelledError:
            starting.add_done_callback(_abandon_started)
            raise
        gpu_layers = 0
        try:
            while (reply := await process.inbox.get())[0] == "attempt":
                gpu_layers = reply[1]
        except BaseException:
            # Cancelled while the model loads (Stop during a long load): no one owns this
            # child yet, so it goes now, or it would hold the whole model until exit.
            process.abandon()
            raise
        if reply[0] == "loaded":
            log.info(
                "model host %s loaded %s in %.2fs",
                process.process.pid,
                self.path.name,
                time.perf_counter() - started,
            )
        return process, reply, gpu_layers

    async def stream(
        self, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> AsyncIterator[HostEvent]:
        """Generate a reply, yielding trimming notices and text as it arrives, and
        finally `GenerationFinished` with the stats."""
        self._busy += 1
        try:
            async for event in self._stream(messages, params):
                yield event
        finally:
            self._rest()
            if not self._busy:
                self._cancel_before_start = False

    async def _stream(
        self, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> AsyncIterator[HostEvent]:
        async with self._lock:
            await self.load()
            process = self._process
            assert process is not None
            if self._cancel_before_start:
                # Cancelled while the model was still loading: nothing to generate.
                self._cancel_before_start = False
                yield _ReplyClock().finished(0, 0, "cancelled")
                return
            self._request_id += 1
            request_id = self._request_id
            self._active_request = request_id
            self._killed_on_cancel = False
            reply = _ReplyClock()
            complete = False
            try:
                process.send(("generate", request_id, list(messages), params))
                while True:
                    message = await process.inbox.get()
                    kind = message[0]
                    if kind == "exited":
                        if self._killed_on_cancel:
                            # Killed because it ignored a cancel: the reply simply stopped.
                            complete = True
                            yield reply.finished(0, len(reply.parts), "cancelled")
                            return
                        how = await process.exit_description()
                        raise ModelHostCrashedError(
                            f"The model stopped unexpectedly ({how}). The reply so far is "
                            "kept; your next message restarts the model."
                            + self._gpu_hint(process, how)
                        )
                    if message[1] != request_id:
                        continue  # the tail of an earlier, abandoned request
                    if kind == "text":
                        reply.arrived(message[2])
                        yield TokenText(message[2])
                    elif kind == "trimmed":
                        trimmed: PromptTrimmed = message[2]
                        yield trimmed
                    elif kind == "done":
                        complete = True
                        prompt, generated, finish, top_k, rate, read, read_ms = message[2:]
                        yield reply.finished(
                            prompt,
                            generated,
                            finish,
                            gpu_top_k=top_k,
                            host_rate=rate,
                            prompt_tokens_read=read,
                            prompt_read_ms=read_ms,
                        )
                        return
                    elif kind == "failed":
                        complete = True
                        error_type = _REQUEST_ERRORS.get(message[2], BastionError)
                        raise error_type(message[3])
            finally:
                if not complete:
                    # The consumer walked away mid-reply: stop generating for nobody.
                    process.send(("cancel", request_id))
                self._finish_request(request_id)

    async def complete(
        self, prompt: str, max_tokens: int, stop: Sequence[str] = ()
    ) -> CompletionResult:
        """Complete a raw prompt (no chat template: it carries its own special tokens)
        with greedy decoding, and return the whole answer. For guard models, whose
        prompts have a format of their own and whose answers are a few tokens."""
        reply, latency = await self._request("complete", prompt, max_tokens, tuple(stop))
        return CompletionResult(reply[2], latency, *reply[3:6])

    async def score(
        self, prompt: str | Sequence[ChatMessage], answers: Sequence[Sequence[str]]
    ) -> ScoreResult:
        """The probability of each set of answer words as the model's next token after
        `prompt` (a raw prompt, or chat messages through the chat template), from one
        forward pass that reuses the prefix the host's context already holds."""
        prompt = prompt if isinstance(prompt, str) else list(prompt)
        answers = tuple(tuple(words) for words in answers)
        reply, latency = await self._request("score", prompt, answers)
        return ScoreResult(reply[2], latency, reply[3], reply[4])

    async def _request(self, kind: str, *payload: Any) -> tuple[tuple[Any, ...], float]:
        """Send one whole-answer request and wait for its answer; returns the reply
        message and the milliseconds it took, pipe included."""
        self._busy += 1
        try:
            async with self._lock:
                await self.load()
                return await self._answer(kind, payload)
        finally:
            self._rest()
            if not self._busy:
                self._cancel_before_start = False

    async def _answer(self, kind: str, payload: tuple[Any, ...]) -> tuple[tuple[Any, ...], float]:
        process = self._process
        assert process is not None
        self._request_id += 1
        request_id = self._request_id
        self._active_request = request_id
        self._killed_on_cancel = False
        sent = time.perf_counter()
        answered = False
        try:
            process.send((kind, request_id, *payload))
            while True:
                message = await process.inbox.get()
                if message[0] == "exited":
                    how = await process.exit_description()
                    raise ModelHostCrashedError(
                        f"The model stopped unexpectedly ({how}); the next request restarts "
                        "it." + self._gpu_hint(process, how)
                    )
                if message[1] != request_id:
                    continue  # the tail of an earlier, abandoned request
                if message[0] == "failed":
                    answered = True
                    raise _REQUEST_ERRORS.get(message[2], BastionError)(message[3])
                answered = True
                return message, (time.perf_counter() - sent) * 1000.0
        finally:
            if not answered:
                process.send(("cancel", request_id))
            self._finish_request(request_id)

    def _gpu_hint(self, process: _Process, how: str) -> str:
        """For a model that stopped with layers on a GPU. A crash or an abort there (ggml
        aborts on a lost device or a kernel the driver cannot run) fails again at every
        restart when the driver is at fault: the model goes to the CPU until the app
        starts again or the settings change. SIGKILL is the out-of-memory killer's or a
        person's, not a driver's: the user is told how to go round a GPU, if it was one."""
        facts = self.facts
        if facts is None or not (facts.gpu_offload_supported and facts.gpu_layers):
            return ""
        if _driver_may_have_failed(process.process.exitcode) and self._loaded_with is not None:
            _GPU_FAILURES[(self.path, self._loaded_with)] = how
            log.warning("model host crashed with layers on the GPU (%s): CPU from now on", how)
            return (
                " The GPU's driver may be at fault, so it restarts on the CPU (slower) until "
                "Bastion starts again or its load settings change (Settings → Model)."
            )
        return (
            " If it stops again, choose CPU only in Settings → Model: the GPU's driver may "
            "be at fault."
        )

    def _finish_request(self, request_id: int) -> None:
        if self._active_request != request_id:
            return
        if self._cancel_handle is not None:
            self._cancel_handle.cancel()
            self._cancel_handle = None
        self._active_request = None
        if self._process is not None and not self._process.process.is_alive():
            self._process.conn.close()
            self._process = None  # dead: the next request starts a new one

    def cancel(self) -> None:
        """Ask the host to stop the reply in progress. It stops between two tokens; if it
        cannot (a long prompt still being read), it is killed after a grace period."""
        if self._active_request is None or self._process is None:
            # A request waiting for the model to load is cancelled before it starts.
            self._cancel_before_start = self._busy > 0
            return
        self._process.send(("cancel", self._active_request))
        if self._cancel_handle is None:
            loop = asyncio.get_running_loop()
            self._cancel_handle = loop.call_later(CANCEL_GRACE_SECONDS, self._kill_on_cancel)

    def pace(self, wait: bool) -> None:
        """Have the reply in progress wait between two tokens (`wait`), or go on. Strict
        holds a reply's text until a check covering it passed: when its checks fall
        behind (a judge that gets only idle cores, on a CPU the reply keeps busy), the
        reply waits for them instead of running to its end unseen. Every wait must be
        followed by a go; a cancel ends a waiting reply too."""
        if self._active_request is not None and self._process is not None:
            self._process.send(("hold" if wait else "go", self._active_request))

    def _kill_on_cancel(self) -> None:
        self._cancel_handle = None
        if self._active_request is not None and self._process is not None:
            log.warning("model host %s ignored cancel; killing it", self.pid)
            self._killed_on_cancel = True
            self._process.kill()

    def _rest(self) -> None:
        self._busy -= 1
        self._last_used = time.monotonic()

    async def unload_if_idle(self, seconds: float, now: float | None = None) -> bool:
        """Stop the process when the model has done nothing for `seconds` (as of `now`,
        a `time.monotonic()` reading), giving its memory back: RAM and the GPU's. The
        next request loads it again, once this process has gone (never two at once).
        Whether it was stopped."""
        now = time.monotonic() if now is None else now
        process = self._process
        if self._busy or process is None or now - self._last_used < seconds:
            return False
        log.info(
            "model host %s: %s unused for %.0f min; unloading it",
            process.process.pid,
            self.path.name,
            (now - self._last_used) / 60,
        )
        # Taken before any await: a request from now on finds no process and loads anew.
        self._process, self.facts = None, None
        self._stopping = asyncio.ensure_future(process.stop())
        # Shielded: an unloader cancelled meanwhile (the app closing) leaves the stop
        # running, and close() waits for it.
        await asyncio.shield(self._stopping)
        return True

    async def _discard_process(self) -> None:
        process, self._process = self._process, None
        self.facts = None
        if process is not None:
            await process.stop()
        stopping = self._stopping
        if stopping is not None:
            await asyncio.shield(stopping)
            if self._stopping is stopping:
                self._stopping = None

    async def close(self) -> None:
        await self._discard_process()


class _ReplyClock:
    """The text of one reply and when it arrived, as the app sees it."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.sent = time.perf_counter()
        self.first: float | None = None
        self.last = self.sent

    def arrived(self, text: str) -> None:
        self.last = time.perf_counter()
        if self.first is None:
            self.first = self.last
        self.parts.append(text)

    def finished(
        self,
        prompt_tokens: int,
        generated: int,
        finish: FinishReason,
        *,
        gpu_top_k: int = 0,
        host_rate: float = 0.0,
        prompt_tokens_read: int = 0,
        prompt_read_ms: float = 0.0,
    ) -> GenerationFinished:
        end = time.perf_counter()
        first = self.first
        ttft = (first - self.sent) if first is not None else 0.0
        # Decode speed: tokens after the first over the time they took, as llama.cpp
        # reports it (prompt processing is in the time to first token).
        decode_time = (self.last - first) if first is not None else 0.0
        rate = (generated - 1) / decode_time if generated > 1 and decode_time > 0 else 0.0
        stats = GenerationStats(
            prompt_tokens=prompt_tokens,
            generated_tokens=generated,
            ttft_ms=ttft * 1000.0,
            tokens_per_second=rate,
            total_ms=(end - self.sent) * 1000.0,
            finish_reason=finish,
            gpu_top_k=gpu_top_k,
            host_tokens_per_second=host_rate,
            prompt_tokens_read=prompt_tokens_read,
            prompt_read_ms=prompt_read_ms,
        )
        return GenerationFinished(stats, "".join(self.parts))
