"""The administrator's OfflineMode closes the Hub's door itself: once AppContext.start
hands the policy to `hub_online()`, every caller (search, a file listing, a download,
any thread) is refused with the policy's sentence before a request is made, whatever
the window or command forgot to check."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from bastion_desktop import context as context_module
from bastion_desktop.context import AppContext
from bastion_desktop.core.hub.downloads import DownloadManager
from bastion_desktop.core.hub.online import hub_online, set_network_policy
from bastion_desktop.core.hub.search import list_repo_gguf_files, search_gguf_repos
from bastion_desktop.core.installed_models import ModelRegistry
from bastion_desktop.core.policy import EffectivePolicy, PolicyRefusedError, loading
from bastion_desktop.core.policy.merge import merge_sources
from bastion_desktop.core.policy.sources import Level, PolicySource
from tests.core.hub.hub_emulator import HubEmulator

REPO = "tester/Tiny-GGUF"
OFFLINE = (
    "Your organization has turned on offline mode: Bastion does not use the network, so "
    "the Hub cannot be searched or downloaded from."
)


def policy(values: dict[str, object]) -> EffectivePolicy:
    source = PolicySource("/etc/bastion/policies/managed/a.json", Level.MACHINE_MANDATORY, values)
    return merge_sources([source])


class FixedReader:
    def __init__(self, sources: Sequence[PolicySource]) -> None:
        self.sources = list(sources)

    def read(self) -> Sequence[PolicySource]:
        return self.sources


def test_offline_mode_refuses_every_hub_call_before_a_request(
    hub: HubEmulator, tiny_gguf: Path, tmp_path: Path
) -> None:
    hub.add_repo(REPO, {tiny_gguf.name: tiny_gguf})
    set_network_policy(policy({"OfflineMode": True}))
    with pytest.raises(PolicyRefusedError) as refused, hub_online():
        pass
    assert str(refused.value) == OFFLINE
    with pytest.raises(PolicyRefusedError, match=re.escape(OFFLINE)):
        search_gguf_repos("tiny")
    with pytest.raises(PolicyRefusedError, match=re.escape(OFFLINE)):
        list_repo_gguf_files(REPO)
    # Another thread, as the windows' workers are: the switch is process-wide.
    from_thread: list[BaseException] = []

    def elsewhere() -> None:
        try:
            search_gguf_repos("tiny")
        except BaseException as error:
            from_thread.append(error)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join(20)
    assert [str(e) for e in from_thread] == [OFFLINE]

    async def download() -> None:
        manager = DownloadManager(ModelRegistry(tmp_path / "models.json"), tmp_path / "models")
        try:
            await manager.plan(REPO, tiny_gguf.name)
        finally:
            await manager.close()

    with pytest.raises(PolicyRefusedError, match=re.escape(OFFLINE)):
        asyncio.run(download())
    assert hub.requests == [], "nothing reached the Hub"

    # The same calls go through when the policy allows the network (the door is real).
    set_network_policy(policy({}))
    assert [r.id for r in search_gguf_repos("tiny")] == [REPO]
    set_network_policy(None)
    assert [c.first.path for c in list_repo_gguf_files(REPO).choices] == [tiny_gguf.name]


def test_app_context_start_hands_the_policy_to_the_door(
    hub: HubEmulator, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_repo(REPO, {tiny_gguf.name: tiny_gguf})
    monkeypatch.setattr(context_module, "configure_logging", lambda _path: None)
    source = PolicySource("/etc/bastion/policies/managed/a.json", Level.MACHINE_MANDATORY,
                          {"OfflineMode": True})  # fmt: skip
    monkeypatch.setattr(loading, "system_readers", lambda: [FixedReader([source])])
    AppContext.start()
    with pytest.raises(PolicyRefusedError, match=re.escape(OFFLINE)):
        search_gguf_repos("tiny")
    assert hub.requests == []
    # A later start under a policy that allows the network opens it again.
    monkeypatch.setattr(loading, "system_readers", lambda: [FixedReader([])])
    AppContext.start()
    assert [r.id for r in search_gguf_repos("tiny")] == [REPO]
