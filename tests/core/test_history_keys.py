"""The history key: keychain first, passphrase where there is none, changes that survive
a crash half-way."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError

from bastion_desktop.core.history.keys import (
    KEYRING_SERVICE,
    HistoryKeyError,
    HistoryKeys,
    KeySource,
    PassphraseNeededError,
)


class MemoryKeyring(KeyringBackend):
    """A keychain through keyring's own backend API, for machines without a desktop
    session; the Secret Service test below uses a real one."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.entries.pop((service, username), None) is None:
            raise PasswordDeleteError(username)


# keyring registers every backend class it sees and, on its first use, picks the
# highest-priority one as the process's keychain: left registered, this test double
# would become "the keychain" of every test that runs later.
KeyringBackend._classes.discard(MemoryKeyring)  # type: ignore[attr-defined]


def prompt_with(*answers: str):  # type: ignore[no-untyped-def]
    queue = list(answers)

    def prompt(confirm: bool) -> str:
        return queue.pop(0)

    return prompt


def test_first_run_puts_a_random_key_in_the_keychain(tmp_path: Path) -> None:
    backend = MemoryKeyring()
    keys = HistoryKeys(tmp_path / "history-key.json", backend=backend)
    created = keys.create()
    assert created.source is KeySource.KEYCHAIN
    assert len(created.key) == 32
    [(service, _entry)] = backend.entries
    assert service == KEYRING_SERVICE
    record = (tmp_path / "history-key.json").read_text()
    assert created.key.hex() not in record, "the record holds no secret"
    assert keys.candidates()[0].key == created.key
    assert "keychain" in keys.describe()


def test_without_a_keychain_the_key_comes_from_a_passphrase(tmp_path: Path) -> None:
    keys = HistoryKeys(
        tmp_path / "k.json", prompt_with("correct horse", "correct horse"), use_keychain=False
    )
    created = keys.create()
    assert created.source is KeySource.PASSPHRASE
    again = keys.candidates()[0]
    assert again.key == created.key
    other = HistoryKeys(tmp_path / "k.json", prompt_with("wrong horse!"), use_keychain=False)
    assert other.candidates()[0].key != created.key
    assert "passphrase" in keys.describe()
    assert "horse" not in (tmp_path / "k.json").read_text()


def test_no_keychain_and_nobody_to_ask_is_a_sentence(tmp_path: Path) -> None:
    keys = HistoryKeys(tmp_path / "k.json", prompt=None, use_keychain=False)
    with pytest.raises(PassphraseNeededError, match="--passphrase-file"):
        keys.create()
    assert not (tmp_path / "k.json").exists()


def test_a_short_new_passphrase_is_refused(tmp_path: Path) -> None:
    keys = HistoryKeys(tmp_path / "k.json", prompt_with("short"), use_keychain=False)
    with pytest.raises(HistoryKeyError, match="at least 8 characters"):
        keys.create()


def test_a_missing_keychain_entry_is_reported(tmp_path: Path) -> None:
    backend = MemoryKeyring()
    keys = HistoryKeys(tmp_path / "k.json", backend=backend)
    keys.create()
    backend.entries.clear()
    with pytest.raises(HistoryKeyError, match="missing from the keychain"):
        keys.candidates()


@pytest.mark.log_warnings("an unusable keyring backend is logged as a warning")
def test_a_plaintext_keyring_is_not_a_keychain(tmp_path: Path) -> None:
    class PlaintextKeyring(MemoryKeyring):
        pass

    KeyringBackend._classes.discard(PlaintextKeyring)  # type: ignore[attr-defined]
    import keyring

    previous = keyring.get_keyring()
    keyring.set_keyring(PlaintextKeyring())
    try:
        keys = HistoryKeys(tmp_path / "k.json", prompt=None)
        with pytest.raises(PassphraseNeededError):
            keys.create()
    finally:
        keyring.set_keyring(previous)


def test_a_change_interrupted_before_it_finished_keeps_both_keys(tmp_path: Path) -> None:
    backend = MemoryKeyring()
    keys = HistoryKeys(tmp_path / "k.json", prompt_with("a new passphrase"), backend=backend)
    old = keys.create()
    new = keys.begin_change(KeySource.PASSPHRASE)
    # A crash here: the database may be on either key. Both are offered, current first.
    reopened = HistoryKeys(tmp_path / "k.json", prompt_with("a new passphrase"), backend=backend)
    candidates = reopened.candidates()
    assert [k.key for k in candidates] == [old.key, new.key]
    # The database turned out to be on the new key: the change completes.
    reopened.settle(candidates[1])
    record = json.loads((tmp_path / "k.json").read_text())
    assert record["current"]["source"] == "passphrase"
    assert record["pending"] is None
    assert backend.entries == {}, "the old keychain entry is removed once unused"


def test_an_abandoned_change_leaves_the_current_key(tmp_path: Path) -> None:
    backend = MemoryKeyring()
    keys = HistoryKeys(tmp_path / "k.json", backend=backend)
    old = keys.create()
    new = keys.begin_change(KeySource.KEYCHAIN)
    assert len(backend.entries) == 2
    keys.abandon_change(new)
    assert [k.key for k in keys.candidates()] == [old.key]
    assert len(backend.entries) == 1


def test_a_damaged_record_is_reported(tmp_path: Path) -> None:
    (tmp_path / "k.json").write_text("{not json")
    with pytest.raises(HistoryKeyError, match="damaged"):
        HistoryKeys(tmp_path / "k.json", backend=MemoryKeyring()).candidates()


def test_the_key_lives_in_a_real_secret_service(
    secret_service: dict[str, str], tmp_path: Path
) -> None:
    script = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from bastion_desktop.core.history.keys import HistoryKeys\n"
        "keys = HistoryKeys(Path(sys.argv[1]))\n"
        "key = keys.create() if sys.argv[2] == 'create' else keys.candidates()[0]\n"
        "print(json.dumps([key.key.hex(), key.where, keys.describe()]))\n"
    )
    record = tmp_path / "history-key.json"

    def run(action: str) -> list[str]:
        result = subprocess.run(
            [os.sys.executable, "-c", script, str(record), action],  # type: ignore[attr-defined]
            env=secret_service,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return list(json.loads(result.stdout))

    created, where, _ = run("create")
    found, _, described = run("open")
    assert found == created
    assert "SecretService" in where
    assert "keychain (SecretService.Keyring)" in described
    assert created not in record.read_text()
