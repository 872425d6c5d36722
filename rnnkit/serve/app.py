"""The HTTP API and the web page: FastAPI on uvicorn, every model through the task contract.

Endpoints: ``GET /health``; ``GET /v1/models``; ``POST /v1/models/{name}/predict`` with
``{"inputs": [...], "options": {...}}`` answered by ``{"outputs": [...]}`` in input order;
``POST /v1/models/{name}/stream`` (server-sent events) for tasks that stream; the page at ``/``.

Errors are JSON ``{"error": {"status", "message"}}`` with a real status (:data:`ERRORS`,
docs/serve.md "Errors"); nothing that is not an answer is answered 200, and the work of a
request that timed out is stopped too (its predict call runs under a deadline).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import rnnkit
from rnnkit.config import json_schema, setting
from rnnkit.errors import ConfigError, DeadlineError, InputError, LimitError, RnnkitError
from rnnkit.serve.batching import Batcher, Busy
from rnnkit.tasks.base import (
    DEFAULT_LIMITS,
    Costly,
    HasVerb,
    Limits,
    ShowsAttention,
    Streams,
    Task,
    Verb,
    check_inputs,
    resolve_options,
)

STATIC = Path(__file__).parent / "static"
PAGE_FILES = {"index.html", "app.js", "style.css"}


def _seconds(default: float, help: str) -> Any:
    return setting(default, help, 0, 3600, low_open=True)


@dataclass
class ServeConfig:
    """Limits and switches of a server; the ``rnnkit serve`` flags are made from the fields
    declared with help (``timeout_s`` → ``--timeout``, ``batching`` → ``--no-batching``)."""

    max_inputs: int = setting(64, "inputs per request", 1, DEFAULT_LIMITS.max_inputs)
    max_chars: int = setting(2_000, "characters per input", 1, DEFAULT_LIMITS.max_chars)
    max_body: int = setting(1_000_000, "bytes per request body", 1, 2**30)
    timeout_s: float = _seconds(30.0, "seconds per request; then 504")
    batching: bool = setting(True, "batch requests into shared predict calls")
    max_batch: int = setting(64, "inputs per predict call", 1, DEFAULT_LIMITS.max_inputs)
    batch_wait_ms: float = setting(
        2.0, "how long a free model waits for more requests to batch with", 0, 1000
    )
    max_queue: int = setting(1024, "waiting requests per model; then 503", 1, 10**6)
    max_generated: int = setting(
        20_000, "tokens one request may ask a language model for (inputs × length)", 1, 10**7
    )
    cors_origins: list[str] = field(default_factory=list)  # none: CORS off
    api_key: str | None = None  # when set, every request but /health and the page needs it
    header_timeout_s: float = _seconds(
        10.0, "seconds a connection has to send a request's headers, from connecting or from "
        "its last answer; then it is closed",
    )  # fmt: skip
    read_timeout_s: float = _seconds(
        30.0, "seconds a connection has to send a whole request (headers and body); then 408"
    )
    keep_alive_s: float = _seconds(
        5.0, "seconds of silence after an answer that close the connection"
    )
    max_connections: int = setting(
        4096, "open connections; past it, the one idle longest is closed", 1, 10**6
    )

    def limits(self) -> Limits:
        """The limits on inputs that requests are checked against."""
        return Limits(max_inputs=self.max_inputs, max_chars=self.max_chars)


class PredictRequest(BaseModel):
    """A batch of raw inputs and the task's predict options (see ``GET /v1/models``)."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[str] = Field(description="raw inputs, one answer each, in order")
    options: dict[str, Any] = Field(default_factory=dict, description="the task's options")


class StreamRequest(BaseModel):
    """One input whose answer comes back piece by piece."""

    model_config = ConfigDict(extra="forbid")
    input: str = Field(description="the text to continue")
    options: dict[str, Any] = Field(default_factory=dict, description="the task's options")


class PredictResponse(BaseModel):
    """One output per input, in order."""

    outputs: list[dict[str, Any]]


class ErrorBody(BaseModel):
    """What went wrong: the HTTP status and a one-line message."""

    status: int
    message: str


