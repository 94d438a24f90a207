"""Profanity for the Strict profile: English swear words and slurs as whole words, with
their common inflections and look-alike spellings ("sh!t", "f*ck", "a$$").

Only whole words count, so "Scunthorpe", "assistant", "classic" and "cocktail" pass.
Words with an everyday meaning ("hell", "damn", "cock", "bloody", "ass" as in donkey
is kept out for the same reason as "Dick" the name) are left out on purpose: the list
is for language a workplace or a classroom would not accept.
"""

from __future__ import annotations

import bisect
import re

from bastion_guardrails.detectors.base import Finding

# Stems that are swear words in any inflection ("fucking", "shitty", "bitches").
INFLECTED: tuple[str, ...] = (
    "arsehole", "asshole", "bastard", "bitch", "bullshit", "clusterfuck", "cocksucker",
    "cunt", "dickhead", "dipshit", "douchebag", "dumbass", "faggot", "fuck", "fucker",
    "fuckface", "fuckwit", "goddamn", "horseshit", "jackass", "motherfucker", "nigga",
    "nigger", "retard", "shit", "shithead", "slut", "twat", "wank", "whore",
)  # fmt: skip
# Words that are only swear words as they stand (or plural): "spices", "pricked" and
# "crapshoot" must pass.
EXACT: tuple[str, ...] = (
    "arse", "bellend", "bollocks", "crap", "fag", "jerkoff", "kike", "piss", "prick",
    "shite", "spic", "wanker",
)  # fmt: skip
WORDS = INFLECTED + EXACT
_SUFFIXES = r"(?:s|es|ed|er|ers|ing|in|y|ty|face|head|heads)?"

# Look-alike characters people type to slip past filters.
_LOOKALIKES = {
    "a": "[a@4*]",
    "e": "[e3*]",
    "i": "[i1!*]",
    "o": "[o0*]",
    "u": "[u*v]",
    "s": "[s$5]",
    "t": "[t7]",
}


def _word_pattern(word: str) -> str:
    return "".join(_LOOKALIKES.get(char, re.escape(char)) for char in word)


def _alternatives(words: tuple[str, ...]) -> str:
    return "|".join(_word_pattern(w) for w in sorted(words, key=len, reverse=True))


_PROFANITY = re.compile(
    rf"(?<![\w@$*])(?:(?:{_alternatives(INFLECTED)}){_SUFFIXES}|(?:{_alternatives(EXACT)})s?)"
    r"(?![\w@$*])",
    re.IGNORECASE,
)
_SORTED = sorted(WORDS)
_TAIL_WORD = re.compile(r"(?<![\w@$*])[\w@$*!]+\Z")


class ProfanityDetector:
    name = "profanity"

    def find(self, text: str) -> list[Finding]:
        return [
            Finding("profanity", "profanity", *match.span(), "*" * (match.end() - match.start()))
            for match in _PROFANITY.finditer(text)
        ]

    def hold_from(self, text: str) -> int:
        """Hold a trailing word only while it could still become one on the list."""
        match = _TAIL_WORD.search(text, max(0, len(text) - 40))
        if match is None:
            return len(text)
        word = match.group().lower()
        if any(char in word for char in "@$*!0134573"):
            return match.start()  # a look-alike spelling: wait for the whole word
        index = bisect.bisect_left(_SORTED, word)
        if index < len(_SORTED) and _SORTED[index].startswith(word):
            return match.start()
        # An inflected form of a listed word ("fucking") is still growing too.
        if any(word.startswith(stem) for stem in INFLECTED if word[:1] == stem[:1]):
            return match.start()
        return len(text)
