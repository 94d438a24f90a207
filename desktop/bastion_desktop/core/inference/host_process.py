"""The model host's child side: the process that owns one `llama_cpp.Llama`.

It is started with the `spawn` method (the same on every OS, and what a frozen build
can re-execute), loads its model, then serves generate requests over a pipe until it
is told to stop or its parent goes away. A llama.cpp crash ends this process only.

Messages in:  ("generate", id, messages, params) | ("cancel", id) | ("shutdown",)
              ("hold", id) | ("go", id): wait between two tokens, then go on
              ("complete", id, prompt, max_tokens, stops): a raw prompt, greedy, whole
              ("score", id, prompt, answers): the first answer token's probabilities
Messages out: ("attempt", n_gpu_layers) ... then ("loaded", facts, RuntimeInfo)
              | ("load_failed", sentence)
              ("trimmed", id, PromptTrimmed) | ("text", id, str)
              ("done", id, prompt_tokens, generated_tokens, finish_reason, gpu_top_k,
               tokens_per_second_at_the_host, prompt_tokens_read, prompt_read_ms)
              ("completed", id, text, prompt_tokens, generated_tokens, finish_reason)
              ("scored", id, masses, prompt_tokens, evaluated_tokens)
              ("failed", id, error class name, sentence)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

from bastion_desktop.core.errors import (
    BastionError,
    ContextOverflowError,
    ModelLoadError,
)
from bastion_desktop.core.hub.probe import GpuInfo, HardwareProfile
from bastion_desktop.core.inference.backends import (
    DeviceType,
    LlamaLogTail,
    RuntimeDevice,
    RuntimeInfo,
    describe,
    load_backends,
    offload_devices,
)
from bastion_desktop.core.inference.gguf_file import check_gguf_header
from bastion_desktop.core.inference.hardware import physical_cores
from bastion_desktop.core.inference.host_text import (
    ControlSpellings,
    JudgePromptTokens,
    StopFilter,
    broken,
)
from bastion_desktop.core.inference.runtime_probe import Placement, default_gpus
from bastion_desktop.core.inference.templates import ChatTemplate, RenderedPrompt, choose_template
from bastion_desktop.core.inference.token_loop import (
    TokenPieces,
    context_settings,
    eval_reusing_prefix,
    sampled_tokens,
    sampler_settings,
    without_refused_flash_attention,
)
from bastion_desktop.core.inference.types import (
    ChatMessage,
    FinishReason,
    LoadOptions,
    ModelFacts,
    PromptTrimmed,
    Role,
    SamplingParams,
)
from bastion_desktop.core.privacy import apply_private_environment

log = logging.getLogger(__name__)

# llama.cpp's file_type numbers (enum llama_ftype) for the quantizations people meet.
_FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4",
}  # fmt: skip

# Tokens kept free for the reply when deciding whether the history fits.
MIN_REPLY_RESERVE = 16
# The best tokens a GPU keeps for the sampler (see LoadedModel.sample_from_gpu_top_k). A request
# with a top-k up to this is sampled exactly as from every logit; more, or none (0), or a
# grammar reads every logit.
GPU_TOP_K = 64


def _int(metadata: dict[str, str], key: str, default: int = 0) -> int:
    try:
        return int(metadata.get(key, default))
    except ValueError:
        return default


def requested_gpu_layers(options: LoadOptions, hardware: HardwareProfile, path: Path) -> int:
    """The n_gpu_layers to try first (-1 means every layer)."""
    if not hardware.gpu_offload_supported or options.gpu_layers == "none":
        return 0
    if options.gpu_layers == "auto":
        from bastion_desktop.core.hub.fit import auto_gpu_layers

        try:
            # What fits the free memory of the devices llama.cpp reports, from the
            # file's own shape.
            return auto_gpu_layers(path, options.context_length, hardware)
        except BastionError:
            return -1  # unreadable metadata: the load itself will say what is wrong
    return int(options.gpu_layers)


def hardware_from_runtime(
    runtime: RuntimeInfo, devices: Sequence[RuntimeDevice], supported: bool
) -> HardwareProfile:
    """The fit estimate's view of this machine from what the runtime loaded: the GPUs the
    model may use, with the free memory their backend reports now."""
    from bastion_desktop.core.hub.probe import system_memory

    current = {device.name: device for device in runtime.devices}
    gpus = tuple(
        GpuInfo(
            name=device.description or device.name,
            total_bytes=current.get(device.name, device).memory_total or None,
            free_bytes=current.get(device.name, device).memory_free or None,
            unified=device.type is DeviceType.IGPU,
            source="llama.cpp",
        )
        for device in devices
    )
    ram_total, ram_available = system_memory()
    return HardwareProfile(ram_total, ram_available, gpus, gpu_offload_supported=supported)


def gpu_layers_used(n_gpu_layers: int, layers: int) -> int:
    """How many layers end up on the GPU (the output layer counts as one more)."""
    return layers + 1 if n_gpu_layers < 0 else min(n_gpu_layers, layers + 1)


def _load_attempts(first: int, path: Path) -> list[int]:
    """`first`, then fewer layers down to none, for loads that run out of GPU memory."""
    if first == 0:
        return [0]
    from bastion_desktop.core.hub.fit import gpu_layer_attempts
    from bastion_desktop.core.hub.gguf_metadata import read_gguf_metadata

    try:
        layers = read_gguf_metadata(path).block_count or 0
    except BastionError:
        return [first]
    return gpu_layer_attempts(first, layers)


class Decoded(NamedTuple):
    """How a decode went: the tokens generated, why it ended, False when a shutdown
    arrived; the prompt tokens read (the rest were cached) and the time it took."""

    generated: int
    finish: FinishReason
    keep_running: bool
    prompt_tokens_read: int
    prompt_read_ms: float


class LoadedModel:
    # Sampling from the top k on the GPU (see sample_from_gpu_top_k): the sampler chain
    # attached to the context (None: none is; the context keeps none alive), whether the
    # backend refused it, and the second context that reads every logit, once one was
    # needed: (context, tokens it holds, their ids).
    _gpu_top_k_chain: Any = None
    _gpu_top_k_refused = False
    _every_logit_context: tuple[Any, int, Any] | None = None

    def __init__(
        self,
        path: Path,
        options: LoadOptions,
        conn: Connection | None = None,
        placement: Placement | None = None,
    ) -> None:
        import llama_cpp

        self._log = LlamaLogTail()
        check_gguf_header(path)
        placement, supported = self._load_runtime(placement or Placement())
        hardware = hardware_from_runtime(self.runtime, placement.devices, supported)
        threads = options.threads or physical_cores()
        first = requested_gpu_layers(options, hardware, path)
        self.gpu_note = ""
        # The placement's GPUs and no other (layers split across them, when more than
        # one), as its estimate and its sentence have it.
        names = [device.name for device in placement.devices] if supported else []
        llm = None
        for n_gpu_layers in _load_attempts(first, path):
            if conn is not None:
                # Some GPU backends abort the process when memory runs out instead of
                # failing the load: the app then knows what to retry without.
                conn.send(("attempt", n_gpu_layers))
            try:
                on_gpu = supported and n_gpu_layers != 0
                with (
                    offload_devices(names) as self._offload_devices,
                    context_settings(flash_attention_auto=on_gpu) as settings,
                ):
                    llm = llama_cpp.Llama(
                        model_path=str(path),
                        n_ctx=options.context_length,
                        n_gpu_layers=n_gpu_layers,
                        n_threads=threads,
                        verbose=False,
                        **settings,
                    )
                break
            except Exception as error:
                from bastion_desktop.core.hub.fit import is_gpu_memory_failure

                logged = " ".join(self._log.lines)
                if n_gpu_layers != 0 and is_gpu_memory_failure(f"{logged} {error}"):
                    self._log.lines.clear()
                    continue  # the GPU ran out of memory: try again with fewer layers
                from bastion_desktop.core.hub.gguf_metadata import why_incomplete

                reason = self._log.last_error() or str(error)
                raise ModelLoadError(
                    why_incomplete(path)
                    or f"llama.cpp could not load {path.name}: {reason}. The file may be "
                    "corrupt, incomplete, or made for a newer llama.cpp."
                ) from error
        if llm is None:
            raise ModelLoadError(f"{path.name} does not fit in GPU memory, even partly.")
        if n_gpu_layers != first:
            instead = (
                f"with {n_gpu_layers} layers on the GPU instead" if n_gpu_layers else "on the CPU"
            )
            tried = "every layer" if first < 0 else f"{first} layers"
            self.gpu_note = (
                f"The GPU ran out of memory with {tried} on it; the model was loaded {instead}."
            )
        if without_refused_flash_attention(llm, self._log.lines):
            log.info("flash attention: not on every layer's device, so off")
        self.llm = llm
        self._spelled = TokenPieces(llm._model.vocab, special=True)
        metadata: dict[str, str] = dict(llm.metadata)
        arch = metadata.get("general.architecture", "unknown")
        layers = _int(metadata, f"{arch}.block_count")
        gpu_layers = gpu_layers_used(n_gpu_layers, layers)
        bos = self._token_text(llm.token_bos())
        eos = self._token_text(llm.token_eos())
        self.template: ChatTemplate = choose_template(metadata, bos, eos)
        trained = _int(metadata, f"{arch}.context_length", llm.n_ctx())
        file_type = _int(metadata, "general.file_type", -1)
        self.facts = ModelFacts(
            path=path,
            architecture=arch,
            parameters=int(llama_cpp.llama_model_n_params(llm.model)),
            size_label=metadata.get("general.size_label", ""),
            quantization=_FILE_TYPES.get(file_type, f"type {file_type}"),
            # llama.cpp may round a small context up; llama-cpp-python's token buffer
            # keeps the size asked for, and a longer prompt would overflow it.
            context_length=min(llm.n_ctx(), len(llm.input_ids)),
            trained_context_length=trained,
            layers=layers,
            chat_template=self.template.name,
            chat_template_source=self.template.source,
            gpu_offload_supported=supported,
            gpu_layers=gpu_layers,
            file_size=path.stat().st_size,
            threads=threads,
            gpu_note=self.gpu_note,
            placement=placement.sentence(gpu_layers if supported else 0, layers),
            placement_worth_telling=placement.worth_telling,
        )
        self._add_bos = metadata.get("tokenizer.ggml.add_bos_token", "true") != "false"
        self._bos_text = bos
        self._read_vocabulary()

    def _read_vocabulary(self) -> None:
        """What the host reads from the vocabulary once, at load."""
        import llama_cpp

        llm = self.llm
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        control = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL  # turn markers, BOS, EOS

        def is_control(token: int) -> bool:
            return bool(llama_cpp.llama_vocab_get_attr(vocab, token) & control)

        self._is_control = is_control
        # Read once (50-90 ms for a vocabulary of 150-260k): a message is then searched
        # for them instead of tokenized, which cost a judge 1.3 ms a check.
        self._controls = ControlSpellings(
            self._token_text(t) for t in range(llm.n_vocab()) if is_control(t)
        )
        self._judge_prompts = JudgePromptTokens(llm)
        self._pieces = TokenPieces(vocab)
        self._answers: dict[tuple[tuple[str, ...], ...], list[frozenset[int]]] = {}

    def _load_runtime(self, placement: Placement) -> tuple[Placement, bool]:
        """Load llama.cpp's backends as `placement` says, before anything asks llama.cpp
        about devices: a distribution build has none until its modules are loaded (see
        backends.py). Returns the placement as it turned out, and whether layers can go
        to a GPU."""
        import llama_cpp

        modules = [placement.gpu_module] if placement.gpu_module else []
        self.runtime = load_backends(
            cpu_variant=placement.cpu_variant, gpu_modules=modules, log_tail=self._log
        )
        log.info("llama.cpp runtime: %s", describe(self.runtime))
        if self.runtime.gpu_failures:
            # The probe passed it, this process could not load it: run on the CPU.
            log.warning("GPU backend not loaded: %s", self.runtime.gpu_failures[0])
            placement = Placement(
                cpu_variant=placement.cpu_variant,
                reason=f"its GPU backend did not load ({self.runtime.gpu_failures[0]})",
            )
        supported = bool(llama_cpp.llama_supports_gpu_offload())
        if supported and not placement.devices and not placement.reason:
            # A backend built into the library (Metal): the devices it registered.
            placement = dataclasses.replace(placement, devices=default_gpus(self.runtime.devices))
        registered = {device.name for device in self.runtime.devices}
        if any(device.name not in registered for device in placement.devices):
            # The probe's child found it, this process does not (a GPU unplugged since).
            missing = next(d for d in placement.devices if d.name not in registered)
            log.warning(
                "GPU %s not found in the model host: %s", missing.name, describe(self.runtime)
            )
            placement = Placement(
                cpu_variant=placement.cpu_variant,
                reason=f"the GPU {missing.description or missing.name} was not found",
            )
        return placement, supported and bool(placement.devices)

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._spelled(token).decode("utf-8", errors="replace")

    def defuse(self, text: str) -> str:
        """`text` with every spelling of one of the model's control tokens broken by a
        zero-width space ("<end_of_turn>", "<|im_start|>" ...). Prompts are tokenized
        with special tokens parsed, which the template's own markers need; a marker
        typed or pasted in a message would otherwise end the user's turn and speak as
        the model. Only what the model reads changes, never what is stored or shown."""
        for spelled in self._controls.found_in(text):
            text = text.replace(spelled, broken(spelled))
        return text

    def raw_prompt(self, prompt: str) -> str:
        """A guard prompt with the conversation it quotes defused and its marks removed
        (see `bastion_guardrails.safety.quoting`)."""
        from bastion_guardrails.safety.quoting import split_quoted

        return "".join(
            self.defuse(text) if inside else text for text, inside in split_quoted(prompt)
        )

    def _defused(self, messages: Sequence[ChatMessage]) -> list[ChatMessage]:
        return [replace(m, content=self.defuse(m.content)) for m in messages]

    def _tokenize(self, prompt: RenderedPrompt) -> list[int]:
        add_bos = self._add_bos and not prompt.starts_with_bos
        return list(self.llm.tokenize(prompt.text.encode("utf-8"), add_bos=add_bos, special=True))

    def fit_prompt(
        self, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> tuple[list[int], RenderedPrompt, int]:
        """Render and tokenize, leaving out the oldest turns until the prompt leaves room
        for a reply. The system prompt and the newest message are never left out."""
        n_ctx = self.facts.context_length
        reserve = max(MIN_REPLY_RESERVE, min(params.max_tokens, n_ctx // 4))
        budget = n_ctx - reserve
        if params.raw_prompt:
            return self._fit_raw(messages[-1].content, budget, n_ctx, reserve)
        messages = self._defused(messages)
        system = [m for m in messages if m.role is Role.SYSTEM]
        turns = [m for m in messages if m.role is not Role.SYSTEM]
        dropped = 0
        while True:
            rendered = self.template.render([*system, *turns])
            tokens = self._tokenize(rendered)
            if len(tokens) <= budget:
                return tokens, rendered, dropped
            if len(turns) <= 1:
                break
            # Drop the oldest turn, then any assistant turns left leading the history,
            # so the kept part still opens with the user.
            turns.pop(0)
            dropped += 1
            while len(turns) > 1 and turns[0].role is Role.ASSISTANT:
                turns.pop(0)
                dropped += 1
        alone = len(self._tokenize(self.template.render(turns[-1:])))
        if system:
            raise ContextOverflowError(
                f"Your message and the system prompt take {len(tokens):,} tokens, but this "
                f"model's context holds {n_ctx:,} with {reserve:,} kept for the reply "
                f"(your message alone is {alone:,}). Shorten them, or raise the context length."
            )
        raise ContextOverflowError(
            f"Your message is {alone:,} tokens, but this model's context holds {n_ctx:,} with "
            f"{reserve:,} kept for the reply. Shorten it, or raise the context length in settings."
        )

    def _fit_raw(
        self, text: str, budget: int, n_ctx: int, reserve: int
    ) -> tuple[list[int], RenderedPrompt, int]:
        starts = bool(self._bos_text) and text.startswith(self._bos_text)
        rendered = RenderedPrompt(text, (), starts_with_bos=starts)
        tokens = self._tokenize(rendered)
        if len(tokens) > budget:
            raise ContextOverflowError(
                f"The prompt is {len(tokens):,} tokens, but this model's context holds "
                f"{n_ctx:,} with {reserve:,} kept for the completion. Shorten it."
            )
        return tokens, rendered, 0

    def generate(self, conn: Connection, request_id: int, payload: tuple[Any, ...]) -> bool:
        """Serve one request. Returns False when a shutdown arrived meanwhile."""
        messages, params = payload
        tokens, rendered, dropped = self.fit_prompt(messages, params)
        if dropped:
            trimmed = PromptTrimmed(dropped, len(tokens), self.facts.context_length)
            conn.send(("trimmed", request_id, trimmed))
        llm = self.llm
        llm.set_seed(random.getrandbits(32) if params.seed is None else params.seed)
        stops = tuple(s for s in (*params.stop, *rendered.stops) if s)
        max_new = min(params.max_tokens, self.facts.context_length - len(tokens))

        sent: list[float] = []  # when the first and the latest text left

        def send(ready: str) -> None:
            conn.send(("text", request_id, ready))
            now = time.perf_counter()
            sent[:] = [sent[0] if sent else now, now]

        sampling = sampler_settings(params)
        # Without a grammar, which must see every token. Greedy (temperature 0) too: the
        # best token is among the GPU's best.
        plain = params.output_format is None and 0 < params.top_k <= GPU_TOP_K
        on_gpu = plain and self._gpu_top_k_chain is not None
        with contextlib.nullcontext() if on_gpu else self._every_logit():
            if params.seed is not None:
                # Reusing the cached prompt prefix changes how the prompt is batched, and
                # so the logits in the last bits; a seeded reply must be reproducible, so
                # the context that serves it reads its whole prompt afresh.
                llm.reset()  # type: ignore[no-untyped-call]
            done = self._decode(conn, tokens, max_new, stops=stops, emit=send, sampling=sampling)
        gpu_top_k = GPU_TOP_K if on_gpu else 0
        # The decode speed as this process produced the text, before the pipe and the app.
        span = sent[1] - sent[0] if sent else 0.0
        rate = (done.generated - 1) / span if done.generated > 1 and span > 0 else 0.0
        counts = (len(tokens), done.generated, done.finish, gpu_top_k, rate)
        conn.send(("done", request_id, *counts, done.prompt_tokens_read, done.prompt_read_ms))
        return done.keep_running

    def sample_from_gpu_top_k(self) -> bool:
        """Have the GPU send the sampler its GPU_TOP_K best tokens instead of every
        token's logit, where the output layer is on the GPU. Whether it does.

        The sampler chain (penalties, top-k, top-p, min-p, temperature, the seeded draw)
        runs on the CPU over the logits it is given. Over all of Gemma 3's 262,144 it took
        2.9 ms a token on an H200 that decodes one in 1.1 ms (gpu_token_costs.py): most of
        a token's time. With a top-k in llama.cpp's own graph (its backend sampling) the
        same chain runs over the best GPU_TOP_K, which is exact for any top-k up to that
        (a repeat penalty can push a token below the 40th, and the 41st is still there),
        unless the penalty pushes all of them below the next one.

        The chat model's host attaches it as it loads, before its first decode, and it
        stays: detaching it crashed llama.cpp's next decode, and attaching it after
        decodes crashed one now and then (both seen on Mesa's lavapipe). Requests that
        need every logit go to a second context instead (_every_logit). Judges' hosts,
        which mostly score, never attach it."""
        if self._gpu_top_k_chain is not None:
            return True
        facts = self.facts
        if self._gpu_top_k_refused or not (
            facts.gpu_offload_supported and facts.gpu_layers > facts.layers
        ):
            return False  # the output layer is on the CPU: its logits are there already
        import llama_cpp

        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(GPU_TOP_K))
        if not llama_cpp.llama_set_sampler(self.llm._ctx.ctx, 0, chain):
            log.info("llama.cpp cannot keep the top tokens on this GPU: the CPU samples")
            llama_cpp.llama_sampler_free(chain)
            self._gpu_top_k_refused = True
            return False
        self._gpu_top_k_chain = chain
        return True

    @contextlib.contextmanager
    def _every_logit(self) -> Iterator[None]:
        """Serve a request that reads every token's logit (a score, a greedy completion,
        a grammar, a top-k over GPU_TOP_K). Where the GPU samples from its top tokens,
        on a second context of the same model, made on first use; it keeps its own
        cached prefix."""
        if self._gpu_top_k_chain is None:
            yield
            return
        import numpy as np

        llm = self.llm
        if self._every_logit_context is None:
            context = self._second_context()
            self._every_logit_context = (context, 0, np.ndarray(llm.input_ids.shape, np.intc))
        sampling_on_gpu = (llm._ctx, llm.n_tokens, llm.input_ids)
        llm._ctx, llm.n_tokens, llm.input_ids = self._every_logit_context
        try:
            yield
        finally:
            self._every_logit_context = (llm._ctx, llm.n_tokens, llm.input_ids)
            llm._ctx, llm.n_tokens, llm.input_ids = sampling_on_gpu

    def _second_context(self) -> Any:
        """A second context of the chat model for requests that read every logit. Its KV
        cache goes to the GPU beside the first one's where there is room; where there is
        not (the fit estimate leaves room for the chat's context alone), it is kept in
        RAM, with attention on the CPU and the layers' weights still on the GPU: slower
        for those requests, and the chat keeps every layer it was given."""
        import llama_cpp
        from llama_cpp import _internals

        llm = self.llm
        params = llm.context_params
        self._log.lines.clear()  # the reasons below are this attempt's
        try:
            return _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        except Exception:  # llama.cpp says no more than that it failed
            reason = self._log.last_error() or "no reason given"
            log.info("no room on the GPU for a second context (%s): its cache goes to RAM", reason)
        in_ram = llama_cpp.llama_context_params.from_buffer_copy(params)
        in_ram.offload_kqv = False
        # Attention on the CPU beside GPU layers: "auto" would find the devices differ.
        in_ram.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self._log.lines.clear()
        try:
            return _internals.LlamaContext(model=llm._model, params=in_ram, verbose=False)
        except Exception as error:
            reason = self._log.last_error() or str(error)
            raise BastionError(
                "This request reads every token's score, which needs a second context for "
                f"{self.facts.path.name}, and llama.cpp could not make one, on the GPU or "
                f"with its cache in RAM ({reason}). A top-k between 1 and {GPU_TOP_K} and no "
                "output format avoid it; so does a smaller context length."
            ) from error

    def _decode(
        self,
        conn: Connection,
        tokens: list[int],
        max_new: int,
        *,
        stops: tuple[str, ...],
        emit: Callable[[str], None],
        sampling: dict[str, Any],
    ) -> Decoded:
        """Generate after `tokens`, handing `emit` the text as it is cleared of stop
        strings; a cancel or shutdown from the app ends it between tokens, a hold makes
        it wait there for the next message (a go, a cancel)."""
        import llama_cpp

        llm = self.llm
        is_eog = llama_cpp.llama_vocab_is_eog
        vocab = llm._model.vocab
        pieces = self._pieces
        text = StopFilter(stops)
        generated = 0
        finish: FinishReason = "length"
        keep_running = True
        sampler = llm._init_sampler(**sampling)
        started = time.perf_counter()
        read = eval_reusing_prefix(llm, tokens)
        llama_cpp.llama_synchronize(llm._ctx.ctx)  # a GPU's decode returns before it ends
        read_ms = (time.perf_counter() - started) * 1000.0
        for token in sampled_tokens(llm, sampler):
            if is_eog(vocab, token):
                finish = "stop"
                break
            generated += 1
            ready = text.feed(pieces(token))
            if ready:
                emit(ready)
            if text.stopped:
                finish = "stop"
                break
            if generated >= max_new:
                break
            if conn.poll():
                message = conn.recv()
                while message[0] == "hold":  # the app's checks fell behind: wait for them
                    try:
                        message = conn.recv()
                    except (EOFError, OSError):  # the app went away while it waited
                        message = ("shutdown",)
                keep_running = message[0] != "shutdown"
                if message[0] in ("cancel", "shutdown"):
                    finish = "cancelled"
                    break
        rest = text.flush()
        if rest:
            emit(rest)
        return Decoded(generated, finish, keep_running, read, read_ms)

    def complete(self, conn: Connection, request_id: int, payload: tuple[Any, ...]) -> bool:
        """A raw prompt (its own special tokens, no chat template) decoded greedily, for
        guard models: the answer is sent whole. Returns False when a shutdown arrived."""
        prompt, max_tokens, stops = payload
        tokens = self._raw_tokens(prompt)
        n_ctx = self.facts.context_length
        if len(tokens) + max_tokens > n_ctx:
            raise ContextOverflowError(
                f"The text to check is {len(tokens):,} tokens, but this model's context holds "
                f"{n_ctx:,} with {max_tokens} kept for its answer."
            )
        parts: list[str] = []
        # temp=0 is llama.cpp's greedy sampler; the decode reuses the longest cached
        # prefix of the previous prompt, so prompts sharing a conversation are cheap.
        sampling = {"temp": 0.0, "repeat_penalty": 1.0}
        with self._every_logit():
            done = self._decode(
                conn,
                tokens,
                max_tokens,
                stops=tuple(s for s in stops if s),
                emit=parts.append,
                sampling=sampling,
            )
        text = "".join(parts)
        conn.send(("completed", request_id, text, len(tokens), done.generated, done.finish))
        return done.keep_running

    def score(self, conn: Connection, request_id: int, payload: tuple[Any, ...]) -> bool:
        """The probability the model gives each set of answers as its next token, after
        `prompt` (a raw prompt, or chat messages that go through the chat template with
        the assistant's turn opened): one forward pass, no sampling. A judge's verdict
        is read from these ("unsafe" against "safe"), not from the text it would write.

        `answers` holds one tuple of words per class ("safe", "Safe"); a class's mass
        is the summed probability of its words' first tokens. A first token that two
        classes share says nothing and counts for neither. The cached prefix of the
        previous prompt is reused, so a judge whose instructions come first pays only
        for the new text; the reply says how many tokens were evaluated."""
        import numpy as np

        prompt, answers = payload
        if isinstance(prompt, str):
            tokens = self._raw_tokens(prompt)
        else:
            rendered = self.template.render(self._defused(prompt))
            add_bos = self._add_bos and not rendered.starts_with_bos
            tokens = self._judge_tokens(rendered.text, add_bos)
        n_ctx = self.facts.context_length
        if len(tokens) + 1 > n_ctx:
            raise ContextOverflowError(
                f"The text to check is {len(tokens):,} tokens, but this model's context holds "
                f"{n_ctx:,}."
            )
        with self._every_logit():
            evaluated = eval_reusing_prefix(self.llm, tokens)
            llm = self.llm
            raw = llm._ctx.get_logits_ith(-1)
            # Read in place: the normalizer in float32 (the terms are at most 1), the
            # few answer tokens' logits in float64.
            logits = np.ctypeslib.as_array(raw, shape=(llm.n_vocab(),))
            top = float(logits.max())
            log_total = top + math.log(float(np.exp(logits - np.float32(top)).sum()))
            masses = tuple(
                float(np.exp(logits[sorted(ids)].astype(np.float64) - log_total).sum())
                if ids
                else 0.0
                for ids in self._answer_tokens(answers)
            )
        conn.send(("scored", request_id, masses, len(tokens), evaluated))
        return True

    def _raw_tokens(self, prompt: str) -> list[int]:
        prompt = self.raw_prompt(prompt)
        add_bos = self._add_bos and not (self._bos_text and prompt.startswith(self._bos_text))
        return self._judge_tokens(prompt, add_bos)

    def _judge_tokens(self, text: str, add_bos: bool) -> list[int]:
        """A judge's prompt tokenized, its fixed head tokenized once (JudgePromptTokens)."""
        return self._judge_prompts.tokens(text, add_bos)

    def _answer_tokens(self, answers: Sequence[Sequence[str]]) -> list[frozenset[int]]:
        key = tuple(tuple(words) for words in answers)
        known = self._answers.get(key)
        if known is None:
            firsts = [
                frozenset(
                    tokens[0]
                    for word in words
                    if (tokens := self.llm.tokenize(word.encode("utf-8"), add_bos=False))
                )
                for words in key
            ]
            known = [
                ids - frozenset().union(*(other for j, other in enumerate(firsts) if j != i))
                for i, ids in enumerate(firsts)
            ]
            self._answers[key] = known
        return known


# How much lower the model host runs than the app (POSIX nice increment). Windows'
# BELOW_NORMAL is a strict priority: the app's threads always run first. A nice level
# is only a share of the CPU: at 5 (a third of the app's weight) the window's thread
# still waited 2.5-4 ms (p90) for a core at each render while a reply streamed on 2
# cores; at 10 (a tenth) 0.4-0.7 ms.
HOST_NICENESS = 10
# A background host (a judge checking a reply while it streams) yields to the chat
# model's host as well. A nice level alone still gives it a share of a busy CPU (at 19
# a seventh of the chat host's weight: checks took a 0.5B model's reply on 2 cores to
# 0.85 of its speed), so on Linux it also takes the idle policy: it runs only on cores
# nothing else wants. With the chat model on a GPU, or cores to spare, checks keep pace
# with the reply; on a CPU the reply keeps busy they fall behind and catch up as it
# ends (Standard withdraws a reply flagged then; Strict shows text later). Windows'
# idle class already works that way; macOS keeps the nice level.
BACKGROUND_NICENESS = 19


def yield_to_the_app(background: bool = False) -> None:
    """Run this process below the app's priority. Decoding uses every core it is given;
    at equal priority the window's thread waits its turn behind the model's threads,
    and the window stutters while a reply streams. Lower, the model loses nothing when
    the machine is otherwise idle and gives way only for the moments the app works.
    Called before llama.cpp starts its threads: they inherit the calling thread's
    policy, which Linux keeps per thread."""
    try:
        if sys.platform == "win32":
            import ctypes

            below_normal, idle = 0x00004000, 0x00000040
            kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
            priority = idle if background else below_normal
            kernel32.SetPriorityClass(kernel32.GetCurrentProcess(), priority)
        else:
            os.nice(BACKGROUND_NICENESS if background else HOST_NICENESS)
            if background and hasattr(os, "SCHED_IDLE"):
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):  # a sandbox that refuses: run as it is
        log.info("the model host keeps the app's priority")


def run_host(
    conn: Connection,
    model_path: str,
    options: LoadOptions,
    placement: Placement | None = None,
    background: bool = False,
) -> None:
    """Entry point of the model host process."""
    # Interrupts are the app's to handle (see host._terminal_interrupts_blocked).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    apply_private_environment()
    yield_to_the_app(background)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, EOFError):  # app killed
        try:
            model = LoadedModel(Path(model_path), options, conn, placement)
            if not background:  # the chat model samples; a judge mostly scores
                model.sample_from_gpu_top_k()
        except Exception as error:
            why = f"Could not load {Path(model_path).name}: {error}"
            conn.send(("load_failed", str(error) if isinstance(error, BastionError) else why))
            return
        _serve(conn, model)


def _serve(conn: Connection, model: LoadedModel) -> None:
    conn.send(("loaded", model.facts, model.runtime))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the app went away
        if message[0] == "shutdown":
            return
        serve = {"generate": model.generate, "complete": model.complete, "score": model.score}
        if message[0] not in serve:
            continue  # a cancel for a request that already finished
        request_id = message[1]
        try:
            if not serve[message[0]](conn, request_id, message[2:]):
                return
        except BastionError as error:
            conn.send(("failed", request_id, type(error).__name__, str(error)))
