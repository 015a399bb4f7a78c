"""The official ``ollama`` Python client against shared.judge_server: chat (streamed and
not), generate and list work as they do against a real Ollama, and identical greedy
requests give identical answers. Skipped when the ``ollama`` package is not installed."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from shared.bpe import get_encoding
from shared.chat import ChatModel
from shared.gpt import GPTConfig, GPTModel
from shared.judge_server import create_app, serve_in_background

ollama = pytest.importorskip("ollama")

ENC = get_encoding()
CFG = GPTConfig(
    vocab_size=ENC.n_vocab, context_length=128, emb_dim=16, n_heads=2, n_layers=1, tie_weights=True
)
GREEDY = {"temperature": 0, "seed": 0, "num_predict": 8}
QUESTION = [{"role": "user", "content": "Where does Nabo live?"}]


@pytest.fixture(scope="module")
def client(one_thread):
    torch.manual_seed(0)
    model = GPTModel(CFG).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
    app = create_app({"tiny": ChatModel("tiny", model, ENC, "alpaca")})
    with serve_in_background(app) as url:
        yield ollama.Client(host=url, timeout=60)


def test_list(client):
    names = [m.model for m in client.list().models]
    assert names == ["tiny"]


def test_chat_not_streamed(client):
    r = client.chat(model="tiny", messages=QUESTION, stream=False, options=GREEDY)
    assert r.done and r.message.role == "assistant"
    assert isinstance(r.message.content, str) and r.message.content
    assert r.eval_count is not None and 1 <= r.eval_count <= GREEDY["num_predict"]
    assert r.done_reason in ("stop", "length")


def test_chat_streamed_matches_not_streamed(client):
    whole = client.chat(model="tiny", messages=QUESTION, stream=False, options=GREEDY)
    chunks = list(client.chat(model="tiny", messages=QUESTION, stream=True, options=GREEDY))
    assert chunks[-1].done and not any(c.done for c in chunks[:-1])
    assert "".join(c.message.content for c in chunks) == whole.message.content


def test_generate(client):
    a = client.generate(model="tiny", prompt="Where does Nabo live?", options=GREEDY)
    b = client.generate(model="tiny", prompt="Where does Nabo live?", options=GREEDY)
    assert a.done and a.response and a.response == b.response
    streamed = client.generate(
        model="tiny", prompt="Where does Nabo live?", stream=True, options=GREEDY
    )
    assert "".join(c.response for c in streamed) == a.response


def test_unknown_model(client):
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="llama3", messages=QUESTION, stream=False)
    assert info.value.status_code == 404 and "not found" in info.value.error


def test_32_threads_at_once_are_all_answered_at_the_defaults():
    # An evaluation loop written for Ollama: 32 threads share one client and ask at once.
    # Ollama queues what it cannot answer yet; so does this server (it used to refuse all
    # but 4 with 429). Each answer takes a while here, so they really are at once.
    class SlowGPT(GPTModel):
        def forward(self, idx, kv_cache=None):
            time.sleep(0.003)
            return super().forward(idx, kv_cache)

    torch.manual_seed(0)
    model = SlowGPT(CFG).eval()
    app = create_app({"tiny": ChatModel("tiny", model, ENC, "alpaca")})  # the defaults
    with serve_in_background(app) as url:
        client = ollama.Client(host=url, timeout=30)
        start = threading.Barrier(32)

        def ask(_):
            start.wait(10)
            return client.chat(model="tiny", messages=QUESTION, options=GREEDY)

        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(ask, range(32), timeout=60))
        assert app.state.free_slots() == app.state.num_parallel + app.state.max_queue
    assert all(a.done and a.eval_count == GREEDY["num_predict"] for a in answers)
    assert len({a.message.content for a in answers}) == 1
