"""`bastion policy show|check|templates|profile-hash`: what an administrator needs to
write, check and verify policy."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bastion_desktop.context import AppContext
from bastion_desktop.core.policy.check import check_policy_file
from bastion_desktop.core.policy.templates import write_templates
from bastion_guardrails.bundle import ProfileOrigin
from bastion_guardrails.library import check_profile
from bastion_guardrails.problems import ProfileError


def add_policy_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    policy = commands.add_parser("policy", help="administrator policy: show, check, templates")
    actions = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)

    show = actions.add_parser("show", help="every policy in force, with its source and level")
    show.add_argument("--json", action="store_true", help="print JSON")

    check = actions.add_parser("check", help="validate a policy JSON file before deploying it")
    check.add_argument("file", type=Path, metavar="FILE")
    check.add_argument(
        "--recommended",
        action="store_true",
        help="check it as a recommended-policy file (default: mandatory)",
    )

    templates = actions.add_parser(
        "templates", help="write ADMX/ADML, .mobileconfig, sample JSON and JSON Schema"
    )
    templates.add_argument("outdir", type=Path, metavar="OUTDIR")

    profile_hash = actions.add_parser(
        "profile-hash", help="the sha256 to pin an administrator's profile with"
    )
    profile_hash.add_argument("path", type=Path, metavar="PATH", help="profile folder or zip")


def _display(value: Any) -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, dict):
        return "(embedded profile)"
    if isinstance(value, tuple | list):
        return ", ".join(value) or "(empty)"
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _show(context: AppContext, args: argparse.Namespace) -> int:
    policy = context.policy
    if args.json:
        entries = [
            {
                "name": entry.name,
                "value": list(entry.value) if isinstance(entry.value, tuple) else entry.value,
                "source": entry.source,
                "level": entry.level.value,
                "locked": entry.level.mandatory,
            }
            for entry in policy.entries()
        ]
        report = {
            "policies": entries,
            "errors": list(policy.errors),
            "failed_closed": policy.failed_closed,
            "banner": policy.banner,
        }
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    if policy.banner:
        print(policy.banner)
        print()
    width = max(len(entry.name) for entry in policy.entries())
    for entry in policy.entries():
        where = "" if entry.source == "default" else f"  from {entry.source}"
        print(f"{entry.name:<{width}}  {_display(entry.value)}  [{entry.level.value}]{where}")
    if policy.errors:
        print("\nProblems:")
        for error in policy.errors:
            print(f"  - {error}")
    return 0


def _check(args: argparse.Namespace) -> int:
    problems = check_policy_file(args.file, recommended=args.recommended)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1
    print(f"{args.file} is a valid Bastion policy file.")
    return 0


def _templates(args: argparse.Namespace) -> int:
    for path in write_templates(args.outdir):
        print(path)
    return 0


def _profile_hash(args: argparse.Namespace) -> int:
    try:
        profile = check_profile(args.path, ProfileOrigin.ADMIN)
    except ProfileError as error:
        print(f"bastion: {error}", file=sys.stderr)
        return 1
    print(profile.content_hash)
    return 0


def run_policy(context: AppContext, args: argparse.Namespace) -> int:
    if args.policy_command == "show":
        return _show(context, args)
    if args.policy_command == "check":
        return _check(args)
    if args.policy_command == "templates":
        return _templates(args)
    return _profile_hash(args)
