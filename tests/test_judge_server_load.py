"""Tests of shared.judge_server under load and under hostile HTTP, against a real uvicorn
server on a loopback port: many streams at once (no deadlock), Ollama's queue and its 503,
lone surrogates, half-sent requests, and the Host and Origin checks against web pages.

Every test stops by itself: the clients have timeouts, and threads are joined with one.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from fastapi.testclient import TestClient
from test_judge_server import ENC, GREEDY, HI, GatedGPT, make_model
from test_judge_server_limits import SlowGPT, address, chat_body, host, post, read_head, wait_for

from shared.chat import ChatModel
from shared.judge_server import (
    DEFAULT_MAX_QUEUE,
    DEFAULT_NUM_PARALLEL,
    DEFAULT_READ_TIMEOUT,
    MAX_NUM_PARALLEL,
    create_app,
    main,
    serve_in_background,
)

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(autouse=True, scope="module")
def _threads(one_thread):
    yield


def request(url: str, path: str, body: bytes | None = None, headers=None, timeout=20.0):
    """(status, headers, body text) of one request, error statuses included."""
    req = urllib.request.Request(url + path, data=body, headers=headers or {})
    try:
        with OPENER.open(req, timeout=timeout) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def run_at_once(n: int, work, timeout: float) -> list:
    """``work(i)`` in ``n`` threads started together; their results (None: no result in
    time, so a deadlock fails the test instead of hanging it)."""
    results: list = [None] * n
    start = threading.Barrier(n)

    def one(i: int) -> None:
        start.wait(timeout)
        try:
            results[i] = work(i)
        except Exception as e:  # reported in the results
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return results


# --------------------------------------------------------------------------- many at once


STREAMS = [  # (path, body, how a line carries its text)
    ("/api/chat", chat_body(options=GREEDY), lambda o: o["message"]["content"]),
    (
        "/api/generate",
        json.dumps({"model": "tiny", "prompt": HI[0]["content"], "options": GREEDY}).encode(),
        lambda o: o["response"],
    ),
]


def test_64_streams_at_once_at_the_most_parallel_all_finish() -> None:
    # More streams at once than Starlette's pool has threads (40): the model's lock used to
    # be held between pieces while each next piece needed a pool thread, all of them
    # waiting for that lock, and every stream stopped until the clients gave up.
    model = make_model(0, SlowGPT)
    model.DELAY = 0.002
    cm = ChatModel("tiny", model, ENC)
    app = create_app({"tiny": cm}, max_requests=64)  # all of them answered at once
    expected = cm.chat(HI, **GREEDY)

    def stream(i: int) -> tuple[str, dict]:
        path, body, text_of = STREAMS[i % len(STREAMS)]
        req = urllib.request.Request(url + path, data=body)
        with OPENER.open(req, timeout=20) as r:
            lines = [json.loads(line) for line in r]
        return "".join(text_of(o) for o in lines[:-1]), lines[-1]

    with serve_in_background(app) as url:
        results = run_at_once(64, stream, timeout=30)
        assert wait_for(lambda: app.state.free_slots() == 64 and not cm.lock.locked())
    failed = [r for r in results if not isinstance(r, tuple)]
    assert not failed, f"{len(failed)} of 64 streams did not finish: {failed[:3]}"
    for text, final in results:
        assert text == expected and final["done"] is True and final["eval_count"] == 8
    assert (app.state.num_parallel, app.state.max_queue) == (MAX_NUM_PARALLEL, 0)


def test_the_defaults_queue_like_ollama() -> None:
    cm = ChatModel("tiny", make_model(0), ENC)
    app = create_app({"tiny": cm})
    assert (app.state.num_parallel, app.state.max_queue) == (4, 512)
    assert (DEFAULT_NUM_PARALLEL, DEFAULT_MAX_QUEUE, MAX_NUM_PARALLEL) == (4, 512, 64)
    assert app.state.read_timeout == DEFAULT_READ_TIMEOUT == 30
    assert app.state.free_slots() == 516
    app = create_app({"tiny": cm}, max_requests=100)  # the older limit: the total
    assert (app.state.num_parallel, app.state.max_queue) == (64, 36)
    bad = [
        ({"num_parallel": 0}, "num_parallel"),
        ({"num_parallel": 65}, "num_parallel"),
        ({"max_queue": -1}, "max_queue"),
        ({"max_requests": 0}, "max_requests"),
        ({"max_requests": 8, "max_queue": 8}, "not both"),
        ({"read_timeout": 0}, "read_timeout"),
    ]
    for kwargs, words in bad:
        with pytest.raises(ValueError, match=words):
            create_app({"tiny": cm}, **kwargs)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--num-parallel", "0"], "num_parallel"),
        (["--max-queue", "-1"], "max_queue"),
        (["--max-requests", "8", "--num-parallel", "2"], "not both"),
        (["--read-timeout", "0"], "read_timeout"),
    ],
)
def test_bad_limits_on_the_command_line_stop_it_before_loading(capsys, argv, words) -> None:
    with pytest.raises(SystemExit):
        main([*argv, "--model", "m=no/such/checkpoint.pt"])
    assert words in capsys.readouterr().err


def test_past_the_queue_is_503_and_a_client_that_leaves_the_queue_frees_its_place() -> None:
    model = make_model(0, GatedGPT)
    app = create_app({"slow": ChatModel("slow", model, ENC)}, num_parallel=1, max_queue=2)
    body = chat_body("slow", stream=False, options=GREEDY)
    answers: list[tuple[int, dict]] = []
    threads = [threading.Thread(target=lambda: answers.append(post(url, "/api/chat", body)))]
    with serve_in_background(app) as url:
        threads[0].start()
        assert model.entered.wait(10)  # answered: the model is busy until the gate opens
        with socket.create_connection(address(url), 10) as sock:  # queued, then gone
            sock.sendall(
                f"POST /api/chat HTTP/1.1\r\n{host(url)}Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            assert wait_for(lambda: app.state.free_slots() == 1)
        assert wait_for(lambda: app.state.free_slots() == 2)  # it left the queue
        threads += [threading.Thread(target=lambda: answers.append(post(url, "/api/chat", body)))]
        threads += [threading.Thread(target=lambda: answers.append(post(url, "/api/chat", body)))]
        for t in threads[1:]:
            t.start()
        assert wait_for(lambda: app.state.free_slots() == 0)  # 1 answered, 2 waiting
        began = time.monotonic()
        status, answer = post(url, "/api/chat", body)
        assert time.monotonic() - began < 5  # refused at once, not queued
        assert status == 503 and answer["error"].startswith("server busy, please try again")
        assert "2 are waiting" in answer["error"]
        payload = json.dumps({"model": "slow", "messages": HI}).encode()
        status, answer = post(url, "/v1/chat/completions", payload)
        assert status == 503 and answer["error"]["code"] == "server_busy"
        assert answer["error"]["type"] == "server_error"
        model.gate.set()
        for t in threads:
            t.join(20)
        assert [s for s, _ in answers] == [200, 200, 200]  # the queued ones too
        assert len({a["message"]["content"] for _, a in answers}) == 1
        assert wait_for(lambda: app.state.free_slots() == 3)


# --------------------------------------------------------------------------- hostile HTTP


def test_a_lone_surrogate_for_a_model_name_is_404() -> None:
    client = TestClient(create_app({"tiny": ChatModel("tiny", make_model(0), ENC)}))
    for path, body in [
        ("/api/chat", b'{"model": "\\ud800", "messages": [{"role": "user", "content": "x"}]}'),
        ("/api/generate", b'{"model": "\\ud800x", "prompt": "Hi"}'),
    ]:
        r = client.post(path, content=body)
        assert r.status_code == 404, r.text
        assert r.json()["error"].startswith("model '\\ud800") and "not found" in r.text
    r = client.post("/v1/chat/completions", content=b'{"model": "\\udfff", "messages": []}')
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    # lone surrogates in the text and the options are answered, not a server error
    body = (
        b'{"model": "tiny", "stream": false, "messages": [{"role": "user", "content": "\\ud800"}],'
    )
    r = client.post(
        "/api/chat", content=body + b' "options": {"stop": ["\\udc00"], "num_predict": 4}}'
    )
    assert r.status_code == 200 and r.json()["done"] is True
    r = client.post("/api/chat", content=b'{"model": "tiny", "messages": [{"role": "\\ud800"}]}')
    assert r.status_code == 400 and "messages[0].role" in r.json()["error"]


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """(whether the server closed ``sock`` within ``seconds``, what it sent before)."""
    sock.settimeout(seconds)
    received = b""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            data = sock.recv(4096)
            if not data:
                return True, received
            received += data
    except TimeoutError:
        pass
    except ConnectionResetError:
        return True, received
    return False, received


def test_half_sent_requests_are_closed_within_the_read_timeout() -> None:
    app = create_app({"tiny": ChatModel("tiny", make_model(0), ENC)}, read_timeout=0.5)
    with serve_in_background(app) as url:
        head = f"POST /api/chat HTTP/1.1\r\n{host(url)}Content-Length: 100\r\n\r\n".encode()
        for sent in [b"", b"POST /api/chat HTTP/1.1\r\nHo", head + b'{"model": ']:
            with socket.create_connection(address(url), 10) as sock:
                began = time.monotonic()
                sock.sendall(sent)
                closed, answer = closed_within(sock, 5)
                assert closed and time.monotonic() - began < 3, sent
                if sent.startswith(head):  # the app was reading the body: it says why
                    assert answer.startswith(b"HTTP/1.1 408 "), answer
                    assert b"did not arrive within 0.5 s" in answer
                else:
                    assert answer == b"", answer
        # the same on a kept-alive connection, after a first answer
        with socket.create_connection(address(url), 10) as sock:
            sock.sendall(f"GET /api/version HTTP/1.1\r\n{host(url)}\r\n".encode())
            assert read_head(sock).startswith(b"HTTP/1.1 200 ")
            sock.sendall(b"GET /api/version HTTP/1.1\r\n")
            assert closed_within(sock, 5)[0]
        assert request(url, "/api/version")[0] == 200  # the server itself is fine


def test_a_host_that_is_not_the_server_is_403() -> None:
    # DNS rebinding: a page of evil.example whose name now points at 127.0.0.1.
    app = create_app({"tiny": ChatModel("tiny", make_model(0), ENC)})
    with serve_in_background(app) as url:
        port = address(url)[1]
        for name in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost"):
            assert request(url, "/api/tags", headers={"Host": name})[0] == 200, name
        for name in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", "a@b"):
            status, _, text = request(url, "/api/tags", headers={"Host": name})
            assert status == 403 and "does not name this server" in json.loads(text)["error"]
        status, _, text = request(url, "/v1/models", headers={"Host": "evil.example"})
        assert status == 403 and json.loads(text)["error"]["type"] == "permission_error"
        with socket.create_connection(address(url), 10) as sock:  # two Host headers
            sock.sendall(f"GET /api/tags HTTP/1.1\r\n{host(url)}Host: evil\r\n\r\n".encode())
            assert read_head(sock).split(b" ")[1] in (b"400", b"403")


def test_pages_of_other_origins_are_403_and_plain_clients_are_not() -> None:
    app = create_app(
        {"tiny": ChatModel("tiny", make_model(0), ENC)}, allowed_origins=["https://*.example.org"]
    )
    body = chat_body(stream=False, options=GREEDY)
    with serve_in_background(app) as url:
        port = address(url)[1]
        own = [url, f"http://localhost:{port}", f"http://[::1]:{port}"]
        for origin in [None, *own, "https://app.example.org"]:
            headers = {"Origin": origin} if origin else {}
            assert request(url, "/api/tags", headers=headers)[0] == 200, origin
            status, got, _ = request(url, "/api/chat", body, {**headers, "Content-Type": "x"})
            assert status == 200, origin
        assert got["access-control-allow-origin"] == "https://app.example.org"  # CORS
        foreign = ["https://evil.example", "null", f"https://127.0.0.1:{port}", "http://x.org"]
        for origin in [*foreign, f"http://localhost:{port + 1}", "http://example.org"]:
            for path, data in [("/api/tags", None), ("/api/chat", body)]:
                # text/plain: the POST a page sends without asking first (no preflight)
                headers = {"Origin": origin, "Content-Type": "text/plain"}
                status, _, text = request(url, path, data, headers)
                assert status == 403, (origin, path)
                assert "cross-origin request" in json.loads(text)["error"]
        status, _, _ = request(url, "/api/chat", body, {"Origin": "https://evil.example"})
        assert status == 403
    # TestClient's own name is its server's name
    client = TestClient(app)
    assert client.get("/api/tags", headers={"Origin": "http://testserver"}).status_code == 200
    assert client.get("/api/tags", headers={"Origin": "http://evil"}).status_code == 403
