"""A downloaded model is a model: the starter, downloaded from the emulator whole and
in split parts, is registered and then loads and answers through the model host."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bastion_desktop.core.hub.downloads import DownloadManager
from bastion_desktop.core.hub.transfer import TransferSettings
from bastion_desktop.core.inference.host import ModelHost
from bastion_desktop.core.inference.types import (
    ChatMessage,
    GenerationFinished,
    LoadOptions,
    Role,
    SamplingParams,
)
from bastion_desktop.core.installed_models import ModelRegistry
from bastion_desktop.core.starter import sha256_of
from tests.core.hub.gguf_files import split_gguf
from tests.core.hub.hub_emulator import HubEmulator

pytestmark = pytest.mark.model

STARTER_REPO = "unsloth/gemma-3-270m-GGUF"


async def answer(path: Path) -> GenerationFinished:
    host = ModelHost(path, LoadOptions(context_length=512))
    try:
        await host.load()
        last = None
        async for event in host.stream(
            [ChatMessage(Role.USER, "The capital of France is")],
            SamplingParams(max_tokens=4, seed=1),
        ):
            last = event
        assert isinstance(last, GenerationFinished)
        return last
    finally:
        await host.close()


@pytest.fixture
def downloads(registry: ModelRegistry, models_dir: Path, fast: TransferSettings) -> DownloadManager:
    return DownloadManager(registry, models_dir, settings=fast)


@pytest.mark.blocks_loop("the test writes and hashes model files synchronously")
async def test_the_downloaded_starter_is_registered_then_loads_and_answers(
    hub: HubEmulator, starter_path: Path, downloads: DownloadManager
) -> None:
    registry = downloads.registry
    hub.add_repo(STARTER_REPO, {starter_path.name: starter_path}, license="gemma")
    model = await downloads.download(STARTER_REPO, starter_path.name)
    assert model.sha256 == sha256_of(starter_path)
    assert registry.get(model.id) == model
    assert (model.architecture, model.quantization, model.context_length) == (
        "gemma3", "Q4_K_M", 32768,
    )  # fmt: skip
    assert model.license == "gemma"
    finished = await answer(model.path)
    assert finished.stats.generated_tokens > 0
    assert finished.text.strip()


@pytest.mark.blocks_loop("the test writes and hashes model files synchronously")
async def test_a_split_model_downloads_as_one_model_and_loads(
    hub: HubEmulator, starter_path: Path, downloads: DownloadManager, tmp_path: Path
) -> None:
    registry, models_dir = downloads.registry, downloads.models_dir
    source = tmp_path / "split-source"
    source.mkdir()
    parts = split_gguf(starter_path, source, parts=3)
    names = [p.name for p in parts]
    assert names[0].endswith("-00001-of-00003.gguf")
    hub.add_repo(STARTER_REPO, {f"Q4_K_M/{p.name}": p for p in parts})
    # Any part names the whole model.
    model = await downloads.download(STARTER_REPO, f"Q4_K_M/{names[1]}")
    assert [p.file for p in model.parts] == [f"Q4_K_M/{n}" for n in names]
    assert model.path == model.parts[0].path
    assert model.size == sum(p.stat().st_size for p in parts)
    for part, original in zip(model.parts, parts, strict=True):
        assert part.sha256 == hashlib.sha256(original.read_bytes()).hexdigest()
        assert part.path.parent == models_dir / "unsloth" / "gemma-3-270m-GGUF" / "Q4_K_M"
    assert len(registry.list()) == 1
    finished = await answer(model.path)
    assert finished.stats.generated_tokens > 0
