"""The fixed registry of rail actions: the only code a profile can run.

Every rail a profile names is a Colang flow that executes one of these actions. User
and administrator profiles are data (YAML, prompts, Colang); they choose rails from
this registry and configure them, and cannot bring code of their own.

Each model-free action wraps a detector, takes the text and a mode ("block" or
"mask"), and answers with NeMo's engine-neutral `RailOutcome`: ALLOW, BLOCK, or
TRANSFORM with the masked text. The findings (kinds, labels and spans, never the text
itself) travel in the outcome's metadata under FINDINGS_KEY, so the engine can say what
was masked and mask a streamed reply piece by piece.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bastion_guardrails.decisions import Judgement, Stage
from bastion_guardrails.detectors import (
    Detector,
    EmailDetector,
    Finding,
    IbanDetector,
    NationalIdDetector,
    PaymentCardDetector,
    PhoneDetector,
    ProfanityDetector,
    PromptInjectionDetector,
    SecretsDetector,
    TermsDetector,
    mask,
)
from bastion_guardrails.detectors.jailbreak import Sensitivity
from bastion_guardrails.models import SAFETY_CATEGORIES, SAFETY_ROLE, ModelSet, SafetyMessage

log = logging.getLogger(__name__)

FINDINGS_KEY = "bastion_findings"
CATEGORIES_KEY = "bastion_categories"
# NeMo's streaming output rails report a violation by flow name only; a model rail
# leaves its categories with the recorder that the engine passes in a context message.
RECORDER_KEY = "bastion_recorder"
# How much of the user's message a reply's content-safety check reads with the reply.
REPLY_CONTEXT_CHARS = 2000
# A message's content-safety check reads it in windows of this many characters (about
# 1,000 tokens: with the judge's instructions they fit a 2,048-token context), each
# overlapping the one before so that nothing is cut in two unread.
INPUT_WINDOW_CHARS = 4000
INPUT_OVERLAP_CHARS = 400


def windows(text: str) -> list[str]:
    """`text` in overlapping windows of at most INPUT_WINDOW_CHARS (itself if shorter)."""
    if len(text) <= INPUT_WINDOW_CHARS:
        return [text]
    step = INPUT_WINDOW_CHARS - INPUT_OVERLAP_CHARS
    starts = range(0, len(text) - INPUT_OVERLAP_CHARS, step)
    return [text[start : start + INPUT_WINDOW_CHARS] for start in starts]


# Who judged a flagged message, with the probability and threshold: a `Judgement`.
JUDGEMENT_KEY = "bastion_judgement"


class VerdictRecorder:
    def __init__(self) -> None:
        self.categories: list[str] = []
        self.judgement: Judgement | None = None


BLOCK = "block"
MASK = "mask"

# Categories a user reads on a decision.
SECRETS = "secrets"
PERSONAL_DATA = "personal data"
PROMPT_INJECTION = "prompt injection"
PROFANITY = "profanity"
LISTED_TERMS = "listed terms"
UNSAFE_CONTENT = "unsafe content"


@dataclass(frozen=True)
class ProfileSettings:
    """Per-profile settings for registry rails, from `custom_data.bastion` in config.yml."""

    terms: tuple[str, ...] = ()
    safety_categories: frozenset[str] = field(default_factory=frozenset)
    # From the profile's strictness: Strict stops a jailbreak set-up on fewer signs.
    injection_sensitivity: Sensitivity = Sensitivity.STANDARD


@dataclass(frozen=True)
class RailSpec:
    key: str  # "secrets": also the middle of its flow names
    action: str  # the NeMo action name
    title: str  # what the rail checks, for a sentence: "payment card numbers"
    category: str
    modes: tuple[str, ...]
    role: str | None = None  # the model role it needs; None for a model-free rail
    make_detector: Callable[[ProfileSettings], Detector] | None = None

    @property
    def model_free(self) -> bool:
        return self.role is None

    def flow_name(self, mode: str, stage: Stage) -> str:
        if self.role is not None:
            return f"bastion {self.key.replace('_', ' ')} on {stage.value}"
        return f"bastion {mode} {self.key.replace('_', ' ')} on {stage.value}"


RAILS: tuple[RailSpec, ...] = (
    RailSpec(
        "secrets",
        "bastion_secrets",
        "secrets (private keys, cloud keys, tokens, passwords)",
        SECRETS,
        (BLOCK, MASK),
        make_detector=lambda _: SecretsDetector(),
    ),
    RailSpec(
        "payment_cards",
        "bastion_payment_cards",
        "payment card numbers",
        PERSONAL_DATA,
        (BLOCK, MASK),
        make_detector=lambda _: PaymentCardDetector(),
    ),
    RailSpec(
        "iban",
        "bastion_iban",
        "bank account numbers (IBAN)",
        PERSONAL_DATA,
        (BLOCK, MASK),
        make_detector=lambda _: IbanDetector(),
    ),
    RailSpec(
        "emails",
        "bastion_emails",
        "email addresses",
        PERSONAL_DATA,
        (BLOCK, MASK),
        make_detector=lambda _: EmailDetector(),
    ),
    RailSpec(
        "phone_numbers",
        "bastion_phone_numbers",
        "phone numbers",
        PERSONAL_DATA,
        (BLOCK, MASK),
        make_detector=lambda _: PhoneDetector(),
    ),
    RailSpec(
        "national_ids",
        "bastion_national_ids",
        "national ID numbers",
        PERSONAL_DATA,
        (BLOCK, MASK),
        make_detector=lambda _: NationalIdDetector(),
    ),
    RailSpec(
        "prompt_injection",
        "bastion_prompt_injection",
        "prompt-injection and jailbreak signatures",
        PROMPT_INJECTION,
        (BLOCK, MASK),
        make_detector=lambda s: PromptInjectionDetector(s.injection_sensitivity),
    ),
    RailSpec(
        "profanity",
        "bastion_profanity",
        "profanity",
        PROFANITY,
        (BLOCK, MASK),
        make_detector=lambda _: ProfanityDetector(),
    ),
    RailSpec(
        "terms",
        "bastion_terms",
        "the profile's listed terms",
        LISTED_TERMS,
        (BLOCK, MASK),
        make_detector=lambda settings: TermsDetector(settings.terms),
    ),
    RailSpec(
        "content_safety",
        "bastion_content_safety",
        "content safety (checked by the safety model)",
        UNSAFE_CONTENT,
        (BLOCK,),
        role=SAFETY_ROLE,
    ),
)
RAILS_BY_ACTION: dict[str, RailSpec] = {spec.action: spec for spec in RAILS}
RAILS_BY_KEY: dict[str, RailSpec] = {spec.key: spec for spec in RAILS}


@dataclass(frozen=True)
class LibraryFlow:
    """One of Bastion's own rail flows: a registry action with its mode and stage."""

    name: str
    spec: RailSpec
    mode: str
    stage: Stage


