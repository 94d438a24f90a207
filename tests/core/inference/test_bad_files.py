"""Bad model files get a clear sentence, and the app — and the next good model — survive."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion_desktop.core.errors import (
    BastionError,
    ContextOverflowError,
    ModelLoadError,
    ModelNotFoundError,
)
from bastion_desktop.core.inference.host import ModelHost
from bastion_desktop.core.inference.types import (
    ChatMessage,
    GenerationFinished,
    LoadOptions,
    PromptTrimmed,
    Role,
    SamplingParams,
)

pytestmark = pytest.mark.model


def _truncated(starter: Path, target: Path) -> Path:
    with starter.open("rb") as source:
        target.write_bytes(source.read(3_000_000))  # whole header, most tensor data missing
    return target


def _last_bytes_missing(starter: Path, target: Path) -> Path:
    shutil.copyfile(starter, target)
    os.truncate(target, starter.stat().st_size - 64)  # the last tensor stops short
    return target


def _wrong_magic(starter: Path, target: Path) -> Path:
    with starter.open("rb") as source:
        target.write_bytes(b"GGML" + source.read(2_000_000)[4:])
    return target


def _random_bytes(_starter: Path, target: Path) -> Path:
    target.write_bytes(os.urandom(1_000_000))
    return target


def _empty(_starter: Path, target: Path) -> Path:
    target.write_bytes(b"")
    return target


def _directory(_starter: Path, target: Path) -> Path:
    target.mkdir()
    return target


def _header_only(_starter: Path, target: Path) -> Path:
    # A valid GGUF v3 header claiming tensors and metadata that are not there.
    target.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (5).to_bytes(8, "little") * 2)
    return target


def _future_version(starter: Path, target: Path) -> Path:
    with starter.open("rb") as source:
        data = bytearray(source.read(1_000_000))
    data[4:8] = (99).to_bytes(4, "little")
    target.write_bytes(bytes(data))
    return target


BAD_FILES: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "truncated": (_truncated, r"model\.gguf is cut short or damaged"),
    "last bytes missing": (_last_bytes_missing, r"is incomplete: .*get the file again\.$"),
    "wrong magic": (_wrong_magic, "not a GGUF model file"),
    "random bytes": (_random_bytes, "not a GGUF model file"),
    "empty": (_empty, r"is empty \(0 bytes\)"),
    "directory": (_directory, "is a folder, not a GGUF model file"),
    "header only": (_header_only, r"model\.gguf is damaged"),
    "future version": (_future_version, "GGUF version 99"),
}


@pytest.mark.parametrize("kind", BAD_FILES)
async def test_bad_file_gives_a_sentence_and_the_next_model_loads(
    kind: str, starter_path: Path, tmp_path: Path
) -> None:
    make, expected = BAD_FILES[kind]
    bad = await asyncio.to_thread(make, starter_path, tmp_path / "model.gguf")
    host = ModelHost(bad, LoadOptions(context_length=512))
    with pytest.raises(ModelLoadError, match=expected) as caught:
        await host.load()
    message = str(caught.value)
    assert "Traceback" not in message
    assert "\n" not in message
    assert not host.is_running
    good = ModelHost(starter_path, LoadOptions(context_length=512))
    try:
        facts = await good.load()
    finally:
        await good.close()
    assert facts.architecture == "gemma3"


async def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    host = ModelHost(tmp_path / "nowhere.gguf")
    with pytest.raises(ModelNotFoundError, match="No model file at"):
        await host.load()


@pytest.mark.blocks_loop("the test writes its GGUF file synchronously")
async def test_hostile_embedded_template_runs_nothing(
    gguf_with_template: Callable[[str], Path], tmp_path: Path
) -> None:
    marker = tmp_path / "escaped"
    hostile = (
        "{% for c in [].__class__.__base__.__subclasses__() %}"
        "{% if c.__name__ == 'catch_warnings' %}"
        f"{{{{ c()._module.__builtins__['__import__']('os').system('touch {marker}') }}}}"
        "{% endif %}{% endfor %}"
        f"{{{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}}}"
        "{{ messages[0]['content'] }}"
    )
    model = gguf_with_template(hostile)
    host = ModelHost(model, LoadOptions(context_length=512))
    try:
        facts = await host.load()
        finished = None
        params = SamplingParams(seed=2, max_tokens=8)
        async for event in host.stream([ChatMessage(Role.USER, "Hi")], params):
            if isinstance(event, GenerationFinished):
                finished = event
    finally:
        await host.close()
    assert not marker.exists(), "the embedded template ran code"
    assert facts.chat_template == "gemma"
    assert "embedded template failed to render" in facts.chat_template_source
    assert finished is not None
    assert finished.stats.generated_tokens > 0


@pytest.mark.blocks_loop("the test writes its GGUF file synchronously")
async def test_a_working_embedded_template_is_used(
    gguf_with_template: Callable[[str], Path],
) -> None:
    template = (
        "{{ bos_token }}{% for m in messages %}<start_of_turn>"
        "{{ 'model' if m['role'] == 'assistant' else 'user' }}\n{{ m['content'] }}"
        "<end_of_turn>\n{% endfor %}<start_of_turn>model\n"
    )
    host = ModelHost(gguf_with_template(template), LoadOptions(context_length=512))
    try:
        facts = await host.load()
        finished = None
        async for event in host.stream(
            [ChatMessage(Role.USER, "Hi")], SamplingParams(seed=2, max_tokens=4)
        ):
            if isinstance(event, GenerationFinished):
                finished = event
    finally:
        await host.close()
    assert facts.chat_template == "embedded"
    assert facts.chat_template_source == "embedded in the model file"
    assert finished is not None
    # "<bos>" written by the template is the BOS token itself, not doubled.
    assert finished.stats.prompt_tokens == 9


async def test_history_too_long_drops_the_oldest_turns(starter_path: Path) -> None:
    host = ModelHost(starter_path, LoadOptions(context_length=256))
    filler = "word " * 60
    history = [ChatMessage(Role.SYSTEM, "Be brief.")]
    for turn in range(6):
        history += [
            ChatMessage(Role.USER, f"Question {turn}: {filler}"),
            ChatMessage(Role.ASSISTANT, f"Answer {turn}: {filler}"),
        ]
    history.append(ChatMessage(Role.USER, "And now?"))
    events = []
    try:
        async for event in host.stream(history, SamplingParams(max_tokens=16, seed=1)):
            events.append(event)
    finally:
        await host.close()
    trimmed = events[0]
    assert isinstance(trimmed, PromptTrimmed)
    assert trimmed.dropped_messages >= 10
    assert trimmed.dropped_messages % 2 == 0, "turns are dropped in whole user/assistant pairs"
    assert trimmed.prompt_tokens <= 256 - 16
    assert isinstance(events[-1], GenerationFinished)


async def test_a_single_message_larger_than_the_context_is_refused(starter_path: Path) -> None:
    host = ModelHost(starter_path, LoadOptions(context_length=256))
    huge = [ChatMessage(Role.USER, "lighthouse " * 400)]
    try:
        with pytest.raises(BastionError, match=r"Your message is [\d,]+ tokens.*holds 256") as e:
            async for _ in host.stream(huge, SamplingParams(max_tokens=16)):
                pass
        # The host survives the refusal and answers the next message.
        async for event in host.stream(
            [ChatMessage(Role.USER, "Hi")], SamplingParams(max_tokens=4)
        ):
            last = event
    finally:
        await host.close()
    assert isinstance(e.value, ContextOverflowError)
    assert isinstance(last, GenerationFinished)
