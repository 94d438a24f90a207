"""Email addresses and telephone numbers."""

from __future__ import annotations

import re

from bastion_guardrails.detectors.base import Finding, hold_by_patterns

_EMAIL = re.compile(
    r"(?<![\w.+\-%])[A-Za-z0-9](?:[A-Za-z0-9._%+\-]{0,62}[A-Za-z0-9_%+\-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,24})(?![\w\-]|\.\w)"
)
# "logo@2x.png" is a retina image name, not an address.
_FILE_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "pdf"})
# The local part of an address is personal too: hold any word that may still get an "@".
_EMAIL_HOLD = (re.compile(r"(?<![\w.+\-%])[A-Za-z0-9._%+\-]+(?:@[A-Za-z0-9.\-]*)?\Z"),)

# +CC followed by 7-14 more digits in groups; counted again below.
_INTERNATIONAL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .\-]?\(?\d{1,4}\)?){2,6}(?![\w\-])")
# North American Numbering Plan: area code and exchange never start with 0 or 1.
_NANP = re.compile(
    r"(?<![\w\-.+])(?:\+?1[ .\-]?)?(?:\([2-9]\d{2}\)[ ]?|[2-9]\d{2}[ .\-])[2-9]\d{2}[ .\-]\d{4}"
    r"(?![\w\-]|\.\d)"
)
# National numbers with a trunk 0, as written in the UK and most of Europe.
_TRUNK = re.compile(r"(?<![\w\-.+])0\d{2,4}[ \-]\d{3,4}[ \-]?\d{3,4}(?![\w\-]|\.\d)")
_PHONE_HOLD = (re.compile(r"(?<![\w])[+(]?\d[\d ().\-]*\Z"),)


class EmailDetector:
    name = "emails"

    def find(self, text: str) -> list[Finding]:
        return [
            Finding("email", "an email address", *match.span(), "[EMAIL]")
            for match in _EMAIL.finditer(text)
            if match.group(1).lower() not in _FILE_EXTENSIONS
        ]

    def hold_from(self, text: str) -> int:
        return hold_by_patterns(text, _EMAIL_HOLD)


class PhoneDetector:
    name = "phone_numbers"

    def find(self, text: str) -> list[Finding]:
        spans: list[tuple[int, int]] = []
        for match in _INTERNATIONAL.finditer(text):
            digits = sum(char.isdigit() for char in match.group())
            if 8 <= digits <= 15:
                spans.append(match.span())
        for pattern in (_NANP, _TRUNK):
            for match in pattern.finditer(text):
                digits = sum(char.isdigit() for char in match.group())
                if 10 <= digits <= 12:
                    spans.append(match.span())
        return [Finding("phone", "a phone number", start, end, "[PHONE]") for start, end in spans]

    def hold_from(self, text: str) -> int:
        return hold_by_patterns(text, _PHONE_HOLD)
