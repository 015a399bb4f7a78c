"""Tests of shared.judge_client against shared.judge_server running in a thread, and against
small stub servers that misbehave on purpose (busy, failing, cut off, not there at all).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from shared import judge_client
from shared.bpe import get_encoding
from shared.chat import ChatModel
from shared.gpt import GPTConfig, GPTModel
from shared.judge_client import (
    ChatResult,
    ModelNotFoundError,
    ServerError,
    ServerUnavailableError,
    chat,
    chat_result,
    list_models,
    server_available,
)
from shared.judge_server import create_app, serve_in_background

ENC = get_encoding()
CFG = GPTConfig(
    vocab_size=ENC.n_vocab, context_length=128, emb_dim=16, n_heads=2, n_layers=1, tie_weights=True
)
QUESTION = "What colour is Nabo's hat?"
SHORT = {"num_predict": 8}


@pytest.fixture(autouse=True, scope="module")
def _threads(one_thread):
    yield


def make_model(seed: int) -> GPTModel:
    torch.manual_seed(seed)
    model = GPTModel(CFG).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
    return model


class FailingGPT(GPTModel):
    """Fails at the third step of every answer (after some pieces were sent)."""

    def forward(self, idx, kv_cache=None):
        if kv_cache is not None and kv_cache.length > 0 and idx.shape[1] == 1:
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls % 2 == 0:
                raise RuntimeError("out of luck")
        else:
            self.calls = 0
        return super().forward(idx, kv_cache)


MODELS = {
    "tiny": ChatModel("tiny", make_model(0), ENC),
    "other": ChatModel("other", make_model(1), ENC),
    "failing": ChatModel("failing", FailingGPT(CFG), ENC),
}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve_in_background(create_app(MODELS)) as address:
        yield address


def free_port() -> int:
    """A loopback port that nothing listens on (it was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- answers


def test_chat_returns_the_models_greedy_answer(url: str) -> None:
    text = chat(QUESTION, "tiny", url, options=SHORT)
    assert text and isinstance(text, str)
    # the client's defaults: seed 123, temperature 0, num_ctx 2048 (the model reads 128)
    expected = MODELS["tiny"].chat(QUESTION, seed=123, temperature=0, num_ctx=2048, **SHORT)
    assert text == expected
    assert chat(QUESTION, "other", url, options=SHORT) != text


def test_stream_and_no_stream_give_the_same_text(url: str) -> None:
    pieces: list[str] = []
    streamed = chat(QUESTION, "tiny", url, options=SHORT, on_piece=pieces.append)
    assert len(pieces) > 1 and "".join(pieces) == streamed
    assert chat(QUESTION, "tiny", url, options=SHORT, stream=False) == streamed


def test_sampling_with_a_seed_is_reproducible_through_the_api(url: str) -> None:
    def ask(seed: int) -> str:
        return chat(QUESTION, "tiny", url, seed=seed, temperature=1.5, options={"num_predict": 12})

    assert ask(3) == ask(3)
    assert len({ask(s) for s in (3, 4, 5, 6)}) > 1


def test_chat_result_carries_ollamas_statistics(url: str) -> None:
    result = chat_result([{"role": "user", "content": QUESTION}], "tiny", url, options=SHORT)
    assert isinstance(result, ChatResult)
    assert result.done_reason == "length" and result.eval_count == 8
    assert result.prompt_eval_count > 0 and result.total_duration > 0
    assert result.model == "tiny" and result.final["done"] is True
    single = chat_result(QUESTION, "tiny", url, options=SHORT, stream=False)
    assert (single.text, single.eval_count) == (result.text, result.eval_count)


def test_list_models_and_server_available(url: str) -> None:
    assert list_models(url) == ["tiny", "other", "failing"]
    assert list_models(url + "/") == ["tiny", "other", "failing"]
    assert server_available(url) is True


# --------------------------------------------------------------------------- errors


def test_no_server_says_what_to_start() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    assert server_available(nowhere) is False
    with pytest.raises(ServerUnavailableError) as info:
        chat(QUESTION, "tiny", nowhere, retries=0)
    message = str(info.value)
    assert f"no server at {nowhere}" in message
    assert "python -m shared.judge_server" in message and "ollama serve" in message
    with pytest.raises(ServerUnavailableError, match=r"\(3 tries\)"):
        chat(QUESTION, "tiny", nowhere, retries=2, backoff=0.01)
    with pytest.raises(ServerUnavailableError, match="no server"):
        list_models(nowhere, retries=0)
    assert time.monotonic() - start < 5


def test_an_unknown_model_names_it_and_how_to_get_it(url: str) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        chat(QUESTION, "llama3.2", url)
    message = str(info.value)
    assert "'llama3.2'" in message and "model 'llama3.2' not found" in message
    assert "ollama pull llama3.2" in message and "/api/tags" in message
    assert "tiny, other, failing" in message
    assert info.value.model == "llama3.2" and info.value.available == ["tiny", "other", "failing"]


def test_bad_requests_are_not_retried_and_keep_the_servers_words(url: str) -> None:
    with pytest.raises(ServerError) as info:
        chat(QUESTION, "tiny", url, options={"top_p": 5})
    assert info.value.status == 400
    assert "options.top_p must be a number in (0, 1]" in info.value.message
    long = "Nabo lives in Rushcombe. " * 40
    with pytest.raises(ServerError, match="answered 413") as info:
        chat(long, "tiny", url)
    assert "tokens" in info.value.message


def test_an_error_in_the_middle_of_the_stream_is_raised(url: str) -> None:
    pieces: list[str] = []
    with pytest.raises(ServerError, match="out of luck") as info:
        chat(QUESTION, "failing", url, options=SHORT, on_piece=pieces.append)
    assert info.value.status == 200 and pieces  # some text had arrived
    with pytest.raises(ServerError, match="answered 500"):
        chat(QUESTION, "failing", url, options=SHORT, stream=False, retries=0)


def test_arguments_are_checked_before_anything_is_sent() -> None:
    with pytest.raises(TypeError, match="model must be a non-empty string"):
        chat(QUESTION, "")
    with pytest.raises(ValueError, match="url must start with http"):
        chat(QUESTION, "tiny", url="127.0.0.1:11434")
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        chat(QUESTION, "tiny", temperature=-1)
    with pytest.raises(TypeError, match="seed must be an int"):
        chat(QUESTION, "tiny", seed=1.5)
    with pytest.raises(ValueError, match="num_ctx must be an int >= 1"):
        chat(QUESTION, "tiny", num_ctx=0)
    with pytest.raises(ValueError, match="timeout must be a finite number > 0"):
        chat(QUESTION, "tiny", timeout=0)
    with pytest.raises(ValueError, match="retries must be an int >= 0"):
        chat(QUESTION, "tiny", retries=-1)
    with pytest.raises(TypeError, match=r"prompt_or_messages\[0\]\['content'\]"):
        chat([{"role": "user", "content": None}], "tiny")
    with pytest.raises(TypeError, match="prompt_or_messages must be"):
        chat([], "tiny")


# --------------------------------------------------------------------------- stub servers


class Stub:
    """A tiny HTTP server that answers ``/api/chat`` from a list of scripted replies
    (status, headers, body), one per request, repeating the last; it counts requests."""

    def __init__(self, replies: list[tuple[int, dict, bytes]]) -> None:
        self.replies = replies
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                stub.requests.append(json.loads(self.rfile.read(length)))
                status, headers, body = stub.replies[min(len(stub.requests), len(stub.replies)) - 1]
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # keep the test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Stub:
        # a short poll interval: shutdown() waits for the next poll
        thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def ndjson(*objs: dict) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


OK_STREAM = ndjson(
    {"model": "m", "message": {"role": "assistant", "content": "Red"}, "done": False},
    {"model": "m", "message": {"role": "assistant", "content": "."}, "done": False},
    {"model": "m", "message": {"role": "assistant", "content": ""}, "done": True,
     "done_reason": "stop", "eval_count": 2},
)  # fmt: skip
BUSY = (503, {"Content-Type": "application/json"}, b'{"error": "server busy"}')


def test_a_busy_server_is_asked_again_until_it_answers() -> None:
    with Stub([BUSY, (200, {"Content-Type": "application/x-ndjson"}, OK_STREAM)]) as stub:
        result = chat_result(QUESTION, "m", stub.url, retries=2, backoff=0.01)
    assert result.text == "Red." and result.done_reason == "stop"
    assert len(stub.requests) == 2
    sent = stub.requests[0]
    assert sent["model"] == "m" and sent["stream"] is True
    assert sent["messages"] == [{"role": "user", "content": QUESTION}]
    assert sent["options"] == {"seed": 123, "temperature": 0.0, "num_ctx": 2048}


def test_retries_are_bounded_and_honour_retry_after() -> None:
    with Stub([BUSY]) as stub, pytest.raises(ServerError) as info:
        chat(QUESTION, "m", stub.url, retries=1, backoff=0.01)
    assert len(stub.requests) == 2 and info.value.status == 503
    assert "after 2 tries" in str(info.value) and info.value.message == "server busy"
    too_many = (429, {"Retry-After": "0"}, b'{"error": "too many requests at once"}')
    with Stub([too_many, (200, {}, OK_STREAM)]) as stub:
        start = time.monotonic()
        assert chat(QUESTION, "m", stub.url, retries=1, backoff=5.0) == "Red."
        assert time.monotonic() - start < 2  # waited as asked (0 s), not the 5 s backoff
    with Stub([(400, {}, b'{"error": "bad"}'), (200, {}, OK_STREAM)]) as stub:
        with pytest.raises(ServerError, match="answered 400: bad"):
            chat(QUESTION, "m", stub.url, retries=3, backoff=0.01)
        assert len(stub.requests) == 1  # the request itself is wrong: asking again won't help


def test_a_stream_without_its_final_message_is_an_error() -> None:
    cut = OK_STREAM.splitlines(keepends=True)[0]
    with Stub([(200, {}, cut)]) as stub, pytest.raises(ServerError, match="ended before"):
        chat(QUESTION, "m", stub.url)
    with Stub([(200, {}, b"<html>hello</html>\n")]) as stub:
        with pytest.raises(ServerError, match="not JSON"):
            chat(QUESTION, "m", stub.url)


def test_openai_shaped_errors_are_read_too() -> None:
    body = json.dumps({"error": {"message": "nope", "type": "invalid_request_error"}}).encode()
    with Stub([(400, {}, body)]) as stub, pytest.raises(ServerError) as info:
        chat(QUESTION, "m", stub.url)
    assert info.value.message == "nope"


def test_a_real_ollama_404_wording_is_recognised() -> None:
    body = b'{"error":"model \\"gemma3\\" not found, try pulling it first"}'
    with Stub([(404, {}, body)]) as stub, pytest.raises(ModelNotFoundError, match="ollama pull"):
        chat(QUESTION, "gemma3", stub.url)


# --------------------------------------------------------------------------- a plain client


def tutorial_style_chat(base_url: str, model: str, question: str) -> str:
    """Written the way a first urllib example would be: POST the JSON, then read the answer
    line by line, adding up message.content until the line that says done."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "options": {"temperature": 0, "num_predict": 8},
    }
    request = urllib.request.Request(
        base_url + "/api/chat",
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    answer = ""
    with urllib.request.urlopen(request) as response:
        for line in response:
            part = json.loads(line)
            answer += part["message"]["content"]
            if part["done"]:
                break
    return answer


def test_a_plain_urllib_client_works_unchanged(url: str) -> None:
    answer = tutorial_style_chat(url, "tiny", QUESTION)
    assert answer == chat(QUESTION, "tiny", url, options={"num_predict": 8})


def test_the_default_url_is_ollamas() -> None:
    assert judge_client.DEFAULT_URL == "http://127.0.0.1:11434"
