"""A setting an administrator locks is visibly disabled and says so, and unlocking
gives the control back as it was."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from bastion_desktop.ui.managed import MANAGED_TEXT, is_managed, managed_note, mark_managed
from bastion_desktop.ui.qt import QtWidgets


def test_a_locked_control_is_disabled_and_says_it_is_managed(qtbot: QtBot) -> None:
    page = QtWidgets.QWidget()
    qtbot.addWidget(page)
    layout = QtWidgets.QVBoxLayout(page)
    box = QtWidgets.QSpinBox()
    box.setToolTip("Tokens the model sees.")
    box.setAccessibleDescription("Context length in tokens")
    note = managed_note()
    layout.addWidget(box)
    layout.addWidget(note)

    mark_managed(box, True, note)

    assert not box.isEnabled()
    assert box.toolTip() == MANAGED_TEXT
    assert box.accessibleDescription() == MANAGED_TEXT
    assert not note.isHidden()
    assert note.text() == "Managed by your organization"
    assert is_managed(box)

    mark_managed(box, False, note)

    assert box.isEnabled()
    assert box.toolTip() == "Tokens the model sees."
    assert box.accessibleDescription() == "Context length in tokens"
    assert note.isHidden()
    assert not is_managed(box)


def test_locking_twice_still_restores_the_controls_own_tooltip(qtbot: QtBot) -> None:
    box = QtWidgets.QLineEdit()
    qtbot.addWidget(box)
    box.setToolTip("Where downloaded models are kept.")
    mark_managed(box, True)
    mark_managed(box, True)
    mark_managed(box, False)
    assert box.toolTip() == "Where downloaded models are kept."
    assert box.isEnabled()
