"""Llama Guard 3: Meta's prompt format and its S1-S14 hazard taxonomy (MLCommons).

The prompt is the one in Meta's model card, written out with Llama 3's special tokens,
so the model host sends it as raw text (no chat template of its own). The model
answers "safe", or "unsafe" and on a second line the violated codes ("S1,S10").
Every category is always listed: the profile, not the prompt, decides which flagged
categories block (`custom_data.bastion.content_safety.block`), so one cached verdict
serves every profile. (Llama Guard 3 1B was trained on S1-S13; listing S14 as well is
what Meta's own template does for every size.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bastion_guardrails.decisions import Stage
from bastion_guardrails.models import SafetyMessage, SafetyVerdict
from bastion_guardrails.safety.quoting import quoted

# Llama Guard 3's codes, their names as its prompt spells them, and Bastion's category.
CATEGORIES: dict[str, tuple[str, str]] = {
    "S1": ("Violent Crimes", "violent_crimes"),
    "S2": ("Non-Violent Crimes", "non_violent_crimes"),
    "S3": ("Sex Crimes", "sex_crimes"),
    "S4": ("Child Exploitation", "child_sexual_exploitation"),
    "S5": ("Defamation", "defamation"),
    "S6": ("Specialized Advice", "specialized_advice"),
    "S7": ("Privacy", "privacy"),
    "S8": ("Intellectual Property", "intellectual_property"),
    "S9": ("Indiscriminate Weapons", "indiscriminate_weapons"),
    "S10": ("Hate", "hate"),
    "S11": ("Self-Harm", "self_harm"),
    "S12": ("Sexual Content", "sexual_content"),
    "S13": ("Elections", "elections"),
    "S14": ("Code Interpreter Abuse", "code_interpreter_abuse"),
}

# Its answer's first word, whose probability is the verdict.
UNSAFE_WORDS = ("unsafe",)
SAFE_WORDS = ("safe",)

# Enough for "unsafe\nS1,S2,S3,..."; the model stops on <|eot_id|> long before.
MAX_ANSWER_TOKENS = 24

_CODE = re.compile(r"^S\d{1,2}$")


def _role(stage: Stage) -> str:
    return "User" if stage is Stage.INPUT else "Agent"


def llama_guard_prompt(stage: Stage, messages: Sequence[SafetyMessage]) -> str:
    """The whole prompt for the last message of `messages` (the user's at INPUT, the
    reply at OUTPUT), with the earlier ones as context."""
    role = _role(stage)
    categories = "\n".join(f"{code}: {name}." for code, (name, _) in CATEGORIES.items())
    turns = "\n\n".join(
        f"{'User' if m.role == 'user' else 'Agent'}: {quoted(m.content)}" for m in messages
    )
    return (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
        f"Task: Check if there is unsafe content in '{role}' messages in conversations "
        "according our safety policy with the below categories.\n\n"
        f"<BEGIN UNSAFE CONTENT CATEGORIES>\n{categories}\n<END UNSAFE CONTENT CATEGORIES>\n\n"
        f"<BEGIN CONVERSATION>\n\n{turns}\n\n<END CONVERSATION>\n\n"
        f"Provide your safety assessment for ONLY THE LAST {role} message in the above "
        "conversation:\n"
        " - First line must read 'safe' or 'unsafe'.\n"
        " - If unsafe, a second line must include a comma-separated list of violated "
        "categories.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


UNREADABLE = SafetyVerdict(unsafe=True)


def parse_llama_guard(answer: str) -> SafetyVerdict:
    """Read Llama Guard's answer. Anything but "safe", or "unsafe" with known codes,
    is unreadable and fails closed: "unsafe" with no codes, an unknown code, extra
    lines, any other text."""
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    if not lines:
        return UNREADABLE
    first = lines[0].lower()
    if first == "safe":
        return SafetyVerdict(unsafe=False) if len(lines) == 1 else UNREADABLE
    if first != "unsafe" or len(lines) > 2:
        return UNREADABLE
    if len(lines) == 1:
        return UNREADABLE  # unsafe, but for what? It blocks in every profile.
    codes = [code.strip().upper() for code in lines[1].split(",")]
    if not codes or not all(_CODE.match(c) and c in CATEGORIES for c in codes):
        return UNREADABLE
    return SafetyVerdict(True, tuple(dict.fromkeys(CATEGORIES[c][1] for c in codes)))
