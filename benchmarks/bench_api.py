"""The local API's cost over the same turn in the app, and four clients at once.

    .venv/bin/python benchmarks/bench_api.py [--rounds N] [--max-tokens N]

One server (`ApiServer` on 127.0.0.1, the Standard profile, the real starter model)
and one in-process `ChatService` (what `bastion chat` runs) share one model host and
one guardrail runtime; only the road to the model differs. The API's clients are
separate processes streaming with httpx, each timing its own requests (the same
clock: CLOCK_MONOTONIC), so their parsing does not run on the server's loop.

(a) A streamed completion through the API against the same seeded turn in the app,
    alternating: tokens/s (median of paired ratios, target at least 0.97) and time to
    first token (median of paired differences, API minus app, target at most 10 ms).
(b) Four clients, each sending its requests one after another, all at once: every
    request completes with the text a lone request gets for the same seed (nothing
    lost or mixed up), and each client's wait for the model (the server's `queue_ms`)
    is reported; fair is every client waiting about as long (the ratio of the longest
    median wait to the shortest).

This machine is shared and noisy: the figures that matter are ratios and differences
from the same run. Results go to benchmarks/results/api.json. A missed target is
reported, not failed; the exit status is non-zero only when something did not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bastion_desktop.api.server import ApiServer
from bastion_desktop.api.service import ApiService
from bastion_desktop.api.tokens import ApiTokens
from bastion_desktop.context import AppContext
from bastion_desktop.core.chat import ChatService
from bastion_desktop.core.conversation_store import InMemoryConversationStore
from bastion_desktop.core.inference.types import SamplingParams
from bastion_desktop.core.models import ChatModelSlot
from bastion_desktop.core.paths import HOME_VARIABLE
from bastion_desktop.core.privacy import apply_private_environment
from bastion_desktop.core.starter import STARTER_ID
from bench_common import add_home_argument, median, met, positive, prepare_home
from bench_guardrails import PROMPT_TEXT, BenchmarkError, run_turn

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "api.json"

TARGET_TPS_RATIO = 0.97  # API over app, at least
TARGET_TTFT_EXTRA_MS = 10.0  # API minus app, at most
CLIENTS = 4

# A client process with one kept-alive connection, as real clients have: reads one JSON
# command per line ({"url", "token", "bodies"}), sends the bodies one after another as
# streamed requests, and prints one JSON line of timings per request.
CLIENT = r"""
import json, sys, time
import httpx

http = httpx.Client(timeout=600)  # one connection, kept alive, as real clients do
for line in sys.stdin:
    command = json.loads(line)
    results = []
    for body in command["bodies"]:
        stamps, parts, usage, extra = [], [], None, {}
        start = time.perf_counter()
        headers = {"Authorization": "Bearer " + command["token"]}
        with http.stream("POST", command["url"], headers=headers, json=body) as response:
            if response.status_code != 200:
                response.read()
                results.append({"status": response.status_code, "error": response.text})
                continue
            for raw in response.iter_lines():
                if not raw.startswith("data: ") or raw == "data: [DONE]":
                    continue
                chunk = json.loads(raw[6:])
                for choice in chunk.get("choices", []):
                    text = choice.get("delta", {}).get("content")
                    if text:
                        stamps.append(time.perf_counter())
                        parts.append(text)
                usage = chunk.get("usage") or usage
                extra = chunk.get("bastion") or extra
        results.append({
            "status": 200,
            "start": start,
            "ttft_ms": (stamps[0] - start) * 1000 if stamps else None,
            "span_s": stamps[-1] - stamps[0] if stamps else 0.0,
            "tokens": (usage or {}).get("completion_tokens", 0),
            "text": "".join(parts),
            "queue_ms": extra.get("queue_ms"),
            "finish": extra.get("verdict"),
        })
    print(json.dumps(results), flush=True)
"""


class Client:
    """A client process, kept for the whole run."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CLIENT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    async def run(self, url: str, token: str, bodies: list[dict[str, Any]]) -> list[dict]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        command = json.dumps({"url": url, "token": token, "bodies": bodies})
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        line = await asyncio.to_thread(self.process.stdout.readline)
        if not line:
            raise BenchmarkError("a client process ended early")
        results: list[dict] = json.loads(line)
        for result in results:
            if result["status"] != 200:
                raise BenchmarkError(f"the API refused a request: {result}")
        return results

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


def _rate(result: dict[str, Any]) -> float:
    tokens, span = result["tokens"], result["span_s"]
    return (tokens - 1) / span if tokens >= 2 and span > 0 else 0.0


