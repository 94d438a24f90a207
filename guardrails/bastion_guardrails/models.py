"""The models a profile's rails may use, by role, as plain interfaces.

Only one role exists so far: the safety model (a small guard model such as Llama Guard
3 1B or ShieldGemma) that classifies a message or a reply against a taxonomy of harms.
`bastion_guardrails.safety` has each family's prompt and output parser and the
`PromptedSafetyModel` adapter; the guardrail engine only sees verdicts in Bastion's own
category names, below. Where no safety model is installed, an instruction-tuned chat
model may stand in ("self-check"); the `ModelSet` says which, so the user is told.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bastion_guardrails.decisions import Stage

SAFETY_ROLE = "safety"

# Bastion's neutral harm categories and the words a user reads for each. Adapters map
# their model's own codes (Llama Guard's S1-S14, Qwen3Guard's labels) onto these.
SAFETY_CATEGORIES: dict[str, str] = {
    "violent_crimes": "violent crime",
    "non_violent_crimes": "non-violent crime",
    "sex_crimes": "sex-related crime",
    "child_sexual_exploitation": "child sexual exploitation",
    "defamation": "defamation",
    "specialized_advice": "specialized (medical, legal or financial) advice",
    "privacy": "a privacy violation",
    "intellectual_property": "intellectual-property infringement",
    "indiscriminate_weapons": "weapons of mass harm",
    "hate": "hate speech",
    "self_harm": "self-harm",
    "sexual_content": "sexual content",
    "graphic_violence": "graphic violence",
    "elections": "election misinformation",
    "code_interpreter_abuse": "code-interpreter abuse",
}


@dataclass(frozen=True)
class SafetyVerdict:
    """What a safety model said. An adapter that cannot parse its model's answer must
    return `unsafe=True` with no categories: a verdict nobody can read fails closed."""

    unsafe: bool
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class SafetyMessage:
    role: str  # "user" or "assistant"
    content: str


class SafetyModel(Protocol):
    @property
    def model_id(self) -> str:
        """Identifies the model (and its version) for caching and for the user."""
        ...

    async def classify(self, stage: Stage, messages: Sequence[SafetyMessage]) -> SafetyVerdict:
        """Classify the last message of `messages` (the user's at INPUT, the reply at
        OUTPUT), with the earlier ones as context."""
        ...


@dataclass(frozen=True)
class SafetyDownload:
    """A safety model the user can download: its name and its id in the desktop app's
    model catalog (this layer does not read the catalog; the app passes these in)."""

    name: str
    catalog_id: str


# What the sentences suggest when the app passes nothing else.
DEFAULT_SAFETY_DOWNLOADS: tuple[SafetyDownload, ...] = (
    SafetyDownload("Llama Guard 3 1B", "llama-guard-3-1b"),
)


@dataclass(frozen=True)
class ModelSet:
    """The models available to a profile's rails. A role left as None is not installed,
    and the rails that need it are reported as not in force.

    `safety` may be the chat model checking itself (`self_check`), which runs the
    content-safety rails but does not satisfy a profile that requires a safety model.
    `no_self_check` says why the chat model could not stand in (a base model), and
    `unusable_safety` why an installed safety model is not used (a family Bastion
    cannot prompt), for the sentence the user reads; `downloads` are what that
    sentence suggests."""

    safety: SafetyModel | None = None
    safety_name: str = ""  # how the user knows the model: "Llama Guard 3 1B"
    self_check: bool = False
    no_self_check: str = ""
    unusable_safety: str = ""
    downloads: tuple[SafetyDownload, ...] = DEFAULT_SAFETY_DOWNLOADS

    @property
    def roles(self) -> frozenset[str]:
        return frozenset({SAFETY_ROLE} if self.safety is not None else ())

    @property
    def has_safety_model(self) -> bool:
        """A real safety model, not the chat model checking itself."""
        return self.safety is not None and not self.self_check

    @property
    def cache_key(self) -> tuple[str, ...]:
        if self.safety is None:
            return ("safety=",)
        kind = "self-check" if self.self_check else "model"
        return (f"safety={kind}:{self.safety.model_id}",)
