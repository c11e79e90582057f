"""The HTTP server: an OpenAI-compatible API over the chat core, plus the web chat.

    rolecast serve packs/house packs/chandler              # http://127.0.0.1:8000

    app = create_app(settings, service)                     # for tests and embedding; uvicorn runs it

Endpoints: ``GET /v1/models`` (a character is a model id), ``POST /v1/chat/completions``
(OpenAI's request and response, ``stream=true`` as server-sent events ending with
``[DONE]``; rolecast's own options under ``"rolecast"``, which OpenAI clients send
with ``extra_body={"rolecast": {...}}``), conversations (create, list, read, delete),
``GET /healthz`` and ``GET /metrics`` (Prometheus). Errors use OpenAI's JSON shape.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..chat.performer import Reply
from ..errors import AuthError, MessageError, PayloadTooLargeError, RateLimitError, RolecastError
from ..settings import ServeSettings
from .api_models import ChatRequest, ConversationCreate, choices_of, completion_response, error_body
from .metrics import Metrics
from .service import ChatService

log = logging.getLogger(__name__)


def create_app(settings: ServeSettings, service: ChatService) -> FastAPI:
    app = FastAPI(title="rolecast", version=_version(), summary="Characters from TV scripts, OpenAI-compatible.")
    app.state.service = service
    app.state.metrics = metrics = Metrics(service)
    keys = [k.encode() for k in settings.api_keys]

    def owner(request: Request) -> str:
        """The caller's identity: a hash of its API key, or 'local' when no keys are set."""
        if not keys:
            return "local"
        header = request.headers.get("authorization", "")
        token = header[7:].strip().encode() if header.lower().startswith("bearer ") else b""
        matched = False
        for key in keys:  # every key is compared, in constant time: no timing hint of which one is close
            matched |= hmac.compare_digest(token, key)
        if not matched:
            raise AuthError("missing or wrong API key", "send 'Authorization: Bearer KEY'")
        who = "key:" + hashlib.sha256(token).hexdigest()[:16]
        service.check_rate(who)
        return who

    _errors(app, metrics)
    _middleware(app, settings, metrics)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "models": [m.id for m in service.models()]}

    @app.get("/metrics", tags=["ops"], response_class=_PlainText)
    async def prometheus() -> _PlainText:
        return _PlainText(metrics.render(), media_type=metrics.content_type)

    @app.get("/v1/models", tags=["openai"])
    async def models(who: str = Depends(owner)) -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": m.id, "object": "model", "created": m.created, "owned_by": "rolecast",
             "character": m.name, "show": m.show} for m in service.models()]}

    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(body: ChatRequest, request: Request, who: str = Depends(owner)):
        gen, perf = service.defaults(body.model)
        gen, perf = gen.updated(**body.generation_overrides()), body.performer_settings(perf)
        opts = body.rolecast
        if opts and opts.conversation_id:
            if body.n > 1:  # one stored reply per turn: n choices would be shown and one kept (or one streamed)
                raise MessageError("n > 1 cannot go with a conversation_id: a stored conversation keeps one reply a turn",
                                   "drop n (rolecast.candidates reranks several into one), or drop conversation_id",
                                   param="n")
            conv = service.conversation(opts.conversation_id, who)
            if conv["character"] != body.model:
                raise MessageError(f"conversation {conv['id']} is with '{conv['character']}', not '{body.model}'",
                                   param="model")
            message = "" if opts.regenerate else body.last_user_message()
            source = service.turn_stream(conv["id"], message, gen, perf, regenerate=opts.regenerate)
            return await _respond(body, source, conv["id"])
        history, message = body.history_and_message()
        if body.n > 1:
            reply = await _cancelled_on_disconnect(request, lambda cancel: service.reply(body.model, history, message,
                                                                                         gen, perf, cancel))
            if body.stream:  # OpenAI clients read n choices from one stream, told apart by their index
                return EventSourceResponse(_choice_events(body, reply), ping=15)
            return completion_response(body, reply, None)
        return await _respond(body, service.stream(body.model, history, message, gen, perf), None)

    @app.post("/v1/conversations", tags=["conversations"], status_code=201)
    async def create_conversation(body: ConversationCreate, who: str = Depends(owner)) -> dict[str, Any]:
        return _conversation(await service.create_conversation(body.model, who, body.title))

    @app.get("/v1/conversations", tags=["conversations"])
    async def list_conversations(model: str | None = None, who: str = Depends(owner)) -> dict[str, Any]:
        return {"object": "list", "data": [_conversation(c) for c in service.conversations(who, model)]}

    @app.get("/v1/conversations/{conversation_id}", tags=["conversations"])
    async def read_conversation(conversation_id: str, who: str = Depends(owner)) -> dict[str, Any]:
        conv = service.conversation(conversation_id, who)
        return _conversation(conv) | {"messages": service.messages(conversation_id)}

    @app.delete("/v1/conversations/{conversation_id}", tags=["conversations"])
    async def delete_conversation(conversation_id: str, who: str = Depends(owner)) -> dict[str, Any]:
        await service.delete_conversation(conversation_id, who)
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    if settings.web:
        from .webchat import mount

        mount(app, service, settings.api_keys)
    return app


#: How often a best-of-n request checks that its client is still there.
DISCONNECT_POLL_S = 0.25


