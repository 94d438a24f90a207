"""A real local API server: aiohttp on 127.0.0.1 at a free port, on the test's own
asyncio loop, answering from the real starter model through the real guardrails. The
clients are real too: the `openai` package and httpx."""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from bastion_desktop.api.server import ApiServer
from bastion_desktop.api.service import ApiService
from bastion_desktop.api.tokens import ApiTokens
from bastion_desktop.context import AppContext
from bastion_desktop.core.models import ChatModelSlot
from bastion_desktop.core.policy import EffectivePolicy
from bastion_desktop.core.policy.merge import merge_sources
from bastion_desktop.core.policy.sources import Level, PolicySource


def mandatory(values: dict[str, Any]) -> EffectivePolicy:
    source = PolicySource("/etc/bastion/policies/managed/a.json", Level.MACHINE_MANDATORY, values)
    built = merge_sources([source])
    assert built.errors == ()
    return built


@dataclass
class Api:
    context: AppContext
    server: ApiServer
    slot: ChatModelSlot
    tokens: ApiTokens
    token: str
    clients: list[AsyncOpenAI | httpx.AsyncClient] = dataclasses.field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def openai(self, token: str | None = None) -> AsyncOpenAI:
        """The `openai` package's client, as a user would set it up (no retries, so a
        refusal is seen as it is); closed with the server."""
        client = AsyncOpenAI(
            base_url=self.server.url, api_key=token or self.token, max_retries=0, timeout=120
        )
        self.clients.append(client)
        return client

    def http(self) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=self.base, timeout=120)
        self.clients.append(client)
        return client

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}


@pytest.fixture
def api_context(home_with_starter: Path) -> AppContext:
    context = AppContext.start()
    context.ensure_starter()
    return context


@pytest.fixture
async def api(api_context: AppContext) -> AsyncIterator[Api]:
    async with serving(api_context) as running:
        yield running


class serving:
    """A server for `context` (with its policy), a token named "tests", and on exit
    everything stopped: the server, the model host, the judges."""

    def __init__(self, context: AppContext, **options: Any) -> None:
        self.context = context
        self.options = options

    async def __aenter__(self) -> Api:
        context = self.context
        tokens = ApiTokens(context.api_tokens_file)
        token = tokens.create("tests")
        self.slot = ChatModelSlot(context.load_options())
        service = ApiService(context, self.slot)
        self.server = ApiServer(service, tokens, origins=context.api_origins, **self.options)
        await self.server.start(0)
        self.api = Api(context, self.server, self.slot, tokens, token)
        return self.api

    async def __aexit__(self, *exc: object) -> None:
        for client in self.api.clients:
            await (client.aclose() if isinstance(client, httpx.AsyncClient) else client.close())
        self.api.tokens.revoke("tests")
        await self.server.close()
        await self.slot.close()
        await self.context.close_guard_models()


def with_policy(context: AppContext, values: dict[str, Any]) -> AppContext:
    return dataclasses.replace(context, policy=mandatory(values))


def install_profile(context: AppContext, profile_id: str, config: str) -> None:
    """A user profile in the library (as `bastion profiles import` leaves it)."""
    folder = context.profiles_dir / profile_id
    folder.mkdir(parents=True)
    manifest = f"""\
        id: {profile_id}
        name: {profile_id.title()}
        version: "1.0"
        description: A profile written by a test.
        strictness: standard
        """
    (folder / "profile.yml").write_text(textwrap.dedent(manifest), encoding="utf-8")
    (folder / "config.yml").write_text(textwrap.dedent(config), encoding="utf-8")
