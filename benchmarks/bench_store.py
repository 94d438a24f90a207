"""The encrypted conversation store against the same store in plain SQLite.

    .venv/bin/python benchmarks/bench_store.py [--conversations N] [--messages N]

Both variants are `EncryptedConversationStore` on the same apsw build, schema and code;
the baseline opens its file without a key (`UNENCRYPTED`), so the difference is what
SQLite3 Multiple Ciphers costs. Measured through the store's API, as the app uses it:

(a) insert throughput: `add_message`, one committed transaction per message, messages
    spread over conversations, with the full-text index kept up by triggers;
(b) full-text search: median time of `search(query)` (20 hits, ranked, with snippets);
(c) the history list: median time of `list_conversations(limit=50)`;
(d) opening: median time of `EncryptedConversationStore.open` on the full file;
(e) saving a streaming reply: median time of one `update_message` (what ChatService
    does every second or 32 tokens) for replies of a few sizes, no target: it runs on
    the engine loop, so it is time the token stream waits;
(f) deleting a conversation (with its messages, their search entries securely deleted,
    and the WAL emptied): median time, no target.

The machine is shared and noisy, so the variants alternate (inserts in chunks, the rest
call by call, each pair in alternating order) and every figure is reported as a ratio
encrypted / plain measured in the same run. Results go to benchmarks/results/store.json.
Missing a target is reported, not failed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import apsw

from bastion_desktop.core.conversation_store import MessageState
from bastion_desktop.core.history.database import UNENCRYPTED, DatabaseKey
from bastion_desktop.core.history.encrypted_store import EncryptedConversationStore
from bastion_desktop.core.inference.types import Role
from bench_common import median, met, positive

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "store.json"

TARGET_RATIO = 1.5  # encrypted cost over plain cost, at most, for each measure
VARIANTS = ("encrypted", "plain")
VOCABULARY_SIZE = 20_000
STREAM_REPLY_CHARS = (1_000, 4_000, 16_000)
STREAM_SAVES = 40
DELETES = 20


@dataclass(frozen=True)
class Config:
    conversations: int
    messages_per_conversation: int
    chunks: int
    queries: int
    list_rounds: int
    open_rounds: int
    seed: int

    @property
    def messages(self) -> int:
        return self.conversations * self.messages_per_conversation


@dataclass
class Timings:
    """Seconds per operation (or per chunk of inserts), by variant."""

    insert_chunks: dict[str, list[float]] = field(default_factory=lambda: {v: [] for v in VARIANTS})
    search: dict[str, list[float]] = field(default_factory=lambda: {v: [] for v in VARIANTS})
    search_hits: dict[str, list[int]] = field(default_factory=lambda: {v: [] for v in VARIANTS})
    list_newest: dict[str, list[float]] = field(default_factory=lambda: {v: [] for v in VARIANTS})
    open: dict[str, list[float]] = field(default_factory=lambda: {v: [] for v in VARIANTS})
    # Reply length in characters -> seconds per save, by variant.
    stream_save: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    delete: dict[str, list[float]] = field(default_factory=lambda: {v: [] for v in VARIANTS})


class Corpus:
    """Chat-like text: words from a Zipf-distributed vocabulary, messages of varied length."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        letters = "abcdefghijklmnopqrstuvwxyz"
        words: set[str] = set()
        while len(words) < VOCABULARY_SIZE:
            length = self.random.randint(2, 10)
            words.add("".join(self.random.choices(letters, k=length)))
        self.words = sorted(words, key=lambda _: self.random.random())
        self.weights = list(
            itertools.accumulate(1 / rank for rank in range(1, len(self.words) + 1))
        )

    def text(self, role: Role) -> str:
        count = self.random.randint(8, 40) if role is Role.USER else self.random.randint(40, 160)
        chosen = self.random.choices(self.words, cum_weights=self.weights, k=count)
        return " ".join(chosen).capitalize() + "."

    def queries(self, count: int) -> list[str]:
        """Single words from common to rare, and pairs: what people type into a search."""
        queries = []
        for number in range(count):
            rank = int(10 ** self.random.uniform(1, 3.7))  # rank 10 to 5000
            word = self.words[rank]
            if number % 3 == 2:
                word = f"{word} {self.words[self.random.randint(0, 200)]}"
            queries.append(word)
        return queries


