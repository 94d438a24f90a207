"""Helpers for the policy tests: policy folders built in tmp_path with real ownership
and permissions (the tests run as root, as CI does, so they can chown and chmod)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

WritePolicy = Callable[..., Path]


@pytest.fixture
def policy_root(tmp_path: Path) -> Path:
    """An /etc/bastion/policies look-alike: root's, not writable by group or others."""
    if os.geteuid() != 0:
        pytest.skip("the ownership rule is tested by building root-owned folders (needs root)")
    root = tmp_path / "etc-bastion-policies"
    for folder in (root, root / "managed", root / "recommended"):
        folder.mkdir(mode=0o755)
        folder.chmod(0o755)  # whatever the umask
    return root


@pytest.fixture
def write_policy(policy_root: Path) -> WritePolicy:
    """Writes `<root>/<kind>/<name>` holding `data` as JSON (or `text` as is), mode 0644."""

    def write(kind: str, name: str, data: Any = None, *, text: str | None = None) -> Path:
        path = policy_root / kind / name
        path.write_text(json.dumps(data) if text is None else text, encoding="utf-8")
        path.chmod(0o644)
        return path

    return write
