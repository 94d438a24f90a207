"""`bastion models ...`: the catalog, the Hub, hardware fit, downloads, local files."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from typing import Any

from bastion_desktop.context import AppContext
from bastion_desktop.core.hub.filenames import format_size


def add_models_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = commands.add_parser("models", help="find, download and manage local models")
    actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    catalog = actions.add_parser("catalog", help="curated models known to work, with their fit")
    catalog.add_argument("--role", choices=("chat", "safety"), help="only this role")
    catalog.add_argument("--json", action="store_true", help="print JSON")

    search = actions.add_parser("search", help="search GGUF repositories on the Hub")
    search.add_argument("query", metavar="QUERY")
    search.add_argument("--limit", type=int, default=20, metavar="N")
    search.add_argument("--json", action="store_true", help="print JSON")

    files = actions.add_parser("files", help="a Hub repository's GGUF files and their fit")
    files.add_argument("repo", metavar="REPO")
    files.add_argument("--json", action="store_true", help="print JSON")

    fit = actions.add_parser("fit", help="will this file fit this machine?")
    fit.add_argument("repo", metavar="REPO")
    fit.add_argument("file", metavar="FILE")
    fit.add_argument("--context", type=int, metavar="TOKENS", help="context length to plan for")
    fit.add_argument("--json", action="store_true", help="print JSON")

    download = actions.add_parser("download", help="download, verify and install a GGUF")
    download.add_argument("repo", metavar="REPO")
    download.add_argument("file", metavar="FILE")
    download.add_argument("--role", choices=("chat", "safety"), default="chat")

    importing = actions.add_parser("import", help="add a GGUF file from this computer")
    importing.add_argument("path", metavar="PATH")
    importing.add_argument("--role", choices=("chat", "safety"), default="chat")
    importing.add_argument(
        "--copy",
        action="store_true",
        help="copy it into the models folder (default: use it in place)",
    )
    importing.add_argument("--name", help="the name to show")

    listing = actions.add_parser("list", help="installed models")
    listing.add_argument("--json", action="store_true", help="print JSON")

    remove = actions.add_parser(
        "remove", help="forget a model (and delete its file if Bastion owns it)"
    )
    remove.add_argument("id", metavar="ID")


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def _fit_line(estimate: Any) -> str:
    return f"{estimate.kind.value:<12} {estimate.summary}"


def _list(context: AppContext, args: argparse.Namespace) -> int:
    context.ensure_starter()
    models = context.registry.list()
    if args.json:
        _print_json([m.model_dump(mode="json") for m in models])
        return 0
    width = max(len(m.id) for m in models)
    for model in models:
        present = "" if all(p.is_file() for p in model.files) else "  (file missing)"
        print(
            f"{model.id:<{width}}  {format_size(model.size):>9}  {model.role:<6}  "
            f"{model.name}{present}"
        )
    return 0


def _catalog(context: AppContext, args: argparse.Namespace) -> int:
    from bastion_desktop.core.hub.catalog import load_catalog
    from bastion_desktop.core.hub.fit import estimate_fit, shape_from_facts, shape_from_size
    from bastion_desktop.core.hub.probe import probe_hardware

    catalog = load_catalog()
    hardware = probe_hardware()
    context_length = context.settings.inference.context_length
    rows = []
    for model in catalog.models:
        if args.role and model.role != args.role:
            continue
        file = model.file_for()
        shape = (
            shape_from_facts(file.size, model.shape)
            if model.shape
            else shape_from_size(file.size, file.quantization)
        )
        rows.append((model, file, estimate_fit(shape, context_length, hardware)))
    if args.json:
        _print_json(
            [
                {
                    **model.model_dump(mode="json"),
                    "recommended_file": file.model_dump(mode="json"),
                    "fit": dataclasses.asdict(estimate),
                }
                for model, file, estimate in rows
            ]
        )
        return 0
    width = max(len(model.id) for model, _, _ in rows)
    for model, file, estimate in rows:
        print(
            f"{model.id:<{width}}  {model.role:<6} {model.parameters_b:>5.1f}B  "
            f"{file.quantization:<7} {format_size(file.size):>9}  {estimate.kind.value:<12} "
            f"{model.license}"
        )
    print(
        f"\nFit for a {context_length:,}-token context on this machine; `bastion models fit` "
        "explains one.",
        file=sys.stderr,
    )
    return 0


def _search(context: AppContext, args: argparse.Namespace) -> int:
    from bastion_desktop.core.hub.search import search_gguf_repos

    repos = search_gguf_repos(args.query, limit=args.limit)
    if args.json:
        _print_json([dataclasses.asdict(repo) for repo in repos])
        return 0
    if not repos:
        print("No GGUF repository matches.")
    for repo in repos:
        gated = "  (gated)" if repo.gated else ""
        print(f"{repo.id}  {repo.downloads:>9,} downloads  {repo.license or '-'}{gated}")
    return 0


def _files(context: AppContext, args: argparse.Namespace) -> int:
    from bastion_desktop.core.hub.fit import estimate_fit, shape_for_download
    from bastion_desktop.core.hub.probe import probe_hardware
    from bastion_desktop.core.hub.search import display_name, list_repo_gguf_files

    listing = list_repo_gguf_files(args.repo)
    hardware = probe_hardware()
    context_length = context.settings.inference.context_length
    fits = [
        estimate_fit(
            shape_for_download(listing.repo, choice.size, choice.quantization),
            context_length,
            hardware,
        )
        for choice in listing.choices
    ]
    if args.json:
        _print_json(
            {
                **dataclasses.asdict(listing),
                "fit": [dataclasses.asdict(f) for f in fits],
            }
        )
        return 0
    print(
        f"{listing.repo} at {listing.revision[:12]}, license: {listing.license or 'not stated'}"
        + ("  (gated: accept its terms on the Hub first)" if listing.gated else "")
    )
    for choice, estimate in zip(listing.choices, fits, strict=True):
        parts = f" ({len(choice.parts)} parts)" if choice.is_split else ""
        print(
            f"  {display_name(choice):<48} {choice.quantization or '?':<8} "
            f"{format_size(choice.size):>9}{parts}  {estimate.kind.value}"
        )
    return 0


def _fit(context: AppContext, args: argparse.Namespace) -> int:
    from bastion_desktop.core.hub.fit import estimate_fit, shape_for_download
    from bastion_desktop.core.hub.probe import probe_hardware
    from bastion_desktop.core.hub.search import list_repo_gguf_files

    choice = list_repo_gguf_files(args.repo).choice_for(args.file)
    context_length = args.context or context.settings.inference.context_length
    estimate = estimate_fit(
        shape_for_download(args.repo, choice.size, choice.quantization),
        context_length,
        probe_hardware(),
    )
    if args.json:
        _print_json(dataclasses.asdict(estimate))
        return 0
    print(estimate.summary)
    return 0


class _ProgressLine:
    """A progress bar on a terminal, a line every few seconds elsewhere."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last_line = 0.0

    def __call__(self, event: Any) -> None:
        from bastion_desktop.core.hub.download_events import (
            DownloadFailed,
            DownloadProgress,
            describe_event,
        )

        if isinstance(event, DownloadFailed):
            if self.tty:
                print(file=sys.stderr)  # off the progress bar's line
            return  # the command's error says it, once
        line = describe_event(event)
        if isinstance(event, DownloadProgress):
            if self.tty:
                print(f"\r{line:<78}", end="", file=sys.stderr, flush=True)
                return
            if time.monotonic() - self.last_line < 5:
                return
            self.last_line = time.monotonic()
        elif self.tty:
            print(file=sys.stderr)
        print(line, file=sys.stderr, flush=True)


