"""Tests of shared.judge_server and shared.chat: Ollama's endpoints and formats, every error
code, stream and non-stream agreeing, determinism, the decoding steps of shared.decoding,
serving in a thread.

The models are tiny random GPTs with the project's tokenizer; ``ScriptedGPT`` forces the
tokens it writes (or fails on purpose) where a test needs to know the answer in advance.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from shared.bpe import get_encoding
from shared.chat import (
    PROMPT_TEMPLATES,
    AnswerText,
    ChatModel,
    ContextLengthError,
    GenerationOptions,
    alpaca_prompt,
    load_chat_model,
)
from shared.checkpoints import save_checkpoint
from shared.decoding import generate
from shared.gpt import GPTConfig, GPTModel
from shared.judge_server import (
    check_loopback,
    create_app,
    main,
    parse_model_spec,
    serve_in_background,
)
from shared.prompts import PHI3_SPECIALS, extend_encoding

ENC = get_encoding()
CFG = GPTConfig(
    vocab_size=ENC.n_vocab, context_length=128, emb_dim=16, n_heads=2, n_layers=1, tie_weights=True
)
HI = [{"role": "user", "content": "What colour is Nabo's hat?"}]
GREEDY = {"temperature": 0, "num_predict": 8}


@pytest.fixture(autouse=True, scope="module")
def _threads(one_thread):
    yield


def make_model(seed: int = 0, cls: type[GPTModel] = GPTModel, **kwargs) -> GPTModel:
    """A random model with spread-out logits (std 0.3), so greedy choices never tie."""
    torch.manual_seed(seed)
    model = cls(CFG, **kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
    return model


class ScriptedGPT(GPTModel):
    """Writes the tokens of ``script`` in order (then end-of-text), or fails at the
    ``fail_at``-th step of an answer; the steps are counted from each prompt."""

    def __init__(self, cfg: GPTConfig, script=None, fail_at: int | None = None) -> None:
        super().__init__(cfg)
        self.script = list(script) if script is not None else None
        self.fail_at = fail_at
        self.step = 0

    def forward(self, idx, kv_cache=None):
        if kv_cache is None or kv_cache.length == 0:
            self.step = 0  # a new prompt
        logits = super().forward(idx, kv_cache)
        step, self.step = self.step, self.step + 1
        if self.fail_at is not None and step == self.fail_at:
            raise RuntimeError("the scripted model fails here")
        if self.script is not None:
            token = self.script[step] if step < len(self.script) else ENC.eot_token
            logits = torch.full_like(logits, -1e4)
            logits[..., token] = 1e4
        return logits


def byte_token(b: bytes) -> int:
    return ENC.encode_single_token(b)


ANSWER_IDS = ENC.encode(" Nabo's hat is red.")
# "é" as two single-byte tokens: the first alone is no complete character.
SPLIT_E = [byte_token(b"\xc3"), byte_token(b"\xa9")]


def _failing_template(messages):
    raise RuntimeError("this template is broken")


MODELS = {
    "tiny": ChatModel("tiny", make_model(0), ENC),
    "plain": ChatModel("plain", make_model(0), ENC, template="raw"),
    "scripted": ChatModel("scripted", make_model(1, ScriptedGPT, script=ANSWER_IDS), ENC),
    "accents": ChatModel("accents", make_model(1, ScriptedGPT, script=SPLIT_E * 3), ENC, "raw"),
    "broken": ChatModel("broken", make_model(1, ScriptedGPT, fail_at=3), ENC),
    "bad-template": ChatModel("bad-template", make_model(0), ENC, _failing_template),
}


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(MODELS), raise_server_exceptions=False)


def post_chat(client: TestClient, model: str = "tiny", messages=HI, **fields):
    return client.post("/api/chat", json={"model": model, "messages": messages, **fields})


def lines(response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def streamed_text(response, key: str = "message") -> str:
    objs = lines(response)
    if key == "message":
        return "".join(o["message"]["content"] for o in objs)
    return "".join(o[key] for o in objs)


STAT_KEYS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


# --------------------------------------------------------------------------- /api/chat


def test_chat_streams_json_lines_in_ollamas_format(client: TestClient) -> None:
    r = post_chat(client, options=GREEDY)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ndjson"
    objs = lines(r)
    *chunks, final = objs
    assert len(chunks) >= 1
    for c in chunks:
        assert set(c) == {"model", "created_at", "message", "done"}
        assert c["model"] == "tiny" and c["done"] is False
        assert c["message"]["role"] == "assistant" and c["created_at"].endswith("Z")
    assert final["done"] is True and final["done_reason"] == "length"
    assert final["message"] == {"role": "assistant", "content": ""}
    for key in STAT_KEYS:
        assert isinstance(final[key], int) and final[key] >= 0, key
    assert final["eval_count"] == 8
    prompt = alpaca_prompt(HI)
    assert final["prompt_eval_count"] == len(ENC.encode(prompt, allowed_special="all"))
    assert final["total_duration"] >= final["prompt_eval_duration"] + final["eval_duration"]


def test_chat_stream_and_single_object_give_the_same_text(client: TestClient) -> None:
    streamed = post_chat(client, options=GREEDY)
    single = post_chat(client, options=GREEDY, stream=False)
    assert single.headers["content-type"] == "application/json"
    body = single.json()
    assert body["done"] is True and body["done_reason"] == "length" and body["eval_count"] == 8
    assert body["message"]["content"] == streamed_text(streamed)
    assert body["message"]["content"] == MODELS["tiny"].chat(HI, **GREEDY)  # in process


def test_greedy_answers_are_identical_and_ignore_the_seed(client: TestClient) -> None:
    answers = {
        post_chat(client, stream=False, options={**GREEDY, "seed": s}).json()["message"]["content"]
        for s in (1, 2, 1)
    }
    assert len(answers) == 1


def test_sampling_with_a_seed_repeats_and_other_seeds_differ(client: TestClient) -> None:
    def sample(seed: int) -> str:
        opts = {"temperature": 1.5, "seed": seed, "num_predict": 12}
        return post_chat(client, stream=False, options=opts).json()["message"]["content"]

    assert sample(7) == sample(7)
    assert len({sample(s) for s in (7, 8, 9, 10)}) > 1
    # streamed answers follow the same draws
    opts = {"temperature": 1.5, "seed": 7, "num_predict": 12}
    assert streamed_text(post_chat(client, options=opts)) == sample(7)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_answers_are_the_tokens_of_shared_decoding_generate(temperature: float) -> None:
    cm = MODELS["plain"]
    prompt = "Nabo lives in"
    options = GenerationOptions(temperature=temperature, seed=5, num_predict=10)
    answer = cm.answer(prompt, options)
    text = "".join(answer)
    ids = ENC.encode(prompt)
    out = generate(
        cm.model,
        torch.tensor([ids]),
        10,
        temperature=temperature,
        top_k=40,
        top_p=0.9,
        eos_id=ENC.eot_token,
        generator=torch.Generator().manual_seed(5),
    )
    new = out[0, len(ids) :].tolist()
    assert text == ENC.decode(new[: new.index(ENC.eot_token)] if ENC.eot_token in new else new)
    assert answer.eval_count == len(new) - new.count(ENC.eot_token)


def test_the_model_stops_at_end_of_text_and_the_lead_space_is_dropped(client) -> None:
    body = post_chat(client, "scripted", stream=False, options={"temperature": 0}).json()
    assert body["message"]["content"] == "Nabo's hat is red."  # the template's space dropped
    assert body["done_reason"] == "stop"
    assert body["eval_count"] == len(ANSWER_IDS)  # end-of-text not counted
    streamed = post_chat(client, "scripted", options={"temperature": 0})
    assert streamed_text(streamed) == "Nabo's hat is red."


def test_multibyte_characters_are_never_split_between_pieces(client: TestClient) -> None:
    r = post_chat(client, "accents", options={"temperature": 0})
    pieces = [o["message"]["content"] for o in lines(r)[:-1]]
    assert pieces == ["é", "é", "é"]
    assert lines(r)[-1]["eval_count"] == 6


@pytest.mark.parametrize("stream", [True, False])
def test_stop_strings_end_the_answer(client: TestClient, stream: bool) -> None:
    options = {"temperature": 0, "stop": ["hat is", "never there"]}
    r = post_chat(client, "scripted", stream=stream, options=options)
    if stream:
        text, final = streamed_text(r), lines(r)[-1]
    else:
        final = r.json()
        text = final["message"]["content"]
    assert text == "Nabo's "
    assert final["done_reason"] == "stop"


def test_num_predict_and_num_ctx_bound_the_answer(client: TestClient) -> None:
    body = post_chat(client, stream=False, options={"temperature": 0, "num_predict": 3}).json()
    assert body["eval_count"] == 3 and body["done_reason"] == "length"
    n_prompt = body["prompt_eval_count"]
    # -1 (and Ollama's -2): until the context is full
    body = post_chat(client, stream=False, options={"temperature": 0, "num_predict": -2}).json()
    assert body["eval_count"] == CFG.context_length - n_prompt
    body = post_chat(client, stream=False, options={"temperature": 0, "num_ctx": n_prompt + 2})
    assert body.json()["eval_count"] == 2
    body = post_chat(client, stream=False, options={"temperature": 0, "num_predict": 0}).json()
    assert body["message"]["content"] == "" and body["eval_count"] == 0


def test_model_names_may_carry_ollamas_latest_tag(client: TestClient) -> None:
    assert post_chat(client, "tiny:latest", stream=False, options=GREEDY).status_code == 200


# --------------------------------------------------------------------------- /api/generate


def test_generate_uses_prompt_and_response_fields(client: TestClient) -> None:
    question = "What colour is Nabo's hat?"
    payload = {"model": "tiny", "prompt": question, "options": GREEDY}
    streamed = client.post("/api/generate", json=payload)
    assert streamed.headers["content-type"] == "application/x-ndjson"
    *chunks, final = lines(streamed)
    assert all(set(c) == {"model", "created_at", "response", "done"} for c in chunks)
    assert final["done"] is True and final["response"] == ""
    assert all(k in final for k in STAT_KEYS)
    single = client.post("/api/generate", json={**payload, "stream": False}).json()
    assert single["response"] == streamed_text(streamed, "response")
    # the same template as /api/chat
    assert single["response"] == MODELS["tiny"].chat(question, **GREEDY)


def test_generate_raw_skips_the_template_and_system_is_accepted(client: TestClient) -> None:
    payload = {"model": "tiny", "prompt": "Nabo lives in", "raw": True, "stream": False}
    raw = client.post("/api/generate", json={**payload, "options": GREEDY}).json()
    assert raw["response"] == MODELS["plain"].chat("Nabo lives in", **GREEDY).removeprefix(" ")
    assert raw["prompt_eval_count"] == len(ENC.encode("Nabo lives in"))
    payload = {"model": "tiny", "prompt": "Hi", "system": "Be brief.", "stream": False}
    assert client.post("/api/generate", json={**payload, "options": GREEDY}).status_code == 200


# --------------------------------------------------------------------------- listings


def test_tags_version_and_root(client: TestClient) -> None:
    tags = client.get("/api/tags").json()["models"]
    assert [m["name"] for m in tags] == list(MODELS)
    tiny = tags[0]
    assert {"name", "model", "modified_at", "size", "digest", "details"} <= set(tiny)
    assert len(tiny["digest"]) == 64 and tiny["size"] > 0
    assert tiny["details"]["context_length"] == 128
    assert tiny["details"]["quantization_level"] == "F32"
    assert isinstance(client.get("/api/version").json()["version"], str)
    assert client.get("/").text == "Ollama is running"
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == list(MODELS)


# --------------------------------------------------------------------------- OpenAI


def test_openai_chat_completions_match_api_chat(client: TestClient) -> None:
    payload = {"model": "tiny", "messages": HI, "temperature": 0, "max_tokens": 8}
    r = client.post("/v1/chat/completions", json=payload)
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "length"
    expected = post_chat(client, stream=False, options=GREEDY).json()
    assert choice["message"]["content"] == expected["message"]["content"]
    assert body["usage"] == {
        "prompt_tokens": expected["prompt_eval_count"],
        "completion_tokens": 8,
        "total_tokens": expected["prompt_eval_count"] + 8,
    }


def test_openai_streaming_sends_server_sent_events(client: TestClient) -> None:
    payload = {"model": "scripted", "messages": HI, "temperature": 0, "stream": True}
    r = client.post("/v1/chat/completions", json=payload)
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [e.removeprefix("data: ") for e in r.text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "Nabo's hat is red."
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_openai_errors_have_openais_shape(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={"model": "nope", "messages": HI})
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "model 'nope' not found"
    assert r.json()["error"]["code"] == "model_not_found"
    for bad, word in [({"n": 2}, "n must be 1"), ({"max_tokens": 0}, "max_tokens")]:
        r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": HI, **bad})
        assert r.status_code == 400 and word in r.json()["error"]["message"]
        assert r.json()["error"]["type"] == "invalid_request_error"
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": HI, "top_p": 3})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("top_p must be")


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got an array"),
        (b'{"messages": []}', "model is required"),
        (b'{"model": "tiny"}', "messages must be an array"),
        (b'{"model": "tiny", "messages": []}', "messages must not be empty"),
        (b'{"model": "tiny", "messages": ["hi"]}', "messages[0] must be an object"),
        (b'{"model": "tiny", "messages": [{"role": "bot", "content": "x"}]}', "messages[0].role"),
        (b'{"model": "tiny", "messages": [{"role": "user", "content": 3}]}', "messages[0].content"),
        (
            b'{"model": "tiny", "messages": [{"role": "system", "content": "x"}]}',
            "no message with role 'user'",
        ),
    ],
)
def test_bad_requests_are_400_with_the_field_named(client: TestClient, body: bytes, words: str):
    r = client.post("/api/chat", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert words in r.json()["error"]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ("hot", "options must be a JSON object"),
        ({"temperature": -1}, "options.temperature"),
        ({"temperature": "warm"}, "options.temperature"),
        ({"top_k": -3}, "options.top_k"),
        ({"top_p": 0}, "options.top_p"),
        ({"seed": 1.5}, "options.seed"),
        ({"num_predict": -5}, "options.num_predict"),
        ({"num_ctx": 0}, "options.num_ctx"),
        ({"stop": [""]}, "options.stop"),
    ],
)
def test_bad_options_are_400(client: TestClient, options, words: str) -> None:
    r = post_chat(client, options=options)
    assert r.status_code == 400 and words in r.json()["error"]


def test_other_bad_fields_are_400(client: TestClient) -> None:
    assert (
        post_chat(client, stream="yes").json()["error"] == "stream must be true or false, got 'yes'"
    )
    r = client.post("/api/generate", json={"model": "tiny", "prompt": 3})
    assert r.status_code == 400 and "prompt must be a string" in r.json()["error"]
    r = client.post("/api/generate", json={"model": "tiny", "prompt": "", "raw": True})
    assert r.status_code == 400 and "empty" in r.json()["error"]


def test_unknown_model_is_404_in_ollamas_words(client: TestClient) -> None:
    for path, payload in [
        ("/api/chat", {"model": "llama3", "messages": HI}),
        ("/api/generate", {"model": "llama3", "prompt": "hi"}),
    ]:
        r = client.post(path, json=payload)
        assert r.status_code == 404
        assert r.json() == {"error": "model 'llama3' not found"}


def test_unknown_paths_and_methods_answer_in_json(client: TestClient) -> None:
    r = client.get("/api/nothing")
    assert r.status_code == 404 and "/api/nothing" in r.json()["error"]
    r = client.get("/api/chat")
    assert r.status_code == 405 and "error" in r.json()


def test_a_prompt_longer_than_the_context_is_413_with_the_counts(client: TestClient) -> None:
    long = [{"role": "user", "content": "Nabo lives in Rushcombe. " * 40}]
    r = post_chat(client, messages=long, options=GREEDY)
    assert r.status_code == 413
    n = len(ENC.encode(alpaca_prompt(long)))
    assert f"the prompt is {n} tokens" in r.json()["error"]
    assert "at most 128" in r.json()["error"]
    # a smaller num_ctx makes a normal prompt too long, and the message says why
    r = post_chat(client, options={"num_ctx": 10})
    assert r.status_code == 413 and "options.num_ctx is 10" in r.json()["error"]
    with pytest.raises(ContextLengthError) as info:
        MODELS["tiny"].answer("x " * 200)
    assert info.value.limit == 128 and info.value.prompt_tokens > 128


def test_server_errors_are_500_in_json(client: TestClient) -> None:
    r = post_chat(client, "bad-template", options=GREEDY)
    assert r.status_code == 500
    assert r.json()["error"] == "internal server error: RuntimeError: this template is broken"
    r = post_chat(client, "broken", stream=False, options=GREEDY)
    assert r.status_code == 500 and "the scripted model fails here" in r.json()["error"]


def test_an_error_in_the_middle_of_a_stream_is_a_last_error_line(client: TestClient) -> None:
    r = post_chat(client, "broken", options=GREEDY)
    assert r.status_code == 200  # sent before the failure
    objs = lines(r)
    assert 2 <= len(objs) <= 4  # the pieces of the first three steps, then the error
    assert all(o["done"] is False for o in objs[:-1])
    assert set(objs[-1]) == {"error"} and "the scripted model fails here" in objs[-1]["error"]
    # the failed request gave its slot back: the server still answers
    assert post_chat(client, options=GREEDY).status_code == 200


class GatedGPT(GPTModel):
    """Waits at every forward pass until ``gate`` is open: a generation that takes as long
    as a test needs. ``entered`` is set at the first pass."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__(cfg)
        self.entered, self.gate = threading.Event(), threading.Event()

    def forward(self, idx, kv_cache=None):
        self.entered.set()
        self.gate.wait(10)
        return super().forward(idx, kv_cache)


