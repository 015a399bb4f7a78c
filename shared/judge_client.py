"""A small client for Ollama's chat API: how chapter 12 asks a model for a verdict.

It speaks the HTTP API of Ollama (``ollama serve``), so the same code talks to a real
Ollama with any model it has pulled, and to ``shared.judge_server``, which serves the
project's own checkpoints in the same format. Only the standard library is used (``urllib``
and ``json``), so it runs in Colab as it is.

- ``chat``: send a question (or a list of chat messages), get the answer's text.
- ``chat_result``: the same, with the statistics of Ollama's final message
  (``done_reason``, ``eval_count``, durations in nanoseconds, ...).
- ``list_models``: the names the server offers (``GET /api/tags``).
- ``server_available``: does anything answer at that address (``GET /api/version``)?

What goes over the wire, for ``POST /api/chat``::

    {"model": "sft", "messages": [{"role": "user", "content": "..."}], "stream": true,
     "options": {"seed": 123, "temperature": 0, "num_ctx": 2048}}

With ``"stream": true`` the answer comes back as JSON lines, one object per piece of text,
``{"message": {"role": "assistant", "content": "piece"}, "done": false}``, and a last object
with ``"done": true`` and the statistics. With ``"stream": false`` one object holds it all.

Failures raise a ``JudgeClientError`` that says what to do: ``ServerUnavailableError``
(nothing answers: start a server), ``ModelNotFoundError`` (the server does not have the
model: pull it, or pick one from ``list_models``) and ``ServerError`` (any other error the
server reported). Busy servers (429) and server-side failures (500, 502, 503, 504) are
tried again a few times, waiting longer each time.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.checks import check_int, check_number

__all__ = [
    "DEFAULT_URL",
    "ChatResult",
    "JudgeClientError",
    "ModelNotFoundError",
    "ServerError",
    "ServerUnavailableError",
    "chat",
    "chat_result",
    "list_models",
    "server_available",
]

DEFAULT_URL = "http://127.0.0.1:11434"  # where `ollama serve` listens by default
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})  # worth asking again a little later
MAX_WAIT = 10.0  # seconds: the longest pause between two tries
START_HINT = "start one with `python -m shared.judge_server` or run `ollama serve`"


# --------------------------------------------------------------------------- errors


class JudgeClientError(RuntimeError):
    """Base class of the errors of this module."""


class ServerUnavailableError(JudgeClientError):
    """Nothing answered at the URL (or it did not answer in time)."""


class ModelNotFoundError(JudgeClientError):
    """The server answered 404: it has no model of that name."""

    def __init__(self, message: str, model: str, available: list[str] | None = None) -> None:
        super().__init__(message)
        self.model = model
        self.available = available


class ServerError(JudgeClientError):
    """The server reported an error; ``status`` is the HTTP status code (200 when the error
    arrived in the middle of a stream), ``message`` the server's own words."""

    def __init__(self, message: str, status: int, server_message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = server_message


@dataclass
class ChatResult:
    """The answer and Ollama's statistics from its final message (``final``, as sent)."""

    text: str
    model: str
    done_reason: str | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    total_duration: int | None = None  # nanoseconds, like every duration Ollama reports
    final: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- checks


def _check_url(url: str) -> str:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"url must start with http:// or https://, got {url!r}")
    return url.rstrip("/")


