"""Asking the user for the history passphrase in a terminal, or reading it from a file."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.history.keys import PassphrasePrompt, passphrase_from_file


def passphrase_prompt(passphrase_file: Path | None) -> PassphrasePrompt | None:
    """How to get a passphrase here: from `--passphrase-file`, from the terminal, or not
    at all (None: a script with no file gets a sentence, never a hang)."""
    if passphrase_file is not None:
        return passphrase_from_file(passphrase_file)
    if sys.stdin.isatty():
        return _from_terminal
    return None


def _from_terminal(confirm: bool) -> str:
    if not confirm:
        return getpass.getpass("Passphrase for your conversation history: ")
    print(
        "No keychain is available, so your conversation history will be encrypted with a "
        "passphrase. Bastion cannot recover it if you forget it.",
        file=sys.stderr,
    )
    first = getpass.getpass("New passphrase: ")
    if getpass.getpass("Repeat it: ") != first:
        raise BastionError("The two passphrases differ; nothing was changed.")
    return first


def new_passphrase_prompt(new_passphrase_file: Path | None) -> PassphrasePrompt | None:
    """For a change of passphrase: the new one from its own file, else from the terminal."""
    if new_passphrase_file is not None:
        return passphrase_from_file(new_passphrase_file)
    if sys.stdin.isatty():
        return lambda _confirm: _from_terminal(True)
    return None
