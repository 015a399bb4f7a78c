"""How a local model server stays safe and responsive under load: the parts of
``shared.judge_server`` that are not about Ollama's API.

- ``RequestQueue``: ``num_parallel`` requests are answered at once, up to ``max_queue``
  more wait their turn, first come first served, and only the next is refused (503, with
  ``Retry-After``). A turn is a generation thread, so the threads stay bounded however many
  clients come; the rest wait on the event loop, which costs nothing.
- ``while_connected``: a wait (a turn in the queue, a whole answer) that ends as soon as its
  client leaves, so a client that gave up neither holds a place nor gets an answer written.
- ``BrowserGuard``: the server has no authentication and trusts whatever reaches its
  loopback port, but a web page in a browser can reach that port too. So a ``Host`` that
  does not name the server is refused (DNS rebinding: a page's own name made to point at
  127.0.0.1, so that the browser takes the server for the page's site and lets the page
  read the answers), and so is an ``Origin`` other than the server's own or an allowed one.
- ``ReadTimeoutProtocol``: uvicorn's HTTP/1.1 with a time limit on the client's turn, so a
  client that opens connections and sends nothing (or half a request) cannot keep them.
- ``check_loopback`` and ``serve_in_background``: the server listens on the loopback
  interface only, and runs in a background thread of a notebook or a test.

Why a model's lock is never held across a yield to the client: whoever holds it keeps
every other request for that model waiting, and a client reads its answer at its own pace,
or never. Held while a piece waits for its client (or for a pool thread, which requests
waiting for the lock may all have taken), it would let one slow client stall everybody, or
deadlock the server. So only a generation thread takes it, one per turn in the queue, and
while it holds it waits for nothing but the CPU: its pieces go to the event loop through an
unbounded queue, so it always reaches the end of its answer and lets go.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import ipaddress
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import anyio
import uvicorn
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from shared.checks import is_int, is_number

__all__ = [
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_NUM_PARALLEL",
    "DEFAULT_READ_TIMEOUT",
    "MAX_NUM_PARALLEL",
    "BrowserGuard",
    "ReadTimeoutProtocol",
    "RequestError",
    "RequestQueue",
    "check_loopback",
    "check_read_timeout",
    "queue_limits",
    "serve_in_background",
    "uvicorn_options",
    "while_connected",
]

# The queue: requests answered at once (a thread each, so a bounded number), at most, and
# how many may wait for their turn. Then the seconds a client has to send its request.
DEFAULT_NUM_PARALLEL, MAX_NUM_PARALLEL, DEFAULT_MAX_QUEUE = 4, 64, 512
DEFAULT_READ_TIMEOUT = 30.0
_T = TypeVar("_T")


class RequestError(Exception):
    """A request the server refuses, with the HTTP status code that says why.

    ``code`` replaces the status's usual ``code`` in an API whose error shape has one
    (OpenAI's); ``headers`` go with the answer.
    """

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers


# --------------------------------------------------------------------------- the queue


def queue_limits(max_requests: Any, num_parallel: Any, max_queue: Any) -> tuple[int, int]:
    """(num_parallel, max_queue), from the older ``max_requests`` or from the two."""
    if max_requests is not None:
        if num_parallel is not None or max_queue is not None:
            raise ValueError("give max_requests, or num_parallel and max_queue, not both")
        if not is_int(max_requests) or max_requests < 1:
            raise ValueError(f"max_requests must be a positive int, got {max_requests!r}")
        return min(max_requests, MAX_NUM_PARALLEL), max(max_requests - MAX_NUM_PARALLEL, 0)
    num_parallel = DEFAULT_NUM_PARALLEL if num_parallel is None else num_parallel
    max_queue = DEFAULT_MAX_QUEUE if max_queue is None else max_queue
    if not is_int(num_parallel) or not 1 <= num_parallel <= MAX_NUM_PARALLEL:
        raise ValueError(f"num_parallel must be in [1, {MAX_NUM_PARALLEL}], got {num_parallel!r}")
    if not is_int(max_queue) or max_queue < 0:
        raise ValueError(f"max_queue must be an int >= 0, got {max_queue!r}")
    return num_parallel, max_queue


def _once(function: Callable[[], None]) -> Callable[[], None]:
    """``function``, run at the first call only (from any thread)."""
    first = threading.Lock()
    return lambda: function() if first.acquire(blocking=False) else None


class RequestQueue:
    """A queue as in Ollama: ``num_parallel`` requests are answered at once, up to ``max_queue``
    more wait for their turn (first come, first served), and the next one gets 503.

    ``enter`` gives a turn as a function that gives it back (once). The generation threads
    give turns back, so this is thread-safe: a turn goes straight to the first waiter, on
    that waiter's event loop.
    """

    def __init__(self, num_parallel: int, max_queue: int) -> None:
        self.num_parallel, self.max_queue = num_parallel, max_queue
        self.running = 0  # turns taken, or being handed to a waiter
        self.waiting: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = deque()
        self.lock = threading.Lock()

    def free(self) -> int:
        """How many more requests the server would take now, answered or queued."""
        with self.lock:
            return self.num_parallel + self.max_queue - self.running - len(self.waiting)

    async def enter(self) -> Callable[[], None]:
        loop = asyncio.get_running_loop()
        with self.lock:
            if self.running < self.num_parallel:  # (then nobody is waiting either)
                self.running += 1
                return _once(self.give_back)
            if len(self.waiting) >= self.max_queue:
                raise RequestError(
                    503,
                    f"server busy, please try again: {self.running} requests are being "
                    f"answered and {len(self.waiting)} are waiting, as many as it queues",
                    headers={"Retry-After": "1"},
                )
            waiter = (loop, loop.create_future())
            self.waiting.append(waiter)
        try:
            await waiter[1]
        except BaseException:  # cancelled: the client left, or the server stops
            with self.lock:
                if waiter in self.waiting:
                    self.waiting.remove(waiter)
                    raise
            if not waiter[1].cancel() and not waiter[1].cancelled():  # handed one just now
                self.give_back()
            raise
        return _once(self.give_back)

    def give_back(self) -> None:
        with self.lock:
            while self.waiting:
                loop, future = self.waiting.popleft()
                with contextlib.suppress(RuntimeError):  # (its event loop is closed)
                    loop.call_soon_threadsafe(self._hand_over, future)
                    return  # the turn passes on: as many are running as before
            self.running -= 1

    def _hand_over(self, future: asyncio.Future) -> None:
        if future.cancelled():  # its request left in the meantime: to the next one
            self.give_back()
        else:
            future.set_result(None)


async def while_connected(request: Request, work: Callable[[], Awaitable[_T]]) -> _T:
    """``await work()``, given up (499, which nobody reads) if the client leaves first."""
    finished, result, error = False, None, None

    async def watch(scope: anyio.CancelScope) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(watch, group.cancel_scope)
        try:
            result, finished = await work(), True
        except Exception as e:  # raised below: the task group would wrap it in a group
            error = e
        group.cancel_scope.cancel()
    if error is not None:
        raise error
    if not finished:
        raise RequestError(499, "the client closed the connection")
    return result  # type: ignore[return-value]


# --------------------------------------------------------------------------- browsers

# host[:port], an IPv6 address in brackets
_HOST_PORT = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+))(?::([0-9]{1,5}))?")


def _names_server(value: str, server: Any, default_port: int | None) -> bool:
    """Whether ``host[:port]`` names this server: ``localhost``, a loopback address (or the
    name the server goes by, as TestClient's does), with the server's port."""
    m = _HOST_PORT.fullmatch(value)
    if m is None:
        return False
    name, port = (m[1] or m[2]).lower().rstrip("."), int(m[3]) if m[3] else default_port
    server_name, server_port = server or (None, None)
    if port is not None and port != server_port:
        return False
    if name == "localhost" or (isinstance(server_name, str) and name == server_name.lower()):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class BrowserGuard:
    """Refuses (403) what only a web page in a browser sends: a ``Host`` that does not name
    this server (DNS rebinding: the page's own name made to point at 127.0.0.1, so that
    the browser takes the server for the page's site), and an ``Origin`` other than the
    server's own or an allowed one, whatever the method or content type (a ``text/plain``
    POST needs no CORS preflight: the browser sends it, and only hides the answer).

    ``error(path, status, message)`` makes the refusal, in the shape of the server's API.
    """

    def __init__(
        self,
        app: ASGIApp,
        allowed_origins: tuple[str, ...],
        error: Callable[[str, int, str], ASGIApp],
    ) -> None:
        self.app, self.allowed_origins, self.error = app, allowed_origins, error

    def refusal(self, scope: Scope) -> str | None:
        headers, server = Headers(scope=scope), scope.get("server")
        hosts = headers.getlist("host")
        if len(hosts) > 1 or (hosts and not _names_server(hosts[0], server, None)):
            return (
                f"the Host header {', '.join(hosts)!r} does not name this server (127.0.0.1, "
                "localhost or [::1] with its port): refused, against DNS rebinding"
            )
        origin = headers.get("origin")
        if origin is None:  # not a browser, or a page of this very server
            return None
        scheme, _, rest = origin.partition("://")
        port = {"http": 80, "https": 443}.get(scheme)
        if scheme == scope.get("scheme", "http") and _names_server(rest, server, port):
            return None
        if any(fnmatch.fnmatchcase(origin, allowed) for allowed in self.allowed_origins):
            return None
        return (
            f"cross-origin request from {origin!r} refused: only this server's own pages and "
            "the origins in allowed_origins (--allow-origin) may use it"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = self.refusal(scope) if scope["type"] == "http" else None
        if problem is None:
            await self.app(scope, receive, send)
        else:
            await self.error(scope["path"], 403, problem)(scope, receive, send)


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


def check_read_timeout(value: Any) -> float:
    """``value`` as a float, if it is a number of seconds > 0 (and finite), else ValueError."""
    if not is_number(value) or not 0 < value < float("inf"):
        raise ValueError(f"read_timeout must be a number of seconds > 0, got {value!r}")
    return float(value)


class ReadTimeoutProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a time limit on the client's turn: from the moment
    the connection opens, and again from the end of each answer, until the head of the
    next request has come. So a client that sends nothing, half a head, or not the rest of
    a body left unread is cut off after ``read_timeout`` s. (uvicorn's keep-alive timeout
    starts only after an answer, and any byte stops it.) The app times a body it reads."""

    def __init__(self, *args: Any, read_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout, self.read_timer = read_timeout, None

    def _time_the_client(self, on: bool = True) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
        self.read_timer = self.loop.call_later(self.read_timeout, self._late) if on else None

    def _late(self) -> None:
        if self.cycle is None or self.cycle.response_complete:  # still the client's turn
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._time_the_client()

    def connection_lost(self, exc: Exception | None) -> None:
        self._time_the_client(on=False)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # a request's head has come: the app's turn
            self._time_the_client(on=False)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.cycle is None or self.cycle.response_complete:  # (no request pipelined)
            self._time_the_client()


def uvicorn_options(app: Any, read_timeout: float | None) -> dict[str, Any]:
    """uvicorn's settings for ``app``: ``ReadTimeoutProtocol`` with ``read_timeout`` (None:
    the app's own ``app.state.read_timeout``, else the default), quiet logs."""
    if read_timeout is None:  # the app's own
        read_timeout = getattr(getattr(app, "state", None), "read_timeout", DEFAULT_READ_TIMEOUT)
    protocol = functools.partial(ReadTimeoutProtocol, read_timeout=check_read_timeout(read_timeout))
    return {"http": protocol, "log_level": "warning", "access_log": False}


@contextlib.contextmanager
def serve_in_background(
    app: ASGIApp,
    port: int = 0,
    host: str = "127.0.0.1",
    timeout: float = 30.0,
    read_timeout: float | None = None,
) -> Iterator[str]:
    """Run the ASGI ``app`` with uvicorn in a background thread; yield its URL; stop it on
    exit. ``port=0`` takes a free port (the URL says which); ``host`` must be a loopback
    address. A connection that sends no request, or half of one, within ``read_timeout``
    seconds (default: the app's) is closed."""
    check_loopback(host)
    if not is_int(port) or not 0 <= port < 2**16:
        raise ValueError(f"port must be an int in [0, 65535], got {port!r}")
    options = uvicorn_options(app, read_timeout)
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
    config = uvicorn.Config(app, timeout_graceful_shutdown=2, lifespan="off", **options)
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
