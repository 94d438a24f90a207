"""`bastion serve` runs the local API; `bastion api token create|list|revoke` manages the
clients that may use it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys

from bastion_desktop.commands.passphrase import passphrase_prompt
from bastion_desktop.context import AppContext
from bastion_desktop.core.history.encrypted_store import EncryptedConversationStore
from bastion_desktop.core.models import ChatModelSlot, keep_unloading_idle
from bastion_desktop.core.settings import DEFAULT_API_PORT

EXIT_OK = 0


def _port(value: str) -> int:
    number = int(value)
    if not 1024 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 1024 to 65535, not {number}")
    return number


def add_api_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    history_options: argparse.ArgumentParser,
) -> None:
    serve = commands.add_parser(
        "serve",
        parents=[history_options],
        help="serve the OpenAI-compatible API on 127.0.0.1, through the guardrails",
    )
    serve.add_argument(
        "--port",
        type=_port,
        metavar="N",
        help=f"the port (default: the settings', else {DEFAULT_API_PORT})",
    )

    api = commands.add_parser("api", help="the local API's client tokens")
    actions = api.add_subparsers(dest="api_command", metavar="ACTION", required=True)
    token = actions.add_parser("token", help="create, list or revoke a client's token")
    token_actions = token.add_subparsers(dest="what", metavar="ACTION", required=True)
    create = token_actions.add_parser("create", help="a new token, shown once")
    create.add_argument("name", metavar="NAME", help="the client it is for, e.g. vscode")
    create.add_argument(
        "--keep-history",
        action="store_true",
        help="save this client's conversations in the encrypted history (default: never)",
    )
    listing = token_actions.add_parser("list", help="the clients that have a token")
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = token_actions.add_parser("revoke", help="stop a client's token working")
    revoke.add_argument("name", metavar="NAME")


def run_api(context: AppContext, args: argparse.Namespace) -> int:
    from bastion_desktop.api.tokens import ApiTokens

    tokens = ApiTokens(context.api_tokens_file)
    if args.what == "create":
        token = tokens.create(args.name, keep_history=args.keep_history)
        print(token)
        print(
            f"This is the token for {args.name.strip()!r}. It is shown only now: copy it into "
            "the client (as its API key). Bastion keeps only its hash.",
            file=sys.stderr,
        )
        return EXIT_OK
    if args.what == "revoke":
        revoked = tokens.revoke(args.name)
        print(f"Revoked the token of {revoked.name!r}: it no longer works.", file=sys.stderr)
        return EXIT_OK
    clients = tokens.list()
    if args.json:
        print(json.dumps([c.to_json() for c in clients], indent=2))
    elif not clients:
        print("No tokens yet: `bastion api token create NAME` makes one.", file=sys.stderr)
    else:
        for client in clients:
            kept = "  (keeps history)" if client.keep_history else ""
            print(f"{client.name}\tcreated {client.created}{kept}")
    return EXIT_OK


def run_serve(context: AppContext, args: argparse.Namespace) -> int:
    return asyncio.run(_serve(context, args))


async def _serve(context: AppContext, args: argparse.Namespace) -> int:
    from bastion_desktop.api.server import ApiServer
    from bastion_desktop.api.service import ApiService
    from bastion_desktop.api.tokens import ApiTokens

    context.policy.require_local_api()
    for notice in dict.fromkeys(n for n in (context.policy.banner, *context.policy_notices) if n):
        print(notice, file=sys.stderr)
    tokens = ApiTokens(context.api_tokens_file)
    clients = await asyncio.to_thread(tokens.list)
    history: EncryptedConversationStore | None = None
    if any(client.keep_history for client in clients):
        history = context.open_history(passphrase_prompt(args.passphrase_file))
    await asyncio.to_thread(context.ensure_starter)
    slot = ChatModelSlot(context.load_options())
    service = ApiService(context, slot, history)
    server = ApiServer(service, tokens, origins=context.api_origins)
    try:
        # The profile in force is opened (and its judge tested) before the first client.
        model_id = await service.model_for(None)
        guard = await service.guard_for(None, model_id)
        await server.start(args.port or context.settings.api.port)
        print(
            f"Bastion's local API is at {server.url} (model {model_id}, guardrail profile "
            f"{guard.profile_name}). Ctrl+C stops it.",
            file=sys.stderr,
        )
        if not clients:
            print(
                "No client has a token yet: `bastion api token create NAME` makes one.",
                file=sys.stderr,
            )
        sys.stderr.flush()
        unloading = asyncio.create_task(
            keep_unloading_idle(lambda: context.unload_idle_models(slot))
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, ValueError):  # Windows loops
                loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        unloading.cancel()
        print("Stopping the local API.", file=sys.stderr)
        return EXIT_OK
    finally:
        await server.close()
        await slot.close()
        await context.close_guard_models()
        if history is not None:
            history.close()