async def insert_chunk(
    store: EncryptedConversationStore, conversation_texts: list[list[str]]
) -> None:
    for number, texts in enumerate(conversation_texts):
        conversation = await store.create_conversation(
            title=f"Conversation {number}",
            model_id="starter",
            profile_id="standard",
            system_prompt="",
        )
        for index, text in enumerate(texts):
            role = Role.USER if index % 2 == 0 else Role.ASSISTANT
            await store.add_message(conversation.id, role, text, MessageState.COMPLETE)


async def timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await call()
    return time.perf_counter() - started, result


async def measure_stream_saves(
    stores: dict[str, EncryptedConversationStore], corpus: Corpus, timings: Timings
) -> None:
    replies = {}
    for variant in VARIANTS:
        conversation = await stores[variant].create_conversation(
            title="Streaming", model_id="starter", profile_id="standard", system_prompt=""
        )
        await stores[variant].add_message(
            conversation.id, Role.USER, "Tell me a story.", MessageState.COMPLETE
        )
        reply = await stores[variant].add_message(
            conversation.id, Role.ASSISTANT, "", MessageState.STREAMING
        )
        replies[variant] = reply.id
    for size in STREAM_REPLY_CHARS:
        text = ""
        while len(text) < size:
            text += " " + corpus.text(Role.ASSISTANT)
        timings.stream_save[size] = {v: [] for v in VARIANTS}
        for number in range(STREAM_SAVES):
            # Each save adds a little, as a reply growing by 32 tokens would.
            content = text[: size - (STREAM_SAVES - number) * 20]
            for variant in ordered(number):
                seconds, _ = await timed(
                    lambda v=variant, c=content: stores[v].update_message(
                        replies[v], content=c, state=MessageState.STREAMING
                    )
                )
                timings.stream_save[size][variant].append(seconds)


def ordered(round_number: int) -> tuple[str, ...]:
    # Alternate which variant goes first, so neither always runs on a warmer machine.
    return VARIANTS if round_number % 2 == 0 else VARIANTS[::-1]


