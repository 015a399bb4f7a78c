"""A small local server that speaks Ollama's HTTP API, serving the project's own models.

Chapter 12 asks a model to judge answers through the same HTTP API that Ollama offers, so
the notebook's client works unchanged against a real Ollama (``ollama serve``) and against
this server, which serves the checkpoints in ``data/checkpoints`` with no download at all.

Start it from a shell (``--model`` may be repeated; the template is optional)::

    python -m shared.judge_server --port 11434 --model sft=data/checkpoints/sft.pt:alpaca

(with no ``--model`` it serves those of the released sft, ppo, dpo and judge checkpoints
that exist, each with the template its checkpoint records), or from a notebook, in a
background thread on a free port::

    app = create_app({"sft": ChatModel("sft", model, encoding)})  # ChatModel: shared.chat
    with serve_in_background(app) as url:
        print(judge_client.chat("What colour is Nabo's hat?", "sft", url=url))

This module is only the HTTP layer. The model behind it (the prompt templates, Ollama's
generation options, the answer streamed token by token, ``ChatModel`` itself) is
``shared.chat``, which works in process, without any server; the serving machinery that is
not about Ollama (the queue, the Host and Origin checks, the read timeout, the loopback
interface) is ``shared.serving``.

The endpoints, in Ollama's formats (all durations in nanoseconds):

- ``POST /api/chat``: ``{"model", "messages": [{"role", "content"}], "stream", "options"}``.
  Streamed (the default) as JSON lines, ``application/x-ndjson``: one object per piece of
  text, ``{"message": {"role": "assistant", "content": piece}, "done": false}``, then a
  final ``{"done": true, "done_reason": "stop" | "length", "eval_count", ...}``. With
  ``"stream": false`` a single object holds the whole answer and the statistics.
- ``POST /api/generate``: the same with ``"prompt"`` in and ``"response"`` out; ``"system"``
  adds a system message and ``"raw": true`` skips the template.
- ``GET /api/tags`` (the models served), ``GET /api/version``.
- ``POST /v1/chat/completions`` and ``GET /v1/models``: the OpenAI-compatible subset that
  Ollama offers as well (streaming as server-sent events).

The options understood (in ``"options"``), with Ollama's defaults: ``temperature`` (0.8),
``top_k`` (40, 0 turns it off), ``top_p`` (0.9), ``seed`` (a fresh random one when
absent), ``num_predict`` (-1: until end-of-text or the context is full), ``num_ctx`` (at most
the model's context length) and ``stop`` (strings that end the answer). Unknown options are
ignored, as Ollama does. ``temperature`` 0 is greedy decoding; above 0 the draws come from a
``torch.Generator`` seeded with ``seed``, so the same request with the same seed gives the
same answer.

Requests queue as in Ollama: ``num_parallel`` are answered at once (``--num-parallel``,
default 4, at most 64, like ``OLLAMA_NUM_PARALLEL``; each model still writes one answer at
a time), up to ``max_queue`` more wait their turn, first come first served (``--max-queue``,
default 512, like ``OLLAMA_MAX_QUEUE``), and only the next is refused: 503. The older
``--max-requests N`` says: N at once, answered or waiting (min(N, 64) of them answered).

Errors are ``{"error": "..."}`` with the status code saying whose fault it is: 400 (the
request: bad JSON, a missing field, a bad option), 403 (a web page's request: see below),
404 (``model 'x' not found``, Ollama's wording), 408 (the body did not arrive within the
read timeout), 413 (the request body is over ``MAX_BODY_BYTES``, or the prompt does not fit
into the model's context), 500 (the server), 503 (``server busy``: the queue is full, try
again later). An error after a stream has started can no longer change the status code, so
it arrives as a last line ``{"error": "..."}`` instead. A client that closes the connection
ends its generation after the current token, or leaves the queue.

The server has no authentication, so it only ever listens on the loopback interface, and
it refuses (403) what a web page in a browser could send it: a ``Host`` other than
``127.0.0.1:<port>``, ``localhost:<port>`` or ``[::1]:<port>`` (DNS rebinding), and an
``Origin`` other than its own (``--allow-origin`` adds some; ``*`` wildcards, as in
``OLLAMA_ORIGINS``); clients outside a browser send no ``Origin``. A connection that sends
no request, or half of one, within the read timeout (``--read-timeout``, 30 s) is closed.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from shared import serving
from shared.chat import (
    PROMPT_TEMPLATES,
    Answer,
    ChatModel,
    ContextLengthError,
    GenerationOptions,
    check_messages,
    json_type,
    load_chat_model,
    now_ns,
)
from shared.checks import is_int
from shared.runtime import DATA_DIR
from shared.serving import (
    DEFAULT_MAX_QUEUE,
    DEFAULT_NUM_PARALLEL,
    DEFAULT_READ_TIMEOUT,
    MAX_NUM_PARALLEL,
    BrowserGuard,
    RequestError,
    RequestQueue,
    check_loopback,
    check_read_timeout,
    queue_limits,
    uvicorn_options,
    while_connected,
)

__all__ = [
    "DEFAULT_MODELS",
    "create_app",
    "main",
    "parse_model_spec",
    "serve_in_background",
]

VERSION = "0.1.0"
DEFAULT_PORT = 11434  # Ollama's port, so a client's default URL finds either server
# The largest request body read (413 above it). A chat that fills even a 1024-token context
# is a few KiB of JSON; the limit keeps a runaway client from filling the server's memory.
MAX_BODY_BYTES = 1 << 20
# How much of a body past the limit is still read, and dropped, before the 413 goes out.
# A client that sends its whole body before it reads the answer (urllib, which also asks
# for the connection to be closed) would otherwise find the connection reset under unread
# data, and never see the 413. A body declared longer than that is refused unread.
DISCARD_BYTES = 16 << 20


# --------------------------------------------------------------------------- errors


def _field_bool(data: Mapping[str, Any], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(400, f"{name} must be true or false, got {value!r}")
    return value


def _dumps(obj: Any, separators: tuple[str, str] | None = None) -> bytes:
    """JSON, non-ASCII as is; ``\\u`` escapes where the text holds a lone surrogate (from a
    request's ``"\\ud800"``), which UTF-8 cannot encode."""
    try:
        return json.dumps(obj, ensure_ascii=False, separators=separators).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, separators=separators).encode("ascii")


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return _dumps(content, separators=(",", ":"))


