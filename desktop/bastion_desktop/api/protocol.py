"""OpenAI's wire format, both ways: a request body read into Bastion's terms (or an
`ApiError` saying what is wrong with it), and Bastion's events written back as OpenAI
objects and stream chunks.

What clients are known to do decides the shapes (see docs/local-api.md): a block is a
normal completion with `finish_reason: "content_filter"` and the reason in both
`content` and `refusal`, so a simple client shows why instead of an empty bubble and
the `openai` package never raises and loses the text already shown; an error is
`{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from bastion_desktop.core.inference.types import Role, SamplingParams

# Limits on what one request may ask for.
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_MESSAGES = 512
MAX_TOKENS_LIMIT = 32_768
MAX_STOP_SEQUENCES = 8
MAX_TOP_K = 1_000_000  # past any vocabulary: the whole of it


@dataclass
class ApiError(Exception):
    """An HTTP error in OpenAI's shape; `headers` adds e.g. Retry-After."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


@dataclass(frozen=True)
class RequestMessage:
    """One message of a request, as the model will see it (tool results are given to
    the model as the user's, labelled)."""

    role: Role
    content: str


@dataclass(frozen=True)
class ChatRequest:
    model: str | None
    system: str  # every system and developer message, in order
    messages: tuple[RequestMessage, ...]  # the rest; the last one is the user's
    params: SamplingParams
    stream: bool
    include_usage: bool
    profile: str | None  # the guardrail profile the client asks for, if any


def _text_of(content: Any, where: str) -> str:
    """A message's text: a string, or a list of text parts (images are refused)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in ("text", "input_text"):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise invalid(
                    f"{where}.content[{index}] is of type {kind!r}; Bastion's local models "
                    "read text only.",
                    param=f"{where}.content",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid(f"{where}.content[{index}].text must be a string.", where)
            parts.append(text)
        return "\n".join(parts)
    raise invalid(f"{where}.content must be a string or a list of text parts.", where)


def _messages(raw: Any) -> tuple[str, tuple[RequestMessage, ...]]:
    if not isinstance(raw, list) or not raw:
        raise invalid("messages must be a non-empty list.", "messages")
    if len(raw) > MAX_MESSAGES:
        raise invalid(f"At most {MAX_MESSAGES} messages per request.", "messages")
    system: list[str] = []
    turns: list[RequestMessage] = []
    for index, message in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise invalid(f"{where} must be an object.", where)
        role = message.get("role")
        text = _text_of(message.get("content"), where)
        if role in ("system", "developer"):
            if text:
                system.append(text)
        elif role == "user":
            turns.append(RequestMessage(Role.USER, text))
        elif role == "assistant":
            calls = message.get("tool_calls")
            if calls:
                text = "\n".join(filter(None, (text, "Tool calls: " + json.dumps(calls))))
            turns.append(RequestMessage(Role.ASSISTANT, text))
        elif role in ("tool", "function"):
            label = message.get("tool_call_id") or message.get("name") or "tool"
            turns.append(RequestMessage(Role.USER, f"Result of {label}:\n{text}"))
        else:
            raise invalid(
                f"{where}.role {role!r} is not one of system, developer, user, assistant, tool.",
                f"{where}.role",
            )
    if not turns or turns[-1].role is not Role.USER:
        raise invalid(
            "The last message must be the user's (or a tool's result): Bastion answers it.",
            "messages",
        )
    return "\n\n".join(system), tuple(turns)


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid(f"{name} must be a number.", name)
    if not low <= value <= high:
        raise invalid(f"{name} must be from {low:g} to {high:g}, not {value:g}.", name)
    return float(value)


def _integer(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{name} must be a whole number.", name)
    if not low <= value <= high:
        raise invalid(f"{name} must be from {low} to {high}, not {value}.", name)
    return value


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise invalid("stop must be a string or a list of strings.", "stop")
    stops = [stop for stop in stops if stop]  # "" stops nothing (some clients send it)
    if len(stops) > MAX_STOP_SEQUENCES:
        raise invalid(f"At most {MAX_STOP_SEQUENCES} stop sequences.", "stop")
    return tuple(stops)


def _output_format(value: Any) -> str | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise invalid(
                "response_format.json_schema.schema must be a JSON Schema object.",
                "response_format",
            )
        return json.dumps(schema)
    raise invalid(
        "response_format.type must be text, json_object or json_schema.", "response_format"
    )


def _unsupported(body: dict[str, Any]) -> None:
    """Refuse what would silently do something else than the client asked."""
    if (body.get("n") or 1) != 1:
        raise invalid("n must be 1: Bastion writes one reply per request.", "n")
    if body.get("tools") or body.get("functions"):
        raise invalid(
            "Bastion's local API does not call tools: send the request without tools.",
            "tools",
            code="tools_not_supported",
        )
    if body.get("logprobs") or body.get("echo"):
        raise invalid("logprobs and echo are not supported.", "logprobs")


def _requested_profile(body: dict[str, Any]) -> str | None:
    extra = body.get("bastion")
    if extra is None:
        return None
    if not isinstance(extra, dict):
        raise invalid('bastion must be an object, e.g. {"profile": "strict"}.', "bastion")
    profile = extra.get("profile")
    if profile is not None and (not isinstance(profile, str) or not profile.strip()):
        raise invalid("bastion.profile must be a profile id.", "bastion.profile")
    return profile.strip() if profile else None


def sampling_from(body: dict[str, Any], defaults: SamplingParams) -> SamplingParams:
    """The sampling a request asks for, over the user's settings."""
    asked: dict[str, Any] = {
        "temperature": _number(body, "temperature", 0.0, 2.0),
        "top_p": _number(body, "top_p", 0.0, 1.0),
        "frequency_penalty": _number(body, "frequency_penalty", -2.0, 2.0),
        "presence_penalty": _number(body, "presence_penalty", -2.0, 2.0),
        # llama.cpp's and Ollama's samplers, which Open WebUI and others send too.
        "top_k": _integer(body, "top_k", 0, MAX_TOP_K),
        "min_p": _number(body, "min_p", 0.0, 1.0),
        "repeat_penalty": _number(body, "repeat_penalty", 0.0, 10.0),
        "seed": None if body.get("seed") == -1 else _integer(body, "seed", 0, 2**32 - 1),
        "max_tokens": _integer(
            body,
            "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens",
            1,
            MAX_TOKENS_LIMIT,
        ),
        "output_format": _output_format(body.get("response_format")),
    }
    stops = _stops(body.get("stop"))
    # seed -1 is llama.cpp's "random": the settings' seed is not used either.
    chosen = {name: value for name, value in asked.items() if value is not None}
    if body.get("seed") == -1:
        chosen["seed"] = None
    return SamplingParams(**{**defaults.__dict__, "stop": stops, "output_format": None, **chosen})


