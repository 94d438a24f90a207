"""`bastion policy check FILE`: a policy JSON file validated before it is deployed.

Stricter than the app: a name that is not a policy is an error here (a typo would
otherwise be ignored in the field), and so is every problem the app would report.
"""

from __future__ import annotations

from pathlib import Path

from bastion_desktop.core.policy.linux import parse_policy_json
from bastion_desktop.core.policy.merge import merge_sources
from bastion_desktop.core.policy.sources import Level


def check_policy_file(path: Path, *, recommended: bool = False) -> list[str]:
    """The problems of a policy file, as sentences naming the key and what is wrong;
    an empty list when the file is ready to deploy."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return [f"{path} is not UTF-8 text."]
    except OSError as error:
        return [f"{path} cannot be read ({error.strerror or error})."]
    level = Level.MACHINE_RECOMMENDED if recommended else Level.MACHINE_MANDATORY
    source = parse_policy_json(text, str(path), level)
    if source.problems:
        return [problem.sentence for problem in source.problems]
    return list(merge_sources([source]).errors)