_OPENAI_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    408: ("invalid_request_error", "request_timeout"),
    413: ("invalid_request_error", "context_length_exceeded"),
    503: ("server_error", "server_busy"),
}


def _error(path: str, status: int, message: str, code=None, headers=None) -> JSONResponse:
    """Ollama's error shape, ``{"error": "..."}``; under ``/v1/`` OpenAI's (message, type,
    param and code)."""
    if not path.startswith("/v1/"):
        return _JSON({"error": message}, status_code=status, headers=headers)
    kind, usual_code = _OPENAI_ERROR_TYPES.get(status, ("api_error", None))
    body = {"message": message, "type": kind, "param": None, "code": code or usual_code}
    return _JSON({"error": body}, status_code=status, headers=headers)


async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    return _error(request.url.path, exc.status, exc.message, exc.code, exc.headers)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return _error("/", exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    # A bug on the server's side: 500 with the reason, instead of a plain text page.
    # (Starlette still re-raises the exception afterwards, so it is logged as well.)
    message = f"internal server error: {type(exc).__name__}: {exc}"
    return _error(request.url.path, 500, message)


# --------------------------------------------------------------------------- answers


def _created_at() -> str:
    """The current UTC time as Ollama writes it: ISO 8601 ending in ``Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class _AnswerStream(StreamingResponse):
    """A streamed answer that ends its generation however the stream ends: finished,
    failed, or dropped by the client (the generation stops after its current token)."""

    def __init__(
        self, request: Request, answer: Answer, lines: AsyncIterator[bytes], media_type: str
    ) -> None:
        self.answer = answer
        super().__init__(self._pull(request, lines), media_type=media_type)

    async def _pull(self, request: Request, lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        # Checked before every piece, so a client that has gone costs at most one more
        # token, also under a server that does not cancel the stream when it notices.
        async for line in lines:
            if await request.is_disconnected():
                return
            yield line

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.answer.cancel()  # (a no-op once the answer is complete)


def _line(obj: Mapping[str, Any]) -> bytes:
    """One line of a JSON-lines stream (non-ASCII as is, so a piece stays readable)."""
    return _dumps(obj) + b"\n"


async def _ollama_stream(answer: Answer, pieces: AsyncIterator[str], chunk: Callable):
    """JSON lines: one per piece, then the final one (or an error line)."""
    try:
        async for piece in pieces:
            yield _line(chunk(piece))
        yield _line({**chunk(""), "done": True, **answer.stats()})
    except Exception as e:  # the status line is sent already: report in the stream
        yield _line({"error": f"generation failed: {type(e).__name__}: {e}"})


def _openai_finish_reason(answer: Answer) -> str:
    return "length" if answer.done_reason == "length" else "stop"


async def _openai_stream(answer: Answer, pieces: AsyncIterator[str], head: dict[str, Any]):
    """Server-sent events: one chunk per piece, the finish reason, then ``[DONE]``."""

    def event(delta: dict, reason: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": reason}
        body = {**head, "object": "chat.completion.chunk", "choices": [choice]}
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    try:
        async for piece in pieces:
            yield event({"role": "assistant", "content": piece}, None)
        yield event({}, _openai_finish_reason(answer))
    except Exception as e:
        message = f"generation failed: {type(e).__name__}: {e}"
        error = {"message": message, "type": "api_error"}
        yield b"data: " + json.dumps({"error": error}).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


async def _collect(request: Request, answer: Answer, pieces: AsyncIterator[str]) -> str:
    async def text() -> str:
        return "".join([piece async for piece in pieces])

    try:
        return await while_connected(request, text)
    finally:
        answer.cancel()  # (a no-op once the answer is complete)


# --------------------------------------------------------------------------- the endpoints


class _Endpoints:
    """The endpoints of one app, sharing its models, its queue and its limits.

    Every answering endpoint goes through the same steps: ``read_json`` (the body, within
    the limits), ``find_model``, the checks of its own fields, ``run`` (the prompt, a turn
    in the queue, the generation), and finally streams the answer or collects it whole.

    Why no number of requests can deadlock the server: a model's lock is only ever taken
    by a generation thread (``Answer.start_thread``: one per request being answered, at
    most ``num_parallel``; never a thread of the pool Starlette shares), and while it holds
    the lock it waits for nothing but the CPU: its pieces go to the event loop through an
    unbounded queue, whatever the client does. So the holder always reaches the end of its
    answer (or its cancel) and lets go, the next generation thread waiting for that model
    gets the lock, the event loop never waits for a lock, and the pool's threads (the
    templates, the tokenizer) take none. (The lock used to be held between the pieces
    while each next piece needed a pool thread: 40 streams waiting for it took them all.)
    """

    def __init__(
        self, models: dict[str, ChatModel], queue: RequestQueue, max_body_bytes: int, timeout: float
    ) -> None:
        self.models, self.queue = models, queue
        self.max_body_bytes, self.read_timeout = max_body_bytes, timeout

    # ----- the steps of a request

    def find_model(self, name: Any) -> ChatModel:
        if not isinstance(name, str) or not name:
            raise RequestError(400, "model is required: give the name of a served model")
        cm = self.models.get(name)
        if cm is None and name.endswith(":latest"):  # Ollama's default tag
            cm = self.models.get(name.removesuffix(":latest"))
        if cm is None:  # (a lone surrogate written as \udxxx)
            name = name.encode("utf-8", "backslashreplace").decode("utf-8")
            raise RequestError(404, f"model '{name}' not found")
        return cm

    def body_too_large(self, size: str) -> RequestError:
        return RequestError(
            413,
            f"the request body is {size} bytes, over the server's limit of "
            f"{self.max_body_bytes} bytes: send a shorter request",
            code="request_too_large",
        )

    async def read_body(self, request: Request) -> bytes:
        """The body; 413 if it is over ``max_body_bytes`` (then never kept), 408 (and the
        connection closed) if it has not all come within ``read_timeout``."""
        try:
            with anyio.fail_after(self.read_timeout):
                return await self._read_body(request)
        except TimeoutError:
            message = f"the request body did not arrive within {self.read_timeout:g} s"
            raise RequestError(408, message, headers={"Connection": "close"}) from None
        except ClientDisconnect:
            raise RequestError(499, "the client closed the connection") from None

    async def _read_body(self, request: Request) -> bytes:
        limit = self.max_body_bytes
        length = request.headers.get("content-length", "")
        # (uvicorn has already refused a malformed Content-Length with a 400 of its own.)
        declared = int(length) if length.isascii() and length.isdigit() else None
        too_big = declared is not None and declared > limit
        if too_big and declared > limit + DISCARD_BYTES:
            raise self.body_too_large(length)  # without reading any of it
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():  # chunked: no length known in advance
            size += len(chunk)
            if size > limit + DISCARD_BYTES:
                raise self.body_too_large(f"more than {limit}")
            if size > limit:
                too_big = True
                chunks.clear()  # from here on, the body is only read and dropped
            if not too_big:
                chunks.append(chunk)
        if too_big:
            raise self.body_too_large(str(size if declared is None else declared))
        return b"".join(chunks)

    async def read_json(self, request: Request) -> dict[str, Any]:
        body = await self.read_body(request)
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RequestError(400, f"the request body is not valid JSON: {e}") from None
        except RecursionError:  # [[[[... : json's parser recurses once per level
            raise RequestError(400, "the request body is JSON nested too deeply") from None
        if not isinstance(data, dict):
            raise RequestError(
                400, f"the request body must be a JSON object, got {json_type(data)}"
            )
        return data

    async def run(
        self,
        request: Request,
        cm: ChatModel,
        make_prompt: Callable[[], str],
        options: GenerationOptions,
    ) -> tuple[Answer, AsyncIterator[str]]:
        """(answer, its pieces): the prompt checked (400, 413) before the request queues,
        in a pool thread (a template or the tokenizer may be slow; neither takes a lock);
        a turn in the queue (503 when it is full); the generation, in a thread of its own."""
        started = now_ns()
        try:
            answer = await run_in_threadpool(
                lambda: cm.answer(make_prompt(), options, started_ns=started)
            )
        except ContextLengthError as e:
            raise RequestError(413, str(e)) from None
        except ValueError as e:  # the messages do not fit the template
            raise RequestError(400, str(e)) from None
        give_back = await while_connected(request, self.queue.enter)
        try:
            if await request.is_disconnected():  # gone while its prompt was made
                raise RequestError(499, "the client closed the connection")
            return answer, answer.start_thread(finish=give_back)
        except BaseException:
            give_back()
            raise

    # ----- Ollama's endpoints

    async def root(self) -> str:
        return "Ollama is running"  # what Ollama answers here; some clients check it

    async def version(self) -> dict[str, str]:
        return {"version": VERSION}

    async def tags(self) -> dict[str, Any]:
        return {"models": [cm.describe() for cm in self.models.values()]}

    async def chat(self, request: Request):
        data = await self.read_json(request)
        cm = self.find_model(data.get("model"))
        try:
            messages = check_messages(data.get("messages"))
            options = GenerationOptions.from_ollama(data.get("options"))
        except ValueError as e:
            raise RequestError(400, str(e)) from None
        stream = _field_bool(data, "stream", True)
        answer, pieces = await self.run(request, cm, lambda: cm.build_prompt(messages), options)

        def chunk(piece: str) -> dict[str, Any]:
            return {
                "model": cm.name,
                "created_at": _created_at(),
                "message": {"role": "assistant", "content": piece},
                "done": False,
            }

        if stream:
            lines = _ollama_stream(answer, pieces, chunk)
            return _AnswerStream(request, answer, lines, "application/x-ndjson")
        text = await _collect(request, answer, pieces)
        return {**chunk(text), "done": True, **answer.stats()}

    async def generate(self, request: Request):
        data = await self.read_json(request)
        cm = self.find_model(data.get("model"))
        prompt, system = data.get("prompt"), data.get("system")
        if not isinstance(prompt, str):
            raise RequestError(400, f"prompt must be a string, got {json_type(prompt)}")
        if system is not None and not isinstance(system, str):
            raise RequestError(400, f"system must be a string, got {json_type(system)}")
        try:
            options = GenerationOptions.from_ollama(data.get("options"))
        except ValueError as e:
            raise RequestError(400, str(e)) from None
        stream = _field_bool(data, "stream", True)
        raw = _field_bool(data, "raw", False)
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        make_prompt = (lambda: prompt) if raw else (lambda: cm.build_prompt(messages))
        answer, pieces = await self.run(request, cm, make_prompt, options)

        def chunk(piece: str) -> dict[str, Any]:
            return {"model": cm.name, "created_at": _created_at(), "response": piece, "done": False}

        if stream:
            lines = _ollama_stream(answer, pieces, chunk)
            return _AnswerStream(request, answer, lines, "application/x-ndjson")
        text = await _collect(request, answer, pieces)
        return {**chunk(text), "done": True, **answer.stats()}

    # ----- the OpenAI-compatible endpoints

    async def openai_models(self) -> dict[str, Any]:
        data = [
            {
                "id": name,
                "object": "model",
                "created": int(cm.modified_at.timestamp()),
                "owned_by": "library",
            }
            for name, cm in self.models.items()
        ]
        return {"object": "list", "data": data}

    async def openai_chat(self, request: Request):
        data = await self.read_json(request)
        cm = self.find_model(data.get("model"))
        try:
            messages = check_messages(data.get("messages"))
        except ValueError as e:
            raise RequestError(400, str(e)) from None
        n = data.get("n", 1)
        if n != 1 or isinstance(n, bool):
            raise RequestError(400, f"n must be 1 (one answer per request), got {n!r}")
        max_tokens = data.get("max_completion_tokens", data.get("max_tokens"))
        if max_tokens is not None and (not is_int(max_tokens) or max_tokens < 1):
            raise RequestError(400, f"max_tokens must be a positive integer, got {max_tokens!r}")
        picked = {k: data.get(k) for k in ("temperature", "top_p", "seed", "stop")}
        picked["num_predict"] = max_tokens
        try:  # OpenAI's defaults: temperature 1, no top-k, top-p 1
            options = GenerationOptions.from_ollama(
                picked, defaults={"temperature": 1.0, "top_k": 0, "top_p": 1.0}, where=""
            )
        except ValueError as e:
            raise RequestError(400, str(e)) from None
        stream = _field_bool(data, "stream", False)
        answer, pieces = await self.run(request, cm, lambda: cm.build_prompt(messages), options)
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        head = {"id": ident, "created": created, "model": cm.name}
        if stream:
            lines = _openai_stream(answer, pieces, head)
            return _AnswerStream(request, answer, lines, "text/event-stream")
        text = await _collect(request, answer, pieces)
        message = {"role": "assistant", "content": text}
        usage = {
            "prompt_tokens": answer.prompt_eval_count,
            "completion_tokens": answer.eval_count,
            "total_tokens": answer.prompt_eval_count + answer.eval_count,
        }
        choice = {"index": 0, "message": message, "finish_reason": _openai_finish_reason(answer)}
        return {**head, "object": "chat.completion", "choices": [choice], "usage": usage}


# --------------------------------------------------------------------------- the app


def create_app(
    models: Mapping[str, ChatModel],
    max_requests: int | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    *,
    num_parallel: int | None = None,
    max_queue: int | None = None,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    allowed_origins: Sequence[str] = (),
) -> FastAPI:
    """The FastAPI app that serves ``models`` (name -> ``ChatModel``) with Ollama's API.

    ``num_parallel`` requests (default 4, at most 64) are answered at once (each model
    writes one answer at a time, the others wait for it), up to ``max_queue`` more (default
    512) wait their turn, and the next gets 503; or ``max_requests``: that many at once,
    answered or waiting. A request body over ``max_body_bytes`` gets 413, and 408 if it
    has not come within ``read_timeout`` seconds (``serve_in_background`` also closes a
    connection that sends no request within it). ``allowed_origins``: web origins besides
    the server's own whose pages may use it (``*`` wildcards). Run the app with
    ``serve_in_background(app)``, with uvicorn, or in process with FastAPI's ``TestClient``.
    """
    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty dict of name -> ChatModel")
    for key, cm in models.items():
        if not isinstance(cm, ChatModel):
            raise TypeError(f"models[{key!r}] must be a ChatModel, got {type(cm).__name__}")
    num_parallel, max_queue = queue_limits(max_requests, num_parallel, max_queue)
    if not is_int(max_body_bytes) or max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be a positive int, got {max_body_bytes!r}")
    if isinstance(allowed_origins, str) or not all(isinstance(o, str) for o in allowed_origins):
        raise TypeError(f"allowed_origins must be a list of strings, got {allowed_origins!r}")
    queue = RequestQueue(num_parallel, max_queue)
    endpoints = _Endpoints(dict(models), queue, max_body_bytes, check_read_timeout(read_timeout))

    app = FastAPI(
        title="shared.judge_server",
        version=VERSION,
        description="The project's models behind Ollama's HTTP API.",
        default_response_class=_JSON,
    )
    app.state.models = endpoints.models
    app.state.num_parallel, app.state.max_queue = num_parallel, max_queue
    app.state.max_requests = num_parallel + max_queue  # answered or waiting, at most
    app.state.max_body_bytes, app.state.read_timeout = max_body_bytes, endpoints.read_timeout
    app.state.free_slots = queue.free  # (for tests, and for a look at a running server)

    app.exception_handler(RequestError)(_request_error)
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.exception_handler(Exception)(_server_error)
    if allowed_origins:  # their pages may read the answers too (CORS headers)
        pattern = "|".join(fnmatch.translate(o) for o in allowed_origins)
        app.add_middleware(
            CORSMiddleware, allow_origin_regex=pattern, allow_methods=["*"], allow_headers=["*"]
        )
    guard = {"allowed_origins": tuple(allowed_origins), "error": _error}
    app.add_middleware(BrowserGuard, **guard)  # outermost

    app.get("/", response_class=PlainTextResponse)(endpoints.root)
    app.get("/api/version")(endpoints.version)
    app.get("/api/tags")(endpoints.tags)
    app.post("/api/chat")(endpoints.chat)
    app.post("/api/generate")(endpoints.generate)
    app.get("/v1/models")(endpoints.openai_models)
    app.post("/v1/chat/completions")(endpoints.openai_chat)
    return app


# --------------------------------------------------------------------------- serving


@contextlib.contextmanager
def serve_in_background(
    app: FastAPI | Mapping[str, ChatModel],
    port: int = 0,
    host: str = "127.0.0.1",
    timeout: float = 30.0,
    read_timeout: float | None = None,
) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread; yield its URL; stop it on exit.

    ``port=0`` takes a free port (the URL says which). A dict of ``ChatModel`` is turned
    into an app with ``create_app``. A connection that sends no request, or half of one,
    within ``read_timeout`` seconds (default: the app's) is closed (``shared.serving`` does
    the serving, for any app). Use it in a ``with`` block::

        with serve_in_background(app) as url:
            judge_client.chat("Hello", "sft", url=url)
    """
    if isinstance(app, Mapping):
        app = create_app(app)
    with serving.serve_in_background(app, port, host, timeout, read_timeout) as url:
        yield url