def _messages(prompt_or_messages: str | Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """A question becomes one user message; a list of messages is checked and copied."""
    if isinstance(prompt_or_messages, str):
        return [{"role": "user", "content": prompt_or_messages}]
    if not isinstance(prompt_or_messages, Sequence) or not prompt_or_messages:
        raise TypeError(
            "prompt_or_messages must be a string or a non-empty list of "
            f"{{'role': ..., 'content': ...}} dicts, got {prompt_or_messages!r}"
        )
    out = []
    for i, m in enumerate(prompt_or_messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise TypeError(f"prompt_or_messages[{i}] must be a dict with a 'role', got {m!r}")
        if not isinstance(m.get("content"), str):
            raise TypeError(f"prompt_or_messages[{i}]['content'] must be a string, got {m!r}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


# --------------------------------------------------------------------------- HTTP


def _server_message(body: bytes) -> str:
    """The ``error`` of a JSON error body (Ollama: a string, OpenAI: an object), else the body."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text[:500]
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        error = error.get("message")
    return str(error) if error is not None else text[:500]


def _retry_after(error: urllib.error.HTTPError) -> float | None:
    """The server's ``Retry-After`` header in seconds, if it sent a number."""
    value = error.headers.get("Retry-After") if error.headers else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _opener(url: str) -> urllib.request.OpenerDirector:
    """urllib's opener; for a server on this machine, one that ignores proxy settings
    (an ``http_proxy`` variable would otherwise send even 127.0.0.1 through the proxy)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost" or host.startswith("127.") or host == "::1":
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def _open(
    base: str,
    path: str,
    payload: Mapping[str, Any] | None,
    timeout: float,
    retries: int,
    backoff: float,
    model: str | None = None,
) -> http.client.HTTPResponse:
    """GET ``base + path`` (or POST ``payload`` as JSON); return the open response of a 2xx.

    Connection failures and the statuses in ``RETRY_STATUSES`` are tried again up to
    ``retries`` times, after ``backoff``, ``2 * backoff``, ``4 * backoff``, ... seconds
    (or what the server's ``Retry-After`` asks for), at most ``MAX_WAIT`` each.
    """
    url = base + path
    data = None if payload is None else json.dumps(payload).encode("utf-8")
    headers = {"Content-Type": "application/json"} if data is not None else {}
    for attempt in range(retries + 1):
        wait = min(MAX_WAIT, backoff * 2**attempt)
        request = urllib.request.Request(url, data=data, headers=headers)
        try:
            return _opener(url).open(request, timeout=timeout)
        except urllib.error.HTTPError as e:  # the server answered, with an error status
            body = e.read()
            e.close()
            message = _server_message(body)
            if e.code in RETRY_STATUSES and attempt < retries:
                asked = _retry_after(e)
                time.sleep(min(MAX_WAIT, wait if asked is None else asked))
                continue
            lowered = message.lower()
            if (
                e.code == 404
                and model is not None
                and "model" in lowered
                and "not found" in lowered
            ):
                raise _model_not_found(base, model, message, timeout) from None
            tries = f" (after {attempt + 1} tries)" if attempt else ""
            raise ServerError(
                f"the server at {base} answered {e.code}{tries}: {message}", e.code, message
            ) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            if attempt < retries:
                time.sleep(wait)
                continue
            tries = f" ({attempt + 1} tries)" if attempt else ""
            if isinstance(reason, TimeoutError):
                raise ServerUnavailableError(
                    f"the server at {base} did not answer within timeout={timeout} s{tries}; "
                    "a slow model may need a larger timeout"
                ) from None
            raise ServerUnavailableError(
                f"no server at {base} ({reason}){tries}: {START_HINT}"
            ) from None
    raise AssertionError("unreachable")  # every path of the last try returns or raises


def _model_not_found(base: str, model: str, message: str, timeout: float) -> ModelNotFoundError:
    """Ollama's 404 ``model '...' not found``, with the models the server does have."""
    try:
        available: list[str] | None = list_models(base, timeout=min(timeout, 5.0), retries=0)
    except JudgeClientError:
        available = None
    offer = (
        f" The server has: {', '.join(available) or 'no models'}." if available is not None else ""
    )
    said = "" if message == f"model '{model}' not found" else f" (the server said: {message})"
    return ModelNotFoundError(
        f"model {model!r} not found at {base}{said}. Pull it with `ollama pull {model}` "
        f"if the server is Ollama, or use a name from list_models({base!r}) "
        f"(GET {base}/api/tags).{offer}",
        model,
        available,
    )


# --------------------------------------------------------------------------- the API


def chat_result(
    prompt_or_messages: str | Sequence[Mapping[str, str]],
    model: str,
    url: str = DEFAULT_URL,
    *,
    seed: int = 123,
    temperature: float = 0.0,
    num_ctx: int = 2048,
    options: Mapping[str, Any] | None = None,
    stream: bool = True,
    timeout: float = 120.0,
    retries: int = 2,
    backoff: float = 0.5,
    on_piece: Callable[[str], Any] | None = None,
) -> ChatResult:
    """Ask ``model`` at ``url``; return the answer with Ollama's statistics.

    ``prompt_or_messages`` is a question (sent as one user message) or a list of
    ``{"role": "system" | "user" | "assistant", "content": ...}`` messages. ``seed``,
    ``temperature`` and ``num_ctx`` go into ``options``, together with any other Ollama
    option in ``options`` (``num_predict``, ``top_k``, ``stop``, ...). The defaults ask for
    greedy decoding (temperature 0), so the same question gets the same answer.

    ``stream=True`` reads the answer piece by piece as the model writes it (each piece is
    passed to ``on_piece`` if given, e.g. ``on_piece=print``); ``stream=False`` waits for
    one JSON object. The text is the same either way. ``timeout`` is in seconds per network
    operation; ``retries`` and ``backoff`` control the tries after a failure (see the module
    docstring).
    """
    if not isinstance(model, str) or not model:
        raise TypeError(f"model must be a non-empty string (a model name), got {model!r}")
    url = _check_url(url)
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(f"options must be a dict of Ollama options, got {options!r}")
    if not isinstance(stream, bool):
        raise TypeError(f"stream must be True or False, got {stream!r}")
    if on_piece is not None and not callable(on_piece):
        raise TypeError(f"on_piece must be a function of one string, got {on_piece!r}")
    payload = {
        "model": model,
        "messages": _messages(prompt_or_messages),
        "stream": stream,
        "options": {
            "seed": check_int(seed, "seed"),
            "temperature": check_number(temperature, "temperature", 0.0),
            "num_ctx": check_int(num_ctx, "num_ctx", 1),
            **(options or {}),
        },
    }
    timeout = check_number(timeout, "timeout", 0.0, exclusive=True)
    retries = check_int(retries, "retries", 0)
    backoff = check_number(backoff, "backoff", 0.0)

    response = _open(url, "/api/chat", payload, timeout, retries, backoff, model=model)
    try:
        final, text = _read_answer(response, url, stream, on_piece)
    except (OSError, http.client.HTTPException) as e:  # includes timeouts and resets
        raise ServerUnavailableError(
            f"the server at {url} stopped answering in the middle of the answer "
            f"({type(e).__name__}: {e}); with timeout={timeout} s"
        ) from None
    finally:
        response.close()
    return ChatResult(
        text=text,
        model=final.get("model", model),
        done_reason=final.get("done_reason"),
        prompt_eval_count=final.get("prompt_eval_count"),
        eval_count=final.get("eval_count"),
        total_duration=final.get("total_duration"),
        final=final,
    )


def _read_answer(
    response: http.client.HTTPResponse,
    url: str,
    stream: bool,
    on_piece: Callable[[str], Any] | None,
) -> tuple[dict[str, Any], str]:
    """(the final object, the whole text) from the body of a ``/api/chat`` answer."""
    if not stream:
        final = _json_object(response.read(), url)
        text = _content(final, url)
        if on_piece is not None and text:
            on_piece(text)
        return final, text
    pieces: list[str] = []
    for raw_line in response:  # one JSON object per line
        if not raw_line.strip():
            continue
        obj = _json_object(raw_line, url)
        piece = _content(obj, url)
        if piece:
            pieces.append(piece)
            if on_piece is not None:
                on_piece(piece)
        if obj.get("done"):
            return obj, "".join(pieces)
    raise ServerError(
        f'the stream from {url} ended before its final message ("done": true); '
        "the answer may be incomplete",
        200,
        "no final message",
    )


def _json_object(raw: bytes, url: str) -> dict[str, Any]:
    """One JSON object of the answer; an ``{"error": ...}`` object raises ServerError."""
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        snippet = raw[:200].decode("utf-8", errors="replace")
        raise ServerError(
            f"the server at {url} sent something that is not JSON ({e}): {snippet!r}; "
            "is it an Ollama-compatible server?",
            200,
            snippet,
        ) from None
    if not isinstance(obj, dict):
        raise ServerError(f"the server at {url} sent {obj!r}, not a JSON object", 200, str(obj))
    if "error" in obj:
        message = _server_message(json.dumps(obj).encode())
        raise ServerError(f"the server at {url} reported an error: {message}", 200, message)
    return obj


def _content(obj: Mapping[str, Any], url: str) -> str:
    message = obj.get("message")
    content = message.get("content", "") if isinstance(message, Mapping) else None
    if not isinstance(content, str):
        raise ServerError(
            f"the server at {url} sent an object without message.content: {obj!r}",
            200,
            "no message.content",
        )
    return content


def chat(
    prompt_or_messages: str | Sequence[Mapping[str, str]],
    model: str,
    url: str = DEFAULT_URL,
    *,
    seed: int = 123,
    temperature: float = 0.0,
    num_ctx: int = 2048,
    options: Mapping[str, Any] | None = None,
    stream: bool = True,
    timeout: float = 120.0,
    retries: int = 2,
    backoff: float = 0.5,
    on_piece: Callable[[str], Any] | None = None,
) -> str:
    """The text of ``model``'s answer: ``chat_result(...).text`` (same arguments).

    >>> chat("What colour is Nabo's hat?", "sft")  # doctest: +SKIP
    "Nabo's hat is red."
    """
    return chat_result(
        prompt_or_messages,
        model,
        url,
        seed=seed,
        temperature=temperature,
        num_ctx=num_ctx,
        options=options,
        stream=stream,
        timeout=timeout,
        retries=retries,
        backoff=backoff,
        on_piece=on_piece,
    ).text


def list_models(url: str = DEFAULT_URL, timeout: float = 10.0, retries: int = 2) -> list[str]:
    """The names of the models the server offers (``GET /api/tags``)."""
    url = _check_url(url)
    with _open(url, "/api/tags", None, timeout, check_int(retries, "retries", 0), 0.5) as r:
        data = _json_object(r.read(), url)
    models = data.get("models")
    if not isinstance(models, list):
        raise ServerError(f"{url}/api/tags sent no list of models: {data!r}", 200, str(data))
    return [m["name"] for m in models if isinstance(m, Mapping) and "name" in m]


def server_available(url: str = DEFAULT_URL, timeout: float = 2.0) -> bool:
    """True if an Ollama-compatible server answers at ``url`` (``GET /api/version``).

    Asks once, without retrying, so a notebook can check quickly and explain what to start.
    """
    url = _check_url(url)
    try:
        with _open(url, "/api/version", None, timeout, 0, 0.0) as response:
            return "version" in _json_object(response.read(), url)
    except JudgeClientError:
        return False
