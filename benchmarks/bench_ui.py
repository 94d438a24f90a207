"""Does the desktop window stay responsive? Issue 6's three targets, on the real window.

    .venv/bin/python benchmarks/bench_ui.py [--max-tokens N] [--rounds N] [--starts N]
                                            [--pairs N] [--switches N] [--scroll-steps N]
                                            [--code-chars N]

(a) The longest stall of the GUI thread while a reply streams through the real window
    (the starter model, the real engine thread, the encrypted history), seen by a 5 ms
    heartbeat QTimer: the largest gap between ticks beyond the interval. Baseline: the
    same heartbeat over an idle period of the same length, right after. Target: 16 ms.
(b) Cold start to the first painted main window (`bastion`, through `cli.main`) against
    a bare QApplication with an empty QMainWindow, each a fresh process, alternating:
    median ratio, target at most 2.5x. Also which heavy modules were imported by then,
    and when the window's contents (the composer) first painted: the window paints
    first and fills once the application has started behind it.
(c) Two conversations of 2,000 messages each in the encrypted history, opened in turn
    from the sidebar: the longest stall of the GUI thread while one opens (the same
    heartbeat as (a), from the click until its messages are built and painted), when
    its newest messages are shown and when all of them are; then scrolling it a page at
    a time (until painted). Target: under one frame (16 ms) per step, for both.

(d) A long code block streamed into the window, from synthetic tokens at 100 a second
    (the starter model does not write code), until it is highlighted: the longest stall
    of the GUI thread, against an idle period as long. A code block only grows at its end
    while it streams, and is highlighted once complete; this checks neither costs a
    frame at any length. Target: 16 ms, as (a).

The script sets QT_QPA_PLATFORM=offscreen unless it is set, and writes
benchmarks/results/ui.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from bench_common import median, met, positive, prepare_home

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "ui.json"
FRAME_MS = 16.0
TARGET_START_RATIO = 2.5
HEARTBEAT_MS = 5
HEAVY_MODULES = ("llama_cpp", "nemoguardrails", "huggingface_hub")
PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm, in many chapters."
TURN_TIMEOUT_S = 600.0
OPENING_S = 2.0

# -- (b) the child processes: each prints its clock at the end of its first paint --------

_FIRST_PAINT = (
    f"HEAVY = {HEAVY_MODULES!r}\n"
    + """
import json, os, sys, time
from PySide6 import QtCore, QtWidgets

# Times the first paint pass of the main window, and the first paint of the widget
# named FILLED (the window's contents, if they come later).
class FirstPaint(QtCore.QObject):

    def __init__(self):
        super().__init__()
        self.paints = []
        self.heavy = None
        self.filled = None

    def eventFilter(self, watched, event):
        if (
            event.type() == QtCore.QEvent.Type.Paint
            and isinstance(watched, QtWidgets.QWidget)
            and isinstance(watched.window(), QtWidgets.QMainWindow)
        ):
            now = time.monotonic()
            if not self.paints:
                self.heavy = [m for m in HEAVY if m in sys.modules]
            self.paints.append(now)
            if self.filled is None and (FILLED is None or watched.objectName() == FILLED):
                self.filled = now
                QtCore.QTimer.singleShot(0, self.done)  # after that whole paint pass
        return False

    def done(self):
        # The first pass: the paint events that followed the first without a pause
        # (the app starts its work behind the window once it has painted).
        end = self.paints[0]
        for moment in self.paints[1:]:
            if moment - end > 0.05:
                break
            end = moment
        print(json.dumps({"painted": end, "filled": self.filled, "heavy": self.heavy}))
        sys.stdout.flush()
        os._exit(0)

first_paint = FirstPaint()
"""
)

BARE_CHILD = (
    _FIRST_PAINT
    + """
FILLED = None
app = QtWidgets.QApplication(sys.argv)
app.installEventFilter(first_paint)
window = QtWidgets.QMainWindow()
window.resize(1180, 780)
window.show()
app.exec()
"""
)

# The app's own entry point; the QApplication is made first (as run_app would make it)
# only so that the filter can be installed on it.
APP_CHILD = (
    _FIRST_PAINT
    + """
