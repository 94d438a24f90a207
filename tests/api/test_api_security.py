"""The local API's door: every refusal in the order the server checks, each with the
right status and an OpenAI-shaped error, and none of them starting the model."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
import socket
import warnings
from pathlib import Path

import pytest

from bastion_desktop import context as context_module
from bastion_desktop.api.tokens import ApiTokens
from bastion_desktop.cli import main
from bastion_desktop.context import AppContext
from bastion_desktop.core.starter import STARTER_ID
from tests.api.conftest import Api, mandatory, serving

CHAT = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}


async def _raw(api: Api, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """A request written byte for byte (clients will not send an empty Host)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", api.server.port)
    writer.write(head.encode() + b"\r\n" + body)
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    status_line, _, rest = response.partition(b"\r\n")
    headers_text, _, content = rest.partition(b"\r\n\r\n")
    headers = {}
    for line in headers_text.decode().split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, content


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("evil.example:{port}", 403),  # DNS rebinding: the page's own name
        ("127.0.0.1:1", 403),  # the right address, another port
        ("", 403),
        (None, 400),  # aiohttp refuses an HTTP/1.1 request without Host before we see it
        ("localhost:{port}", 200),
        ("[::1]:{port}", 200),
    ],
)
async def test_the_host_header_must_be_loopback_with_this_port(
    api: Api, host: str | None, status: int
) -> None:
    lines = ["GET /v1/models HTTP/1.1", f"Authorization: Bearer {api.token}", "Connection: close"]
    if host is not None:
        lines.insert(1, f"Host: {host.format(port=api.server.port)}".rstrip())
    got, _, content = await _raw(api, "\r\n".join(lines) + "\r\n")
    assert got == status
    if status == 403:
        assert json.loads(content)["error"]["code"] == "host_not_allowed"


async def test_every_refusal_is_an_openai_error_and_starts_no_model(api: Api) -> None:
    revoked = api.tokens.create("revoked-client")
    api.tokens.revoke("revoked-client")
    url = "/v1/chat/completions"
    cases = [
        ("no token", {}, 401, "invalid_api_key"),
        ("a wrong token", api.auth("bastion-not-a-token"), 401, "invalid_api_key"),
        ("a revoked token", api.auth(revoked), 401, "invalid_api_key"),
        ("a foreign origin", {**api.auth(), "Origin": "https://evil.example"}, 403, None),
        ("Origin: null", {**api.auth(), "Origin": "null"}, 403, "origin_not_allowed"),
    ]
    async with api.http() as http:
        for what, headers, status, code in cases:
            response = await http.post(url, headers=headers, json=CHAT)
            assert response.status_code == status, what
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}, what
            assert error["code"] == (code or "origin_not_allowed"), what
            assert "access-control-allow-origin" not in response.headers, what

        plain = await http.post(
            url, headers={**api.auth(), "Content-Type": "text/plain"}, content=json.dumps(CHAT)
        )
        assert plain.status_code == 415
        form = await http.post(url, headers=api.auth(), data={"messages": "x"})
        assert form.status_code == 415

        huge = {**CHAT, "messages": [{"role": "user", "content": "a" * (5 * 1024 * 1024)}]}
        too_big = await http.post(url, headers=api.auth(), json=huge)
        assert too_big.status_code == 413
        assert too_big.json()["error"]["code"] == "request_too_large"

        for field, value in (("max_tokens", 10**9), ("n", 3), ("messages", [])):
            bad = await http.post(url, headers=api.auth(), json={**CHAT, field: value})
            assert bad.status_code == 400, field
            assert bad.json()["error"]["param"] == field

        unknown = await http.post(url, headers=api.auth(), json={**CHAT, "model": "/etc/passwd"})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "model_not_found"

        for path in ("/api/pull", "/api/delete", "/v1/files", "/api/create"):
            assert (await http.post(path, headers=api.auth(), json={})).status_code == 404
    assert api.slot.host is None, "a refused request started the model"


async def test_the_health_check_needs_no_token_and_says_nothing_else(api: Api) -> None:
    async with api.http() as http:
        health = await http.get("/health")
        models = await http.get("/v1/models")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert models.status_code == 401


