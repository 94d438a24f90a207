"""The sentences a user reads: why a message or a reply was blocked or masked, and
which checks a profile has in force."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bastion_guardrails.decisions import Judgement, Stage
from bastion_guardrails.models import (
    SAFETY_CATEGORIES,
    SAFETY_ROLE,
    JudgeReport,
    ModelSet,
    SafetyDownload,
)
from bastion_guardrails.plan import PlannedRail, ProfilePlan
from bastion_guardrails.rail_actions import LIBRARY_FLOWS, UNSAFE_CONTENT


def join_words(items: Iterable[str]) -> str:
    unique = list(dict.fromkeys(items))
    if len(unique) <= 1:
        return "".join(unique)
    return ", ".join(unique[:-1]) + " and " + unique[-1]


def _were(labels: Sequence[str]) -> str:
    return "was" if len(dict.fromkeys(labels)) == 1 else "were"


def blocked(stage: Stage, profile_name: str, labels: Sequence[str]) -> str:
    what = join_words(labels)
    rule = f"which the {profile_name} profile blocks"
    if stage is Stage.INPUT:
        return f"Your message was not sent because it contains {what}, {rule}."
    return f"The reply was withdrawn because it contained {what}, {rule}."


def masked(stage: Stage, labels: Sequence[str]) -> str:
    what = join_words(labels)
    if stage is Stage.INPUT:
        return (
            f"Before the model saw your message, {what} {_were(labels)} replaced with placeholders."
        )
    return f"In the reply, {what} {_were(labels)} replaced with placeholders."


def judge_words(judgement: Judgement | None) -> str:
    """ "the safety model (Llama Guard 3 1B)" / "the chat model's own safety check
    (Qwen2.5 7B Instruct)" / "the safety model" (nothing recorded)."""
    if judgement is None:
        return "the safety model"
    if judgement.self_check:
        return f"the chat model's own safety check ({judgement.judge})"
    return f"the safety model ({judgement.judge})"


def flagged(stage: Stage, categories: Sequence[str], judgement: Judgement | None = None) -> str:
    words = join_words(SAFETY_CATEGORIES.get(c, c.replace("_", " ")) for c in categories)
    what = f" as {words}" if words else ""
    judge = judge_words(judgement)
    odds = ""
    if judgement is not None and judgement.probability is not None:
        odds = (
            f" (it rated it unsafe with probability {judgement.probability:.2f}; this "
            f"profile blocks from {judgement.threshold:.2f})"
        )
    if stage is Stage.INPUT:
        return f"Your message was not sent: {judge} flagged it{what}{odds}."
    return f"The reply was withdrawn: {judge} flagged it{what}{odds}."


def blocked_by_flow(stage: Stage, rail: str) -> str:
    if stage is Stage.INPUT:
        return f"Your message was not sent: the profile's rail '{rail}' blocked it."
    return f"The reply was withdrawn: the profile's rail '{rail}' blocked it."


def failed(stage: Stage, title: str) -> str:
    if stage is Stage.INPUT:
        return f"A guardrail check ({title}) failed, so your message was not sent, to be safe."
    return f"A guardrail check ({title}) failed, so the reply was stopped, to be safe."


def allowed(stage: Stage, profile_name: str, count: int) -> str:
    checks = "check" if count == 1 else "checks"
    what = "message" if stage is Stage.INPUT else "reply"
    return f"The {profile_name} profile's {count} {checks} found nothing to stop in this {what}."


# --- sentences rebuilt from the history -------------------------------------------------

# What one finding of each registry rail is, for a sentence about a recorded decision:
# the history keeps which rail decided, never the text nor the findings' own labels.
_ONE_FINDING = {
    "secrets": "a secret (a key, a token or a password)",
    "payment_cards": "a payment card number",
    "iban": "a bank account number (IBAN)",
    "emails": "an email address",
    "phone_numbers": "a phone number",
    "national_ids": "a national ID number",
    "prompt_injection": "a prompt-injection or jailbreak attempt",
    "profanity": "profanity",
    "terms": "one of the profile's listed terms",
}


def recorded(
    verdict: str,
    stage: str,
    profile_name: str,
    *,
    rail: str | None = None,
    category: str | None = None,
    judgement: Judgement | None = None,
) -> str:
    """The sentence for a decision read back from the history (a GuardEventRecord), in
    the words the live decision used, as near as the record allows: the record names
    the rail, the category and the judge of a content-safety block, not what the rail
    found, so "an email address" stands for the findings, and a check that failed reads
    as the block it caused."""
    where = Stage(stage)
    library = LIBRARY_FLOWS.get(rail) if rail else None
    if verdict == "blocked":
        return _recorded_block(where, profile_name, rail, category, judgement)
    if verdict == "masked":
        finding = "text the profile's own rail chose"
        if library is not None:
            finding = _ONE_FINDING.get(library.spec.key, library.spec.title)
        return masked(where, [finding])
    if verdict == "allowed":
        what = "message" if where is Stage.INPUT else "reply"
        return f"The {profile_name} profile's checks found nothing to stop in this {what}."
    what = "your message" if where is Stage.INPUT else "the reply"
    return f"The {profile_name} profile checked {what} ({verdict})."


