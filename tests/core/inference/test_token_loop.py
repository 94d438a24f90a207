"""The model host's own token loop (token_loop.py) on the real starter model: it draws
exactly the tokens llama-cpp-python's `Llama.generate` draws, keeps the context's record
so the next request reuses the prefix, and spells every token whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion_desktop.core.inference.host_process import LoadedModel
from bastion_desktop.core.inference.token_loop import (
    TokenPieces,
    eval_reusing_prefix,
    sampled_tokens,
    sampler_settings,
)
from bastion_desktop.core.inference.types import ChatMessage, LoadOptions, Role, SamplingParams

pytestmark = pytest.mark.model

STEPS = 24


@pytest.fixture(scope="module")
def model(starter_path: Path) -> LoadedModel:
    return LoadedModel(starter_path, LoadOptions(context_length=512, gpu_layers="none"))


def _prompt(model: LoadedModel) -> list[int]:
    messages = [ChatMessage(Role.USER, "Tell me a story about a lighthouse keeper.")]
    tokens, _rendered, _dropped = model.fit_prompt(messages, SamplingParams())
    return tokens


def _by_llama_cpp_python(
    model: LoadedModel, prompt: list[int], sampling: dict[str, Any]
) -> list[int]:
    llm = model.llm
    llm.reset()  # type: ignore[no-untyped-call]
    llm.set_seed(11)
    drawn: list[int] = []
    for token in llm.generate(prompt, **sampling):
        drawn.append(token)
        if len(drawn) == STEPS:
            break
    return drawn


def _by_the_host_loop(model: LoadedModel, prompt: list[int], sampling: dict[str, Any]) -> list[int]:
    llm = model.llm
    llm.reset()  # type: ignore[no-untyped-call]
    llm.set_seed(11)
    eval_reusing_prefix(llm, prompt)
    drawn: list[int] = []
    for token in sampled_tokens(llm, llm._init_sampler(**sampling)):
        drawn.append(token)
        if len(drawn) == STEPS:
            break
    return drawn


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(seed=11),  # the app's defaults: penalties, top-k, top-p, min-p
        SamplingParams(temperature=0.0),
        SamplingParams(seed=11, top_k=0, frequency_penalty=0.5, presence_penalty=0.3),
        SamplingParams(seed=11, output_format="json"),
    ],
    ids=["defaults", "greedy", "every-logit-with-penalties", "json-grammar"],
)
def test_the_host_loop_draws_what_llama_cpp_pythons_generate_draws(
    model: LoadedModel, params: SamplingParams
) -> None:
    prompt = _prompt(model)
    theirs = _by_llama_cpp_python(model, prompt, sampler_settings(params))
    ours = _by_the_host_loop(model, prompt, sampler_settings(params))
    assert ours == theirs
    assert len(set(ours)) > 1 or params.temperature == 0.0, "a seeded draw that varies"


def test_the_context_keeps_its_record_and_the_next_request_reuses_it(model: LoadedModel) -> None:
    prompt = _prompt(model)
    drawn = _by_the_host_loop(model, prompt, sampler_settings(SamplingParams(seed=11)))
    llm = model.llm
    # Every drawn token but the last was decoded (the last is never needed).
    assert llm.n_tokens == len(prompt) + STEPS - 1
    assert list(llm.input_ids[: llm.n_tokens]) == prompt + drawn[:-1]
    # A follow-up that starts with the whole reply reads only what is new.
    follow_up = prompt + drawn + [prompt[-1]]
    assert eval_reusing_prefix(llm, follow_up) == 2
    # A different start keeps only what it shares (the BOS) and reads the rest.
    assert eval_reusing_prefix(llm, [prompt[0], *drawn[:5]]) == 5


def test_every_token_is_spelled_whole(model: LoadedModel) -> None:
    """llama-cpp-python's detokenize spells a token longer than 32 bytes as nothing: the
    starter has 379 (long words in Bengali and Hindi), Qwen2.5 Coder 240 (rules of
    dashes or stars in comments, long runs of spaces).
    The host's pieces are what detokenize gives for the others, and the long ones whole."""
    llm = model.llm
    pieces = TokenPieces(llm._model.vocab)
    long = []
    for token in range(llm.n_vocab()):
        piece = pieces(token)
        if len(piece) > 32:
            long.append(token)
        else:
            assert piece == llm.detokenize([token]), token
    assert len(long) > 100
    for token in long:  # whole: read back, each is its own token again
        assert llm.tokenize(pieces(token), add_bos=False, special=False) == [token]
    assert pieces(long[0]) is pieces(long[0]), "read once, then kept"


