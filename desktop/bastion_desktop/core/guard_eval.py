"""Evaluating a guardrail profile on a labelled dataset (`bastion guard eval`).

A dataset is JSON Lines or CSV with the fields `text`, `label` (`harmful` or `benign`)
and an optional `category`. Every item goes through the profile's input rails (or, with
`stage=output`, its output rails, as a whole reply). A harmful item counts as caught
when it is blocked or masked; a benign item counts as passed only when it is allowed
unchanged. The report is one self-contained HTML page (inline SVG, no script, nothing
fetched) that a person can open in any browser.
"""

from __future__ import annotations

import csv
import html
import io
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion_desktop.core.errors import BastionError
from bastion_guardrails.decisions import GuardDecision, Stage, Verdict
from bastion_guardrails.runtime import GuardProfileRuntime

LABELS = ("harmful", "benign")
UNCATEGORISED = "uncategorised"


class DatasetError(BastionError):
    """The dataset cannot be read; the sentence names the file and line."""


@dataclass(frozen=True)
class EvalItem:
    text: str
    label: str
    category: str
    line: int


@dataclass(frozen=True)
class EvalResult:
    item: EvalItem
    verdict: Verdict
    rail: str | None
    latency_ms: float

    @property
    def correct(self) -> bool:
        if self.item.label == "harmful":
            return self.verdict is not Verdict.ALLOWED
        return self.verdict is Verdict.ALLOWED


@dataclass
class CategoryScore:
    harmful: int = 0
    caught: int = 0
    benign: int = 0
    passed: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "harmful": self.harmful,
            "benign": self.benign,
            "block_rate": _rate(self.caught, self.harmful),
            "pass_rate": _rate(self.passed, self.benign),
        }


@dataclass
class EvalSummary:
    profile_id: str
    profile_name: str
    stage: Stage
    dataset: str
    results: list[EvalResult] = field(default_factory=list)

    def _count(self, label: str, *, correct: bool) -> int:
        return sum(1 for r in self.results if r.item.label == label and r.correct is correct)

    @property
    def block_rate(self) -> float | None:
        caught = self._count("harmful", correct=True)
        return _rate(caught, caught + self._count("harmful", correct=False))

    @property
    def pass_rate(self) -> float | None:
        passed = self._count("benign", correct=True)
        return _rate(passed, passed + self._count("benign", correct=False))

    def by_category(self) -> dict[str, CategoryScore]:
        scores: dict[str, CategoryScore] = {}
        for result in self.results:
            score = scores.setdefault(result.item.category, CategoryScore())
            if result.item.label == "harmful":
                score.harmful += 1
                score.caught += result.correct
            else:
                score.benign += 1
                score.passed += result.correct
        return dict(sorted(scores.items()))

    def latency(self) -> dict[str, float]:
        times = sorted(r.latency_ms for r in self.results)
        if not times:
            return {"p50": 0.0, "p95": 0.0}
        return {"p50": round(_percentile(times, 50), 3), "p95": round(_percentile(times, 95), 3)}

    def as_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile_id,
            "stage": self.stage.value,
            "dataset": self.dataset,
            "items": len(self.results),
            "harmful": sum(1 for r in self.results if r.item.label == "harmful"),
            "benign": sum(1 for r in self.results if r.item.label == "benign"),
            "block_rate": self.block_rate,
            "pass_rate": self.pass_rate,
            "by_category": {name: s.as_json() for name, s in self.by_category().items()},
            "latency_ms": self.latency(),
        }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _percentile(ordered: Sequence[float], percent: float) -> float:
    if len(ordered) == 1:
        return ordered[0]
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return cuts[int(percent) - 1]


# --- reading a dataset ----------------------------------------------------------------


def _item(record: Any, source: Path, line: int) -> EvalItem:
    where = f"{source}, line {line}"
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected an object with 'text' and 'label'.")
    text, label = record.get("text"), record.get("label")
    if not isinstance(text, str) or not text.strip():
        raise DatasetError(f"{where}: 'text' is missing or empty.")
    if not isinstance(label, str) or label.strip().lower() not in LABELS:
        raise DatasetError(f"{where}: 'label' must be 'harmful' or 'benign', not {label!r}.")
    category = record.get("category") or UNCATEGORISED
    if not isinstance(category, str):
        raise DatasetError(f"{where}: 'category' must be text.")
    return EvalItem(text, label.strip().lower(), category.strip() or UNCATEGORISED, line)


def read_dataset(path: Path) -> list[EvalItem]:
    """Read a JSONL or CSV dataset (by its suffix; `.csv` is CSV, anything else JSONL)."""
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"There is no dataset at {path}.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"The dataset {path} cannot be read: {error}.") from error
    items: list[EvalItem] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(raw, newline=""))
        if reader.fieldnames is None or not {"text", "label"} <= set(reader.fieldnames):
            raise DatasetError(f"{path}, line 1: the header must name 'text' and 'label' columns.")
        for row in reader:
            items.append(_item(row, path, reader.line_num))
    else:
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(
                    f"{path}, line {number}: not valid JSON ({error.msg})."
                ) from None
            items.append(_item(record, path, number))
    if not items:
        raise DatasetError(f"The dataset {path} has no items.")
    return items


# --- running it -------------------------------------------------------------------------


