"""`bastion profiles ...`: list, show, check, import and export guardrail profiles."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bastion_desktop.context import AppContext
from bastion_desktop.core.errors import GuardProfileError
from bastion_guardrails.explain import ProfileStatus
from bastion_guardrails.library import ProfileEntry, check_profile, export_profile, import_profile
from bastion_guardrails.problems import ProfileError, ProfileNotFoundError
from bastion_guardrails.profile import Profile

EXIT_OK = 0
EXIT_INVALID = 1


def add_profiles_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    profiles = commands.add_parser("profiles", help="guardrail profiles: list, check, import")
    actions = profiles.add_subparsers(dest="profiles_command", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="the profiles, and which one is the default")
    listing.add_argument("--json", action="store_true", help="print JSON")

    show = actions.add_parser("show", help="a profile's rails and which are in force")
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print JSON")

    check = actions.add_parser("check", help="validate a profile folder or archive")
    check.add_argument("path", type=Path, metavar="PATH")
    check.add_argument("--json", action="store_true", help="print JSON")

    importing = actions.add_parser("import", help="install a profile folder or archive")
    importing.add_argument("path", type=Path, metavar="PATH")
    importing.add_argument(
        "--replace", action="store_true", help="replace an installed profile with the same id"
    )

    export = actions.add_parser("export", help="write a profile as one archive file")
    export.add_argument("id", metavar="ID")
    export.add_argument("path", type=Path, metavar="PATH", help="a .zip file or a folder")


def _profile_json(profile: Profile, status: ProfileStatus | None) -> dict[str, Any]:
    manifest = profile.manifest
    payload: dict[str, Any] = {
        "id": profile.id,
        "name": profile.name,
        "version": manifest.version,
        "description": manifest.description,
        "strictness": manifest.strictness.value,
        "origin": profile.origin.value,
        "model_roles": {role: need.value for role, need in manifest.model_roles.items()},
        "sha256": profile.content_hash,
    }
    if status is not None:
        payload["can_run"] = status.can_run
        payload["checks"] = [
            {
                "rail": check.rail,
                "stage": check.stage.value,
                "title": check.title,
                "action": "mask" if check.masks else "block",
                "in_force": check.in_force,
                "needs": list(check.needs),
            }
            for check in status.checks
        ]
        payload["message"] = status.sentence
        payload["judges"] = [judge.to_json() for judge in status.judges]
    return payload


def _problems(error: ProfileError) -> list[str]:
    return [str(problem) for problem in error.problems]


def _list(context: AppContext, as_json: bool) -> int:
    default = context.settings.guard_profile
    entries: list[ProfileEntry] = context.profile_library().entries()
    if as_json:
        listed = []
        for entry in entries:
            if entry.profile is None:
                assert entry.error is not None
                listed.append(
                    {"id": entry.id, "origin": entry.origin.value, "valid": False}
                    | {"problems": _problems(entry.error)}
                )
                continue
            status = context.guard_status(entry.profile.id)
            item = _profile_json(entry.profile, status)
            listed.append(item | {"valid": True, "default": entry.id == default})
        print(json.dumps(listed, indent=2))
        return EXIT_OK
    for entry in entries:
        mark = "*" if entry.id == default else " "
        if entry.profile is None:
            assert entry.error is not None
            print(f"{mark} {entry.id:<14} {entry.origin.value:<8} INVALID")
            for problem in _problems(entry.error):
                print(f"      {problem}")
            continue
        manifest = entry.profile.manifest
        print(
            f"{mark} {entry.id:<14} {entry.origin.value:<8} {manifest.strictness.value:<8} "
            f"{entry.profile.name} {manifest.version}"
        )
    print("\n* the default profile (settings: guard_profile)")
    return EXIT_OK


def _show(context: AppContext, profile_id: str, as_json: bool) -> int:
    try:
        profile = context.profile_library().get(profile_id)
    except (ProfileNotFoundError, ProfileError) as error:
        raise GuardProfileError(str(error)) from error
    status = context.guard_status(profile_id)
    if as_json:
        print(json.dumps(_profile_json(profile, status), indent=2))
        return EXIT_OK
    manifest = profile.manifest
    print(f"{profile.name} ({profile.id}) {manifest.version}, {profile.origin.value}")
    print(f"  strictness: {manifest.strictness.value}")
    if manifest.description:
        print(f"  {manifest.description.strip()}")
    print(f"  sha256: {profile.content_hash}")
    for check in status.checks:
        state = "in force" if check.in_force else f"NOT in force (needs {', '.join(check.needs)})"
        action = "masks" if check.masks else "blocks"
        print(f"  - {check.stage.value:<6} {check.title}: {action}; {state}")
    print(status.sentence)
    for judge in status.judges:
        print(judge.sentence())
    return EXIT_OK


def _check(path: Path, as_json: bool) -> int:
    try:
        profile = check_profile(path)
    except ProfileError as error:
        if as_json:
            print(json.dumps({"valid": False, "problems": _problems(error)}, indent=2))
        else:
            print(str(error))
        return EXIT_INVALID
    if as_json:
        print(json.dumps({"valid": True} | _profile_json(profile, None), indent=2))
    else:
        print(f"{path}: valid profile '{profile.id}' ({profile.name} {profile.manifest.version})")
        print(f"sha256: {profile.content_hash}")
    return EXIT_OK


def run_profiles(context: AppContext, args: argparse.Namespace) -> int:
    action = args.profiles_command
    if action == "list":
        return _list(context, args.json)
    if action == "show":
        return _show(context, args.id, args.json)
    if action == "check":
        return _check(args.path, args.json)
    if action == "import":
        context.policy.require_user_profiles()
        try:
            profile = import_profile(args.path, context.profiles_dir, replace=args.replace)
        except ProfileError as error:
            raise GuardProfileError(str(error)) from error
        print(f"Imported '{profile.id}' ({profile.name}); sha256 {profile.content_hash}.")
        return EXIT_OK
    try:
        profile = context.profile_library().get(args.id)
    except (ProfileNotFoundError, ProfileError) as error:
        raise GuardProfileError(str(error)) from error
    written = export_profile(profile, args.path)
    print(f"Wrote {written}.")
    return EXIT_OK