def _model(body: dict[str, Any]) -> str | None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise invalid("model must be a string.", "model")
    return model or None


def _stream_options(body: dict[str, Any], stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise invalid("stream_options must be an object.", "stream_options")
    if not stream:
        raise invalid("stream_options is only for streamed requests.", "stream_options")
    return bool(options.get("include_usage"))


def chat_request(body: Any, defaults: SamplingParams) -> ChatRequest:
    """A /v1/chat/completions body read, or ApiError(400) naming what is wrong."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    _unsupported(body)
    stream = bool(body.get("stream", False))
    system, messages = _messages(body.get("messages"))
    return ChatRequest(
        model=_model(body),
        system=system,
        messages=messages,
        params=sampling_from(body, defaults),
        stream=stream,
        include_usage=_stream_options(body, stream),
        profile=_requested_profile(body),
    )


def completion_request(body: Any, defaults: SamplingParams) -> ChatRequest:
    """A /v1/completions body: its prompt is continued as it is (no chat template), and
    goes through the input rails like any message."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    _unsupported(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise invalid("prompt must be a non-empty string.", "prompt")
    if body.get("suffix"):
        raise invalid("suffix is not supported.", "suffix")
    stream = bool(body.get("stream", False))
    params = dataclasses.replace(sampling_from(body, defaults), raw_prompt=True)
    return ChatRequest(
        model=_model(body),
        system="",
        messages=(RequestMessage(Role.USER, prompt),),
        params=params,
        stream=stream,
        include_usage=_stream_options(body, stream),
        profile=_requested_profile(body),
    )


# -- responses ---------------------------------------------------------------------------


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
