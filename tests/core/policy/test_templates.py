"""The deployment templates are generated from the schema; the copies committed in
packaging/policy/ must be what the schema generates now, and each must be readable by
the tool that consumes it and mean what the schema says."""

from __future__ import annotations

import json
import plistlib
import re
from pathlib import Path
from xml.dom import minidom

from bastion_desktop.core.policy.check import check_policy_file
from bastion_desktop.core.policy.macos import PREFERENCE_DOMAIN, MacPolicyReader
from bastion_desktop.core.policy.merge import merge_sources
from bastion_desktop.core.policy.schema import POLICIES
from bastion_desktop.core.policy.templates import (
    ADML,
    ADMX,
    JSON_SCHEMA,
    MOBILECONFIG,
    SAMPLE,
    TEMPLATE_FILES,
    sample_policy,
    write_templates,
)

from .fakes import FakePreferences

COMMITTED = Path(__file__).parents[3] / "packaging" / "policy"


def test_committed_templates_are_up_to_date(tmp_path: Path) -> None:
    write_templates(tmp_path)
    committed = sorted(p.relative_to(COMMITTED).as_posix() for p in COMMITTED.rglob("*.*"))
    assert committed == sorted(TEMPLATE_FILES), "stale or missing files in packaging/policy"
    for name in TEMPLATE_FILES:
        fresh = (tmp_path / name).read_bytes()
        assert (COMMITTED / name).read_bytes() == fresh, (
            f"packaging/policy/{name} is out of date: run "
            "`bastion policy templates packaging/policy` and commit the result"
        )


def test_admx_declares_every_policy_and_adml_names_everything_it_uses(tmp_path: Path) -> None:
    write_templates(tmp_path)
    admx_text = (tmp_path / ADMX).read_text(encoding="utf-8")
    adml_text = (tmp_path / ADML).read_text(encoding="utf-8")
    admx = minidom.parseString(admx_text)  # noqa: S318  (our own generated file)
    adml = minidom.parseString(adml_text)  # noqa: S318
    declared = {node.getAttribute("name") for node in admx.getElementsByTagName("policy")}
    expected = {p.name for p in POLICIES} | {
        f"{p.name}_Recommended" for p in POLICIES if p.recommendable
    }
    assert declared == expected
    strings = {node.getAttribute("id") for node in adml.getElementsByTagName("string")}
    presentations = {node.getAttribute("id") for node in adml.getElementsByTagName("presentation")}
    assert set(re.findall(r"\$\(string\.(\w+)\)", admx_text)) <= strings
    assert set(re.findall(r"\$\(presentation\.(\w+)\)", admx_text)) == presentations
    for node in admx.getElementsByTagName("policy"):
        name = node.getAttribute("name")
        key = node.getAttribute("key")
        assert key == (
            "Software\\Policies\\Bastion\\Recommended"
            if name.endswith("_Recommended")
            else "Software\\Policies\\Bastion"
        )


def test_the_mobileconfig_sets_the_sample_values_and_they_validate(tmp_path: Path) -> None:
    write_templates(tmp_path)
    profile = plistlib.loads((tmp_path / MOBILECONFIG).read_bytes())
    assert profile["PayloadType"] == "Configuration"
    (payload,) = profile["PayloadContent"]
    assert payload["PayloadType"] == PREFERENCE_DOMAIN
    values = {k: v for k, v in payload.items() if not k.startswith("Payload")}
    assert values == sample_policy()
    # Installed by MDM, these are forced values: read them as the macOS reader would.
    forced = FakePreferences(PREFERENCE_DOMAIN, {k: (v, True) for k, v in values.items()})
    policy = merge_sources(MacPolicyReader(forced).read())
    assert policy.errors == ()
    assert policy.locked_profile == sample_policy()["GuardrailProfile"]


def test_the_sample_policy_passes_check_and_the_schema_lists_every_policy(tmp_path: Path) -> None:
    write_templates(tmp_path)
    assert check_policy_file(tmp_path / SAMPLE) == []
    schema = json.loads((tmp_path / JSON_SCHEMA).read_text(encoding="utf-8"))
    assert list(schema["properties"]) == [p.name for p in POLICIES]
    assert schema["additionalProperties"] is False
    assert set(json.loads((tmp_path / SAMPLE).read_text(encoding="utf-8"))) <= set(
        schema["properties"]
    )