def test_a_request_past_the_queue_is_503() -> None:
    model = make_model(0, GatedGPT)
    app = create_app({"slow": ChatModel("slow", model, ENC)}, max_requests=1)
    assert (app.state.num_parallel, app.state.max_queue) == (1, 0)  # max_requests: the total
    payload = json.dumps({"model": "slow", "messages": HI, "stream": False, "options": GREEDY})
    results: list[int] = []

    def request(url: str) -> int:
        req = urllib.request.Request(f"{url}/api/chat", data=payload.encode())
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            results.append(json.loads(e.read())["error"])
            assert e.headers["Retry-After"] == "1"
            return e.code

    with serve_in_background(app) as url:
        first = threading.Thread(target=lambda: results.append(request(url)))
        first.start()
        assert model.entered.wait(10)
        assert request(url) == 503
        assert results[0].startswith("server busy, please try again: 1 requests are being")
        model.gate.set()
        first.join(10)
        assert results[-1] == 200
        assert request(url) == 200  # the turn is free again


# --------------------------------------------------------------------------- pieces


def test_generation_options_defaults_and_conversions() -> None:
    default = GenerationOptions.from_ollama(None)
    assert default == GenerationOptions(temperature=0.8, top_k=40, top_p=0.9)
    opts = GenerationOptions.from_ollama(
        {"top_k": 0, "top_p": 1, "num_predict": -2, "stop": "###", "mirostat": 1, "seed": None}
    )
    assert (opts.top_k, opts.top_p, opts.num_predict, opts.stop) == (None, None, -1, ("###",))
    assert opts.seed is None  # null: not given; unknown options are ignored


