"""The local API's HTTP server: OpenAI's endpoints on 127.0.0.1 (and ::1), on the
asyncio loop that runs the chat, with the profile's guardrails on every request.

Every request is checked in this order before anything else happens, and a refusal
never starts a model:

1. `Host` is localhost, 127.0.0.1 or [::1] with this server's port (a web page that
   re-points its own domain at 127.0.0.1, "DNS rebinding", sends its own host name);
   an empty Host is refused too.
2. An `Origin` (a web page, or a browser extension) must be on the allow-list the user
   or administrator set; `null` never is, and no other origin is ever echoed back.
3. `Authorization: Bearer <token>` names a client (`/health` alone, which says nothing
   but "ok", needs none).
4. A POST body is `application/json`: a web page may send `text/plain` to 127.0.0.1
   without asking the browser first, but never JSON.
5. Limits: the body's size, the messages, `max_tokens`, and each client's requests in
   progress (more get 429 with Retry-After).

There is no endpoint that downloads, deletes or reads a file. A client that disconnects
stops its request, whether streamed or not: its model stops, and the next request does
not wait for a reply nobody reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bastion_desktop.api.protocol import (
    MAX_BODY_BYTES,
    ApiError,
    ChatRequest,
    chat_request,
    completion_request,
    now,
    usage,
)
from bastion_desktop.api.service import ApiEvent, ApiService, Waited
from bastion_desktop.api.tokens import ApiClient, ApiTokens, TokenError
from bastion_desktop.core.audit import new_request_id
from bastion_desktop.core.events import (
    BlockedEvent,
    ContextTrimmedEvent,
    DoneEvent,
    ErrorEvent,
    GuardEvent,
    NoticeEvent,
    TokenEvent,
)
from bastion_desktop.core.installed_models import RegisteredModel
from bastion_guardrails.decisions import GuardDecision, Verdict

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
# Requests one client may have in progress (answering or waiting), and all clients.
PER_CLIENT = 4
MAX_IN_PROGRESS = 16
RETRY_AFTER_SECONDS = 2
RECENT_REQUESTS = 50
HEALTH_PATH = "/health"
BACKLOG = 128
ACCEPT_STEPS = 2  # loop turns for an accepted connection to become a transport
CLIENT_GONE = 499  # recorded for a request whose client disconnected (nginx's code)
# The headers a page may send (a preflight's Access-Control-Request-Headers): header
# names only; OpenAI's JavaScript library adds its own x-stainless-* headers.
_HEADER_NAMES = re.compile(r"[A-Za-z0-9-]+(?:\s*,\s*[A-Za-z0-9-]+)*")

_CLIENT = web.RequestKey("client", ApiClient)
_REQUEST_ID = web.RequestKey("request_id", str)
_ORIGIN = web.RequestKey("origin", str)  # an allowed Origin the request came with, or ""


@dataclass(frozen=True)
class RequestRecord:
    """One request as the Server panel and the log show it: never a word of content."""

    request_id: str
    client: str
    path: str
    status: int
    verdict: str = ""  # allowed, masked or blocked, for a completion
    model: str = ""
    profile: str = ""
    rail: str | None = None
    category: str | None = None
    completion_tokens: int = 0
    ms: float = 0.0


@dataclass
class _Outcome:
    """What a completion came to, gathered from its events."""

    model: str
    request_id: str
    texts: list[str] = field(default_factory=list)
    decisions: list[GuardDecision] = field(default_factory=list)
    blocked: BlockedEvent | None = None
    done: DoneEvent | None = None
    error: ErrorEvent | None = None
    notices: list[str] = field(default_factory=list)
    queue_ms: float = 0.0

    @property
    def profile(self) -> str:
        return self.decisions[0].profile_id if self.decisions else ""

    def take(self, event: ApiEvent) -> None:
        if isinstance(event, Waited):
            self.queue_ms = event.ms
        elif isinstance(event, GuardEvent):
            self.decisions.append(event.decision)
        elif isinstance(event, TokenEvent):
            self.texts.append(event.text)
        elif isinstance(event, BlockedEvent):
            self.blocked = event
            if event.decision not in self.decisions:  # an input block came as a guard event
                self.decisions.append(event.decision)
        elif isinstance(event, DoneEvent):
            self.done = event
        elif isinstance(event, ErrorEvent):
            self.error = event
        elif isinstance(event, ContextTrimmedEvent):
            self.notices.append(event.sentence)
        elif isinstance(event, NoticeEvent):
            self.notices.append(event.message)

    @property
    def finish_reason(self) -> str:
        if self.blocked is not None:
            return "content_filter"
        assert self.done is not None
        return "length" if self.done.finish_reason == "length" else "stop"

    @property
    def refusal(self) -> str | None:
        if self.blocked is None:
            return None
        decision = self.blocked.decision
        if self.blocked.retracted:
            return f"Bastion's guardrails withdrew this reply: {decision.explanation}"
        return decision.explanation

    @property
    def verdict(self) -> str:
        if self.blocked is not None:
            return Verdict.BLOCKED.value
        masked = any(d.verdict is Verdict.MASKED for d in self.decisions)
        return Verdict.MASKED.value if masked else Verdict.ALLOWED.value

    def usage(self) -> dict[str, int]:
        if self.done is not None:
            return usage(self.done.prompt_tokens, self.done.tokens)
        # A blocked reply has no stats from the model: its pieces of text are counted.
        return usage(0, len(self.texts))

    def extra(self) -> dict[str, Any]:
        """The `bastion` object every response carries: the guardrails' decisions and
        the speed, never any text but the explanations."""
        blocked = self.blocked.decision if self.blocked else None
        extra: dict[str, Any] = {
            "request_id": self.request_id,
            "profile": self.profile,
            "verdict": self.verdict,
            "stage": blocked.stage.value if blocked else None,
            "rail": blocked.rail if blocked else None,
            "category": blocked.category if blocked else None,
            "retracted": bool(self.blocked and self.blocked.retracted),
            "decisions": [_decision(d) for d in self.decisions if d.verdict is not Verdict.ALLOWED],
            "queue_ms": round(self.queue_ms, 1),
            "notices": self.notices,
        }
        if self.done is not None:
            extra.update(
                tokens_per_second=round(self.done.tokens_per_second, 2),
                ttft_ms=round(self.done.ttft_ms, 1),
                total_ms=round(self.done.total_ms, 1),
                guard_ms=round(self.done.guard_ms, 1),
            )
        return extra


_OUTCOME = web.RequestKey("outcome", _Outcome)


_INTERNAL = ApiError(
    500,
    "Bastion hit an internal error answering this request; its log has the details.",
    type="server_error",
    code="internal_error",
)


def _decision(decision: GuardDecision) -> dict[str, Any]:
    return {
        "verdict": decision.verdict.value,
        "stage": decision.stage.value,
        "rail": decision.rail,
        "category": decision.category,
        "explanation": decision.explanation,
    }


def _error_for(event: ErrorEvent) -> ApiError:
    if event.kind == "context_overflow":
        return ApiError(400, event.message, code="context_length_exceeded", param="messages")
    if event.kind == "output_format":
        return ApiError(400, event.message, code="invalid_response_format", param="response_format")
    if event.kind == "model_load":
        return ApiError(503, event.message, type="server_error", code="model_load_failed")
    return ApiError(500, event.message, type="server_error", code=event.kind)


class ApiServer:
    """The server; `start` on the loop that runs `service`'s chats, `close` to stop."""

    def __init__(
        self,
        service: ApiService,
        tokens: ApiTokens,
        *,
        origins: Callable[[], tuple[str, ...]] = tuple,
        per_client: int = PER_CLIENT,
        max_in_progress: int = MAX_IN_PROGRESS,
    ) -> None:
        self.service = service
        self.tokens = tokens
        self.origins = origins
        self.per_client = per_client
        self.max_in_progress = max_in_progress
        self.port = 0
        self.addresses: list[tuple[str, int]] = []
        self.recent: deque[RequestRecord] = deque(maxlen=RECENT_REQUESTS)
        self.on_request: Callable[[RequestRecord], None] | None = None
        self._in_progress: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self._sockets: list[socket.socket] = []

    # -- lifetime ----------------------------------------------------------------------------

    async def start(self, port: int) -> None:
        """Listen on 127.0.0.1:`port` (0 picks a free one), and on [::1] at the same port
        where this machine has IPv6: `localhost` may resolve to either."""
        app = web.Application(middlewares=[self._checks], client_max_size=MAX_BODY_BYTES)
        app.router.add_get(HEALTH_PATH, self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model:.+}", self._model)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_post("/v1/completions", self._completions)
        app.on_response_prepare.append(self._headers)
        # A disconnected client cancels its handler: that closes the request's events,
        # which stops the model (aiohttp leaves handlers running by default).
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, handler_cancellation=True
        )
        await runner.setup()
        sockets: list[socket.socket] = []
        try:
            sockets.append(_listen(socket.AF_INET, "127.0.0.1", port))
            self.port = sockets[0].getsockname()[1]
            if socket.has_ipv6:
                with contextlib.suppress(OSError):  # no IPv6 loopback here
                    sockets.append(_listen(socket.AF_INET6, "::1", self.port))
            for sock in sockets:
                await web.SockSite(runner, sock).start()
        except OSError as error:
            await runner.cleanup()
            for sock in sockets:
                sock.close()
            why = os.strerror(error.errno) if error.errno else str(error)
            raise OSError(
                error.errno, f"Port {port} on 127.0.0.1 cannot be used ({why}); choose another"
            ) from error
        self._runner = runner
        self._sockets = sockets
        self.addresses = [sock.getsockname()[:2] for sock in sockets]
        log.info("local API listening on %s", ", ".join(f"{h}:{p}" for h, p in self.addresses))

    @property
    def in_progress(self) -> dict[str, int]:
        """Requests being answered or waiting, by client name."""
        return {name: count for name, count in self._in_progress.items() if count}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        # Stop accepting first, then let the connections already accepted be made. Python
        # 3.11's asyncio accepts in two steps (a callback, then a task); a server closed
        # between them drops the accepted socket unclosed ("Error on transport creation").
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            loop.remove_reader(sock)
        for _ in range(ACCEPT_STEPS):
            await asyncio.sleep(0)
        await runner.cleanup()

    # -- the checks, in order ----------------------------------------------------------------

    @web.middleware
    async def _checks(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        request[_REQUEST_ID] = new_request_id()
        started = time.perf_counter()
        client = ""
        try:
            self._check_host(request)
            if request.method == "OPTIONS":
                return self._preflight(request)
            # The origin first: a page it allows reads why its token was refused.
            self._check_origin(request)
            if request.path != HEALTH_PATH:
                client = self._client(request).name
            if request.method == "POST":
                self._check_body(request)
            response: web.StreamResponse = await handler(request)
        except asyncio.CancelledError:
            # The client went away (the handler is cancelled then, which stops its model).
            self._record(request, client, CLIENT_GONE, started)
            raise
        except ApiError as error:
            response = _error_response(error)
        except web.HTTPException as error:
            response = _error_response(_http_error(error, request))
        except Exception:
            # A bug: the client gets an answer it can read, the log the traceback.
            log.exception("api %s: the request failed", request[_REQUEST_ID])
            response = _error_response(_INTERNAL)
        self._record(request, client, response.status, started)
        return response

    def _check_host(self, request: web.Request) -> None:
        host = (request.headers.get("Host") or "").strip().lower()
        allowed = {f"{name}:{self.port}" for name in LOOPBACK_NAMES}
        if host not in allowed:
            raise ApiError(
                403,
                "This server answers only requests addressed to localhost, 127.0.0.1 or "
                f"[::1] on port {self.port}.",
                type="permission_error",
                code="host_not_allowed",
                headers={"x-should-retry": "false"},
            )

    def _client(self, request: web.Request) -> ApiClient:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            client = self.tokens.client_for(token.strip()) if scheme.lower() == "bearer" else None
        except TokenError as error:
            raise ApiError(
                500, str(error), type="server_error", code="tokens_unreadable"
            ) from error
        if client is None:
            raise ApiError(
                401,
                "A valid API token is required (Authorization: Bearer <token>). Create one "
                "with `bastion api token create NAME` or in Bastion's Server panel.",
                type="authentication_error",
                code="invalid_api_key",
            )
        request[_CLIENT] = client
        return client

    def _allowed_origin(self, request: web.Request) -> str | None:
        """The request's Origin if it is on the allow-list; None when it sent none."""
        origin = request.headers.get("Origin")
        if origin is None:
            return None
        if origin.strip().lower() not in self.origins():  # "null" is never on it
            raise ApiError(
                403,
                f"Web pages from {origin!r} may not call this server. Add the origin to the "
                "allowed origins in Bastion's settings if you trust it.",
                type="permission_error",
                code="origin_not_allowed",
                headers={"x-should-retry": "false"},
            )
        return origin

    def _check_origin(self, request: web.Request) -> None:
        request[_ORIGIN] = self._allowed_origin(request) or ""

    def _preflight(self, request: web.Request) -> web.Response:
        """A browser asking whether a page (an allowed origin) may send its request."""
        origin = self._allowed_origin(request)
        if origin is None:
            raise ApiError(400, "A preflight request needs an Origin.")
        request[_ORIGIN] = origin
        asked = request.headers.get("Access-Control-Request-Headers", "").strip()
        allowed = asked if _HEADER_NAMES.fullmatch(asked) else "Authorization, Content-Type"
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                "Access-Control-Allow-Headers": allowed,
                "Access-Control-Max-Age": "600",
            },
        )

    def _check_body(self, request: web.Request) -> None:
        if request.content_type != "application/json":
            raise ApiError(
                415,
                "Send the body as JSON (Content-Type: application/json).",
                code="unsupported_media_type",
            )
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise _too_large()

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["x-request-id"] = request.get(_REQUEST_ID, "")
        origin = request.get(_ORIGIN)
        if origin:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "x-request-id"
            response.headers["Vary"] = "Origin"

    @contextlib.contextmanager
    def _admitted(self, client: ApiClient) -> Iterator[None]:
        busy = sum(self._in_progress.values())
        if self._in_progress[client.name] >= self.per_client or busy >= self.max_in_progress:
            raise ApiError(
                429,
                f"Too many requests in progress (at most {self.per_client} per client and "
                f"{self.max_in_progress} in all); try again in a moment.",
                type="rate_limit_error",
                code="too_many_requests",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        self._in_progress[client.name] += 1
        try:
            yield
        finally:
            self._in_progress[client.name] -= 1

    def _record(self, request: web.Request, client: str, status: int, started: float) -> None:
        outcome: _Outcome | None = request.get(_OUTCOME)
        record = RequestRecord(
            request_id=request.get(_REQUEST_ID, ""),
            client=client,
            path=request.path,
            status=status,
            ms=(time.perf_counter() - started) * 1000,
        )
        if outcome is not None:
            blocked = outcome.blocked.decision if outcome.blocked else None
            record = RequestRecord(
                **{
                    **record.__dict__,
                    "verdict": outcome.verdict,
                    "model": outcome.model,
                    "profile": outcome.profile,
                    "rail": blocked.rail if blocked else None,
                    "category": blocked.category if blocked else None,
                    "completion_tokens": outcome.usage()["completion_tokens"],
                }
            )
        self.recent.append(record)
        log.info(
            "api %s %s %s %d %s %.0f ms",
            record.request_id,
            record.client or "-",
            record.path,
            record.status,
            record.verdict or "-",
            record.ms,
        )
        if self.on_request is not None:
            self.on_request(record)

    # -- endpoints -----------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _models(self, request: web.Request) -> web.Response:
        data = [_model_object(model) for model in self.service.chat_models()]
        return web.json_response({"object": "list", "data": data})

    async def _model(self, request: web.Request) -> web.Response:
        wanted = request.match_info["model"]
        for model in self.service.chat_models():
            if model.id == wanted:
                return web.json_response(_model_object(model))
        raise ApiError(
            404,
            f"No installed chat model is called {wanted!r}.",
            code="model_not_found",
            param="model",
        )

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        parsed = chat_request(await _json(request), self.service.sampling_defaults())
        return await self._complete(request, parsed, chat=True)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        parsed = completion_request(await _json(request), self.service.sampling_defaults())
        return await self._complete(request, parsed, chat=False)

    async def _complete(
        self, request: web.Request, parsed: ChatRequest, *, chat: bool
    ) -> web.StreamResponse:
        client = request[_CLIENT]
        with self._admitted(client):
            model_id = await self.service.model_for(parsed.model)
            guard = await self.service.guard_for(parsed.profile, model_id)
            outcome = _Outcome(model_id, request[_REQUEST_ID])
            request[_OUTCOME] = outcome
            events = self.service.answer(parsed, client, model_id, guard, request[_REQUEST_ID])
            async with contextlib.aclosing(events):
                if parsed.stream:
                    writer = _Stream(request, outcome, chat=chat, usage=parsed.include_usage)
                    try:
                        return await writer.run(events)
                    except ConnectionResetError:
                        # The client left (mid-reply, or while it waited for the model):
                        # closing `events` stops the model.
                        log.info("api %s: the client closed the stream", outcome.request_id)
                        return writer.response or web.Response(status=CLIENT_GONE)
                    except Exception:
                        if writer.response is None:
                            raise  # nothing sent yet: an ordinary error response
                        log.exception("api %s: the stream failed", outcome.request_id)
                        return await writer.fail(_INTERNAL)
                async for event in events:
                    outcome.take(event)
        if outcome.error is not None:
            raise _error_for(outcome.error)
        return web.json_response(_whole(outcome, chat=chat))


def _model_object(model: RegisteredModel) -> dict[str, Any]:
    """OpenAI's model object; `created` is when the file was written (downloaded or
    imported), the same at every call."""
    try:
        created = int(model.path.stat().st_mtime)
    except OSError:
        created = 0
    return {"id": model.id, "object": "model", "created": created, "owned_by": "local"}


def _whole(outcome: _Outcome, *, chat: bool) -> dict[str, Any]:
    """A non-streamed response. A withdrawn reply is not returned: only why."""
    text = outcome.refusal if outcome.blocked else "".join(outcome.texts)
    if chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": outcome.refusal},
            "logprobs": None,
            "finish_reason": outcome.finish_reason,
        }
        kind, prefix = "chat.completion", "chatcmpl-"
    else:
        choice = {
            "index": 0,
            "text": text,
            "logprobs": None,
            "finish_reason": outcome.finish_reason,
        }
        kind, prefix = "text_completion", "cmpl-"
    return {
        "id": prefix + outcome.request_id.removeprefix("req_"),
        "object": kind,
        "created": now(),
        "model": outcome.model,
        "choices": [choice],
        "usage": outcome.usage(),
        "bastion": outcome.extra(),
    }


