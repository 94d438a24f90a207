"""The `bastion` command. With no subcommand it opens the desktop window; subcommands
work headless and drive the same core."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.paths import PASSPHRASE_FILE_VARIABLE
from bastion_desktop.core.privacy import apply_private_environment

log = logging.getLogger("bastion_desktop.cli")

EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_BUG = 70
EXIT_INTERRUPTED = 130

# A path, never the passphrase itself: environment variables leak into child processes
# and crash reports.


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


def _temperature(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 5.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 5, not {number}")
    return number


def _seed(value: str) -> int:
    number = int(value)
    if not 0 <= number < 2**32:
        raise argparse.ArgumentTypeError(f"must be between 0 and {2**32 - 1}, not {number}")
    return number


def _history_options() -> argparse.ArgumentParser:
    """Options of every command that opens the encrypted history."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--passphrase-file",
        type=Path,
        metavar="PATH",
        default=os.environ.get(PASSPHRASE_FILE_VARIABLE) or None,
        help="read the history passphrase from this file (where there is no keychain); "
        f"default: ${PASSPHRASE_FILE_VARIABLE}",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    # Only here: the version is read from the installed metadata (about 40 ms), which
    # `bastion` with no arguments, the window, never needs before its first paint.
    from bastion_desktop import __version__

    parser = argparse.ArgumentParser(
        prog="bastion",
        description="Private chat with local models, with guardrails built in.",
    )
    parser.add_argument("--version", action="version", version=f"bastion {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    history_options = _history_options()

    chat = commands.add_parser(
        "chat", parents=[history_options], help="chat with a local model in the terminal"
    )
    chat.add_argument("message", nargs="?", help="send one message and exit; omit to converse")
    chat.add_argument("--model", metavar="ID_OR_PATH", help="installed model id or GGUF file")
    chat.add_argument("--system", metavar="TEXT", help="system prompt for this conversation")
    chat.add_argument(
        "--attach",
        action="append",
        type=Path,
        metavar="FILE",
        help="attach a text file to the message (again for more files); "
        "the message may then be left out",
    )
    chat.add_argument("--max-tokens", type=_positive, metavar="N", help="longest reply, in tokens")
    chat.add_argument("--temperature", type=_temperature, metavar="T", help="sampling temperature")
    chat.add_argument("--seed", type=_seed, metavar="N", help="seed, for a reproducible reply")
    chat.add_argument(
        "--profile",
        metavar="ID",
        help="guardrail profile (off, standard, strict, workplace or an imported one); "
        "default: the conversation's, else the one in the settings",
    )
    chat.add_argument("--json", action="store_true", help="print one JSON object per event")
    where = chat.add_mutually_exclusive_group()
    where.add_argument("--new", action="store_true", help="start a new conversation (default)")
    where.add_argument("--conversation", metavar="ID", help="continue a saved conversation")
    where.add_argument(
        "--ephemeral", action="store_true", help="keep this conversation in memory only"
    )

    from bastion_desktop.commands.history import add_history_parser

    add_history_parser(commands, history_options)

    from bastion_desktop.commands.models import add_models_parser

    add_models_parser(commands)

    from bastion_desktop.commands.policy import add_policy_parser

    add_policy_parser(commands)

    from bastion_desktop.commands.profiles import add_profiles_parser

    add_profiles_parser(commands)

    from bastion_desktop.commands.guard import add_guard_parser

    add_guard_parser(commands)

    from bastion_desktop.commands.api import add_api_parsers

    add_api_parsers(commands, history_options)

    doctor = commands.add_parser("doctor", help="check this installation and the starter model")
    doctor.add_argument("--json", action="store_true", help="print JSON")
    doctor.add_argument(
        "--self-test",
        action="store_true",
        help="prove this installation works end to end (model, encrypted history, "
        "guardrails, policy) in a temporary home; exits 1 on the first failure",
    )
    return parser


# Each subcommand's module and the function that runs it, imported only when used.
_COMMANDS = {
    "chat": ("bastion_desktop.commands.chat", "run_chat"),
    "history": ("bastion_desktop.commands.history", "run_history"),
    "models": ("bastion_desktop.commands.models", "run_models"),
    "policy": ("bastion_desktop.commands.policy", "run_policy"),
    "profiles": ("bastion_desktop.commands.profiles", "run_profiles"),
    "guard": ("bastion_desktop.commands.guard", "run_guard"),
    "doctor": ("bastion_desktop.commands.doctor", "run_doctor"),
    "serve": ("bastion_desktop.commands.api", "run_serve"),
    "api": ("bastion_desktop.commands.api", "run_api"),
}


def _dispatch(args: argparse.Namespace) -> int:
    from bastion_desktop.context import AppContext

    context = AppContext.start()
    module, function = _COMMANDS[args.command or "chat"]
    run: Callable[[AppContext, argparse.Namespace], int] = getattr(
        importlib.import_module(module), function
    )
    return run(context, args)


def main(argv: Sequence[str] | None = None) -> int:
    apply_private_environment()
    given = sys.argv[1:] if argv is None else list(argv)
    # The bare command opens the desktop window (`bastion chat` is the terminal). It
    # takes no options, so the parser, which imports every command's module, is not
    # built: the window paints sooner.
    args = build_parser().parse_args(given) if given else None
    try:
        if args is None or args.command is None:
            from bastion_desktop.ui.startup import run_app

            return run_app(args)
        return _dispatch(args)
    except BastionError as error:
        log.info("user error: %s", type(error).__name__)
        print(f"bastion: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_USER_ERROR
    except Exception as error:
        log.exception("unexpected error")
        print(
            f"bastion: internal error ({type(error).__name__}): this is a bug in Bastion. "
            "The log file has the details.",
            file=sys.stderr,
        )
        return EXIT_BUG
