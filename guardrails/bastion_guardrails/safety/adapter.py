"""`PromptedSafetyModel`: a guard family's prompts and parser (or the self-check prompt)
over a model reached through NeMo Guardrails' `LLMModel` protocol
(`nemoguardrails.types.LLMModel`: `generate_async(prompt, *, stop, **kwargs)` returning
an `LLMResponse`, plus `stream_async`, `model_name`, `provider_name`, `provider_url`).

The desktop app implements that protocol over a model host of its own (a child process
apart from the chat model's), so a check never waits for, or disturbs, the reply being
generated; tests implement it with a scripted model. A raw prompt (a string) is sent
for guard models, which bring their own special tokens; chat messages (NeMo's
`ChatMessage`) for self-check, which goes through the chat model's chat template.

A model that can be scored (`ScoringLLM`: the desktop app's model host) gives its
verdict as a probability: one forward pass, the probability of the unsafe answer
against the safe one from the first answer token, compared with the threshold its
calibration set (`calibration`). Categories are asked for only after an unsafe
verdict. A model reached only through text is read by each family's parser instead,
decoding greedily (`temperature=0`) a few tokens: a verdict, not prose.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from bastion_guardrails.decisions import Stage
from bastion_guardrails.models import SafetyMessage, SafetyVerdict
from bastion_guardrails.safety import llama_guard, self_check, shieldgemma
from bastion_guardrails.safety.calibration import Calibration
from bastion_guardrails.safety.family import GuardFamily


class GuardLLM(Protocol):
    """The part of NeMo's `LLMModel` protocol a safety check uses."""

    @property
    def model_name(self) -> str: ...

    async def generate_async(
        self, prompt: str | list[Any], *, stop: list[str] | None = None, **kwargs: Any
    ) -> Any:
        """Returns a `nemoguardrails.types.LLMResponse` (its `content` is read)."""
        ...


@dataclass(frozen=True)
class AnswerScore:
    """What a scoring model returns: the next-token probability of each class of answer
    words, in the order asked, and how many prompt tokens it read anew."""

    masses: tuple[float, ...]
    prompt_tokens: int = 0
    evaluated_tokens: int = 0


class ScoringLLM(GuardLLM, Protocol):
    async def score(
        self, prompt: str | list[Any], answers: Sequence[Sequence[str]]
    ) -> AnswerScore: ...


class UncalibratedJudgeError(RuntimeError):
    """A scored verdict was asked of a judge that has not been calibrated."""


@dataclass(frozen=True)
class CheckRecord:
    """One classification: how long it took, how many model calls it made, what the
    model answered (a verdict such as "unsafe\\nS1": never the checked text) and the
    verdict read from it."""

    stage: Stage
    latency_ms: float
    calls: int
    answers: tuple[str, ...]
    verdict: SafetyVerdict
    evaluated_tokens: int = 0  # prompt tokens the judge read anew (scored checks)


def _content(response: Any) -> str:
    content = getattr(response, "content", None)
    return content if isinstance(content, str) else ""


