"""Tests of shared.judge_server's limits, against a real uvicorn server on a loopback port:
request bodies over the size limit, answers capped by the context, clients that leave in
the middle of a stream, a burst of concurrent requests, and a run of bad requests that
must each be refused while the server keeps serving.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from test_judge_server import CFG, ENC, GREEDY, HI, GatedGPT, make_model  # tiny models

from shared import judge_server
from shared.chat import ChatModel
from shared.gpt import GPTConfig, GPTModel
from shared.judge_server import MAX_BODY_BYTES, create_app, serve_in_background
from shared.runtime import REPO_DIR

sys.path.insert(0, str(REPO_DIR / "bench"))  # the load-test client is a script there
from judge_burst import burst  # noqa: E402

# No proxy: an http_proxy variable would send even 127.0.0.1 through it.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(autouse=True, scope="module")
def _threads(one_thread):
    yield


class SlowGPT(GPTModel):
    """Counts its forward passes and takes ``DELAY`` seconds for each: an answer of the
    whole context takes about a second, long enough to leave in the middle of it."""

    DELAY = 0.01

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__(cfg)
        self.calls = 0

    def forward(self, idx, kv_cache=None):
        self.calls += 1
        time.sleep(self.DELAY)
        return super().forward(idx, kv_cache)


def post(url: str, path: str, body: bytes, timeout: float = 20.0) -> tuple[int, dict]:
    """POST ``body``; (status, the JSON answer), error statuses included."""
    request = urllib.request.Request(
        url + path, data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with OPENER.open(request, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def chat_body(model: str = "tiny", **fields) -> bytes:
    return json.dumps({"model": model, "messages": HI, **fields}).encode()


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def host(url: str) -> str:
    """The Host header line for the server at ``url`` (any other name is refused)."""
    return f"Host: {url.removeprefix('http://')}\r\n"


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def read_head(sock: socket.socket) -> bytes:
    """The status line and headers of the answer on ``sock``."""
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            break
        head += data
    return head


def read_sized_answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """(head, body) of an answer on ``sock`` that has a Content-Length."""
    head, _, body = read_head(sock).partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.lower().split(b"\r\n")[1:]
        if line.startswith(b"content-length:")
    )
    while len(body) < length:
        data = sock.recv(4096)
        if not data:
            break
        body += data
    return head, body


# --------------------------------------------------------------------------- body size


def test_a_body_over_the_limit_is_413_naming_its_size_and_the_limit() -> None:
    cm = ChatModel("tiny", make_model(0), ENC)
    assert create_app({"tiny": cm}).state.max_body_bytes == MAX_BODY_BYTES == 1 << 20
    client = TestClient(create_app({"tiny": cm}, max_body_bytes=1000))
    big = chat_body(options={"stop": ["x" * 2000]})
    r = client.post("/api/chat", content=big)
    assert r.status_code == 413
    assert r.json() == {
        "error": f"the request body is {len(big)} bytes, over the server's limit of 1000 bytes: "
        "send a shorter request"
    }
    r = client.post("/api/generate", json={"model": "tiny", "prompt": "x" * 2000})
    assert r.status_code == 413 and "limit of 1000 bytes" in r.json()["error"]
    # the OpenAI endpoint: OpenAI's shape, with a code of its own (not the context's)
    r = client.post("/v1/chat/completions", content=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    # a body of exactly the limit is read
    exact = chat_body(stream=False, options=GREEDY)
    exact = exact[:-1] + b" " * (1000 - len(exact)) + b"}"
    assert len(exact) == 1000
    assert client.post("/api/chat", content=exact).status_code == 200
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="max_body_bytes"):
            create_app({"tiny": cm}, max_body_bytes=bad)


def test_a_declared_length_far_over_the_limit_is_refused_unread() -> None:
    app = create_app({"tiny": ChatModel("tiny", make_model(0), ENC)}, max_body_bytes=1000)
    with serve_in_background(app) as url, socket.create_connection(address(url), 10) as sock:
        # A gigabyte announced and none of it sent: the answer comes at once regardless.
        sock.sendall(
            f"POST /api/chat HTTP/1.1\r\n{host(url)}Content-Length: 1000000000\r\n\r\n".encode()
        )
        head, body = read_sized_answer(sock)
        assert head.startswith(b"HTTP/1.1 413 "), head
        assert b"is 1000000000 bytes" in body and b"limit of 1000 bytes" in body


def test_a_chunked_body_is_refused_once_past_the_limit(monkeypatch) -> None:
    monkeypatch.setattr(judge_server, "DISCARD_BYTES", 0)  # drop nothing more past the limit
    app = create_app({"tiny": ChatModel("tiny", make_model(0), ENC)}, max_body_bytes=1000)
    with serve_in_background(app) as url, socket.create_connection(address(url), 10) as sock:
        sock.sendall(
            f"POST /api/chat HTTP/1.1\r\n{host(url)}Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        for _ in range(2):  # 1200 bytes, and the body never ends: the server stops reading
            sock.sendall(b"258\r\n" + b" " * 600 + b"\r\n")
        head, body = read_sized_answer(sock)
        assert head.startswith(b"HTTP/1.1 413 "), head
        assert b"more than 1000 bytes" in body


def test_a_client_that_sends_it_all_before_reading_still_gets_the_413() -> None:
    # urllib sends the whole body and asks for the connection to be closed after the answer:
    # the server reads what is past the limit (up to DISCARD_BYTES) and drops it, so the
    # connection is not reset under unread data before the 413 is read.
    app = create_app({"tiny": ChatModel("tiny", make_model(0), ENC)}, max_body_bytes=1000)
    body = chat_body(options={"stop": ["x" * 3_000_000]})
    with serve_in_background(app) as url:
        status, answer = post(url, "/api/chat", body)
        assert status == 413
        assert f"is {len(body)} bytes" in answer["error"]
        assert post(url, "/api/chat", chat_body(stream=False, options=GREEDY))[0] == 200


# --------------------------------------------------------------------------- answer length


def test_num_predict_is_capped_by_the_context() -> None:
    client = TestClient(create_app({"tiny": ChatModel("tiny", make_model(0), ENC)}))
    huge = {"temperature": 0, "num_predict": 10**9}
    body = client.post("/api/chat", json={"model": "tiny", "messages": HI, "options": huge})
    final = [json.loads(line) for line in body.text.splitlines()][-1]
    assert final["done_reason"] == "length"
    assert final["eval_count"] == CFG.context_length - final["prompt_eval_count"]
    payload = {"model": "tiny", "messages": HI, "temperature": 0, "max_tokens": 10**9}
    usage = client.post("/v1/chat/completions", json=payload).json()["usage"]
    assert usage["total_tokens"] == CFG.context_length


# --------------------------------------------------------------------------- disconnects


# Streamed requests for answers as long as the context (the last one is left before any
# answer has come).
STREAMS = [
    ("/api/chat", chat_body("slow", options={"temperature": 0})),
    ("/api/generate", b'{"model": "slow", "prompt": "Hi", "options": {"temperature": 0}}'),
    ("/v1/chat/completions", chat_body("slow", stream=True, temperature=0)),
    ("/api/chat", chat_body("slow", options={"temperature": 0})),
]


def test_a_client_that_leaves_mid_stream_frees_its_slot_and_the_model() -> None:
    model = make_model(0, SlowGPT)
    cm = ChatModel("slow", model, ENC)
    app = create_app({"slow": cm}, max_requests=len(STREAMS))
    full = CFG.context_length  # forward passes of a whole answer: about a second
    with serve_in_background(app) as url:
        for i, (path, body) in enumerate(STREAMS):
            before = model.calls
            with socket.create_connection(address(url), 10) as sock:
                sock.sendall(
                    f"POST {path} HTTP/1.1\r\n{host(url)}Content-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                if i < len(STREAMS) - 1:  # the last one leaves before any answer
                    head = read_head(sock)
                    assert head.startswith(b"HTTP/1.1 200 "), head
                    first_piece = head.split(b"\r\n\r\n", 1)[1] or sock.recv(4096)
                    assert first_piece, f"{path}: no piece before the end of the stream"
            # Closed: the generation ends after the current token, the slot comes back and
            # the model's lock is free (it used to stay taken until a garbage collection).
            freed = wait_for(
                lambda: app.state.free_slots() == len(STREAMS) and not cm.lock.locked()
            )
            assert freed, (path, app.state.free_slots(), cm.lock.locked())
            calls = model.calls
            time.sleep(0.1)
            assert model.calls == calls, f"{path}: still generating for a client that left"
            assert calls - before < full // 4, (path, calls - before)
        # Every slot is back: as many requests as there are slots, at once, all answered.
        with ThreadPoolExecutor(len(STREAMS)) as pool:
            body = chat_body("slow", stream=False, options=GREEDY)
            statuses = list(pool.map(lambda _: post(url, "/api/chat", body)[0], STREAMS))
        assert statuses == [200] * len(STREAMS)
        assert app.state.free_slots() == len(STREAMS)


# --------------------------------------------------------------------------- burst


def test_a_burst_of_32_concurrent_requests_is_answered_identically() -> None:
    cm = ChatModel("tiny", make_model(0), ENC)
    app = create_app({"tiny": cm}, max_requests=32)  # all accepted, queued for the model
    question = HI[0]["content"]
    with serve_in_background(app) as url:
        burst(url, "tiny", n=1, prompt=question, timeout=20)  # warm up: the first is slower
        result = burst(url, "tiny", n=32, prompt=question, num_predict=8, timeout=20)
        assert app.state.free_slots() == 32
    figures = (
        f"{result['n']} requests in {result['seconds']:.2f} s: "
        f"{result['requests_per_s']:.1f} requests/s, p50 {result['p50_ms']:.0f} ms, "
        f"p95 {result['p95_ms']:.0f} ms, statuses {result['statuses']}"
        if result["ok"]
        else f"no answer: {result}"
    )
    print(f"\nburst: {figures}")
    assert result["ok"] == 32 and result["statuses"] == {200: 32}, figures
    assert result["answers"] == [cm.chat(question, **GREEDY)], figures
    assert result["seconds"] < 20, figures


def test_burst_counts_the_refused_ones() -> None:
    model = make_model(0, GatedGPT)
    app = create_app({"slow": ChatModel("slow", model, ENC)}, max_requests=1)
    with serve_in_background(app) as url:
        body = chat_body("slow", stream=False, options=GREEDY)
        first = threading.Thread(target=lambda: post(url, "/api/chat", body))
        first.start()
        assert model.entered.wait(10)
        result = burst(url, "slow", n=3, timeout=10)
        model.gate.set()
        first.join(10)
    assert result["ok"] == 0 and result["statuses"] == {503: 3}
    assert result["p50_ms"] is None and "server busy" in result["errors"][0]
    with pytest.raises(ValueError, match="n must be"):
        burst(url, "slow", n=0)


# --------------------------------------------------------------------------- bad requests


def test_bad_requests_at_a_running_server_are_4xx_and_it_keeps_serving() -> None:
    app = create_app({"tiny": ChatModel("tiny", make_model(0), ENC)}, max_requests=2)
    long = [{"role": "user", "content": "Nabo lives in Rushcombe. " * 40}]
    bad = [
        ("/api/chat", b"{not json", 400, "not valid JSON"),
        ("/api/chat", b"[" * 100_000, 400, "nested too deeply"),
        ("/api/chat", b'{"messages": []}', 400, "model is required"),
        ("/api/chat", b'{"model": "tiny"}', 400, "messages must be an array"),
        ("/api/generate", b'{"model": "tiny"}', 400, "prompt must be a string"),
        ("/api/chat", chat_body("llama3"), 404, "model 'llama3' not found"),
        ("/api/chat", json.dumps({"model": "tiny", "messages": long}).encode(), 413, "tokens"),
        ("/api/chat", chat_body(options={"stop": ["x" * MAX_BODY_BYTES]}), 413, "limit of"),
        ("/api/chat", chat_body(options={"temperature": -1}), 400, "options.temperature"),
    ]
    with serve_in_background(app) as url:
        for path, body, status, words in bad:
            got, answer = post(url, path, body)
            assert (got, words in answer.get("error", "")) == (status, True), (path, answer)
        got, answer = post(url, "/api/chat", chat_body(stream=False, options=GREEDY))
        assert got == 200 and answer["done"] is True and answer["eval_count"] == 8
        assert app.state.free_slots() == 2
