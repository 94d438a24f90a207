"""National identifiers, each with its format and check rule: US Social Security
numbers, UK National Insurance numbers, Canadian Social Insurance numbers, Spanish
DNI/NIE and Indian Aadhaar numbers. Numbers are matched only as usually written (with
their separators), since nine bare digits could be anything."""

from __future__ import annotations

import re

from bastion_guardrails.detectors.base import Finding, hold_by_patterns
from bastion_guardrails.detectors.checksums import luhn_valid, verhoeff_valid

_SSN = re.compile(r"(?<![\w\-])(\d{3})([\- ])(\d{2})\2(\d{4})(?![\w\-]|\.\d)")
# Never issued: the Woolworth wallet card, an advertising number, and the textbook one.
_SSN_NEVER_ISSUED = frozenset({"078051120", "219099999", "123456789"})

# First letter: not D, F, I, Q, U, V; second: not D, F, I, O, Q, U, V; suffix A-D.
_NINO = re.compile(
    r"(?<![A-Za-z0-9])([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]) ?(\d{2}) ?(\d{2}) ?(\d{2}) ?([A-D])"
    r"(?![A-Za-z0-9])"
)
_NINO_INVALID_PREFIXES = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})

_SIN = re.compile(r"(?<![\w\-])(\d{3})([\- ])(\d{3})\2(\d{3})(?![\w\-]|\.\d)")

_DNI = re.compile(r"(?<![\w\-])(\d{8})-?([A-Z])(?![\w\-])")
_NIE = re.compile(r"(?<![\w\-])([XYZ])-?(\d{7})-?([A-Z])(?![\w\-])")
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"

_AADHAAR = re.compile(r"(?<![\w\-])([2-9]\d{3})([ \-])(\d{4})\2(\d{4})(?![\w\-]|\.\d)")

_HOLD = (
    re.compile(r"(?<![\w\-])[XYZ]?\d[\d \-]*[A-Z]?\Z"),
    re.compile(r"(?<![A-Za-z0-9])[A-Z]{1,2}(?: ?\d{1,2}){0,3} ?[A-D]?\Z"),
)


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """SSA rules: area not 000, 666 or 900-999; group not 00; serial not 0000."""
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return area + group + serial not in _SSN_NEVER_ISSUED


class NationalIdDetector:
    name = "national_ids"

    def find(self, text: str) -> list[Finding]:
        findings: list[Finding] = []
        for match in _SSN.finditer(text):
            if ssn_valid(match.group(1), match.group(3), match.group(4)):
                findings.append(self._found("us_ssn", "a US Social Security number", match))
        for match in _NINO.finditer(text):
            if match.group(1) not in _NINO_INVALID_PREFIXES:
                label = "a UK National Insurance number"
                findings.append(self._found("uk_nino", label, match))
        for match in _SIN.finditer(text):
            digits = match.group(1) + match.group(3) + match.group(4)
            if digits[0] not in "08" and luhn_valid(digits):
                label = "a Canadian Social Insurance number"
                findings.append(self._found("ca_sin", label, match))
        for match in _DNI.finditer(text):
            if _DNI_LETTERS[int(match.group(1)) % 23] == match.group(2):
                findings.append(self._found("es_dni", "a Spanish DNI number", match))
        for match in _NIE.finditer(text):
            number = str("XYZ".index(match.group(1))) + match.group(2)
            if _DNI_LETTERS[int(number) % 23] == match.group(3):
                findings.append(self._found("es_nie", "a Spanish NIE number", match))
        for match in _AADHAAR.finditer(text):
            if verhoeff_valid(match.group(1) + match.group(3) + match.group(4)):
                findings.append(self._found("in_aadhaar", "an Aadhaar number", match))
        return findings

    @staticmethod
    def _found(kind: str, label: str, match: re.Match[str]) -> Finding:
        return Finding(kind, label, *match.span(), "[NATIONAL ID]")

    def hold_from(self, text: str) -> int:
        return hold_by_patterns(text, _HOLD)
