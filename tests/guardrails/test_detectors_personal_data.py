"""Cards, IBANs, emails, phone numbers and national identifiers: the check rules make
the difference between a real identifier and a number that only looks like one."""

from __future__ import annotations

import pytest

from bastion_guardrails.detectors import (
    EmailDetector,
    IbanDetector,
    NationalIdDetector,
    PaymentCardDetector,
    PhoneDetector,
    mask,
)
from bastion_guardrails.detectors.checksums import iban_valid, luhn_valid, verhoeff_valid


def test_check_digit_algorithms() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert iban_valid("GB82WEST12345698765432")
    assert not iban_valid("GB82WEST12345698765433")
    assert verhoeff_valid("234123412346")
    assert not verhoeff_valid("234123412345")


@pytest.mark.parametrize(
    "card",
    [
        "4111 1111 1111 1111",
        "4532015112830366",
        "5555-5555-5555-4444",
        "3782 822463 10005",
        "6011111111111117",
    ],
)
def test_payment_cards_with_a_valid_luhn_digit_are_found(card: str) -> None:
    text = f"charge {card} today"
    assert mask(text, PaymentCardDetector().find(text)) == "charge [CARD NUMBER] today"


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails Luhn",
        "order 1234567890123456 is not a card",
        "0000 0000 0000 0000 passes Luhn but no issuer",
        "4111-1111 1111-1111 mixes separators",
        "9111111111111111 has no issuer prefix",
        "pi is 3.1415926535897932",
        "the totals were 4111, 1111, 1111 and 1111",
    ],
)
def test_card_look_alikes_are_left_alone(text: str) -> None:
    assert PaymentCardDetector().find(text) == []


@pytest.mark.parametrize(
    "iban",
    ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "FR14 2004 1010 0505 0001 3M02 606"],
)
def test_ibans_with_valid_check_digits_are_found(iban: str) -> None:
    text = f"pay to {iban}. Thanks"
    assert mask(text, IbanDetector().find(text)) == "pay to [IBAN]. Thanks"


@pytest.mark.parametrize(
    "text",
    [
        "GB83 WEST 1234 5698 7654 32 has wrong check digits",
        "GB82 WEST 1234 5698 7654 is too short for GB",
        "XX82 WEST 1234 5698 7654 32 is no country",
        "DE89 3704 0044 0532 0130 0012 is too long for DE",
    ],
)
def test_iban_look_alikes_are_left_alone(text: str) -> None:
    assert IbanDetector().find(text) == []


@pytest.mark.parametrize(
    "address", ["jane.doe@example.com", "j+tag@mail.example.co.uk", "first_last99@sub.example.org"]
)
def test_email_addresses_are_found(address: str) -> None:
    text = f"write to <{address}> please"
    assert mask(text, EmailDetector().find(text)) == "write to <[EMAIL]> please"


@pytest.mark.parametrize(
    "text",
    ["ping @jane on chat", "ssh user@localhost", "see logo@2x.png", "a@b.c", "x @ y dot com"],
)
def test_email_look_alikes_are_left_alone(text: str) -> None:
    assert EmailDetector().find(text) == []


@pytest.mark.parametrize(
    "phone",
    ["+1 415 555 2671", "+44 20 7946 0958", "(415) 555-2671", "415-555-2671", "020 7946 0958"],
)
def test_phone_numbers_are_found(phone: str) -> None:
    text = f"call {phone} now"
    assert mask(text, PhoneDetector().find(text)) == "call [PHONE] now"


@pytest.mark.parametrize(
    "text",
    [
        "on 2024-01-15 at 12:30",
        "version 1.2.3.4 shipped",
        "ISBN 978-3-16-148410-0",
        "the range is 10-20",
        "zip 12345-6789",
        "between 1990 and 2000",
        "(123) 456-7890 has an impossible area code",
        "+1 23 is too short",
    ],
)
def test_phone_look_alikes_are_left_alone(text: str) -> None:
    assert PhoneDetector().find(text) == []


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("SSN 536-22-1234 on file", "us_ssn"),
        ("NI number AB 12 34 56 C", "uk_nino"),
        ("NINO: AB123456C", "uk_nino"),
        ("SIN 130 692 544", "ca_sin"),
        ("DNI 12345678Z", "es_dni"),
        ("NIE X1234567L", "es_nie"),
        ("Aadhaar 2341 2341 2346", "in_aadhaar"),
    ],
)
def test_national_ids_with_valid_structure_are_found(text: str, kind: str) -> None:
    findings = NationalIdDetector().find(text)
    assert [f.kind for f in findings] == [kind]
    assert "[NATIONAL ID]" in mask(text, findings)


@pytest.mark.parametrize(
    "text",
    [
        "666-22-1234 is never issued",
        "000-12-3456 has area 000",
        "912-12-3456 is an ITIN range",
        "536-00-1234 has group 00",
        "123-45-6789 is the textbook example",
        "536-22 1234 mixes separators",
        "QQ 12 34 56 C is HMRC's example",
        "GB123456A has an invalid prefix",
        "AB123456E has an invalid suffix",
        "130 692 545 fails Luhn",
        "046 454 286 starts with 0, which is never assigned",
        "12345678A has the wrong letter",
        "2341 2341 2345 fails Verhoeff",
        "536221234 without separators is just a number",
    ],
)
def test_national_id_look_alikes_are_left_alone(text: str) -> None:
    assert NationalIdDetector().find(text) == []


@pytest.mark.parametrize(
    ("detector", "text", "held"),
    [
        (PaymentCardDetector(), "card 4111 1111", "4111 1111"),
        (PaymentCardDetector(), "card 4111 1111 and", ""),
        (IbanDetector(), "IBAN GB82 WEST", "GB82 WEST"),
        (EmailDetector(), "mail jane.doe", "jane.doe"),
        (EmailDetector(), "mail jane.doe@exam", "jane.doe@exam"),
        (EmailDetector(), "mail me ", ""),
        (PhoneDetector(), "call +44 20", "+44 20"),
        (NationalIdDetector(), "NI AB 12 34", "AB 12 34"),
    ],
)
def test_streamed_tails_that_may_become_personal_data_are_held(
    detector: PaymentCardDetector
    | IbanDetector
    | EmailDetector
    | PhoneDetector
    | NationalIdDetector,
    text: str,
    held: str,
) -> None:
    assert text[detector.hold_from(text) :] == held
