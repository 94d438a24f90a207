"""Checks on a profile's own Colang: it is parsed with NeMo's parser, and may only
define rail flows that execute registry actions.

Refused, each with its file and line: syntax errors; `import` (code or config from
outside the profile); `define user` (canonical forms need an embedding model); flows
that wait for events or user intents (dialog rails); `create event`; actions outside
Bastion's registry; `do` of a flow that is neither the profile's nor Bastion's; bot
messages the profile does not define (NeMo would ask an LLM to write them); flows named
"bastion ...", a name space reserved for Bastion's own rails.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from bastion_guardrails.colang_library import REFUSAL_INTENT
from bastion_guardrails.problems import ProfileProblem
from bastion_guardrails.rail_actions import LIBRARY_FLOWS, RAILS_BY_ACTION

_STATEMENTS = frozenset({"meta", "run_action", "if", "while", "break", "jump", "set", "flow"})
_IMPORT = re.compile(r"^\s*import\b", re.MULTILINE)
_DEFINE_USER = re.compile(r"^\s*define\s+user\b", re.MULTILINE)
_PARSE_LINE = re.compile(r"\bline (\d+)")

FlowUse = tuple[tuple[str, ...], frozenset[str]]  # (registry actions, model roles)


def _line_of(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def _definition_line(text: str, flow: str) -> int | None:
    pattern = rf"^\s*define\s+(?:\w+\s+)*?(?:sub)?flow\s+{re.escape(flow)}\s*$"
    match = re.search(pattern, text, re.MULTILINE)
    return _line_of(text, match.start()) if match else None


Parsed = list[tuple[str, str, dict[str, Any]]]  # (path, text, NeMo's parse result)


def _first_failing_line(path: str, text: str, error: Exception) -> int | None:
    """NeMo's parser often fails without saying where (an IndexError, a TypeError): the
    first line at which the file's beginning fails the same way."""
    from nemoguardrails.colang import parse_colang_file

    lines = text.splitlines()
    for count in range(1, min(len(lines), 2000) + 1):
        try:
            parse_colang_file(path, content="\n".join(lines[:count]) + "\n", version="1.0")
        except Exception as partial:
            if type(partial) is type(error):
                return count
    return None


def _parse(files: Sequence[tuple[str, str]], problems: list[ProfileProblem]) -> Parsed:
    from nemoguardrails.colang import parse_colang_file

    parsed: Parsed = []
    for path, text in files:
        for match in _IMPORT.finditer(text):
            message = "imports other Colang; a profile must be self-contained"
            problems.append(ProfileProblem(path, message, line=_line_of(text, match.start())))
        for match in _DEFINE_USER.finditer(text):
            message = (
                "defines user messages, which need an embedding model; "
                "Bastion profiles check messages with input rails instead"
            )
            problems.append(ProfileProblem(path, message, line=_line_of(text, match.start())))
        try:
            result = parse_colang_file(path, content=text, version="1.0")
        except Exception as error:  # NeMo's parser raises anything from IndexError up
            found = _PARSE_LINE.search(str(error))
            line = int(found.group(1)) if found else _first_failing_line(path, text, error)
            detail = str(error).split(": ", 1)[-1] or type(error).__name__
            problems.append(ProfileProblem(path, f"is not valid Colang 1.0 ({detail})", line=line))
            continue
        parsed.append((path, text, result or {}))
    return parsed


def _definitions(
    parsed: Parsed, problems: list[ProfileProblem]
) -> tuple[dict[str, tuple[str, str, dict[str, Any]]], set[str]]:
    bot_messages = {REFUSAL_INTENT}
    defined: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for path, text, result in parsed:
        bot_messages.update(result.get("bot_messages", {}))
        for flow in result.get("flows", []):
            name = flow["id"]
            line = _definition_line(text, name)
            if name.startswith("bastion "):
                message = f"defines '{name}': flow names starting with 'bastion ' are reserved"
                problems.append(ProfileProblem(path, message, line=line))
            elif name in defined:
                message = f"defines '{name}' a second time"
                problems.append(ProfileProblem(path, message, line=line))
            else:
                defined[name] = (path, text, flow)
    return defined, bot_messages


def check_colang(
    files: Sequence[tuple[str, str]],
) -> tuple[dict[str, FlowUse], list[ProfileProblem]]:
    """The flows the files define (with the registry actions each runs) and the problems."""
    problems: list[ProfileProblem] = []
    defined, bot_messages = _definitions(_parse(files, problems), problems)
    uses: dict[str, FlowUse] = {}
    for name, (path, text, flow) in defined.items():
        actions: list[str] = []
        for element in flow.get("elements", []):
            line = (element.get("_source_mapping") or {}).get("line_number")
            problem = _check_element(element, defined, bot_messages, actions)
            if problem:
                problems.append(ProfileProblem(path, f"flow '{name}': {problem}", line=line))
        if not actions:
            line = _definition_line(text, name)
            message = f"flow '{name}' executes no registry action, so it checks nothing"
            problems.append(ProfileProblem(path, message, line=line))
        roles = {RAILS_BY_ACTION[a].role for a in actions}
        uses[name] = (tuple(actions), frozenset(r for r in roles if r is not None))
    return uses, problems


def _check_element(
    element: dict[str, Any],
    defined: dict[str, Any],
    bot_messages: set[str],
    actions: list[str],
) -> str | None:
    kind = element.get("_type")
    if kind not in _STATEMENTS:
        return (
            f"'{kind}' waits for an event or user intent; rail flows may only use execute, "
            "if/else, while, variables, bot messages, stop and do"
        )
    if kind == "run_action":
        action = element.get("action_name")
        if action == "utter":
            value = (element.get("action_params") or {}).get("value")
            if value != "stop" and value not in bot_messages:
                return f"says 'bot {value}' but no 'define bot {value}' gives its text"
        elif action == "create_event":
            return "creates events, which rail flows may not do"
        elif action in RAILS_BY_ACTION:
            actions.append(str(action))
        else:
            return f"executes '{action}', which is not an action in Bastion's registry"
    if kind == "flow":
        target = element.get("flow_name")
        if target not in defined and target not in LIBRARY_FLOWS:
            return f"does '{target}', which is neither a flow of this profile nor a Bastion rail"
        if target in LIBRARY_FLOWS:
            actions.append(LIBRARY_FLOWS[target].spec.action)
    return None
