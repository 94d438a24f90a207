"""The one place Bastion imports Qt from (as qutebrowser does): swapping or pinning
the binding, or working around one of its bugs, happens here."""

from PySide6 import QtCore, QtGui, QtWidgets

Signal = QtCore.Signal
Slot = QtCore.Slot

__all__ = ["QtCore", "QtGui", "QtWidgets", "Signal", "Slot"]
