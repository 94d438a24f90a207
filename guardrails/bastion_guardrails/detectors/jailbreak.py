"""Jailbreak set-ups scored from weak signals.

The jailbreaks people paste are long role-play set-ups: a persona with a name that is
"free of all restrictions", must "stay in character", never refuses, answers twice (one
"classic", one "jailbroken"), is threatened with losing tokens, lives "in a hypothetical
story", or reads its orders from an encoding. No single sentence of such a set-up need be
a known signature, and most of those phrases alone are common in fine requests ("stay in
character", "developer mode", "in a story", "a villain with no morals"). So each family
of phrases is a signal worth some points, counted once however often it recurs, and a
text is a jailbreak set-up when its points reach the sensitivity's threshold: at
Standard, a role-play request that only sets up a character (a name, a game, "stay in
character", a story) never does; signs that the model's own limits are being removed
are needed as well.

`score` works on text already folded by the injection detector (Unicode compatibility
folding, lower case, typographic quotes made plain, zero-width characters gone). Each
pattern is searched only in the stretches of text around the words that any match of it
must contain (its gates), so a long ordinary text costs little more than looking those
words up.
"""

from __future__ import annotations

import re

from bastion_guardrails.detectors.jailbreak_signals import BAD, SIGNALS
from bastion_guardrails.detectors.weak_signals import (
    Branch,
    Hit,
    Sensitivity,
    SetUpScore,
    Signal,
    Vocabulary,
    branch,
)

__all__ = ["Branch", "Sensitivity", "SetUpScore", "Vocabulary", "branch", "score"]


# Illegal, immoral, explicit...: a set-up that names many kinds of wrong-doing is asking
# for them. Counted by distinct words.
_TRANSGRESSIONS = re.compile(rf"\b{BAD}\b")
_TRANSGRESSION_SIGNAL = Signal(
    "transgressions",
    "a list of what it may do that is wrong",
    2,
    (),
)
_TRANSGRESSION_WORDS = 4
_TRANSGRESSION_VOCABULARY = frozenset(re.findall(r"\w+", BAD))


def _transgressions(folded: str, vocabulary: Vocabulary) -> Hit | None:
    if len(vocabulary.words & _TRANSGRESSION_VOCABULARY) < _TRANSGRESSION_WORDS:
        return None
    words: dict[str, re.Match[str]] = {}
    for match in _TRANSGRESSIONS.finditer(folded):
        words.setdefault(match.group(), match)
        if len(words) >= _TRANSGRESSION_WORDS:
            first = min(words.values(), key=lambda m: m.start())
            return Hit(_TRANSGRESSION_SIGNAL, first.start(), match.end())
    return None


def score(folded: str, enough: int | None = None) -> SetUpScore:
    """The points of the signals found in `folded`, each counted once; with `enough`,
    the search stops as soon as the points reach it."""
    hits: list[Hit] = []
    points = 0
    words = Vocabulary(folded)
    for signal in SIGNALS:
        if enough is not None and points >= enough:
            break
        match = signal.search(folded, words)
        if match is not None:
            hits.append(Hit(signal, match.start(), match.end()))
            points += signal.points
    if enough is None or points < enough:
        hit = _transgressions(folded, words)
        if hit is not None:
            hits.append(hit)
            points += hit.signal.points
    return SetUpScore(points, tuple(hits))
