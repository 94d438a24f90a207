"""Machine mandatory > user mandatory > the user's own settings > recommended >
defaults, applied to a real Settings object as the app does at start."""

from __future__ import annotations

from pathlib import Path

from bastion_desktop.core.policy import EffectivePolicy
from bastion_desktop.core.policy.merge import merge_sources
from bastion_desktop.core.policy.sources import Level, PolicySource
from bastion_desktop.core.settings import Settings, load_settings

MACHINE = PolicySource("machine", Level.MACHINE_MANDATORY, {"ConversationRetentionDays": 10})
USER = PolicySource("user", Level.USER_MANDATORY, {"ConversationRetentionDays": 20})
RECOMMENDED = PolicySource(
    "recommended",
    Level.MACHINE_RECOMMENDED,
    {"ConversationRetentionDays": 40, "GuardrailProfile": "workplace"},
)


def _settings_file(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "settings.json"
    path.write_text(text, encoding="utf-8")
    return load_settings(path)


def _apply(sources: list[PolicySource], settings: Settings) -> tuple[Settings, list[str]]:
    return merge_sources(sources).apply_to_settings(settings)


def test_each_level_in_turn(tmp_path: Path) -> None:
    user_setting = _settings_file(tmp_path, '{"retention_days": 30}')
    no_setting = Settings()
    # Machine mandatory beats everything, user mandatory beats the user's setting.
    assert _apply([RECOMMENDED, USER, MACHINE], user_setting)[0].retention_days == 10
    assert _apply([RECOMMENDED, USER], user_setting)[0].retention_days == 20
    # The user's setting beats a recommendation, which beats the default.
    assert _apply([RECOMMENDED], user_setting)[0].retention_days == 30
    assert _apply([RECOMMENDED], no_setting)[0].retention_days == 40
    assert _apply([], no_setting)[0].retention_days is None


def test_a_locked_value_overrides_the_settings_file_and_tells_the_user(tmp_path: Path) -> None:
    settings = _settings_file(tmp_path, '{"retention_days": 3650, "guard_profile": "off"}')
    policy = merge_sources(
        [
            PolicySource(
                "/etc/x.json",
                Level.MACHINE_MANDATORY,
                {"ConversationRetentionDays": 30, "GuardrailProfile": "strict"},
            )
        ]
    )
    applied, notices = policy.apply_to_settings(settings)
    assert (applied.retention_days, applied.guard_profile) == (30, "strict")
    assert policy.locked_settings() == frozenset({"retention_days", "guard_profile"})
    assert notices == [
        "Your organization manages the guardrail profile: Bastion uses 'strict', not 'off'.",
        "Your organization keeps conversations for 30 days; this setting is managed.",
    ]
    # Unrelated settings are left as they were.
    assert applied.inference == settings.inference


def test_a_recommended_profile_fills_in_only_an_unset_choice(tmp_path: Path) -> None:
    policy = merge_sources([RECOMMENDED])
    unset, notices = policy.apply_to_settings(Settings())
    assert unset.guard_profile == "workplace"
    assert notices == []
    chosen = _settings_file(tmp_path, '{"guard_profile": "standard"}')
    assert policy.apply_to_settings(chosen)[0].guard_profile == "standard"
    assert policy.locked_settings() == frozenset()


def test_no_policy_changes_nothing() -> None:
    settings = Settings(retention_days=5, guard_profile="off")
    applied, notices = EffectivePolicy().apply_to_settings(settings)
    assert applied is settings
    assert notices == []


def test_idle_models_unload_as_the_organization_says(tmp_path: Path) -> None:
    settings = _settings_file(tmp_path, '{"inference": {"unload_after_minutes": 0}}')
    assert Settings().inference.unload_after_minutes == 30  # the default
    locked = PolicySource("/etc/x.json", Level.MACHINE_MANDATORY, {"UnloadIdleModelsMinutes": 5})
    policy = merge_sources([locked])
    applied, notices = policy.apply_to_settings(settings)
    assert applied.inference.unload_after_minutes == 5
    assert policy.locked_settings() == frozenset({"inference.unload_after_minutes"})
    assert notices == [
        "Your organization sets how long an unused model stays loaded; this setting is managed."
    ]
    recommended = PolicySource(
        "/etc/y.json", Level.MACHINE_RECOMMENDED, {"UnloadIdleModelsMinutes": 120}
    )
    assert _apply([recommended], settings)[0].inference.unload_after_minutes == 0, "the user's"
    assert _apply([recommended], Settings())[0].inference.unload_after_minutes == 120
