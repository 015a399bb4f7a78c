"""A language model as a policy: log-probabilities of responses, sampling, KL to a reference.

Chapters 10 (PPO) and 11 (DPO) both treat the language model as a *policy* ``π_θ``: the
prompt ``x`` is the state, each response token is an action, and the probability of a
whole response is the product of its next-token probabilities,

    log π_θ(y | x) = Σ_t log π_θ(y_t | x, y_<t).

This module holds what both chapters need:

- ``pad_pairs``: (prompt, response) id lists, right-padded into a ``SequenceBatch`` with
  ``input_ids``, ``attention_mask`` (1 on real tokens) and ``response_mask`` (1 on the
  response tokens only), all ``(B, T)``.
- ``token_logprobs``: ``log π(next token)`` at every position, ``(B, T-1)``, by
  ``log_softmax`` + ``gather``; ``sequence_logprobs`` sums them over the response only
  (or averages them, for SimPO and other length-normalised losses).
- ``sample_responses``: responses drawn from the policy, prompts grouped by length.
- ``kl_k1`` / ``kl_k2`` / ``kl_k3``: per-token estimators of KL(π ‖ π_ref) from sampled
  tokens, and ``kl_to_reference``: the KL of whole responses with its standard error.

Shapes and alignment. Logits at position ``t`` predict the token at ``t + 1``, so the
per-token log-probs have one position fewer than the ids: column ``t`` of a ``(B, T-1)``
tensor is about the token ``input_ids[:, t + 1]``. The response tokens among those are
``response_mask[:, 1:]`` (``SequenceBatch.target_mask``).

Padding goes on the right. ``GPTModel`` has learned absolute positions, so left padding
would move every real token to a different position and change what the model computes;
with right padding and a causal mask, the real tokens never see the padding at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.checks import check_int, check_number, check_token_ids
from shared.decoding import generate

__all__ = [
    "pad_right",
    "SequenceBatch",
    "entropy_from_logits",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "kl_to_reference",
    "logprobs_from_logits",
    "pad_pairs",
    "sample_responses",
    "sequence_logprobs",
    "token_logprobs",
]


# ----------------------------------------------------------------------------- checks ----
def _context_length(model: nn.Module) -> int:
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise TypeError(f"model must be a GPTModel-like module with a .cfg, got {type(model)}")
    return cfg.context_length


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------------------- padding ----
@dataclass
class SequenceBatch:
    """Prompt + response sequences, right-padded: every tensor is ``(B, T)``.

    - ``input_ids`` (long): prompt, response, then padding.
    - ``attention_mask`` (long): 1 on prompt and response tokens, 0 on padding.
    - ``response_mask`` (long): 1 on response tokens only.
    - ``prompt_lengths``, ``response_lengths`` (long, ``(B,)``).

    ``target_mask`` is ``response_mask[:, 1:]``, aligned with ``token_logprobs``.
    """

    input_ids: Tensor
    attention_mask: Tensor
    response_mask: Tensor
    prompt_lengths: Tensor
    response_lengths: Tensor

    @property
    def target_mask(self) -> Tensor:
        """``(B, T-1)``: which next-token predictions are response tokens."""
        return self.response_mask[:, 1:]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> SequenceBatch:
        return SequenceBatch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))

    def select(self, rows: Tensor | Sequence[int]) -> SequenceBatch:
        """The batch restricted to ``rows`` (same width ``T``)."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.input_ids.device)
        return SequenceBatch(*(getattr(self, f)[rows] for f in self.__dataclass_fields__))


