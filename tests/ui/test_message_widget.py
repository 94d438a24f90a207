"""A reply's line of stats says how it was written and why it ended."""

from __future__ import annotations

from bastion_desktop.core.events import DoneEvent
from bastion_desktop.ui.message_widget import stats_line


def _done(tokens: int, finish_reason: str) -> DoneEvent:
    return DoneEvent(1, finish_reason, tokens, 20, 12.5, 80.0, 900.0, 1.0, 4096)


def test_a_reply_cut_off_by_the_longest_reply_setting_says_so() -> None:
    assert stats_line(_done(512, "length")) == (
        "512 tokens · 12.5 tokens/s · first token in 80 ms"
        " · cut off at the longest reply (Settings → Sampling)"
    )
    assert stats_line(_done(40, "stop")) == "40 tokens · 12.5 tokens/s · first token in 80 ms"


def test_a_reply_stopped_before_its_first_token_has_no_stats_to_show() -> None:
    assert stats_line(_done(0, "cancelled")) == ""
