"""Bastion's model downloads against a plain HTTP GET, from a local Hub emulator.

    .venv/bin/python benchmarks/bench_downloads.py [--rounds N] [--resumes N] [--home DIR]

(a) throughput: the starter GGUF (about 250 MB) downloaded by `DownloadManager.download`
    (listing, ranged GET, sha256 as the bytes arrive, verification, metadata, atomic move,
    registration) over the same file fetched by a plain `urllib` GET written to disk
    (no checksum), from the same server in the same run, alternating which goes first.
    Over loopback this measures CPU, not a network: the sha256 Bastion must compute
    costs about as much CPU as the whole plain transfer, so the run also reports the
    checksum's own speed, the machine's load, and (a2) the same comparison with the
    server paced like a fast real link (`--paced-mb-s`, default 200 MB/s = 1.6 Gbit/s).
(b) resume: the server cuts the transfer at 50%; a first download manager gives up
    (no retries), a second one (an app restart) resumes from the partial file. Bytes the
    server sent for the resumed part over the size that was still missing.

The emulator (tests/core/hub/hub_emulator.py) runs in its own process, so the server
never competes with the client for the interpreter. Results are printed and written to
benchmarks/results/downloads.json. Missing a target is reported, not failed: the exit
status is non-zero only when something did not run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bastion_desktop.core.hub.download_events import DownloadEvent, DownloadStarted
from bastion_desktop.core.hub.downloads import DownloadManager
from bastion_desktop.core.hub.errors import DownloadFailedError
from bastion_desktop.core.hub.transfer import TransferSettings
from bastion_desktop.core.installed_models import ModelRegistry
from bastion_desktop.core.privacy import apply_private_environment
from bastion_desktop.core.starter import ensure_starter_model

ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = ROOT / "benchmarks" / "results" / "downloads.json"
REPO = "unsloth/gemma-3-270m-GGUF"

TARGET_THROUGHPUT_RATIO = 0.9  # bastion bytes/s over plain GET bytes/s, at least
TARGET_RESUME_RATIO = 1.01  # bytes sent for the resumed part over bytes missing, at most


class BenchmarkError(Exception):
    """Something the benchmark needs did not work."""


class Emulator:
    """The Hub emulator in a child process, driven over its stdin."""

    def __init__(self, file: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.core.hub.hub_emulator", REPO, str(file)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.url = self._answer()

    def _answer(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line:
            raise BenchmarkError("the Hub emulator did not start")
        return line

    def command(self, text: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(10)


def plain_get(url: str, target: Path) -> float:
    """What any HTTP client does: GET (following the redirect), write to disk."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response, target.open("wb") as out:  # noqa: S310  (a loopback URL built here)
        shutil.copyfileobj(response, out, 1024 * 1024)
    return time.perf_counter() - started


async def bastion_download(folder: Path, name: str, settings: TransferSettings) -> float:
    registry = ModelRegistry(folder / "models.json")
    manager = DownloadManager(registry, folder / "models", settings=settings)
    started = time.perf_counter()
    await manager.download(REPO, name)
    return time.perf_counter() - started


