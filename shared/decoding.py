"""Turning next-token logits into text: the decoding strategies of chapter 5.

- ``apply_temperature``: divide the logits by a temperature; below 1 sharpens the
  distribution, above 1 flattens it, 0 is the greedy limit.
- ``top_k_filter``: keep the ``k`` highest logits, mask the rest with ``-inf``.
- ``top_p_filter``: nucleus filtering, keep the smallest set of tokens whose probability
  mass reaches ``p``.
- ``sample_next``: temperature, then top-k, then top-p, then one draw per row.
- ``generate``: the loop, with a KV cache so each step only runs the new token through
  the model; ``generate_text``: the same from a prompt string to a string.

Masked logits are ``-inf``, so ``softmax`` gives those tokens probability exactly 0.
"""

from __future__ import annotations

import numbers
import operator

import tiktoken
import torch
from torch import Tensor, nn

from shared.attention import KVCache
from shared.bpe import BPETokenizer, check_tokenizer
from shared.checks import check_int, check_number

__all__ = [
    "apply_temperature",
    "check_logits",
    "generate",
    "generate_text",
    "sample_next",
    "top_k_filter",
    "top_p_filter",
]


# --------------------------------------------------------------------------- checks


def _check_top_k(k: int) -> int:
    if isinstance(k, bool) or not hasattr(k, "__index__"):
        raise TypeError(f"top_k must be a positive int (or None for no top-k), got {k!r}")
    k = operator.index(k)
    if k < 1:
        raise ValueError(f"top_k must be a positive int (or None for no top-k), got {k!r}")
    return k


def _check_top_p(p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"top_p must be a number in (0, 1] (or None for no top-p), got {p!r}")
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (or None for no top-p), got {p!r}")
    return float(p)


def _rows(mask: Tensor) -> str:
    """The first few row indices (over the leading axes) where ``mask`` holds."""
    rows = mask.reshape(-1, mask.shape[-1]).any(dim=-1).nonzero().flatten().tolist()
    return f"{rows[:5]}{'...' if len(rows) > 5 else ''}"


def check_logits(logits: Tensor, name: str = "logits", hint: str = "") -> None:
    """Refuse logits that no token can be sensibly chosen from: NaN, +inf, or a row in
    which every entry is -inf (everything masked). A -inf entry alone is a masked token."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"expected {name} of shape (..., vocab), got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {logits.dtype}")
    nan = logits.isnan()
    if bool(nan.any()):
        raise ValueError(f"{name} contain NaN (row(s) {_rows(nan)}){hint}")
    pos_inf = logits == float("inf")
    if bool(pos_inf.any()):
        raise ValueError(f"{name} contain +inf (row(s) {_rows(pos_inf)}){hint}")
    all_masked = (logits == float("-inf")).all(dim=-1, keepdim=True)
    if bool(all_masked.any()):
        raise ValueError(
            f"row(s) {_rows(all_masked)} of {name} are all -inf: every token is masked, so "
            f"there is no token to choose{hint}"
        )


# --------------------------------------------------------------------------- filters


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """``logits / temperature`` over the last axis (the vocabulary).

    ``softmax(logits / t)``: as ``t -> 0`` all the probability moves to the largest logit,
    as ``t -> inf`` the distribution becomes uniform, ``t = 1`` leaves it unchanged. Dividing
    by 0 is undefined, so ``temperature=0`` returns that limit directly: the largest logit(s)
    of each row unchanged and every other entry ``-inf`` (greedy decoding). Negative
    temperatures would reverse the order of preference and are a ValueError.
    """
    t = check_number(temperature, "temperature", 0.0)
    check_logits(logits)
    if t == 0.0:
        top = logits.max(dim=-1, keepdim=True).values
        return logits.masked_fill(logits < top, float("-inf"))
    tempered = logits / t
    overflow = tempered == float("inf")
    if bool(overflow.any()):
        raise ValueError(
            f"temperature={temperature!r} is too small for these logits: logits / temperature "
            f"overflows {logits.dtype} to inf (row(s) {_rows(overflow)}); use "
            "temperature=0 for greedy decoding"
        )
    return tempered


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest logits of each row, set the others to ``-inf``.

    Exactly ``k`` survive (``torch.topk`` decides between equal values); ``k`` larger than
    the vocabulary keeps everything.
    """
    k = _check_top_k(k)
    check_logits(logits)
    k = min(k, logits.shape[-1])
    values, indices = torch.topk(logits, k, dim=-1)
    return torch.full_like(logits, float("-inf")).scatter(-1, indices, values)


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose mass is >= ``p``.

    Sort the probabilities from high to low and keep a token when the mass of the tokens
    *before* it is still below ``p``. The most likely token is therefore always kept, and
    ``p = 1`` keeps every token. Unlike top-k, the number kept adapts to the model's
    confidence: one token when it is sure, many when it is not. (Where a cumulative sum
    lands exactly on ``p``, float rounding decides.)
    """
    p = _check_top_p(p)
    check_logits(logits)
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs  # mass of the more likely tokens
    drop_sorted = mass_before >= p  # the first entry has mass_before 0 < p: always kept
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One token id per row of ``logits`` ``(..., vocab)``: returns ids of shape ``(...)``.

    Order: temperature, then top-k, then top-p (the nucleus is taken from the tempered
    distribution), then one draw from the softmax. ``temperature=0`` is greedy: the argmax
    (the first one if several are equal), with no randomness consumed; neither filter can
    remove the argmax, so ``top_k`` and ``top_p`` do not change it. Pass a seeded
    ``torch.Generator`` to make draws reproducible without touching the global seed.
    """
    temperature = check_number(temperature, "temperature", 0.0)
    if top_k is not None:
        _check_top_k(top_k)
    if top_p is not None:
        _check_top_p(top_p)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {generator!r}")
    check_logits(logits)
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = apply_temperature(logits.float(), temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1).reshape(-1, logits.shape[-1])  # (rows, vocab)
    ids = torch.multinomial(probs, num_samples=1, generator=generator)  # (rows, 1)
    return ids.view(logits.shape[:-1])


