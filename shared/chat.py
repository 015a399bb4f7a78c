"""A chat model in process: prompt templates, Ollama's generation options, streamed answers.

A chat is a list of messages (``{"role": "user", "content": "..."}``); the model only ever
continues a text. This module is the step between the two, with no web server involved:

- ``alpaca_prompt`` / ``phi3_prompt`` / ``raw_prompt`` and ``PROMPT_TEMPLATES``: the chat
  messages turned into the prompt text the model was fine-tuned on (``shared.prompts``).
- ``GenerationOptions``: how the answer's tokens are picked, read from an ``"options"``
  object with Ollama's names and defaults (``temperature``, ``top_k``, ``top_p``, ``seed``,
  ``num_predict``, ``num_ctx``, ``stop``); a bad value is a ValueError that names it.
- ``ChatModel``: a model, its tokenizer and its template under one name.
  ``chat_model.chat("What colour is Nabo's hat?", temperature=0)`` answers in process.
- ``Answer``: one answer being generated, token by token with a KV cache; iterate over it
  to get the text piece by piece as soon as it exists (or ``start_thread`` it and read the
  pieces in an event loop), then read Ollama's statistics (token counts, durations, why it
  stopped) from its attributes; ``cancel`` ends it after the current token.
- ``ContextLengthError``: the prompt leaves no room for an answer in the model's context.
- ``load_chat_model``: a ``ChatModel`` from a checkpoint file.

Each model answers one request at a time (a lock per set of weights, held from an answer's
first token to its last): a CPU is busy enough with one. So whoever iterates an ``Answer``
must not wait, between two pieces, for anything that waits for the same model;
``start_thread`` is the safe way to serve many answers at once. ``shared.judge_server`` puts
these models behind Ollama's HTTP API.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import math
import secrets
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tiktoken
import torch
from torch import nn

from shared.attention import KVCache
from shared.bpe import check_tokenizer, get_encoding
from shared.checkpoints import load_model, read_checkpoint
from shared.checks import is_int, is_number
from shared.decoding import sample_next
from shared.prompts import (
    PHI3_SPECIALS,
    RESPONSE_LEAD,
    STOP_TOKENS,
    extend_encoding,
    format_prompt,
)

__all__ = [
    "PROMPT_TEMPLATES",
    "ROLES",
    "Answer",
    "AnswerText",
    "ChatModel",
    "ContextLengthError",
    "GenerationOptions",
    "Messages",
    "PromptBuilder",
    "alpaca_prompt",
    "check_messages",
    "json_type",
    "load_chat_model",
    "now_ns",
    "phi3_prompt",
    "raw_prompt",
]

ROLES = ("system", "user", "assistant", "tool")

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


class ContextLengthError(ValueError):
    """The prompt leaves no room for an answer in the model's context (the server: 413)."""

    def __init__(self, message: str, prompt_tokens: int, limit: int) -> None:
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.limit = limit


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
                f"{where or 'options'} must be a JSON object, got {json_type(options)}"
            )
        at = f"{where}." if where else ""  # how the message names a field
        values = {**(defaults or {}), **{k: v for k, v in options.items() if v is not None}}
        out: dict[str, Any] = {}
        if "temperature" in values:
            t = values["temperature"]
            if not is_number(t) or not math.isfinite(t) or t < 0:
                raise ValueError(f"{at}temperature must be a number >= 0, got {t!r}")
            out["temperature"] = float(t)
        if "top_k" in values:
            k = values["top_k"]
            if not is_int(k) or k < 0:
                raise ValueError(f"{at}top_k must be an integer >= 0 (0: off), got {k!r}")
            out["top_k"] = int(k) or None
        if "top_p" in values:
            p = values["top_p"]
            if not is_number(p) or not 0.0 < p <= 1.0:
                raise ValueError(f"{at}top_p must be a number in (0, 1], got {p!r}")
            out["top_p"] = None if p == 1.0 else float(p)  # 1 keeps every token: no filter
        if "seed" in values:
            seed = values["seed"]
            if not is_int(seed):
                raise ValueError(f"{at}seed must be an integer, got {seed!r}")
            out["seed"] = int(seed)
        if "num_predict" in values:
            n = values["num_predict"]
            if not is_int(n) or n < -2:
                raise ValueError(
                    f"{at}num_predict must be an integer >= 0, or -1 (until the end of "
                    f"the text or of the context), got {n!r}"
                )
            out["num_predict"] = -1 if n < 0 else int(n)  # Ollama's -2 ("fill the context")
        if "num_ctx" in values:
            n = values["num_ctx"]
            if not is_int(n) or n < 1:
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


