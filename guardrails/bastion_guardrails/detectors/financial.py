"""Payment card numbers (Luhn-checked, with a known issuer prefix) and IBANs (checked
against each country's length and the ISO 7064 mod-97 rule)."""

from __future__ import annotations

import re

from bastion_guardrails.detectors.base import Finding, hold_by_patterns
from bastion_guardrails.detectors.checksums import iban_valid, luhn_valid

# 13 to 19 digits, optionally in groups separated by one space or dash.
_CARD = re.compile(r"(?<![\d\-.,])\d(?:[ \-]?\d){12,18}(?![\d\-]|[.,]\d)")
_CARD_HOLD = (re.compile(r"(?<![\d\-])\d(?:[ \-]?\d){0,18}[ \-]?\Z"),)

# Issuer identification number ranges of the major networks (the first digits).
_ISSUERS = re.compile(
    r"^(?:4"  # Visa
    r"|5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)"  # Mastercard
    r"|3[47]"  # American Express
    r"|6(?:011|5|4[4-9])"  # Discover
    r"|35(?:2[89]|[3-8]\d)"  # JCB
    r"|3(?:0[0-5]|[689])"  # Diners Club
    r"|62"  # UnionPay
    r"|5[06-9]|6\d)"  # Maestro
)

# IBAN lengths by country (SWIFT IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2})(\d{2})")
_IBAN_HOLD = (re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){0,32} ?\Z"),)


class PaymentCardDetector:
    name = "payment_cards"

    def find(self, text: str) -> list[Finding]:
        findings = []
        for match in _CARD.finditer(text):
            raw = match.group()
            digits = raw.replace(" ", "").replace("-", "")
            if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
                continue
            # Mixed separators ("4111-1111 1111-1111") are not how cards are written.
            if " " in raw and "-" in raw:
                continue
            if _ISSUERS.match(digits) and luhn_valid(digits):
                findings.append(
                    Finding("payment_card", "a payment card number", *match.span(), "[CARD NUMBER]")
                )
        return findings

    def hold_from(self, text: str) -> int:
        return hold_by_patterns(text, _CARD_HOLD)


class IbanDetector:
    name = "iban"

    def find(self, text: str) -> list[Finding]:
        findings = []
        for match in _IBAN_START.finditer(text):
            length = IBAN_LENGTHS.get(match.group(1))
            if length is None:
                continue
            end = self._end_of(text, match.start(), length)
            if end is None:
                continue
            compact = text[match.start() : end].replace(" ", "")
            if iban_valid(compact):
                findings.append(Finding("iban", "an IBAN", match.start(), end, "[IBAN]"))
        return findings

    @staticmethod
    def _end_of(text: str, start: int, length: int) -> int | None:
        """Where an IBAN of `length` characters starting at `start` ends, allowing single
        spaces between characters; None if the text does not hold one of that length."""
        count = 0
        position = start
        while count < length:
            if position >= len(text):
                return None
            char = text[position]
            if char == " " and count > 0 and position + 1 < len(text) and text[position + 1] != " ":
                position += 1
                continue
            if not (char.isascii() and (char.isdigit() or char.isupper())):
                return None
            count += 1
            position += 1
        if position < len(text) and text[position].isascii() and text[position].isalnum():
            return None
        return position

    def hold_from(self, text: str) -> int:
        return hold_by_patterns(text, _IBAN_HOLD)
