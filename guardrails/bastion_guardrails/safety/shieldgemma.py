"""ShieldGemma: Google's guard model, which judges text against one stated policy at a
time and answers "Yes" (it violates the policy) or "No".

One call per policy, with the four policies it was trained on, in Google's wording.
The conversation comes before the policy in its prompt, so after the first call the
model host's llama.cpp reuses the conversation from its cache and each further policy
costs only the policy's own few dozen tokens and one generated token. A combined prompt
listing every policy at once would be one call, but the model was not trained on it
and its single Yes would not say which policy was broken.

Bastion's categories for each policy: dangerous content (harm to oneself or others,
weapons, terrorism) reads as violent crime; harassment (abuse targeting a person) and
hate speech read as hate; sexually explicit content as sexual content.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bastion_guardrails.decisions import Stage
from bastion_guardrails.models import SafetyMessage, SafetyVerdict
from bastion_guardrails.safety.quoting import quoted

MAX_ANSWER_TOKENS = 3
# Its answer's first word, whose probability is the verdict (Google's model card reads
# the probability of "Yes" the same way).
VIOLATION_WORDS = ("Yes",)
NO_VIOLATION_WORDS = ("No",)


@dataclass(frozen=True)
class Policy:
    name: str
    harm: str  # what the text "shall not contain or seek generation of"
    category: str  # Bastion's


POLICIES: tuple[Policy, ...] = (
    Policy(
        "No Dangerous Content",
        "content that harming oneself and/or others (e.g., accessing or building firearms "
        "and explosive devices, promotion of terrorism, instructions for suicide).",
        "violent_crimes",
    ),
    Policy(
        "No Harassment",
        "content that is malicious, intimidating, bullying, or abusive content targeting "
        "another individual (e.g., physical threats, denial of tragic events, disparaging "
        "victims of violence).",
        "hate",
    ),
    Policy(
        "No Hate Speech",
        "content that targeting identity and/or protected attributes (e.g., racial slurs, "
        "promotion of discrimination, calls to violence against protected groups) or "
        "dehumanizing/belittling/vilifying on the bases of race, ethnicity, religion, "
        "disability, age, nationality, veteran status, sexual orientation, gender, gender "
        "identity, caste, or any other protected status.",
        "hate",
    ),
    Policy(
        "No Sexually Explicit Information",
        "content that contains references to sexual acts or other lewd content (e.g., "
        "sexually graphic descriptions, content aimed at causing arousal). Medical or "
        "scientific terms related to human anatomy or sex education are permitted.",
        "sexual_content",
    ),
)


def _last(messages: Sequence[SafetyMessage], role: str) -> str:
    return next((m.content for m in reversed(messages) if m.role == role), "")


def shieldgemma_prompt(stage: Stage, messages: Sequence[SafetyMessage], policy: Policy) -> str:
    """The prompt asking whether the last message breaks `policy` (the model card's
    prompt-only form at INPUT, its prompt-response form at OUTPUT)."""
    question = quoted(_last(messages, "user"))
    if stage is Stage.INPUT:
        return (
            "You are a policy expert trying to help determine whether a user prompt is in "
            "violation of the defined safety policies.\n\n"
            f"<start_of_turn>\nHuman Question: {question}\n<end_of_turn>\n\n"
            "Our safety principle is defined in the below:\n\n"
            f'* "{policy.name}": The prompt shall not contain or seek generation of '
            f"{policy.harm}\n\n"
            "Does the human question violate the above principle? Your answer must start "
            "with 'Yes' or 'No'. And then walk through step by step to be sure we answer "
            "correctly.\n\n"
        )
    reply = quoted(_last(messages, "assistant"))
    return (
        "You are a policy expert trying to help determine whether an AI response to prompt "
        "is in violation of the defined safety policies.\n\n"
        f"<start_of_turn>\nHuman Question: {question}\n<end_of_turn>\n\n"
        f"<start_of_turn>\nChatbot Response: {reply}\n<end_of_turn>\n\n"
        "Our safety principle is defined in the below:\n\n"
        f'* "{policy.name}": The chatbot shall not generate {policy.harm}\n\n'
        "Does the Chatbot Response violate the above principle? Your answer must start "
        "with 'Yes' or 'No'. And then walk through step by step to be sure we answer "
        "correctly.\n\n"
    )


def parse_shieldgemma(answer: str) -> bool | None:
    """True for a violation ("Yes"), False for none ("No"), None when unreadable."""
    words = answer.strip().split()
    first = words[0].strip(".,:;!").lower() if words else ""
    if first == "yes":
        return True
    if first == "no":
        return False
    return None


def combine(answers: Sequence[tuple[Policy, bool | None]]) -> SafetyVerdict:
    """One verdict from the per-policy answers; a single unreadable answer makes the
    whole verdict unreadable (unsafe, no categories), whatever the others said."""
    if any(violated is None for _, violated in answers):
        return SafetyVerdict(unsafe=True)
    flagged = tuple(dict.fromkeys(p.category for p, violated in answers if violated))
    return SafetyVerdict(unsafe=bool(flagged), categories=flagged)
