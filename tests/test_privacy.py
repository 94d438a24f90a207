"""Privacy, proven: a chat turn opens no network connection, chat text reaches no file,
and NeMo Guardrails' usage telemetry is off in every entry point."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bastion_desktop.core.errors import ModelHostCrashedError
from bastion_desktop.core.inference.host import ModelHost
from bastion_desktop.core.inference.types import (
    LoadOptions,
)
from bastion_desktop.core.privacy import PRIVATE_ENVIRONMENT
from tests.core.inference.mid_reply import signal_mid_reply

BASTION = Path(sys.executable).with_name("bastion")

# Loaded by every Python process started with this folder on PYTHONPATH, including the
# model host that multiprocessing spawns: an audit hook that records and refuses any
# attempt to resolve a name or to connect or bind an internet socket.
NETWORK_TRAP = textwrap.dedent(
    """
    import os, socket, sys

    _LOG = os.environ["BASTION_NETWORK_TRAP_LOG"]

    def _note(line):
        with open(_LOG, "a", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()} {line}\\n")

    def _hook(event, args):
        if event in ("socket.connect", "socket.bind", "socket.sendto"):
            if args[0].family in (socket.AF_INET, socket.AF_INET6):
                _note(f"{event} {args[1]!r}")
                raise OSError(f"network use refused by the test: {event}")
        elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"):
            _note(f"{event} {args[0]!r}")
            raise OSError(f"network use refused by the test: {event}")

    sys.addaudithook(_hook)
    _note("trap armed")
    """
)


def _trap_env(cli_env: dict[str, str], trap_dir: Path, log: Path) -> dict[str, str]:
    (trap_dir / "sitecustomize.py").write_text(NETWORK_TRAP)
    env = dict(cli_env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(trap_dir), env.get("PYTHONPATH")]))
    env["BASTION_NETWORK_TRAP_LOG"] = str(log)
    return env


def test_the_network_trap_catches_a_connection(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """The trap itself works: without this, the test below could not fail."""
    log = tmp_path / "network.log"
    env = _trap_env(cli_env, tmp_path, log)
    probe = "import socket; socket.socket().connect(('127.0.0.1', 9))"
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "socket.connect ('127.0.0.1', 9)" in log.read_text()


@pytest.mark.model
def test_a_full_chat_turn_opens_no_network_connection(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    log = tmp_path / "network.log"
    env = _trap_env(cli_env, tmp_path, log)
    result = subprocess.run(
        [str(BASTION), "chat", "--seed", "1", "--max-tokens", "8", "Hello"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    lines = log.read_text().splitlines()
    armed = {line.split()[0] for line in lines if line.endswith("trap armed")}
    assert len(armed) >= 2, "the trap must cover the app and its model host process"
    assert [line for line in lines if not line.endswith("trap armed")] == []


@pytest.mark.model
def test_chat_text_reaches_no_file(tmp_path: Path, cli_env: dict[str, str]) -> None:
    marker = "zebra-quartz-7781 my secret diagnosis"
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = dict(cli_env, TMPDIR=str(temp))
    result = subprocess.run(
        [str(BASTION), "chat", "--seed", "1", "--max-tokens", "8", marker],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    home = Path(env["BASTION_HOME"])
    written = [p for p in [*home.rglob("*"), *temp.rglob("*")] if p.is_file()]
    assert any(p.name == "bastion.log" for p in written), "the log file is part of the check"
    for path in written:
        assert marker.encode() not in path.read_bytes(), f"chat text found in {path}"
        assert b"zebra-quartz" not in path.read_bytes(), f"chat text found in {path}"


TELEMETRY_PROBE = textwrap.dedent(
    """
    import sys
    {setup}
    from nemoguardrails.telemetry import _is_usage_stats_enabled
    print(_is_usage_stats_enabled())
    """
)


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("", "True"),  # the control: NeMo reports usage unless told not to
        ("import bastion_guardrails", "False"),
        ("from bastion_desktop.cli import main; main(['--version'])", "False"),
    ],
)
def test_nemo_guardrails_telemetry_is_off_in_every_entry_point(
    tmp_path: Path, setup: str, expected: str
) -> None:
    # NeMo also stays quiet under CI or pytest; the probe runs in a clean process.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in PRIVATE_ENVIRONMENT and k not in ("CI", "PYTEST_CURRENT_TEST")
    }
    env["HOME"] = str(tmp_path)
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    code = TELEMETRY_PROBE.format(
        setup=f"try:\n    {setup}\nexcept SystemExit:\n    pass" if setup else ""
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == expected


# --- memory off the disk ---------------------------------------------------------------------
#
# A crashing process's memory holds the conversation in the clear: a core dump would put
# it on disk unencrypted. Each check starts its process as a user's shell may, with core
# dumps allowed (`ulimit -c unlimited`).

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="prctl and /proc are Linux's")

CORE_PROBE = textwrap.dedent(
    """
    import ctypes, resource
    {setup}
    dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
    print(dumpable, resource.getrlimit(resource.RLIMIT_CORE)[0])
    """
)


CLI_START = """
import contextlib
from bastion_desktop.cli import main
with contextlib.suppress(SystemExit):
    main(["--version"])
"""


def _cores_allowed() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


@linux_only
@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("", f"1 {resource.RLIM_INFINITY}"),  # the control: a process may dump core
        (CLI_START, "0 0"),
        ("from bastion_desktop.context import AppContext; AppContext.start()", "0 0"),
    ],
)
def test_the_apps_process_dumps_no_core(setup: str, expected: str, cli_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CORE_PROBE.format(setup=setup)],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=_cores_allowed,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == expected


@linux_only
@pytest.mark.model
async def test_a_model_host_that_crashes_mid_reply_leaves_no_core_dump(
    starter_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the kernel's core_pattern is a file name (as on this machine), the core
    would land in the host's working folder: tmp_path. Where it is a pipe (systemd-
    coredump, apport), no file shows here, and the host's limit and the kernel's
    not-dumpable rule are what keep it away."""
    monkeypatch.chdir(tmp_path)
    limit = resource.getrlimit(resource.RLIMIT_CORE)
    _cores_allowed()
    host = ModelHost(starter_path, LoadOptions(512))
    try:
        await host.load()
        limits = Path(f"/proc/{host.pid}/limits").read_text(encoding="utf-8")
        assert re.search(r"^Max core file size\s+0\s", limits, re.MULTILINE), limits
        with pytest.raises(ModelHostCrashedError, match="SIGSEGV"):
            await signal_mid_reply(host, signal.SIGSEGV)
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, limit)
        await host.close()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("core")]
