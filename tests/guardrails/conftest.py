"""Fixtures for the guardrail tests: a shared engine (profiles compile once per test
session) and a writer for small user profiles in a temporary folder."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bastion_guardrails.engine import GuardEngine

MANIFEST = """\
id: {id}
name: {name}
version: "1.0"
description: A profile written by a test.
strictness: standard
"""


@pytest.fixture(scope="session")
def engine() -> GuardEngine:
    return GuardEngine()


def write_profile(
    folder: Path,
    config: str,
    *,
    profile_id: str = "test-profile",
    manifest: str | None = None,
    **files: str,
) -> Path:
    """A profile folder: profile.yml (a default one unless given), config.yml, and any
    other files (keyword `rails_co` writes rails.co)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = manifest if manifest is not None else MANIFEST.format(id=profile_id, name="Test")
    (folder / "profile.yml").write_text(textwrap.dedent(text), encoding="utf-8")
    (folder / "config.yml").write_text(textwrap.dedent(config), encoding="utf-8")
    for name, content in files.items():
        path = folder / name.replace("_co", ".co").replace("_md", ".md").replace("_py", ".py")
        path.write_text(textwrap.dedent(content), encoding="utf-8")
    return folder