def pad_pairs(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    pad_id: int,
    context_length: int | None = None,
) -> SequenceBatch:
    """Right-pad ``(prompt_ids, response_ids)`` pairs into a ``SequenceBatch``.

    Every prompt needs at least one token (the first response token must be predicted from
    something) and every response at least one token. With ``context_length`` (the
    model's), a pair longer than the context is an error that names it: cutting it would
    score a different response. ``pad_id`` can be any id in the vocabulary; padded
    positions are masked out everywhere (the end-of-text id is the usual choice).
    """
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence) or len(pairs) == 0:
        raise ValueError("pairs must be a non-empty list of (prompt_ids, response_ids)")
    pad_id = check_int(pad_id, "pad_id", 0)
    rows = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"pairs[{i}] must be a (prompt_ids, response_ids) pair")
        prompt = check_token_ids(pair[0], f"pairs[{i}] prompt")
        response = check_token_ids(pair[1], f"pairs[{i}] response")
        if not prompt:
            raise ValueError(f"pairs[{i}] has an empty prompt: give at least one token")
        if not response:
            raise ValueError(f"pairs[{i}] has an empty response: give at least one token")
        n = len(prompt) + len(response)
        if context_length is not None and n > context_length:
            raise ValueError(
                f"pairs[{i}]: prompt ({len(prompt)}) + response ({len(response)}) = {n} "
                f"tokens, more than the context_length of {context_length}"
            )
        rows.append((prompt, response))
    width = max(len(p) + len(r) for p, r in rows)
    B = len(rows)
    input_ids = torch.full((B, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, width), dtype=torch.long)
    response_mask = torch.zeros((B, width), dtype=torch.long)
    for i, (p, r) in enumerate(rows):
        input_ids[i, : len(p) + len(r)] = torch.tensor(p + r, dtype=torch.long)
        attention_mask[i, : len(p) + len(r)] = 1
        response_mask[i, len(p) : len(p) + len(r)] = 1
    return SequenceBatch(
        input_ids,
        attention_mask,
        response_mask,
        torch.tensor([len(p) for p, _ in rows]),
        torch.tensor([len(r) for _, r in rows]),
    )


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad id lists into ``(idx, attention_mask)``, both ``(B, T_max)``."""
    pad_id = check_int(pad_id, "pad_id", 0)
    if isinstance(seqs, (str, bytes)) or not isinstance(seqs, Sequence) or not seqs:
        raise ValueError("seqs must be a non-empty list of token-id lists")
    seqs = [check_token_ids(s, f"seqs[{i}]") for i, s in enumerate(seqs)]
    width = max(len(s) for s in seqs)
    idx = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        idx[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return idx, mask


# -------------------------------------------------------------------------- log-probs ----
def logprobs_from_logits(logits: Tensor, targets: Tensor) -> Tensor:
    """``log softmax(logits)[target]`` for each position: ``(..., V), (...) -> (...)``.

    ``log_softmax`` subtracts ``logsumexp`` over the vocabulary (stable even for large
    logits); ``gather`` then picks the entry of the token that was actually there.
    """
    if targets.shape != logits.shape[:-1]:  # gather would silently read other positions
        raise ValueError(
            f"targets has shape {tuple(targets.shape)}, expected {tuple(logits.shape[:-1])}: "
            "one target per position of logits"
        )
    logp = F.log_softmax(logits.float(), dim=-1)  # (..., V)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (...)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy ``H = -Σ_v p_v log p_v`` of each next-token distribution: ``(..., V) -> (...)``."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def token_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    temperature: float = 1.0,
    return_entropy: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """``log π(input_ids[:, t+1] | input_ids[:, :t+1])`` for every ``t``: ``(B, T-1)``.

    One forward pass gives logits ``(B, T, V)``; the last position predicts a token that
    is not there, so it is dropped, and the ids from position 1 on are the targets. The
    logits are divided by ``temperature`` first, so that the log-probs are those of the
    distribution the tokens were sampled from (PPO samples at a temperature and must
    measure its ratio on that same distribution). With ``return_entropy``, also the
    entropy of each of those distributions, ``(B, T-1)``. Gradients flow unless the caller
    uses ``torch.no_grad()``.
    """
    temperature = check_number(temperature, "temperature", 0, exclusive=True)
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
        raise ValueError("input_ids must be a (batch, T) tensor of token ids")
    if input_ids.shape[1] < 2:
        raise ValueError(f"input_ids needs at least 2 positions, got {input_ids.shape[1]}")
    C = _context_length(model)
    if input_ids.shape[1] > C:
        raise ValueError(
            f"input_ids has {input_ids.shape[1]} positions, more than the model's "
            f"context_length of {C}"
        )
    logits = model(input_ids)[:, :-1]  # (B, T-1, V): position t predicts token t+1
    if temperature != 1.0:
        logits = logits / temperature
    logp = logprobs_from_logits(logits, input_ids[:, 1:])  # (B, T-1)
    if return_entropy:
        return logp, entropy_from_logits(logits)
    return logp


def sequence_logprobs(
    model: nn.Module, batch: SequenceBatch, average: bool = False, temperature: float = 1.0
) -> Tensor:
    """``log π(y | x)`` for every row: the sum over response tokens only, ``(B,)``.

    Prompt and padding positions are masked out, so the result does not depend on how
    the batch was padded. With ``average=True`` the sum is divided by the response length,
    ``(1/|y|) log π(y | x)``: the length-normalised score of SimPO and ORPO, which does not
    favour short responses the way a sum of negative numbers does; a row without response
    tokens has no average (0 / 0) and is an error.
    """
    if not isinstance(batch, SequenceBatch):
        raise TypeError(f"batch must be a SequenceBatch (pad_pairs), got {type(batch).__name__}")
    first = batch.response_mask[:, :1].nonzero()[:, 0].tolist()
    if first:  # nothing comes before it to predict it from: it would be left out unscored
        raise ValueError(f"rows {first[:5]} have no prompt token before the response")
    if average:
        empty = (batch.target_mask.sum(dim=1) == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"rows {empty[:5]} have no response token to average over")
    device = _device(model)
    logp = token_logprobs(model, batch.input_ids.to(device), temperature)  # (B, T-1)
    mask = batch.target_mask.to(device).to(logp.dtype)  # (B, T-1)
    total = (logp * mask).sum(dim=1)  # (B,)
    if average:  # over the tokens summed (response_lengths, for a batch from pad_pairs)
        return total / mask.sum(dim=1)
    return total


# --------------------------------------------------------------------------- sampling ----
@torch.no_grad()
def sample_responses(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
) -> list[list[int]]:
    """Sample one response per prompt; return the response ids (without the prompt).

    A response ends with ``eos_id`` (kept, it is the action "stop") or is cut off after
    ``max_new_tokens`` tokens. Prompts of equal length run as one batch, so no padding is
    needed (left padding would shift the learned positions); groups run in order of
    length, and with a seeded ``generator`` the result is reproducible. There is no top-k
    or top-p here on purpose: PPO and the KL estimates need the log-probs of the
    distribution the tokens were drawn from, which is the model's at ``temperature``.
    Every prompt plus
    ``max_new_tokens`` must fit in the model's context: a sliding window would change the
    conditioning that later log-probs are computed on.
    """
    temperature = check_number(temperature, "temperature", 0, exclusive=True)
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", 1)
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or not prompts:
        raise ValueError("prompts must be a non-empty list of token-id lists")
    C = _context_length(model)
    lists = [check_token_ids(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
    for i, p in enumerate(lists):
        if not p:
            raise ValueError(f"prompts[{i}] is empty: give at least one token")
        if len(p) + max_new_tokens > C:
            raise ValueError(
                f"prompts[{i}] has {len(p)} tokens; with max_new_tokens={max_new_tokens} that "
                f"is {len(p) + max_new_tokens}, more than the context_length of {C}"
            )
    device = _device(model)
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(lists):
        groups.setdefault(len(p), []).append(i)
    out: list[list[int]] = [[] for _ in lists]
    for length, members in sorted(groups.items()):
        idx = torch.tensor([lists[i] for i in members], device=device)  # (b, length)
        ids = generate(
            model,
            idx,
            max_new_tokens,
            temperature=temperature,
            eos_id=eos_id,
            generator=generator,
        )  # (b, length + n_new)
        for i, row in zip(members, ids[:, length:].tolist()):
            if eos_id is not None and eos_id in row:
                row = row[: row.index(eos_id) + 1]  # keep the end-of-text, drop the fill
            out[i] = row
    return out


# ------------------------------------------------------------------------------- KL ----
def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """``k1 = log π(y_t) − log π_ref(y_t)``, per sampled token.

    Unbiased for KL(π ‖ π_ref) when the tokens come from π, but a single token can be
    negative and the estimate is noisy. This is the ``log π/π_ref`` of the lecture's
    per-token reward ``R_t = −β log(π/π_ref)``.
    """
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp {tuple(logp.shape)} and ref_logp {tuple(ref_logp.shape)} differ")
    return logp - ref_logp


def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """``k2 = ½ (log r)²`` with ``r = π_ref/π``: always ≥ 0, biased, low variance."""
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp {tuple(logp.shape)} and ref_logp {tuple(ref_logp.shape)} differ")
    return 0.5 * (ref_logp - logp) ** 2


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """``k3 = (r − 1) − log r`` with ``r = π_ref/π``: unbiased *and* always ≥ 0.

    ``E_π[r] = 1``, so adding ``r − 1`` to ``−log r`` (which is k1) keeps the mean and,
    since ``log r ≤ r − 1``, makes every term non-negative (Schulman, "Approximating KL
    divergence", 2020).
    """
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp {tuple(logp.shape)} and ref_logp {tuple(ref_logp.shape)} differ")
    log_r = ref_logp - logp
    return torch.expm1(log_r) - log_r


@torch.no_grad()
def kl_to_reference(
    policy: nn.Module,
    reference: nn.Module,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
    batch_size: int = 64,
    pad_id: int | None = None,
) -> dict[str, float]:
    """KL(π ‖ π_ref) of whole responses, estimated from responses sampled from ``policy``.

    For each prompt, one response ``y ~ π(·|x)``; the KL of the response distributions is
    ``E_y[log π(y|x) − log π_ref(y|x)] = E_y[Σ_t k1_t]``. Returns the mean over prompts of
    the summed per-token ``k1`` (``kl``) and of the summed ``k3`` (``kl_k3``), each with
    its standard error (``std / √n``), and ``n``. Both models see the tokens at the
    sampling ``temperature``.
    """
    batch_size = check_int(batch_size, "batch_size", 1)
    responses = sample_responses(
        policy, prompts, max_new_tokens, temperature, generator=generator, eos_id=eos_id
    )
    if pad_id is None:
        pad_id = eos_id if eos_id is not None else 0
    was = policy.training, reference.training
    policy.eval()
    reference.eval()
    k1, k3 = [], []
    try:
        for s in range(0, len(prompts), batch_size):
            pairs = list(zip(prompts[s : s + batch_size], responses[s : s + batch_size]))
            batch = pad_pairs(pairs, pad_id, _context_length(policy)).to(_device(policy))
            logp = token_logprobs(policy, batch.input_ids, temperature)  # (b, T-1)
            ref = token_logprobs(reference, batch.input_ids.to(_device(reference)), temperature)
            mask = batch.target_mask.float()
            k1.append((kl_k1(logp, ref.to(logp.device)) * mask).sum(1).cpu())
            k3.append((kl_k3(logp, ref.to(logp.device)) * mask).sum(1).cpu())
    finally:
        policy.train(was[0])
        reference.train(was[1])
    k1_all, k3_all = torch.cat(k1), torch.cat(k3)
    n = k1_all.numel()

    def stderr(x: Tensor) -> float:
        return x.std().item() / math.sqrt(n) if n > 1 else float("nan")

    return {
        "kl": k1_all.mean().item(),
        "kl_stderr": stderr(k1_all),
        "kl_k3": k3_all.mean().item(),
        "kl_k3_stderr": stderr(k3_all),
        "n": n,
    }
