"""Every admin policy, declared once.

The readers (Windows registry, macOS preferences, Linux files), the validation, the
effective policy, `bastion policy check` and the templates (ADMX/ADML, .mobileconfig,
sample JSON, JSON Schema) all read this table; nothing else names a policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bastion_guardrails.library import BUILTIN_IDS

SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A Hub repository (`org/name`), with `*` and `?` allowed as wildcards.
HUB_REPO = re.compile(r"^[A-Za-z0-9*?][A-Za-z0-9._*?-]*/[A-Za-z0-9*?][A-Za-z0-9._*?-]*$")
PROFILE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
# GuardrailAuditLog's value for the operating system's log.
AUDIT_TO_SYSTEM = "system"


class PolicyType(StrEnum):
    BOOLEAN = "boolean"
    INTEGER = "integer"
    STRING = "string"
    STRING_LIST = "list"  # a list of text entries
    PROFILE = "profile"  # a profile id or path (text), or an embedded profile (object)


@dataclass(frozen=True)
class PolicyDefinition:
    name: str
    type: PolicyType
    caption: str  # a short title (ADMX display name, the policy page)
    description: str
    default: Any
    recommendable: bool  # may also be set as a recommendation, which the user can change
    settings_field: str | None = None  # the Settings field it locks, if any
    minimum: int | None = None
    maximum: int | None = None
    example: Any = None  # the value the sample templates show; None leaves it out


class PolicyValueError(ValueError):
    """A policy value of the wrong shape; `str()` completes "<Name> ..." as a sentence."""


POLICIES: tuple[PolicyDefinition, ...] = (
    PolicyDefinition(
        "GuardrailProfile",
        PolicyType.PROFILE,
        "Guardrail profile",
        "The guardrail profile every chat uses. A built-in id (off, standard, strict, "
        "workplace), the path of an administrator's profile folder or zip (pin it with "
        "GuardrailProfileSha256), or an embedded profile: an object "
        '{"files": {"profile.yml": "...", "config.yml": "..."}}. As a mandatory policy the '
        "user cannot switch away from it; as a recommendation it is the default profile.",
        None,
        recommendable=True,
        settings_field="guard_profile",
        example="workplace",
    ),
    PolicyDefinition(
        "GuardrailProfileSha256",
        PolicyType.STRING,
        "Guardrail profile hash",
        "The sha256 content hash the profile named by GuardrailProfile must have (as "
        "`bastion policy profile-hash PATH` prints it). Required for a profile given by path; a "
        "profile whose hash differs is not used and Bastion falls back to the strict profile.",
        None,
        recommendable=False,
    ),
    PolicyDefinition(
        "AllowedGuardrailProfiles",
        PolicyType.STRING_LIST,
        "Allowed guardrail profiles",
        "The profiles a user may choose, by id or by sha256 content hash. A choice outside "
        "the list is moved to an allowed profile and the user is told. Empty means no limit.",
        None,
        recommendable=False,
        example=["standard", "strict", "workplace"],
    ),
    PolicyDefinition(
        "AllowUserGuardrailProfiles",
        PolicyType.BOOLEAN,
        "Allow user guardrail profiles",
        "Whether users may import and use their own guardrail profiles.",
        True,
        recommendable=False,
        example=False,
    ),
    PolicyDefinition(
        "DisableGuardrailsAllowed",
        PolicyType.BOOLEAN,
        "Allow turning guardrails off",
        "Whether users may choose the Off profile (no checks at all).",
        True,
        recommendable=False,
        example=False,
    ),
    PolicyDefinition(
        "AllowedModels",
        PolicyType.STRING_LIST,
        "Allowed models",
        "The models that may be downloaded and run: Hub repositories (org/name, with * "
        "as a wildcard, e.g. bartowski/*) and GGUF file hashes (64 hex digits of the "
        "file's sha256). Empty means no limit. The starter model is allowed only if listed.",
        None,
        recommendable=False,
        example=["bartowski/*", "lmstudio-community/gemma-3-1b-it-GGUF"],
    ),
    PolicyDefinition(
        "AllowModelDownloads",
        PolicyType.BOOLEAN,
        "Allow model downloads",
        "Whether models may be downloaded from the Hugging Face Hub.",
        True,
        recommendable=False,
        example=True,
    ),
    PolicyDefinition(
        "OfflineMode",
        PolicyType.BOOLEAN,
        "Offline mode",
        "Never use the network: no Hub search and no downloads.",
        False,
        recommendable=True,
        example=False,
    ),
    PolicyDefinition(
        "ConversationRetentionDays",
        PolicyType.INTEGER,
        "Conversation retention (days)",
        "Conversations idle for longer than this many days are deleted. As a mandatory "
        "policy the user cannot change it; as a recommendation it is the default.",
        None,
        recommendable=True,
        settings_field="retention_days",
        minimum=1,
        maximum=36_500,
        example=90,
    ),
    PolicyDefinition(
        "AllowConversationExport",
        PolicyType.BOOLEAN,
        "Allow conversation export",
        "Whether conversations may be exported to JSON or Markdown files.",
        True,
        recommendable=False,
        example=False,
    ),
    PolicyDefinition(
        "AllowEphemeralChats",
        PolicyType.BOOLEAN,
        "Allow ephemeral chats",
        "Whether users may hold chats that are never saved to the history.",
        True,
        recommendable=False,
        example=True,
    ),
    PolicyDefinition(
        "ComputeDevice",
        PolicyType.STRING,
        "Compute device",
        'Where models run: "auto" (the best GPU found, else the CPU), "cpu" (never a GPU), '
        'or one GPU by its model name or llama.cpp\'s name for it ("CUDA1": two of the '
        "same GPU are told apart so), as `bastion doctor` lists them. As a mandatory "
        "policy the user cannot change it; as a recommendation it is the default.",
        None,
        recommendable=True,
        settings_field="inference.device",
        example="auto",
    ),
    PolicyDefinition(
        "CpuCompatibilityMode",
        PolicyType.BOOLEAN,
        "CPU compatibility mode",
        "Run llama.cpp's baseline CPU build, which every x86-64 processor runs, instead of "
        "the fastest build the processor supports: for machines where the faster build "
        "misbehaves. As a mandatory policy the user cannot change it; as a recommendation "
        "it is the default.",
        None,
        recommendable=True,
        settings_field="inference.cpu_compatibility",
        example=False,
    ),
    PolicyDefinition(
        "UnloadIdleModelsMinutes",
        PolicyType.INTEGER,
        "Unload idle models (minutes)",
        "Minutes a loaded model may go unused before Bastion gives its memory (RAM and "
        "the GPU's) back; the next message loads it again. 0 keeps models loaded for as "
        "long as Bastion runs. As a mandatory policy the user cannot change it; as a "
        "recommendation it is the default.",
        None,
        recommendable=True,
        settings_field="inference.unload_after_minutes",
        minimum=0,
        maximum=10_080,
        example=30,
    ),
    PolicyDefinition(
        "SafetyModel",
        PolicyType.STRING,
        "Safety model",
        "The model the guardrails' safety-model role uses: a Hub repository (org/name) "
        "or a GGUF file hash. Empty means Bastion's choice from its catalog.",
        None,
        recommendable=True,
        example="bartowski/Llama-Guard-3-1B-GGUF",
    ),
    PolicyDefinition(
        "AllowLocalApi",
        PolicyType.BOOLEAN,
        "Allow the local API",
        "Whether Bastion may serve its OpenAI-compatible API on this computer's loopback "
        "address (127.0.0.1), for other programs to use the local models through the "
        "guardrails. False forbids the server entirely: from the window, `bastion serve` "
        "and the settings.",
        True,
        recommendable=False,
        example=False,
    ),
    PolicyDefinition(
        "LocalApiProfile",
        PolicyType.STRING,
        "Local API guardrail profile",
        "The guardrail profile every request to the local API uses, when it should differ "
        "from the chat's (a built-in id or an installed profile's id). Clients cannot choose "
        "another. Empty means the chat's profile, which a locked GuardrailProfile sets.",
        None,
        recommendable=False,
        example="strict",
    ),
    PolicyDefinition(
        "LocalApiAllowedOrigins",
        PolicyType.STRING_LIST,
        "Local API allowed origins",
        "The web origins (scheme://host[:port], e.g. a browser extension's) whose pages may "
        "call the local API. Every other origin is refused, and so is `null`. Replaces the "
        "user's list; empty means no web page may call it.",
        None,
        recommendable=False,
        example=["chrome-extension://abcdefghijklmnopabcdefghijklmnop"],
    ),
    PolicyDefinition(
        "GuardrailAuditLog",
        PolicyType.STRING,
        "Guardrail audit log",
        "Record what the guardrails decide for every chat turn and local API request (the "
        "time, the client, the model, the profile and its hash, each rail's decision and "
        "category, token counts, latency, a request id), never a word of a prompt or a "
        'reply. The absolute path of a folder for a JSON-lines file, or "system" for the '
        "operating system's log (the journal or syslog on Linux, the Windows Event Log, "
        "macOS unified logging). Users are told that decisions are recorded. Empty: off.",
        None,
        recommendable=False,
        example="system",
    ),
)

BY_NAME: dict[str, PolicyDefinition] = {policy.name: policy for policy in POLICIES}


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    # Registry DWORDs and some MDM tools give 0/1.
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise PolicyValueError("must be true or false")


def _integer(policy: PolicyDefinition, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyValueError("must be a whole number")
    low, high = policy.minimum, policy.maximum
    if (low is not None and value < low) or (high is not None and value > high):
        raise PolicyValueError(f"must be from {low} to {high}, not {value}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise PolicyValueError("must be text")
    text = value.strip()
    if not text:
        raise PolicyValueError("must not be empty")
    return text


def _text_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise PolicyValueError("must be a list of text entries")
    entries = []
    for position, item in enumerate(value, start=1):
        if not isinstance(item, str) or not item.strip():
            raise PolicyValueError(f"entry {position} must be non-empty text")
        entries.append(item.strip())
    return tuple(entries)


def _model_entries(entries: tuple[str, ...]) -> tuple[str, ...]:
    for entry in entries:
        if not (SHA256.match(entry.lower()) or HUB_REPO.match(entry)):
            raise PolicyValueError(
                f"entry '{entry}' is neither a Hub repository (org/name) nor a sha256 "
                "(64 hex digits)"
            )
    return tuple(e.lower() if SHA256.match(e.lower()) else e for e in entries)


def _profile_entries(entries: tuple[str, ...]) -> tuple[str, ...]:
    for entry in entries:
        if not (SHA256.match(entry.lower()) or PROFILE_ID.match(entry)):
            raise PolicyValueError(
                f"entry '{entry}' is neither a profile id nor a sha256 (64 hex digits)"
            )
    return tuple(e.lower() if SHA256.match(e.lower()) else e for e in entries)


# A web origin as browsers send it: scheme://host, with a port when not the default.
ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://[^/\s?#]+$")


def _origin_entries(entries: tuple[str, ...]) -> tuple[str, ...]:
    for entry in entries:
        if not ORIGIN.match(entry.lower()):
            raise PolicyValueError(
                f"entry '{entry}' is not a web origin (scheme://host[:port], with no path)"
            )
    return tuple(e.lower() for e in entries)


def _profile(value: Any) -> str | dict[str, Any]:
    if isinstance(value, dict):
        files = value.get("files")
        extra = set(value) - {"files"}
        if extra:
            raise PolicyValueError(f"as an embedded profile has unknown keys: {sorted(extra)}")
        if not isinstance(files, dict) or not files:
            raise PolicyValueError('as an embedded profile must be {"files": {"NAME": "TEXT"}}')
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise PolicyValueError("as an embedded profile must map file names to their text")
        return {"files": dict(files)}
    text = _text(value)
    if text in BUILTIN_IDS or PROFILE_ID.match(text) or is_profile_path(text):
        return text
    raise PolicyValueError(
        f"must be a built-in profile id ({', '.join(BUILTIN_IDS)}), a profile id, the "
        "absolute path of a profile folder or zip, or an embedded profile"
    )


def is_profile_path(text: str) -> bool:
    """A GuardrailProfile value that names a folder or zip rather than an id."""
    return text.startswith(("/", "\\\\")) or re.match(r"^[A-Za-z]:[\\/]", text) is not None


def _string(policy: PolicyDefinition, value: Any) -> str:
    text = _text(value)
    if policy.name == "GuardrailProfileSha256":
        if not SHA256.match(text.lower()):
            raise PolicyValueError("must be a sha256: 64 hex digits")
        return text.lower()
    if (
        policy.name == "GuardrailAuditLog"
        and text != AUDIT_TO_SYSTEM
        and not (text.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", text))
    ):
        raise PolicyValueError(
            f'must be "{AUDIT_TO_SYSTEM}" or the absolute path of a folder, not {text!r}'
        )
    if policy.name == "LocalApiProfile" and not PROFILE_ID.match(text):
        raise PolicyValueError(
            f"must be a profile id ({', '.join(BUILTIN_IDS)} or an installed profile's id)"
        )
    return text


def _string_list(policy: PolicyDefinition, value: Any) -> tuple[str, ...]:
    entries = _text_list(value)
    if policy.name == "AllowedModels":
        return _model_entries(entries)
    if policy.name == "AllowedGuardrailProfiles":
        return _profile_entries(entries)
    if policy.name == "LocalApiAllowedOrigins":
        return _origin_entries(entries)
    return entries


def check_value(policy: PolicyDefinition, value: Any) -> Any:
    """The value in its canonical form, or PolicyValueError saying what is wrong."""
    if policy.type is PolicyType.BOOLEAN:
        return _boolean(value)
    if policy.type is PolicyType.INTEGER:
        return _integer(policy, value)
    if policy.type is PolicyType.PROFILE:
        return _profile(value)
    if policy.type is PolicyType.STRING_LIST:
        return _string_list(policy, value)
    return _string(policy, value)