# --------------------------------------------------------------------------- generation


@torch.no_grad()
def _check_generate_arguments(
    model, idx, max_new_tokens, temperature, top_k, top_p, eos_id, use_cache, generator
) -> tuple:
    """``generate``'s checks, all before any work; returns ``(cfg, idx as int64 or int32,
    max_new_tokens, eos_id)``."""
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise TypeError("generate needs a GPTModel-like model with a .cfg (context, vocab)")
    if not isinstance(idx, Tensor):
        raise TypeError(
            f"idx (the prompt ids) must be a torch.Tensor of shape (batch, T), got a "
            f"{type(idx).__name__}; for one prompt use torch.tensor([ids])"
        )
    if idx.dim() != 2:
        raise ValueError(
            f"expected prompt ids idx of shape (batch, T), got {tuple(idx.shape)}; for one "
            "prompt use torch.tensor([ids])"
        )
    if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
        raise TypeError(f"prompt ids idx must be an integer tensor, got {idx.dtype}")
    if idx.dtype not in (torch.int64, torch.int32):
        idx = idx.long()  # uint8, int16, uint16, ...: fine as ids, but not for embedding
    if idx.shape[1] == 0:
        raise ValueError(
            "the prompt is empty: give at least one token (e.g. the <|endoftext|> id to "
            "start a new document)"
        )
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= cfg.vocab_size:
        raise ValueError(
            f"prompt token id {lo if lo < 0 else hi} is outside the model's vocabulary "
            f"[0, {cfg.vocab_size}); was it encoded with a different tokenizer?"
        )
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", 0)
    if eos_id is not None:
        if isinstance(eos_id, bool) or not hasattr(eos_id, "__index__"):
            raise TypeError(f"eos_id must be a token id (an int) or None, got {eos_id!r}")
        eos_id = operator.index(eos_id)
        if not 0 <= eos_id < cfg.vocab_size:
            raise ValueError(f"eos_id {eos_id} is outside the vocabulary [0, {cfg.vocab_size})")
    if not isinstance(use_cache, bool):
        raise TypeError(f"use_cache must be True or False, got {use_cache!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {generator!r}")
    # Check the sampling settings once, before any work.
    check_number(temperature, "temperature", 0.0)
    if top_k is not None:
        _check_top_k(top_k)
    if top_p is not None:
        _check_top_p(top_p)

    return cfg, idx, max_new_tokens, eos_id