FILLED = "composer"
from bastion_desktop.ui.startup import make_application
app = make_application()
app.installEventFilter(first_paint)
from bastion_desktop.cli import main
sys.exit(main([]))
"""
)


@dataclass(frozen=True)
class Start:
    seconds: float  # to the end of the first paint pass
    filled: float  # to the first paint of the window's contents
    heavy: list[str]  # imported by the first paint


def cold_start(code: str, env: dict[str, str]) -> Start:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"a start failed (exit {done.returncode}): {done.stderr[-2000:]}")
    found = json.loads(lines[-1])
    return Start(found["painted"] - began, found["filled"] - began, found["heavy"])


def measure_starts(rounds: int, env: dict[str, str]) -> dict[str, list[Start]]:
    cold_start(BARE_CHILD, env)  # the disk cache, for both
    cold_start(APP_CHILD, env)
    starts: dict[str, list[Start]] = {"bare": [], "app": []}
    for index in range(rounds):
        order = [("bare", BARE_CHILD), ("app", APP_CHILD)]
        for name, code in order if index % 2 == 0 else reversed(order):
            starts[name].append(cold_start(code, env))
        print(
            f"  round {index + 1}/{rounds}: bare {starts['bare'][-1].seconds * 1000:6.0f} ms"
            f" | app {starts['app'][-1].seconds * 1000:6.0f} ms"
            f" (contents painted at {starts['app'][-1].filled * 1000:.0f} ms)",
            flush=True,
        )
    return starts


# -- the window, in this process ----------------------------------------------------------


def wait_for(signal: Any, start: Callable[[], object], timeout_s: float) -> bool:
    """Run `start` and the event loop until `signal` fires; False on a timeout."""
    from bastion_desktop.ui.qt import QtCore

    loop = QtCore.QEventLoop()
    fired: list[bool] = []

    def quit_fired(*_args: object) -> None:
        fired.append(True)
        loop.quit()

    signal.connect(quit_fired)
    timer = QtCore.QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(loop.quit)
    timer.start(int(timeout_s * 1000))
    try:
        start()
        if not fired:
            loop.exec()
    finally:
        timer.stop()
        signal.disconnect(quit_fired)
    return bool(fired)


def settle() -> None:
    """What the event loop does before the user sees the change: layouts, deferred
    deletions and the paint."""
    from bastion_desktop.ui.qt import QtCore, QtWidgets

    QtWidgets.QApplication.processEvents()
    QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
    QtWidgets.QApplication.processEvents()


class Heartbeat:
    """A timer that should tick every HEARTBEAT_MS: a longer gap is a stalled GUI thread."""

    def __init__(self) -> None:
        from bastion_desktop.ui.qt import QtCore

        self.ticks: list[float] = []
        self.timer = QtCore.QTimer()
        self.timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self.timer.setInterval(HEARTBEAT_MS)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def start(self) -> None:
        self.ticks = [time.perf_counter()]
        self.timer.start()

    def stop(self) -> Beat:
        self.timer.stop()
        self.ticks.append(time.perf_counter())
        gaps = [(b - a) * 1000 - HEARTBEAT_MS for a, b in itertools.pairwise(self.ticks)]
        gaps.sort()
        return Beat(
            seconds=self.ticks[-1] - self.ticks[0],
            longest_ms=max(gaps, default=0.0),
            p99_ms=gaps[int(len(gaps) * 0.99)] if gaps else 0.0,
            over_frame=sum(1 for g in gaps if g > FRAME_MS),
            ticks=len(self.ticks) - 2,
        )


@dataclass(frozen=True)
class Beat:
    seconds: float
    longest_ms: float
    p99_ms: float
    over_frame: int
    ticks: int


def idle_for(seconds: float) -> Beat:
    from bastion_desktop.ui.qt import QtCore

    heart = Heartbeat()
    loop = QtCore.QEventLoop()
    heart.start()
    QtCore.QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()
    return heart.stop()


@dataclass
class Streaming:
    turns: list[Beat] = field(default_factory=list)
    idles: list[Beat] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)


def measure_streaming(window: Any, rounds: int) -> Streaming:
    from bastion_desktop.core.events import DoneEvent

    done: list[DoneEvent] = []
    window.controller.chat_event.connect(
        lambda e: done.append(e) if isinstance(e, DoneEvent) else None
    )
    result = Streaming()
    for index in range(rounds + 1):  # the first loads and warms the model, untimed
        window.new_chat()
        settle()
        heart = Heartbeat()
        heart.start()
        if not wait_for(
            window.controller.turn_finished, lambda: window.send(PROMPT), TURN_TIMEOUT_S
        ):
            raise RuntimeError("the reply did not finish in time")
        turn = heart.stop()
        tokens = done[-1].tokens if done else 0
        if index == 0:
            print(f"  warm-up turn: {tokens} tokens in {turn.seconds:.1f} s", flush=True)
            continue
        idle = idle_for(turn.seconds)
        result.turns.append(turn)
        result.idles.append(idle)
        result.tokens.append(tokens)
        print(
            f"  round {index}/{rounds}: {tokens} tokens in {turn.seconds:.1f} s, longest stall"
            f" {turn.longest_ms:.1f} ms (p99 {turn.p99_ms:.1f}) | idle {idle.seconds:.1f} s,"
            f" longest {idle.longest_ms:.1f} ms (p99 {idle.p99_ms:.1f})",
            flush=True,
        )
    return result


# -- (d) a long code block ------------------------------------------------------------------

CODE_LINE = "    total += compute(alpha, beta, gamma)  # keep a running sum of the values\n"
CODE_TOKEN_CHARS = 4  # about what a code token holds
CODE_TOKEN_MS = 10  # 100 tokens a second: a fast GPU


@dataclass(frozen=True)
class CodeStream:
    chars: int
    turn: Beat
    idle: Beat


def measure_code_stream(window: Any, chars: int) -> CodeStream:
    """Feed a reply holding one long code block to the real window's chat view, through
    the controller's signals as the engine thread's tokens arrive."""
    from bastion_desktop.core.events import TokenEvent
    from bastion_desktop.ui.qt import QtCore

    code = (CODE_LINE * (chars // len(CODE_LINE) + 1))[:chars]
    text = f"Here is the code:\n\n```python\n{code}\n```\n"
    pieces = iter(text[i : i + CODE_TOKEN_CHARS] for i in range(0, len(text), CODE_TOKEN_CHARS))
    controller = window.controller
    window.new_chat()
    settle()
    loop = QtCore.QEventLoop()
    feed = QtCore.QTimer()
    feed.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
    feed.setInterval(CODE_TOKEN_MS)

    def next_token() -> None:
        piece = next(pieces, None)
        if piece is None:
            feed.stop()
            controller.turn_finished.emit()
            loop.quit()
        else:
            controller.chat_event.emit(TokenEvent(piece))

    feed.timeout.connect(next_token)
    controller.turn_started.emit("send", "Write the code.")
    heart = Heartbeat()
    heart.start()
    feed.start()
    loop.exec()
    # The complete block is highlighted off the GUI thread, then styled in steps: that
    # is part of the reply's cost.
    (block,) = window.chat_view.messages[-1].body.code_blocks()
    if block.highlighting and not wait_for(block.highlighted, lambda: None, TURN_TIMEOUT_S):
        raise RuntimeError("the code block was not highlighted in time")
    settle()
    turn = heart.stop()
    return CodeStream(len(text), turn, idle_for(turn.seconds))


# -- (c) long conversations -----------------------------------------------------------------

_WORDS = (
    "the",
    "a",
    "model",
    "answer",
    "question",
    "reply",
    "history",
    "window",
    "message",
    "local",
    "private",
    "data",
    "file",
    "token",
    "context",
    "guard",
    "profile",
    "settings",
    "network",
    "offline",
    "stream",
    "scroll",
    "list",
    "search",
    "encrypted",
    "key",
    "passphrase",
    "night",
    "harbour",
    "lighthouse",
    "storm",
    "keeper",
    "ship",
    "light",
    "because",
    "when",
    "which",
    "while",
    "after",
    "before",
    "often",
    "never",
    "always",
    "quickly",
    "slowly",
)


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(_WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def _reply(rng: random.Random, index: int) -> str:
    paragraphs = [
        " ".join(_sentence(rng, rng.randint(8, 20)) for _ in range(rng.randint(2, 5)))
        for _ in range(rng.randint(1, 3))
    ]
    if index % 10 == 0:
        paragraphs.append("```python\ndef keeper(light):\n    return light.on()\n```")
    if index % 7 == 0:
        paragraphs.append("- **first** point\n- second point with `code`")
    return "\n\n".join(paragraphs)


async def fill_history(store: Any, pairs: int) -> list[str]:
    from bastion_desktop.core.conversation_store import MessageState
    from bastion_desktop.core.inference.types import Role
    from bastion_desktop.core.starter import STARTER_ID

    rng = random.Random(6)
    ids = []
    for name in ("first", "second"):
        conversation = await store.create_conversation(
            title=f"Long conversation ({name})",
            model_id=STARTER_ID,
            profile_id="standard",
            system_prompt="",
        )
        for index in range(pairs):
            question = _sentence(rng, rng.randint(8, 40))
            await store.add_message(conversation.id, Role.USER, question, MessageState.COMPLETE)
            await store.add_message(
                conversation.id,
                Role.ASSISTANT,
                _reply(rng, index),
                MessageState.COMPLETE,
                model_id=STARTER_ID,
            )
        ids.append(conversation.id)
    return ids


@dataclass
class Browsing:
    messages_each: int = 0
    opening_ms: float = 0.0  # longest stall while the ready window finishes starting
    stalls: list[float] = field(default_factory=list)  # longest GUI stall per switch
    first_shown: list[float] = field(default_factory=list)  # ms to the newest messages
    all_shown: list[float] = field(default_factory=list)  # ms to every message built
    scrolls: list[float] = field(default_factory=list)
    messages_shown: list[int] = field(default_factory=list)
    pages: list[int] = field(default_factory=list)


def measure_browsing(
    window: Any, ids: list[str], messages_each: int, switches: int, steps: int
) -> Browsing:
    result = Browsing(messages_each=messages_each)
    bar = window.chat_view.verticalScrollBar()
    for index in range(switches):
        target = ids[index % 2]
        heart = Heartbeat()
        first: list[float] = []

        def loaded(*_args: object, first: list[float] = first) -> None:
            first.append(time.perf_counter())

        # Connected after the chat view's own slot: it runs once the view has built
        # the first step of messages, the newest ones, which the next paint shows.
        window.controller.loaded.connect(loaded)
        heart.start()
        began = time.perf_counter()
        if not wait_for(
            window.chat_view.shown,
            lambda t=target: window.sidebar.open_requested.emit(t),  # type: ignore[misc]
            TURN_TIMEOUT_S,
        ):
            raise RuntimeError("the conversation did not load in time")
        settle()
        ended = time.perf_counter()
        beat = heart.stop()
        window.controller.loaded.disconnect(loaded)
        result.stalls.append(beat.longest_ms)
        result.first_shown.append((first[0] - began) * 1000)
        result.all_shown.append((ended - began) * 1000)
        result.messages_shown.append(len(window.chat_view.messages))
        bar.setValue(0)
        settle()
        pages = 0
        for _ in range(steps):
            if bar.value() >= bar.maximum():
                break
            began = time.perf_counter()
            bar.setValue(min(bar.value() + bar.pageStep(), bar.maximum()))
            settle()
            result.scrolls.append((time.perf_counter() - began) * 1000)
            pages += 1
        result.pages.append(pages)
        recent = result.scrolls[-pages:] if pages else [0.0]
        print(
            f"  switch {index + 1}/{switches}: longest stall {beat.longest_ms:.1f} ms;"
            f" newest messages at {result.first_shown[-1]:.0f} ms,"
            f" all {result.messages_shown[-1]} at {result.all_shown[-1]:.0f} ms;"
            f" {pages} pages scrolled, median {median(recent):.2f} ms,"
            f" max {max(recent):.2f} ms (scroll range {bar.maximum()} px)",
            flush=True,
        )
    return result


# -- running it all --------------------------------------------------------------------------


def open_window(passphrase_file: Path) -> tuple[Any, Any]:
    from bastion_desktop.commands.passphrase import passphrase_prompt
    from bastion_desktop.context import AppContext
    from bastion_desktop.ui.engine import Engine
    from bastion_desktop.ui.main_window import MainWindow
    from bastion_desktop.ui.services import AppServices
    from bastion_desktop.ui.startup import make_application
    from bastion_desktop.ui.theme import apply_theme

    app = make_application()
    context = AppContext.start()
    store = context.open_history(passphrase_prompt(passphrase_file))
    engine = Engine()
    engine.start()
    services = AppServices.assemble(context, engine, store)
    apply_theme(app, context.settings.theme)
    window = MainWindow(services)
    window.show()
    if not wait_for(window.ready, window.start, 300):
        raise RuntimeError("the guardrail profile did not open")
    settle()
    return window, services


def summary(
    starts: dict[str, list[Start]], streaming: Streaming, browsing: Browsing, code: CodeStream
) -> str:
    bare = median([s.seconds for s in starts["bare"]]) * 1000
    app = median([s.seconds for s in starts["app"]]) * 1000
    ratio = app / bare
    paired = median(
        [a.seconds / b.seconds for a, b in zip(starts["app"], starts["bare"], strict=True)]
    )
    heavy = sorted({m for s in starts["app"] for m in s.heavy})
    filled = median([s.filled for s in starts["app"]]) * 1000
    stall = max(t.longest_ms for t in streaming.turns)
    idle = max(i.longest_ms for i in streaming.idles)
    stall_med = median([t.longest_ms for t in streaming.turns])
    idle_med = median([i.longest_ms for i in streaming.idles])
    switch_med, switch_max = median(browsing.stalls), max(browsing.stalls)
    scroll_med, scroll_max = median(browsing.scrolls), max(browsing.scrolls, default=0.0)
    lines = [
        f"(a) GUI thread while a reply streams ({HEARTBEAT_MS} ms heartbeat,"
        f" {len(streaming.turns)} rounds, tokens {streaming.tokens}):",
        f"  longest stall streaming {stall:.1f} ms (median over rounds {stall_med:.1f})"
        f" | idle {idle:.1f} ms (median {idle_med:.1f}) | difference {stall - idle:+.1f} ms",
        f"  gaps over {FRAME_MS:.0f} ms while streaming: "
        f"{[t.over_frame for t in streaming.turns]}, idle: "
        f"{[i.over_frame for i in streaming.idles]}",
        f"  target longest stall <= {FRAME_MS:.0f} ms: {met(stall <= FRAME_MS)}"
        f" (the idle window's own longest stall in this run: {idle:.1f} ms; frames over"
        f" {FRAME_MS:.0f} ms streaming {sum(t.over_frame for t in streaming.turns)},"
        f" idle {sum(i.over_frame for i in streaming.idles)})",
        f"(b) cold start to the first painted window ({len(starts['app'])} rounds):",
        f"  bare QMainWindow {bare:.0f} ms | Bastion {app:.0f} ms | ratio {ratio:.2f}x"
        f" (median of paired ratios {paired:.2f}x)   target <= {TARGET_START_RATIO}x:"
        f" {met(ratio <= TARGET_START_RATIO)}",
        f"  its contents (conversations, composer) painted at {filled:.0f} ms"
        f" ({filled / bare:.2f}x); the history and the guardrails open behind them",
        f"  heavy modules imported at the first paint: {', '.join(heavy) or 'none'}"
        f" (checked: {', '.join(HEAVY_MODULES)})",
        f"(c) two conversations of {browsing.messages_each:,} messages"
        f" (longest stall in the {OPENING_S:.0f} s before: {browsing.opening_ms:.1f} ms):",
        f"  switching: longest GUI stall median {switch_med:.1f} ms, max {switch_max:.1f} ms"
        f" ({len(browsing.stalls)} switches)   target < {FRAME_MS:.0f} ms:"
        f" {met(switch_max < FRAME_MS)}",
        f"  newest messages shown after median {median(browsing.first_shown):.0f} ms,"
        f" all {max(browsing.messages_shown, default=0)} after"
        f" {median(browsing.all_shown):.0f} ms (the history is read on the engine thread)",
        f"  scrolling a page: median {scroll_med:.2f} ms, max {scroll_max:.2f} ms"
        f" ({len(browsing.scrolls)} steps)   target < {FRAME_MS:.0f} ms:"
        f" {met(scroll_max < FRAME_MS)}",
        f"(d) a {code.chars:,}-character code block streamed ({1000 // CODE_TOKEN_MS} tokens/s,"
        f" {code.turn.seconds:.1f} s):",
        f"  longest stall {code.turn.longest_ms:.1f} ms (p99 {code.turn.p99_ms:.1f})"
        f" | idle {code.idle.longest_ms:.1f} ms (p99 {code.idle.p99_ms:.1f}) | frames over"
        f" {FRAME_MS:.0f} ms: {code.turn.over_frame}, idle {code.idle.over_frame}"
        f"   target longest stall <= {FRAME_MS:.0f} ms: {met(code.turn.longest_ms <= FRAME_MS)}",
    ]
    return "\n".join(lines)


def write_results(
    args: argparse.Namespace,
    starts: dict[str, list[Start]],
    streaming: Streaming,
    browsing: Browsing,
    code: CodeStream,
) -> None:
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(
        json.dumps(
            {
                "max_tokens": args.max_tokens,
                "seed": args.seed,
                "starts": {k: [vars(s) for s in v] for k, v in starts.items()},
                "streaming": {
                    "tokens": streaming.tokens,
                    "turns": [vars(b) for b in streaming.turns],
                    "idles": [vars(b) for b in streaming.idles],
                },
                "browsing": vars(browsing),
                "code_stream": {
                    "chars": code.chars,
                    "turn": vars(code.turn),
                    "idle": vars(code.idle),
                },
                "platform": os.environ.get("QT_QPA_PLATFORM"),
                "cpus": os.cpu_count(),
                "load": os.getloadavg(),
            },
            indent=2,
        )
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--max-tokens", type=positive, default=1000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--rounds", type=positive, default=3, help="streamed replies")
    parser.add_argument("--starts", type=positive, default=7, help="cold starts of each")
    parser.add_argument("--pairs", type=positive, default=1000, help="questions+replies")
    parser.add_argument("--switches", type=positive, default=6)
    parser.add_argument("--scroll-steps", type=positive, default=100, help="pages per pass")
    parser.add_argument("--code-chars", type=positive, default=12_000, help="(d) code length")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    from bastion_desktop.core.privacy import apply_private_environment

    apply_private_environment()
    with tempfile.TemporaryDirectory(prefix="bastion-bench-ui-") as folder:
        home = Path(folder)
        os.environ["BASTION_HOME"] = str(home)
        prepare_home(home)
        settings = {
            "sampling": {"max_tokens": args.max_tokens, "seed": args.seed, "temperature": 0.7}
        }
        (home / "config" / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
        passphrase_file = home / "passphrase.txt"
        passphrase_file.write_text("benchmark passphrase\n", encoding="utf-8")
        env = dict(os.environ, BASTION_PASSPHRASE_FILE=str(passphrase_file))

        print("(b) cold starts, alternating bare QMainWindow / Bastion:", flush=True)
        starts = measure_starts(args.starts, env)

        from bastion_desktop.commands.passphrase import passphrase_prompt
        from bastion_desktop.context import AppContext

        print(f"(c) writing 2 x {args.pairs * 2} messages to the history...", flush=True)
        context = AppContext.start()
        store = context.open_history(passphrase_prompt(passphrase_file))
        try:
            ids = asyncio.run(fill_history(store, args.pairs))
        finally:
            store.close()
        window, services = open_window(passphrase_file)
        try:
            # What a user would see first: the window, idle, while it finishes starting
            # (the code highlighter warmed up, spare message widgets built).
            opening = idle_for(OPENING_S)
            print(
                f"(c) the first {OPENING_S:.0f} s after the window is ready: longest stall"
                f" {opening.longest_ms:.1f} ms",
                flush=True,
            )
            print("(c) switching between them and scrolling:", flush=True)
            browsing = measure_browsing(
                window, ids, 2 * args.pairs, args.switches, args.scroll_steps
            )
            browsing.opening_ms = opening.longest_ms
            print("(a) streaming replies, each followed by as long an idle period:", flush=True)
            streaming = measure_streaming(window, args.rounds)
            print("(d) streaming a long code block (synthetic tokens)...", flush=True)
            code = measure_code_stream(window, args.code_chars)
        finally:
            window.close()
            services.shut_down()

    print("\n" + summary(starts, streaming, browsing, code))
    write_results(args, starts, streaming, browsing, code)
    print(f"results: {RESULTS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