def library_flows() -> dict[str, LibraryFlow]:
    flows = {}
    for spec in RAILS:
        for mode in spec.modes:
            for stage in Stage:
                name = spec.flow_name(mode, stage)
                flows[name] = LibraryFlow(name, spec, mode, stage)
    return flows


LIBRARY_FLOWS: dict[str, LibraryFlow] = library_flows()


# --- NeMo actions -----------------------------------------------------------------------

Action = Callable[..., Awaitable[Any]]


def _detector_action(spec: RailSpec, detector: Detector) -> Action:
    from nemoguardrails.actions.rail_outcome import (
        RailOutcome,
        TransformTarget,
    )

    async def action(
        text: str | None = "", source: str = "input", mode: str = BLOCK, **_: Any
    ) -> Any:
        # NeMo's streaming output path passes extra parameters (context, config, llm...);
        # they are not needed. Never raise: NeMo would log the parameters, which hold the
        # chat text, and a failed rail must block, not pass.
        try:
            findings = detector.find(text or "")
        except Exception:
            log.exception("the %s rail failed", spec.key)
            return RailOutcome.failure(reason=f"the {spec.key} check failed")
        if not findings:
            return RailOutcome.allow()
        metadata = {FINDINGS_KEY: findings}
        if mode == MASK:
            target = TransformTarget.BOT_MESSAGE
            if source == "input":
                target = TransformTarget.USER_MESSAGE
            return RailOutcome.transform([(target, mask(text or "", findings))], metadata=metadata)
        return RailOutcome.block(metadata=metadata)

    return action


def _content_safety_action(settings: ProfileSettings, models: ModelSet, *, strict: bool) -> Action:
    from nemoguardrails.actions.rail_outcome import RailOutcome

    async def action(
        text: str | None = "",
        source: str = "input",
        user_message: str | None = "",
        context: Any = None,
        **_: Any,
    ) -> Any:
        model = models.safety
        if model is None:
            return RailOutcome.failure(reason="no safety model is installed")
        stage = Stage.INPUT if source == "input" else Stage.OUTPUT
        if stage is Stage.OUTPUT:
            reply = SafetyMessage("assistant", text or "")
            # The end of a long message is enough context for a reply's check, and keeps
            # it within the judge's context.
            asked = (user_message or "")[-REPLY_CONTEXT_CHARS:]
            questions = [[SafetyMessage("user", asked), reply]]
        else:
            # A long message is read in overlapping windows, each within a small judge's
            # context: harm anywhere in it is found, and none fails for its length.
            questions = [[SafetyMessage("user", piece)] for piece in windows(text or "")]
        allowed: list[str] = []
        for messages in questions:
            try:
                verdict = await model.classify(stage, messages, strict=strict)
            except Exception:
                log.exception("the safety model failed")
                return RailOutcome.failure(reason="the safety model failed")
            if not verdict.unsafe:
                continue
            categories = [c for c in verdict.categories if c in SAFETY_CATEGORIES]
            blocked = [c for c in categories if c in settings.safety_categories]
            if categories and not blocked:
                allowed += categories  # flagged only for categories this profile allows
                continue
            break
        else:
            if allowed:
                return RailOutcome.allow(metadata={CATEGORIES_KEY: list(dict.fromkeys(allowed))})
            return RailOutcome.allow()
        judgement = Judgement(
            model.name, model.is_self_check, verdict.probability, verdict.threshold
        )
        recorder = context.get(RECORDER_KEY) if isinstance(context, dict) else None
        if isinstance(recorder, VerdictRecorder):
            recorder.categories = blocked
            recorder.judgement = judgement
        return RailOutcome.block(metadata={CATEGORIES_KEY: blocked, JUDGEMENT_KEY: judgement})

    return action


def make_actions(
    settings: ProfileSettings, models: ModelSet, *, strict: bool = False
) -> dict[str, Action]:
    """One callable per registry action, bound to a profile's settings and models;
    `strict` for the Strict profile's lower content-safety threshold."""
    actions: dict[str, Action] = {}
    for spec in RAILS:
        if spec.make_detector is not None:
            actions[spec.action] = _detector_action(spec, spec.make_detector(settings))
        elif spec.role == SAFETY_ROLE:
            actions[spec.action] = _content_safety_action(settings, models, strict=strict)
    return actions


def findings_of(metadata: Any) -> Sequence[Finding] | None:
    """The findings a registry action attached to its outcome, or None if it attached
    none (an action outside the registry, or a model rail)."""
    if not hasattr(metadata, "get"):
        return None
    findings = metadata.get(FINDINGS_KEY)
    return findings if isinstance(findings, list) else None
