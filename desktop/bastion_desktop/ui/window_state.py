"""Where the main window was: its size, place (or maximized) and sidebar width, kept
from one run to the next.

It is not a setting (nothing to validate, nothing an administrator manages): a small
file next to the settings, read before the window's first paint and written when the
window closes. A file that cannot be read gives the default window; one that cannot be
written is logged and forgotten. It holds no chat text."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.files import write_atomically

log = logging.getLogger(__name__)

WINDOW_STATE_FILE = "window.json"


@dataclass(frozen=True)
class WindowState:
    geometry: bytes  # what QWidget.saveGeometry gives: size, place, maximized, screen
    sidebar: int  # the conversation list's width, in pixels


def read_window_state(path: Path) -> WindowState | None:
    """The state saved at `path`, or None (no file yet, or one that makes no sense)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        geometry = base64.b64decode(raw["geometry"], validate=True)
        sidebar = raw["sidebar"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, binascii.Error) as error:
        log.info("the window's last size and place were not restored (%s): %s", path, error)
        return None
    if type(sidebar) is not int or sidebar <= 0 or not geometry:
        log.info("the window's last size and place were not restored (%s): bad values", path)
        return None
    return WindowState(geometry, sidebar)


def write_window_state(path: Path, state: WindowState) -> None:
    data = {"geometry": base64.b64encode(state.geometry).decode("ascii"), "sidebar": state.sidebar}
    try:
        write_atomically(path, json.dumps(data).encode("utf-8"))
    except (OSError, BastionError) as error:  # a full disk, a read-only folder
        log.info("the window's size and place were not saved (%s): %s", path, error)