def test_answer_text_holds_back_what_may_begin_a_stop_string() -> None:
    t = AnswerText(" ", ["</s>"])
    assert [t.feed(p) for p in [" ", "Hi", " <", "/", "s", ">tail"]] == ["", "Hi", " ", "", "", ""]
    assert t.stopped
    t = AnswerText("", ["</s>"])
    assert t.feed("a <") == "a " and t.feed("b") == "<b" and t.feed("<") == "" and t.finish() == "<"
    t = AnswerText(" ", [])
    assert t.feed("x") == "x"  # no lead after all: nothing is dropped


def test_chat_model_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="template must be one of"):
        ChatModel("m", make_model(0), ENC, template="chatml")
    with pytest.raises(TypeError, match="encoding must be a tiktoken.Encoding"):
        ChatModel("m", make_model(0), "gpt2")
    with pytest.raises(TypeError, match="model must be a GPTModel"):
        ChatModel("m", torch.nn.Linear(2, 2), ENC)
    with pytest.raises(ValueError, match="name"):
        ChatModel("", make_model(0), ENC)
    with pytest.raises(ValueError, match="models must be a non-empty dict"):
        create_app({})
    assert set(PROMPT_TEMPLATES) >= {"alpaca", "phi3", "raw"}


def test_an_answer_is_iterated_once() -> None:
    answer = MODELS["tiny"].answer("Hello", {"temperature": 0, "num_predict": 2})
    list(answer)
    with pytest.raises(RuntimeError, match="only once"):
        list(answer)


