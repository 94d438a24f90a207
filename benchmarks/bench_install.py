"""The installed (frozen) Bastion against the checkout's: start-up and sizes.

    ./dev package                                  # builds dist/ first
    .venv/bin/python benchmarks/bench_install.py   # about two minutes
    .venv/bin/python benchmarks/bench_install.py --installed /opt/bastion/bastion --rounds 9

(a) Cold start to the end of the window's first paint: the frozen app (`--installed`,
    default dist/bastion/bastion) against `./dev run`'s `.venv/bin/bastion`, alternating
    round by round so both see the same noise. Each process reports the moment its first
    paint pass ends on the system-wide monotonic clock (BASTION_TRACE_STARTUP) and is
    then ended. Ratio: median frozen ÷ median checkout; target at most 1.0.
(b) Sizes of every artifact in dist/ and of the frozen folder; target: the .deb, with
    the starter model inside, at most 400 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from bench_common import median, met, positive

ROOT = Path(__file__).resolve().parent.parent
TARGET_START_RATIO = 1.0
TARGET_DEB_MB = 400


def first_paint_seconds(command: Path, home: Path) -> float:
    env = {
        **os.environ,
        "BASTION_HOME": str(home),
        "QT_QPA_PLATFORM": "offscreen",
        "BASTION_TRACE_STARTUP": "1",
    }
    began = time.monotonic()
    process = subprocess.Popen(
        [str(command)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if line.startswith('{"first_paint_monotonic"'):
                return float(json.loads(line)["first_paint_monotonic"]) - began
        raise RuntimeError(f"{command} ended (exit {process.wait()}) without painting")
    finally:
        process.kill()
        process.wait()


def measure_starts(frozen: Path, checkout: Path, rounds: int) -> dict[str, list[float]]:
    starts: dict[str, list[float]] = {"frozen": [], "checkout": []}
    with tempfile.TemporaryDirectory(prefix="bench-install-") as scratch:
        home = Path(scratch)
        first_paint_seconds(frozen, home)  # the disk cache, for both
        first_paint_seconds(checkout, home)
        order = [("frozen", frozen), ("checkout", checkout)]
        for index in range(rounds):
            for name, command in order if index % 2 == 0 else reversed(order):
                starts[name].append(first_paint_seconds(command, home))
            print(
                f"  round {index + 1}/{rounds}: installed {starts['frozen'][-1] * 1000:5.0f} ms"
                f" | checkout {starts['checkout'][-1] * 1000:5.0f} ms",
                flush=True,
            )
    return starts


def folder_bytes(folder: Path) -> int:
    return sum(f.lstat().st_size for f in folder.rglob("*") if f.is_file())


def sizes(dist: Path, frozen: Path) -> dict[str, int]:
    found = {
        path.name: path.stat().st_size
        for path in sorted(dist.iterdir())
        if path.is_file() and path.name != "SHA256SUMS"
    }
    app = frozen.parent
    found[f"{app.name}/ (frozen folder)"] = folder_bytes(app)
    starter = list(app.rglob("resources/starter/*.gguf"))
    if starter:
        found["of which the starter model"] = starter[0].stat().st_size
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--installed", type=Path, default=ROOT / "dist" / "bastion" / "bastion")
    parser.add_argument("--checkout", type=Path, default=ROOT / ".venv" / "bin" / "bastion")
    parser.add_argument("--rounds", type=positive, default=15)
    args = parser.parse_args(argv)
    for command in (args.installed, args.checkout):
        if not command.is_file():
            print(f"{command} is missing (run ./dev package first)", file=sys.stderr)
            return 1
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

    print(f"(a) cold start to the first painted window, {args.rounds} rounds:")
    starts = measure_starts(args.installed, args.checkout, args.rounds)
    frozen, checkout = median(starts["frozen"]), median(starts["checkout"])
    ratio = frozen / checkout
    print(
        f"  installed {frozen * 1000:.0f} ms, checkout {checkout * 1000:.0f} ms (medians): "
        f"ratio {ratio:.2f} (target <= {TARGET_START_RATIO:.1f}: "
        f"{met(ratio <= TARGET_START_RATIO)})"
    )

    print("(b) sizes:")
    measured = sizes(ROOT / "dist", args.installed)
    for name, size in measured.items():
        print(f"  {name:<44} {size / 1e6:8.1f} MB")
    deb = measured.get(f"bastion_{version}_amd64.deb")
    if deb is not None:
        deb_mb = deb / 1e6
        print(
            f"  .deb {deb_mb:.0f} MB (target <= {TARGET_DEB_MB} MB: {met(deb_mb <= TARGET_DEB_MB)})"
        )

    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "bench_install.json").write_text(
        json.dumps(
            {
                "starts_s": starts,
                "start_ratio": ratio,
                "sizes_bytes": measured,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
