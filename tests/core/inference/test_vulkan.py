"""A real GPU code path without a GPU: llama.cpp's Vulkan backend on Mesa's lavapipe.

lavapipe is Mesa's Vulkan driver that runs on the CPU (Debian's mesa-vulkan-drivers). It
is a conformant Vulkan 1.3 device, so the model host runs the same Vulkan module, shaders
and memory management it runs on an NVIDIA, AMD or Intel GPU. ggml-vulkan skips devices
of type CPU unless `GGML_VK_VISIBLE_DEVICES` names them, as llama.cpp's own CI does
(`.github/workflows/build-vulkan.yml`, ubuntu-llvmpipe); these tests set it. Without it
(every other test) the probe says Vulkan found no GPU and models run on the CPU.

A device whose memory runs short is lavapipe with ggml's largest buffer capped
(`GGML_VK_FORCE_MAX_BUFFER_SIZE`): allocations above it fail with Vulkan's own
ErrorOutOfDeviceMemory, the failure a small GPU gives, and the model host walks down.

Needs the Vulkan module in the runtime (`./dev` builds it where glslc is installed) and
lavapipe; skipped without them, and failed instead when BASTION_REQUIRE_GPU_BACKENDS=1
(as in CI), so that a runtime that lost its GPU backend cannot pass.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import signal
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import pytest

from bastion_desktop.core.errors import BastionError, ModelHostCrashedError
from bastion_desktop.core.inference.backends import gpu_module_folders
from bastion_desktop.core.inference.host import ModelHost, forget_gpu_failures
from bastion_desktop.core.inference.runtime_probe import (
    AUTO,
    CPU_ONLY,
    device_choices,
    forget_runtime_report,
    llama_lib_dir,
    runtime_report,
)
from bastion_desktop.core.inference.types import (
    ChatMessage,
    GenerationFinished,
    LoadOptions,
    ModelFacts,
    Role,
    SamplingParams,
)
from tests.core.inference.mid_reply import signal_mid_reply

pytestmark = pytest.mark.model

PROMPT = "The capital of France is"
TOKENS = 8
# Full offload of the starter needs a 65 MB weight buffer; 50 MB does not hold it.
SMALL_DEVICE_BUFFER = 50_000_000


def _require(condition: bool, why: str) -> None:
    if condition:
        return
    if os.environ.get("BASTION_REQUIRE_GPU_BACKENDS") == "1":
        pytest.fail(f"{why} (BASTION_REQUIRE_GPU_BACKENDS=1)")
    pytest.skip(why)


@pytest.fixture
def lavapipe(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """lavapipe visible to ggml-vulkan, in this process's probes and model hosts."""
    folder = llama_lib_dir()
    _require(
        folder is not None and "vulkan" in gpu_module_folders(folder),
        "the runtime has no Vulkan module (./dev builds it where glslc is installed)",
    )
    icds = list(Path("/usr/share/vulkan/icd.d").glob("lvp_icd*.json"))
    _require(bool(icds), "Mesa's lavapipe is not installed (apt install mesa-vulkan-drivers)")
    monkeypatch.setenv("GGML_VK_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("VK_ICD_FILENAMES", str(icds[0]))  # lavapipe alone, whatever else
    forget_runtime_report()
    yield
    forget_runtime_report()  # the next test probes without lavapipe again


async def _load_and_complete(starter: Path, options: LoadOptions) -> tuple[ModelFacts, str]:
    host = ModelHost(starter, options)
    try:
        facts = await host.load()
        answer = await host.complete(PROMPT, TOKENS)
        return facts, answer.text
    finally:
        await host.close()


def test_the_probe_finds_lavapipe_and_offers_it(lavapipe: None) -> None:
    report = runtime_report()
    vulkan = next(c for c in report.gpu_backends if c.flavour == "vulkan")
    assert vulkan.problem is None, vulkan
    assert vulkan.devices[0].description.startswith("llvmpipe")
    assert vulkan.devices[0].memory_free > 0
    values = [value for value, _ in device_choices(report)]
    assert values == [AUTO, vulkan.devices[0].description, CPU_ONLY]


def test_the_starter_runs_on_vulkan_and_answers_as_on_the_cpu(
    lavapipe: None, starter_path: Path
) -> None:
    on_gpu, gpu_text = asyncio.run(_load_and_complete(starter_path, LoadOptions(512)))
    assert on_gpu.runtime is not None
    assert "Vulkan" in on_gpu.runtime.backends
    assert on_gpu.gpu_offload_supported
    assert on_gpu.gpu_layers == on_gpu.layers + 1, "every layer and the output on Vulkan0"
    assert on_gpu.placement.startswith("Runs on llvmpipe"), on_gpu.placement
    assert on_gpu.placement.endswith("(Vulkan).")
    assert on_gpu.placement_worth_telling
    on_cpu, cpu_text = asyncio.run(
        _load_and_complete(starter_path, LoadOptions(512, device=CPU_ONLY))
    )
    assert on_cpu.gpu_layers == 0
    assert on_cpu.placement == "Runs on the CPU: CPU only is set in Settings."
    # Greedy decoding: the same first tokens (float sums in another order can part the
    # two a dozen tokens later, on a near tie).
    assert gpu_text == cpu_text
    assert gpu_text.strip()


async def _reply(host: ModelHost, params: SamplingParams) -> GenerationFinished:
    finished = None
    async for event in host.stream([ChatMessage(Role.USER, "Name a colour.")], params):
        if isinstance(event, GenerationFinished):
            finished = event
    assert finished is not None
    return finished


def test_a_reply_on_the_gpu_samples_from_the_top_tokens_the_gpu_keeps(
    lavapipe: None, starter_path: Path
) -> None:
    """A sampled reply's sampler runs over the best tokens the GPU sends (llama.cpp's
    backend top-k), not over all 262,144 logits; a greedy completion, a request for every
    token (top_k 0) and a grammar read every logit, on a second context, and the seeded
    reply is the same after them."""
    seeded = SamplingParams(seed=3, max_tokens=6)
    json_only = SamplingParams(seed=3, max_tokens=6, output_format="json")

    async def run() -> tuple[str, str, list[GenerationFinished]]:
        host = ModelHost(starter_path, LoadOptions(512))
        try:
            await host.load()
            greedy_before = (await host.complete(PROMPT, 3)).text
            # A greedy reply takes the best of the GPU's best tokens.
            greedy_reply = await _reply(host, SamplingParams(temperature=0.0, max_tokens=2))
            assert greedy_reply.stats.gpu_top_k == 64
            first = await _reply(host, seeded)
            greedy_after = (await host.complete(PROMPT, 3)).text
            every_token = await _reply(host, SamplingParams(seed=3, max_tokens=6, top_k=0))
            grammar = await _reply(host, json_only)
            again = await _reply(host, seeded)
            return greedy_before, greedy_after, [first, every_token, grammar, again]
        finally:
            await host.close()

    greedy_before, greedy_after, (first, every_token, grammar, again) = asyncio.run(run())
    assert first.stats.gpu_top_k == 64
    assert first.stats.generated_tokens > 0
    assert greedy_after == greedy_before  # the second context reads the same logits
    assert greedy_before.strip()
    assert every_token.stats.gpu_top_k == 0
    assert every_token.stats.generated_tokens > 0
    assert grammar.stats.gpu_top_k == 0
    assert grammar.text.strip()
    assert again.stats.gpu_top_k == 64
    assert again.text == first.text


def test_a_device_short_of_memory_walks_down_to_a_partial_offload(
    lavapipe: None, starter_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GGML_VK_FORCE_MAX_BUFFER_SIZE", str(SMALL_DEVICE_BUFFER))
    name = runtime_report().usable_gpus()[0][1].description
    # By name: the path that pins one GPU (main_gpu, no split) runs too.
    facts, text = asyncio.run(_load_and_complete(starter_path, LoadOptions(512, device=name)))
    assert 0 < facts.gpu_layers < facts.layers + 1, facts
    assert facts.gpu_note == (
        "The GPU ran out of memory with every layer on it; the model was loaded with "
        f"{facts.gpu_layers} layers on the GPU instead."
    )
    assert facts.placement == (
        f"Runs partly on {name} (Vulkan): {facts.gpu_layers} of {facts.layers + 1} layers, "
        "the rest on the CPU."
    )
    assert text.strip()


def _devices_llama_cpp_used(conn: Connection, starter: str, device: str) -> None:
    """In a process of its own: load the starter as the model host does with the device
    setting `device`, and send the devices llama.cpp says it used, where it put the
    model's weights, the placement sentence and a short greedy completion."""
    import ctypes

    import llama_cpp

    from bastion_desktop.core.inference import host_process
    from bastion_desktop.core.inference.backends import LlamaLogTail
    from bastion_desktop.core.inference.host import placement_for

    lines: list[str] = []

    class EveryLine(LlamaLogTail):  # the host's own log tail, and every line besides
        def __init__(self) -> None:
            super().__init__()
            kept = self._callback

            @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
            def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
                lines.append(text.decode("utf-8", errors="replace"))
                kept(level, text, user_data)

            self._callback = callback
            llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))

    host_process.LlamaLogTail = EveryLine  # type: ignore[misc]
    options = LoadOptions(512, device=device)
    model = host_process.LoadedModel(Path(starter), options, None, placement_for(options))
    text = model.llm.create_completion(PROMPT, max_tokens=TOKENS, temperature=0.0)["choices"]
    text_line = "".join(lines)
    used = re.findall(r"using device (\w+)", text_line)
    weights = sorted(set(re.findall(r"(Vulkan\d) model buffer size", text_line)))
    conn.send((used, weights, model.facts.placement, text[0]["text"]))
    conn.close()
    os._exit(0)


