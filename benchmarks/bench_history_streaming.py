"""Does saving a reply as it streams slow the token stream down?

    .venv/bin/python benchmarks/bench_history_streaming.py [--rounds N] [--max-tokens N]

The same ChatService turn on the real starter model, alternating between the encrypted
history (which saves the reply at least every second or every 32 tokens, each save a
committed, encrypted transaction) and the in-memory store. Prints tokens/s with the
encrypted store over tokens/s with the in-memory one (target at least 0.99) and the
difference in time to first token, and writes benchmarks/results/history_streaming.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bastion_desktop.core.chat import ChatService
from bastion_desktop.core.conversation_store import InMemoryConversationStore
from bastion_desktop.core.history.encrypted_store import EncryptedConversationStore
from bastion_desktop.core.inference.types import LoadOptions, SamplingParams
from bastion_desktop.core.models import ChatModelSlot
from bastion_desktop.core.privacy import apply_private_environment
from bench_pipeline import Run, prepare_home, run_bastion

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "history_streaming.json"
TARGET_TPS_RATIO = 0.99


async def measure(model_path: Path, home: Path, rounds: int, max_tokens: int) -> Result:
    threads = os.cpu_count() or 1
    slot = ChatModelSlot(LoadOptions(context_length=2048, threads=threads))
    history = EncryptedConversationStore.open(home / "history.db", secrets.token_bytes(32))
    memory = InMemoryConversationStore()
    encrypted_service = ChatService(history, slot, lambda _: model_path)
    memory_service = ChatService(memory, slot, lambda _: model_path)
    # temperature 0 with a seed: both variants generate the very same tokens.
    params = SamplingParams(temperature=0.0, seed=1, max_tokens=max_tokens)
    runs: dict[str, list[Run]] = {"memory": [], "encrypted": []}
    try:
        await run_bastion(memory_service, memory, params)  # loads and warms the model
        await run_bastion(encrypted_service, history, params)
        for index in range(rounds):
            memory_run, _ = await run_bastion(memory_service, memory, params)
            encrypted_run, _ = await run_bastion(encrypted_service, history, params)
            runs["memory"].append(memory_run)
            runs["encrypted"].append(encrypted_run)
            print(
                f"  round {index + 1}/{rounds}: memory {memory_run.tokens_per_second:6.1f} tok/s"
                f" | encrypted {encrypted_run.tokens_per_second:6.1f} tok/s",
                flush=True,
            )
    finally:
        await slot.close()
        history.close()
    return Result(runs["memory"], runs["encrypted"])


@dataclass(frozen=True)
class Result:
    memory: list[Run]
    encrypted: list[Run]

    @staticmethod
    def _tps(runs: list[Run]) -> float:
        return statistics.median(r.tokens_per_second for r in runs)

    @property
    def ratio(self) -> float:
        return self._tps(self.encrypted) / self._tps(self.memory)

    @property
    def paired_ratio(self) -> float:
        pairs = zip(self.memory, self.encrypted, strict=True)
        return statistics.median(e.tokens_per_second / m.tokens_per_second for m, e in pairs)

    @property
    def ttft_extra_ms(self) -> float:
        return statistics.median(r.ttft_ms for r in self.encrypted) - statistics.median(
            r.ttft_ms for r in self.memory
        )

    @property
    def same_text(self) -> bool:
        return all(m.text == e.text for m, e in zip(self.memory, self.encrypted, strict=True))

    def summary(self) -> str:
        met = "met" if self.ratio >= TARGET_TPS_RATIO else "MISSED"
        return (
            f"saving while streaming: {self.encrypted[0].tokens} tokens, "
            f"{len(self.memory)} rounds\n"
            f"  tokens/s  memory {self._tps(self.memory):.1f}  "
            f"encrypted {self._tps(self.encrypted):.1f}\n"
            f"  ratio encrypted/memory = {self.ratio:.3f} (median of paired ratios "
            f"{self.paired_ratio:.3f})   target >= {TARGET_TPS_RATIO}: {met}\n"
            f"  first token: encrypted - memory = {self.ttft_extra_ms:+.1f} ms\n"
            f"  same text every round: {'yes' if self.same_text else 'NO'}"
        )

    def as_json(self) -> dict[str, object]:
        return {
            "ratio": self.ratio,
            "paired_ratio": self.paired_ratio,
            "ttft_extra_ms": self.ttft_extra_ms,
            "same_text": self.same_text,
            "memory": [r.as_json() for r in self.memory],
            "encrypted": [r.as_json() for r in self.encrypted],
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args(argv)
    apply_private_environment()
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as folder:
        home = Path(folder)
        model_path = prepare_home(home)
        print("in-memory store vs the encrypted history, alternating:", flush=True)
        result = asyncio.run(measure(model_path, home, args.rounds, args.max_tokens))
    print("\n" + result.summary())
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(result.as_json(), indent=2))
    print(f"results: {RESULTS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
