"""`PromptedSafetyModel`: a guard family's prompts and parser (or the self-check prompt)
over a model reached through NeMo Guardrails' `LLMModel` protocol
(`nemoguardrails.types.LLMModel`: `generate_async(prompt, *, stop, **kwargs)` returning
an `LLMResponse`, plus `stream_async`, `model_name`, `provider_name`, `provider_url`).

The desktop app implements that protocol over a model host of its own (a child process
apart from the chat model's), so a check never waits for, or disturbs, the reply being
generated; tests implement it with a scripted model. A raw prompt (a string) is sent
for guard models, which bring their own special tokens; chat messages (NeMo's
`ChatMessage`) for self-check, which goes through the chat model's chat template.
Decoding is greedy (`temperature=0`) with a few tokens: a verdict, not prose.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bastion_guardrails.decisions import Stage
from bastion_guardrails.models import SafetyMessage, SafetyVerdict
from bastion_guardrails.safety import llama_guard, self_check, shieldgemma
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
class CheckRecord:
    """One classification: how long it took, how many model calls it made, what the
    model answered (a verdict such as "unsafe\\nS1": never the checked text) and the
    verdict read from it."""

    stage: Stage
    latency_ms: float
    calls: int
    answers: tuple[str, ...]
    verdict: SafetyVerdict


def _content(response: Any) -> str:
    content = getattr(response, "content", None)
    return content if isinstance(content, str) else ""


class PromptedSafetyModel:
    """A `SafetyModel` for one guard family, or for self-check when `family` is None."""

    def __init__(
        self,
        llm: GuardLLM,
        family: GuardFamily | None,
        *,
        name: str = "",
        on_check: Callable[[CheckRecord], None] | None = None,
    ) -> None:
        self.llm = llm
        self.family = family
        self.name = name or llm.model_name
        self.last: CheckRecord | None = None
        self._on_check = on_check

    @property
    def model_id(self) -> str:
        return f"{self.family.value if self.family else 'self-check'}:{self.llm.model_name}"

    @property
    def is_self_check(self) -> bool:
        return self.family is None

    async def classify(self, stage: Stage, messages: Sequence[SafetyMessage]) -> SafetyVerdict:
        started = time.perf_counter()
        answers: list[str] = []
        if self.family is GuardFamily.LLAMA_GUARD_3:
            answer = await self._ask(
                llama_guard.llama_guard_prompt(stage, messages), llama_guard.MAX_ANSWER_TOKENS
            )
            answers.append(answer)
            verdict = llama_guard.parse_llama_guard(answer)
        elif self.family is GuardFamily.SHIELDGEMMA:
            results: list[tuple[shieldgemma.Policy, bool | None]] = []
            for policy in shieldgemma.POLICIES:
                prompt = shieldgemma.shieldgemma_prompt(stage, messages, policy)
                answer = await self._ask(prompt, shieldgemma.MAX_ANSWER_TOKENS)
                answers.append(answer)
                results.append((policy, shieldgemma.parse_shieldgemma(answer)))
            verdict = shieldgemma.combine(results)
        else:
            answer = await self._ask(
                _chat_messages(self_check.self_check_messages(stage, messages)),
                self_check.MAX_ANSWER_TOKENS,
            )
            answers.append(answer)
            verdict = self_check.parse_self_check(answer)
        record = CheckRecord(
            stage,
            (time.perf_counter() - started) * 1000.0,
            len(answers),
            tuple(answers),
            verdict,
        )
        self.last = record
        if self._on_check is not None:
            self._on_check(record)
        return verdict

    async def _ask(self, prompt: str | list[Any], max_tokens: int) -> str:
        response = await self.llm.generate_async(prompt, max_tokens=max_tokens, temperature=0.0)
        return _content(response)


def _chat_messages(messages: list[dict[str, str]]) -> list[Any]:
    from nemoguardrails.types import ChatMessage

    return [ChatMessage.from_dict(m) for m in messages]
