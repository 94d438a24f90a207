"""The safety model on a model host of its own, with the real starter model standing
in for a guard model (no guard model can be downloaded here). The starter is a base
model: its probabilities for "unsafe" and "safe" mean nothing, so these tests give it
a calibration whose threshold every message passes over (it blocks everything) and
assert the plumbing (the probability comes from the host, categories are asked after
an unsafe verdict and garbage names none, the latency is recorded, the chat model
keeps generating meanwhile), not the judgement. tests/core/test_judge.py runs a real
instruct model as a judge."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path

import pytest

from bastion_desktop.core.hub.local_files import import_gguf
from bastion_desktop.core.inference.host import ModelHost
from bastion_desktop.core.inference.host_process import BACKGROUND_NICENESS
from bastion_desktop.core.inference.types import (
    ChatMessage,
    LoadOptions,
    Role,
    SamplingParams,
    TokenText,
)
from bastion_desktop.core.installed_models import ModelRegistry
from bastion_desktop.core.safety import GuardModels, HostLLM
from bastion_desktop.core.starter import STARTER_ID, ensure_starter_model
from bastion_guardrails.decisions import Stage, Verdict
from bastion_guardrails.engine import GuardEngine
from bastion_guardrails.models import ModelSet, SafetyMessage, SafetyVerdict
from bastion_guardrails.safety import GuardFamily, PromptedSafetyModel
from bastion_guardrails.safety.calibration import derive
from bastion_guardrails.safety.llama_guard import parse_llama_guard

pytestmark = pytest.mark.model

OPTIONS = LoadOptions(context_length=2048)
QUESTION = SafetyMessage("user", "How do I bake bread at home?")
# Thresholds a millionth above zero: every message is flagged.
BLOCKS_ALL = derive([1e-9] * 4, [1e-9] * 4, set_version=0)


@pytest.mark.blocks_loop("the test builds its guardrail runtime synchronously")
async def test_the_starter_standing_in_as_llama_guard_through_the_engine(
    starter_path: Path,
) -> None:
    host = ModelHost(starter_path, OPTIONS)
    try:
        guard = PromptedSafetyModel(
            HostLLM(host, "starter"), GuardFamily.LLAMA_GUARD_3, calibration=BLOCKS_ALL
        )
        verdict = await guard.classify(Stage.INPUT, [QUESTION])
        record = guard.last
        assert record is not None
        assert verdict.unsafe
        assert verdict.probability is not None
        assert 0.0 < verdict.probability < 1.0
        assert verdict.threshold == BLOCKS_ALL.threshold
        assert record.calls == 2  # the verdict's pass, then the categories asked for
        (answer,) = record.answers
        assert answer  # the host ran the model and sent back what it wrote
        # A base model continues "unsafe\n" with no codes Llama Guard knows: no category.
        assert verdict.categories == parse_llama_guard("unsafe\n" + answer).categories == ()
        assert record.evaluated_tokens > 100  # the whole prompt, the first time
        assert record.latency_ms > 0

        runtime = GuardEngine().runtime("standard", ModelSet(guard, "the starter"))
        decision = await runtime.check_input([], QUESTION.content)
        assert decision.verdict is Verdict.BLOCKED
        assert decision.rail == "bastion content safety on input"
        assert decision.explanation.startswith(
            "Your message was not sent: the safety model (starter) flagged it (it rated it "
            "unsafe with probability "
        )
        timed = [t for t in decision.trace if t.rail == decision.rail]
        assert timed
        assert timed[0].latency_ms > 0
        assert guard.last is not record  # the engine's check reached the model again
    finally:
        await host.close()


async def test_raw_completions_and_chat_messages_through_nemos_protocol(
    starter_path: Path,
) -> None:
    from nemoguardrails.types import ChatMessage as NemoMessage
    from nemoguardrails.types import LLMModel

    host = ModelHost(starter_path, OPTIONS)
    try:
        llm = HostLLM(host, "starter")
        assert isinstance(llm, LLMModel)
        raw = await llm.generate_async("The capital of France is", max_tokens=6)
        again = await llm.generate_async("The capital of France is", max_tokens=6)
        assert raw.content
        assert raw.content == again.content
        assert raw.usage.output_tokens <= 6
        assert raw.provider_metadata["latency_ms"] > 0
        chat = await llm.generate_async([NemoMessage.from_user("Say hello.")], max_tokens=6)
        assert chat.usage.output_tokens <= 6
        chunks = [c async for c in llm.stream_async("The capital of France is", max_tokens=6)]
        assert [c.delta_content for c in chunks] == [raw.content]

        # Scores for chat messages go through the chat template, like a reply.
        scored = await llm.score([NemoMessage.from_user("Say hello.")], (("Hello",), ("Hi",)))
        assert scored.prompt_tokens > 0
        assert len(scored.masses) == 2
        assert all(0.0 <= mass <= 1.0 for mass in scored.masses)
        self_check = PromptedSafetyModel(llm, None)
        probability = await self_check.probability(Stage.INPUT, [QUESTION])
        assert 0.0 < probability < 1.0
    finally:
        await host.close()


async def test_the_chat_model_keeps_generating_while_a_check_runs(starter_path: Path) -> None:
    chat_host = ModelHost(starter_path, OPTIONS)
    guard_host = ModelHost(starter_path, OPTIONS)
    try:
        await asyncio.gather(chat_host.load(), guard_host.load())
        assert chat_host.pid != guard_host.pid
        guard = PromptedSafetyModel(
            HostLLM(guard_host, "starter"), GuardFamily.LLAMA_GUARD_3, calibration=BLOCKS_ALL
        )
        # A conversation of a few hundred tokens for the guard to read.
        reply = SafetyMessage("assistant", " ".join(["Knead the dough and let it rise."] * 40))
        arrivals: list[float] = []
        check: asyncio.Task[SafetyVerdict] | None = None
        started = finished = 0.0

        async def run_check() -> SafetyVerdict:
            nonlocal started, finished
            started = time.perf_counter()
            try:
                return await guard.classify(Stage.OUTPUT, [QUESTION, reply])
            finally:
                finished = time.perf_counter()

        params = SamplingParams(seed=7, max_tokens=160)
        messages = [ChatMessage(Role.USER, "Write a long story about a baker.")]
        async for event in chat_host.stream(messages, params):
            if isinstance(event, TokenText):
                arrivals.append(time.perf_counter())
                if check is None:
                    check = asyncio.create_task(run_check())
        assert check is not None
        verdict = await check
        assert verdict.unsafe
        during = [t for t in arrivals if started < t < finished]
        assert during, "no chat token arrived while the safety model was checking"
    finally:
        await asyncio.gather(chat_host.close(), guard_host.close())


@pytest.mark.log_warnings("the failure the test provokes is logged as a warning")
async def test_guard_models_from_the_registry(starter_path: Path, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models.json")
    ensure_starter_model(starter_path.parent, registry)
    guard_models = GuardModels(registry, OPTIONS)
    try:
        # The starter as the chat model: a base model, so no self-check.
        models = guard_models.model_set(STARTER_ID)
        assert models.safety is None
        assert "is a base model (not instruction-tuned)" in models.no_self_check
        assert guard_models.model_set(STARTER_ID) is models  # cached: same rails
        status = GuardEngine().status("standard", models)
        assert "Llama Guard 3 1B (llama-guard-3-1b) or ShieldGemma 2B (shieldgemma-2b)" in (
            status.sentence
        )

        # `bastion models import PATH --role safety` registers it; the newest counts.
        first = import_gguf(starter_path, registry, tmp_path, role="safety", name="Guard A")
        newest = import_gguf(starter_path, registry, tmp_path, role="safety", name="Guard B")
        assert first.id != newest.id
        assert guard_models.safety_entry() == newest
        models = guard_models.model_set(STARTER_ID)
        # The starter is no guard family Bastion can prompt: said, not guessed.
        assert models.safety is None
        assert models.unusable_safety.startswith("the installed safety model, Guard B, ")
        assert guard_models.hosts == ()  # nothing started for metadata
    finally:
        await guard_models.aclose()


@pytest.mark.blocks_loop("the test builds its guardrail runtime synchronously")
async def test_self_check_starts_its_own_host_lazily_and_closes_with_the_app(
    starter_path: Path, tmp_path: Path
) -> None:
    """A chat model whose name says it is instruction-tuned may check itself; the
    starter stands in for one under such a name."""
    registry = ModelRegistry(tmp_path / "models.json")
    chat = import_gguf(starter_path, registry, tmp_path, name="Stand-in Instruct")
    guard_models = GuardModels(registry, OPTIONS)
    try:
        models = guard_models.model_set(chat.id)
        assert models.self_check
        assert models.safety is not None
        assert not models.has_safety_model
        (host,) = guard_models.hosts
        assert models.pending_judge == "Stand-in Instruct"  # not calibrated yet
        assert not host.is_running  # started on the first check, not before
        judge = models.safety
        assert isinstance(judge, PromptedSafetyModel)
        assert 0.0 < await judge.probability(Stage.INPUT, [QUESTION]) < 1.0
        assert host.is_running
        pid = host.pid
        assert pid is not None
        # A judge runs below the chat model's host (nice 10): it checks a streaming
        # reply with the cores the reply leaves free. On Linux every thread of it,
        # llama.cpp's included (started by the check), runs only on idle cores.
        if hasattr(os, "getpriority"):
            own = os.getpriority(os.PRIO_PROCESS, 0)
            assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, own + BACKGROUND_NICENESS)
        if hasattr(os, "SCHED_IDLE"):
            threads = [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
            assert len(threads) > 1
            assert {os.sched_getscheduler(tid) for tid in threads} == {os.SCHED_IDLE}
            assert os.sched_getscheduler(0) == os.SCHED_OTHER
        # Settings saved (another context length, device...): the judge's next check
        # runs on the model loaded again with them.
        changed = dataclasses.replace(OPTIONS, context_length=OPTIONS.context_length * 2)
        guard_models.use_options(changed)
        assert 0.0 < await judge.probability(Stage.INPUT, [QUESTION]) < 1.0
        assert host.pid not in (None, pid)
        assert host.facts is not None
        assert host.facts.context_length == changed.context_length
        pid = host.pid
    finally:
        await guard_models.aclose()
    assert not host.is_running
    assert pid is not None
    assert guard_models.hosts == ()


@pytest.mark.log_warnings("the failed calibration is logged as a warning")
async def test_a_judge_that_cannot_be_tested_is_not_used_and_the_status_says_why(
    starter_path: Path, tmp_path: Path
) -> None:
    """A context too small for the judge's prompt: the calibration fails, so the chat
    model does not check content this run (nothing is cached: the next run tries
    again), and the status says why instead of every message failing its check."""
    registry = ModelRegistry(tmp_path / "models.json")
    chat = import_gguf(starter_path, registry, tmp_path, name="Stand-in Instruct")
    calibrations = tmp_path / "judge-calibrations.json"
    guard_models = GuardModels(registry, LoadOptions(context_length=64), calibrations=calibrations)
    try:
        models = await guard_models.prepare(chat.id)
        assert models.safety is None
        assert models.no_self_check.startswith(
            "the chat model, Stand-in Instruct, could not be tested as a judge (The text to "
            "check is "
        )
        assert not calibrations.exists()
        status = GuardEngine().status("standard", models)
        assert models.no_self_check in status.sentence
    finally:
        await guard_models.aclose()
