"""The model host's token loop, on llama.cpp's C API where llama-cpp-python's own loop
spends Python on every token.

`Llama.generate` and `Llama.detokenize` do per token what needs doing once: each step
removes the KV cache's tail, fills a batch field by field, copies the token into its
buffer, calls `sample` through keyword arguments, and allocates a buffer to spell the
token. That is 0.02-0.05 ms a token: nothing against a CPU's decode, but a few percent of
a small model's on a GPU (about 1 ms a token). Here a batch of one token is made once and
its token rewritten, the sampler chain is called directly, and each token's bytes are read
once per model (`TokenPieces`). The tokens, the sampler chain and the cached prompt prefix
are the same as llama-cpp-python's, so a seeded reply is the same token for token.
On 2 CPU cores, with a model that decodes a token in 0.8 ms, the host's loop went from
0.03-0.05 ms a token above sampling and decoding alone to 0.01-0.02
(benchmarks/gpu_token_costs.py --model tiny).
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterable, Iterator
from typing import Any

from bastion_desktop.core.errors import BastionError, OutputFormatError
from bastion_desktop.core.inference.types import SamplingParams


class TokenPieces:
    """Each token's bytes as a reply spells it (no leading space removed; special tokens
    spelled as nothing unless `special`), read from llama.cpp the first time a token is
    met and kept for the model's lifetime.

    `Llama.detokenize([token])` gives the same bytes, but for a token longer than its
    32-byte buffer it gives none, and the text is lost from the reply: a comment rule of
    dashes or stars or 33 spaces of indentation in code (Qwen2.5 Coder has 240 such
    tokens), a long word in Bengali or Hindi (Gemma 3 has 379)."""

    def __init__(self, vocab: Any, *, special: bool = False) -> None:
        self._vocab = vocab
        self._special = special
        self._known: dict[int, bytes] = {}
        self._buffer = ctypes.create_string_buffer(64)

    def __call__(self, token: int) -> bytes:
        piece = self._known.get(token)
        if piece is None:
            piece = self._known[token] = self._read(token)
        return piece

    def _read(self, token: int) -> bytes:
        import llama_cpp

        size = llama_cpp.llama_token_to_piece(
            self._vocab, token, self._buffer, len(self._buffer), 0, self._special
        )
        if size < 0:  # longer than the buffer: llama.cpp says how long
            self._buffer = ctypes.create_string_buffer(-size)
            size = llama_cpp.llama_token_to_piece(
                self._vocab, token, self._buffer, len(self._buffer), 0, self._special
            )
        return self._buffer.raw[:size]


@contextlib.contextmanager
def context_settings(*, flash_attention_auto: bool) -> Iterator[dict[str, Any]]:
    """What the model host wants of the contexts a `Llama` made meanwhile makes, where
    llama-cpp-python's `Llama` has no setting for it; yields the keyword arguments for
    `Llama` that go with it. It swaps llama-cpp-python's view of llama.cpp's defaults for
    the time of the call (a model host loads on one thread).

    Room for one output a batch (the last token's logits) instead of llama.cpp's default
    of a whole batch's (n_batch, 512). The host never asks for more: a prompt's logits for
    its last token only, a reply's one token at a time. Room for 512 rows of logits is
    512 x vocabulary x 4 bytes of compute buffer, on the GPU where the output layer is,
    and the largest part of that buffer where the vocabulary is large: at a 4,096-token
    context, the starter's (Gemma 3, 262,144 tokens) fell from 514.5 MiB to 57.8, Qwen2.5
    Coder 0.5B's (151,936) from 302.0 to 129.3. The replies are the same. A batch that
    asked for more would abort llama.cpp (an assertion, not an error): logprobs over a
    prompt, or speculative decoding, would need contexts made without this.

    With `flash_attention_auto` (layers on a GPU), llama.cpp's own default for flash
    attention: on where every layer's device runs it, off otherwise. `Llama` offers only
    off or forced on (which moves attention to the CPU on a device without it). Without
    it, attention keeps a score for every token of the context for each token of a
    micro-batch: Qwen2.5 Coder 0.5B's compute buffer at a 32,768-token context is 969 MiB
    without, 68 MiB with, and a 7B's grows by 2 GiB. On the CPU alone it stays off: there
    it made prompts faster (+24% at a 3,072-token depth) but replies slower (-4 to -7%),
    and it changes the CPU's arithmetic that seeded replies are compared against."""
    import llama_cpp.llama_cpp as bindings

    defaults = bindings.llama_context_default_params
    forced_on = bindings.LLAMA_FLASH_ATTN_TYPE_ENABLED

    def with_one_output() -> Any:
        params = defaults()
        params.n_outputs_max = 1
        return params

    bindings.llama_context_default_params = with_one_output
    if flash_attention_auto:
        bindings.LLAMA_FLASH_ATTN_TYPE_ENABLED = bindings.LLAMA_FLASH_ATTN_TYPE_AUTO
    try:
        yield {"flash_attn": flash_attention_auto}
    finally:
        bindings.llama_context_default_params = defaults
        bindings.LLAMA_FLASH_ATTN_TYPE_ENABLED = forced_on


# What llama.cpp logs (a warning) when "auto" finds a layer's device cannot run it.
FLASH_ATTENTION_REFUSED = "Flash Attention not supported, set to disabled"


def without_refused_flash_attention(llm: Any, warnings: Iterable[str]) -> bool:
    """Make `llm`'s context again with flash attention off where it was asked for as
    "auto" and llama.cpp's `warnings` say a layer's device cannot run it (a GPU backend
    built without it, a head size it lacks). The cache was laid out for it by then (V not
    transposed), and attention without it copies and transposes the whole V cache at
    every layer for every token, slower than having asked for it off (llama.cpp's own
    default shares this). Made before any decode; returns whether it was made again."""
    import llama_cpp
    from llama_cpp import _internals

    params = llm.context_params
    if params.flash_attn_type != llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO:
        return False
    if not any(FLASH_ATTENTION_REFUSED in line for line in warnings):
        return False
    llm._ctx.close()  # its cache first, then the new one's
    params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    llm._ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
    return True


def eval_reusing_prefix(llm: Any, tokens: list[int]) -> int:
    """Evaluate `tokens` on `llm`, keeping the longest prefix its context already holds (at
    least the last token is evaluated, for its logits). Returns how many were."""
    import numpy as np

    if not tokens:
        raise BastionError("There is nothing to read: the prompt is empty.")
    cached = llm._input_ids
    common = min(len(cached), len(tokens))
    differ = np.flatnonzero(cached[:common] != np.asarray(tokens[:common], cached.dtype))
    keep = min(int(differ[0]) if differ.size else common, len(tokens) - 1)
    if not llm._ctx.kv_cache_seq_rm(-1, keep, -1):
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)  # a recurrent model: read it all
        keep = 0
    llm.n_tokens = keep
    read_prompt(llm, np.asarray(tokens[keep:], np.int32))
    return len(tokens) - keep


