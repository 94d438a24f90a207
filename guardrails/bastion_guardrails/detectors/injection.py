"""Prompt-injection and jailbreak signatures: "ignore previous instructions" and its
family, DAN and developer-mode prompts, role-play that removes the rules, requests for
the system prompt, chat-template role tokens, and the same phrases hidden in base64,
hex or ROT13.

Text is compared after Unicode compatibility folding, lower-casing and removal of
zero-width characters, with any run of whitespace standing for a space, so fullwidth
letters, doubled spaces and zero-width joiners inside "ignore previous instructions"
change nothing.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata

from bastion_guardrails.detectors.base import Finding

_ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad")

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


def _phrase(pattern: str) -> re.Pattern[str]:
    """A signature in which every space stands for any run of whitespace (" ?" for an
    optional one)."""
    return re.compile(pattern.replace(" ?", r"\s*").replace(" ", r"\s+"))


_SIGNATURES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "an instruction to ignore the assistant's instructions",
        _phrase(
            r"\b(?:ignore|disregard|forget|override|bypass|skip|abandon|discard|neglect)"
            rf"(?: {_FILLER})*(?: {_PRIOR})+(?: {_FILLER})*(?: [\w-]+)? {_RULES}\b"
            r"|\b(?:ignore|disregard|forget) (?:everything|anything|all)(?: else)?"
            r" (?:(?:you (?:were|have been|'ve been) (?:told|taught|given|instructed))"
            r"|(?:that )?(?:you know about|i said) (?:your )?(?:rules|instructions))"
        ),
    ),
    (
        "a DAN-style jailbreak prompt",
        _phrase(
            r"\bdo anything now\b|\b(?:dan|stan|dude|aim|evil(?:bot)?|jailbreak(?:ed)?) mode\b"
            r"|\b(?:act as|you are(?: now)?|become|pretend to be) (?:a |an |the )?(?:dan|stan)\b"
            r"|\bdeveloper mode (?:enabled|activated)\b|\bdeveloper mode on(?= ?(?:[.!:,]|$))"
            r"|\benable developer mode\b"
            r"|\b(?:you are|you're) (?:now )?(?:in|running in) (?:developer|god|dan"
            r"|jailbreak|unrestricted|unfiltered|debug) mode\b"
        ),
    ),
    (
        "a role-play that removes the assistant's rules",
        _phrase(
            r"\b(?:pretend|imagine|act as if|behave as if|suppose)(?: that)? (?:you|you're|you are)"
            rf"\b[^.!?\n]{{0,40}}\b(?:no|without(?: any)?|free (?:of|from)(?: all)?|zero) {_LIMITS}"
            r"|\b(?:act|behave|respond|answer) as (?:a |an )?(?:unfiltered|uncensored|unrestricted"
            r"|unaligned|amoral|jailbroken|unbound)\b"
            r"|\byou are (?:now )?(?:unfiltered|uncensored|unrestricted|jailbroken|unbound"
            rf"|free (?:of|from)(?: all)? {_LIMITS})\b"
            r"|\bfrom now on\b[^.!?\n]{0,60}\b(?:without (?:any )?" + _LIMITS + r"|never refuse"
            r"|not bound by|no longer bound by|ignore (?:all|any|your))"
            r"|\byou (?:will|must|shall|can) (?:never|not) refuse\b"
            r"|\b(?:answer|respond|reply)\b[^.!?\n]{0,30}\bwithout (?:any )?(?:restrictions|filters"
            r"|censorship|refusing|refusals|warnings|disclaimers)\b"
            r"|\b(?:answer|respond|reply)\b[^.!?\n]{0,30}\bwithout (?:any )?(?:of )?your (?:own )?"
            + _LIMITS
        ),
    ),
    (
        "a request for the hidden system prompt",
        _phrase(
            r"\b(?:reveal|show|print|repeat|output|display|leak|dump|tell me|give me"
            r"|what (?:is|are|was))"
            r"\b[^.!?\n]{0,20}\b(?:your|the) (?:full |entire |exact |complete )?(?:system prompt"
            r"|initial (?:prompt|instructions)|hidden (?:prompt|instructions|rules)"
            r"|original (?:prompt|instructions)|developer (?:message|instructions)|pre-?prompt)"
        ),
    ),
    (
        "chat-template control tokens that impersonate the system",
        _phrase(
            r"<\|im_start\|> ?(?:system|developer)|<\|system\|>|<\|start_header_id\|> ?system"
            r"|\[/?inst\]|<</?sys>>|<start_of_turn> ?(?:system|model)"
            r"|(?:^|\n) ?(?:#{2,}|\[|<) ?(?:system|developer) ?(?:\]|>|:)"
            r"|\b(?:new|updated|revised|real) (?:system )?instructions ?:"
        ),
    ),
)

_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_\-]{16,}={0,2}")
_HEX_RUN = re.compile(r"\b(?:[0-9a-fA-F]{2}){12,}\b")


def _normalize(text: str) -> tuple[str, list[int] | None]:
    """Folded text, and for each of its characters the index it came from (None when
    every character stayed where it was)."""
    if text.isascii():
        return text.lower(), None
    chars: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        if char in _ZERO_WIDTH:
            continue
        folded = unicodedata.normalize("NFKC", char).lower() if not char.isascii() else char.lower()
        chars.append(folded)
        origin.extend([index] * len(folded))
    return "".join(chars), origin


def _span(match: re.Match[str], origin: list[int] | None) -> tuple[int, int]:
    if origin is None:
        return match.span()
    return origin[match.start()], origin[match.end() - 1] + 1


def _decoded_payloads(text: str) -> list[tuple[int, int, str]]:
    """(start, end, decoded text) for base64 and hex runs that decode to readable text."""
    found = []
    for match in _BASE64_RUN.finditer(text):
        run = match.group()
        padded = run + "=" * (-len(run) % 4)
        try:
            raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            continue
        found.append((match.start(), match.end(), raw))
    for match in _HEX_RUN.finditer(text):
        found.append((match.start(), match.end(), bytes.fromhex(match.group())))
    readable = []
    for start, end, raw in found:
        decoded = raw.decode("utf-8", errors="replace")
        printable = sum(char.isprintable() or char.isspace() for char in decoded)
        if decoded and printable / len(decoded) > 0.9:
            readable.append((start, end, decoded))
    return readable


class PromptInjectionDetector:
    name = "prompt_injection"

    def find(self, text: str) -> list[Finding]:
        folded, origin = _normalize(text)
        findings = []
        for label, pattern in _SIGNATURES:
            for match in pattern.finditer(folded):
                start, end = _span(match, origin)
                findings.append(Finding("prompt_injection", label, start, end, "[REMOVED]"))
        rot13 = codecs.decode(folded, "rot13")
        for label, pattern in _SIGNATURES[:3]:
            for match in pattern.finditer(rot13):
                start, end = _span(match, origin)
                hidden = f"{label}, hidden in ROT13"
                findings.append(Finding("prompt_injection", hidden, start, end, "[REMOVED]"))
        for start, end, decoded in _decoded_payloads(text):
            inner, _ = _normalize(decoded)
            for label, pattern in _SIGNATURES:
                if pattern.search(inner):
                    hidden = f"{label}, hidden in an encoded payload"
                    findings.append(Finding("prompt_injection", hidden, start, end, "[REMOVED]"))
                    break
        return findings

    def hold_from(self, text: str) -> int:
        # Signatures are phrases about instructions; in a streamed reply they are checked
        # whole at the end of each piece, so nothing is held back for them.
        return len(text)