async def _cancelled_on_disconnect(request: Request, start: Callable[[threading.Event], Awaitable[Reply]]) -> Reply:
    """Await ``start(cancel)``, setting ``cancel`` when the client goes: best-of-n sampling then stops at the next
    token (the stream path stops when its response is closed)."""
    cancel = threading.Event()
    task = asyncio.ensure_future(start(cancel))
    while not task.done():
        if await request.is_disconnected():
            cancel.set()
            break
        await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
    return await task


async def _respond(body: ChatRequest, source: AsyncIterator[str | Reply], conversation_id: str | None):
    """A whole completion, or an SSE stream of chunks, from the chat core's pieces."""
    if not body.stream:
        reply = None
        async for item in source:
            if isinstance(item, Reply):
                reply = item
        return completion_response(body, reply, conversation_id)
    first = await anext(aiter(source))  # errors (busy, unknown conversation) become a plain HTTP error

    async def events() -> AsyncIterator[str]:
        cid, created = "chatcmpl-" + uuid.uuid4().hex, int(time.time())

        def chunk(delta: dict, finish: str | None = None, extra: dict | None = None) -> str:
            data = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": body.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return json.dumps(data | (extra or {}), ensure_ascii=False)

        yield chunk({"role": "assistant", "content": ""})
        item = first
        while True:
            if isinstance(item, Reply):
                yield chunk({}, "stop" if item.finish_reason != "length" else "length",
                            {"usage": _usage(item), "rolecast": _rolecast_extra(item, conversation_id)})
                break
            yield chunk({"content": item})
            item = await anext(source)
        yield "[DONE]"

    return EventSourceResponse(events(), ping=15)


async def _choice_events(body: ChatRequest, reply: Reply) -> AsyncIterator[str]:
    """The n finished choices of a reply as one SSE stream: each choice's role, content and finish, by index."""
    cid, created = "chatcmpl-" + uuid.uuid4().hex, int(time.time())
    finish = "length" if reply.finish_reason == "length" else "stop"
    texts = choices_of(reply, body.n)

    def chunk(choices: list[dict], extra: dict | None = None) -> str:
        data = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": body.model,
                "choices": choices}
        return json.dumps(data | (extra or {}), ensure_ascii=False)

    for i, text in enumerate(texts):
        yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        yield chunk([{"index": i, "delta": {"content": text}, "finish_reason": None}])
    yield chunk([{"index": i, "delta": {}, "finish_reason": finish} for i in range(len(texts))],
                {"usage": _usage(reply), "rolecast": _rolecast_extra(reply, None)})
    yield "[DONE]"


def _usage(reply: Reply) -> dict[str, int]:
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens}


def _rolecast_extra(reply: Reply, conversation_id: str | None) -> dict[str, Any]:
    return {"conversation_id": conversation_id, "scores": reply.scores, "notices": reply.notices}


def _conversation(conv: dict[str, Any]) -> dict[str, Any]:
    return {"id": conv["id"], "object": "conversation", "model": conv["character"], "title": conv["title"],
            "created": int(conv["created"]), "updated": int(conv["updated"])}


class _PlainText(JSONResponse):
    media_type = "text/plain"

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else str(content).encode()


def _errors(app: FastAPI, metrics: Metrics) -> None:
    """Typed errors → OpenAI's error JSON; 500 only for bugs, logged with their traceback."""

    @app.exception_handler(RolecastError)
    async def rolecast_error(request: Request, err: RolecastError) -> JSONResponse:
        headers = {"Retry-After": str(max(1, round(err.retry_after)))} if isinstance(err, RateLimitError) else None
        if isinstance(err, AuthError):
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(error_body(str(err), err.kind, err.param, type(err).__name__), err.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        if first.get("type") == "json_invalid":
            return JSONResponse(error_body("the request body is not valid JSON", "invalid_request_error", None,
                                           "invalid_json"), 400)
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        message = f"{where}: {first.get('msg', 'invalid value')}" if where else first.get("msg", "invalid request")
        return JSONResponse(error_body(message, "invalid_request_error", where, "invalid_value"), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(err.detail), kind, None, str(err.status_code)), err.status_code)

    @app.exception_handler(Exception)
    async def bug(request: Request, err: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal error (logged on the server)", "server_error", None, "internal"), 500)


def _middleware(app: FastAPI, settings: ServeSettings, metrics: Metrics) -> None:
    limit = settings.max_body_kb * 1024

    @app.middleware("http")
    async def measure(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            err = PayloadTooLargeError(f"the request body is over {settings.max_body_kb} KiB", "send less")
            return JSONResponse(error_body(str(err), err.kind, None, "body_too_large"), 413)
        start = time.perf_counter()
        response = await call_next(request)
        path, status = getattr(request.scope.get("route"), "path", "other"), response.status_code
        body = response.body_iterator

        async def timed():  # a request ends with its last byte: an SSE stream's latency is the whole stream
            try:
                async for chunk in body:
                    yield chunk
            finally:
                metrics.request(path, status, time.perf_counter() - start)

        response.body_iterator = timed()
        return response

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"])
    app.add_middleware(BodyLimit, limit=limit)


class BodyLimit:
    """413 for bodies over the limit, also when they come chunked without a Content-Length."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            body = json.dumps(error_body(f"the request body is over {self.limit // 1024} KiB", "invalid_request_error",
                                         None, "body_too_large")).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def _version() -> str:
    from .. import __version__

    return __version__