async def test_an_allowed_origin_gets_cors_and_no_other_is_echoed(
    api_context: AppContext,
) -> None:
    extension = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"
    allowed = mandatory({"LocalApiAllowedOrigins": [extension]})
    context = AppContext(api_context.paths, api_context.settings, api_context.registry, allowed)
    async with serving(context) as api, api.http() as http:
        preflight = await http.options(
            "/v1/chat/completions",
            headers={
                "Origin": extension,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == extension
        assert "access-control-allow-credentials" not in preflight.headers
        # OpenAI's JavaScript library sends headers of its own: a page it runs in may.
        stainless = "authorization, content-type, x-stainless-os, x-stainless-lang"
        preflight = await http.options(
            "/v1/chat/completions",
            headers={
                "Origin": extension,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": stainless,
            },
        )
        assert preflight.headers["access-control-allow-headers"] == stainless
        models = await http.get("/v1/models", headers={**api.auth(), "Origin": extension})
        assert models.status_code == 200
        assert models.headers["access-control-allow-origin"] == extension
        # A refused token is told to the page, not hidden behind a CORS failure.
        refused = await http.get(
            "/v1/models", headers={**api.auth("bastion-not-a-token"), "Origin": extension}
        )
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == extension
        other = await http.options("/v1/models", headers={"Origin": "https://evil.example"})
        assert other.status_code == 403
        assert "access-control-allow-origin" not in other.headers


@pytest.mark.model
async def test_too_many_requests_in_progress_get_429_with_retry_after(
    api_context: AppContext,
) -> None:
    async with serving(api_context, per_client=1) as api, api.http() as http:
        body = {**CHAT, "max_tokens": 200, "stream": True}
        async with http.stream(
            "POST", "/v1/chat/completions", headers=api.auth(), json=body
        ) as first:
            assert first.status_code == 200
            async for _line in first.aiter_lines():
                break  # the first is answering: the same client's second must wait
            second = await http.post("/v1/chat/completions", headers=api.auth(), json=CHAT)
        assert second.status_code == 429
        assert second.headers["retry-after"] == "2"
        assert second.json()["error"]["type"] == "rate_limit_error"
        # The first one's end (the client left) frees the client's place: the server
        # notices at its next token.
        for _ in range(200):
            if not api.server.in_progress:
                break
            await asyncio.sleep(0.05)
        after = await http.post("/v1/chat/completions", headers=api.auth(), json=CHAT)
        assert after.status_code == 200


def _listening_ports() -> dict[int, set[str]]:
    """Every listening TCP socket of this machine: port -> local addresses."""
    listening: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                address, port = fields[1].split(":")
                if fields[3] == "0A":  # TCP_LISTEN
                    listening.setdefault(int(port, 16), set()).add(address)
    return listening


LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1


async def test_nothing_listens_but_loopback(api: Api) -> None:
    assert {host for host, _ in api.server.addresses} <= {"127.0.0.1", "::1"}
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp to read the bound sockets from")
    addresses = _listening_ports()[api.server.port]
    assert addresses
    assert addresses <= LOOPBACK_HEX, f"listening beyond loopback: {addresses}"


@pytest.mark.parametrize("turns", range(5))
async def test_a_connection_arriving_as_the_server_stops_is_closed_not_leaked(
    api_context: AppContext, turns: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A client connects just as the server closes: whichever loop turn the close comes
    in, the accepted socket is closed (before the fix, Python 3.11's asyncio logged
    "Error on transport creation" at one of these turns and dropped the socket unclosed,
    which the next test's garbage collection reported)."""
    async with serving(api_context) as running:
        with socket.create_connection(("127.0.0.1", running.server.port)):
            pass
        for _ in range(turns):
            await asyncio.sleep(0)
    assert "Error on transport creation" not in caplog.text
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


def test_tokens_are_kept_only_as_hashes(tmp_path: Path) -> None:
    tokens = ApiTokens(tmp_path / "api-tokens.json")
    token = tokens.create("vscode")
    assert token.startswith("bastion-")
    assert len(token) > 40
    stored = (tmp_path / "api-tokens.json").read_text()
    assert token not in stored
    assert token.removeprefix("bastion-") not in stored
    assert tokens.client_for(token) is not None
    assert tokens.client_for(token + "x") is None
    # Another process (the CLI) revokes it: the server's copy sees the file change.
    ApiTokens(tmp_path / "api-tokens.json").revoke("vscode")
    assert tokens.client_for(token) is None


def test_the_token_commands(home_with_starter: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["api", "token", "create", "vscode"]) == 0
    created = capsys.readouterr()
    token = created.out.strip()
    assert token.startswith("bastion-")
    assert "shown only now" in created.err
    assert main(["api", "token", "create", "VSCode"]) == 1
    assert "already a token named" in capsys.readouterr().err
    assert main(["api", "token", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [entry["name"] for entry in listed] == ["vscode"]
    assert token not in json.dumps(listed)
    assert main(["api", "token", "revoke", "vscode"]) == 0
    assert main(["api", "token", "revoke", "vscode"]) == 1
    assert "No token is named 'vscode'" in capsys.readouterr().err


def test_serve_refuses_when_the_policy_forbids_the_api(
    home_with_starter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(context_module, "load_policy", lambda: mandatory({"AllowLocalApi": False}))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["serve", "--port", "18397"]) == 1
    assert "does not allow Bastion's local API (AllowLocalApi)" in err.getvalue()
    assert STARTER_ID not in err.getvalue()  # it stopped before loading anything