async def measure_inserts(
    stores: dict[str, EncryptedConversationStore], corpus: Corpus, config: Config, timings: Timings
) -> None:
    per_chunk = config.conversations // config.chunks
    for chunk in range(config.chunks):
        texts = [
            [
                corpus.text(Role.USER if index % 2 == 0 else Role.ASSISTANT)
                for index in range(config.messages_per_conversation)
            ]
            for _ in range(per_chunk)
        ]
        for variant in ordered(chunk):
            seconds, _ = await timed(lambda v=variant, t=texts: insert_chunk(stores[v], t))
            timings.insert_chunks[variant].append(seconds)
        if (chunk + 1) % max(1, config.chunks // 5) == 0:
            print(f"    {chunk + 1}/{config.chunks} chunks", flush=True)


async def measure_reads(
    stores: dict[str, EncryptedConversationStore], corpus: Corpus, config: Config, timings: Timings
) -> None:
    print(f"(b) {config.queries} searches per variant", flush=True)
    for number, query in enumerate(corpus.queries(config.queries)):
        for variant in ordered(number):
            seconds, hits = await timed(lambda v=variant, q=query: stores[v].search(q))
            timings.search[variant].append(seconds)
            timings.search_hits[variant].append(len(hits))

    print(f"(c) {config.list_rounds} listings of the newest 50 per variant", flush=True)
    for number in range(config.list_rounds):
        for variant in ordered(number):
            seconds, _ = await timed(lambda v=variant: stores[v].list_conversations(limit=50))
            timings.list_newest[variant].append(seconds)


async def measure_deletes(stores: dict[str, EncryptedConversationStore], timings: Timings) -> None:
    victims = {v: await stores[v].list_conversations(limit=DELETES, offset=100) for v in VARIANTS}
    for number in range(DELETES):
        for variant in ordered(number):
            conversation_id = victims[variant][number].id
            seconds, _ = await timed(
                lambda v=variant, c=conversation_id: stores[v].delete_conversation(c)
            )
            timings.delete[variant].append(seconds)


def measure_opens(
    paths: dict[str, Path], keys: dict[str, DatabaseKey], rounds: int, timings: Timings
) -> None:
    for number in range(rounds):
        for variant in ordered(number):
            started = time.perf_counter()
            store = EncryptedConversationStore.open(paths[variant], keys[variant])
            timings.open[variant].append(time.perf_counter() - started)
            store.close()


async def measure(config: Config, folder: Path) -> tuple[Timings, dict[str, Any]]:
    keys: dict[str, DatabaseKey] = {"encrypted": secrets.token_bytes(32), "plain": UNENCRYPTED}
    paths = {variant: folder / variant / "history.db" for variant in VARIANTS}
    stores = {v: EncryptedConversationStore.open(paths[v], keys[v]) for v in VARIANTS}
    corpus = Corpus(config.seed)
    timings = Timings()
    try:
        print(
            f"(a) inserting {config.messages:,} messages in {config.conversations:,} "
            f"conversations, {config.chunks} chunks per variant, alternating",
            flush=True,
        )
        await measure_inserts(stores, corpus, config, timings)
        await measure_reads(stores, corpus, config, timings)
        print(f"(e) {STREAM_SAVES} saves of a streaming reply per size and variant", flush=True)
        await measure_stream_saves(stores, corpus, timings)
    finally:
        for store in stores.values():
            store.close()
    sizes = {v: paths[v].stat().st_size for v in VARIANTS}

    print(f"(d) {config.open_rounds} opens per variant", flush=True)
    measure_opens(paths, keys, config.open_rounds, timings)

    print(f"(f) {DELETES} conversation deletions per variant", flush=True)
    stores = {v: EncryptedConversationStore.open(paths[v], keys[v]) for v in VARIANTS}
    try:
        await measure_deletes(stores, timings)
    finally:
        for store in stores.values():
            store.close()
    return timings, {"database_bytes": sizes}


def _ratio(encrypted: float, plain: float) -> float:
    return encrypted / plain if plain > 0 else 0.0


def _measure_summary(samples: dict[str, list[float]], unit_ms: bool = True) -> dict[str, Any]:
    encrypted, plain = median(samples["encrypted"]), median(samples["plain"])
    paired = [_ratio(e, p) for e, p in zip(samples["encrypted"], samples["plain"], strict=True)]
    ratio = _ratio(encrypted, plain)
    scale = 1000.0 if unit_ms else 1.0
    return {
        "encrypted_median_ms": encrypted * scale,
        "plain_median_ms": plain * scale,
        "ratio_encrypted_over_plain": ratio,
        "median_of_paired_ratios": median(paired),
        "target_ratio_at_most": TARGET_RATIO,
        "target_met": ratio <= TARGET_RATIO,
    }


def summarize(config: Config, timings: Timings, extra: dict[str, Any]) -> dict[str, Any]:
    totals = {v: sum(timings.insert_chunks[v]) for v in VARIANTS}
    rates = {v: config.messages / totals[v] if totals[v] else 0.0 for v in VARIANTS}
    insert_ratio = _ratio(totals["encrypted"], totals["plain"])
    insert_paired = [
        _ratio(e, p)
        for e, p in zip(
            timings.insert_chunks["encrypted"], timings.insert_chunks["plain"], strict=True
        )
    ]
    connection = apsw.Connection(":memory:")
    sqlite3mc = connection.execute("SELECT sqlite3mc_version()").get
    connection.close()
    return {
        "benchmark": "store",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "apsw": apsw.apsw_version(),
            "sqlite": apsw.sqlite_lib_version(),
            "sqlite3mc": sqlite3mc,
        },
        "config": {**asdict(config), "messages": config.messages},
        "insert": {
            "encrypted_messages_per_second": rates["encrypted"],
            "plain_messages_per_second": rates["plain"],
            "encrypted_total_s": totals["encrypted"],
            "plain_total_s": totals["plain"],
            # Time, not throughput, over time: the cost ratio, like the other measures.
            "ratio_encrypted_over_plain": insert_ratio,
            "median_of_paired_ratios": median(insert_paired),
            "target_ratio_at_most": TARGET_RATIO,
            "target_met": insert_ratio <= TARGET_RATIO,
        },
        "search": {
            **_measure_summary(timings.search),
            "median_hits": median([float(h) for h in timings.search_hits["encrypted"]]),
            "same_hit_counts": timings.search_hits["encrypted"] == timings.search_hits["plain"],
        },
        "list_newest_50": _measure_summary(timings.list_newest),
        "open": _measure_summary(timings.open),
        "stream_save": {
            str(size): {
                key: value
                for key, value in _measure_summary(samples).items()
                if not key.startswith("target")
            }
            for size, samples in timings.stream_save.items()
        },
        "delete_conversation": {
            key: value
            for key, value in _measure_summary(timings.delete).items()
            if not key.startswith("target")
        },
        **extra,
        "raw_seconds": asdict(timings),
    }