def test_a_cancelled_answer_stops_after_the_current_token_and_lets_go_of_the_model() -> None:
    cm = MODELS["plain"]
    answer = cm.answer("Nabo lives in", {"temperature": 0, "num_predict": 50})
    pieces = iter(answer)
    first, tokens = next(pieces), answer.eval_count
    assert cm.lock.locked()
    answer.cancel()  # (between two tokens here: no more of them)
    assert first + "".join(pieces) == answer.text and answer.eval_count == tokens < 50
    assert not cm.lock.locked()
    unstarted = cm.answer("Nabo lives in", {"temperature": 0, "num_predict": 50})
    unstarted.cancel()
    assert "".join(unstarted) == "" and unstarted.eval_count == 0


# --------------------------------------------------------------------------- serving


def test_serve_in_background_answers_and_stops() -> None:
    with serve_in_background({"tiny": MODELS["tiny"]}) as url:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{url}/api/version", timeout=5) as r:
            assert "version" in json.loads(r.read())
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/api/version", timeout=2)


def test_only_loopback_addresses_are_served() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert check_loopback(host) == host
    for host in ("0.0.0.0", "192.168.1.5", "example.org", "::"):
        with pytest.raises(ValueError, match="only listens on the loopback"):
            check_loopback(host)
    with pytest.raises(ValueError, match="loopback"), serve_in_background(MODELS, host="0.0.0.0"):
        pass
    with pytest.raises(SystemExit):
        main(["--host", "0.0.0.0", "--model", "x=y.pt"])


