"""Private keys and credentials: cloud keys, service tokens, JWTs, connection strings
with passwords, and `password=`-style assignments.

Formats with a fixed prefix (AKIA..., ghp_..., xoxb-...) are matched on their own;
formats without one (an AWS secret access key, a generic password) only next to the
name that introduces them, so that ordinary long words and hashes are left alone. An
AWS secret access key is also found beside its access key ID, however it is introduced
("the key AKIA... and secret wJalr..."): 40 characters of base64 with both cases of
letters, which a hex hash never has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bastion_guardrails.detectors.base import HOLD_LOOKBACK, Finding, hold_by_patterns

# Placeholders, not credentials.
SECRET = "[SECRET]"  # noqa: S105
PASSWORD = "[PASSWORD]"  # noqa: S105
PRIVATE_KEY = "[PRIVATE KEY]"

# Characters that may continue a token: a match must not sit inside a longer word.
_B = r"(?<![A-Za-z0-9_\-])"
_E = r"(?![A-Za-z0-9_\-])"


@dataclass(frozen=True)
class _TokenFormat:
    kind: str
    label: str
    pattern: re.Pattern[str]
    # Literal substrings one of which every match contains: a cheap test that skips the
    # regex (each costs tens of microseconds on a long message) for almost all text.
    hints: tuple[str, ...]
    placeholder: str = SECRET


def _token(kind: str, label: str, body: str, *hints: str) -> _TokenFormat:
    return _TokenFormat(kind, label, re.compile(_B + body + _E), hints)


_AWS_PREFIXES: tuple[str, ...] = ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AIPA", "ANPA")
_AWS_PREFIXES += ("ANVA", "APKA", "AROA", "ASCA")

_TOKENS = (
    # AWS access key IDs: a four-letter type prefix and 16 base32 characters.
    _token(
        "aws_access_key",
        "an AWS access key",
        "(?:" + "|".join(_AWS_PREFIXES) + ")[A-Z2-7]{16}",
        *_AWS_PREFIXES,
    ),
    _token("gcp_api_key", "a Google Cloud API key", r"AIza[0-9A-Za-z_\-]{35}", "AIza"),
    _token(
        "gcp_oauth_secret", "a Google OAuth client secret", r"GOCSPX-[0-9A-Za-z_\-]{28}", "GOCSPX-"
    ),
    # Azure AD client secrets (since 2022): three characters, a digit, "Q~", and 31-34 more.
    _TokenFormat(
        "azure_client_secret",
        "an Azure client secret",
        re.compile(r"(?<![\w~.\-])[A-Za-z0-9_~.\-]{3}\dQ~[A-Za-z0-9_~.\-]{31,34}(?![\w~.\-])"),
        ("Q~",),
    ),
    _token(
        "github_token",
        "a GitHub token",
        r"gh[pousr]_[A-Za-z0-9]{36}",
        *("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    ),
    _token("github_token", "a GitHub token", r"github_pat_[A-Za-z0-9_]{82}", "github_pat_"),
    _token(
        "gitlab_token",
        "a GitLab token",
        r"gl(?:pat|dt|rt|ptt|cbt)-[0-9A-Za-z_\-]{20}",
        *("glpat-", "gldt-", "glrt-", "glptt-", "glcbt-"),
    ),
    _token(
        "slack_token", "a Slack token", r"xox[abposr]-(?:[0-9A-Za-z]+-){1,4}[0-9A-Za-z]{6,}", "xox"
    ),
    _token("slack_token", "a Slack token", r"xapp-\d-[A-Z0-9]+-\d+-[a-z0-9]{16,}", "xapp-"),
    _TokenFormat(
        "slack_webhook",
        "a Slack webhook URL",
        re.compile(
            r"https://hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{16,}"
        ),
        ("hooks.slack.com",),
    ),
    _token("stripe_key", "a Stripe secret key", r"(?:sk|rk)_live_[0-9A-Za-z]{24,}", "_live_"),
    _token(
        "api_key", "an API key", r"sk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{32,}", "sk-"
    ),
    _token("huggingface_token", "a Hugging Face token", r"hf_[A-Za-z]{34}", "hf_"),
    _token("npm_token", "an npm token", r"npm_[A-Za-z0-9]{36}", "npm_"),
    _token("pypi_token", "a PyPI token", r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{50,}", "pypi-"),
    # A JWT: base64url JSON header and payload (both start with '{"' -> "eyJ"), signature.
    _token(
        "jwt",
        "a JSON Web Token",
        r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{16,}",
        "eyJ",
    ),
)

# One pass finds which hints a text holds; only the formats they belong to are tried.
_HINTS = re.compile("|".join(sorted({re.escape(h) for t in _TOKENS for h in t.hints})))
_AWS_ID = _TOKENS[0].pattern
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
# While an access key ID is in view, a run that may still grow into its secret key.
_HOLD_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{1,40}\Z")

_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
    r".*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    re.DOTALL,
)

# scheme://user:password@host: only the password is masked.
_URL_PASSWORD = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]{1,20}://[^\s:/@]+:([^\s@/]+)@")

# The names that introduce a secret value in configuration, code and connection strings.
# A name matches at the start of an identifier or of one of its segments ("DB_PASSWORD",
# "spring.datasource.password"), never inside a word ("cwd" holds no "pwd").
_CREDENTIAL_NAMES = (
    r"(?:(?<=[_.\-])|(?<![A-Za-z0-9]))"
    r"(?:password|passwd|passphrase|pwd|secret|client[_\-]?secret|secret[_\-]?key"
    r"|secret[_\-]?access[_\-]?key|api[_\-]?key|apikey|access[_\-]?token|auth[_\-]?token"
    r"|refresh[_\-]?token|bearer[_\-]?token|token|private[_\-]?key[_\-]?id|account[_\-]?key"
    r"|shared[_\-]?access[_\-]?key|sharedaccesssignature)"
)
_ASSIGNMENT = re.compile(
    r"(?i)(" + _CREDENTIAL_NAMES + r")[\"']?\s*(=|:)\s*"
    r"(?:\"([^\"\s]{4,})\"|'([^'\s]{4,})'|([^\s\"',;]{4,}))"
)
# A cheap test, on the lower-cased text, for a name followed by ":" or "=": the full
# pattern below is several times slower, and prose is full of "pass" and "key".
_ASSIGNMENT_HINT = re.compile(r"(?:pass|pwd|secret|key|token|signature)[\w.\-]*[\"']?\s*[:=]")
# Values that are placeholders, not secrets.
_PLACEHOLDER = re.compile(
    r"(?i)^(?:[*x.\-_#]+|<[^>]*>?|\$\{[^}]*\}?|\{\{.*|%\(.*|\$[A-Z_][A-Z0-9_]*|os\.environ.*"
    r"|process\.env.*|none|null|nil|true|false|required|optional|string|redacted|hidden"
    r"|your[_\-]?\w*|changeme|example|placeholder|secret|password|\[[A-Z ]+\])$"
)
_HAS_DIGIT_OR_SYMBOL = re.compile(r"[0-9!@#$%^&*()+=\[\]{}|\\/?~`<>]")

_HOLD_TOKEN = re.compile(
    # A token whose fixed prefix has arrived: hold it until it ends.
    r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA|AIza|GOCSPX-"
    r"|gh[pousr]_|github_pat_|gl(?:pat|dt|rt|ptt|cbt)-|xox[abposr]-|xapp-|sk_live_|rk_live_"
    r"|sk-|hf_|npm_|pypi-|eyJ)[A-Za-z0-9_\-./+~]*\Z"
)
# Each with a literal its match must contain, tested first (a search costs microseconds
# and runs on every token of a streamed reply).
_HOLD_CONDITIONAL = (
    ("Q~", re.compile(r"[A-Za-z0-9_~.\-]{3}\dQ~[A-Za-z0-9_~.\-]*\Z"), 0),
    ("hooks.slack.com", re.compile(r"hooks\.slack\.com/services/[A-Za-z0-9/]*\Z"), 0),
    ("://", re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]{1,20}://([^\s/@]*)\Z"), 1),
)
# Group 1 is where holding starts: the value, not the name before it.
_HOLD_VALUE = re.compile(r"(?i)" + _CREDENTIAL_NAMES + r"[\"']?\s*[:=]\s*[\"']?([^\s\"',;]*)\Z")
_PARTIAL_BEGIN = re.compile(r"(?<![A-Za-z0-9\-])-{1,5}(?:B(?:E(?:G(?:I(?:N)?)?)?)?)?\Z")
_BEGIN = "-----BEGIN "
_COMPLETE_END = re.compile(r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
# The fixed prefixes of token formats: a word that is still the start of one (two
# characters or more: "A" and "s" are words) is held until it grows or ends.
_PREFIXES = (
    *_AWS_PREFIXES, "AIza", "GOCSPX-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_",
    "glpat-", "gldt-", "glrt-", "glptt-", "glcbt-", "xoxb-", "xoxa-", "xoxp-", "xoxo-",
    "xoxs-", "xoxr-", "xapp-", "sk_live_", "rk_live_", "sk-", "hf_", "npm_", "pypi-", "eyJ",
)  # fmt: skip
_PREFIX_STARTS = frozenset(p[:size] for p in _PREFIXES for size in range(2, len(p) + 1))
_TAIL_WORD = re.compile(r"(?<![A-Za-z0-9_\-])[A-Za-z0-9_\-]{2,11}\Z")


def _mixed_case(value: str) -> bool:
    return any(c.islower() for c in value) and any(c.isupper() for c in value)


class SecretsDetector:
    name = "secrets"

    def find(self, text: str) -> list[Finding]:
        findings: list[Finding] = []
        for match in _PRIVATE_KEY.finditer(text) if "PRIVATE KEY" in text else ():
            findings.append(Finding("private_key", "a private key", *match.span(), PRIVATE_KEY))
        present = set(_HINTS.findall(text))
        for token in _TOKENS if present else ():
            if present.isdisjoint(token.hints):
                continue
            for match in token.pattern.finditer(text):
                findings.append(Finding(token.kind, token.label, *match.span(), token.placeholder))
        if any(f.kind == "aws_access_key" for f in findings):
            for match in _AWS_SECRET.finditer(text):
                if _mixed_case(match.group()):
                    label = "an AWS secret access key"
                    findings.append(Finding("aws_secret_key", label, *match.span(), SECRET))
        for match in _URL_PASSWORD.finditer(text) if "://" in text else ():
            if not _PLACEHOLDER.match(match.group(1)):
                label = "a password in a connection string"
                findings.append(Finding("connection_string", label, *match.span(1), PASSWORD))
        if _ASSIGNMENT_HINT.search(text.lower()) is None:
            return findings
        for match in _ASSIGNMENT.finditer(text):
            finding = self._assignment(match)
            if finding is not None:
                findings.append(finding)
        return findings

    @staticmethod
    def _assignment(match: re.Match[str]) -> Finding | None:
        group = next(g for g in (3, 4, 5) if match.group(g) is not None)
        value = match.group(group)
        if _PLACEHOLDER.match(value):
            return None
        quoted = group in (3, 4)
        # "password: click the link below" is prose; a value after ":" must look like a
        # credential (quoted, or with a digit or symbol). After "=" it is an assignment.
        looks_like_prose = len(value) < 6 or not _HAS_DIGIT_OR_SYMBOL.search(value)
        if match.group(2) == ":" and not quoted and looks_like_prose:
            return None
        if value.isdigit():
            return None  # "token: 4096" is a count, not a credential
        name = match.group(1).lower()
        if "aws" in name or "access_key" in name.replace("-", "_"):
            kind, label = "aws_secret_key", "an AWS secret access key"
        elif "pass" in name or "pwd" in name:
            kind, label = "password", "a password"
        else:
            kind, label = "credential", "a secret credential"
        placeholder = PASSWORD if kind == "password" else SECRET
        return Finding(kind, label, *match.span(group), placeholder)

    def hold_from(self, text: str) -> int:
        hold = len(text)
        # A private key block that has begun and not ended is held whole, however long.
        begin = text.rfind(_BEGIN)
        if begin != -1 and _COMPLETE_END.search(text, begin) is None:
            hold = begin
        else:
            partial = _PARTIAL_BEGIN.search(text, max(0, len(text) - 10))
            if partial is not None:
                hold = partial.start()
        word = _TAIL_WORD.search(text, max(0, len(text) - 12))
        if word is not None and word.group() in _PREFIX_STARTS:
            hold = min(hold, word.start())
        hold = min(hold, hold_by_patterns(text, (_HOLD_TOKEN,)))
        tail = text[-HOLD_LOOKBACK:]
        if _HINTS.search(tail) is not None and _AWS_ID.search(tail) is not None:
            hold = min(hold, hold_by_patterns(text, (_HOLD_AWS_SECRET,)))
        for literal, pattern, group in _HOLD_CONDITIONAL:
            if literal in tail:
                hold = min(hold, hold_by_patterns(text, (pattern,), group))
        if _ASSIGNMENT_HINT.search(tail.lower()) is not None:
            hold = min(hold, hold_by_patterns(text, (_HOLD_VALUE,), group=1))
        return hold