def _body(params: SamplingParams) -> dict[str, Any]:
    return {
        "model": STARTER_ID,
        "messages": [{"role": "user", "content": PROMPT_TEXT}],
        "max_tokens": params.max_tokens,
        "seed": params.seed,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def measure(context: AppContext, rounds: int, max_tokens: int, seed: int) -> dict:
    tokens = ApiTokens(context.api_tokens_file)
    token = tokens.create(f"bench-{os.getpid()}")
    slot = ChatModelSlot(context.load_options())
    api = ApiService(context, slot)
    server = ApiServer(api, tokens, origins=context.api_origins)
    await server.start(0)
    url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
    clients = [Client() for _ in range(CLIENTS)]
    try:
        guard = await api.guard_for(None, STARTER_ID)  # the runtime both roads use
        store = InMemoryConversationStore()
        app = ChatService(store, slot, lambda ref: context.registry.resolve(ref)[1], guard)
        params = SamplingParams(seed=seed, max_tokens=max_tokens)
        # Warm both roads (model load, the client's first connection).
        await run_turn(app, store, params, guard.profile_id)
        (reference,) = await clients[0].run(url, token, [_body(params)])

        print(f"(a) the API against the app, {rounds} rounds, alternating:", flush=True)
        pairs = []
        for index in range(rounds):
            first_api = index % 2 == 1
            if first_api:
                (through_api,) = await clients[0].run(url, token, [_body(params)])
            in_app = await run_turn(app, store, params, guard.profile_id)
            if not first_api:
                (through_api,) = await clients[0].run(url, token, [_body(params)])
            if through_api["text"] != in_app.text:
                raise BenchmarkError("the API and the app wrote different replies")
            pairs.append((in_app, through_api))
            print(
                f"  round {index + 1}: app {in_app.tokens_per_second:6.1f} tok/s "
                f"{in_app.ttft_ms:6.1f} ms | api {_rate(through_api):6.1f} tok/s "
                f"{through_api['ttft_ms']:6.1f} ms",
                flush=True,
            )
        tps_ratios = [_rate(api_) / app_.tokens_per_second for app_, api_ in pairs]
        ttft_extra = [api_["ttft_ms"] - app_.ttft_ms for app_, api_ in pairs]

        per_client = 3
        print(f"(b) {CLIENTS} clients at once, {per_client} requests each:", flush=True)
        started = time.perf_counter()
        runs = await asyncio.gather(
            *(c.run(url, token, [_body(params)] * per_client) for c in clients)
        )
        wall_s = time.perf_counter() - started
        lost = sum(r["text"] != reference["text"] for results in runs for r in results)
        waits = [[r["queue_ms"] for r in results] for results in runs]
        medians = [median(w) for w in waits]
        for number, client_waits in enumerate(waits, start=1):
            listed = ", ".join(f"{w:.0f}" for w in client_waits)
            print(f"  client {number}: waited {listed} ms", flush=True)
    finally:
        for client in clients:
            client.close()
        await server.close()
        await slot.close()
        await context.close_guard_models()
    fairness = max(medians) / min(medians) if min(medians) > 0 else None
    return {
        "paired": {
            "tps_ratio": median(tps_ratios),
            "ttft_extra_ms": median(ttft_extra),
            "app_tps": median([a.tokens_per_second for a, _ in pairs]),
            "api_tps": median([_rate(b) for _, b in pairs]),
            "app_ttft_ms": median([a.ttft_ms for a, _ in pairs]),
            "api_ttft_ms": median([b["ttft_ms"] for _, b in pairs]),
            "rounds": rounds,
        },
        "clients": {
            "clients": CLIENTS,
            "requests_each": per_client,
            "completed": sum(len(r) for r in runs),
            "differing_replies": lost,
            "waits_ms": waits,
            "median_wait_ms": medians,
            "longest_over_shortest_median_wait": fairness,
            "wall_s": wall_s,
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=positive, default=7)
    parser.add_argument("--max-tokens", type=positive, default=64)
    parser.add_argument("--seed", type=int, default=11)
    add_home_argument(parser)
    args = parser.parse_args(argv)
    apply_private_environment()
    temporary = args.home is None
    home = Path(tempfile.mkdtemp(prefix="bastion-bench-")) if temporary else args.home
    try:
        prepare_home(home.resolve())
        os.environ[HOME_VARIABLE] = str(home.resolve())
        context = AppContext.start()
        result = asyncio.run(measure(context, args.rounds, args.max_tokens, args.seed))
    except BenchmarkError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        if temporary:
            shutil.rmtree(home, ignore_errors=True)
    result = {
        "benchmark": "api",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
        },
        "config": {"max_tokens": args.max_tokens, "seed": args.seed, "prompt": PROMPT_TEXT},
        **result,
    }
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    paired, clients = result["paired"], result["clients"]
    print()
    print(
        f"tokens/s, API over app: {paired['tps_ratio']:.3f} "
        f"(target >= {TARGET_TPS_RATIO}): {met(paired['tps_ratio'] >= TARGET_TPS_RATIO)}"
    )
    print(
        f"time to first token, API minus app: {paired['ttft_extra_ms']:+.1f} ms "
        f"(target <= {TARGET_TTFT_EXTRA_MS:.0f} ms): "
        f"{met(paired['ttft_extra_ms'] <= TARGET_TTFT_EXTRA_MS)}"
    )
    fair = clients["longest_over_shortest_median_wait"]
    print(
        f"{clients['clients']} clients: {clients['completed']} requests completed, "
        f"{clients['differing_replies']} replies differing from a lone request's; "
        f"median waits {', '.join(f'{w:.0f}' for w in clients['median_wait_ms'])} ms "
        f"(longest over shortest: {fair:.2f})"
        if fair
        else "n/a"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
