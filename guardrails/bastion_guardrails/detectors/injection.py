"""Prompt injection and jailbreaks: signatures, and set-ups scored from weak signals.

Signatures are single phrases that stop a message alone: "ignore previous instructions"
and its family, DAN and developer-mode prompts, role-play that removes the rules,
requests for the system prompt, chat-template role tokens, and the same phrases hidden
in base64, hex or ROT13. The long role-play set-ups that people paste rarely hold such a
phrase, so `jailbreak.score` adds up weaker signs (a named persona free of its rules,
refusals forbidden, two answers side by side, tokens to lose...) and a set-up is stopped
when they reach the sensitivity's threshold; a set-up hidden in base64 or hex is scored
too.

Text is compared after Unicode compatibility folding, lower-casing, removal of
zero-width characters and plain quotes for typographic ones, with any run of whitespace
standing for a space, so fullwidth letters, doubled spaces and zero-width joiners inside
"ignore previous instructions" change nothing.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata

from bastion_guardrails.detectors import jailbreak
from bastion_guardrails.detectors.base import Finding
from bastion_guardrails.detectors.weak_signals import Branch, Sensitivity, Vocabulary, branch

_ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad")
# Typographic quotes, which NFKC keeps, read as the plain ones ("doesn\u2019t").
_QUOTES = {"\u2018": "'", "\u2019": "'", "\u201b": "'", "\u2032": "'", "\u201c": '"', "\u201d": '"'}
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")

_PRIOR = (
    r"(?:all|any|every|previous|prior|above|earlier|preceding|foregoing|initial|original"
    r"|system|your|developer|safety|existing|former)"
)
_FILLER = r"(?:all|any|every|each|of|the|your|my|these|those|and|other|current)"
_RULES = (
    r"(?:instructions?|prompts?|rules|directives?|directions|guidelines|constraints|context"
    r"|programming|polic(?:y|ies)|restrictions|guardrails|filters|safeguards|commands|orders"
    r"|training|alignment)"
)
_LIMITS = (
    r"(?:restrictions|rules|limits|limitations|filters|guidelines|censorship|ethics|morals"
    r"|boundaries|guardrails|policies|safeguards|content polic(?:y|ies))"
)

_SIGNATURES: tuple[tuple[str, tuple[Branch, ...]], ...] = (
    (
        "an instruction to ignore the assistant's instructions",
        (
            branch(
                "ignor|disregard|forget|overrid|bypass|skip|abandon|discard|neglect",
                r"\b(?:ignore|disregard|forget|override|bypass|skip|abandon|discard|neglect)"
                # Bounded repeats: "ignore all all all ..." must not backtrack for long.
                rf"(?: {_FILLER}){{0,4}}(?: {_PRIOR}){{1,4}}(?: {_FILLER}){{0,4}}(?: [\w-]+)?"
                rf" {_RULES}\b"
                r"|\b(?:ignore|disregard|forget) (?:everything|anything|all)(?: else)?"
                r" (?:(?:you (?:were|have been|'ve been) (?:told|taught|given|instructed))"
                r"|(?:that )?(?:you know about|i said) (?:your )?(?:rules|instructions))",
                reach=240,
            ),
        ),
    ),
    (
        "a DAN-style jailbreak prompt",
        (
            branch("anything", r"\bdo anything now\b"),
            branch(
                "mode",
                r"\b(?:dan|stan|dude|aim|evil(?:bot)?|jailbreak(?:ed)?) mode\b"
                r"|\bdeveloper mode (?:enabled|activated)\b"
                r"|\bdeveloper mode on(?= ?(?:[.!:,]|$))"
                r"|\b(?:you are|you're) (?:now )?(?:in|running in) (?:developer|god|dan"
                r"|jailbreak|unrestricted|unfiltered|debug) mode\b",
            ),
            branch(
                "dan|stan",
                r"\b(?:act as|you are(?: now)?|become|pretend to be) (?:a |an |the )?"
                r"(?:dan|stan)\b",
            ),
        ),
    ),
    (
        "a role-play that removes the assistant's rules",
        (
            branch(
                "pretend|imagine|act|behave|suppose",
                r"\b(?:pretend|imagine|act as if|behave as if|suppose)(?: that)? (?:you"
                r"|you're|you are)\b[^.!?\n]{0,40}\b(?:no|without(?: any)?|free (?:of|from)"
                rf"(?: all)?|zero) {_LIMITS}",
            ),
            branch(
                "unfilter|uncensor|unrestrict|unalign|amoral|jailbr|unbound|free",
                r"\b(?:act|behave|respond|answer) as (?:a |an )?(?:unfiltered|uncensored"
                r"|unrestricted|unaligned|amoral|jailbroken|unbound)\b"
                r"|\byou are (?:now )?(?:unfiltered|uncensored|unrestricted|jailbroken|unbound"
                rf"|free (?:of|from)(?: all)? {_LIMITS})\b",
            ),
            branch(
                "from now",
                r"\bfrom now on\b[^.!?\n]{0,60}\b(?:without (?:any )?" + _LIMITS + r"|never"
                r" refuse|not bound by|no longer bound by|ignore (?:all|any|your))",
            ),
            branch("refus", r"\byou (?:will|must|shall|can) (?:never|not) refuse\b"),
            branch(
                "without",
                # Not "without warnings": "answer without disclaimers, just the code" is a
                # fine request; it is one of the weak signals of a set-up instead.
                r"\b(?:answer|respond|reply)\b[^.!?\n]{0,30}\bwithout (?:any )?(?:restrictions"
                r"|filters|censorship|refusing|refusals)\b"
                r"|\b(?:answer|respond|reply)\b[^.!?\n]{0,30}\bwithout (?:any )?(?:of )?your"
                r" (?:own )?" + _LIMITS,
            ),
        ),
    ),
    (
        "a request for the hidden system prompt",
        (
            branch(
                "system|initial|hidden|original|develop|prepromp|pre",
                r"\b(?:reveal|show|print|repeat|output|display|leak|dump|tell me|give me"
                r"|what (?:is|are|was))\b[^.!?\n]{0,20}\b(?:your|the) (?:full |entire |exact "
                r"|complete )?(?:system prompt|initial (?:prompt|instructions)|hidden (?:prompt"
                r"|instructions|rules)|original (?:prompt|instructions)|developer (?:message"
                r"|instructions)|pre-?prompt)",
            ),
        ),
    ),
    (
        "chat-template control tokens that impersonate the system",
        (
            branch(
                "im_start|system|start_header_id|[inst]|[/inst]|<<sys|<</sys|start_of_turn",
                r"<\|im_start\|> ?(?:system|developer)|<\|system\|>|<\|start_header_id\|>"
                r" ?system|\[/?inst\]|<</?sys>>|<start_of_turn> ?(?:system|model)",
            ),
            branch(
                "system|develop",
                r"(?:^|\n) ?(?:#{2,}|\[|<) ?(?:system|developer) ?(?:\]|>|:)",
            ),
            branch(
                "instruction",
                r"\b(?:new|updated|revised|real) (?:system )?instructions ?:",
            ),
        ),
    ),
)
# The signatures worth looking for under ROT13, and the gates that tell whether a text
# may hold one of them at all: the ROT13 forms of their own gates.
_ROT13_SIGNATURES = _SIGNATURES[:3]
_ROT13_GATES = tuple(
    codecs.encode(gate, "rot13")
    for _, branches in _ROT13_SIGNATURES
    for b in branches
    for gate in b.stems + b.infixes
)

_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_\-]{16,}={0,2}")
_HEX_RUN = re.compile(r"\b(?:[0-9a-fA-F]{2}){12,}\b")
_PAYLOAD_LENGTH = 16
# A text of thousands of encoded runs is not read run by run past this many.
_MOST_PAYLOADS = 32


def _normalize(text: str) -> tuple[str, list[int] | None]:
    """Folded text, and for each of its characters the index it came from (None when
    every character stayed where it was)."""
    if text.isascii():
        return text.lower(), None
    chars: list[str] = []
    origin: list[int] = []
    done = 0
    # ASCII stretches are folded whole; only the other characters one by one.
    for run in _NON_ASCII.finditer(text):
        chars.append(text[done : run.start()].lower())
        origin.extend(range(done, run.start()))
        for index in range(run.start(), run.end()):
            char = text[index]
            if char in _ZERO_WIDTH:
                continue
            folded = _QUOTES.get(char) or unicodedata.normalize("NFKC", char).lower()
            chars.append(folded)
            origin.extend([index] * len(folded))
        done = run.end()
    chars.append(text[done:].lower())
    origin.extend(range(done, len(text)))
    return "".join(chars), origin


def _span(start: int, end: int, origin: list[int] | None) -> tuple[int, int]:
    if origin is None:
        return start, end
    return origin[start], origin[end - 1] + 1


def _decoded_payloads(text: str) -> list[tuple[int, int, str]]:
    """(start, end, decoded text) for base64 and hex runs that decode to readable text."""
    if all(len(token) < _PAYLOAD_LENGTH for token in text.split()):
        return []
    found: dict[bytes, tuple[int, int]] = {}
    for match in _BASE64_RUN.finditer(text):
        run = match.group()
        padded = run + "=" * (-len(run) % 4)
        try:
            raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            continue
        found.setdefault(raw, match.span())
    for match in _HEX_RUN.finditer(text):
        found.setdefault(bytes.fromhex(match.group()), match.span())
    readable = []
    for raw, (start, end) in list(found.items())[:_MOST_PAYLOADS]:
        try:
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError:
            # Identifiers and hashes read as base64 decode to noise, not to UTF-8.
            continue
        printable = sum(char.isprintable() or char.isspace() for char in decoded)
        if decoded and printable / len(decoded) > 0.9:
            readable.append((start, end, decoded))
    return readable


def _signature_spans(
    folded: str, signatures: tuple[tuple[str, tuple[Branch, ...]], ...]
) -> list[tuple[str, int, int]]:
    words = Vocabulary(folded)
    return [
        (label, match.start(), match.end())
        for label, branches in signatures
        for b in branches
        for match in b.finditer(folded, words)
    ]


_ROLE_MARKERS = tuple(
    signature
    for signature in _SIGNATURES
    if signature[0] == "chat-template control tokens that impersonate the system"
)


def without_role_markers(text: str) -> str:
    """`text` with its chat-template role tokens and role headers ("<|im_start|>system",
    "[INST]", "## System:") blanked, as the injection signatures find them: for text
    that carries them by right (a client's own system prompt, or a raw prompt whose
    template the client writes itself), so that every other check still reads it."""
    folded, origin = _normalize(text)
    spans = sorted(_span(s, e, origin) for _, s, e in _signature_spans(folded, _ROLE_MARKERS))
    kept: list[str] = []
    done = 0
    for found, end in spans:
        start = max(found, done)
        kept.append(text[done:start] + " " * max(0, end - start))
        done = max(done, end)
    kept.append(text[done:])
    return "".join(kept)


class PromptInjectionDetector:
    name = "prompt_injection"

    def __init__(self, sensitivity: Sensitivity = Sensitivity.STANDARD) -> None:
        self.sensitivity = sensitivity

    def _finding(self, label: str, start: int, end: int) -> Finding:
        return Finding("prompt_injection", label, start, end, "[REMOVED]")

    def find(self, text: str) -> list[Finding]:
        folded, origin = _normalize(text)
        findings = []
        for label, start, end in _signature_spans(folded, _SIGNATURES):
            findings.append(self._finding(label, *_span(start, end, origin)))
        setup = jailbreak.score(folded, enough=self.sensitivity.threshold)
        if setup.reaches(self.sensitivity):
            findings.append(self._finding(setup.label, *_span(*setup.span, origin)))
        if any(gate in folded for gate in _ROT13_GATES):
            rot13 = codecs.decode(folded, "rot13")
            for label, start, end in _signature_spans(rot13, _ROT13_SIGNATURES):
                hidden = f"{label}, hidden in ROT13"
                findings.append(self._finding(hidden, *_span(start, end, origin)))
        for start, end, decoded in _decoded_payloads(text):
            inner, _ = _normalize(decoded)
            labels = [label for label, _, _ in _signature_spans(inner, _SIGNATURES)]
            inner_setup = jailbreak.score(inner, enough=self.sensitivity.threshold)
            if inner_setup.reaches(self.sensitivity):
                labels.append(inner_setup.label)
            if labels:
                hidden = f"{labels[0]}, hidden in an encoded payload"
                findings.append(self._finding(hidden, start, end))
        return findings

    def hold_from(self, text: str) -> int:
        # Signatures are phrases about instructions; in a streamed reply they are checked
        # whole at the end of each piece, so nothing is held back for them.
        return len(text)
