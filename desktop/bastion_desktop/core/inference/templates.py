"""Turning a conversation into the prompt text a model expects.

The template embedded in the GGUF comes first. It is untrusted text from whoever made
the file, so it is rendered only in llama-cpp-python's sandboxed Jinja environment
(`ImmutableSandboxedEnvironment`: no attribute access to dunder internals, no mutation,
no file or module access). A template that fails to render, whether broken or hostile,
is replaced by the built-in one for the architecture, and the model facts say so.
Files without a template (the starter model has none) use the built-in one too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.inference.types import ChatMessage, Role

log = logging.getLogger(__name__)

# The least any chat template must render: one user message.
_PROBE = (ChatMessage(Role.USER, "Hello"),)


class ChatTemplateError(BastionError):
    """The model's own chat template rejected this conversation."""


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    stops: tuple[str, ...]
    starts_with_bos: bool


class ChatTemplate(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def source(self) -> str: ...

    def render(self, messages: Sequence[ChatMessage]) -> RenderedPrompt: ...


@dataclass(frozen=True)
class GemmaTurnTemplate:
    """Gemma's turn format. Gemma has no system role: the system prompt opens the first
    user turn, as Google's own template does."""

    source: str = "built-in for gemma (the file has no chat template)"
    name: str = "gemma"

    def render(self, messages: Sequence[ChatMessage]) -> RenderedPrompt:
        system = "\n\n".join(m.content for m in messages if m.role is Role.SYSTEM)
        parts: list[str] = []
        for message in messages:
            if message.role is Role.SYSTEM:
                continue
            content = message.content
            if system and message.role is Role.USER:
                content, system = f"{system}\n\n{content}", ""
            turn = "model" if message.role is Role.ASSISTANT else "user"
            parts.append(f"<start_of_turn>{turn}\n{content}<end_of_turn>\n")
        parts.append("<start_of_turn>model\n")
        return RenderedPrompt("".join(parts), ("<end_of_turn>",), starts_with_bos=False)


@dataclass(frozen=True)
class PlainTranscriptTemplate:
    """A neutral transcript for architectures Bastion has no built-in format for."""

    source: str = "built-in plain transcript (the file has no chat template)"
    name: str = "plain"

    def render(self, messages: Sequence[ChatMessage]) -> RenderedPrompt:
        lines: list[str] = []
        for message in messages:
            if message.role is Role.SYSTEM:
                lines.append(f"{message.content}\n")
            elif message.role is Role.USER:
                lines.append(f"User: {message.content}")
            else:
                lines.append(f"Assistant: {message.content}")
        lines.append("Assistant:")
        return RenderedPrompt("\n".join(lines), ("\nUser:",), starts_with_bos=False)


class EmbeddedTemplate:
    """The GGUF's `tokenizer.chat_template`, rendered in the Jinja sandbox."""

    name = "embedded"
    source = "embedded in the model file"

    def __init__(self, template: str, bos_token: str, eos_token: str) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._bos = bos_token
        self._formatter = Jinja2ChatFormatter(
            template=template, eos_token=eos_token, bos_token=bos_token
        )

    def render(self, messages: Sequence[ChatMessage]) -> RenderedPrompt:
        try:
            response = self._format(messages)
        except Exception as error:
            if not any(m.role is Role.SYSTEM for m in messages):
                raise ChatTemplateError(
                    f"The model's chat template rejected this conversation: {error}"
                ) from error
            # Many templates (Gemma's, older Mistral ones) refuse a system role: put the
            # system prompt at the head of the first user message instead.
            try:
                response = self._format(_fold_system(messages))
            except Exception as retry_error:
                raise ChatTemplateError(
                    f"The model's chat template rejected this conversation: {retry_error}"
                ) from retry_error
        stop = response.stop
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        text = str(response.prompt)
        return RenderedPrompt(
            text, tuple(s for s in stops if s), bool(self._bos) and text.startswith(self._bos)
        )

    def _format(self, messages: Sequence[ChatMessage]) -> Any:
        payload = [{"role": m.role.value, "content": m.content} for m in messages]
        return self._formatter(messages=cast(Any, payload))


def _fold_system(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    system = "\n\n".join(m.content for m in messages if m.role is Role.SYSTEM)
    folded: list[ChatMessage] = []
    for message in messages:
        if message.role is Role.SYSTEM:
            continue
        if system and message.role is Role.USER:
            folded.append(ChatMessage(Role.USER, f"{system}\n\n{message.content}"))
            system = ""
        else:
            folded.append(message)
    return folded


@dataclass(frozen=True)
class _Fallback:
    """A built-in template standing in for an embedded one that could not be used."""

    inner: GemmaTurnTemplate | PlainTranscriptTemplate
    source: str

    @property
    def name(self) -> str:
        return self.inner.name

    def render(self, messages: Sequence[ChatMessage]) -> RenderedPrompt:
        return self.inner.render(messages)


def builtin_template(architecture: str) -> GemmaTurnTemplate | PlainTranscriptTemplate:
    if architecture.startswith("gemma"):
        return GemmaTurnTemplate()
    return PlainTranscriptTemplate()


def choose_template(metadata: Mapping[str, str], bos_token: str, eos_token: str) -> ChatTemplate:
    architecture = metadata.get("general.architecture", "")
    embedded = metadata.get("tokenizer.chat_template")
    if not embedded:
        return builtin_template(architecture)
    try:
        template = EmbeddedTemplate(embedded, bos_token, eos_token)
        template.render(_PROBE)
    except Exception as error:
        # Broken or hostile: either way it does not run again. The reason is logged
        # without the template text, which may be large or crafted.
        reason = type(error).__name__
        log.warning("embedded chat template unusable (%s); using the built-in one", reason)
        fallback = builtin_template(architecture)
        return _Fallback(
            fallback, f"{fallback.name} built-in: the embedded template failed to render ({reason})"
        )
    return template
