"""`bastion serve` as a user runs it: the installed command, a real process, stopped
with SIGTERM (what a service manager sends) and Ctrl+C."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

BASTION = Path(sys.executable).with_name("bastion")

pytestmark = pytest.mark.model


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_serve_answers_and_stops_cleanly(cli_env: dict[str, str], stop: signal.Signals) -> None:
    created = subprocess.run(
        [str(BASTION), "api", "token", "create", "curl"],
        env=cli_env,
        capture_output=True,
        text=True,
        check=True,
    )
    token = created.stdout.strip()
    port = _free_port()
    with subprocess.Popen(
        [str(BASTION), "serve", "--port", str(port)],
        env=cli_env,
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            _use(server, port, token, stop)
        finally:
            if server.poll() is None:
                server.kill()


def _use(server: subprocess.Popen[str], port: int, token: str, stop: signal.Signals) -> None:
    assert server.stderr is not None
    ready = server.stderr.readline()
    assert f"Bastion's local API is at http://127.0.0.1:{port}/v1" in ready, ready
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/health").json() == {"status": "ok"}
    models = httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {token}"})
    assert [m["id"] for m in models.json()["data"]] == ["gemma-3-270m-starter"]
    reply = httpx.post(
        f"{base}/v1/chat/completions",
        headers={"Authorization": f"Bearer {token}"},
        json={"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4},
        timeout=120,
    )
    assert reply.status_code == 200
    assert reply.json()["usage"]["completion_tokens"] > 0
    server.send_signal(stop)
    assert server.wait(timeout=30) == 0
    assert "Stopping the local API." in server.stderr.read()
