"""`bastion guard check | eval`: a profile's decision on one text, or its scores on a
labelled dataset."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from bastion_desktop.context import AppContext
from bastion_desktop.core.guard_eval import evaluate, read_dataset, write_report
from bastion_guardrails.decisions import GuardDecision, Stage

EXIT_OK = 0


def add_guard_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    guard = commands.add_parser("guard", help="try a guardrail profile on a text or a dataset")
    actions = guard.add_subparsers(dest="guard_command", metavar="ACTION", required=True)

    check = actions.add_parser("check", help="what a profile decides about one text")
    check.add_argument("text", metavar="TEXT")
    check.add_argument("--profile", metavar="ID", help="default: the one in the settings")
    check.add_argument(
        "--output", action="store_true", help="check it as a model's reply (default: a message)"
    )
    check.add_argument("--json", action="store_true", help="print the decision as JSON")

    run = actions.add_parser("eval", help="block and pass rates on a labelled dataset")
    run.add_argument(
        "dataset", type=Path, metavar="DATASET", help="JSONL or CSV: text, label, category"
    )
    run.add_argument("--profile", metavar="ID", help="default: the one in the settings")
    run.add_argument(
        "--output", action="store_true", help="check the texts as replies (default: messages)"
    )
    run.add_argument("--report", type=Path, metavar="PATH", help="write an HTML report here")
    run.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def decision_json(decision: GuardDecision) -> dict[str, Any]:
    return {
        "verdict": decision.verdict.value,
        "stage": decision.stage.value,
        "profile": decision.profile_id,
        "rail": decision.rail,
        "category": decision.category,
        "explanation": decision.explanation,
        "masked": list(decision.masked),
        "rewritten": decision.rewritten,
        "latency_ms": round(decision.latency_ms, 3),
        "trace": [
            {"rail": t.rail, "outcome": t.outcome, "latency_ms": round(t.latency_ms, 3)}
            for t in decision.trace
        ],
    }


async def _check(context: AppContext, args: argparse.Namespace) -> int:
    runtime = await context.open_guard(args.profile)
    if args.output:
        decision = await runtime.check_output([], args.text)
    else:
        decision = await runtime.check_input([], args.text)
    if args.json:
        print(json.dumps(decision_json(decision), ensure_ascii=False, indent=2))
        return EXIT_OK
    what = f" by {decision.rail}" if decision.rail else ""
    category = f" ({decision.category})" if decision.category else ""
    print(f"{decision.verdict.value.upper()}{what}{category}: {decision.explanation}")
    if decision.rewritten is not None:
        print(f"as masked: {decision.rewritten}")
    print(f"[{runtime.profile_name} · {decision.latency_ms:.1f} ms]")
    return EXIT_OK


async def _eval(context: AppContext, args: argparse.Namespace) -> int:
    items = read_dataset(args.dataset)
    runtime = await context.open_guard(args.profile)
    stage = Stage.OUTPUT if args.output else Stage.INPUT
    summary = await evaluate(runtime, items, stage, str(args.dataset))
    report = write_report(summary, args.report) if args.report else None
    data = summary.as_json()
    if args.json:
        print(json.dumps(data | {"report": str(report) if report else None}, indent=2))
        return EXIT_OK

    def percent(value: float | None) -> str:
        return "n/a" if value is None else f"{value * 100:.1f}%"

    print(f"{runtime.profile_name} on {args.dataset} ({data['items']} items, {stage.value}):")
    print(f"  harmful caught (blocked or masked): {percent(data['block_rate'])}")
    print(f"  benign passed unchanged:            {percent(data['pass_rate'])}")
    for name, score in data["by_category"].items():
        parts = []
        if score["harmful"]:
            parts.append(f"caught {percent(score['block_rate'])} of {score['harmful']}")
        if score["benign"]:
            parts.append(f"passed {percent(score['pass_rate'])} of {score['benign']}")
        print(f"  - {name}: {', '.join(parts)}")
    latency = data["latency_ms"]
    print(f"  latency: p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms")
    if report:
        print(f"Report: {report}")
    return EXIT_OK


async def _run(context: AppContext, args: argparse.Namespace) -> int:
    try:
        if args.guard_command == "check":
            return await _check(context, args)
        return await _eval(context, args)
    finally:
        await context.close_guard_models()


def run_guard(context: AppContext, args: argparse.Namespace) -> int:
    return asyncio.run(_run(context, args))