async def _download_async(context: AppContext, args: argparse.Namespace) -> int:
    from bastion_desktop.core.hub.download_plan import describe_plan
    from bastion_desktop.core.hub.downloads import DownloadManager

    manager = DownloadManager(context.registry, context.models_dir, listener=_ProgressLine())
    try:
        plan = await manager.plan(args.repo, args.file, role=args.role)
        context.policy.require_download(plan.repo, [f.sha256 for f in plan.files])
        print(describe_plan(plan), file=sys.stderr)
        model = await manager.start(plan).wait()
    finally:
        # Ctrl+C or an error: the partial file stays, and the same command resumes it.
        await manager.close()
    print(model.id)
    return 0


def _download(context: AppContext, args: argparse.Namespace) -> int:
    return asyncio.run(_download_async(context, args))


def _import(context: AppContext, args: argparse.Namespace) -> int:
    from pathlib import Path

    from bastion_desktop.core.hub.local_files import import_gguf

    model = import_gguf(
        Path(args.path),
        context.registry,
        context.models_dir,
        mode="copy" if args.copy else "reference",
        role=args.role,
        name=args.name,
        policy=context.policy,
    )
    print(f"Imported {model.name} as {model.id} ({model.role}).", file=sys.stderr)
    print(model.id)
    return 0


def _remove(context: AppContext, args: argparse.Namespace) -> int:
    from bastion_desktop.core.hub.local_files import remove_model

    removed = remove_model(context.registry, args.id, context.models_dir)
    files = ", ".join(str(p) for p in removed.deleted_files)
    print(f"Removed {args.id}." + (f" Deleted {files}." if files else " Its file was kept."))
    return 0


_ACTIONS = {
    "list": _list,
    "catalog": _catalog,
    "search": _search,
    "files": _files,
    "fit": _fit,
    "download": _download,
    "import": _import,
    "remove": _remove,
}


def run_models(context: AppContext, args: argparse.Namespace) -> int:
    if args.models_command in ("search", "files", "download"):
        context.policy.require_network()
    if args.models_command == "download":
        context.policy.require_downloads()  # AllowedModels once the files' hashes are known
    return _ACTIONS[args.models_command](context, args)
