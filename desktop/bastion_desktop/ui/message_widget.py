"""One message in the chat view: who wrote it, its guardrail badge, the text, the
actions (copy, edit, regenerate, alternatives) and the reply's stats."""

from __future__ import annotations

from dataclasses import dataclass

from bastion_desktop.core.conversation_store import GuardEventRecord, MessageState
from bastion_desktop.core.events import DoneEvent
from bastion_desktop.core.inference.types import GenerationStats, Role
from bastion_desktop.ui.markdown import MarkdownView
from bastion_desktop.ui.qt import QtCore, QtWidgets, Signal
from bastion_guardrails import explain
from bastion_guardrails.decisions import GuardDecision

OFF_PROFILE = "off"
UNCHECKED = "Guardrails were off: nothing was checked."

# Streamed text is re-rendered at most this often: Markdown layout per token would
# make a fast model stutter the window.
RENDER_INTERVAL_MS = 50


@dataclass(frozen=True)
class Badge:
    """What the guardrails did to one message, in words for the badge and its details."""

    verdict: str  # "passed", "masked", "blocked", "withdrawn", "unchecked"
    profile: str  # its name, as the user knows it (the id if it is not known)
    rail: str | None = None
    category: str | None = None
    explanation: str = ""

    @property
    def label(self) -> str:
        return {
            "passed": "✓ Passed",
            "masked": "◐ Masked",
            "blocked": "⊘ Blocked",
            "withdrawn": "⊘ Withdrawn",
            "unchecked": "○ Not checked",
        }[self.verdict]

    @property
    def details(self) -> str:
        lines = [f"Guardrail profile: {self.profile}"]
        if self.rail:
            lines.append(f"Rail: {self.rail}")
        if self.category:
            lines.append(f"Category: {self.category}")
        if self.explanation:
            lines.append(self.explanation)
        return "\n".join(lines)

    @classmethod
    def from_decision(
        cls, decision: GuardDecision, *, retracted: bool = False, profile_name: str | None = None
    ) -> Badge:
        verdict = decision.verdict.value
        if verdict == "allowed":
            # Under Off nothing was checked: a green "Passed" would claim otherwise.
            verdict = "unchecked" if decision.profile_id == OFF_PROFILE else "passed"
        elif verdict == "blocked" and retracted:
            verdict = "withdrawn"
        profile = profile_name or decision.profile_id
        return cls(verdict, profile, decision.rail, decision.category, decision.explanation)

    @classmethod
    def from_record(cls, record: GuardEventRecord, profile_name: str | None = None) -> Badge:
        """A badge for a decision read back from the history, which keeps no
        explanation: the sentence is rebuilt from the rail and category it does keep."""
        verdict = {"allowed": "passed"}.get(record.verdict, record.verdict)
        if record.profile_id == OFF_PROFILE and verdict == "passed":
            return cls("unchecked", profile_name or record.profile_id, explanation=UNCHECKED)
        profile = profile_name or record.profile_id
        explanation = explain.recorded(
            record.verdict,
            record.stage,
            profile,
            rail=record.rail,
            category=record.category,
            judgement=record.judgement,
        )
        return cls(verdict, profile, record.rail, record.category, explanation)


def stats_line(stats: GenerationStats | DoneEvent) -> str:
    """How a reply was written; nothing for one stopped before its first token (no
    speed to tell), and why it ended where the longest-reply setting cut it off."""
    if isinstance(stats, DoneEvent):
        tokens, rate, ttft = stats.tokens, stats.tokens_per_second, stats.ttft_ms
    else:
        tokens, rate, ttft = stats.generated_tokens, stats.tokens_per_second, stats.ttft_ms
    if tokens == 0:
        return ""
    line = f"{tokens} tokens · {rate:.1f} tokens/s · first token in {ttft:.0f} ms"
    if stats.finish_reason == "length":
        line += " · cut off at the longest reply (Settings → Sampling)"
    return line


_STATE_NOTES = {
    MessageState.STOPPED: "Stopped",
    MessageState.INTERRUPTED: "Interrupted: this reply did not finish",
    MessageState.STREAMING: "",
    MessageState.COMPLETE: "",
    MessageState.BLOCKED: "",
}


