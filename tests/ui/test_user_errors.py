"""Which errors the window shows as a sentence, and which are bugs (the crash path, with
the traceback logged): decided by type, never by the module an exception came from."""

from __future__ import annotations

import pytest

from bastion_desktop.core.errors import ModelLoadError
from bastion_desktop.ui.chat_controller import is_user_error
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
