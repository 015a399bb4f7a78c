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
``shared.chat``, which works in process, without any server.

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

Errors are ``{"error": "..."}`` with the status code saying whose fault it is: 400 (the
request: bad JSON, a missing field, a bad option), 404 (``model 'x' not found``, Ollama's
wording), 413 (the request body is over ``MAX_BODY_BYTES``, or the prompt does not fit into
the model's context), 429 (too many requests at once), 500 (the server). An error after a
stream has started can no longer change the status code, so it arrives as a last line
``{"error": "..."}`` instead. A client that closes the connection in the middle of a stream
ends its generation after the current token, and its request slot is free again.

The server has no authentication, so it only ever listens on the loopback interface.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

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

__all__ = [
    "DEFAULT_MODELS",
    "RequestError",
    "check_loopback",
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


class RequestError(Exception):
    """A request the server refuses, with the HTTP status code that says why.

    ``code`` replaces the status's usual ``code`` in the OpenAI endpoints' error shape.
    """

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def _field_bool(data: Mapping[str, Any], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(400, f"{name} must be true or false, got {value!r}")
    return value


def _error(status: int, message: str) -> JSONResponse:
    """Ollama's error shape, ``{"error": "..."}``."""
    return JSONResponse({"error": message}, status_code=status)


_OPENAI_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "context_length_exceeded"),
    429: ("rate_limit_error", None),
}


def _openai_error(status: int, message: str, code: str | None = None) -> JSONResponse:
    """The OpenAI endpoints' error shape: message, type, param and code."""
    kind, usual_code = _OPENAI_ERROR_TYPES.get(status, ("api_error", None))
    code = code or usual_code
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    if request.url.path.startswith("/v1/"):
        return _openai_error(exc.status, exc.message, exc.code)
    return _error(exc.status, exc.message)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = f"{exc.detail}: {request.method} {request.url.path}"
    return _error(exc.status_code, message)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    # A bug on the server's side: 500 with the reason, instead of a plain text page.
    # (Starlette still re-raises the exception afterwards, so it is logged as well.)
    message = f"internal server error: {type(exc).__name__}: {exc}"
    if request.url.path.startswith("/v1/"):
        return _openai_error(500, message)
    return _error(500, message)


# --------------------------------------------------------------------------- answers


def _created_at() -> str:
    """The current UTC time as Ollama writes it: ISO 8601 ending in ``Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class _Slot:
    """One of the server's request slots, given back exactly once."""

    def __init__(self, semaphore: threading.BoundedSemaphore) -> None:
        self._semaphore = semaphore
        self._lock = threading.Lock()
        self._held = True

    def release(self) -> None:
        with self._lock:
            if self._held:
                self._held = False
                self._semaphore.release()


class _AnswerStream(StreamingResponse):
    """A streamed answer that ends its generation and gives its slot back however the
    stream ends: finished, failed, or dropped by the client.

    ``pieces`` is a generator of the encoded pieces whose ``close()`` ends the generation
    (and so lets go of the model's lock). Starlette alone would only stop pulling from it:
    the generator would stay suspended inside the model's lock until the garbage collector
    happened to find it, and every later request for that model would wait until then.
    """

    def __init__(
        self, request: Request, pieces: Iterator[bytes], slot: _Slot, media_type: str
    ) -> None:
        self.pieces = pieces
        self.slot = slot
        super().__init__(self._pull(request), media_type=media_type)

    async def _pull(self, request: Request) -> AsyncIterator[bytes]:
        # Checked before every piece, so a client that has gone costs at most one more
        # token, also under a server that does not cancel the stream when it notices.
        while not await request.is_disconnected():
            piece = await run_in_threadpool(next, self.pieces, None)
            if piece is None:
                return
            yield piece

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Safe to close here: a cancelled run_in_threadpool waits for its thread, so
            # the generator is suspended between pieces, never running.
            self.pieces.close()
            self.slot.release()


def _line(obj: Mapping[str, Any]) -> bytes:
    """One line of a JSON-lines stream (non-ASCII as is, so a piece stays readable)."""
    return json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n"


def _ollama_stream(answer: Answer, slot: _Slot, chunk: Callable[[str], dict]) -> Iterator[bytes]:
    """JSON lines: one per piece, then the final one (or an error line)."""
    pieces = iter(answer)
    try:
        for piece in pieces:
            yield _line(chunk(piece))
        yield _line({**chunk(""), "done": True, **answer.stats()})
    except Exception as e:  # the status line is sent already: report in the stream
        yield _line({"error": f"generation failed: {type(e).__name__}: {e}"})
    finally:
        pieces.close()  # a client that left early: end the generation, free the model
        slot.release()


def _openai_finish_reason(answer: Answer) -> str:
    return "length" if answer.done_reason == "length" else "stop"


def _openai_stream(answer: Answer, slot: _Slot, head: dict[str, Any]) -> Iterator[bytes]:
    """Server-sent events: one chunk per piece, the finish reason, then ``[DONE]``."""

    def event(delta: dict, reason: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": reason}
        body = {**head, "object": "chat.completion.chunk", "choices": [choice]}
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    pieces = iter(answer)
    try:
        for piece in pieces:
            yield event({"role": "assistant", "content": piece}, None)
        yield event({}, _openai_finish_reason(answer))
    except Exception as e:
        message = f"generation failed: {type(e).__name__}: {e}"
        error = {"message": message, "type": "api_error"}
        yield b"data: " + json.dumps({"error": error}).encode() + b"\n\n"
    finally:
        pieces.close()
        slot.release()
    yield b"data: [DONE]\n\n"


async def _collect(answer: Answer, slot: _Slot) -> str:
    try:
        return await run_in_threadpool(lambda: "".join(answer))
    finally:
        slot.release()


# --------------------------------------------------------------------------- the endpoints


class _Endpoints:
    """The endpoints of one app, sharing its models, its request slots and its body limit.

    Every answering endpoint goes through the same steps: ``read_json`` (the body, within
    the limit), ``find_model``, the checks of its own fields, then ``start`` (a request
    slot, the prompt, its length), and finally streams the answer or collects it whole.
    """

    def __init__(
        self, models: dict[str, ChatModel], max_requests: int, max_body_bytes: int
    ) -> None:
        self.models = models
        self.max_requests = max_requests
        self.max_body_bytes = max_body_bytes
        self.slots = threading.BoundedSemaphore(max_requests)

    # ----- the steps of a request

    def find_model(self, name: Any) -> ChatModel:
        if not isinstance(name, str) or not name:
            raise RequestError(400, "model is required: give the name of a served model")
        cm = self.models.get(name)
        if cm is None and name.endswith(":latest"):  # Ollama's default tag
            cm = self.models.get(name.removesuffix(":latest"))
        if cm is None:
            raise RequestError(404, f"model '{name}' not found")
        return cm

    def take_slot(self) -> _Slot:
        if not self.slots.acquire(blocking=False):
            raise RequestError(
                429,
                f"too many requests at once: the server answers at most {self.max_requests} "
                "at a time; try again in a moment",
            )
        return _Slot(self.slots)

    def body_too_large(self, size: str) -> RequestError:
        return RequestError(
            413,
            f"the request body is {size} bytes, over the server's limit of "
            f"{self.max_body_bytes} bytes: send a shorter request",
            code="request_too_large",
        )

    async def read_body(self, request: Request) -> bytes:
        """The body; 413 if it is over ``max_body_bytes``, which is then never kept."""
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

    async def start(
        self, cm: ChatModel, make_prompt: Callable[[], str], options: GenerationOptions
    ) -> tuple[Answer, _Slot]:
        """Take a slot, build the prompt, check its length: (answer, slot)."""
        started = now_ns()
        slot = self.take_slot()
        try:
            prompt = await run_in_threadpool(make_prompt)  # a template may be slow
            answer = cm.answer(prompt, options, started_ns=started)
        except ContextLengthError as e:
            slot.release()
            raise RequestError(413, str(e)) from None
        except ValueError as e:  # the messages do not fit the template
            slot.release()
            raise RequestError(400, str(e)) from None
        except BaseException:
            slot.release()
            raise
        return answer, slot

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
        answer, slot = await self.start(cm, lambda: cm.build_prompt(messages), options)

        def chunk(piece: str) -> dict[str, Any]:
            return {
                "model": cm.name,
                "created_at": _created_at(),
                "message": {"role": "assistant", "content": piece},
                "done": False,
            }

        if stream:
            body = _ollama_stream(answer, slot, chunk)
            return _AnswerStream(request, body, slot, "application/x-ndjson")
        text = await _collect(answer, slot)
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
        answer, slot = await self.start(cm, make_prompt, options)

        def chunk(piece: str) -> dict[str, Any]:
            return {"model": cm.name, "created_at": _created_at(), "response": piece, "done": False}

        if stream:
            body = _ollama_stream(answer, slot, chunk)
            return _AnswerStream(request, body, slot, "application/x-ndjson")
        text = await _collect(answer, slot)
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
        answer, slot = await self.start(cm, lambda: cm.build_prompt(messages), options)
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        head = {"id": ident, "created": created, "model": cm.name}
        if stream:
            body = _openai_stream(answer, slot, head)
            return _AnswerStream(request, body, slot, "text/event-stream")
        text = await _collect(answer, slot)
        message = {"role": "assistant", "content": text}
        usage = {
            "prompt_tokens": answer.prompt_eval_count,
            "completion_tokens": answer.eval_count,
            "total_tokens": answer.prompt_eval_count + answer.eval_count,
        }
        choice = {"index": 0, "message": message, "finish_reason": _openai_finish_reason(answer)}
        return {**head, "object": "chat.completion", "choices": [choice], "usage": usage}


def create_app(
    models: Mapping[str, ChatModel],
    max_requests: int = 4,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The FastAPI app that serves ``models`` (name -> ``ChatModel``) with Ollama's API.

    At most ``max_requests`` requests are answered or waiting at once (each model answers
    one at a time, the others wait their turn); one more gets 429. A request body over
    ``max_body_bytes`` gets 413. Run the app with ``serve_in_background(app)``, with
    uvicorn, or call it in process with FastAPI's ``TestClient``.
    """
    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty dict of name -> ChatModel")
    for key, cm in models.items():
        if not isinstance(cm, ChatModel):
            raise TypeError(f"models[{key!r}] must be a ChatModel, got {type(cm).__name__}")
    if not is_int(max_requests) or max_requests < 1:
        raise ValueError(f"max_requests must be a positive int, got {max_requests!r}")
    if not is_int(max_body_bytes) or max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be a positive int, got {max_body_bytes!r}")
    endpoints = _Endpoints(dict(models), max_requests, max_body_bytes)

    app = FastAPI(
        title="shared.judge_server",
        version=VERSION,
        description="The project's models behind Ollama's HTTP API.",
    )
    app.state.models = endpoints.models
    app.state.max_requests = max_requests
    app.state.max_body_bytes = max_body_bytes
    # The slots not taken right now (the count CPython's Semaphore keeps), for tests and
    # for a look at a running server.
    app.state.free_slots = lambda: endpoints.slots._value

    app.exception_handler(RequestError)(_request_error)
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.exception_handler(Exception)(_server_error)

    app.get("/", response_class=PlainTextResponse)(endpoints.root)
    app.get("/api/version")(endpoints.version)
    app.get("/api/tags")(endpoints.tags)
    app.post("/api/chat")(endpoints.chat)
    app.post("/api/generate")(endpoints.generate)
    app.get("/v1/models")(endpoints.openai_models)
    app.post("/v1/chat/completions")(endpoints.openai_chat)
    return app


# --------------------------------------------------------------------------- serving


def check_loopback(host: str) -> str:
    """``host`` if it is a loopback address (or ``localhost``), else ValueError.

    The server has no authentication: on any other interface everybody on the network
    could use it (and the machine's CPU).
    """
    if host == "localhost":
        return host
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"refusing to listen on {host!r}: this server has no authentication, so it only "
            "listens on the loopback interface (127.0.0.1, ::1 or localhost)"
        )
    return host


@contextlib.contextmanager
def serve_in_background(
    app: FastAPI | Mapping[str, ChatModel],
    port: int = 0,
    host: str = "127.0.0.1",
    timeout: float = 30.0,
) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread; yield its URL; stop it on exit.

    ``port=0`` takes a free port (the URL says which). A dict of ``ChatModel`` is turned
    into an app with ``create_app``. Use it in a ``with`` block::

        with serve_in_background(app) as url:
            judge_client.chat("Hello", "sft", url=url)
    """
    if isinstance(app, Mapping):
        app = create_app(app)
    check_loopback(host)
    if not is_int(port) or not 0 <= port < 2**16:
        raise ValueError(f"port must be an int in [0, 65535], got {port!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Bind the socket here, so the port is known (and ours) before the server starts.
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", timeout_graceful_shutdown=2, lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="judge-server", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the server on {host}:{bound_port} did not start")
        time.sleep(0.01)
    url_host = f"[{host}]" if family == socket.AF_INET6 else host
    try:
        yield f"http://{url_host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout)
        sock.close()


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


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m shared.judge_server``: serve checkpoints with Ollama's API."""
    parser = argparse.ArgumentParser(
        prog="python -m shared.judge_server",
        description="Serve the project's checkpoints with Ollama's HTTP API (loopback only).",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=PATH[:TEMPLATE]",
        help=f"a checkpoint to serve under NAME; TEMPLATE is one of {sorted(PROMPT_TEMPLATES)} "
        "(default: the one the checkpoint records, else alpaca). Repeat for more models. "
        f"Default: the released {', '.join(DEFAULT_MODELS)} checkpoints that exist.",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    parser.add_argument(
        "--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)"
    )
    parser.add_argument(
        "--max-requests", type=int, default=4, help="requests at once before 429 (default 4)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or mps (default cpu)")
    args = parser.parse_args(argv)
    try:
        check_loopback(args.host)
        specs = [parse_model_spec(s) for s in args.model]
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
    app = create_app(models, max_requests=args.max_requests)
    print(f"serving {sorted(models)} at http://{args.host}:{args.port} (Ctrl-C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