class ErrorResponse(BaseModel):
    """The body of an error answer."""

    error: ErrorBody


class ModelInfo(BaseModel):
    """A served model and what it can do."""

    name: str
    task: str
    labels: list[str] = Field(description="the closed set of answers, or [] for open text")
    streaming: bool = Field(description="POST .../stream answers piece by piece")
    attention_option: str | None = Field(
        description="the boolean option that adds attention weights to each output, or null"
    )
    form: dict[str, Any] = Field(description="how the page asks for an input (docs/serve.md)")
    options: dict[str, Any]


class ModelList(BaseModel):
    """The served models (``GET /v1/models``)."""

    models: list[ModelInfo]


class HTTPError(Exception):
    """An error answer to send: its status and message, as an :class:`ErrorResponse`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


ERRORS = {
    status: {"model": ErrorResponse, "description": what}
    for status, what in {
        401: "missing or wrong API key",
        404: "no such model",
        413: "too many inputs, an input too long, or a body too large",
        422: "malformed body or bad options",
        503: "the model's queue is full",
        504: "the model did not answer in time",
    }.items()
}


@contextmanager
def answering(timeout_s: float) -> Iterator[None]:
    """Map what a model's call raises to the error answer: 503 when its queue is full, 504
    past the deadline, 422 for any other rnnkit error (bad input the checks let through)."""
    try:
        yield
    except Busy as err:
        raise HTTPError(503, str(err)) from None
    except (TimeoutError, DeadlineError):
        raise HTTPError(504, f"no answer within {timeout_s:g} s") from None
    except RnnkitError as err:
        raise HTTPError(422, str(err)) from None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status)


@dataclass
class Served:
    """A loaded model and the batcher in front of it."""

    name: str
    task: Task
    batcher: Batcher

    def info(self) -> dict[str, Any]:
        """The model's entry in ``GET /v1/models``: its task's capabilities, for clients and
        the page."""
        verb = self.task.verb if isinstance(self.task, HasVerb) else Verb("", "")
        form = {k: getattr(verb, k) for k in ("label", "hint", "button", "multiline", "prompt")}
        attention = self.task.attention_option if isinstance(self.task, ShowsAttention) else None
        return {
            "name": self.name,
            "task": self.task.name,
            "labels": self.task.labels(),
            "streaming": isinstance(self.task, Streams),
            "attention_option": attention,
            "form": form,
            "options": json_schema(self.task.Options),
        }


def create_app(models: dict[str, Task], config: ServeConfig | None = None) -> FastAPI:
    """The app serving ``models`` (name → loaded task) under ``config``'s limits."""
    config = config or ServeConfig()
    limits = config.limits()
    served: dict[str, Served] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """Start each model's batcher when the server starts; stop them when it stops."""
        for name, task in models.items():
            batcher = Batcher(
                task.predict, config.max_batch, config.batch_wait_ms / 1000, config.max_queue,
                config.batching, name,
            )  # fmt: skip
            batcher.start()
            served[name] = Served(name, task, batcher)
        yield
        for s in served.values():
            await s.batcher.stop()

    app = FastAPI(
        title="rnnkit",
        summary="Recurrent sequence models over HTTP: one predict path for every task.",
        version=rnnkit.__version__,
        lifespan=lifespan,
    )
    app.state.served = served
    app.state.config = config

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, err: HTTPError) -> JSONResponse:
        return _error(err.status, err.message)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        if err.status_code == 400:  # a body that is not UTF-8 or too deeply nested to parse
            return _error(422, "the request body is not valid JSON")
        reply = _error(err.status_code, str(err.detail))
        reply.headers.update(err.headers or {})  # 405 keeps its Allow header
        return reply

    @app.exception_handler(Exception)
    async def _bug(request: Request, err: Exception) -> JSONResponse:
        # A bug, not bad input: still JSON, still not 200, and the server keeps serving.
        return _error(500, f"internal error ({type(err).__name__}); please report it")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        if first.get("type") == "json_invalid":
            return _error(422, "the request body is not valid JSON")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return _error(422, f"{where}: {first.get('msg', 'malformed request body')}")

    def model(name: str) -> Served:
        """The served model called ``name``, or a 404 naming those there are."""
        if name not in served:
            raise HTTPError(404, f"no model named {name!r} (models: {', '.join(served)})")
        return served[name]

    def checked_options(s: Served, options: dict[str, Any]) -> Any:
        """``options`` as the task's Options, unknown keys refused; a bad value is a 422."""
        try:
            return resolve_options(s.task, options, strict=True)
        except ConfigError as err:
            raise HTTPError(422, str(err)) from None

    def checked_inputs(inputs: list[str]) -> list[str]:
        """``inputs`` within the server's limits: too many or too long is a 413, bad text 422."""
        try:
            return check_inputs(inputs, limits)
        except LimitError as err:
            raise HTTPError(413, str(err)) from None
        except InputError as err:
            raise HTTPError(422, str(err)) from None

    @app.get("/health", summary="Liveness: answers while the server runs")
    async def health() -> dict[str, Any]:
        """Liveness, and how many models are served."""
        return {"status": "ok", "models": len(served)}

    @app.get("/v1/models", response_model=ModelList, responses=ERRORS, summary="The models")
    async def list_models() -> dict[str, Any]:
        """Every served model's entry: its name, task and capabilities (Served.info)."""
        return {"models": [s.info() for s in served.values()]}

    @app.post(
        "/v1/models/{name}/predict",
        response_model=PredictResponse,
        responses=ERRORS,
        summary="Answer a batch of inputs, one output per input, in order",
    )
    async def predict(name: str, body: PredictRequest) -> dict[str, Any]:
        """One output per input, in order, batched with other requests; within the timeout."""
        until = time.monotonic() + config.timeout_s  # the work stops then too, not just the wait
        s = model(name)
        options = checked_options(s, body.options)
        inputs = checked_inputs(body.inputs)
        if isinstance(s.task, Costly):
            each = s.task.cost(options)
            work = len(inputs) * each
            if work > config.max_generated:
                raise HTTPError(
                    413,
                    f"{len(inputs)} inputs × {each:,} tokens = {work:,} tokens to generate "
                    f"(the limit is {config.max_generated:,} per request)",
                )
        with answering(config.timeout_s):
            outputs = await asyncio.wait_for(
                s.batcher.submit(inputs, options, until), timeout=config.timeout_s
            )
        return {"outputs": outputs}

    @app.post(
        "/v1/models/{name}/stream",
        responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
        summary="Stream one answer as server-sent events (language models)",
    )
    async def stream(name: str, body: StreamRequest) -> StreamingResponse:
        """One input's answer as server-sent events, piece by piece (streaming tasks only)."""
        s = model(name)
        if not isinstance(s.task, Streams):
            raise HTTPError(422, f"model {name!r} ({s.task.name}) does not stream; use predict")
        options = checked_options(s, body.options)
        (text,) = checked_inputs([body.input])
        until = time.monotonic() + config.timeout_s  # the stream's pieces are made under it
        with answering(config.timeout_s):
            pieces = await s.batcher.run(s.task.stream, text, options, until=until)
        return StreamingResponse(
            _events(s.batcher, pieces, config.timeout_s), media_type="text/event-stream"
        )

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        """The web page."""
        return FileResponse(STATIC / "index.html")

    @app.get("/static/{file}", include_in_schema=False)
    async def page_file(file: str) -> FileResponse:
        """One of the page's own files (PAGE_FILES); any other name is a 404."""
        if file not in PAGE_FILES:
            raise HTTPError(404, f"no file {file!r}")
        return FileResponse(STATIC / file)

    def openapi() -> dict[str, Any]:
        """The OpenAPI schema with each served model's options, built on first use."""
        if app.openapi_schema is None:
            app.openapi_schema = _schema_per_model(app, models, config)
        return app.openapi_schema

    app.openapi = openapi
    _guard(app, config)
    return app


