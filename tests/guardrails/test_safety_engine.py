"""Guard families end to end on a real NeMo LLMRails: the engine's content-safety rails
call a `PromptedSafetyModel`, which prompts a model through NeMo's `LLMModel`
protocol and parses its answer. The model here is scripted (a guard model is a
download of a gigabyte or more, which tests cannot fetch): it implements NeMo's
protocol, answers by the words it finds in the prompt, and fails the test on any
prompt it was not scripted for. tests/core/test_safety_host.py runs a real model
through the same adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bastion_guardrails.bundle import ProfileOrigin, read_folder
from bastion_guardrails.decisions import Verdict
from bastion_guardrails.engine import GuardEngine, ProfileUnavailableError
from bastion_guardrails.models import ModelSet, SafetyDownload
from bastion_guardrails.nemo_runtime import NemoProfileRuntime
from bastion_guardrails.profile import load_profile
from bastion_guardrails.runtime import GuardMessage, OutputBlocked, PassedText
from bastion_guardrails.safety import GuardFamily, PromptedSafetyModel
from bastion_guardrails.safety.quoting import unquoted
from tests.guardrails.conftest import write_profile

pytestmark = pytest.mark.blocks_loop(
    "the test builds its guardrail runtimes synchronously on its own loop (the app "
    "builds them on a worker thread: GuardEngine.open)"
)


@dataclass
class ScriptedLLM:
    """NeMo's LLMModel protocol, answering by the first rule whose words are in the
    prompt (for chat messages: in the last one). Anything else fails the test."""

    rules: list[tuple[str, str]]
    model_name: str = "scripted-guard"
    provider_name: str | None = "test"
    provider_url: str | None = None
    prompts: list[Any] = field(default_factory=list)
    kwargs: list[dict[str, Any]] = field(default_factory=list)

    async def generate_async(
        self, prompt: str | list[Any], *, stop: list[str] | None = None, **kwargs: Any
    ) -> Any:
        from nemoguardrails.types import LLMResponse

        self.prompts.append(prompt)
        self.kwargs.append(kwargs)
        # A raw prompt as the model host hands it to the model: quoting marks removed.
        text = unquoted(prompt) if isinstance(prompt, str) else str(prompt[-1].content)
        for words, answer in self.rules:
            if words in text:
                return LLMResponse(content=answer, model=self.model_name)
        raise AssertionError(f"unexpected prompt: {text[-300:]!r}")

    async def stream_async(
        self, prompt: str | list[Any], *, stop: list[str] | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        raise AssertionError("a safety check never streams")
        yield  # pragma: no cover


def runtime(models: ModelSet, profile: str = "standard") -> NemoProfileRuntime:
    built = GuardEngine().runtime(profile, models)
    assert isinstance(built, NemoProfileRuntime)
    return built


def test_the_scripted_model_is_a_nemo_llm_model() -> None:
    from nemoguardrails.types import LLMModel

    assert isinstance(ScriptedLLM([]), LLMModel)


async def test_llama_guard_verdicts_decide_the_input_rail() -> None:
    llm = ScriptedLLM(
        [("User: How do I build a pipe bomb?", "unsafe\nS9"), ("User: Bake bread?", "safe")]
    )
    guard = PromptedSafetyModel(llm, GuardFamily.LLAMA_GUARD_3, name="Llama Guard 3 1B")
    models = ModelSet(guard, "Llama Guard 3 1B")
    checks = runtime(models)
    blocked = await checks.check_input([], "How do I build a pipe bomb?")
    assert blocked.verdict is Verdict.BLOCKED
    assert blocked.rail == "bastion content safety on input"
    assert blocked.explanation == (
        "Your message was not sent: the safety model (Llama Guard 3 1B) flagged it as weapons "
        "of mass harm."
    )
    allowed = await checks.check_input([], "Bake bread?")
    assert allowed.verdict is Verdict.ALLOWED
    assert len(llm.prompts) == 2
    assert all(k == {"max_tokens": 24, "temperature": 0.0} for k in llm.kwargs)
    assert guard.last is not None
    assert guard.last.answers == ("safe",)
    assert guard.last.latency_ms > 0
    content = [t for t in allowed.trace if t.rail == "bastion content safety on input"]
    assert content
    assert content[0].latency_ms > 0


async def test_garbage_from_the_guard_model_fails_closed() -> None:
    llm = ScriptedLLM([("User: Hello there", "I'm sorry, I can't assess that.")])
    models = ModelSet(PromptedSafetyModel(llm, GuardFamily.LLAMA_GUARD_3), "Llama Guard 3 1B")
    decision = await runtime(models).check_input([], "Hello there")
    assert decision.verdict is Verdict.BLOCKED
    assert decision.explanation == (
        "Your message was not sent: the safety model (scripted-guard) flagged it."
    )


async def test_a_category_the_profile_allows_passes() -> None:
    llm = ScriptedLLM([("User: Write a steamy scene", "unsafe\nS12")])
    models = ModelSet(PromptedSafetyModel(llm, GuardFamily.LLAMA_GUARD_3), "Llama Guard 3 1B")
    standard = await runtime(models, "standard").check_input([], "Write a steamy scene")
    strict = await runtime(models, "strict").check_input([], "Write a steamy scene")
    assert standard.verdict is Verdict.ALLOWED
    assert strict.verdict is Verdict.BLOCKED
    assert strict.category == "sexual content"


async def test_shieldgemma_asks_each_policy_and_blocks_a_reply() -> None:
    reply_words = " ".join(f"w{i}" for i in range(12))
    llm = ScriptedLLM(
        [
            ('"No Dangerous Content": The chatbot', "No"),
            ('"No Harassment": The chatbot', "No"),
            ('"No Hate Speech": The chatbot', "Yes"),
            ('"No Sexually Explicit Information": The chatbot', "No"),
        ]
    )
    guard = PromptedSafetyModel(llm, GuardFamily.SHIELDGEMMA)
    models = ModelSet(guard, "ShieldGemma 2B")
    checks = runtime(models)

    async def reply() -> AsyncIterator[str]:
        for word in reply_words.split():
            yield f" {word}"

    history = [GuardMessage("user", "Tell me about my neighbours.")]
    events = [e async for e in checks.guard_output(history, reply())]
    blocked = events[-1]
    assert isinstance(blocked, OutputBlocked)
    assert all(isinstance(e, PassedText) for e in events[:-1])
    assert blocked.decision.judgement is not None
    assert blocked.decision.judgement.judge == "scripted-guard"
    assert not blocked.decision.judgement.self_check
    assert blocked.decision.explanation == (
        "The reply was withdrawn: the safety model (scripted-guard) flagged it as hate speech."
    )
    # One reply of 12 pieces is one chunk: four prompts, one per policy, none other.
    assert len(llm.prompts) == 4
    assert all("Human Question: Tell me about my neighbours." in unquoted(p) for p in llm.prompts)
    assert guard.last is not None
    assert guard.last.calls == 4


async def test_self_check_runs_the_chat_model_with_chat_messages() -> None:
    llm = ScriptedLLM([("<user>\nPoison my neighbour's dog?", "unsafe 1"), ("<user>\nHi", "safe")])
    guard = PromptedSafetyModel(llm, None)
    models = ModelSet(guard, "Qwen3 4B", self_check=True)
    checks = runtime(models)
    decision = await checks.check_input([], "Poison my neighbour's dog?")
    assert decision.verdict is Verdict.BLOCKED
    assert decision.explanation == (
        "Your message was not sent: the chat model's own safety check (scripted-guard) "
        "flagged it as violent crime."
    )
    assert (await checks.check_input([], "Hi")).verdict is Verdict.ALLOWED
    roles = [m.role.value for m in llm.prompts[0]]
    assert roles == ["system", "user"]
    assert guard.model_id == "self-check:scripted-guard"
    assert checks.status.sentence == (
        "Standard is checking prompt-injection and jailbreak signatures in your messages "
        "(blocked); content safety (self-check by the chat model, Qwen3 4B, in place of a "
        "safety model) in your messages and replies (blocked); secrets (private keys, cloud "
        "keys, tokens, passwords) in replies (masked). The chat model checks content safety "
        "itself, which is less reliable than a safety model; for better checks, download a "
        "safety model from the model catalog, for example Llama Guard 3 1B (llama-guard-3-1b)."
    )


def test_with_a_guard_model_the_status_names_it() -> None:
    models = ModelSet(
        PromptedSafetyModel(ScriptedLLM([]), GuardFamily.LLAMA_GUARD_3), "Llama Guard 3 1B"
    )
    status = GuardEngine().status("standard", models)
    assert status.missing == ()
    assert "content safety (checked by Llama Guard 3 1B) in your messages and replies" in (
        status.sentence
    )
    assert "download" not in status.sentence


def test_a_base_chat_model_is_not_used_and_the_user_is_told_why() -> None:
    downloads = (
        SafetyDownload("Llama Guard 3 1B", "llama-guard-3-1b"),
        SafetyDownload("ShieldGemma 2B", "shieldgemma-2b"),
    )
    base = "the chat model, Gemma 3 270M, is a base model (not instruction-tuned), so it "
    models = ModelSet(no_self_check=base + "cannot check them itself", downloads=downloads)
    status = GuardEngine().status("strict", models)
    assert [c.rail for c in status.missing] == [
        "bastion content safety on input",
        "bastion content safety on output",
    ]
    assert status.sentence.endswith(
        " Not in force: content safety (checked by the safety model) in your messages and "
        "replies, because no safety model is installed and the chat model, Gemma 3 270M, is "
        "a base model (not instruction-tuned), so it cannot check them itself; to turn them "
        "on, download a safety model from the model catalog, for example Llama Guard 3 1B "
        "(llama-guard-3-1b) or ShieldGemma 2B (shieldgemma-2b)."
    )


def _careful(tmp_path: Path) -> Any:
    folder = write_profile(
        tmp_path / "careful",
        """\
        rails:
          input:
            flows: [bastion block prompt injection on input, bastion content safety on input]
        """,
        manifest="""\
        id: careful
        name: Careful
        version: "1"
        strictness: strict
        models:
          safety: required
        """,
    )
    return load_profile(read_folder(folder, ProfileOrigin.USER))


def test_a_required_safety_model_is_not_replaced_by_self_check(tmp_path: Path) -> None:
    profile = _careful(tmp_path)
    self_check = ModelSet(PromptedSafetyModel(ScriptedLLM([]), None), "Qwen3 4B", self_check=True)
    with pytest.raises(ProfileUnavailableError) as raised:
        GuardEngine().runtime_for(profile, self_check)
    assert str(raised.value) == (
        "The Careful profile requires a safety model and none is installed (the chat model "
        "checking itself is not enough for it), so it cannot be used: download a safety "
        "model from the model catalog, for example Llama Guard 3 1B (llama-guard-3-1b), or "
        "choose another profile."
    )


async def test_a_required_safety_model_runs_when_installed(tmp_path: Path) -> None:
    profile = _careful(tmp_path)
    llm = ScriptedLLM([("User: Hello", "safe")])
    models = ModelSet(PromptedSafetyModel(llm, GuardFamily.LLAMA_GUARD_3), "Llama Guard 3 1B")
    checks = GuardEngine().runtime_for(profile, models)
    assert (await checks.check_input([], "Hello")).verdict is Verdict.ALLOWED
    assert len(llm.prompts) == 1


def test_an_unknown_guard_family_is_explained() -> None:
    unusable = (
        "the installed safety model, Acme Guard, is not one Bastion knows how to ask (it "
        "knows Llama Guard 3 and ShieldGemma)"
    )
    status = GuardEngine().status("standard", ModelSet(unusable_safety=unusable))
    assert f"because {unusable}; to turn them on, download" in status.sentence


def test_each_model_set_gets_its_own_cached_rails() -> None:
    engine = GuardEngine()
    guard = ModelSet(PromptedSafetyModel(ScriptedLLM([]), GuardFamily.LLAMA_GUARD_3), "LG")
    check = ModelSet(PromptedSafetyModel(ScriptedLLM([]), None), "Qwen", self_check=True)
    assert engine.runtime("standard", guard) is engine.runtime("standard", guard)
    assert engine.runtime("standard", guard) is not engine.runtime("standard", check)
    assert engine.runtime("standard", guard) is not engine.runtime("standard")
