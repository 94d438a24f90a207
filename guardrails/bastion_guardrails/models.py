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
    return `unsafe=True` with no categories: a verdict nobody can read fails closed.

    A verdict read from probabilities carries the probability of the unsafe answer and
    the threshold it was compared with (both None for one read from text)."""

    unsafe: bool
    categories: tuple[str, ...] = ()
    probability: float | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class SafetyMessage:
    role: str  # "user" or "assistant"
    content: str


class SafetyModel(Protocol):
    @property
    def model_id(self) -> str:
        """Identifies the model (and its version) for caching and for the user."""
        ...

    @property
    def name(self) -> str:
        """The judge as the user knows it: "Llama Guard 3 1B", or the chat model's name."""
        ...

    @property
    def is_self_check(self) -> bool:
        """Whether the judge is the chat model checking content itself."""
        ...

    async def classify(
        self, stage: Stage, messages: Sequence[SafetyMessage], *, strict: bool = False
    ) -> SafetyVerdict:
        """Classify the last message of `messages` (the user's at INPUT, the reply at
        OUTPUT), with the earlier ones as context; `strict` for the Strict profile's
        lower threshold."""
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
class JudgeReport:
    """How a judge (a safety model, or the chat model checking itself) did on Bastion's
    calibration set (`bastion_guardrails.safety.calibration`), for the status, the
    profiles window and `--json`."""

    name: str
    self_check: bool
    qualified: bool
    benign_passed: float  # the shares at the Standard threshold
    harmful_blocked: float
    threshold: float  # probabilities of the unsafe answer from which it blocks
    strict_threshold: float
    items: int

    @property
    def role(self) -> str:
        return "the chat model's own safety check" if self.self_check else "safety model"

    def sentence(self) -> str:
        verdict = "qualified" if self.qualified else "did not qualify"
        return (
            f"{self.name} {verdict} as a content-safety judge: on Bastion's {self.items} test "
            f"requests it passed {self.benign_passed:.0%} of the benign ones and blocked "
            f"{self.harmful_blocked:.0%} of the harmful ones (it blocks from a probability "
            f"of {self.threshold:.2f}, {self.strict_threshold:.2f} in Strict)."
        )

    def to_json(self) -> dict[str, object]:
        return {
            "judge": self.name,
            "self_check": self.self_check,
            "qualified": self.qualified,
            "benign_passed": round(self.benign_passed, 4),
            "harmful_blocked": round(self.harmful_blocked, 4),
            "threshold": round(self.threshold, 4),
            "strict_threshold": round(self.strict_threshold, 4),
            "items": self.items,
        }


@dataclass(frozen=True)
class ModelSet:
    """The models available to a profile's rails. A role left as None is not installed,
    and the rails that need it are reported as not in force.

    `safety` may be the chat model checking itself (`self_check`), which runs the
    content-safety rails but does not satisfy a profile that requires a safety model.
    `no_self_check` says why the chat model could not stand in (a base model), and
    `unusable_safety` why an installed safety model is not used (a family Bastion
    cannot prompt), for the sentence the user reads; `downloads` are what that
    sentence suggests. `judges` are the calibration results of the judges considered
    (a disqualified one among them); `pending_judge` names a judge not yet calibrated.
    """

    safety: SafetyModel | None = None
    safety_name: str = ""  # how the user knows the model: "Llama Guard 3 1B"
    self_check: bool = False
    no_self_check: str = ""
    unusable_safety: str = ""
    downloads: tuple[SafetyDownload, ...] = DEFAULT_SAFETY_DOWNLOADS
    judges: tuple[JudgeReport, ...] = ()
    pending_judge: str = ""

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
