"""Which errors the window shows as a sentence, and which are bugs (the crash path, with
the traceback logged): decided by type, never by the module an exception came from."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

import bastion_desktop.ui
from bastion_desktop.core.errors import ModelLoadError
from bastion_desktop.ui.errors import CrashHandler, is_user_error, sentence_for
from bastion_guardrails.engine import ProfileUnavailableError
from bastion_guardrails.explain import ProfileStatus
from bastion_guardrails.problems import ProfileError, ProfileNotFoundError, ProfileProblem
from bastion_guardrails.yaml_lines import YamlSyntaxError


@pytest.mark.parametrize(
    "error",
    [
        ModelLoadError("The file is not a GGUF model."),
        ProfileNotFoundError("mine"),
        ProfileError("mine.zip", [ProfileProblem("config.yml", "is empty")]),
    ],
)
def test_errors_a_person_can_act_on_are_sentences(error: Exception) -> None:
    assert is_user_error(error)


def test_a_profile_that_cannot_run_is_a_sentence() -> None:
    status = ProfileStatus("strict", "Strict", (), False, "Strict needs a safety model.")
    error = ProfileUnavailableError(status)
    assert is_user_error(error)
    assert str(error) == "Strict needs a safety model."


@pytest.mark.parametrize(
    "error",
    [
        # Internal to the guardrail layer: always caught there. Escaping it is a bug, and
        # its text is no sentence for a user (it was shown as one when errors were
        # sorted by the name of their module).
        YamlSyntaxError("mapping values are not allowed here"),
        KeyError("conversation"),
        RuntimeError("an assertion in Bastion's own code"),
    ],
)
def test_bugs_are_not_shown_as_sentences(error: Exception) -> None:
    assert not is_user_error(error)


# --- the one bridge: sentence_for ----------------------------------------------------------


def test_a_user_error_is_its_own_sentence_and_is_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = ModelLoadError("The file is not a GGUF model.")
    assert sentence_for(error, "Loading the model") == "The file is not a GGUF model."
    assert sentence_for(asyncio.CancelledError(), "Loading the model") == ""
    assert caplog.records == []


def test_an_os_error_the_caller_expects_names_its_file() -> None:
    error = PermissionError(13, "Permission denied", "/data/api-tokens.json")
    sentence = sentence_for(error, "Saving the token", also=(OSError,))
    assert sentence == "Permission denied: /data/api-tokens.json."
    assert "[Errno" not in sentence


@pytest.mark.log_warnings("the bug this test raises is logged, as every bug must be")
@pytest.mark.qt_log_ignore("does not support propagateSizeHints")  # offscreen's dialogs
def test_a_bug_is_logged_with_its_traceback_and_opens_the_crash_dialog(
    qtbot: QtBot, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    crashes = CrashHandler(tmp_path / "bastion.log")
    monkeypatch.setattr(sys, "excepthook", crashes)
    try:
        raise KeyError("conversation")
    except KeyError as bug:
        error = bug
    said: list[str] = []
    # Background work fails on any thread; the dialog opens on the GUI thread.
    worker = threading.Thread(target=lambda: said.append(sentence_for(error, "Reading the list")))
    worker.start()
    worker.join()
    assert said == [
        "Reading the list did not complete: Bastion ran into a bug. The log file has the details."
    ]
    assert "KeyError" not in said[0], "no raw exception text"
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "Reading the list failed"
    assert record.exc_info is not None
    assert record.exc_info[1] is error, "the traceback is in the log"
    qtbot.waitUntil(lambda: len(crashes.dialogs) == 1, timeout=5_000)
    (dialog,) = crashes.dialogs
    assert dialog.objectName() == "crashDialog"
    assert str(tmp_path / "bastion.log") in dialog.text()
    assert dialog.isVisible(), "shown without a modal loop: the work's widget says the rest"
    dialog.close()
    qtbot.waitUntil(lambda: crashes.dialogs == [], timeout=5_000)


def test_every_window_goes_through_the_bridge() -> None:
    """No window sorts or logs its own failures any more (there were seven copies, each
    with its own words, some showing raw exception text): one place decides."""
    ui = Path(bastion_desktop.ui.__file__).parent
    own_logging = [
        path.name
        for path in sorted(ui.glob("*.py"))
        if path.name != "errors.py" and "log.error(" in path.read_text(encoding="utf-8")
    ]
    assert own_logging == []


def test_a_guardrail_error_reaching_the_top_is_a_sentence_in_the_window(
    qtbot: QtBot, tmp_path: Path
) -> None:
    crashes = CrashHandler(tmp_path / "bastion.log")
    said: list[str] = []
    crashes.notice = said.append
    error = ProfileNotFoundError("mine")
    crashes(type(error), error, None)
    assert said == [str(error)]
    assert crashes.dialogs == []
