"""`bastion chat` as a user runs it: a real process, the real starter model."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bastion_desktop.commands.chat import EventPrinter
from bastion_desktop.core.events import ChatEvent, TokenEvent
from bastion_desktop.core.history.errors import HistoryDiskFullError

from .conftest import RunBastion

pytestmark = pytest.mark.model


def test_json_prints_one_event_per_line_ending_with_done(
    bastion: RunBastion, starter_path: Path
) -> None:
    result = bastion("chat", "--json", "--seed", "4", "--max-tokens", "12", "Hello there")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    guardrails = events.pop(0)
    assert guardrails["type"] == "guardrails"
    assert guardrails["profile"] == "standard", "Standard is the default profile"
    assert "bastion block prompt injection on input" in guardrails["in_force"]
    assert guardrails["not_in_force"], "no safety model is installed"
    assert "safety model" in guardrails["message"]
    created, question, named, guard, loading, reply = events[:6]
    assert created == {
        "type": "conversation",
        "id": created["id"],
        "title": "",
        "created": True,
        "ephemeral": False,
    }
    assert question == {
        "type": "message",
        "id": question["id"],
        "role": "user",
        "state": "complete",
        "alternatives": [],
    }
    assert named["type"] == "conversation"
    assert (named["id"], named["title"], named["created"]) == (created["id"], "Hello there", False)
    assert guard["type"] == "guard"
    assert guard["decision"]["verdict"] == "allowed"
    assert guard["decision"]["profile"] == "standard"
    assert guard["message_id"] == question["id"]
    assert loading == {"type": "loading", "model": starter_path.name}, "the model loads first"
    assert (reply["type"], reply["role"], reply["state"]) == ("message", "assistant", "streaming")
    assert {e["type"] for e in events[6:-2]} == {"token"}
    assert events[-2] == {**reply, "state": "complete"}
    done = events[-1]
    assert done["type"] == "done"
    assert done["tokens"] == 12
    assert done["prompt_tokens"] > 0
    assert done["context_length"] == 4096, "the default context window"
    assert done["tokens_per_second"] > 0
    assert done["ttft_ms"] > 0
    assert result.stderr == ""


def test_plain_output_is_the_reply_and_the_seed_repeats_it(bastion: RunBastion) -> None:
    args = ("chat", "--seed", "11", "--max-tokens", "16", "--temperature", "0.9", "Hi")
    first = bastion(*args)
    second = bastion(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip()
    assert first.stdout == second.stdout
    as_json = bastion(*args, "--json")
    tokens = [
        e["text"] for e in map(json.loads, as_json.stdout.splitlines()) if e["type"] == "token"
    ]
    assert "".join(tokens) + "\n" == first.stdout


def test_interactive_mode_reads_messages_until_end_of_input(bastion: RunBastion) -> None:
    result = bastion("chat", "--max-tokens", "6", "--json", stdin="Hello\n\n/new\nAgain\n")
    assert result.returncode == 0, result.stderr
    done = [e for e in map(json.loads, result.stdout.splitlines()) if e["type"] == "done"]
    assert len(done) == 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("chat", "--model", "/nowhere/model.gguf", "hi"), "neither an installed model id"),
        (("chat", "--model", "no-such-model", "hi"), "neither an installed model id"),
    ],
)
def test_user_errors_exit_1_with_one_line(
    bastion: RunBastion, args: tuple[str, ...], expected: str
) -> None:
    result = bastion(*args)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bastion: ")
    assert expected in lines[0]


def test_a_file_that_is_not_a_model_is_explained(bastion: RunBastion, tmp_path: Path) -> None:
    fake = tmp_path / "notes.gguf"
    fake.write_text("these are my notes, not a model")
    result = bastion("chat", "--json", "--model", str(fake), "hi")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    error = json.loads(result.stdout.splitlines()[-1])
    assert error["type"] == "error"
    assert error["kind"] == "model_load"
    assert "not a GGUF model file" in error["message"]
    assert result.stderr.strip() == f"bastion: {error['message']}"


def test_a_message_too_long_for_the_context_is_refused_plainly(
    bastion: RunBastion, home_with_starter: Path
) -> None:
    settings = home_with_starter / "config" / "settings.json"
    content = json.loads(settings.read_text())
    content["inference"] = {"context_length": 256}
    settings.write_text(json.dumps(content))
    result = bastion("chat", "word " * 400)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "tokens, but this model's context holds 256" in result.stderr
    # Piped in, the same message fails its turn; the next one is answered, and the
    # script still learns from the exit status that a turn failed.
    piped = bastion("chat", "--max-tokens", "4", "--json", stdin="word " * 400 + "\nHello\n")
    assert piped.returncode == 1
    events = [json.loads(line)["type"] for line in piped.stdout.splitlines()]
    assert events.count("error") == 1
    assert events[-1] == "done"


def test_attached_files_are_sent_with_the_message_and_titled_by_it(
    bastion: RunBastion, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("Meet at the lighthouse at noon.\n")
    result = bastion(
        "chat", "--json", "--max-tokens", "4", "--attach", str(notes), "When do we meet?"
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    [named] = [e for e in events if e["type"] == "conversation" and not e["created"]]
    assert named["title"] == "When do we meet?"
    done = events[-1]
    assert done["type"] == "done"
    shown = bastion("history", "show", "--json", named["id"])
    assert shown.returncode == 0, shown.stderr
    question = json.loads(shown.stdout)["messages"][0]["content"]
    assert question == (
        "When do we meet?\n\nAttached: notes.txt\n```\nMeet at the lighthouse at noon.\n```"
    )


def test_a_file_that_cannot_be_attached_stops_before_anything_runs(
    bastion: RunBastion, tmp_path: Path
) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    result = bastion("chat", "--attach", str(image), "What is this?")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "bastion: photo.png is an image, and Bastion attaches text files only (notes, code, "
        "CSV, JSON, Markdown).\n"
    )


def test_bad_arguments_exit_2_with_usage(bastion: RunBastion) -> None:
    result = bastion("chat", "--temperature", "hot", "hi")
    assert result.returncode == 2
    assert "--temperature" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_broken_settings_file_names_the_field(
    bastion: RunBastion, home_with_starter: Path
) -> None:
    settings = home_with_starter / "config" / "settings.json"
    settings.write_text(json.dumps({"sampling": {"top_p": 7}}))
    result = bastion("chat", "hi")
    assert result.returncode == 1
    assert "sampling.top_p" in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(settings.read_text()) == {"sampling": {"top_p": 7}}, "left as it was"


def test_a_models_folder_that_cannot_be_made_is_a_sentence(
    bastion: RunBastion, home_with_starter: Path, tmp_path: Path
) -> None:
    a_file = tmp_path / "models-is-a-file"
    a_file.write_text("")
    settings = home_with_starter / "config" / "settings.json"
    settings.write_text(json.dumps({"models_dir": str(a_file / "models")}))
    result = bastion("chat", "hi")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"The models folder {a_file / 'models'} cannot be used" in result.stderr
    assert "models_dir in settings.json" in result.stderr


def test_the_profile_flag_chooses_the_guardrails(bastion: RunBastion) -> None:
    off = bastion("chat", "--profile", "off", "--max-tokens", "4", "Hello")
    assert off.returncode == 0, off.stderr
    assert "[guardrails] Guardrails are off: nothing is checked." in off.stderr

    key = "AKIAIOSFODNN7EXAMPLE"
    blocked = bastion(
        "chat", "--json", "--profile", "workplace", "--max-tokens", "4", f"my key is {key}"
    )
    assert blocked.returncode == 0, blocked.stderr
    events = [json.loads(line) for line in blocked.stdout.splitlines()]
    assert events[0]["profile"] == "workplace"
    assert [e["type"] for e in events[1:]] == [
        "conversation",
        "message",
        "conversation",
        "guard",
        "blocked",
    ]
    assert events[-1]["message_id"] == events[2]["id"]
    assert events[-1]["decision"]["category"] == "secrets"
    shown = bastion("history", "show", events[1]["id"], "--json")
    assert key not in shown.stdout, "what Workplace blocks never reaches the history"

    unknown = bastion("chat", "--profile", "no-such-profile", "Hello")
    assert unknown.returncode == 1
    assert unknown.stderr == (
        "bastion: There is no guardrail profile with the id 'no-such-profile'.\n"
    )


async def test_a_turn_ended_by_a_full_disk_is_the_last_json_event() -> None:
    """The disk filling up mid-reply (the store raises; tests/core/history stages that
    on a real tmpfs): a program reading --json learns of it in the stream, not only on
    stderr, as it does of a crashed model."""

    async def turn() -> AsyncIterator[ChatEvent]:
        yield TokenEvent("Hel")
        raise HistoryDiskFullError("The disk holding /home/me/data is full.")

    out, err = io.StringIO(), io.StringIO()
    printer = EventPrinter(True, False, out, err)

    async def run() -> None:
        async for event in printer.reporting(turn()):
            printer(event)

    with pytest.raises(HistoryDiskFullError):
        await run()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["type"] for e in events] == ["token", "error"]
    assert events[-1]["kind"] == "disk_full"
    assert events[-1]["message"] == "The disk holding /home/me/data is full."
    assert err.getvalue() == "", "main says it on stderr, once"