class MessageWidget(QtWidgets.QFrame):
    edit_requested = Signal(int)
    regenerate_requested = Signal(int)
    alternative_requested = Signal(int)  # the sibling message id to show
    link_requested = Signal(QtCore.QUrl)

    def __init__(
        self,
        role: Role,
        author: str,
        message_id: int | None = None,
        parent: QtWidgets.QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.role = role
        self.message_id = message_id
        self.badge: Badge | None = None
        self.state = MessageState.STREAMING
        self._text = ""
        self._pending = False
        self._streamed = False  # shown as it streamed, not yet whole
        self._siblings: tuple[int | None, int | None] = (None, None)
        self.setObjectName("userMessage" if role is Role.USER else "assistantMessage")
        self.setAccessibleName("Your message" if role is Role.USER else "Reply")

        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(14, 10, 14, 8)
        layout.setSpacing(4)

        layout.addLayout(self._build_header(role, author))

        self.body = MarkdownView(self)
        self.body.link_requested.connect(self.link_requested.emit)
        layout.addWidget(self.body)
        self.note_label = QtWidgets.QLabel(self)
        self.note_label.setObjectName("messageNote")
        self.note_label.setWordWrap(True)
        self.note_label.setVisible(False)
        layout.addWidget(self.note_label)
        self.stats_label = QtWidgets.QLabel(self)
        self.stats_label.setObjectName("stats")
        self.stats_label.setAccessibleName("Reply statistics")
        self.stats_label.setVisible(False)
        layout.addWidget(self.stats_label)

        self._render_timer = QtCore.QTimer(self)
        self._render_timer.setSingleShot(True)
        self._render_timer.setInterval(RENDER_INTERVAL_MS)
        self._render_timer.timeout.connect(self._render_streamed)
        self.set_actions_enabled(False)

    def _build_header(self, role: Role, author: str) -> QtWidgets.QHBoxLayout:
        header = QtWidgets.QHBoxLayout()
        header.setSpacing(6)
        self.author_label = QtWidgets.QLabel(author, self)
        self.author_label.setObjectName("author")
        header.addWidget(self.author_label)
        self.badge_button = QtWidgets.QToolButton(self)
        self.badge_button.setObjectName("guardBadge")
        self.badge_button.setAutoRaise(True)
        self.badge_button.setVisible(False)
        self.badge_button.clicked.connect(self.show_badge_details)
        header.addWidget(self.badge_button)
        header.addStretch(1)
        self.previous_button = self._tool("\u2039", "Previous version", header)
        self.alternative_label = QtWidgets.QLabel(self)
        header.addWidget(self.alternative_label)
        self.next_button = self._tool("\u203a", "Next version", header)
        self.previous_button.clicked.connect(lambda: self._go(0))
        self.next_button.clicked.connect(lambda: self._go(1))
        self.copy_button = self._tool("Copy", "Copy message", header)
        self.copy_button.clicked.connect(self.copy)
        self.edit_button = self._tool("Edit", "Edit and resend", header)
        self.edit_button.clicked.connect(self._emit_edit)
        self.regenerate_button = self._tool("Regenerate", "Regenerate reply", header)
        self.regenerate_button.clicked.connect(self._emit_regenerate)
        self.edit_button.setVisible(role is Role.USER)
        self.regenerate_button.setVisible(role is Role.ASSISTANT)
        self._set_alternatives(1, 1)
        return header

    def _tool(self, text: str, name: str, layout: QtWidgets.QHBoxLayout) -> QtWidgets.QToolButton:
        button = QtWidgets.QToolButton(self)
        button.setText(text)
        button.setAccessibleName(name)
        button.setToolTip(name)
        button.setAutoRaise(True)
        layout.addWidget(button)
        return button

    def reuse(self, message_id: int | None, author: str) -> None:
        """Make this widget blank for another message of the same role (the chat view
        keeps the widgets of a closed conversation: refilling one costs a fraction of
        building one)."""
        self.message_id = message_id
        self.author_label.setText(author)
        self._render_timer.stop()
        self._text = ""
        self._streamed = False
        self.set_badge(None)
        self.state = MessageState.STREAMING
        self.set_note("")
        self.set_stats("")
        self._siblings = (None, None)
        self._set_alternatives(1, 1)
        # Its actions stay as they were: the view enables or disables them next, and
        # every needless toggle restyles a button.

    # -- content ---------------------------------------------------------------------

    @property
    def text(self) -> str:
        return self._text

    def set_text(self, text: str) -> None:
        self._text = text
        self._render_timer.stop()
        self._streamed = False
        self._render()

    def append(self, piece: str) -> None:
        """Streamed text: shown at the next render tick, not per token."""
        self._text += piece
        self._streamed = True
        if not self._render_timer.isActive():
            self._render_timer.start()

    def flush(self) -> None:
        """The reply is complete (or stopped): show it whole, at once."""
        self._render_timer.stop()
        if self._streamed:
            self._streamed = False
            self._render()

    def _render_streamed(self) -> None:
        self._render(streaming=True)

    def _render(self, *, streaming: bool = False) -> None:
        # A blocked or withdrawn message has no text: no empty box above its note, and
        # nothing to copy.
        self.body.setVisible(bool(self._text))
        self.copy_button.setVisible(bool(self._text))
        if self.role is Role.USER:
            self.body.set_plain(self._text)
        else:
            self.body.set_markdown(self._text, streaming=streaming)

    def set_state(self, state: MessageState) -> None:
        self.state = state
        self._update_note()

    def _update_note(self) -> None:
        """The line under the text: why a message was blocked or withdrawn (the badge's
        explanation, when there is one), or how a reply ended."""
        note = _STATE_NOTES.get(self.state, "")
        if self.state is MessageState.BLOCKED:
            explanation = self.badge.explanation if self.badge is not None else ""
            note = explanation or (
                "This message was not sent: the guardrails blocked it."
                if self.role is Role.USER
                else "The guardrails withdrew this reply."
            )
        self.set_note(note)

    def set_note(self, note: str) -> None:
        self.note_label.setText(note)
        self.note_label.setVisible(bool(note))

    def set_stats(self, line: str) -> None:
        self.stats_label.setText(line)
        self.stats_label.setVisible(bool(line))

    def set_badge(self, badge: Badge | None) -> None:
        self.badge = badge
        self.badge_button.setVisible(badge is not None)
        self._update_note()
        if badge is None:
            return
        self.badge_button.setText(badge.label)
        self.badge_button.setToolTip(badge.details)
        self.badge_button.setAccessibleName(f"Guardrails: {badge.verdict}")
        self.badge_button.setAccessibleDescription(badge.details)
        if self.badge_button.property("verdict") != badge.verdict:
            # The style sheet colours the badge by verdict: restyle it when that changes.
            self.badge_button.setProperty("verdict", badge.verdict)
            self.badge_button.style().unpolish(self.badge_button)
            self.badge_button.style().polish(self.badge_button)

    def show_badge_details(self) -> None:
        if self.badge is None:
            return
        box = QtWidgets.QMessageBox(self)
        box.setObjectName("badgeDetails")
        box.setWindowTitle("Guardrails")
        box.setIcon(QtWidgets.QMessageBox.Icon.Information)
        box.setText(self.badge.label)
        box.setInformativeText(self.badge.details)
        box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    def set_alternatives(
        self, number: int, count: int, previous: int | None, following: int | None
    ) -> None:
        self._siblings = (previous, following)
        self._set_alternatives(number, count)

    def _set_alternatives(self, number: int, count: int) -> None:
        shown = count > 1
        self.alternative_label.setText(f"{number} / {count}")
        self.alternative_label.setAccessibleName(f"Version {number} of {count}")
        for widget in (self.previous_button, self.alternative_label, self.next_button):
            widget.setVisible(shown)
        self.previous_button.setEnabled(self._siblings[0] is not None)
        self.next_button.setEnabled(self._siblings[1] is not None)

    def set_actions_enabled(self, enabled: bool) -> None:
        has_id = self.message_id is not None
        for button in (self.edit_button, self.regenerate_button):
            button.setEnabled(enabled and has_id)
        self.previous_button.setEnabled(enabled and self._siblings[0] is not None)
        self.next_button.setEnabled(enabled and self._siblings[1] is not None)

    # -- actions -----------------------------------------------------------------------

    def copy(self) -> None:
        QtWidgets.QApplication.clipboard().setText(self._text)

    def _emit_edit(self) -> None:
        if self.message_id is not None:
            self.edit_requested.emit(self.message_id)

    def _emit_regenerate(self) -> None:
        if self.message_id is not None:
            self.regenerate_requested.emit(self.message_id)

    def _go(self, which: int) -> None:
        target = self._siblings[which]
        if target is not None:
            self.alternative_requested.emit(target)
