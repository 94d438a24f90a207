"""AllowedModels, by Hub repository (wildcards, case-insensitive like the Hub) and by the
GGUF file's sha256; downloads and offline mode."""

from __future__ import annotations

import pytest

from bastion_desktop.core.policy import EffectivePolicy
from bastion_desktop.core.policy.merge import merge_sources
from bastion_desktop.core.policy.sources import Level, PolicySource

STARTER_SHA = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def _policy(**values: object) -> EffectivePolicy:
    return merge_sources([PolicySource("test", Level.MACHINE_MANDATORY, values)])


def test_without_a_list_every_model_is_allowed() -> None:
    assert EffectivePolicy().model_allowed("any/repo", None)
    assert EffectivePolicy().model_allowed(None, None)


def test_by_repository_with_wildcards() -> None:
    policy = _policy(AllowedModels=["bartowski/*", "Qwen/Qwen3-4B-GGUF"])
    assert policy.model_allowed("bartowski/Llama-3.2-1B-Instruct-GGUF", None)
    assert policy.model_allowed("qwen/qwen3-4b-gguf", None)
    assert not policy.model_allowed("Qwen/Qwen3-8B-GGUF", None)
    assert not policy.model_allowed("evil/bartowski-lookalike", None)
    assert not policy.model_allowed(None, STARTER_SHA)  # a local file, not listed


def test_by_file_hash() -> None:
    policy = _policy(AllowedModels=[STARTER_SHA.upper()])
    assert policy.model_allowed(None, STARTER_SHA)
    assert policy.model_allowed("any/repo", STARTER_SHA)
    assert not policy.model_allowed("any/repo", "0" * 64)


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_a_malformed_entry_is_named() -> None:
    policy = _policy(AllowedModels=["bartowski"])
    assert policy.errors == (
        "test: AllowedModels entry 'bartowski' is neither a Hub repository (org/name) nor a "
        "sha256 (64 hex digits); it was not applied.",
    )


def test_offline_mode_also_stops_downloads() -> None:
    assert EffectivePolicy().downloads_allowed
    assert not _policy(OfflineMode=True).downloads_allowed
    assert not _policy(AllowModelDownloads=False).downloads_allowed
    assert not _policy(AllowModelDownloads=False).offline_mode
