"""What the models window's tabs share: its tables, their cells, the fit badge's words
and colours, the machine's hardware (probed once per process) and failure sentences."""

from __future__ import annotations

import functools
from typing import Any

from bastion_desktop.ui.errors import sentence_for
from bastion_desktop.ui.qt import QtCore, QtGui, QtWidgets

FIT_TEXT = {
    "full_gpu": "Fits fully on GPU",
    "partial_gpu": "Partly on GPU",
    "cpu_only": "CPU only",
    "will_not_fit": "Will not fit",
}
FIT_COLOUR = {
    "full_gpu": "#2e7d32",
    "partial_gpu": "#1565c0",
    "cpu_only": "#8d6e00",
    "will_not_fit": "#c62828",
}
ROLE_TEXT = {"chat": "Chat", "safety": "Safety (guardrails)"}


@functools.cache
def hardware() -> Any:
    """Probed once per process (llama.cpp and the GPU drivers are asked in children)."""
    from bastion_desktop.core.hub.probe import probe_hardware

    return probe_hardware()


def fit_label(estimate: Any) -> str:
    text = FIT_TEXT[estimate.kind.value]
    if estimate.kind.value == "partial_gpu":
        text = f"Partly on GPU ({estimate.gpu_layers} of {estimate.total_layers} layers)"
    return text + (" (tight)" if estimate.tight else "")


def fit_item(estimate: Any) -> QtWidgets.QTableWidgetItem:
    entry = item(fit_label(estimate))
    entry.setForeground(QtGui.QBrush(QtGui.QColor(FIT_COLOUR[estimate.kind.value])))
    entry.setToolTip(estimate.summary)
    return entry


def item(text: str, data: object = None) -> QtWidgets.QTableWidgetItem:
    made = QtWidgets.QTableWidgetItem(text)
    made.setFlags(made.flags() & ~QtCore.Qt.ItemFlag.ItemIsEditable)
    if data is not None:
        made.setData(QtCore.Qt.ItemDataRole.UserRole, data)
    return made


def table(headers: list[str], name: str) -> QtWidgets.QTableWidget:
    made = QtWidgets.QTableWidget(0, len(headers))
    made.setHorizontalHeaderLabels(headers)
    made.setAccessibleName(name)
    made.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
    made.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
    made.verticalHeader().setVisible(False)
    made.setAlternatingRowColors(True)
    made.setWordWrap(False)
    header = made.horizontalHeader()
    header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Stretch)
    return made


def row_data(of: QtWidgets.QTableWidget, row: int) -> Any:
    """What the row's first cell carries (a repository, a file, a model id)."""
    cell = of.item(row, 0)
    return None if cell is None else cell.data(QtCore.Qt.ItemDataRole.UserRole)


def sentence_label(name: str) -> QtWidgets.QLabel:
    label = QtWidgets.QLabel()
    label.setObjectName(name)
    label.setWordWrap(True)
    label.setAccessibleName(name)
    label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def sentence(error: object) -> str:
    return sentence_for(error, "That")
