"""The secondary windows enforce what `bastion` enforces (issue 7): the models window
refuses Hub search and file listings in offline mode, shows its download buttons as
managed when downloads are not allowed, refuses a model outside AllowedModels (from the
Hub or from disk); the profiles window manages import and "Make default" and marks a
profile the policy does not allow; the sidebar's Export is managed.

The policy is built in-process from a PolicySource (this machine has no /etc policy)
and put into the real AppContext the windows read (`services.context.policy`); the Hub
is the emulator on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from bastion_desktop.commands.passphrase import passphrase_prompt
from bastion_desktop.context import AppContext
from bastion_desktop.core.policy import EffectivePolicy
from bastion_desktop.core.policy.merge import merge_sources
from bastion_desktop.core.policy.sources import Level, PolicySource
from bastion_desktop.core.settings import load_settings
from bastion_desktop.ui.conversations import ConversationRow, ConversationSidebar
from bastion_desktop.ui.engine import Engine
from bastion_desktop.ui.managed import MANAGED_TEXT, is_managed
from bastion_desktop.ui.models_window import ModelsWindow
from bastion_desktop.ui.profiles_window import ProfilesWindow
from bastion_desktop.ui.services import AppServices
from bastion_guardrails.library import builtin_bundle
from tests.core.hub.gguf_files import write_tiny_gguf
from tests.core.hub.hub_emulator import HubEmulator
from tests.ui.window_services import context, engine, make_services

__all__ = ["context", "engine"]  # fixtures used by name

REPO = "bastion-test/Tiny-Chat-GGUF"
FILE = "Tiny-Chat-Q4_K_M.gguf"
OFFLINE = (
    "Your organization has turned on offline mode: Bastion does not use the network, so "
    "the Hub cannot be searched or downloaded from."
)
NOT_ALLOWED = "Your organization does not allow the model {}; ask your administrator to add it to AllowedModels."  # noqa: E501

Managed = Callable[[dict[str, Any]], AppServices]


def policy(values: dict[str, Any]) -> EffectivePolicy:
    source = PolicySource("/etc/bastion/policies/managed/a.json", Level.MACHINE_MANDATORY, values)
    built = merge_sources([source])
    assert built.errors == ()
    return built


@pytest.fixture
def managed(context: AppContext, engine: Engine) -> Managed:
    """The real services with the given mandatory policy in force."""

    def build(values: dict[str, Any]) -> AppServices:
        return make_services(dataclasses.replace(context, policy=policy(values)), engine)

    return build


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    folder = tmp_path / "made"
    folder.mkdir()
    return write_tiny_gguf(folder / FILE, name="Tiny Chat")[0]


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, model_file: Path) -> Iterator[HubEmulator]:
    emulator = HubEmulator()
    emulator.add_repo(REPO, {FILE: model_file}, license="apache-2.0")
    monkeypatch.setenv("HF_ENDPOINT", emulator.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    try:
        yield emulator
    finally:
        emulator.shutdown()


@pytest.fixture
def open_models(qtbot: QtBot) -> Iterator[Callable[[AppServices], ModelsWindow]]:
    opened: list[ModelsWindow] = []

    def open_window(services: AppServices) -> ModelsWindow:
        window = ModelsWindow(services)
        qtbot.addWidget(window)
        qtbot.waitUntil(lambda: window.hardware is not None, timeout=60_000)
        opened.append(window)
        return window

    yield open_window
    for window in opened:
        window.shut_down()
    for _ in range(100):
        if not [t for t in threading.enumerate() if t.name.startswith("download-")]:
            break
        qtbot.wait(20)


# --- the models window ------------------------------------------------------------------------


def test_offline_mode_refuses_search_and_file_listing_with_the_sentence(
    qtbot: QtBot, managed: Managed, open_models: Any, hub: HubEmulator
) -> None:
    window = open_models(managed({"OfflineMode": True}))
    window.hub.query.setText("tiny")
    with qtbot.waitSignal(window.problem_shown, timeout=5_000) as shown:
        window.hub.search_button.click()
    assert shown.args == [OFFLINE]
    assert window.hub.status.text() == OFFLINE
    assert window.hub.results.rowCount() == 0
    with qtbot.waitSignal(window.problem_shown, timeout=5_000):
        window.hub.show_files(REPO)
    assert window.hub.files_status.text() == OFFLINE
    # Offline means no downloads either: the buttons say the organization manages them.
    window.catalog.table.selectRow(0)
    assert is_managed(window.catalog.download_button)
    assert is_managed(window.hub.download_button)
    assert hub.requests == [], "nothing reached the Hub"


def test_download_buttons_are_managed_when_downloads_are_not_allowed(
    qtbot: QtBot, managed: Managed, open_models: Any, hub: HubEmulator
) -> None:
    window = open_models(managed({"AllowModelDownloads": False}))
    window.catalog.table.selectRow(0)
    assert is_managed(window.catalog.download_button), "a selection does not enable it"
    assert window.catalog.download_button.toolTip() == MANAGED_TEXT
    # Searching stays allowed; the file list fills, its download button stays managed.
    window.hub.query.setText("tiny")
    with qtbot.waitSignal(window.search_done, timeout=20_000):
        window.hub.search_button.click()
    with qtbot.waitSignal(window.files_ready, timeout=20_000):
        window.hub.results.selectRow(0)
    assert window.hub.files.rowCount() == 1
    window.hub.files.selectRow(0)
    assert is_managed(window.hub.download_button)
    with qtbot.waitSignal(window.problem_shown, timeout=5_000) as shown:
        window.start_download(REPO, FILE, "chat", window.hub.files_status)
    assert shown.args == ["Your organization does not allow model downloads."]
    assert window.downloads.rows == {}


def test_a_download_outside_allowed_models_is_refused_and_nothing_is_fetched(
    qtbot: QtBot, managed: Managed, open_models: Any, hub: HubEmulator
) -> None:
    window = open_models(managed({"AllowedModels": ["bartowski/*"]}))
    window.catalog.table.selectRow(0)
    assert window.catalog.download_button.isEnabled(), "downloads as such are allowed"
    with qtbot.waitSignal(window.problem_shown, timeout=20_000) as shown:
        window.start_download(REPO, FILE, "chat", window.hub.files_status)
    assert shown.args == [NOT_ALLOWED.format(REPO)]
    assert window.hub.files_status.text() == NOT_ALLOWED.format(REPO)
    assert window.downloads.rows == {}
    assert hub.served_for(REPO, FILE) == 0, "no byte of the file was downloaded"
    assert [m for m in window.services.context.registry.list() if m.source == "hub"] == []


def test_a_download_allowed_by_its_sha256_starts(
    qtbot: QtBot, managed: Managed, open_models: Any, hub: HubEmulator
) -> None:
    digest = hub.file(REPO, FILE).sha256
    window = open_models(managed({"AllowedModels": ["bartowski/*", digest]}))
    with qtbot.waitSignal(window.installed_changed, timeout=60_000):
        window.start_download(REPO, FILE, "chat", window.hub.files_status)
        qtbot.waitUntil(lambda: bool(window.downloads.rows), timeout=20_000)
    [model] = [m for m in window.services.context.registry.list() if m.repo == REPO]
    assert model.sha256 == digest


def test_import_from_disk_outside_allowed_models_registers_nothing(
    qtbot: QtBot, managed: Managed, open_models: Any, model_file: Path
) -> None:
    window = open_models(managed({"AllowedModels": ["bartowski/*"]}))
    with qtbot.waitSignal(window.problem_shown, timeout=20_000) as shown:
        window.installed.import_file(model_file, "copy")
    assert shown.args == [NOT_ALLOWED.format(FILE)]
    assert window.installed.status.text() == NOT_ALLOWED.format(FILE)
    context = window.services.context
    assert [m for m in context.registry.list() if m.source == "local"] == []
    assert not (context.models_dir / "imported").exists(), "nothing was copied"


# --- the profiles window -----------------------------------------------------------------------


def open_profiles(qtbot: QtBot, services: AppServices) -> ProfilesWindow:
    window = ProfilesWindow(services)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: len(window.views) >= 4, timeout=20_000)
    return window


def test_profile_import_is_managed_when_user_profiles_are_not_allowed(
    qtbot: QtBot, managed: Managed, tmp_path: Path
) -> None:
    window = open_profiles(qtbot, managed({"AllowUserGuardrailProfiles": False}))
    assert is_managed(window.import_folder_button)
    assert is_managed(window.import_archive_button)
    folder = tmp_path / "team"
    folder.mkdir()
    for name, data in builtin_bundle("strict").files.items():
        (folder / name).write_bytes(data.replace(b"id: strict", b"id: team"))
    with qtbot.waitSignal(window.import_failed, timeout=5_000) as failed:
        window.import_from(folder)
    sentence = (
        "Your organization does not allow importing guardrail profiles; nothing was "
        "installed. Use a built-in profile or one your administrator provides."
    )
    assert failed.args == [[sentence]]
    assert window.status.text() == sentence
    assert not (window.services.context.profiles_dir / "team").exists()


def test_a_profile_the_policy_does_not_allow_is_marked_and_cannot_be_the_default(
    qtbot: QtBot, managed: Managed
) -> None:
    window = open_profiles(qtbot, managed({"AllowedGuardrailProfiles": ["standard", "strict"]}))
    assert not is_managed(window.import_folder_button)
    window.select("off")
    assert "not allowed by your organization" in window.list.currentItem().text()
    assert "not allowed by your organization" in window.facts.text()
    assert not window.make_default_button.isEnabled()
    window.make_default("off")
    assert "does not allow the Off profile" in window.status.text()
    settings_file = window.services.context.paths.settings_file
    assert load_settings(settings_file).guard_profile != "off"
    window.select("strict")
    assert "not allowed" not in window.list.currentItem().text()
    assert window.make_default_button.isEnabled()


def test_make_default_is_managed_while_the_policy_locks_the_profile(
    qtbot: QtBot, managed: Managed
) -> None:
    window = open_profiles(qtbot, managed({"GuardrailProfile": "strict"}))
    for profile_id in ("standard", "workplace"):
        window.select(profile_id)
        assert is_managed(window.make_default_button)


# --- the sidebar's Export ------------------------------------------------------------------------


@pytest.fixture
def history_services(
    passphrase_file: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[dict[str, Any]], AppServices]]:
    built: list[AppServices] = []

    def build(values: dict[str, Any]) -> AppServices:
        context = dataclasses.replace(AppContext.start(), policy=policy(values))
        store = context.open_history(passphrase_prompt(passphrase_file))
        engine = Engine()
        engine.start()
        services = AppServices.assemble(context, engine, store)
        built.append(services)
        return services

    yield build
    for services in built:
        services.shut_down()


def test_export_is_managed_in_the_sidebar_menu_and_refused(
    qtbot: QtBot, history_services: Any, tmp_path: Path
) -> None:
    services = history_services({"AllowConversationExport": False})
    conversation = services.engine.run(
        services.store.create_conversation(
            title="kept", model_id="m", profile_id="standard", system_prompt=""
        )
    )
    sidebar = ConversationSidebar(services)
    qtbot.addWidget(sidebar)
    row = ConversationRow(conversation.id, "kept", pinned=False)
    menu = sidebar.context_menu(row)
    actions = {a.text(): a for a in menu.actions() if a.text()}
    export = actions["Export…"]
    assert not export.isEnabled()
    assert export.toolTip() == MANAGED_TEXT
    assert actions["Rename…"].isEnabled()
    target = tmp_path / "out.md"
    with qtbot.waitSignal(sidebar.error, timeout=5_000) as refused:
        sidebar.export(conversation.id, target)
    assert refused.args == [
        "Your organization does not allow exporting conversations; nothing was written."
    ]
    assert not target.exists()
