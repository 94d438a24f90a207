"""Which guard family a GGUF belongs to, and whether a chat model is instruction-tuned,
from its metadata (`general.name`, `general.basename`, `general.finetune`,
`general.architecture`, `tokenizer.chat_template`) and its file name. The desktop app
reads the metadata and passes the strings in: this layer never opens a model file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum


class GuardFamily(StrEnum):
    LLAMA_GUARD_3 = "llama-guard-3"
    SHIELDGEMMA = "shieldgemma"


# The families' names as people write them ("Llama-Guard-3-1B", "llama_guard_3",
# "shieldgemma-2b"), after folding separators to spaces; each with the architectures
# its GGUFs have, so that a file merely named like one is not taken for it.
_FAMILIES: tuple[tuple[GuardFamily, re.Pattern[str], frozenset[str]], ...] = (
    (GuardFamily.LLAMA_GUARD_3, re.compile(r"\bllama ?guard ?3\b"), frozenset({"llama"})),
    (
        GuardFamily.SHIELDGEMMA,
        # ShieldGemma 2 ("shieldgemma-2-4b-it") judges images, not text.
        re.compile(r"\bshield ?gemma\b(?! 2 \d+b)(?! 2 it)"),
        frozenset({"gemma", "gemma2"}),
    ),
)
_BASE_WORDS = frozenset({"base", "pt", "pretrained", "pretrain"})
_INSTRUCT_WORDS = frozenset({"instruct", "it", "chat", "sft", "dpo", "rlhf", "inst"})


def _fold(names: Iterable[str | None]) -> str:
    text = " ".join(n for n in names if n)
    text = re.sub(r"\.gguf$", "", text.lower())
    return re.sub(r"[\s_.\-]+", " ", text).strip()


def _words(names: Iterable[str | None]) -> set[str]:
    return set(_fold(names).split())


def detect_family(*names: str | None, architecture: str | None = None) -> GuardFamily | None:
    """The guard family of a model from its names (metadata name, basename, file name),
    or None if it is none Bastion knows how to prompt."""
    text = _fold(names)
    for family, pattern, architectures in _FAMILIES:
        if pattern.search(text) and (not architecture or architecture in architectures):
            return family
    return None


def is_instruction_tuned(
    *names: str | None, finetune: str | None = None, has_chat_template: bool = False
) -> bool:
    """Whether a chat model follows instructions, so that it may check messages itself.

    The rule, in order: a name or fine-tune tag that says base/pretrained ("base",
    "pt") means no; a fine-tune tag or a name word that says instruct/chat ("instruct",
    "it", "chat", "sft", "dpo") means yes; otherwise a chat template in the GGUF means
    yes (instruction-tuned releases ship one, base releases mostly do not); otherwise
    no. The starter (Gemma 3 270M base: no template, no such word) is not."""
    words = _words([*names, finetune])
    if words & _BASE_WORDS:
        return False
    if words & _INSTRUCT_WORDS:
        return True
    return has_chat_template