async def evaluate(
    runtime: GuardProfileRuntime, items: Sequence[EvalItem], stage: Stage, dataset: str
) -> EvalSummary:
    summary = EvalSummary(runtime.profile_id, runtime.profile_name, stage, dataset)
    for item in items:
        started = time.perf_counter()
        decision: GuardDecision
        if stage is Stage.INPUT:
            decision = await runtime.check_input([], item.text)
        else:
            decision = await runtime.check_output([], item.text)
        elapsed = (time.perf_counter() - started) * 1000
        summary.results.append(EvalResult(item, decision.verdict, decision.rail, elapsed))
    return summary


# --- the report -----------------------------------------------------------------------

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 60em;
       color: #1d2430; background: #fff; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; } .sub { color: #5a6472; margin-top: 0; }
.tiles { display: flex; gap: 1em; flex-wrap: wrap; margin: 1.5em 0; }
.tile { border: 1px solid #d8dde5; border-radius: 10px; padding: .8em 1.2em; min-width: 9em; }
.tile b { display: block; font-size: 1.8em; } .tile span { color: #5a6472; }
table { border-collapse: collapse; width: 100%; margin: 1em 0 2em; }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #e6e9ee; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.miss { color: #b3261e; } svg text { font: 13px system-ui, sans-serif; fill: #1d2430; }
@media (prefers-color-scheme: dark) {
  body { color: #e4e8ee; background: #15191f; } .tile { border-color: #323946; }
  th, td { border-color: #2a303a; } svg text { fill: #e4e8ee; } .sub, .tile span { color: #9aa4b2; }
}
"""


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _chart(scores: dict[str, CategoryScore]) -> str:
    """Horizontal bars per category: share of harmful items caught (red scale) and of
    benign items passed (green), as inline SVG."""
    row, label_width, bar_width = 26, 190, 360
    rows = []
    y = 24
    for name, score in scores.items():
        for kind, value, colour in (
            ("caught", _rate(score.caught, score.harmful), "#c0392b"),
            ("passed", _rate(score.passed, score.benign), "#2e8b57"),
        ):
            if value is None:
                continue
            width = max(1.0, value * bar_width)
            rows.append(
                f'<text x="0" y="{y + 14}">{html.escape(name)} · {kind}</text>'
                f'<rect x="{label_width}" y="{y}" width="{bar_width}" height="18" '
                f'fill="#8882" rx="3"/>'
                f'<rect x="{label_width}" y="{y}" width="{width:.1f}" height="18" '
                f'fill="{colour}" rx="3"/>'
                f'<text x="{label_width + bar_width + 8}" y="{y + 14}">{_percent(value)}</text>'
            )
            y += row
    height = y + 6
    header = (
        f'<text x="{label_width}" y="14">0%</text>'
        f'<text x="{label_width + bar_width - 34}" y="14">100%</text>'
    )
    return (
        f'<svg role="img" aria-label="Block and pass rates by category" width="640" '
        f'height="{height}" viewBox="0 0 640 {height}">{header}{"".join(rows)}</svg>'
    )


def write_report(summary: EvalSummary, path: Path) -> Path:
    """Write the HTML report; the texts of items the profile got wrong are listed so a
    person can see why (the report is the user's own file, written where they asked)."""
    data = summary.as_json()
    scores = summary.by_category()
    tiles = [
        ("Harmful caught", _percent(summary.block_rate), f"{data['harmful']} harmful items"),
        ("Benign passed", _percent(summary.pass_rate), f"{data['benign']} benign items"),
        ("Latency p50", f"{data['latency_ms']['p50']:.1f} ms", "per check"),
        ("Latency p95", f"{data['latency_ms']['p95']:.1f} ms", "per check"),
    ]
    tile_html = "".join(
        f'<div class="tile"><span>{html.escape(title)}</span><b>{html.escape(value)}</b>'
        f"<span>{html.escape(note)}</span></div>"
        for title, value, note in tiles
    )
    table = "".join(
        f"<tr><td>{html.escape(name)}</td><td class=n>{s.harmful}</td>"
        f"<td class=n>{_percent(_rate(s.caught, s.harmful))}</td><td class=n>{s.benign}</td>"
        f"<td class=n>{_percent(_rate(s.passed, s.benign))}</td></tr>"
        for name, s in scores.items()
    )
    misses = [r for r in summary.results if not r.correct]
    miss_rows = "".join(
        f"<tr><td class=n>{r.item.line}</td><td>{html.escape(r.item.label)}</td>"
        f"<td>{html.escape(r.item.category)}</td><td>{html.escape(r.verdict.value)}</td>"
        f"<td>{html.escape(r.item.text[:200])}</td></tr>"
        for r in misses[:200]
    )
    stage = "messages (input rails)" if summary.stage is Stage.INPUT else "replies (output rails)"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>Guardrail evaluation: {html.escape(summary.profile_name)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(summary.profile_name)} on {html.escape(Path(summary.dataset).name)}</h1>
<p class="sub">{len(summary.results)} items checked as {stage}. A harmful item counts as
caught when it was blocked or masked; a benign item counts as passed when it was allowed
unchanged.</p>
<div class="tiles">{tile_html}</div>
<h2>By category</h2>
{_chart(scores)}
<table><tr><th>Category</th><th>Harmful</th><th>Caught</th><th>Benign</th><th>Passed</th></tr>
{table}</table>
<h2 class="{"miss" if misses else ""}">Items it got wrong ({len(misses)})</h2>
<table><tr><th>Line</th><th>Label</th><th>Category</th><th>Verdict</th><th>Text</th></tr>
{miss_rows}</table>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path
