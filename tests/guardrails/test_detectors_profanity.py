"""The Strict profile's profanity list, and the word list a profile supplies."""

from __future__ import annotations

import pytest

from bastion_guardrails.detectors import ProfanityDetector, TermsDetector, mask


@pytest.mark.parametrize(
    "text",
    ["what the fuck", "This is bullshit.", "Fucking hell", "sh!t happens", "a$$hole", "f*ck off"],
)
def test_profanity_is_found(text: str) -> None:
    assert ProfanityDetector().find(text)


@pytest.mark.parametrize(
    "text",
    [
        "Scunthorpe United won",
        "my assistant is classic",
        "a cocktail at Dickens' pub",
        "add the spices and shiitake",
        "I pricked my finger on a rose",
        "the crapshoot of the market",
        "Essex and Sussex",
        "hello, passage, therapist",
    ],
)
def test_words_that_contain_profanity_pass(text: str) -> None:
    assert ProfanityDetector().find(text) == []


def test_profanity_is_masked_to_its_length() -> None:
    text = "oh shit, sorry"
    assert mask(text, ProfanityDetector().find(text)) == "oh ****, sorry"


@pytest.mark.parametrize(
    ("text", "held"),
    [("what the fu", "fu"), ("what the fuck", "fuck"), ("what the fuck.", ""), ("Once", "")],
)
def test_a_word_that_may_grow_into_profanity_is_held(text: str, held: str) -> None:
    assert text[ProfanityDetector().hold_from(text) :] == held


def test_listed_terms_are_found_as_whole_words() -> None:
    terms = TermsDetector(["Project Falcon", "zebra"])
    assert [f.kind for f in terms.find("the project falcon roadmap")] == ["term"]
    assert terms.find("zebras and falconry") == []
    assert "the project falc"[terms.hold_from("the project falc") :] == "project falc"
    assert terms.hold_from("the weather") == len("the weather")