# A process of its own (llama.cpp's log callback is process-wide): the compute buffer
# llama.cpp reserves for the starter's context, as its log reports it, made with and
# without one output per batch.
COMPUTE_BUFFERS = """
import ctypes, json, re, sys
from bastion_desktop.core.inference.backends import load_backends
load_backends()
import llama_cpp
from bastion_desktop.core.inference.token_loop import context_settings
lines = []
@llama_cpp.llama_log_callback
def keep(level, text, data):
    lines.append(text.decode("utf-8", "replace"))
llama_cpp.llama_log_set(keep, ctypes.c_void_p(0))
sizes = {}
for name in ("default", "one output"):
    lines.clear()
    if name == "default":
        llm = llama_cpp.Llama(sys.argv[1], n_ctx=4096, verbose=False)
    else:
        with context_settings(flash_attention_auto=False) as settings:
            llm = llama_cpp.Llama(sys.argv[1], n_ctx=4096, verbose=False, **settings)
    found = re.findall(r"compute buffer size = +([0-9.]+) MiB", "".join(lines))
    sizes[name] = sum(map(float, found))
    sizes[name + " n_outputs_max"] = llm.context_params.n_outputs_max
print(json.dumps(sizes))
"""


def test_a_context_keeps_room_for_one_output_not_a_whole_batch(
    model: LoadedModel, starter_path: Path
) -> None:
    """llama.cpp reserves room for a whole batch of logits by default: with the starter's
    262,144-token vocabulary, 512 MiB of compute buffer (on the GPU where the output layer
    is) that the host never uses."""
    import json
    import subprocess
    import sys

    assert model.llm.context_params.n_outputs_max == 1
    assert model.llm.context_params.flash_attn_type == 0, "off on the CPU alone"
    done = subprocess.run(
        [sys.executable, "-c", COMPUTE_BUFFERS, str(starter_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    sizes = json.loads(done.stdout.strip().splitlines()[-1])
    assert sizes["default n_outputs_max"] == 0
    assert sizes["one output n_outputs_max"] == 1
    assert sizes["default"] > 500, sizes  # MiB
    assert sizes["one output"] < sizes["default"] / 4, sizes


def test_a_prompt_longer_than_a_batch_is_read_as_llama_cpp_python_reads_it(
    starter_path: Path,
) -> None:
    import numpy as np

    model = LoadedModel(starter_path, LoadOptions(context_length=1024, gpu_layers="none"))
    llm = model.llm
    text = "The keeper counted the waves and wrote each one down. " * 80
    prompt = llm.tokenize(text.encode())[:700]
    assert len(prompt) > llm.n_batch, "two batches: 512, then the rest"

    def last_logits() -> Any:
        raw = llm._ctx.get_logits_ith(-1)
        return np.ctypeslib.as_array(raw, shape=(llm.n_vocab(),)).copy()

    llm.reset()  # type: ignore[no-untyped-call]
    llm.eval(prompt)
    theirs = last_logits()
    llm.reset()  # type: ignore[no-untyped-call]
    assert eval_reusing_prefix(llm, prompt) == len(prompt)
    assert llm.n_tokens == len(prompt)
    assert llm.input_ids[: len(prompt)].tolist() == prompt
    # The second batch's positions followed the first's: the same logits to the bit.
    assert np.array_equal(last_logits(), theirs)
