"""A small local server that speaks Ollama's HTTP API, serving the project's own models.

Chapter 12 asks a model to judge answers through the same HTTP API that Ollama offers, so
the notebook's client works unchanged against a real Ollama (``ollama serve``) and against
this server, which serves the checkpoints in ``data/checkpoints`` with no download at all.

Start it from a shell (``--model`` may be repeated; the template is optional)::

    python -m shared.judge_server --port 11434 --model sft=data/checkpoints/sft.pt:alpaca

(with no ``--model`` it serves those of the released sft, ppo, dpo and judge checkpoints
that exist, each with the template its checkpoint records), or from a notebook, in a
background thread on a free port::

    app = create_app({"sft": ChatModel("sft", model, encoding)})
    with serve_in_background(app) as url:
        print(judge_client.chat("What colour is Nabo's hat?", "sft", url=url))

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

``burst(url, model)`` sends a burst of identical requests at once and measures the
requests per second and the latencies (a benchmark, and a check that nothing is lost).

The server has no authentication, so it only ever listens on the loopback interface.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import hashlib
import ipaddress
import json
import math
import numbers
import secrets
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tiktoken
import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send
from torch import nn

from shared.attention import KVCache
from shared.bpe import check_tokenizer, get_encoding
from shared.checkpoints import load_model, read_checkpoint
from shared.decoding import sample_next
from shared.runtime import DATA_DIR
from shared.sft import PHI3_SPECIALS, extend_encoding, format_prompt

__all__ = [
    "PROMPT_TEMPLATES",
    "Answer",
    "ChatModel",
    "ContextLengthError",
    "GenerationOptions",
    "alpaca_prompt",
    "burst",
    "create_app",
    "load_chat_model",
    "main",
    "phi3_prompt",
    "raw_prompt",
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
ROLES = ("system", "user", "assistant", "tool")
# Special tokens that end an answer when the model writes them: end-of-text, and the end of
# a turn in the Phi-3 template (present only in encodings extended with PHI3_SPECIALS).
STOP_TOKENS = ("<|endoftext|>", "<|end|>")
# The project's instruction data puts one space between the template and the response (the
# tokenizer knows words after a space far better than at the start of a line), so a model
# fine-tuned on it writes that space first. It is part of the format, not of the answer.
TEMPLATE_ANSWER_LEAD = " "

Messages = list[dict[str, str]]
PromptBuilder = Callable[[Messages], str]


# --------------------------------------------------------------------------- templates


def _last_user_message(messages: Messages) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message["content"]
    raise ValueError("messages contain no message with role 'user': there is nothing to answer")


def alpaca_prompt(messages: Messages) -> str:
    """The last user message as the instruction of the Alpaca template.

    The project's SFT model was fine-tuned on single instructions, so earlier turns and
    system messages are not shown to it.
    """
    return format_prompt({"instruction": _last_user_message(messages), "input": ""}, "alpaca")


def phi3_prompt(messages: Messages) -> str:
    """The last user message in the Phi-3 template (``<|user|> ... <|assistant|>``)."""
    return format_prompt({"instruction": _last_user_message(messages), "input": ""}, "phi3")


def raw_prompt(messages: Messages) -> str:
    """The last user message as it is: the model simply continues the text."""
    return _last_user_message(messages)


# A template is any function from the chat messages to the prompt text; the names here are
# the ones ``--model name=path:template`` accepts. A model with a prompt format of its own
# passes its function to ChatModel (or adds it here before starting the server).
PROMPT_TEMPLATES: dict[str, PromptBuilder] = {
    "alpaca": alpaca_prompt,
    "phi3": phi3_prompt,
    "raw": raw_prompt,
}


# --------------------------------------------------------------------------- options


class RequestError(Exception):
    """A request the server refuses, with the HTTP status code that says why.

    ``code`` replaces the status's usual ``code`` in the OpenAI endpoints' error shape.
    """

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class ContextLengthError(ValueError):
    """The prompt leaves no room for an answer in the model's context (HTTP 413)."""

    def __init__(self, message: str, prompt_tokens: int, limit: int) -> None:
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.limit = limit


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class GenerationOptions:
    """How to pick the answer's tokens: Ollama's option names, with Ollama's defaults.

    ``top_k=None`` and ``top_p=None`` switch those filters off; ``seed=None`` means a fresh
    random seed per request; ``num_predict=-1`` generates until end-of-text or until the
    context is full; ``num_ctx=None`` uses the model's whole context.
    """

    temperature: float = 0.8
    top_k: int | None = 40
    top_p: float | None = 0.9
    seed: int | None = None
    num_predict: int = -1
    num_ctx: int | None = None
    stop: tuple[str, ...] = ()

    @classmethod
    def from_ollama(
        cls, options: Any, defaults: Mapping[str, Any] | None = None, where: str = "options"
    ) -> GenerationOptions:
        """Check an ``"options"`` object of a request; ValueError names the bad field.

        ``defaults`` replaces Ollama's defaults for the fields the request leaves out
        (the OpenAI endpoint samples at temperature 1 with no top-k or top-p, for example);
        ``where`` is how the messages name the object (``""``: its fields are top-level).
        """
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise ValueError(
                f"{where or 'options'} must be a JSON object, got {_json_type(options)}"
            )
        at = f"{where}." if where else ""  # how the message names a field
        values = {**(defaults or {}), **{k: v for k, v in options.items() if v is not None}}
        out: dict[str, Any] = {}
        if "temperature" in values:
            t = values["temperature"]
            if not _is_number(t) or not math.isfinite(t) or t < 0:
                raise ValueError(f"{at}temperature must be a number >= 0, got {t!r}")
            out["temperature"] = float(t)
        if "top_k" in values:
            k = values["top_k"]
            if not _is_int(k) or k < 0:
                raise ValueError(f"{at}top_k must be an integer >= 0 (0: off), got {k!r}")
            out["top_k"] = int(k) or None
        if "top_p" in values:
            p = values["top_p"]
            if not _is_number(p) or not 0.0 < p <= 1.0:
                raise ValueError(f"{at}top_p must be a number in (0, 1], got {p!r}")
            out["top_p"] = None if p == 1.0 else float(p)  # 1 keeps every token: no filter
        if "seed" in values:
            seed = values["seed"]
            if not _is_int(seed):
                raise ValueError(f"{at}seed must be an integer, got {seed!r}")
            out["seed"] = int(seed)
        if "num_predict" in values:
            n = values["num_predict"]
            if not _is_int(n) or n < -2:
                raise ValueError(
                    f"{at}num_predict must be an integer >= 0, or -1 (until the end of "
                    f"the text or of the context), got {n!r}"
                )
            out["num_predict"] = -1 if n < 0 else int(n)  # Ollama's -2 ("fill the context")
        if "num_ctx" in values:
            n = values["num_ctx"]
            if not _is_int(n) or n < 1:
                raise ValueError(f"{at}num_ctx must be a positive integer, got {n!r}")
            out["num_ctx"] = int(n)
        if "stop" in values:
            stop = values["stop"]
            if isinstance(stop, str):
                stop = [stop]
            if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
                raise ValueError(
                    f"{at}stop must be a list of non-empty strings, got {values['stop']!r}"
                )
            out["stop"] = tuple(stop)
        return cls(**out)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "a number" if _is_number(value) else type(value).__name__