def read_prompt(llm: Any, tokens: Any) -> None:
    """Decode `tokens` (int32) after the `llm.n_tokens` its cache holds, in batches of
    `n_batch`, with the logits of the last token only; the token record follows.

    `Llama.eval` does the same, but fills each batch's five fields token by token in
    Python: 0.23 ms for 512 tokens on a 2-core machine, time a GPU waits for, the same for
    a small model's prompt as for a 7B's. A batch on the tokens' own buffer
    (`llama_batch_get_one`, as llama.cpp's llama-bench reads a prompt) takes llama.cpp's
    defaults for the rest: positions after the cache's last, sequence 0, an output for
    the last token. The logits are the same."""
    import llama_cpp

    decode = llama_cpp.llama_decode
    ctx = llm._ctx.ctx
    pointer = ctypes.POINTER(llama_cpp.llama_token)
    # The cache's last position is where the positions follow on: it must hold no more.
    llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
    for start in range(0, len(tokens), llm.n_batch):
        chunk = tokens[start : start + llm.n_batch]
        status = decode(
            ctx, llama_cpp.llama_batch_get_one(chunk.ctypes.data_as(pointer), len(chunk))
        )
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")
        llm.input_ids[llm.n_tokens : llm.n_tokens + len(chunk)] = chunk
        llm.n_tokens += len(chunk)


def sampled_tokens(llm: Any, sampler: Any) -> Iterator[int]:
    """The tokens `sampler` (a `LlamaSampler` from `llm._init_sampler`) draws after what
    `llm` has evaluated, each decoded when the next is asked for, as `Llama.generate`
    does: the caller stops when it has enough, and the last token is never decoded. The
    context's token record (`llm.input_ids`, `llm.n_tokens`) is kept, so the next request
    reuses the prefix. The caller keeps the total within the context."""
    import llama_cpp

    sample = llama_cpp.llama_sampler_sample
    decode = llama_cpp.llama_decode
    chain = sampler.sampler
    ctx = llm._ctx.ctx
    input_ids = llm.input_ids
    token = llama_cpp.llama_token(0)
    # One token, its position the sequence's next (llama.cpp reads it from the cache).
    batch = llama_cpp.llama_batch_get_one(ctypes.pointer(token), 1)
    while True:
        drawn = sample(chain, ctx, -1)
        yield drawn
        token.value = drawn
        status = decode(ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")
        input_ids[llm.n_tokens] = drawn
        llm.n_tokens += 1


def sampler_settings(params: SamplingParams) -> dict[str, Any]:
    """`Llama._init_sampler`'s arguments for a request: the sampler chain it builds."""
    settings: dict[str, Any] = {
        "top_k": params.top_k,
        "top_p": params.top_p,
        "min_p": params.min_p,
        "temp": params.temperature,
        "repeat_penalty": params.repeat_penalty,
        "frequency_penalty": params.frequency_penalty,
        "presence_penalty": params.presence_penalty,
    }
    if params.output_format is not None:
        settings["grammar"] = _grammar(params.output_format)
    return settings


def _grammar(output_format: str) -> Any:
    """llama.cpp's grammar for an output format: "json" for any JSON value, else the
    text of a JSON Schema."""
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    try:
        if output_format == "json":
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        return LlamaGrammar.from_json_schema(output_format, verbose=False)
    except Exception as error:  # the converter raises whatever the schema trips
        raise OutputFormatError(
            f"The JSON Schema in response_format cannot be enforced: {error}."
        ) from error