def _schema_per_model(app: FastAPI, models: dict[str, Task], config: ServeConfig) -> dict:
    """The OpenAPI schema with one path per served model in place of ``{name}``, each with its
    task's own options and the server's limits, so that a client (or schemathesis) knows
    exactly what each model accepts."""
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    components = schema["components"]["schemas"]
    inputs = {
        "type": "array",
        "maxItems": config.max_inputs,
        "items": {"type": "string", "maxLength": config.max_chars},
        "description": "raw inputs, one answer each, in order",
    }
    paths = {}
    for template, operations in schema["paths"].items():
        if "{name}" not in template:
            paths[template] = operations
            continue
        for name, task in models.items():
            if template.endswith("/stream") and not isinstance(task, Streams):
                continue
            kind = "Stream" if template.endswith("/stream") else "Predict"
            body = f"{name}{kind}Request"
            components[body] = {
                "title": body,
                "type": "object",
                "additionalProperties": False,
                "required": ["input" if kind == "Stream" else "inputs"],
                "properties": {
                    ("input" if kind == "Stream" else "inputs"): (
                        inputs["items"] if kind == "Stream" else inputs
                    ),
                    "options": json_schema(task.Options),
                },
            }
            operation = json.loads(json.dumps(operations["post"]))
            operation["parameters"] = []
            operation["operationId"] = f"{kind.lower()}_{name}"
            content = operation["requestBody"]["content"]["application/json"]
            content["schema"] = {"$ref": f"#/components/schemas/{body}"}
            paths[template.replace("{name}", name)] = {"post": operation}
    schema["paths"] = paths
    return schema