# --------------------------------------------------------------------------- generation


class _AnswerText:
    """Turns the decoded pieces into the text the client sees.

    Two things need a little look-ahead: the template's answer lead (one space) is dropped
    from the start, and the answer ends before the first ``stop`` string. A piece that could
    be the beginning of a stop string is held back until the next piece shows whether it is.
    """

    def __init__(self, lead: str, stops: Sequence[str]) -> None:
        self.lead = lead
        self.stops = tuple(stops)
        self.pending = ""  # text received but not yet passed on
        self.stopped = False  # a stop string was found

    def feed(self, piece: str) -> str:
        self.pending += piece
        if self.lead:
            if len(self.pending) < len(self.lead) and self.lead.startswith(self.pending):
                return ""  # could still be the lead: wait
            if self.pending.startswith(self.lead):
                self.pending = self.pending[len(self.lead) :]
            self.lead = ""
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending, self.stopped = self.pending[: min(hits)], "", True
            return out
        # Hold back the longest end of the text that begins some stop string.
        hold = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.pending)), hold, -1):
                if self.pending.endswith(s[:n]):
                    hold = n
                    break
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out

    def finish(self) -> str:
        """What is still held back once the answer is complete (it was no stop string)."""
        out = "" if self.lead else self.pending
        self.pending = ""
        return out


