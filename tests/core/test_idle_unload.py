"""Models left unused are unloaded, their memory given back, and load again on the next
request: the real starter in its host, and the app's chat model with a judge beside it.

The clock is passed in (`now`, a monotonic reading 31 minutes on), so no test waits
half an hour, and none depends on how fast this machine is."""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import time
from pathlib import Path

import pytest

from bastion_desktop.context import AppContext
from bastion_desktop.core.hub.local_files import import_gguf
from bastion_desktop.core.inference.host import ModelHost
from bastion_desktop.core.inference.types import (
    ChatMessage,
    GenerationFinished,
    LoadOptions,
    Role,
    SamplingParams,
    TokenText,
)
from bastion_desktop.core.models import ChatModelSlot, keep_unloading_idle, unload_idle
from bastion_guardrails.decisions import Stage
from bastion_guardrails.models import SafetyMessage
from bastion_guardrails.safety import PromptedSafetyModel

pytestmark = pytest.mark.model

OPTIONS = LoadOptions(context_length=1024)
HELLO = [ChatMessage(Role.USER, "Tell me about lighthouses.")]
GREEDY = SamplingParams(temperature=0.0, max_tokens=8, seed=5)
HALF_AN_HOUR = 30 * 60


def later(seconds: float) -> float:
    return time.monotonic() + seconds


def running_children() -> set[int | None]:
    return {child.pid for child in multiprocessing.active_children()}


async def reply(host: ModelHost, params: SamplingParams = GREEDY) -> str:
    finished = None
    async for event in host.stream(HELLO, params):
        if isinstance(event, GenerationFinished):
            finished = event
    assert finished is not None
    return finished.text


async def test_an_idle_model_is_unloaded_and_the_next_request_loads_it_again(
    starter_path: Path,
) -> None:
    host = ModelHost(starter_path, OPTIONS)
    try:
        first = await reply(host)
        pid = host.pid
        assert pid in running_children()
        assert not await host.unload_if_idle(HALF_AN_HOUR), "it answered just now"
        assert not await host.unload_if_idle(HALF_AN_HOUR, later(HALF_AN_HOUR - 60))
        assert await host.unload_if_idle(HALF_AN_HOUR, later(HALF_AN_HOUR + 60))
        assert host.pid is None
        assert not host.is_loaded
        assert pid not in running_children(), "the process and its memory are gone"
        assert not await host.unload_if_idle(HALF_AN_HOUR, later(HALF_AN_HOUR + 60))
        # The next request loads the model again, and it answers as before.
        assert await reply(host) == first
        assert host.pid not in (None, pid)
    finally:
        await host.close()


async def test_a_model_at_work_is_never_unloaded(starter_path: Path) -> None:
    host = ModelHost(starter_path, OPTIONS)
    try:
        await host.load()
        stream = host.stream(HELLO, dataclasses.replace(GREEDY, max_tokens=24))
        async for event in stream:
            if isinstance(event, TokenText):
                break
        assert not await host.unload_if_idle(1, later(3600)), "a reply under way is work"
        rest = [event async for event in stream]
        assert isinstance(rest[-1], GenerationFinished)
        assert host.is_loaded
        assert await host.unload_if_idle(1, later(3600)), "done: idle from now on"
    finally:
        await host.close()


async def test_a_request_or_a_close_during_an_unload_waits_for_the_old_process_to_go(
    starter_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never two processes of one model: a new one starts once the old has ended."""
    host = ModelHost(starter_path, OPTIONS)
    old_alive_at_start: list[bool] = []
    start = host._start

    async def starting(options: LoadOptions) -> object:
        old_alive_at_start.append(old in running_children())
        return await start(options)

    try:
        first = await reply(host)
        old = host.pid
        monkeypatch.setattr(host, "_start", starting)
        unloading = asyncio.ensure_future(host.unload_if_idle(1, later(3600)))
        await asyncio.sleep(0)  # the unload has begun: it holds the process, stopping it
        assert host.pid is None
        assert await reply(host) == first
        assert old_alive_at_start == [False]
        assert unloading.done()
        assert unloading.result()

        old = host.pid
        unloading = asyncio.ensure_future(host.unload_if_idle(1, later(3600)))
        await asyncio.sleep(0)
        await host.close()  # as the app closing does, its unloader cancelled
        assert old not in running_children()
        assert await unloading
    finally:
        await host.close()


async def test_zero_keeps_models_loaded_and_a_model_never_loaded_is_left_alone(
    starter_path: Path,
) -> None:
    loaded, never = ModelHost(starter_path, OPTIONS), ModelHost(starter_path, OPTIONS)
    try:
        await loaded.load()
        assert await unload_idle([loaded, never], 0, later(10**6)) == []
        assert loaded.is_loaded
        assert await unload_idle([loaded, never], 60, later(61)) == [loaded]
        assert not loaded.is_running
    finally:
        await loaded.close()


async def test_the_unloader_looks_again_and_again_until_it_is_cancelled(
    starter_path: Path,
) -> None:
    host = ModelHost(starter_path, OPTIONS)
    sweeps: list[int] = []
    unloaded = asyncio.Event()

    async def unload() -> None:
        sweeps.append(len(await unload_idle([host], 0.01)))
        if sweeps[-1]:
            unloaded.set()

    try:
        await host.load()
        unloading = asyncio.ensure_future(keep_unloading_idle(unload, every=0.02))
        await asyncio.wait_for(unloaded.wait(), 60)
        assert not host.is_running
        unloaded.clear()
        await host.load()  # loaded again: the unloader is still at work
        await asyncio.wait_for(unloaded.wait(), 60)
        assert not host.is_running
        unloading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await unloading
        assert sweeps.count(1) == 2
    finally:
        await host.close()


@pytest.mark.blocks_loop("AppContext.start reads the settings and the registry")
async def test_the_app_unloads_its_chat_model_and_its_judge_as_its_settings_say(
    home_with_starter: Path, starter_path: Path, tmp_path: Path
) -> None:
    """The starter stands in for an instruction-tuned chat model (by its name), so it
    checks itself: a judge's host of its own beside the chat model's."""
    context = AppContext.start()
    chat = import_gguf(starter_path, context.registry, tmp_path, name="Stand-in Instruct")
    slot = ChatModelSlot(OPTIONS)
    try:
        await slot.host_for(chat.path)
        judge = context.guard_models().model_set(chat.id).safety
        assert isinstance(judge, PromptedSafetyModel)
        question = [SafetyMessage("user", "How do I bake bread?")]
        await judge.probability(Stage.INPUT, question)
        (judge_host,) = context.guard_models().hosts
        assert context.settings.inference.unload_after_minutes == 30  # the default

        assert await context.unload_idle_models(slot, later(29 * 60)) == []
        keep = context.settings.model_copy(
            update={"inference": context.settings.inference.model_copy(
                update={"unload_after_minutes": 0}
            )}
        )  # fmt: skip
        kept = dataclasses.replace(context, settings=keep)
        assert await kept.unload_idle_models(slot, later(10**6)) == []

        unloaded = await context.unload_idle_models(slot, later(31 * 60))
        assert unloaded == [slot.host, judge_host]
        assert not judge_host.is_running
        assert slot.host is not None
        assert not slot.holds(chat.path), "the next reply loads it first"
        # Both load again when asked.
        assert 0.0 < await judge.probability(Stage.INPUT, question) < 1.0
        assert (await slot.host_for(chat.path)).is_loaded
    finally:
        await slot.close()
        await context.close_guard_models()
