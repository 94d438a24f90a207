"""Fixtures of the desktop window's tests (tests/ui/desktop_fixtures.py), made visible
to every test in this folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ui.desktop_fixtures import desktop, desktop_home

__all__ = ["desktop", "desktop_home", "no_keychain"]


@pytest.fixture(autouse=True)
def no_keychain() -> Iterator[None]:
    """The window's tests run as on a machine without a keychain (as CI is): the
    history key comes from a passphrase, whatever keyring backend this process found."""
    import keyring
    from keyring.backends import fail

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    yield
    keyring.set_keyring(previous)