WIDTH = 22  # of the label column in the summary


def print_summary(result: dict[str, Any]) -> None:
    config, insert = result["config"], result["insert"]
    sizes = result["database_bytes"]
    print()
    print(
        f"Bastion store benchmark: {config['messages']:,} messages in "
        f"{config['conversations']:,} conversations; {result['environment']['sqlite3mc']}, "
        f"SQLite {result['environment']['sqlite']}"
    )
    print(
        f"{'(a) insert':<{WIDTH}}encrypted {insert['encrypted_messages_per_second']:,.0f} msg/s"
        f"   plain {insert['plain_messages_per_second']:,.0f} msg/s"
    )
    print(
        f"{'':<{WIDTH}}cost ratio encrypted/plain = {insert['ratio_encrypted_over_plain']:.2f}"
        f" (median of paired chunks {insert['median_of_paired_ratios']:.2f})"
        f"   target <= {TARGET_RATIO}: {met(insert['target_met'])}"
    )
    for label, key in (
        ("(b) search", "search"),
        ("(c) list newest 50", "list_newest_50"),
        ("(d) open", "open"),
    ):
        measure = result[key]
        print(
            f"{label:<{WIDTH}}encrypted {measure['encrypted_median_ms']:.3f} ms"
            f"   plain {measure['plain_median_ms']:.3f} ms"
            f"   ratio {measure['ratio_encrypted_over_plain']:.2f}"
            f" (paired {measure['median_of_paired_ratios']:.2f})"
            f"   target <= {TARGET_RATIO}: {met(measure['target_met'])}"
        )
    informative = [
        (f"(e) save {int(size):,} chars", measure)
        for size, measure in result["stream_save"].items()
    ]
    informative.append(("(f) delete a chat", result["delete_conversation"]))
    for label, measure in informative:
        print(
            f"{label:<{WIDTH}}encrypted {measure['encrypted_median_ms']:.3f} ms"
            f"   plain {measure['plain_median_ms']:.3f} ms"
            f"   ratio {measure['ratio_encrypted_over_plain']:.2f}   (no target)"
        )
    search = result["search"]
    same = "yes" if search["same_hit_counts"] else "NO"
    print(
        f"checks: median hits per search {search['median_hits']:.0f}; same hit counts in both: "
        f"{same}; file size encrypted {sizes['encrypted'] / 1e6:.1f} MB, "
        f"plain {sizes['plain'] / 1e6:.1f} MB"
    )
    print(f"results: {RESULTS_FILE}")


def parse_args(argv: Sequence[str] | None) -> tuple[Config, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--conversations", type=positive, default=2000)
    parser.add_argument("--messages", type=positive, default=50, help="messages per conversation")
    parser.add_argument(
        "--chunks", type=positive, default=20, help="insert chunks per variant, alternating"
    )
    parser.add_argument("--queries", type=positive, default=200, help="searches per variant")
    parser.add_argument("--list-rounds", type=positive, default=300)
    parser.add_argument("--open-rounds", type=positive, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--dir",
        type=Path,
        help="folder for the two databases (kept); default: a temporary folder, removed",
    )
    args = parser.parse_args(argv)
    if args.conversations % args.chunks:
        parser.error("--conversations must be a multiple of --chunks")
    config = Config(
        conversations=args.conversations,
        messages_per_conversation=args.messages,
        chunks=args.chunks,
        queries=args.queries,
        list_rounds=args.list_rounds,
        open_rounds=args.open_rounds,
        seed=args.seed,
    )
    return config, args.dir


def main(argv: Sequence[str] | None = None) -> int:
    config, folder = parse_args(argv)
    temporary = folder is None
    folder = Path(tempfile.mkdtemp(prefix="bastion-bench-store-")) if folder is None else folder
    if any((folder / variant).exists() for variant in VARIANTS):
        print(f"{folder} already holds a benchmark database; use an empty folder", file=sys.stderr)
        return 1
    started = time.perf_counter()
    try:
        timings, extra = asyncio.run(measure(config, folder))
    finally:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
    result = summarize(config, timings, extra)
    result["wall_s"] = time.perf_counter() - started
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print_summary(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