def _now_ns() -> int:
    return time.perf_counter_ns()


class Answer:
    """One answer being generated: iterate over it to get the text piece by piece.

    Once the iteration is over, the attributes hold what Ollama reports in its final
    message: ``done_reason`` (``"stop"``: end-of-text or a stop string, ``"length"``: the
    token budget or the context ran out), ``prompt_eval_count`` (prompt tokens),
    ``eval_count`` (answer tokens, the end-of-text token not counted) and the durations in
    nanoseconds (``stats()`` gives them as a dict). ``text`` is the whole answer.

    The steps are those of ``shared.decoding.generate`` (the prompt through the model once
    with a KV cache, then one new token per step, each chosen by ``sample_next``), written
    out here so that every token can be passed on as soon as it exists.
    """

    def __init__(
        self,
        chat_model: ChatModel,
        prompt_ids: list[int],
        options: GenerationOptions,
        max_new_tokens: int,
        started_ns: int | None = None,
    ) -> None:
        self.chat_model = chat_model
        self.prompt_ids = prompt_ids
        self.options = options
        self.max_new_tokens = max_new_tokens
        self.started_ns = _now_ns() if started_ns is None else started_ns
        self.text = ""
        self.done_reason: str | None = None
        self.prompt_eval_count = len(prompt_ids)
        self.eval_count = 0
        self.load_duration = 0
        self.prompt_eval_duration = 0
        self.eval_duration = 0
        self.total_duration = 0
        self._iterated = False

    def stats(self) -> dict[str, Any]:
        """The fields of Ollama's final message (after the iteration)."""
        return {
            "done_reason": self.done_reason,
            "total_duration": self.total_duration,
            "load_duration": self.load_duration,
            "prompt_eval_count": self.prompt_eval_count,
            "prompt_eval_duration": self.prompt_eval_duration,
            "eval_count": self.eval_count,
            "eval_duration": self.eval_duration,
        }

    def __iter__(self) -> Iterator[str]:
        if self._iterated:
            raise RuntimeError("an Answer can be iterated only once")
        self._iterated = True
        return self._pieces()

    def _pieces(self) -> Iterator[str]:
        cm = self.chat_model
        opts = self.options
        generator = None
        if opts.temperature > 0:
            seed = secrets.randbits(63) if opts.seed is None else opts.seed
            generator = torch.Generator(device=cm.device).manual_seed(seed % 2**64)
        # Bytes -> text with an incremental decoder: a character whose UTF-8 bytes are
        # spread over two tokens comes out whole, once its last byte has arrived.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = _AnswerText(cm.answer_lead, opts.stop)
        # One request at a time per model: the CPU is busy enough with one.
        with cm.lock:
            began = _now_ns()
            self.load_duration = began - self.started_ns  # waiting and preparing
            was_training = cm.model.training
            cm.model.eval()
            try:
                cache = KVCache(cm.model.cfg.n_layers, cm.model.cfg.context_length)
                step_input = self.prompt_ids
                self.done_reason = "length"
                for step in range(self.max_new_tokens):
                    token = cm._next_token(step_input, cache, opts, generator)
                    if step == 0:
                        self.prompt_eval_duration = _now_ns() - began
                    if token in cm.stop_ids:
                        self.done_reason = "stop"
                        break
                    self.eval_count += 1
                    out = text.feed(decoder.decode(cm.encoding.decode_single_token_bytes(token)))
                    if out:
                        self.text += out
                        yield out
                    if text.stopped:
                        self.done_reason = "stop"
                        break
                    step_input = [token]
                if not text.stopped:
                    out = text.feed(decoder.decode(b"", final=True)) + text.finish()
                    if text.stopped:
                        self.done_reason = "stop"
                    if out:
                        self.text += out
                        yield out
            finally:
                cm.model.train(was_training)
                end = _now_ns()
                if self.max_new_tokens > 0:
                    self.eval_duration = end - began - self.prompt_eval_duration
                self.total_duration = end - self.started_ns


