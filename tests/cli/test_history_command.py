"""`bastion history` and the history behind `bastion chat`, as a user runs them."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from .conftest import BASTION, RunBastion

pytestmark = pytest.mark.model


def chat_json(bastion: RunBastion, *args: str) -> list[dict[str, object]]:
    result = bastion("chat", "--json", "--seed", "2", "--max-tokens", "6", *args)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["type"] == "guardrails"
    return events[1:]


def test_chats_are_kept_and_can_be_continued_searched_and_managed(
    bastion: RunBastion, tmp_path: Path
) -> None:
    first = chat_json(bastion, "Tell me about narwhals")
    conversation = str(first[0]["id"])
    chat_json(bastion, "--conversation", conversation, "And about belugas?")
    other = str(chat_json(bastion, "Something else entirely")[0]["id"])

    listed = json.loads(bastion("history", "list", "--json").stdout)
    assert [c["id"] for c in listed] == [other, conversation], "newest first"
    assert listed[1]["title"] == "Tell me about narwhals"

    shown = json.loads(bastion("history", "show", conversation, "--json").stdout)
    assert [m["role"] for m in shown["messages"]] == ["user", "assistant", "user", "assistant"]
    assert shown["messages"][2]["content"] == "And about belugas?"
    assert {m["state"] for m in shown["messages"]} == {"complete"}
    stats = shown["messages"][1]["stats"]
    assert stats["generated_tokens"] > 0
    assert "prompt_read_ms" not in stats, "how a reply was made is not kept: not shown"

    hits = json.loads(bastion("history", "search", "belugas", "--json").stdout)
    assert [h["conversation_id"] for h in hits] == [conversation]

    assert bastion("history", "rename", conversation, "Whales").returncode == 0
    assert bastion("history", "pin", other).returncode == 0
    listed = json.loads(bastion("history", "list", "--json").stdout)
    assert [(c["id"], c["pinned"]) for c in listed] == [(other, True), (conversation, False)]
    assert listed[1]["title"] == "Whales"

    markdown = tmp_path / "whales.md"
    exported = bastion(
        "history", "export", conversation, "--format", "md", "--output", str(markdown)
    )
    assert exported.returncode == 0, exported.stderr
    assert "And about belugas?" in markdown.read_text()
    backup = tmp_path / "all.json"
    assert bastion("history", "export", "--output", str(backup)).returncode == 0

    assert bastion("history", "delete", conversation).returncode == 0
    assert bastion("history", "search", "belugas", "--json").stdout.strip() == "[]"
    imported = bastion("history", "import", str(backup))
    assert imported.returncode == 0, imported.stderr
    assert "Imported 1; 1 were already here." in imported.stdout
    assert json.loads(bastion("history", "search", "belugas", "--json").stdout)


def test_an_ephemeral_chat_leaves_no_history(bastion: RunBastion, home_with_starter: Path) -> None:
    events = chat_json(bastion, "--ephemeral", "Forget me")
    assert events[0]["ephemeral"] is True
    assert events[-1]["type"] == "done"
    assert not (home_with_starter / "data" / "history.db").exists()


def test_a_wrong_passphrase_is_refused_and_the_file_left_alone(
    bastion: RunBastion, cli_env: dict[str, str], home_with_starter: Path, tmp_path: Path
) -> None:
    chat_json(bastion, "Hello")
    database = home_with_starter / "data" / "history.db"
    before = hashlib.sha256(database.read_bytes()).hexdigest()
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not the passphrase\n")
    result = subprocess.run(
        [str(BASTION), "history", "list", "--passphrase-file", str(wrong)],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "bastion: That passphrase does not unlock your conversation history. Try again; the "
        "history was left as it was."
    )
    assert hashlib.sha256(database.read_bytes()).hexdigest() == before


def test_no_passphrase_and_no_keychain_is_a_sentence_not_a_hang(
    cli_env: dict[str, str],
) -> None:
    env = {k: v for k, v in cli_env.items() if k != "BASTION_PASSPHRASE_FILE"}
    result = subprocess.run(
        [str(BASTION), "chat", "Hello"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "--passphrase-file" in result.stderr
    assert "Traceback" not in result.stderr


def a_long_reply_under_way(
    cli_env: dict[str, str], tokens: int
) -> tuple[subprocess.Popen[str], str, list[str]]:
    """`bastion chat --json` asked for a long story, read until `tokens` tokens were
    shown: the process, its conversation's id and the tokens' texts."""
    process = subprocess.Popen(
        [str(BASTION), "chat", "--json", "--max-tokens", "2000", "Tell me a very long story."],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert json.loads(process.stdout.readline())["type"] == "guardrails"
    conversation = json.loads(process.stdout.readline())["id"]
    shown: list[str] = []
    for line in process.stdout:
        event = json.loads(line)
        if event["type"] == "token":
            shown.append(event["text"])
        if len(shown) >= tokens:
            break
    return process, conversation, shown


def test_killing_bastion_mid_reply_keeps_the_partial_reply_as_interrupted(
    bastion: RunBastion, cli_env: dict[str, str]
) -> None:
    # More than 32 tokens: at least one save has happened.
    process, conversation, shown = a_long_reply_under_way(cli_env, tokens=80)
    os.kill(process.pid, signal.SIGKILL)
    # Read to the end: the model host, orphaned, holds the same stderr until it notices.
    _, stderr = process.communicate(timeout=120)
    assert "Traceback" not in stderr, "the orphaned model host printed a traceback"

    after = json.loads(bastion("history", "show", conversation, "--json").stdout)
    user, reply = after["messages"]
    assert user["content"] == "Tell me a very long story."
    assert reply["state"] == "interrupted"
    assert reply["content"], "the saved part of the reply is there"
    assert "".join(shown).startswith(reply["content"])


def test_the_history_moves_to_a_real_keychain_and_back(
    bastion: RunBastion,
    cli_env: dict[str, str],
    secret_service: dict[str, str],
    tmp_path: Path,
) -> None:
    chat_json(bastion, "Remember the lighthouse")
    session = {
        k: secret_service[k] for k in ("DBUS_SESSION_BUS_ADDRESS", "HOME", "XDG_RUNTIME_DIR")
    }
    with_keychain = dict(cli_env, **session)
    no_passphrase = {k: v for k, v in with_keychain.items() if k != "BASTION_PASSPHRASE_FILE"}

    def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BASTION), *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )

    moved = run(with_keychain, "history", "key", "--move-to", "keychain")
    assert moved.returncode == 0, moved.stderr
    assert "keychain (SecretService.Keyring)" in moved.stdout
    listed = run(no_passphrase, "history", "search", "lighthouse", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout), "opened with the keychain's key, no passphrase"

    new_passphrase = tmp_path / "new.txt"
    new_passphrase.write_text("a brand new passphrase\n")
    back = run(
        no_passphrase,
        "history",
        "key",
        "--move-to",
        "passphrase",
        "--new-passphrase-file",
        str(new_passphrase),
    )
    assert back.returncode == 0, back.stderr
    assert "passphrase" in back.stdout
    with_new = dict(no_passphrase, BASTION_PASSPHRASE_FILE=str(new_passphrase))
    assert json.loads(run(with_new, "history", "search", "lighthouse", "--json").stdout)
    old = run(cli_env, "history", "list")
    assert old.returncode == 1
    assert "does not unlock" in old.stderr


def test_a_damaged_history_is_repaired_keeping_what_can_be_read(
    bastion: RunBastion, home_with_starter: Path, tmp_path: Path
) -> None:
    """A bad page in the middle of the file: the conversation on it cannot be shown,
    the sentence names the repair, and the repair keeps the others and the damaged file."""
    nothing = bastion("history", "repair")  # before any chat: no history, no key either
    assert nothing.returncode == 1
    assert nothing.stderr == (
        f"bastion: There is no conversation history at {home_with_starter / 'data' / 'history.db'}"
        ": nothing to repair.\n"
    )
    export = tmp_path / "export.json"
    export.write_text(json.dumps(an_export_with_a_long_conversation()), encoding="utf-8")
    imported = bastion("history", "import", str(export))
    assert imported.returncode == 0, imported.stderr
    database = home_with_starter / "data" / "history.db"
    with database.open("r+b") as handle:  # one page in the middle, overwritten
        handle.seek(database.stat().st_size // 2)
        handle.write(os.urandom(4096))

    shown = bastion("history", "show", "long")
    assert shown.returncode == 1
    assert "is damaged" in shown.stderr
    assert "`bastion history repair`" in shown.stderr
    noted = database.with_name("history.db.needs-repair")
    assert noted.exists(), "the window's next start offers the repair"

    repaired = bastion("history", "repair")
    assert repaired.returncode == 0, repaired.stderr
    said, kept_as = repaired.stdout.strip().split(" The damaged file is kept as ")
    assert said == (
        "The history was repaired: it keeps 2 conversations. "
        "1 could not be read and was left out: “The long one”."
    )
    kept_as_path = Path(kept_as.removesuffix("."))
    assert kept_as_path.parent == database.parent
    assert kept_as_path.exists()
    assert not noted.exists()
    listed = json.loads(bastion("history", "list", "--json").stdout)
    assert sorted(c["title"] for c in listed) == ["After", "Before"]
    hits = json.loads(bastion("history", "search", "puffins", "--json").stdout)
    assert [h["conversation_id"] for h in hits] == ["after"]

    again = bastion("history", "repair")
    assert again.stdout == "The history is not damaged (2 conversations): nothing was changed.\n"


def an_export_with_a_long_conversation() -> dict[str, object]:
    """Bastion's export format: a short conversation on either side of one whose reply
    fills most of the history file."""

    def conversation(key: str, title: str, answer: str, at: float) -> dict[str, object]:
        return {
            "id": key,
            "title": title,
            "model_id": "starter",
            "profile_id": "standard",
            "system_prompt": "",
            "created_at": at,
            "updated_at": at,
            "shown_message_id": 2,
            "messages": [
                {"id": 1, "parent_id": None, "role": "user", "content": f"About {key}?",
                 "state": "complete", "created_at": at},
                {"id": 2, "parent_id": 1, "role": "assistant", "content": answer,
                 "state": "complete", "created_at": at},
            ],
        }  # fmt: skip

    return {
        "format": "bastion.conversations",
        "version": 1,
        "exported_at": 4.0,
        "conversations": [
            conversation("before", "Before", "Gannets dive.", 1.0),
            conversation("long", "The long one", "lighthouse " * 60_000, 2.0),
            conversation("after", "After", "Puffins nest.", 3.0),
        ],
    }


def test_sigterm_mid_reply_keeps_all_of_it_and_leaves_cleanly(
    bastion: RunBastion, cli_env: dict[str, str]
) -> None:
    """`kill` (a logout, a service manager) asks politely: unlike SIGKILL above, nothing
    after the last save is lost, and the model host is stopped, not orphaned."""
    # Past a save (every 32 tokens), and 13 tokens beyond it.
    process, conversation, shown = a_long_reply_under_way(cli_env, tokens=45)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr

    after = json.loads(bastion("history", "show", conversation, "--json").stdout)
    _, reply = after["messages"]
    assert reply["state"] == "interrupted"
    assert reply["content"].startswith("".join(shown)), "every token shown was kept"
