"""Terms a profile lists itself (a project code name, a customer's name): matched case
insensitively as whole words or phrases."""

from __future__ import annotations

import re
from collections.abc import Sequence

from bastion_guardrails.detectors.base import Finding


class TermsDetector:
    name = "terms"

    def __init__(self, terms: Sequence[str]) -> None:
        self.terms = tuple(sorted({t.strip().lower() for t in terms if t.strip()}))
        if self.terms:
            alternatives = "|".join(re.escape(t) for t in sorted(self.terms, key=len, reverse=True))
            self._pattern: re.Pattern[str] | None = re.compile(
                rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE
            )
        else:
            self._pattern = None

    def find(self, text: str) -> list[Finding]:
        if self._pattern is None:
            return []
        return [
            Finding("term", "a term this profile does not allow", *m.span(), "[REDACTED]")
            for m in self._pattern.finditer(text)
        ]

    def hold_from(self, text: str) -> int:
        """Hold the end of the text while it could still grow into a listed term."""
        lowered = text[-80:].lower()
        offset = len(text) - len(lowered)
        hold = len(text)
        for term in self.terms:
            for size in range(min(len(term), len(lowered)), 0, -1):
                if term.startswith(lowered[-size:]) and (
                    size == len(lowered) or not lowered[-size - 1].isalnum()
                ):
                    hold = min(hold, offset + len(lowered) - size)
                    break
        return hold