def generate(
    model: nn.Module,
    idx: Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Append up to ``max_new_tokens`` tokens to the prompt ``idx`` ``(b, T)``; return the ids.

    Each step takes the logits of the last position and picks the next token with
    ``sample_next`` (the default ``temperature=0`` is greedy). Details:

    - **Context.** The model only sees the last ``context_length`` tokens: a longer prompt
      is cropped for the model, but returned in full.
    - **KV cache** (``use_cache=True``): the prompt window runs through the model once,
      then each step feeds only the new token, whose keys and values are appended to the
      cache. Once the cache holds ``context_length`` positions the window has to slide,
      and with learned absolute positions every token then moves to a new position, so the
      cached keys and values are stale: from there on each step resets the cache and
      re-encodes the last ``context_length`` tokens, which is exactly what ``use_cache=False``
      does on every step. The tokens are the same either way; only the time differs.
    - **End of text.** With ``eos_id`` a row is finished once it produces that id; later
      positions of that row are filled with ``eos_id``, and generation stops when every row
      is finished (so a batch of one simply stops).

    The model runs in eval mode (no dropout); its previous mode is restored afterwards.
    Returns ``(b, T + n_new)`` ids, ``n_new <= max_new_tokens``.
    """
    cfg, idx, max_new_tokens, eos_id = _check_generate_arguments(
        model, idx, max_new_tokens, temperature, top_k, top_p, eos_id, use_cache, generator
    )
    C = cfg.context_length
    cache = KVCache(cfg.n_layers, C) if use_cache else None
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    was_training = model.training
    model.eval()
    try:
        for step in range(max_new_tokens):
            if cache is None:
                logits = model(idx[:, -C:])  # the whole window, every step
            elif step == 0 or cache.length == C:
                cache.reset()  # (re-)encode the window: first step, or the window slid
                logits = model(idx[:, -C:], kv_cache=cache)
            else:
                logits = model(idx[:, -1:], kv_cache=cache)  # only the newest token
            last = logits[:, -1]
            check_logits(
                last,
                "the model's logits",
                f" at generation step {step}; are the model's weights finite?",
            )
            next_id = sample_next(last, temperature, top_k, top_p, generator)  # (b,)
            if eos_id is not None:
                next_id = next_id.masked_fill(finished, eos_id)
                finished |= next_id == eos_id
            idx = torch.cat([idx, next_id[:, None].to(idx.dtype)], dim=1)  # (b, T + 1)
            if eos_id is not None and bool(finished.all()):
                break
    finally:
        model.train(was_training)
    return idx


def generate_text(
    model: nn.Module,
    encoding,
    prompt: str,
    max_new_tokens: int = 50,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_at_eos: bool = True,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> str:
    """Encode ``prompt``, ``generate`` a continuation and return it decoded (without the prompt).

    ``encoding`` is a ``tiktoken.Encoding`` such as ``shared.bpe.get_encoding()``; special
    tokens written in the prompt (``<|endoftext|>``) are encoded as such. With
    ``stop_at_eos`` generation stops at the encoding's ``<|endoftext|>`` token, which is
    not part of the returned text.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if isinstance(encoding, (str, bytes)) or not all(
        hasattr(encoding, a) for a in ("encode", "decode")
    ):
        raise TypeError(
            "encoding must be a tiktoken.Encoding (such as shared.bpe.get_encoding()), got "
            f"{type(encoding).__name__}"
        )
    if not isinstance(stop_at_eos, bool):
        raise TypeError(f"stop_at_eos must be True or False, got {stop_at_eos!r}")
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise TypeError("generate_text needs a GPTModel-like model with a .cfg")
    # The model remembers the tokenizer it was trained with (when its checkpoint recorded
    # one): another vocabulary of the same size would run without error and write garbage.
    if isinstance(encoding, (BPETokenizer, tiktoken.Encoding)):
        check_tokenizer(getattr(model, "tokenizer_identity", None), encoding, cfg.vocab_size)
    ids = encoding.encode(prompt, allowed_special="all")
    if not ids:
        raise ValueError(
            "the prompt is empty: give some text (or '<|endoftext|>' to start a new document)"
        )
    if stop_at_eos and getattr(encoding, "eot_token", None) is None:
        raise ValueError(
            "stop_at_eos=True needs an encoding with an end-of-text token (eot_token); "
            "pass stop_at_eos=False"
        )
    eos_id = encoding.eot_token if stop_at_eos else None
    device = next(model.parameters()).device
    out = generate(
        model,
        torch.tensor([ids], device=device),
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_id=eos_id,
        use_cache=use_cache,
        generator=generator,
    )
    new = out[0, len(ids) :].tolist()
    if eos_id is not None and eos_id in new:
        new = new[: new.index(eos_id)]
    return encoding.decode(new)
