"""The window opens as it was left: its size, place, maximized or not, and the width of
the conversation list, kept in `config/window.json`. A file that makes no sense gives
the default window and loses nothing else."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from bastion_desktop.ui.main_window import DEFAULT_SIZE, MainWindow
from bastion_desktop.ui.qt import QtWidgets
from bastion_desktop.ui.window_state import (
    WindowState,
    read_window_state,
    write_window_state,
)

pytestmark = pytest.mark.qt_log_ignore("does not support propagateSizeHints")


def _shown(qtbot: QtBot, state: WindowState | None) -> MainWindow:
    window = MainWindow()
    qtbot.addWidget(window)
    window.restore(state)
    window.show()
    qtbot.waitExposed(window)
    return window


def _sidebar(window: MainWindow) -> int:
    central = window.centralWidget()
    assert isinstance(central, QtWidgets.QSplitter)
    return int(central.sizes()[0])


def test_the_size_and_the_list_width_come_back(qtbot: QtBot, tmp_path: Path) -> None:
    first = _shown(qtbot, None)
    assert (first.width(), first.height()) == DEFAULT_SIZE
    # Inside the offscreen platform's 800x600 screen: a restored window is kept on it.
    first.resize(760, 540)
    central = first.centralWidget()
    assert isinstance(central, QtWidgets.QSplitter)
    central.setSizes([330, 430])
    qtbot.waitUntil(lambda: first.width() == 760 and _sidebar(first) == 330)
    state_file = tmp_path / "config" / "window.json"
    write_window_state(state_file, first.state())
    first.close()

    saved = read_window_state(state_file)
    assert saved is not None
    assert saved.sidebar == 330
    second = _shown(qtbot, saved)
    assert (second.width(), second.height()) == (760, 540)
    assert _sidebar(second) == 330
    assert second.state().sidebar == saved.sidebar


def test_a_maximized_window_opens_maximized(qtbot: QtBot) -> None:
    first = MainWindow()
    qtbot.addWidget(first)
    first.showMaximized()
    qtbot.waitUntil(first.isMaximized)
    state = first.state()
    first.close()
    second = _shown(qtbot, state)
    assert second.isMaximized()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"\xff\xfe garbage",
        b"[1, 2]",
        b'{"geometry": "AdnQywAD", "sidebar": "wide"}',
        b'{"geometry": "AdnQywAD", "sidebar": true}',
        b'{"geometry": "AdnQywAD", "sidebar": -5}',
        b'{"geometry": "@@not base64@@", "sidebar": 300}',
        b'{"geometry": "", "sidebar": 300}',
        b'{"sidebar": 300}',
    ],
)
def test_a_broken_file_gives_the_default_window(
    qtbot: QtBot, tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    state_file = tmp_path / "window.json"
    state_file.write_bytes(content)
    with caplog.at_level(logging.INFO, logger="bastion_desktop.ui.window_state"):
        state = read_window_state(state_file)
    assert state is None
    assert "not restored" in caplog.text
    window = _shown(qtbot, state)
    assert (window.width(), window.height()) == DEFAULT_SIZE
    assert state_file.read_bytes() == content, "the file is left for the next save"


def test_geometry_qt_cannot_read_gives_the_default_window(qtbot: QtBot) -> None:
    window = _shown(qtbot, WindowState(b"\x00\x01 not a geometry", 300))
    assert (window.width(), window.height()) == DEFAULT_SIZE


def test_no_file_yet_is_the_default_window(tmp_path: Path) -> None:
    assert read_window_state(tmp_path / "window.json") is None


def test_a_folder_that_cannot_be_written_is_logged_and_forgotten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_folder = tmp_path / "config"
    not_a_folder.write_text("a file where the folder should be", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="bastion_desktop.ui.window_state"):
        write_window_state(not_a_folder / "window.json", WindowState(b"geometry", 300))
    assert "not saved" in caplog.text
    assert not_a_folder.read_text("utf-8") == "a file where the folder should be"


def test_a_full_disk_is_logged_and_forgotten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    # A full disk cannot be made here without root: the write itself fails as it would.
    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", full)
    with caplog.at_level(logging.INFO, logger="bastion_desktop.ui.window_state"):
        write_window_state(tmp_path / "window.json", WindowState(b"geometry", 300))
    assert "is full" in caplog.text
    assert list(tmp_path.iterdir()) == [], "no half-written file is left"


def test_the_file_holds_only_geometry(tmp_path: Path) -> None:
    state_file = tmp_path / "window.json"
    write_window_state(state_file, WindowState(b"\x01\xd9\xd0\xcb", 280))
    assert json.loads(state_file.read_text("utf-8")) == {"geometry": "AdnQyw==", "sidebar": 280}