async def throughput(
    emulator: Emulator, starter: Path, size: int, work: Path, *, rounds: int, pace: float
) -> dict[str, Any]:
    url = f"{emulator.url}/{REPO}/resolve/main/{starter.name}"
    settings = TransferSettings()
    emulator.command(f"pace {pace}")
    runs = []
    # One untimed run of each, to warm the page cache, imports and connections.
    await asyncio.to_thread(plain_get, url, work / "warm.gguf")
    await bastion_download(work / "warm", starter.name, settings)
    shutil.rmtree(work / "warm")
    (work / "warm.gguf").unlink()
    for index in range(rounds):
        timings: dict[str, float] = {}
        order = ("plain", "bastion") if index % 2 == 0 else ("bastion", "plain")
        for variant in order:
            folder = work / f"round-{index}-{variant}"
            folder.mkdir()
            if variant == "plain":
                timings[variant] = await asyncio.to_thread(plain_get, url, folder / starter.name)
            else:
                timings[variant] = await bastion_download(folder, starter.name, settings)
            shutil.rmtree(folder)
        plain_rate, bastion_rate = size / timings["plain"], size / timings["bastion"]
        runs.append({
            "order": list(order),
            "plain_seconds": timings["plain"],
            "bastion_seconds": timings["bastion"],
            "plain_mb_per_s": plain_rate / 1e6,
            "bastion_mb_per_s": bastion_rate / 1e6,
            "ratio": bastion_rate / plain_rate,
        })  # fmt: skip
        print(
            f"  round {index + 1}/{rounds}: plain {plain_rate / 1e6:7.1f} MB/s, "
            f"bastion {bastion_rate / 1e6:7.1f} MB/s, ratio {bastion_rate / plain_rate:.3f}"
        )
    emulator.command("pace 0")
    return {
        "server_paced_mb_per_s": pace / 1e6 if pace else None,
        "runs": runs,
        "median_plain_mb_per_s": statistics.median(r["plain_mb_per_s"] for r in runs),
        "median_bastion_mb_per_s": statistics.median(r["bastion_mb_per_s"] for r in runs),
        "median_ratio": statistics.median(r["ratio"] for r in runs),
    }


def checksum_speed(starter: Path, size: int) -> float:
    """sha256 of the file from the page cache, in bytes per second (the work Bastion
    does that a plain GET does not)."""
    best = 0.0
    for _ in range(3):
        digest = hashlib.sha256()
        started = time.perf_counter()
        with starter.open("rb") as handle:
            while block := handle.read(1024 * 1024):
                digest.update(block)
        best = max(best, size / (time.perf_counter() - started))
    return best