class PromptedSafetyModel:
    """A `SafetyModel` for one guard family, or for self-check when `family` is None.

    A scoring `llm` needs a `calibration` (see `calibration.calibrate`, which calls
    `probability`) before `classify`; the app calibrates once per model file."""

    def __init__(
        self,
        llm: GuardLLM,
        family: GuardFamily | None,
        *,
        name: str = "",
        calibration: Calibration | None = None,
        on_check: Callable[[CheckRecord], None] | None = None,
    ) -> None:
        self.llm = llm
        self.family = family
        self._name = name or llm.model_name
        self.calibration = calibration
        self.last: CheckRecord | None = None
        self._on_check = on_check

    @property
    def name(self) -> str:
        return self._name

    @property
    def model_id(self) -> str:
        return f"{self.family.value if self.family else 'self-check'}:{self.llm.model_name}"

    @property
    def is_self_check(self) -> bool:
        return self.family is None

    @property
    def scored(self) -> bool:
        """Whether verdicts come from probabilities (the model can be scored)."""
        return callable(getattr(self.llm, "score", None))

    async def classify(
        self, stage: Stage, messages: Sequence[SafetyMessage], *, strict: bool = False
    ) -> SafetyVerdict:
        started = time.perf_counter()
        answers: list[str] = []
        if self.scored:
            if self.calibration is None:
                raise UncalibratedJudgeError(f"{self.name} has not been calibrated")
            threshold = self.calibration.threshold_for(strict=strict)
            verdict, calls, evaluated = await self._scored(stage, messages, threshold, answers)
        else:
            verdict = await self._read(stage, messages, answers)
            calls, evaluated = len(answers), 0
        record = CheckRecord(
            stage,
            (time.perf_counter() - started) * 1000.0,
            calls,
            tuple(answers),
            verdict,
            evaluated,
        )
        self.last = record
        if self._on_check is not None:
            self._on_check(record)
        return verdict

    async def probability(self, stage: Stage, messages: Sequence[SafetyMessage]) -> float:
        """The probability that the last message is unsafe (the highest over
        ShieldGemma's policies), from the first answer token; for calibration."""
        probabilities, _evaluated = await self._probabilities(stage, messages)
        return max(p for _category, p in probabilities)

    async def _probabilities(
        self, stage: Stage, messages: Sequence[SafetyMessage]
    ) -> tuple[list[tuple[str | None, float]], int]:
        """(category or None, probability of unsafe) per question asked, and the prompt
        tokens the model read anew."""
        llm = cast(ScoringLLM, self.llm)
        asked: list[tuple[str | None, str | list[Any], tuple[str, ...], tuple[str, ...]]]
        prompt: str | list[Any]
        if self.family is GuardFamily.LLAMA_GUARD_3:
            prompt = llama_guard.llama_guard_prompt(stage, messages)
            asked = [(None, prompt, llama_guard.UNSAFE_WORDS, llama_guard.SAFE_WORDS)]
        elif self.family is GuardFamily.SHIELDGEMMA:
            asked = [
                (
                    policy.category,
                    shieldgemma.shieldgemma_prompt(stage, messages, policy),
                    shieldgemma.VIOLATION_WORDS,
                    shieldgemma.NO_VIOLATION_WORDS,
                )
                for policy in shieldgemma.POLICIES
            ]
        else:
            prompt = _chat_messages(self_check.self_check_messages(stage, messages))
            asked = [(None, prompt, self_check.UNSAFE_WORDS, self_check.SAFE_WORDS)]
        results: list[tuple[str | None, float]] = []
        evaluated = 0
        for category, prompt, unsafe, safe in asked:
            score = await llm.score(prompt, (unsafe, safe))
            evaluated += score.evaluated_tokens
            results.append((category, _unsafe_probability(score.masses)))
        return results, evaluated

    async def _scored(
        self,
        stage: Stage,
        messages: Sequence[SafetyMessage],
        threshold: float,
        answers: list[str],
    ) -> tuple[SafetyVerdict, int, int]:
        probabilities, evaluated = await self._probabilities(stage, messages)
        calls = len(probabilities)
        probability = max(p for _category, p in probabilities)
        if probability < threshold:
            return SafetyVerdict(False, (), probability, threshold), calls, evaluated
        if self.family is GuardFamily.SHIELDGEMMA:
            flagged = tuple(dict.fromkeys(c for c, p in probabilities if c and p >= threshold))
            return SafetyVerdict(True, flagged, probability, threshold), calls, evaluated
        # Unsafe: now, and only now, which categories.
        if self.family is GuardFamily.LLAMA_GUARD_3:
            continued = llama_guard.llama_guard_prompt(stage, messages) + "unsafe\n"
            answer = await self._ask(continued, llama_guard.MAX_ANSWER_TOKENS)
            categories = llama_guard.parse_llama_guard("unsafe\n" + answer).categories
        else:
            asked = _chat_messages(self_check.category_messages(stage, messages))
            answer = await self._ask(asked, self_check.MAX_ANSWER_TOKENS)
            categories = self_check.parse_categories(answer)
        answers.append(answer)
        verdict = SafetyVerdict(True, categories, probability, threshold)
        return verdict, calls + 1, evaluated

    async def _read(
        self, stage: Stage, messages: Sequence[SafetyMessage], answers: list[str]
    ) -> SafetyVerdict:
        """The verdict from the text the model writes (a model that cannot be scored)."""
        if self.family is GuardFamily.LLAMA_GUARD_3:
            answer = await self._ask(
                llama_guard.llama_guard_prompt(stage, messages), llama_guard.MAX_ANSWER_TOKENS
            )
            answers.append(answer)
            return llama_guard.parse_llama_guard(answer)
        if self.family is GuardFamily.SHIELDGEMMA:
            results: list[tuple[shieldgemma.Policy, bool | None]] = []
            for policy in shieldgemma.POLICIES:
                prompt = shieldgemma.shieldgemma_prompt(stage, messages, policy)
                answer = await self._ask(prompt, shieldgemma.MAX_ANSWER_TOKENS)
                answers.append(answer)
                results.append((policy, shieldgemma.parse_shieldgemma(answer)))
            return shieldgemma.combine(results)
        answer = await self._ask(
            _chat_messages(self_check.self_check_messages(stage, messages)),
            self_check.MAX_ANSWER_TOKENS,
        )
        answers.append(answer)
        return self_check.parse_self_check(answer)

    async def _ask(self, prompt: str | list[Any], max_tokens: int) -> str:
        response = await self.llm.generate_async(prompt, max_tokens=max_tokens, temperature=0.0)
        return _content(response)


def _unsafe_probability(masses: Sequence[float]) -> float:
    """The unsafe answer's probability against the safe one's; a model that gives
    neither any weight says nothing, which reads as unsafe (fails closed)."""
    unsafe, safe = masses[0], masses[1]
    total = unsafe + safe
    return unsafe / total if total > 0 else 1.0


def _chat_messages(messages: list[dict[str, str]]) -> list[Any]:
    from nemoguardrails.types import ChatMessage

    return [ChatMessage.from_dict(m) for m in messages]