def test_model_specs_on_the_command_line() -> None:
    assert parse_model_spec("sft=data/checkpoints/sft.pt") == (
        "sft",
        Path("data/checkpoints/sft.pt"),
        None,
    )
    assert parse_model_spec("j=a/b.pt:raw") == ("j", Path("a/b.pt"), "raw")
    assert parse_model_spec(r"w=C:\models\m.pt") == ("w", Path(r"C:\models\m.pt"), None)
    for bad in ("sft", "=x.pt", "sft="):
        with pytest.raises(ValueError, match="name=path"):
            parse_model_spec(bad)


def test_load_chat_model_reads_the_template_the_checkpoint_records(tmp_path) -> None:
    model = make_model(3)
    path = save_checkpoint(tmp_path / "m.pt", model, extra={"template": "raw"}, tokenizer=ENC)
    cm = load_chat_model("m", path)
    assert cm.template == "raw" and cm.answer_lead == ""
    in_memory = ChatModel("m", model, ENC, template="raw")
    assert cm.chat("Nabo lives in", **GREEDY) == in_memory.chat("Nabo lives in", **GREEDY)
    assert load_chat_model("m", path, template="alpaca").template == "alpaca"
    odd = save_checkpoint(tmp_path / "odd.pt", model, extra={"template": "chatml"}, tokenizer=ENC)
    with pytest.raises(ValueError, match="records the prompt template 'chatml'"):
        load_chat_model("odd", odd)
    plain = save_checkpoint(tmp_path / "plain.pt", model, tokenizer=ENC)
    assert load_chat_model("p", plain).template == "alpaca"
    with pytest.raises(SystemExit):
        main(["--model", f"m={tmp_path / 'missing.pt'}"])


def test_phi3_models_stop_at_the_end_of_their_turn() -> None:
    enc = extend_encoding(ENC, PHI3_SPECIALS)
    end = enc.encode_single_token("<|end|>")
    cfg = dataclasses.replace(CFG, vocab_size=enc.n_vocab)
    model = ScriptedGPT(cfg, script=[*ENC.encode(" Yes."), end, *ENC.encode(" more")])
    cm = ChatModel("phi", model, enc, template="phi3")
    answer = cm.answer(cm.build_prompt(HI), {"temperature": 0})
    assert "".join(answer) == "Yes." and answer.done_reason == "stop"
    assert answer.prompt_ids[:1] == [enc.encode_single_token("<|user|>")]


def test_one_set_of_weights_answers_one_request_at_a_time() -> None:
    model = make_model(0)
    assert ChatModel("a", model, ENC).lock is ChatModel("b", model, ENC, "raw").lock
    assert ChatModel("c", make_model(0), ENC).lock is not ChatModel("d", model, ENC).lock