async def resume(
    emulator: Emulator, starter: Path, size: int, work: Path, runs: int
) -> dict[str, Any]:
    results = []
    for index in range(runs):
        folder = work / f"resume-{index}"
        registry = ModelRegistry(folder / "models.json")
        emulator.command(f"drop {size // 2}")
        first_run = DownloadManager(registry, folder / "models",
                                    settings=TransferSettings(max_retries=0))  # fmt: skip
        try:
            await first_run.download(REPO, starter.name)
        except DownloadFailedError:
            pass
        else:
            raise BenchmarkError("the interrupted download did not stop at the cut")
        [unfinished] = first_run.unfinished()
        missing = size - unfinished.done_bytes
        sent_before = int(emulator.command("served"))
        events: list[DownloadEvent] = []
        second_run = DownloadManager(registry, folder / "models", listener=events.append)
        model = await second_run.start(unfinished.plan).wait()
        sent = int(emulator.command("served")) - sent_before
        resumed_from = next(e.done_bytes for e in events if isinstance(e, DownloadStarted))
        if model.size != size or resumed_from != unfinished.done_bytes:
            raise BenchmarkError("the resumed download did not continue from its partial file")
        shutil.rmtree(folder)
        results.append({
            "held_before_resume": unfinished.done_bytes,
            "missing_bytes": missing,
            "sent_for_resume": sent,
            "ratio": sent / missing,
        })  # fmt: skip
        print(
            f"  resume {index + 1}/{runs}: held {unfinished.done_bytes:,} of {size:,} bytes, "
            f"sent {sent:,} for the {missing:,} missing: ratio {sent / missing:.4f}"
        )
    return {"runs": results, "max_ratio": max(r["ratio"] for r in results)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="bastion-bench-"))
    starter = ensure_starter_model(home / "models", ModelRegistry(home / "registry.json")).path
    emulator = Emulator(starter)
    os.environ["HF_ENDPOINT"] = emulator.url
    work = Path(tempfile.mkdtemp(prefix="bench-downloads-", dir=home))
    size = starter.stat().st_size
    load_before = os.getloadavg()
    try:
        print(f"(a) throughput, unpaced loopback: {starter.name}, {size:,} bytes, {emulator.url}")
        speed = await throughput(emulator, starter, size, work, rounds=args.rounds, pace=0)
        sha_rate = await asyncio.to_thread(checksum_speed, starter, size)
        pace = args.paced_mb_s * 1e6
        print(f"(a2) throughput, server paced at {args.paced_mb_s:g} MB/s")
        paced = await throughput(emulator, starter, size, work, rounds=args.paced_rounds, pace=pace)
        print("(b) resume after an interruption at 50% (a new manager: an app restart)")
        resumed = await resume(emulator, starter, size, work, args.resumes)
    finally:
        emulator.close()
        shutil.rmtree(work, ignore_errors=True)
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)
    plain_seconds = size / (speed["median_plain_mb_per_s"] * 1e6)
    sha_seconds = size / sha_rate
    speed["checksum"] = {
        "sha256_mb_per_s": sha_rate / 1e6,
        # What the ratio is when the checksum cannot overlap the transfer (no free core).
        "ratio_if_checksum_runs_after_transfer": plain_seconds / (plain_seconds + sha_seconds),
        # ... and when it overlaps perfectly: the slower of the two sets the pace.
        "ratio_if_checksum_overlaps": plain_seconds / max(plain_seconds, sha_seconds),
    }
    load = {"before": load_before, "after": os.getloadavg()}
    return {"throughput": speed, "paced_throughput": paced, "resume": resumed, "load": load}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="throughput rounds (default 5)")
    parser.add_argument("--resumes", type=int, default=3, help="resume runs (default 3)")
    parser.add_argument("--paced-mb-s", type=float, default=200.0, help="(a2) pace, MB/s")
    parser.add_argument("--paced-rounds", type=int, default=3, help="(a2) rounds (default 3)")
    parser.add_argument("--home", help="keep the starter model here between runs")
    args = parser.parse_args()
    apply_private_environment()
    try:
        result = asyncio.run(run(args))
    except (BenchmarkError, OSError) as error:
        print(f"benchmark could not run: {error}", file=sys.stderr)
        return 1
    ratio = result["throughput"]["median_ratio"]
    resume_ratio = result["resume"]["max_ratio"]
    met_speed = ratio >= TARGET_THROUGHPUT_RATIO
    met_resume = resume_ratio <= TARGET_RESUME_RATIO
    print()
    print(
        f"(a) throughput, bastion / plain GET (median of {args.rounds}): {ratio:.3f}"
        f"   target >= {TARGET_THROUGHPUT_RATIO}: {'met' if met_speed else 'MISSED'}"
        f"   ({result['throughput']['median_bastion_mb_per_s']:.1f} vs "
        f"{result['throughput']['median_plain_mb_per_s']:.1f} MB/s)"
    )
    checksum = result["throughput"]["checksum"]
    print(
        f"    sha256 here: {checksum['sha256_mb_per_s']:.0f} MB/s; the ratio would be "
        f"{checksum['ratio_if_checksum_runs_after_transfer']:.3f} with no core free for it "
        f"and {checksum['ratio_if_checksum_overlaps']:.3f} with one; load average "
        f"{result['load']['before'][0]:.1f} -> {result['load']['after'][0]:.1f} on "
        f"{os.cpu_count()} CPUs"
    )
    paced_ratio = result["paced_throughput"]["median_ratio"]
    print(
        f"(a2) throughput at {args.paced_mb_s:g} MB/s, bastion / plain GET (median of "
        f"{args.paced_rounds}): {paced_ratio:.3f}   target >= {TARGET_THROUGHPUT_RATIO}: "
        f"{'met' if paced_ratio >= TARGET_THROUGHPUT_RATIO else 'MISSED'}"
    )
    print(
        f"(b) resume, bytes sent / bytes missing (worst of {args.resumes}): {resume_ratio:.4f}"
        f"   target <= {TARGET_RESUME_RATIO}: {'met' if met_resume else 'MISSED'}"
    )
    result["targets"] = {
        "throughput_ratio_at_least": TARGET_THROUGHPUT_RATIO,
        "resume_ratio_at_most": TARGET_RESUME_RATIO,
        "throughput_met": met_speed,
        "resume_met": met_resume,
    }
    result["environment"] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"results: {RESULTS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