# --------------------------------------------------------------------------- command line

# The released models served when no --model is given (those whose file exists).
DEFAULT_MODELS = ("sft", "ppo", "dpo", "judge")


def parse_model_spec(spec: str) -> tuple[str, Path, str | None]:
    """``name=path/to/checkpoint.pt[:template]`` -> (name, path, template or None)."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise ValueError(
            f"--model must look like name=path/to/checkpoint.pt[:template], got {spec!r}"
        )
    path, template = rest, None
    head, colon, tail = rest.rpartition(":")
    if colon and tail in PROMPT_TEMPLATES:  # (a Windows drive letter is no template name)
        path, template = head, tail
    return name, Path(path), template


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shared.judge_server",
        description="Serve the project's checkpoints with Ollama's HTTP API (loopback only).",
    )
    add = parser.add_argument
    add(
        "--model",
        action="append",
        default=[],
        metavar="NAME=PATH[:TEMPLATE]",
        help=f"a checkpoint to serve under NAME; TEMPLATE is one of {sorted(PROMPT_TEMPLATES)} "
        "(default: the one the checkpoint records, else alpaca). Repeat for more models. "
        f"Default: the released {', '.join(DEFAULT_MODELS)} checkpoints that exist.",
    )
    add("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    add("--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)")
    for flag, kind, default, text in [
        ("--num-parallel", int, None, "requests answered at once, like OLLAMA_NUM_PARALLEL "
         f"(default {DEFAULT_NUM_PARALLEL}, at most {MAX_NUM_PARALLEL})"),
        ("--max-queue", int, None, "requests that may wait their turn before the next gets "
         f"503, like OLLAMA_MAX_QUEUE (default {DEFAULT_MAX_QUEUE})"),
        ("--max-requests", int, None, "instead of those two: requests at once, answered or "
         f"waiting, before 503 (min(N, {MAX_NUM_PARALLEL}) answered, the rest queued)"),
        ("--read-timeout", float, DEFAULT_READ_TIMEOUT, "seconds a client has to send its "
         f"request (default {DEFAULT_READ_TIMEOUT:g})"),
    ]:  # fmt: skip
        add(flag, type=kind, default=default, help=text)
    add(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web origin whose pages may use the server too, like OLLAMA_ORIGINS (* "
        "matches anything; repeat for more). Default: only the server's own.",
    )
    add("--device", default="cpu", help="cpu, cuda or mps (default cpu)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m shared.judge_server``: serve checkpoints with Ollama's API."""
    parser = _parser()
    args = parser.parse_args(argv)
    limits = {"max_requests": args.max_requests, "num_parallel": args.num_parallel}
    limits |= {"max_queue": args.max_queue, "read_timeout": args.read_timeout}
    try:
        check_loopback(args.host)
        specs = [parse_model_spec(s) for s in args.model]
        queue_limits(args.max_requests, args.num_parallel, args.max_queue)  # before any loading
        check_read_timeout(args.read_timeout)
    except ValueError as e:
        parser.error(str(e))
    if not specs:
        folder = DATA_DIR / "checkpoints"
        specs = [
            (n, folder / f"{n}.pt", None) for n in DEFAULT_MODELS if (folder / f"{n}.pt").exists()
        ]
        if not specs:
            parser.error(f"no --model given and no released checkpoint in {folder}")
    models = {}
    for name, path, template in specs:
        if name in models:
            parser.error(f"the model name {name!r} is given twice")
        if not path.is_file():
            parser.error(f"--model {name}: no checkpoint file at {path}")
        try:
            models[name] = load_chat_model(name, path, template, device=args.device)
        except (ValueError, OSError) as e:  # a bad file, another tokenizer, a bad template
            parser.error(f"--model {name}: {e}")
        print(f"loaded {models[name]!r} from {path}")
    app = create_app(models, allowed_origins=args.allow_origin, **limits)
    print(f"serving {sorted(models)} at http://{args.host}:{args.port} (Ctrl-C stops)")
    uvicorn.run(app, host=args.host, port=args.port, **uvicorn_options(app, None))


if __name__ == "__main__":
    main()