class ChatModel:
    """A model the server offers under ``name``: weights, tokenizer and prompt template.

    ``model`` is a ``GPTModel`` (anything with ``.cfg`` that accepts ``kv_cache=``),
    ``encoding`` the ``tiktoken.Encoding`` it was trained with, ``template`` the name of an
    entry of ``PROMPT_TEMPLATES`` or a function from the chat messages to the prompt text.
    ``answer_lead`` is text the model writes before every answer because its template ends
    that way, and which is dropped from the answer: by default one space for the named
    chat templates (see ``TEMPLATE_ANSWER_LEAD``) and nothing otherwise.

    ``chat_model.chat("question", temperature=0)`` answers in process, without HTTP.
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        encoding: tiktoken.Encoding,
        template: str | PromptBuilder = "alpaca",
        answer_lead: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not name or name != name.strip():
            raise ValueError(f"name must be a non-empty string without outer spaces, got {name!r}")
        cfg = getattr(model, "cfg", None)
        if not isinstance(model, nn.Module) or cfg is None:
            raise TypeError(f"model must be a GPTModel, got {type(model).__name__}")
        if not isinstance(encoding, tiktoken.Encoding):
            raise TypeError(
                "encoding must be a tiktoken.Encoding (such as shared.bpe.get_encoding()), "
                f"got {type(encoding).__name__}"
            )
        check_tokenizer(getattr(model, "tokenizer_identity", None), encoding, cfg.vocab_size)
        if isinstance(template, str):
            if template not in PROMPT_TEMPLATES:
                raise ValueError(
                    f"template must be one of {sorted(PROMPT_TEMPLATES)} or a function from "
                    f"messages to a prompt, got {template!r}"
                )
            builder = PROMPT_TEMPLATES[template]
            default_lead = "" if template == "raw" else TEMPLATE_ANSWER_LEAD
        elif callable(template):
            builder, default_lead = template, ""
        else:
            raise TypeError(f"template must be a name or a function, got {template!r}")
        if answer_lead is not None and not isinstance(answer_lead, str):
            raise TypeError(f"answer_lead must be a string or None, got {answer_lead!r}")
        self.name = name
        self.model = model
        self.encoding = encoding
        self.template = template
        self.build_prompt: PromptBuilder = builder
        self.answer_lead = default_lead if answer_lead is None else answer_lead
        specials = encoding.special_tokens_set
        self.stop_ids = {encoding.encode_single_token(t) for t in STOP_TOKENS if t in specials}
        self.lock = _lock_for(model)
        self.modified_at = datetime.now(timezone.utc)
        self._digest: str | None = None

    def __repr__(self) -> str:
        template = self.template if isinstance(self.template, str) else self.build_prompt.__name__
        return f"ChatModel({self.name!r}, template={template!r}, context={self.context_length})"

    @property
    def context_length(self) -> int:
        return self.model.cfg.context_length

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def digest(self) -> str:
        """SHA-256 of the weights (what ``/api/tags`` reports), computed once."""
        if self._digest is None:
            h = hashlib.sha256()
            for key, value in sorted(self.model.state_dict().items()):
                h.update(key.encode())
                h.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
            self._digest = h.hexdigest()
        return self._digest

    def describe(self) -> dict[str, Any]:
        """This model as one entry of ``/api/tags``."""
        params = list({id(p): p for p in self.model.parameters()}.values())  # tied: once
        n_params = sum(p.numel() for p in params)
        dtype = str(params[0].dtype).removeprefix("torch.")
        dtype = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}.get(dtype, dtype.upper())
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": self.modified_at.isoformat(),
            "size": sum(p.numel() * p.element_size() for p in params),
            "digest": self.digest,
            "details": {
                "format": "pytorch",
                "family": "gpt",
                "families": ["gpt"],
                "parameter_size": _human_count(n_params),
                "quantization_level": dtype,
                "context_length": self.context_length,
            },
        }

    def encode(self, prompt: str) -> list[int]:
        """Prompt text to ids; special tokens written in it (``<|user|>``) count as such."""
        return self.encoding.encode(prompt, allowed_special="all")

    def answer(
        self,
        prompt: str,
        options: GenerationOptions | Mapping[str, Any] | None = None,
        started_ns: int | None = None,
    ) -> Answer:
        """Start answering the finished ``prompt`` (the template already applied).

        Raises ``ContextLengthError`` when the prompt leaves no room for an answer in the
        context (``num_ctx``, at most the model's context length). Nothing runs until the
        returned ``Answer`` is iterated.
        """
        if not isinstance(options, GenerationOptions):
            options = GenerationOptions.from_ollama(options)
        ids = self.encode(prompt)
        if not ids:
            raise ValueError("the prompt is empty: there is nothing to continue")
        limit = self.context_length
        if options.num_ctx is not None:
            limit = min(limit, options.num_ctx)
        if len(ids) >= limit:
            how = f"its context length is {self.context_length}"
            if options.num_ctx is not None and options.num_ctx < self.context_length:
                how = f"options.num_ctx is {options.num_ctx}"
            raise ContextLengthError(
                f"the prompt is {len(ids)} tokens, but model '{self.name}' reads at most "
                f"{limit} ({how}) and needs room for at least one answer token: shorten "
                "the prompt",
                prompt_tokens=len(ids),
                limit=limit,
            )
        room = limit - len(ids)  # the answer never slides the window: no prompt is lost
        n = room if options.num_predict < 0 else min(options.num_predict, room)
        return Answer(self, ids, options, n, started_ns)

    def chat(self, prompt_or_messages: str | Messages, **options: Any) -> str:
        """The whole answer to a question (or a list of chat messages), in process.

        ``options`` are Ollama's (``temperature=0``, ``seed=123``, ``num_predict=50``, ...).
        """
        messages = _as_messages(prompt_or_messages)
        return "".join(self.answer(self.build_prompt(messages), options))

    @torch.no_grad()
    def _next_token(
        self,
        new_ids: list[int],
        cache: KVCache,
        options: GenerationOptions,
        generator: torch.Generator | None,
    ) -> int:
        """Run ``new_ids`` through the model after what ``cache`` holds; pick the next id."""
        idx = torch.tensor([new_ids], device=self.device)  # (1, T)
        logits = self.model(idx, kv_cache=cache)[:, -1]  # (1, vocab): the last position
        return int(
            sample_next(logits, options.temperature, options.top_k, options.top_p, generator)
        )


# One lock per nn.Module, not per ChatModel: the same weights served under two names (two
# templates, say) must still answer one request at a time.
_MODEL_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.Lock] = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


def _lock_for(model: nn.Module) -> threading.Lock:
    with _MODEL_LOCKS_GUARD:
        return _MODEL_LOCKS.setdefault(model, threading.Lock())


def _human_count(n: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _as_messages(prompt_or_messages: str | Messages) -> Messages:
    if isinstance(prompt_or_messages, str):
        return [{"role": "user", "content": prompt_or_messages}]
    return _check_messages(prompt_or_messages)


def _check_messages(messages: Any) -> Messages:
    if not isinstance(messages, list):
        raise ValueError(f"messages must be an array of messages, got {_json_type(messages)}")
    if not messages:
        raise ValueError("messages must not be empty: give at least one user message")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ValueError(f"messages[{i}] must be an object, got {_json_type(m)}")
        if m.get("role") not in ROLES:
            raise ValueError(
                f"messages[{i}].role must be one of {list(ROLES)}, got {m.get('role')!r}"
            )
        if not isinstance(m.get("content"), str):
            raise ValueError(
                f"messages[{i}].content must be a string, got {_json_type(m.get('content'))}"
            )
    return [{"role": m["role"], "content": m["content"]} for m in messages]


# --------------------------------------------------------------------------- loading


def load_chat_model(
    name: str,
    path: str | Path,
    template: str | PromptBuilder | None = None,
    device: str | torch.device = "cpu",
) -> ChatModel:
    """A ``ChatModel`` from a checkpoint file written by ``shared.checkpoints``.

    Without ``template``, the one the checkpoint records (``extra["template"]``, as the SFT
    checkpoint does) is used, else Alpaca; a recorded name missing from ``PROMPT_TEMPLATES``
    is a ValueError. The Phi-3 template brings its special tokens.
    """
    path = Path(path)
    if template is None:
        template = (read_checkpoint(path).get("extra") or {}).get("template", "alpaca")
        if template not in PROMPT_TEMPLATES:
            raise ValueError(
                f"checkpoint {path} records the prompt template {template!r}, which is not in "
                f"PROMPT_TEMPLATES ({sorted(PROMPT_TEMPLATES)}): add its function there, or "
                "pass template="
            )
    encoding = get_encoding()
    if template == "phi3":
        encoding = extend_encoding(encoding, PHI3_SPECIALS)
    model = load_model(path, device, tokenizer=encoding)
    return ChatModel(name, model, encoding, template)


# --------------------------------------------------------------------------- the app


def _created_at() -> str:
    """The current UTC time as Ollama writes it: ISO 8601 ending in ``Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


_OPENAI_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "context_length_exceeded"),
    429: ("rate_limit_error", None),
}


