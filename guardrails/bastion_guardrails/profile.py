"""Profiles as data: a manifest (profile.yml) plus a NeMo Guardrails configuration
(config.yml, optional prompts and Colang), validated into a `Profile` the engine runs.

    profile.yml   id, name, version, description, strictness, the model roles it uses
    config.yml    colang_version, rails.input/output.flows, rails.output.streaming,
                  prompts, custom_data.bastion (settings for registry rails)
    *.co          Colang 1.0 rail flows that execute registry actions (optional)
    *.md, *.txt   documentation (ignored by the engine)

Only what a profile needs is allowed in config.yml: no models (they come from
Bastion's model roles), no dialog rails, user canonical forms or knowledge base (they
load an embedding model), no import paths or actions server (code or network from
outside the profile). Only built-in profiles may carry Python; a user or admin profile
with code is refused, and every action a profile runs comes from the registry.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

from bastion_guardrails.bundle import ProfileBundle, ProfileOrigin, is_code
from bastion_guardrails.decisions import Stage
from bastion_guardrails.detectors.jailbreak import Sensitivity
from bastion_guardrails.models import SAFETY_CATEGORIES, SAFETY_ROLE
from bastion_guardrails.problems import ProfileError, ProfileProblem
from bastion_guardrails.rail_actions import LIBRARY_FLOWS, LibraryFlow, ProfileSettings
from bastion_guardrails.yaml_lines import LineIndex, YamlSyntaxError, load_yaml

MANIFEST = "profile.yml"
CONFIG = "config.yml"
PROMPTS = "prompts.yml"
DOC_SUFFIXES = frozenset({".md", ".txt"})
PROFILE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")


class Strictness(StrEnum):
    OFF = "off"
    STANDARD = "standard"
    STRICT = "strict"


class RoleNeed(StrEnum):
    OPTIONAL = "optional"  # the profile runs without it, and says which checks are off
    REQUIRED = "required"  # without it the profile refuses to run


@dataclass(frozen=True)
class Manifest:
    id: str
    name: str
    version: str
    description: str
    strictness: Strictness
    model_roles: dict[str, RoleNeed]

    @property
    def safety_model_required(self) -> bool:
        return self.model_roles.get(SAFETY_ROLE) is RoleNeed.REQUIRED


@dataclass(frozen=True)
class StreamingSettings:
    """How a streamed reply is read by the output rails that are not model-free
    (`rails.output.streaming`). The content-safety rail alone reads it at sentence
    boundaries (judged.py) and uses only `stream_first`; with a profile's own Colang
    flows among them, NeMo's streaming output rails read it: its rolling buffer counts
    the context it keeps towards the next chunk, so after the first chunk a check comes
    every `chunk_size - context_size` new pieces, with `chunk_size` in view."""

    chunk_size: int = 32
    context_size: int = 16
    stream_first: bool = True


@dataclass(frozen=True)
class ConfiguredFlow:
    """A rail flow named in config.yml: one of Bastion's library flows, or a flow the
    profile defines in its own Colang."""

    name: str
    stage: Stage
    library: LibraryFlow | None
    actions: tuple[str, ...]  # the registry actions it executes
    roles: frozenset[str]  # the model roles those actions need


@dataclass(frozen=True)
class Profile:
    bundle: ProfileBundle
    manifest: Manifest
    input_flows: tuple[ConfiguredFlow, ...]
    output_flows: tuple[ConfiguredFlow, ...]
    streaming: StreamingSettings
    settings: ProfileSettings
    colang: tuple[tuple[str, str], ...]  # (file, text) of the profile's own Colang
    prompts: tuple[Any, ...]
    content_hash: str

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def origin(self) -> ProfileOrigin:
        return self.bundle.origin


class _Problems:
    def __init__(self, file: str, lines: LineIndex) -> None:
        self.file = file
        self.lines = lines
        self.found: list[ProfileProblem] = []

    def add(self, path: tuple[str | int, ...], message: str, *, located: bool = True) -> None:
        dotted = ".".join(str(p) for p in path) or None
        line = self.lines.line(*path) if located else None
        self.found.append(ProfileProblem(self.file, message, dotted, line))


def _mapping(value: Any, path: tuple[str | int, ...], problems: _Problems) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(path, "must be a mapping of names to values")
        return {}
    return value


def _unknown_keys(
    data: dict[str, Any], allowed: dict[str, str], path: tuple[str, ...], problems: _Problems
) -> None:
    for key in data:
        if key not in allowed:
            expected = ", ".join(allowed)
            problems.add((*path, key), f"is not a known setting here (expected one of: {expected})")


def _string(value: Any, path: tuple[str, ...], problems: _Problems, *, required: bool) -> str:
    if value is None:
        if required:
            problems.add(path, "is required", located=False)
        return ""
    if isinstance(value, bool):
        problems.add(path, "must be text (in quotes: YAML reads off, on, yes and no as true/false)")
        return ""
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        problems.add(path, "must be text")
        return ""
    return value.strip()


# --- profile.yml ------------------------------------------------------------------------

_MANIFEST_FIELDS = {
    "id": "identifier",
    "name": "display name",
    "version": "version",
    "description": "description",
    "strictness": "off, standard or strict",
    "models": "model roles",
}


def parse_manifest(bundle: ProfileBundle) -> Manifest:
    if MANIFEST not in bundle.files:
        missing = ProfileProblem(MANIFEST, "is missing: every profile needs a manifest")
        raise ProfileError(bundle.source, [missing])
    try:
        data, lines = load_yaml(bundle.text(MANIFEST), MANIFEST)
    except YamlSyntaxError as error:
        raise ProfileError(bundle.source, [error.problem]) from None
    problems = _Problems(MANIFEST, lines)
    data = _mapping(data, (), problems)
    _unknown_keys(data, _MANIFEST_FIELDS, (), problems)
    profile_id = _string(data.get("id"), ("id",), problems, required=True)
    if profile_id and not PROFILE_ID.match(profile_id):
        problems.add(
            ("id",), "must be 1-48 lower-case letters, digits, '-' or '_', starting with one"
        )
    name = _string(data.get("name"), ("name",), problems, required=True)
    version = _string(data.get("version"), ("version",), problems, required=True)
    description = _string(data.get("description"), ("description",), problems, required=False)
    strictness_text = _string(data.get("strictness"), ("strictness",), problems, required=True)
    strictness = Strictness.STANDARD
    if strictness_text:
        try:
            strictness = Strictness(strictness_text)
        except ValueError:
            problems.add(("strictness",), "must be one of off, standard, strict")
    roles: dict[str, RoleNeed] = {}
    for role, need in _mapping(data.get("models"), ("models",), problems).items():
        if role != SAFETY_ROLE:
            problems.add(("models", role), f"is not a model role (known roles: {SAFETY_ROLE})")
            continue
        try:
            roles[role] = RoleNeed(need)
        except ValueError:
            problems.add(("models", role), "must be 'required' or 'optional'")
    if problems.found:
        raise ProfileError(bundle.source, problems.found)
    return Manifest(profile_id, name, version, description, strictness, roles)


# --- config.yml -------------------------------------------------------------------------

_CONFIG_FIELDS = {
    "colang_version": "1.0",
    "rails": "input and output rails",
    "prompts": "prompts for model rails",
    "custom_data": "settings for Bastion's rails",
}
_WHY_NOT = {
    "models": "models come from Bastion's model roles (declare them under 'models' in "
    "profile.yml), not from the profile",
    "import_paths": "a profile cannot load configuration or code from outside itself",
    "actions_server_url": "actions run inside Bastion, never on a server",
    "user_messages": "user canonical forms need an embedding model; use input rails",
    "knowledge_base": "a knowledge base needs an embedding model",
    "docs": "a knowledge base needs an embedding model",
    "passthrough": "Bastion runs the chat model itself",
    "tracing": "guardrail decisions are recorded by Bastion, without chat text",
    "core": "embedding search is not used by Bastion profiles",
}


def _flows(
    value: Any, path: tuple[str | int, ...], problems: _Problems
) -> list[tuple[str, tuple[str | int, ...]]]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(path, "must be a list of rail flow names")
        return []
    flows = []
    for position, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            problems.add((*path, position), "must be the name of a rail flow")
            continue
        flows.append((item.strip(), (*path, position)))
    return flows


def _int(value: Any, path: tuple[str, ...], problems: _Problems, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        problems.add(path, f"must be a whole number from {low} to {high}")
        return low
    return value


def _streaming(value: Any, problems: _Problems) -> StreamingSettings:
    path = ("rails", "output", "streaming")
    data = _mapping(value, path, problems)
    allowed = {"enabled": "", "chunk_size": "", "context_size": "", "stream_first": ""}
    _unknown_keys(data, allowed, path, problems)
    if data.get("enabled", True) is not True:
        problems.add((*path, "enabled"), "must be true: Bastion always streams replies")
    defaults = StreamingSettings()
    chunk = data.get("chunk_size", defaults.chunk_size)
    context = data.get("context_size", defaults.context_size)
    first = data.get("stream_first", defaults.stream_first)
    if not isinstance(first, bool):
        problems.add((*path, "stream_first"), "must be true or false")
        first = defaults.stream_first
    settings = StreamingSettings(
        _int(chunk, (*path, "chunk_size"), problems, 1, 4096),
        _int(context, (*path, "context_size"), problems, 0, 4096),
        first,
    )
    if settings.context_size >= settings.chunk_size > 1:
        problems.add(
            (*path, "context_size"),
            "must be smaller than chunk_size: NeMo counts the context towards the next "
            "chunk, so the rails would run on every single piece after the first chunk",
        )
    return settings


def _settings(value: Any, problems: _Problems) -> ProfileSettings:
    data = _mapping(value, ("custom_data",), problems)
    _unknown_keys(data, {"bastion": ""}, ("custom_data",), problems)
    path = ("custom_data", "bastion")
    bastion = _mapping(data.get("bastion"), path, problems)
    _unknown_keys(bastion, {"terms": "", "content_safety": ""}, path, problems)
    terms = bastion.get("terms") or []
    if not isinstance(terms, list) or not all(isinstance(t, str) and t.strip() for t in terms):
        problems.add((*path, "terms"), "must be a list of words or phrases")
        terms = []
    safety_path = (*path, "content_safety")
    safety = _mapping(bastion.get("content_safety"), safety_path, problems)
    _unknown_keys(safety, {"block": ""}, safety_path, problems)
    block = safety.get("block") or []
    if not isinstance(block, list):
        problems.add((*safety_path, "block"), "must be a list of safety categories")
        block = []
    for position, category in enumerate(block):
        if category not in SAFETY_CATEGORIES:
            known = ", ".join(SAFETY_CATEGORIES)
            message = f"is not a safety category (known: {known})"
            problems.add((*safety_path, "block", position), message)
    return ProfileSettings(tuple(terms), frozenset(c for c in block if c in SAFETY_CATEGORIES))


@dataclass(frozen=True)
class _Config:
    input_flows: list[tuple[str, tuple[str | int, ...]]]
    output_flows: list[tuple[str, tuple[str | int, ...]]]
    streaming: StreamingSettings
    settings: ProfileSettings
    prompts: tuple[Any, ...]
    problems: _Problems


def _parse_config(bundle: ProfileBundle) -> _Config:
    if CONFIG not in bundle.files:
        missing = ProfileProblem(CONFIG, "is missing: every profile needs its NeMo config")
        raise ProfileError(bundle.source, [missing])
    try:
        data, lines = load_yaml(bundle.text(CONFIG), CONFIG)
    except YamlSyntaxError as error:
        raise ProfileError(bundle.source, [error.problem]) from None
    problems = _Problems(CONFIG, lines)
    data = _mapping(data, (), problems)
    for key in data:
        if key in _WHY_NOT:
            problems.add((key,), f"is not allowed in a Bastion profile: {_WHY_NOT[key]}")
        elif key not in _CONFIG_FIELDS:
            problems.add(
                (key,), f"is not a known setting (expected one of: {', '.join(_CONFIG_FIELDS)})"
            )
    version = data.get("colang_version", "1.0")
    if str(version) not in ("1.0", "1"):
        problems.add(("colang_version",), "must be 1.0: Bastion profiles use Colang 1.0")
    rails = _mapping(data.get("rails"), ("rails",), problems)
    for key in rails:
        if key not in ("input", "output"):
            message = "is not supported: Bastion profiles have input and output rails only"
            problems.add(("rails", key), message)
    rails_input = _mapping(rails.get("input"), ("rails", "input"), problems)
    _unknown_keys(rails_input, {"flows": ""}, ("rails", "input"), problems)
    rails_output = _mapping(rails.get("output"), ("rails", "output"), problems)
    allowed_output = {"flows": "", "streaming": ""}
    _unknown_keys(rails_output, allowed_output, ("rails", "output"), problems)
    prompts = data.get("prompts") or []
    if not isinstance(prompts, list):
        problems.add(("prompts",), "must be a list of prompts")
        prompts = []
    extra_problems: list[ProfileProblem] = []
    if PROMPTS in bundle.files:
        prompts = prompts + _prompts_file(bundle, extra_problems)
    problems.found.extend(extra_problems)
    return _Config(
        input_flows=_flows(rails_input.get("flows"), ("rails", "input", "flows"), problems),
        output_flows=_flows(rails_output.get("flows"), ("rails", "output", "flows"), problems),
        streaming=_streaming(rails_output.get("streaming"), problems),
        settings=_settings(data.get("custom_data"), problems),
        prompts=tuple(prompts),
        problems=problems,
    )


def _prompts_file(bundle: ProfileBundle, found: list[ProfileProblem]) -> list[Any]:
    try:
        data, lines = load_yaml(bundle.text(PROMPTS), PROMPTS)
    except YamlSyntaxError as error:
        found.append(error.problem)
        return []
    problems = _Problems(PROMPTS, lines)
    data = _mapping(data, (), problems)
    _unknown_keys(data, {"prompts": ""}, (), problems)
    prompts = data.get("prompts") or []
    if not isinstance(prompts, list):
        problems.add(("prompts",), "must be a list of prompts")
        prompts = []
    found.extend(problems.found)
    return prompts


# --- the whole profile ------------------------------------------------------------------


def _file_problems(bundle: ProfileBundle) -> list[ProfileProblem]:
    problems = []
    for path in sorted(bundle.files):
        suffix = PurePosixPath(path).suffix.lower()
        if is_code(path):
            if bundle.origin is not ProfileOrigin.BUILTIN:
                problems.append(
                    ProfileProblem(
                        path,
                        "is code; only Bastion's built-in profiles may carry code, and a "
                        f"{bundle.origin.value} profile is data only (its rails use actions "
                        "from Bastion's registry). Remove the file.",
                    )
                )
        elif path not in (MANIFEST, CONFIG) and suffix not in DOC_SUFFIXES | {".co", ".yml"}:
            message = "is not a file a profile may contain (profile.yml, config.yml, *.co, *.yml "
            problems.append(ProfileProblem(path, message + "prompts, *.md or *.txt documentation)"))
        elif suffix == ".yml" and path not in (MANIFEST, CONFIG, PROMPTS):
            message = "is not used: prompts go in prompts.yml, settings in config.yml"
            problems.append(ProfileProblem(path, message))
    return problems


def _resolve_flows(
    configured: list[tuple[str, tuple[str | int, ...]]],
    stage: Stage,
    own: dict[str, tuple[tuple[str, ...], frozenset[str]]],
    problems: _Problems,
) -> tuple[ConfiguredFlow, ...]:
    flows = []
    seen = set()
    for name, path in configured:
        if name in seen:
            problems.add(path, f"names the rail '{name}' twice")
            continue
        seen.add(name)
        library = LIBRARY_FLOWS.get(name)
        if library is not None:
            if library.stage is not stage:
                problems.add(path, f"'{name}' is a rail for the {library.stage.value} side")
                continue
            roles = frozenset({library.spec.role} if library.spec.role else ())
            flows.append(ConfiguredFlow(name, stage, library, (library.spec.action,), roles))
        elif name in own:
            actions, roles = own[name]
            flows.append(ConfiguredFlow(name, stage, None, actions, roles))
        else:
            problems.add(
                path,
                f"'{name}' is neither one of Bastion's rails (see docs/profiles.md) nor a flow "
                "defined in the profile's Colang files",
            )
    return tuple(flows)


def load_profile(bundle: ProfileBundle) -> Profile:
    """Validate a bundle into a Profile, or raise ProfileError with every problem found.

    Colang files, if any, are parsed with NeMo's own parser (which imports NeMo
    Guardrails); a profile without Colang is validated without it.
    """
    from bastion_guardrails.colang_check import check_colang

    manifest = parse_manifest(bundle)
    problems: list[ProfileProblem] = _file_problems(bundle)
    config = _parse_config(bundle)
    colang = tuple(
        (path, bundle.text(path)) for path in sorted(bundle.files) if path.endswith(".co")
    )
    own_flows, colang_problems = check_colang(colang) if colang else ({}, [])
    problems += colang_problems
    input_flows = _resolve_flows(config.input_flows, Stage.INPUT, own_flows, config.problems)
    output_flows = _resolve_flows(config.output_flows, Stage.OUTPUT, own_flows, config.problems)
    for flow, (name, path) in _all_with_paths(input_flows, output_flows, config):
        for role in flow.roles - set(manifest.model_roles):
            config.problems.add(
                path,
                f"'{name}' uses the {role} model, which profile.yml does not declare "
                f"(add 'models: {{{role}: optional}}' or 'required')",
            )
    problems += config.problems.found
    if problems:
        raise ProfileError(bundle.source, problems)
    return Profile(
        bundle=bundle,
        manifest=manifest,
        input_flows=input_flows,
        output_flows=output_flows,
        streaming=config.streaming,
        settings=dataclasses.replace(
            config.settings,
            injection_sensitivity=(
                Sensitivity.STRICT
                if manifest.strictness is Strictness.STRICT
                else Sensitivity.STANDARD
            ),
        ),
        colang=colang,
        prompts=config.prompts,
        content_hash=bundle.content_hash,
    )


def _all_with_paths(
    input_flows: tuple[ConfiguredFlow, ...],
    output_flows: tuple[ConfiguredFlow, ...],
    config: _Config,
) -> list[tuple[ConfiguredFlow, tuple[str, tuple[str | int, ...]]]]:
    paths = {name: (name, path) for name, path in config.input_flows + config.output_flows}
    return [(flow, paths[flow.name]) for flow in input_flows + output_flows]
