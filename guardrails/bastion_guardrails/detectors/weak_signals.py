"""The pieces a text is scored with from weak signals: a `Signal` worth some points,
made of `Branch`es (a pattern searched only around the words every match must hold), the
text's `Vocabulary` of stems, and the `SetUpScore` a sensitivity's threshold is held
against. The jailbreak set-ups' signals are in `jailbreak_signals`."""

from __future__ import annotations

import bisect
import enum
import re
from dataclasses import dataclass


class Sensitivity(enum.Enum):
    """How many points a set-up needs: Strict also stops a set-up with one strong sign
    and a single weak one (a persona that may not refuse)."""

    STANDARD = "standard"
    STRICT = "strict"

    @property
    def threshold(self) -> int:
        return _THRESHOLDS[self]


_THRESHOLDS = {Sensitivity.STANDARD: 6, Sensitivity.STRICT: 5}


_WORD = re.compile(r"[a-z0-9]+")
_STEM = re.compile(r"[a-z0-9]{3,}")


class Vocabulary:
    """The words of a text, sorted, so that "does a word start with this stem?" costs a
    binary search and not a pass over the whole text."""

    def __init__(self, folded: str) -> None:
        self.words = set(_WORD.findall(folded))
        self._words = sorted(self.words)

    def __contains__(self, stem: str) -> bool:
        at = bisect.bisect_left(self._words, stem)
        return at < len(self._words) and self._words[at].startswith(stem)


@dataclass(frozen=True)
class Branch:
    """One pattern of a signal, and the gates that let a long text be searched quickly:
    every match holds one of the gates, and is at most `reach` characters long, so only
    the stretches of text around the gates that occur are searched. A gate of letters
    and digits is the start of a word; any other (with a space, a symbol, or marked
    "*") may sit anywhere."""

    stems: tuple[str, ...]
    infixes: tuple[str, ...]
    pattern: re.Pattern[str]
    reach: int

    def windows(self, folded: str, words: Vocabulary) -> list[tuple[int, int]]:
        """The stretches of `folded` (start, end) in which a match can lie."""
        found = [gate for gate in self.stems if gate in words]
        found += [gate for gate in self.infixes if gate in folded]
        if not found:
            return []
        # Past this many stretches, searching the whole text costs less.
        most = len(folded) // (2 * self.reach)
        spans = []
        for gate in found:
            at = folded.find(gate)
            while at != -1:
                spans.append((max(0, at - self.reach), at + len(gate) + self.reach))
                if len(spans) > most:
                    return [(0, len(folded))]
                at = folded.find(gate, at + 1)
        spans.sort()
        merged = [spans[0]]
        for start, end in spans[1:]:
            if start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return merged

    def search(self, folded: str, words: Vocabulary) -> re.Match[str] | None:
        for start, end in self.windows(folded, words):
            match = self.pattern.search(folded, start, end)
            if match is not None:
                return match
        return None

    def finditer(self, folded: str, words: Vocabulary) -> list[re.Match[str]]:
        return [
            match
            for start, end in self.windows(folded, words)
            for match in self.pattern.finditer(folded, start, end)
        ]


@dataclass(frozen=True)
class Signal:
    """One family of phrases: what it says in words and what it is worth."""

    key: str
    description: str  # for a user: "refusals forbidden"
    points: int
    branches: tuple[Branch, ...]

    def search(self, folded: str, words: Vocabulary) -> re.Match[str] | None:
        for branch in self.branches:
            match = branch.search(folded, words)
            if match is not None:
                return match
        return None


@dataclass(frozen=True)
class Hit:
    signal: Signal
    start: int
    end: int


@dataclass(frozen=True)
class SetUpScore:
    points: int
    hits: tuple[Hit, ...]

    def reaches(self, sensitivity: Sensitivity) -> bool:
        return self.points >= sensitivity.threshold

    @property
    def span(self) -> tuple[int, int]:
        return min(h.start for h in self.hits), max(h.end for h in self.hits)

    @property
    def label(self) -> str:
        """What a user reads, e.g. "a jailbreak set-up (a persona free of its rules,
        refusals forbidden)": the three signals worth most, in the order of the text."""
        strongest = sorted(self.hits, key=lambda h: -h.signal.points)[:3]
        parts = [h.signal.description for h in sorted(strongest, key=lambda h: h.start)]
        return f"a jailbreak set-up ({', '.join(parts)})"


def phrase(pattern: str) -> re.Pattern[str]:
    """A pattern in which every space stands for any run of whitespace (" ?" for an
    optional one) and "'" for a straight or missing apostrophe."""
    return re.compile(pattern.replace(" ?", r"\s*").replace(" ", r"\s+").replace("'", "'?"))


def branch(gates: str, pattern: str, reach: int = 160) -> Branch:
    """A branch searched only around its gates ("a|b|c"), one of which every match of
    `pattern` holds; no match is longer than `reach`."""
    stems = tuple(g for g in gates.split("|") if _STEM.fullmatch(g))
    infixes = tuple(g.lstrip("*") for g in gates.split("|") if not _STEM.fullmatch(g))
    return Branch(stems, infixes, phrase(pattern), reach)
