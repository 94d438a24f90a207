"""Settings an administrator's policy locks: their widgets stay visible, disabled, and
say "Managed by your organization" (DESIGN.md, Admin policy), the way Chrome and VS Code
show a managed preference. The user sees the value in force and why it cannot change."""

from __future__ import annotations

from bastion_desktop.ui.qt import QtWidgets

MANAGED_TEXT = "Managed by your organization"
# Kept so that unlocking gives back the control's own tooltip and description.
_OWN_TOOLTIP = "_bastion_own_tooltip"
_OWN_DESCRIPTION = "_bastion_own_description"


def managed_note(parent: QtWidgets.QWidget | None = None) -> QtWidgets.QLabel:
    """The small note shown under a locked control (hidden until `mark_managed`)."""
    note = QtWidgets.QLabel(MANAGED_TEXT, parent)
    note.setObjectName("managedNote")
    note.setAccessibleName(MANAGED_TEXT)
    font = note.font()
    font.setItalic(True)
    note.setFont(font)
    note.setEnabled(False)  # drawn in the palette's disabled colour, as the control is
    note.setVisible(False)
    return note


def mark_managed(
    widget: QtWidgets.QWidget, locked: bool, note_label: QtWidgets.QLabel | None = None
) -> None:
    """Disable `widget` and say it is managed (tooltip, accessible description and the
    note label if given); `locked=False` gives it back as it was."""
    if locked:
        if widget.property(_OWN_TOOLTIP) is None:
            widget.setProperty(_OWN_TOOLTIP, widget.toolTip())
            widget.setProperty(_OWN_DESCRIPTION, widget.accessibleDescription())
        widget.setEnabled(False)
        widget.setToolTip(MANAGED_TEXT)
        widget.setAccessibleDescription(MANAGED_TEXT)
    else:
        own_tooltip = widget.property(_OWN_TOOLTIP)
        if own_tooltip is not None:
            widget.setToolTip(str(own_tooltip))
            widget.setAccessibleDescription(str(widget.property(_OWN_DESCRIPTION) or ""))
            widget.setProperty(_OWN_TOOLTIP, None)
            widget.setProperty(_OWN_DESCRIPTION, None)
        widget.setEnabled(True)
    if note_label is not None:
        note_label.setText(MANAGED_TEXT)
        note_label.setVisible(locked)


def is_managed(widget: QtWidgets.QWidget) -> bool:
    return not widget.isEnabled() and widget.toolTip() == MANAGED_TEXT