def json_type(value: Any) -> str:
    """What a JSON value is, in words, for error messages: "an object", "null", ..."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "a number" if is_number(value) else type(value).__name__


# --------------------------------------------------------------------------- generation


class AnswerText:
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


def now_ns() -> int:
    """The clock of ``Answer``'s durations (nanoseconds; only differences mean anything)."""
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

    The model's lock is held from the first token to the last (or to ``cancel``), across
    the yields: the consumer of the pieces must not wait for anything that waits for this
    model. ``start_thread`` consumes them in a thread of its own that never waits.
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
        self.started_ns = now_ns() if started_ns is None else started_ns
        self.text = ""
        self.done_reason: str | None = None
        self.prompt_eval_count = len(prompt_ids)
        self.eval_count = 0
        self.load_duration = 0
        self.prompt_eval_duration = 0
        self.eval_duration = 0
        self.total_duration = 0
        self._iterated = False
        self._cancelled = threading.Event()

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

    def cancel(self) -> None:
        """End the generation after the current token (from any thread); the model's lock
        is then let go. An answer cancelled before it starts generates nothing."""
        self._cancelled.set()

    def start_thread(self, finish: Callable[[], None] = lambda: None) -> AsyncIterator[str]:
        """Generate the whole answer now, in a new daemon thread; ``async for`` over what
        this returns gets the pieces in the calling event loop.

        The thread hands each piece over through an unbounded queue and never waits for
        its consumer: with the model's lock held, it waits for nothing but the CPU, so the
        answer always runs to its end (or to ``cancel``), whatever the consumer does, and
        the next request for the model then gets the lock. ``finish()`` runs in the thread
        once the generation is over, before the consumer sees the end; an exception that
        ended the generation is raised in the consumer.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()

        def deliver(item: str | BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                self.cancel()

        def run() -> None:
            end: BaseException | None = None
            try:
                for piece in self:
                    deliver(piece)
            except BaseException as e:  # raised in the consumer
                end = e
            finally:
                try:
                    finish()
                finally:
                    deliver(end)

        threading.Thread(target=run, name=f"answer-{self.chat_model.name}", daemon=True).start()
        return _received(queue)

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
        text = AnswerText(cm.answer_lead, opts.stop)
        # One request at a time per model: the CPU is busy enough with one.
        with cm.lock:
            began = now_ns()
            self.load_duration = began - self.started_ns  # waiting and preparing
            was_training = cm.model.training
            cm.model.eval()
            try:
                cache = KVCache(cm.model.cfg.n_layers, cm.model.cfg.context_length)
                step_input = self.prompt_ids
                self.done_reason = "length"
                for step in range(self.max_new_tokens):
                    if self._cancelled.is_set():  # nobody wants the rest
                        break
                    token = cm._next_token(step_input, cache, opts, generator)
                    if step == 0:
                        self.prompt_eval_duration = now_ns() - began
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
                end = now_ns()
                if self.max_new_tokens > 0:
                    self.eval_duration = end - began - self.prompt_eval_duration
                self.total_duration = end - self.started_ns


async def _received(queue: asyncio.Queue) -> AsyncIterator[str]:
    """The pieces ``Answer.start_thread`` hands over, up to the end (``None``)."""
    while (item := await queue.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item


class ChatModel:
    """A model to chat with under ``name``: weights, tokenizer and prompt template.

    ``model`` is a ``GPTModel`` (anything with ``.cfg`` that accepts ``kv_cache=``),
    ``encoding`` the ``tiktoken.Encoding`` it was trained with, ``template`` the name of an
    entry of ``PROMPT_TEMPLATES`` or a function from the chat messages to the prompt text.
    ``answer_lead`` is text the model writes before every answer because its template ends
    that way, and which is dropped from the answer: by default one space for the named
    chat templates (see ``shared.prompts.RESPONSE_LEAD``) and nothing otherwise.

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
            default_lead = "" if template == "raw" else RESPONSE_LEAD
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
    return check_messages(prompt_or_messages)


def check_messages(messages: Any) -> Messages:
    """Chat messages as plain ``{"role", "content"}`` dicts; ValueError names a bad one."""
    if not isinstance(messages, list):
        raise ValueError(f"messages must be an array of messages, got {json_type(messages)}")
    if not messages:
        raise ValueError("messages must not be empty: give at least one user message")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ValueError(f"messages[{i}] must be an object, got {json_type(m)}")
        if m.get("role") not in ROLES:
            raise ValueError(
                f"messages[{i}].role must be one of {list(ROLES)}, got {m.get('role')!r}"
            )
        if not isinstance(m.get("content"), str):
            raise ValueError(
                f"messages[{i}].content must be a string, got {json_type(m.get('content'))}"
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