async def _events(batcher: Batcher, pieces: Any, timeout_s: float) -> AsyncIterator[str]:
    """Server-sent events: ``data: {"text": piece}`` each, then ``event: done``."""
    end, started = object(), time.monotonic()
    late = {"status": 504, "message": f"stopped after {timeout_s:g} s"}
    while True:
        try:
            piece = await batcher.run(next, pieces, end)
        except DeadlineError:  # the generation itself stopped at its deadline
            error = late
        except Exception as err:  # noqa: BLE001 - the client hears of it, the server goes on
            error = {"status": 500, "message": f"generation failed ({type(err).__name__})"}
        else:
            if piece is end:
                yield "event: done\ndata: {}\n\n"
                return
            yield f"data: {json.dumps({'text': piece})}\n\n"
            if time.monotonic() - started <= timeout_s:
                continue
            error = late
        yield f"event: error\ndata: {json.dumps({'error': error})}\n\n"
        return


def _guard(app: FastAPI, config: ServeConfig) -> None:
    """Outer layers: the body size limit, the API key, and outermost CORS when asked for (so
    that a browser can read the 401s and 413s of the layers inside it too)."""
    app.add_middleware(BodyLimit, max_body=config.max_body)
    if config.api_key:
        app.add_middleware(ApiKey, key=config.api_key)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key"],
        )


class BodyLimit:
    """Refuse request bodies over ``max_body`` bytes with 413: by their declared length, or,
    when none is declared (chunked), as soon as the bytes read pass the limit. The body is
    read whole before the app sees it, which the limit keeps small."""

    def __init__(self, app: Any, max_body: int):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = _error(413, f"request body over {self.max_body:,} bytes")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            return await too_big(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                return await too_big(scope, receive, send)
            if not message.get("more_body"):
                break
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay() -> dict:
            """The body read above as one message, then the connection's own messages."""
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)


class ApiKey:
    """Every request but ``/health`` and the page's own files must carry the key, as
    ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; otherwise 401."""

    OPEN = {"/health", "/", *(f"/static/{f}" for f in PAGE_FILES)}

    def __init__(self, app: Any, key: str):
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.OPEN:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        given = headers.get(b"x-api-key", b"")
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            given = auth[7:].strip()
        if scope["method"] == "OPTIONS" or hmac.compare_digest(given, self.key):
            return await self.app(scope, receive, send)
        reply = _error(401, "missing or wrong API key (send Authorization: Bearer KEY)")
        await reply(scope, receive, send)


__all__ = ["ServeConfig", "create_app", "PredictRequest", "StreamRequest"]