def test_the_model_host_gives_llama_cpp_the_gpus_its_placement_names(
    lavapipe: None, starter_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two Vulkan devices (lavapipe twice: ggml-vulkan takes the indices it is given):
    the GPU chosen in Settings runs the model alone, and Automatic splits the layers
    across both, as the placement says; llama.cpp's own log is the witness."""
    monkeypatch.setenv("GGML_VK_VISIBLE_DEVICES", "0,0")
    forget_runtime_report()
    names = [device.name for _, device in runtime_report().usable_gpus()]
    assert names == ["Vulkan0", "Vulkan1"]
    (used, weights, placement, second), _ = _apart(
        _devices_llama_cpp_used, str(starter_path), "Vulkan1"
    )
    assert (used, weights) == (["Vulkan1"], ["Vulkan1"])
    assert placement.startswith("Runs on llvmpipe"), placement
    assert placement.count("llvmpipe") == 1, placement
    (used, weights, placement, both), _ = _apart(_devices_llama_cpp_used, str(starter_path), AUTO)
    assert (used, weights) == (["Vulkan0", "Vulkan1"], ["Vulkan0", "Vulkan1"])
    assert placement.startswith("Runs on 2x llvmpipe"), placement
    assert second.strip()
    assert both == second, "the same greedy tokens, wherever the layers are"


def _load_on_a_gpu_gone_since_the_probe(conn: Connection, starter: str) -> None:
    import dataclasses

    from bastion_desktop.core.inference.host import placement_for
    from bastion_desktop.core.inference.host_process import LoadedModel

    options = LoadOptions(512)
    planned = placement_for(options)
    gone = dataclasses.replace(planned.devices[0], name="Vulkan7")  # unplugged since
    model = LoadedModel(Path(starter), options, None, dataclasses.replace(planned, devices=(gone,)))
    conn.send((model.facts.placement, model.facts.gpu_layers))
    conn.close()
    os._exit(0)


def test_a_gpu_the_model_host_no_longer_finds_leaves_the_model_on_the_cpu(
    lavapipe: None, starter_path: Path
) -> None:
    (placement, gpu_layers), _ = _apart(_load_on_a_gpu_gone_since_the_probe, str(starter_path))
    assert gpu_layers == 0
    assert placement.startswith("Runs on the CPU: the GPU llvmpipe"), placement
    assert placement.endswith(" was not found."), placement


@pytest.mark.log_warnings("the model host's end is logged as a warning")
def test_a_model_that_stops_on_the_gpu_says_the_cpu_is_the_way_round_it(
    lavapipe: None, starter_path: Path
) -> None:
    """A GPU driver that fails on a model ends the model host at every restart (here
    the host is killed mid-reply, as a lost device would end it)."""

    async def run() -> str:
        host = ModelHost(starter_path, LoadOptions(512))
        try:
            facts = await host.load()
            assert facts.gpu_layers > 0
            with pytest.raises(ModelHostCrashedError) as stopped:
                await signal_mid_reply(host, signal.SIGKILL)
            return str(stopped.value)
        finally:
            await host.close()

    message = asyncio.run(run())
    assert message.startswith("The model stopped unexpectedly (it was ended by SIGKILL)")
    assert message.endswith(
        "If it stops again, choose CPU only in Settings → Model: the GPU's driver may be at fault."
    )


@pytest.mark.log_warnings("the crash on the GPU is logged as a warning")
def test_a_model_that_crashes_on_the_gpu_runs_on_the_cpu_until_its_settings_change(
    lavapipe: None, starter_path: Path
) -> None:
    """A crash or an abort mid-reply with layers on the GPU (a lost device makes ggml
    abort): the next loads of that file keep it on the CPU, in this host and in any
    other (a judge's), and say so. No driver can be made to fail here on demand:
    SIGABRT, sent to the host mid-reply, stands in for it."""

    async def answer(host: ModelHost) -> str:
        finished = None
        params = SamplingParams(temperature=0.0, seed=3, max_tokens=TOKENS)
        async for event in host.stream([ChatMessage(Role.USER, PROMPT)], params):
            if isinstance(event, GenerationFinished):
                finished = event
        assert finished is not None
        return finished.text

    async def run() -> tuple[str, ModelFacts, str, ModelFacts, ModelFacts]:
        host = ModelHost(starter_path, LoadOptions(512))
        judge = ModelHost(starter_path, LoadOptions(512), background=True)
        try:
            assert (await host.load()).gpu_layers > 0
            with pytest.raises(ModelHostCrashedError) as stopped:
                await signal_mid_reply(host, signal.SIGABRT)
            text = await answer(host)
            on_cpu = host.facts
            assert on_cpu is not None
            assert (await host.load()) is on_cpu, "loaded: not loaded again"
            judge_facts = await judge.load()
            host.options = LoadOptions(512, threads=1)  # Settings saved
            return str(stopped.value), on_cpu, text, judge_facts, await host.load()
        finally:
            await host.close()
            await judge.close()
            forget_gpu_failures()

    message, on_cpu, text, judge, again = asyncio.run(run())
    assert message.startswith("The model stopped unexpectedly (it was ended by SIGABRT).")
    assert message.endswith(
        "The GPU's driver may be at fault, so it restarts on the CPU (slower) until Bastion "
        "starts again or its load settings change (Settings → Model)."
    )
    assert on_cpu.gpu_layers == 0
    assert on_cpu.gpu_note == (
        "The model stopped on the GPU (it was ended by SIGABRT), so it runs on the CPU until "
        "Bastion starts again or its load settings change (Settings → Model)."
    )
    assert text, "it answers on the CPU"
    assert judge.gpu_layers == 0, "a judge's host of the same file keeps off the GPU too"
    assert again.gpu_layers > 0, "other settings: the GPU gets another chance"
    assert not again.gpu_note


def _every_logit_request_with_no_room_on_the_gpu(conn: Connection, starter: str) -> None:
    """In a process of its own (the Vulkan backend stays registered in a process that
    loaded it): the chat model on lavapipe, its GPU top-k attached, then llama.cpp
    refusing any context whose cache would go to the GPU, as a GPU out of memory does
    (llama_init_from_model returns NULL). lavapipe's memory is the machine's, so that
    refusal is the one part made up."""
    import llama_cpp.llama_cpp as bindings  # what llama-cpp-python's context calls

    from bastion_desktop.core.inference.host import placement_for
    from bastion_desktop.core.inference.host_process import LoadedModel

    options = LoadOptions(512, gpu_layers=-1)
    model = LoadedModel(Path(starter), options, None, placement_for(options))
    assert model.sample_from_gpu_top_k()
    # Layers on the GPU: flash attention as llama.cpp's default has it (on where every
    # layer's device runs it), and room for one output a batch.
    assert model.llm.context_params.flash_attn_type == bindings.LLAMA_FLASH_ATTN_TYPE_AUTO
    assert model.llm.context_params.n_outputs_max == 1
    real = bindings.llama_init_from_model

    def short_of_memory(llama_model: Any, params: Any) -> Any:
        return None if params.offload_kqv else real(llama_model, params)

    bindings.llama_init_from_model = short_of_memory
    replies, kept = [], []
    for top_k in (40, 0, 40):  # the GPU's top tokens, every logit, the GPU's again
        pipe = _Pipe()
        params = SamplingParams(seed=3, max_tokens=6, top_k=top_k)
        try:
            request = ([ChatMessage(Role.USER, "Name a colour.")], params)
            model.generate(cast(Connection, pipe), 1, request)
        except BastionError as error:  # as run_host reports it
            pipe.send(("failed", 1, type(error).__name__, str(error)))
        replies.append(pipe.messages)
        kept.append(model.llm.n_tokens)  # what the chat's own context holds
    context = model._every_logit_context
    conn.send((replies, kept, context is not None and bool(context[0].params.offload_kqv)))
    conn.close()
    os._exit(0)  # freeing a context on lavapipe after raw decodes has crashed


def _apart(target: Callable[..., None], *args: Any) -> tuple[Any, int | None]:
    """`target(conn, *args)` in a spawned process of its own: what it sent, and its exit
    code. The process is reaped (killed if it hangs) before this returns."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=target, args=(theirs, *args))
    child.start()
    theirs.close()
    try:
        assert ours.poll(240), f"no answer from {target.__name__}"
        result = ours.recv()
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
            child.join()
    return result, child.exitcode


class _Pipe:
    def __init__(self) -> None:
        self.messages: list[tuple[Any, ...]] = []

    def send(self, message: tuple[Any, ...]) -> None:
        self.messages.append(message)

    def poll(self) -> bool:
        return False


def test_a_request_for_every_logit_without_room_on_the_gpu_keeps_its_cache_in_ram(
    lavapipe: None, starter_path: Path
) -> None:
    """The second context that reads every logit is made on first use, after the fit
    estimate gave the chat's context the GPU's memory: where the GPU cannot hold a second
    cache, it goes to RAM and the request is answered, instead of failing."""
    (replies, kept, cache_on_gpu), exitcode = _apart(
        _every_logit_request_with_no_room_on_the_gpu, str(starter_path)
    )
    assert exitcode == 0
    done = [next(m for m in reply if m[0] in ("done", "failed")) for reply in replies]
    assert [d[0] for d in done] == ["done", "done", "done"], done
    assert [d[5] for d in done] == [64, 0, 64]  # gpu_top_k: the GPU's, every logit, the GPU's
    assert all(d[3] > 0 for d in done)
    assert not cache_on_gpu
    texts = ["".join(m[2] for m in reply if m[0] == "text") for reply in replies]
    assert texts[0] == texts[2]
    # The seeded request for every logit read its prompt afresh on the second context,
    # and the chat's context kept its prompt and reply (all but the last token) for the
    # next turn.
    prompt_tokens, generated = done[0][2], done[0][3]
    assert kept == [prompt_tokens + generated - 1] * 3


def _load_with_a_head_size_vulkan_cannot_attend(conn: Connection, model: str) -> None:
    """In a process of its own: a model on lavapipe whose attention heads are 36 wide
    (ggml-vulkan's flash attention takes multiples of 8), through the model host's load."""
    from bastion_desktop.core.inference.host import placement_for
    from bastion_desktop.core.inference.host_process import LoadedModel

    options = LoadOptions(1024, gpu_layers=-1)
    loaded = LoadedModel(Path(model), options, None, placement_for(options))
    pipe = _Pipe()
    params = SamplingParams(temperature=0.0, max_tokens=6)
    loaded.generate(cast(Connection, pipe), 1, ([ChatMessage(Role.USER, "abc")], params))
    refused = [line for line in loaded._log.lines if "Flash Attention" in line]
    facts = loaded.facts
    conn.send((loaded.llm.context_params.flash_attn_type, refused, pipe.messages, facts))
    conn.close()
    os._exit(0)


def test_flash_attention_a_gpu_cannot_run_is_turned_off_not_left_half_on(
    lavapipe: None, tmp_path: Path
) -> None:
    """llama.cpp's "auto" lays the cache out for flash attention before it finds that a
    layer's device cannot run it; attention without it then copies the whole V cache at
    every layer for every token. The model host makes the context again with it off."""
    import gguf

    bench_gpu = _bench_gpu()
    odd = bench_gpu.Shape(
        "odd-heads", layers=2, hidden=288, ffn=768, heads=8, kv_heads=8, vocab=4096, context=2048
    )
    model = tmp_path / "odd-heads.gguf"
    bench_gpu.write_random_gguf(gguf, model, odd, "f16", 1)
    (flash_attention, refused, messages, facts), _ = _apart(
        _load_with_a_head_size_vulkan_cannot_attend, str(model)
    )
    assert facts.gpu_layers == facts.layers + 1, "every layer on Vulkan"
    assert any("Flash Attention not supported, set to disabled" in line for line in refused)
    assert flash_attention == 0, "made again with flash attention off"
    done = next(m for m in messages if m[0] in ("done", "failed"))
    assert done[0] == "done"
    assert done[3] == 6


def _bench_gpu() -> Any:
    """benchmarks/bench_gpu.py, for its random-weight GGUF writer."""
    import importlib
    import sys

    folder = str(Path(__file__).resolve().parents[3] / "benchmarks")
    sys.path.insert(0, folder)
    try:
        return importlib.import_module("bench_gpu")
    finally:
        sys.path.remove(folder)
