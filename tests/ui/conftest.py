"""Fixtures of the desktop window's tests (tests/ui/desktop_fixtures.py), made visible
to every test in this folder."""

from tests.ui.desktop_fixtures import desktop, desktop_home

__all__ = ["desktop", "desktop_home"]
