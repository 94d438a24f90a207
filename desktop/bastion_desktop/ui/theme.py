"""Bastion's look: Qt's Fusion style with Bastion's light or dark colours (the system's
by default), and the theme the settings name, read before they are loaded."""

from __future__ import annotations

import json
from pathlib import Path

from bastion_desktop.ui.qt import QtCore, QtGui, QtWidgets

# Colours of the app's own parts (messages, badges); Qt's palette covers the rest.
_LIGHT = {
    "window": "#f6f7f9",
    "base": "#ffffff",
    "text": "#1d2127",
    "muted": "#5e6673",
    "user": "#e8effc",
    "assistant": "#ffffff",
    "border": "#dde1e7",
    "code": "#f3f4f6",
    "passed": "#1e7b3a",
    "masked": "#9a6700",
    "blocked": "#b42318",
    "accent": "#2f6fdf",
    "notice": "#fff4e5",
}
_DARK = {
    "window": "#1b1d21",
    "base": "#23262b",
    "text": "#e6e8eb",
    "muted": "#9aa3ae",
    "user": "#2a3547",
    "assistant": "#23262b",
    "border": "#363a41",
    "code": "#272822",
    "passed": "#5cc779",
    "masked": "#e3b341",
    "blocked": "#f47067",
    "accent": "#5b9bff",
    "notice": "#3b2f1a",
}


def _style_sheet(c: dict[str, str]) -> str:
    return f"""
    #sidebar {{ background: {c["window"]}; }}
    #chatContainer {{ background: {c["base"]}; }}
    #topBar {{ border-bottom: 1px solid {c["border"]}; }}
    #userMessage {{ background: {c["user"]}; border-radius: 10px; }}
    #assistantMessage {{ background: {c["assistant"]}; border: 1px solid {c["border"]};
        border-radius: 10px; }}
    #author {{ font-weight: 600; }}
    #stats, #messageNote, #placeholder, #profileStatus, #fitBadge, #codeLanguage, #contextUse,
    #serverHint {{ color: {c["muted"]}; }}
    #contextUse {{ font-size: 11px; }}
    #contextUse[nearlyFull="true"] {{ color: {c["masked"]}; }}
    #messageNote {{ font-style: italic; }}
    #codeBlock {{ background: {c["code"]}; border: 1px solid {c["border"]};
        border-radius: 6px; }}
    #codeText {{ background: transparent; }}
    #guardBadge {{ border-radius: 8px; padding: 0 6px; font-size: 11px; }}
    #guardBadge[verdict="passed"] {{ color: {c["passed"]}; }}
    #guardBadge[verdict="masked"] {{ color: {c["masked"]}; }}
    #guardBadge[verdict="blocked"], #guardBadge[verdict="withdrawn"] {{ color: {c["blocked"]}; }}
    #guardBadge[verdict="unchecked"] {{ color: {c["muted"]}; }}
    #policyBanner, #auditNotice {{ background: {c["notice"]}; padding: 6px 12px; }}
    #privateBanner {{ background: {c["user"]}; color: {c["accent"]}; font-weight: 600;
        padding: 6px 12px; }}
    #policyBanner[failedClosed="true"] {{ color: {c["blocked"]}; font-weight: 600; }}
    #notice, #starterNotice, #newTokenNotice {{ background: {c["notice"]}; border-radius: 6px;
        padding: 6px; }}
    #composer {{ border-top: 1px solid {c["border"]}; }}
    #editBanner {{ color: {c["accent"]}; }}
    #attachmentChip {{ background: {c["user"]}; border: 1px solid {c["border"]};
        border-radius: 10px; }}
    #attachButton {{ font-size: 16px; font-weight: 600; padding: 2px 8px; }}
    #passphraseDialog #problem {{ color: {c["blocked"]}; }}
    QScrollBar:vertical {{ background: transparent; width: 10px; margin: 0; }}
    QScrollBar:horizontal {{ background: transparent; height: 10px; margin: 0; }}
    QScrollBar::handle {{ background: {c["border"]}; border-radius: 4px; margin: 2px; }}
    QScrollBar::handle:hover {{ background: {c["muted"]}; }}
    QScrollBar::handle:vertical {{ min-height: 24px; }}
    QScrollBar::handle:horizontal {{ min-width: 24px; }}
    QScrollBar::add-line, QScrollBar::sub-line {{ width: 0; height: 0; }}
    QScrollBar::add-page, QScrollBar::sub-page {{ background: transparent; }}
    """


def wants_dark(theme: str, app: QtWidgets.QApplication) -> bool:
    if theme == "dark":
        return True
    if theme == "light":
        return False
    return app.styleHints().colorScheme() == QtCore.Qt.ColorScheme.Dark


def _palette(c: dict[str, str]) -> QtGui.QPalette:
    palette = QtGui.QPalette()
    role = QtGui.QPalette.ColorRole
    color = QtGui.QColor
    for which, value in (
        (role.Window, c["window"]),
        (role.WindowText, c["text"]),
        (role.Base, c["base"]),
        (role.AlternateBase, c["window"]),
        (role.Text, c["text"]),
        (role.Button, c["base"]),
        (role.ButtonText, c["text"]),
        (role.ToolTipBase, c["base"]),
        (role.ToolTipText, c["text"]),
        (role.PlaceholderText, c["muted"]),
        (role.Highlight, c["accent"]),
        (role.HighlightedText, "#ffffff"),
        (role.Link, c["accent"]),
    ):
        palette.setColor(which, color(value))
    for which in (role.WindowText, role.Text, role.ButtonText):
        palette.setColor(QtGui.QPalette.ColorGroup.Disabled, which, color(c["muted"]))
    return palette


def apply_theme(app: QtWidgets.QApplication, theme: str) -> bool:
    """Fusion with Bastion's light or dark colours; returns whether it is dark."""
    dark = wants_dark(theme, app)
    colours = _DARK if dark else _LIGHT
    app.setStyle("Fusion")
    app.setPalette(_palette(colours))
    app.setStyleSheet(_style_sheet(colours))
    return dark


def first_theme(settings_file: Path) -> str:
    """The theme the settings file names, read on its own: the window paints before the
    settings are loaded and checked (a broken file gives the system's theme here, and
    its sentence once they are)."""
    try:
        theme = json.loads(settings_file.read_text(encoding="utf-8")).get("theme")
    except (OSError, ValueError, AttributeError):
        return "system"
    return theme if theme in ("light", "dark") else "system"
