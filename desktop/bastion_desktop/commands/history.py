"""`bastion history ...`: the encrypted conversation history from the terminal."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from bastion_desktop.commands.passphrase import new_passphrase_prompt, passphrase_prompt
from bastion_desktop.context import AppContext
from bastion_desktop.core.conversation_store import Conversation, MessageState, StoredMessage
from bastion_desktop.core.history.encrypted_store import EncryptedConversationStore
from bastion_desktop.core.history.keys import KeySource
from bastion_desktop.core.inference.types import GenerationStats

T = TypeVar("T")

_ROLE_LABELS = {"user": "You", "assistant": "Assistant", "system": "System"}


def add_history_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    history = commands.add_parser("history", help="your saved conversations (encrypted on disk)")
    actions = history.add_subparsers(dest="history_command", metavar="ACTION", required=True)

    listing = actions.add_parser("list", parents=[common], help="conversations, newest first")
    listing.add_argument("--archived", action="store_true", help="list archived ones instead")
    listing.add_argument("--limit", type=int, default=50, metavar="N")
    listing.add_argument("--offset", type=int, default=0, metavar="N")
    listing.add_argument("--json", action="store_true", help="print JSON")

    show = actions.add_parser("show", parents=[common], help="one conversation's messages")
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print JSON")

    search = actions.add_parser("search", parents=[common], help="full-text search")
    search.add_argument("query", metavar="QUERY")
    search.add_argument("--limit", type=int, default=20, metavar="N")
    search.add_argument("--json", action="store_true", help="print JSON")

    export = actions.add_parser("export", parents=[common], help="write conversations to a file")
    export.add_argument("id", nargs="?", metavar="ID", help="one conversation (default: all)")
    export.add_argument("--format", choices=("json", "md"), default="json")
    export.add_argument("--output", type=Path, required=True, metavar="PATH")

    importing = actions.add_parser("import", parents=[common], help="add a Bastion JSON export")
    importing.add_argument("path", type=Path, metavar="PATH")

    delete = actions.add_parser("delete", parents=[common], help="delete a conversation")
    delete.add_argument("id", metavar="ID")

    rename = actions.add_parser("rename", parents=[common], help="rename a conversation")
    rename.add_argument("id", metavar="ID")
    rename.add_argument("title", metavar="TITLE")

    for name, verb in (("pin", "pin"), ("archive", "archive")):
        toggle = actions.add_parser(name, parents=[common], help=f"{verb} a conversation")
        toggle.add_argument("id", metavar="ID")
        toggle.add_argument("--off", action="store_true", help=f"un{verb} it")

    actions.add_parser(
        "repair",
        parents=[common],
        help="rebuild a damaged history from what can still be read, keeping the damaged file",
    )

    key = actions.add_parser(
        "key", parents=[common], help="where the history key lives, and changing it"
    )
    move = key.add_mutually_exclusive_group()
    move.add_argument(
        "--move-to",
        choices=[source.value for source in KeySource],
        help="re-encrypt the history with a new key kept in the keychain or from a passphrase",
    )
    move.add_argument(
        "--change-passphrase", action="store_true", help="re-encrypt with a new passphrase"
    )
    key.add_argument(
        "--new-passphrase-file", type=Path, metavar="PATH", help="read the new passphrase here"
    )


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def _conversation_json(conversation: Conversation) -> dict[str, Any]:
    data = dataclasses.asdict(conversation)
    data["created"] = _when(conversation.created_at)
    data["updated"] = _when(conversation.updated_at)
    return data


# How a reply was made (compare=False in GenerationStats): shown while it streams, never
# stored, so a stored message has none to show.
_NOT_STORED = frozenset(f.name for f in dataclasses.fields(GenerationStats) if not f.compare)


def _message_json(message: StoredMessage) -> dict[str, Any]:
    data = dataclasses.asdict(message)
    if data["stats"] is not None:
        data["stats"] = {k: v for k, v in data["stats"].items() if k not in _NOT_STORED}
    data["created"] = _when(message.created_at)
    return data


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


async def _list(store: EncryptedConversationStore, args: argparse.Namespace) -> int:
    found = await store.list_conversations(
        limit=args.limit, offset=args.offset, archived=args.archived
    )
    if args.json:
        _print_json([_conversation_json(c) for c in found])
        return 0
    if not found:
        print("No conversations yet." if not args.archived else "No archived conversations.")
        return 0
    for conversation in found:
        pin = "*" if conversation.pinned else " "
        updated = datetime.fromtimestamp(conversation.updated_at).strftime("%Y-%m-%d %H:%M")
        print(f"{pin} {conversation.id}  {updated}  {conversation.title or 'New conversation'}")
    return 0


async def _show(store: EncryptedConversationStore, args: argparse.Namespace) -> int:
    conversation = await store.get_conversation(args.id)
    messages = await store.messages(args.id)
    if args.json:
        _print_json(
            {
                "conversation": _conversation_json(conversation),
                "messages": [_message_json(m) for m in messages],
            }
        )
        return 0
    title = conversation.title or "New conversation"
    print(f"{title}  ({conversation.id}, model {conversation.model_id})")
    for message in messages:
        label = _ROLE_LABELS.get(message.role.value, message.role.value)
        state = "" if message.state is MessageState.COMPLETE else f" [{message.state.value}]"
        alternatives = (
            f" ({message.alternative_number}/{message.alternative_count})"
            if message.alternative_count > 1
            else ""
        )
        print(f"\n{label}{state}{alternatives}:\n{message.content}")
    return 0


async def _search(store: EncryptedConversationStore, args: argparse.Namespace) -> int:
    hits = await store.search(args.query, limit=args.limit)
    if args.json:
        _print_json([dataclasses.asdict(hit) for hit in hits])
        return 0
    if not hits:
        print("No message matches.")
        return 0
    for hit in hits:
        print(f"{hit.conversation_id}  {hit.conversation_title}\n    {hit.snippet}")
    return 0


async def _export(store: EncryptedConversationStore, args: argparse.Namespace) -> int:
    ids = [args.id] if args.id else None
    write = store.export_json if args.format == "json" else store.export_markdown
    count = await write(args.output, ids)
    print(f"Exported {count} conversation{'s' if count != 1 else ''} to {args.output}.")
    return 0


async def _import(store: EncryptedConversationStore, args: argparse.Namespace) -> int:
    result = await store.import_json(args.path)
    print(f"Imported {result.imported}; {result.skipped} were already here.")
    return 0


async def _delete(store: EncryptedConversationStore, args: argparse.Namespace) -> int:
    await store.delete_conversation(args.id)
    print(f"Deleted conversation {args.id}.")
    return 0


async def _rename(store: EncryptedConversationStore, args: argparse.Namespace) -> int:
    await store.rename_conversation(args.id, args.title)
    return 0


async def _pin(store: EncryptedConversationStore, args: argparse.Namespace) -> int:
    await store.set_pinned(args.id, not args.off)
    return 0


async def _archive(store: EncryptedConversationStore, args: argparse.Namespace) -> int:
    await store.set_archived(args.id, not args.off)
    return 0


_ACTIONS: dict[str, Callable[[EncryptedConversationStore, argparse.Namespace], Awaitable[int]]] = {
    "list": _list,
    "show": _show,
    "search": _search,
    "export": _export,
    "import": _import,
    "delete": _delete,
    "rename": _rename,
    "pin": _pin,
    "archive": _archive,
}


def _key(context: AppContext, args: argparse.Namespace) -> int:
    prompt = passphrase_prompt(args.passphrase_file)
    keys = context.history_keys(prompt)
    target = (
        KeySource.PASSPHRASE
        if args.change_passphrase
        else KeySource(args.move_to)
        if args.move_to
        else None
    )
    if target is None:
        print(f"History file: {context.history_file}")
        print(f"Key: {keys.describe()}")
        return 0
    store = context.open_history(prompt)
    try:
        # The new passphrase comes from its own file or a fresh, confirmed prompt.
        keys.prompt = new_passphrase_prompt(args.new_passphrase_file) or prompt
        asyncio.run(context.rekey_history(store, keys, target))
    finally:
        store.close()
    print(f"The history was re-encrypted. Key: {keys.describe()}")
    return 0


def _repair(context: AppContext, args: argparse.Namespace) -> int:
    print(context.repair_history(passphrase_prompt(args.passphrase_file)).summary())
    return 0


def run_history(context: AppContext, args: argparse.Namespace) -> int:
    if args.history_command == "key":
        return _key(context, args)
    if args.history_command == "repair":
        return _repair(context, args)
    if args.history_command == "export":
        context.policy.require_export()
    store = context.open_history(passphrase_prompt(args.passphrase_file))
    try:
        return asyncio.run(_run(context, store, args))
    finally:
        store.close()


async def _run(
    context: AppContext, store: EncryptedConversationStore, args: argparse.Namespace
) -> int:
    await context.sweep_history(store)
    sys.stdout.flush()
    return await _ACTIONS[args.history_command](store, args)
