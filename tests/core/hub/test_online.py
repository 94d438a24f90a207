"""Offline by default: the Hub is reachable only inside `hub_online()`, and only from
the context that entered it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bastion_desktop.core.hub.online import hub_endpoint, hub_online, is_online_here
from tests.core.hub.hub_emulator import HubEmulator


def list_models(endpoint: str) -> list[str]:
    from huggingface_hub import HfApi

    return [m.id for m in HfApi(endpoint=endpoint).list_models(search="tiny", limit=5)]


def test_the_process_is_offline_outside_an_explicit_call(hub: HubEmulator) -> None:
    from huggingface_hub.errors import OfflineModeIsEnabled

    hub.add_repo("tester/tiny-GGUF", {"a.gguf": b"GGUF"})
    with pytest.raises(OfflineModeIsEnabled):
        list_models(hub.url)
    assert hub.requests == [], "nothing reached the server"


def test_an_explicit_call_goes_online_for_itself_only(hub: HubEmulator) -> None:
    from huggingface_hub.errors import OfflineModeIsEnabled

    hub.add_repo("tester/tiny-GGUF", {"a.gguf": b"GGUF"})
    other_thread: list[BaseException | list[str]] = []

    def meanwhile() -> None:
        try:
            other_thread.append(list_models(hub.url))
        except BaseException as error:
            other_thread.append(error)

    with hub_online() as endpoint:
        assert endpoint == hub.url == hub_endpoint()
        assert is_online_here()
        assert list_models(endpoint) == ["tester/tiny-GGUF"]
        thread = threading.Thread(target=meanwhile)
        thread.start()
        thread.join(10)
    assert isinstance(other_thread[0], OfflineModeIsEnabled), "another thread stayed offline"
    assert not is_online_here()
    with pytest.raises(OfflineModeIsEnabled):
        list_models(hub.url)


def test_the_endpoint_is_read_on_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/")
    assert hub_endpoint() == "http://127.0.0.1:9"
    monkeypatch.delenv("HF_ENDPOINT")
    assert hub_endpoint() == "https://huggingface.co"


async def test_the_byte_transfer_refuses_to_run_outside_an_explicit_call(
    hub: HubEmulator, tmp_path: Path
) -> None:
    from bastion_desktop.core.hub.errors import HubError
    from bastion_desktop.core.hub.transfer import (
        ByteCount,
        FileRequest,
        TransferSettings,
        fetch_to_partial,
    )

    hub.add_repo("tester/tiny-GGUF", {"a.gguf": b"GGUF"})
    request = FileRequest(f"{hub.url}/tester/tiny-GGUF/resolve/main/a.gguf", {}, 4, "t", "a.gguf")
    with pytest.raises(HubError, match="working offline"):
        await fetch_to_partial(
            request, tmp_path / "a.part", settings=TransferSettings(), count=ByteCount(),
            on_retry=lambda notice: None,
        )  # fmt: skip
    assert hub.requests == []