class _Stream:
    """A streamed response as server-sent events. Headers wait for the first text (or
    the end), so a request that fails before any is an ordinary HTTP error; after that,
    a block ends the stream like any reply, with `content_filter`."""

    def __init__(self, request: web.Request, outcome: _Outcome, *, chat: bool, usage: bool):
        self.request = request
        self.outcome = outcome
        self.chat = chat
        self.usage = usage
        self.response: web.StreamResponse | None = None
        self.created = now()
        prefix = "chatcmpl-" if chat else "cmpl-"
        self.id = prefix + outcome.request_id.removeprefix("req_")

    async def run(self, events: AsyncIterator[ApiEvent]) -> web.StreamResponse:
        outcome = self.outcome
        async for event in events:
            outcome.take(event)
            if isinstance(event, TokenEvent):
                await self._text(event.text)
            elif isinstance(event, ErrorEvent):
                if self.response is None:
                    raise _error_for(event)
                # The reply failed part-way (the model crashed): the client must know it
                # is incomplete, and an error frame is how OpenAI's clients learn it.
                return await self.fail(_error_for(event))
        if outcome.blocked is None and outcome.done is None:
            raise ApiError(500, "The reply ended without a result.", type="server_error")
        if outcome.blocked is not None:
            refusal = outcome.refusal or ""
            shown = "\n\n" if outcome.texts else ""
            await self._text(shown + refusal, refusal=refusal)
        await self._send(self._chunk({}, outcome.finish_reason, extra=outcome.extra()))
        if self.usage:
            await self._send({**self._chunk({}, None), "choices": [], "usage": outcome.usage()})
        return await self._finish()

    def _chunk(
        self, delta: dict[str, Any], finish: str | None, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None}
            kind = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": delta.get("content", ""), "logprobs": None}
            kind = "text_completion"
        choice["finish_reason"] = finish
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.outcome.model,
            "choices": [choice],
        }
        if extra is not None:
            chunk["bastion"] = extra
        return chunk

    async def _text(self, text: str, refusal: str | None = None) -> None:
        if self.response is None:
            await self._start()
        delta: dict[str, Any] = {"content": text}
        if refusal is not None:
            delta["refusal"] = refusal
        await self._send(self._chunk(delta, None))

    async def _start(self) -> None:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(self.request)
        self.response = response
        if self.chat:
            await self._send(self._chunk({"role": "assistant", "content": ""}, None))

    async def _send(self, payload: dict[str, Any]) -> None:
        if self.response is None:
            await self._start()
        assert self.response is not None
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        await self.response.write(f"data: {data}\n\n".encode())

    async def fail(self, error: ApiError) -> web.StreamResponse:
        await self._send(error.body())
        return await self._finish()

    async def _finish(self) -> web.StreamResponse:
        assert self.response is not None
        await self.response.write(b"data: [DONE]\n\n")
        await self.response.write_eof()
        return self.response


async def _json(request: web.Request) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as error:
        raise _too_large() from error
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ApiError(400, f"The body is not valid JSON: {error}.") from error


def _too_large() -> ApiError:
    return ApiError(
        413,
        f"The body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB.",
        code="request_too_large",
    )


def _http_error(error: web.HTTPException, request: web.Request) -> ApiError:
    if isinstance(error, web.HTTPRequestEntityTooLarge):
        return _too_large()
    if isinstance(error, web.HTTPNotFound):
        return ApiError(404, f"There is no endpoint {request.path}.", code="not_found")
    if isinstance(error, web.HTTPMethodNotAllowed):
        return ApiError(
            405, f"{request.path} does not take {request.method}.", code="method_not_allowed"
        )
    return ApiError(error.status, error.reason or "Request refused.")


def _error_response(error: ApiError) -> web.Response:
    return web.json_response(error.body(), status=error.status, headers=error.headers)


def _listen(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    """A listening socket of our own (asyncio's would not let `close` stop accepting
    before it closes), without SO_REUSEADDR: a port another program holds is refused."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