def _openai_error(status: int, message: str, code: str | None = None) -> JSONResponse:
    kind, usual_code = _OPENAI_ERROR_TYPES.get(status, ("api_error", None))
    code = code or usual_code
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


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
    if not _is_int(max_requests) or max_requests < 1:
        raise ValueError(f"max_requests must be a positive int, got {max_requests!r}")
    if not _is_int(max_body_bytes) or max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be a positive int, got {max_body_bytes!r}")
    models = dict(models)
    slots = threading.BoundedSemaphore(max_requests)

    app = FastAPI(
        title="shared.judge_server",
        version=VERSION,
        description="The project's models behind Ollama's HTTP API.",
    )
    app.state.models = models
    app.state.max_requests = max_requests
    app.state.max_body_bytes = max_body_bytes
    # The slots not taken right now (the count CPython's Semaphore keeps), for tests and
    # for a look at a running server.
    app.state.free_slots = lambda: slots._value

    def find_model(name: Any) -> ChatModel:
        if not isinstance(name, str) or not name:
            raise RequestError(400, "model is required: give the name of a served model")
        cm = models.get(name)
        if cm is None and name.endswith(":latest"):  # Ollama's default tag
            cm = models.get(name.removesuffix(":latest"))
        if cm is None:
            raise RequestError(404, f"model '{name}' not found")
        return cm

    def take_slot() -> _Slot:
        if not slots.acquire(blocking=False):
            raise RequestError(
                429,
                f"too many requests at once: the server answers at most {max_requests} at a "
                "time; try again in a moment",
            )
        return _Slot(slots)

    def body_too_large(size: str) -> RequestError:
        return RequestError(
            413,
            f"the request body is {size} bytes, over the server's limit of {max_body_bytes} "
            "bytes: send a shorter request",
            code="request_too_large",
        )

    async def read_body(request: Request) -> bytes:
        """The body; 413 if it is over ``max_body_bytes``, which is then never kept."""
        length = request.headers.get("content-length", "")
        # (uvicorn has already refused a malformed Content-Length with a 400 of its own.)
        declared = int(length) if length.isascii() and length.isdigit() else None
        too_big = declared is not None and declared > max_body_bytes
        if too_big and declared > max_body_bytes + DISCARD_BYTES:
            raise body_too_large(length)  # without reading any of it
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():  # chunked: no length known in advance
            size += len(chunk)
            if size > max_body_bytes + DISCARD_BYTES:
                raise body_too_large(f"more than {max_body_bytes}")
            if size > max_body_bytes:
                too_big = True
                chunks.clear()  # from here on, the body is only read and dropped
            if not too_big:
                chunks.append(chunk)
        if too_big:
            raise body_too_large(str(size if declared is None else declared))
        return b"".join(chunks)

    async def read_json(request: Request) -> dict[str, Any]:
        body = await read_body(request)
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RequestError(400, f"the request body is not valid JSON: {e}") from None
        except RecursionError:  # [[[[... : json's parser recurses once per level
            raise RequestError(400, "the request body is JSON nested too deeply") from None
        if not isinstance(data, dict):
            raise RequestError(
                400, f"the request body must be a JSON object, got {_json_type(data)}"
            )
        return data

    def field_bool(data: Mapping[str, Any], name: str, default: bool) -> bool:
        value = data.get(name, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise RequestError(400, f"{name} must be true or false, got {value!r}")
        return value

    async def start(cm: ChatModel, make_prompt: Callable[[], str], options: GenerationOptions):
        """Take a slot, build the prompt, check its length: (answer, slot)."""
        started = _now_ns()
        slot = take_slot()
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

    def ollama_stream(answer: Answer, slot: _Slot, chunk: Callable[[str], dict]) -> Iterator[bytes]:
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

    async def collect(answer: Answer, slot: _Slot) -> str:
        try:
            return await run_in_threadpool(lambda: "".join(answer))
        finally:
            slot.release()

    # ----- errors: always {"error": "..."} (the OpenAI endpoints: their own shape)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        if request.url.path.startswith("/v1/"):
            return _openai_error(exc.status, exc.message, exc.code)
        return _error(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"{exc.detail}: {request.method} {request.url.path}"
        return _error(exc.status_code, message)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        # A bug on the server's side: 500 with the reason, instead of a plain text page.
        # (Starlette still re-raises the exception afterwards, so it is logged as well.)
        message = f"internal server error: {type(exc).__name__}: {exc}"
        if request.url.path.startswith("/v1/"):
            return _openai_error(500, message)
        return _error(500, message)

    # ----- Ollama's endpoints

    @app.get("/", response_class=PlainTextResponse)
    async def root() -> str:
        return "Ollama is running"  # what Ollama answers here; some clients check it

    @app.get("/api/version")
    async def version() -> dict[str, str]:
        return {"version": VERSION}

    @app.get("/api/tags")
    async def tags() -> dict[str, Any]:
        return {"models": [cm.describe() for cm in models.values()]}

    @app.post("/api/chat")
    async def chat(request: Request):
        data = await read_json(request)
        cm = find_model(data.get("model"))
        try:
            messages = _check_messages(data.get("messages"))
            options = GenerationOptions.from_ollama(data.get("options"))
        except ValueError as e:
            raise RequestError(400, str(e)) from None
        stream = field_bool(data, "stream", True)
        answer, slot = await start(cm, lambda: cm.build_prompt(messages), options)

        def chunk(piece: str) -> dict[str, Any]:
            return {
                "model": cm.name,
                "created_at": _created_at(),
                "message": {"role": "assistant", "content": piece},
                "done": False,
            }

        if stream:
            body = ollama_stream(answer, slot, chunk)
            return _AnswerStream(request, body, slot, "application/x-ndjson")
        text = await collect(answer, slot)
        return {**chunk(text), "done": True, **answer.stats()}

    @app.post("/api/generate")
    async def generate(request: Request):
        data = await read_json(request)
        cm = find_model(data.get("model"))
        prompt, system = data.get("prompt"), data.get("system")
        if not isinstance(prompt, str):
            raise RequestError(400, f"prompt must be a string, got {_json_type(prompt)}")
        if system is not None and not isinstance(system, str):
            raise RequestError(400, f"system must be a string, got {_json_type(system)}")
        try:
            options = GenerationOptions.from_ollama(data.get("options"))
        except ValueError as e:
            raise RequestError(400, str(e)) from None
        stream = field_bool(data, "stream", True)
        raw = field_bool(data, "raw", False)
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        make_prompt = (lambda: prompt) if raw else (lambda: cm.build_prompt(messages))
        answer, slot = await start(cm, make_prompt, options)

        def chunk(piece: str) -> dict[str, Any]:
            return {"model": cm.name, "created_at": _created_at(), "response": piece, "done": False}

        if stream:
            body = ollama_stream(answer, slot, chunk)
            return _AnswerStream(request, body, slot, "application/x-ndjson")
        text = await collect(answer, slot)
        return {**chunk(text), "done": True, **answer.stats()}

    # ----- the OpenAI-compatible endpoints

    @app.get("/v1/models")
    async def openai_models() -> dict[str, Any]:
        data = [
            {
                "id": name,
                "object": "model",
                "created": int(cm.modified_at.timestamp()),
                "owned_by": "library",
            }
            for name, cm in models.items()
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def openai_chat(request: Request):
        data = await read_json(request)
        cm = find_model(data.get("model"))
        try:
            messages = _check_messages(data.get("messages"))
        except ValueError as e:
            raise RequestError(400, str(e)) from None
        n = data.get("n", 1)
        if n != 1 or isinstance(n, bool):
            raise RequestError(400, f"n must be 1 (one answer per request), got {n!r}")
        max_tokens = data.get("max_completion_tokens", data.get("max_tokens"))
        if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
            raise RequestError(400, f"max_tokens must be a positive integer, got {max_tokens!r}")
        picked = {k: data.get(k) for k in ("temperature", "top_p", "seed", "stop")}
        picked["num_predict"] = max_tokens
        try:  # OpenAI's defaults: temperature 1, no top-k, top-p 1
            options = GenerationOptions.from_ollama(
                picked, defaults={"temperature": 1.0, "top_k": 0, "top_p": 1.0}, where=""
            )
        except ValueError as e:
            raise RequestError(400, str(e)) from None
        stream = field_bool(data, "stream", False)
        answer, slot = await start(cm, lambda: cm.build_prompt(messages), options)
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        head = {"id": ident, "created": created, "model": cm.name}

        def finish_reason() -> str:
            return "length" if answer.done_reason == "length" else "stop"

        if stream:

            def events() -> Iterator[bytes]:
                def event(delta: dict, reason: str | None) -> bytes:
                    choice = {"index": 0, "delta": delta, "finish_reason": reason}
                    body = {**head, "object": "chat.completion.chunk", "choices": [choice]}
                    return b"data: " + json.dumps(body).encode() + b"\n\n"

                pieces = iter(answer)
                try:
                    for piece in pieces:
                        yield event({"role": "assistant", "content": piece}, None)
                    yield event({}, finish_reason())
                except Exception as e:
                    message = f"generation failed: {type(e).__name__}: {e}"
                    error = {"message": message, "type": "api_error"}
                    yield b"data: " + json.dumps({"error": error}).encode() + b"\n\n"
                finally:
                    pieces.close()
                    slot.release()
                yield b"data: [DONE]\n\n"

            return _AnswerStream(request, events(), slot, "text/event-stream")
        text = await collect(answer, slot)
        message = {"role": "assistant", "content": text}
        usage = {
            "prompt_tokens": answer.prompt_eval_count,
            "completion_tokens": answer.eval_count,
            "total_tokens": answer.prompt_eval_count + answer.eval_count,
        }
        choice = {"index": 0, "message": message, "finish_reason": finish_reason()}
        return {**head, "object": "chat.completion", "choices": [choice], "usage": usage}

    return app


def _line(obj: Mapping[str, Any]) -> bytes:
    """One line of a JSON-lines stream (non-ASCII as is, so a piece stays readable)."""
    return json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n"


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
    if not _is_int(port) or not 0 <= port < 2**16:
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


def burst(
    url: str,
    model: str,
    n: int = 32,
    prompt: str = "What colour is Nabo's hat?",
    num_predict: int = 8,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Send ``n`` identical ``/api/chat`` requests at once, each from its own thread.

    The requests are greedy (``temperature`` 0), not streamed, ``num_predict`` tokens long.
    ``timeout`` is how long each may wait for its answer; as they all start together, the
    whole burst takes about that long at most. Returns ``ok`` (answers with status 200), ``statuses``
    (status -> count; 0: no answer at all), ``answers`` (the distinct answer texts: one,
    as greedy decoding is deterministic), ``errors`` (the first few error messages),
    ``seconds`` (the whole burst), ``requests_per_s`` (answers per second) and ``p50_ms``
    and ``p95_ms`` (the latencies of the answered requests, nearest rank; None if none).
    """
    if not _is_int(n) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    payload = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": False,
            "options": {"temperature": 0, "num_predict": num_predict},
        }
    ).encode()
    endpoint = url.rstrip("/") + "/api/chat"
    # No proxy: the server is on this machine (an http_proxy variable would still be used).
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def one(_: int) -> tuple[int, str, float]:
        request = urllib.request.Request(
            endpoint, data=payload, headers={"Content-Type": "application/json"}
        )
        began = time.perf_counter()
        try:
            with opener.open(request, timeout=timeout) as r:
                status, text = r.status, json.loads(r.read())["message"]["content"]
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode("utf-8", "replace")
        except OSError as e:  # refused, reset, timed out
            status, text = 0, f"{type(e).__name__}: {e}"
        return status, text, time.perf_counter() - began

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, range(n)))
    seconds = time.perf_counter() - began
    answered = sorted(latency for status, _, latency in results if status == 200)

    def percentile(q: float) -> float | None:
        if not answered:
            return None
        return 1000 * answered[max(0, math.ceil(q * len(answered)) - 1)]

    statuses: dict[int, int] = {}
    for status, _, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "n": n,
        "ok": len(answered),
        "statuses": statuses,
        "answers": sorted({text for status, text, _ in results if status == 200}),
        "errors": [text for status, text, _ in results if status != 200][:3],
        "seconds": seconds,
        "requests_per_s": len(answered) / seconds,
        "p50_ms": percentile(0.50),
        "p95_ms": percentile(0.95),
    }


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