def _recorded_block(
    where: Stage,
    profile_name: str,
    rail: str | None,
    category: str | None,
    judgement: Judgement | None,
) -> str:
    library = LIBRARY_FLOWS.get(rail) if rail else None
    safety_key = (category or "").replace(" ", "_")
    if library is not None and library.spec.role is None:
        finding = _ONE_FINDING.get(library.spec.key, library.spec.title)
        sentence = blocked(where, profile_name, [finding])
    elif library is not None or category == UNSAFE_CONTENT or safety_key in SAFETY_CATEGORIES:
        # The safety model's verdict: the record keeps its first category, in words.
        categories = [safety_key] if safety_key in SAFETY_CATEGORIES else []
        sentence = flagged(where, categories, judgement)
    elif rail:
        sentence = blocked_by_flow(where, rail)
    elif where is Stage.INPUT:
        sentence = f"Your message was not sent: the {profile_name} profile blocked it."
    else:
        sentence = f"The reply was withdrawn: the {profile_name} profile blocked it."
    return sentence


# --- which checks are in force ---------------------------------------------------------


@dataclass(frozen=True)
class CheckStatus:
    rail: str  # the flow name
    stage: Stage
    title: str
    masks: bool
    in_force: bool
    needs: tuple[str, ...]  # model roles that are missing


@dataclass(frozen=True)
class ProfileStatus:
    """What a profile checks right now, as data and as a sentence for the user."""

    profile_id: str
    profile_name: str
    checks: tuple[CheckStatus, ...]
    can_run: bool
    sentence: str
    # How each judge considered did on Bastion's calibration set (see models.JudgeReport).
    judges: tuple[JudgeReport, ...] = ()
    # The safety models the sentence suggests downloading (none when it suggests none).
    suggested_downloads: tuple[SafetyDownload, ...] = ()

    @property
    def active(self) -> tuple[CheckStatus, ...]:
        return tuple(c for c in self.checks if c.in_force)

    @property
    def missing(self) -> tuple[CheckStatus, ...]:
        return tuple(c for c in self.checks if not c.in_force)


def download_hint(models: ModelSet) -> str:
    """ "download a safety model from the model catalog, for example Llama Guard 3 1B
    (llama-guard-3-1b)" """
    hint = "download a safety model from the model catalog"
    options = " or ".join(f"{d.name} ({d.catalog_id})" for d in models.downloads)
    return f"{hint}, for example {options}" if options else hint


def _why_missing(models: ModelSet) -> str:
    why = models.unusable_safety or "no safety model is installed"
    if models.no_self_check:
        why += f" and {models.no_self_check}"
    return why


def _verb(rail: PlannedRail) -> str:
    if rail.masks:
        return "masked"
    return "blocked" if rail.flow.library is not None else "checked"


def _place(rail: PlannedRail) -> str:
    return "your messages" if rail.flow.stage is Stage.INPUT else "replies"


def _describe(rails: Sequence[PlannedRail], *, verbs: bool = True) -> str:
    """ "profanity in your messages (masked) and in replies (blocked)" """
    parts = []
    for title in dict.fromkeys(r.title for r in rails):
        same = [r for r in rails if r.title == title]
        if not verbs:
            parts.append(f"{title} in {join_words(_place(r) for r in same)}")
        elif len({_verb(r) for r in same}) == 1:
            parts.append(f"{title} in {join_words(_place(r) for r in same)} ({_verb(same[0])})")
        else:
            places = " and in ".join(f"{_place(r)} ({_verb(r)})" for r in same)
            parts.append(f"{title} in {places}")
    return "; ".join(parts)


def profile_status(plan: ProfilePlan) -> ProfileStatus:
    profile = plan.profile
    checks = tuple(
        CheckStatus(
            r.name, r.flow.stage, r.title, r.masks, r.in_force, tuple(sorted(r.missing_roles))
        )
        for r in plan.input + plan.output
    )
    missing = plan.missing
    models = plan.models
    uses_safety = any(SAFETY_ROLE in r.flow.roles for r in plan.input + plan.output)
    # A profile that requires the safety model is not satisfied by self-check.
    can_run = not (
        profile.manifest.safety_model_required and uses_safety and not models.has_safety_model
    )
    name = profile.name
    suggested: tuple[SafetyDownload, ...] = ()  # what the sentence offers to download
    if plan.is_off:
        sentence = "Guardrails are off: nothing is checked."
    elif not can_run:
        instead = (
            " (the chat model checking itself is not enough for it)" if models.self_check else ""
        )
        sentence = (
            f"The {name} profile requires a safety model and none is installed{instead}, so "
            f"it cannot be used: {download_hint(models)}, or choose another profile."
        )
        suggested = models.downloads
    else:
        active = [r for r in plan.input + plan.output if r.in_force]
        sentence = (
            f"{name} is checking {_describe(active)}." if active else f"{name} checks nothing."
        )
        if missing:
            sentence += (
                f" Not in force: {_describe(missing, verbs=False)}, because "
                f"{_why_missing(models)}; to turn them on, {download_hint(models)}."
            )
            suggested = models.downloads
        elif models.self_check and uses_safety:
            sentence += (
                " The chat model checks content safety itself, which is less reliable than "
                f"a safety model; for better checks, {download_hint(models)}."
            )
            suggested = models.downloads
        if models.pending_judge and uses_safety and not missing:
            sentence += (
                f" Before its first check, Bastion tests once whether {models.pending_judge} "
                "can tell harmful requests from harmless ones."
            )
    return ProfileStatus(profile.id, name, checks, can_run, sentence, models.judges, suggested)
