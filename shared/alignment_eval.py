"""One evaluation for every aligned policy (SFT, PPO, DPO, ...): the figures chapters 10–12 compare.

``evaluate_policy(policy, entries, encoding, ...)`` answers held-out instruction entries
(greedy by default) and measures the answers in every way the project can:

- ``exact``: exact match with the entry's ``output`` (``shared.sft.exact_match``). The
  outputs are written in a mix of styles, so no policy gets near 1 here; it is the SFT
  training target, not the goal of alignment.
- ``correct``, ``preferred``, ``rating``: the gold rule (``shared.gold.assess``): right
  answer, preferred style (one complete sentence), and the 1–5 rating, averaged.
- ``rm_score`` (with ``rm_score_std``): the reward model's score of
  ``prompt + format_response(response) + <|endoftext|>``, read at the last token
  (``ScalarModel.score``), as the reward model was trained.
- ``win_rate`` against ``baseline_responses`` (e.g. the SFT policy's answers to the same
  entries) under the gold rule (``shared.gold.compare``): wins plus half the ties, over n.
- ``kl``: KL(π ‖ π_ref) of whole responses to the reference (``shared.policy.kl_to_reference``),
  estimated on responses *sampled* at temperature 1 (the KL is an expectation under π, so
  the greedy answers cannot estimate it): the mean over prompts of the summed per-token
  ``k1 = log π − log π_ref`` (unbiased), with its standard error, and the ``k3`` estimate
  (unbiased and non-negative per token) next to it.
- ``length``: mean response length in tokens (generated tokens, end-of-text excluded);
  ``eos``: share of responses that ended with end-of-text; ``distinct``: share of distinct
  responses (a collapsed policy gives the same answer to every prompt).

The responses are returned too (``responses``), with the per-entry ratings and scores.

Best-of-n (rejection sampling) is the other way to use a reward model: sample ``n``
responses and keep the one it scores highest. Its KL to the policy it samples from has a
closed form (Stiennon et al., 2020; Gao et al., 2022),

    KL(best-of-n ‖ π) = log n − (n − 1) / n,

so best-of-n gives a second curve of proxy and gold score against KL, without training.
``best_of_n`` does it for one ``n``; ``sample_candidates`` + ``score_candidates`` +
``expected_best_of_n`` give every ``n ≤ N`` from one set of ``N`` samples per prompt, with
the unbiased estimator of the expected best-of-n over all size-``n`` subsets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from shared import gold
from shared.decoding import generate
from shared.policy import kl_to_reference, pad_right
from shared.prompts import format_prompt, format_response
from shared.sft import exact_match

__all__ = [
    "best_of_n",
    "best_of_n_kl",
    "encode_prompts",
    "evaluate_policy",
    "expected_best_of_n",
    "generate_ids",
    "reward_scores",
    "sample_candidates",
    "score_candidates",
]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _check_entries(entries: Sequence[dict]) -> list[dict]:
    if isinstance(entries, (str, bytes, dict)) or not isinstance(entries, Sequence):
        raise TypeError("entries must be a list of instruction entries (dicts)")
    if not entries:
        raise ValueError("entries is empty: give at least one instruction entry")
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise TypeError(f"entries[{i}] must be a dict, got {type(e).__name__}")
        missing = [k for k in ("instruction", "input", "kind", "answer") if k not in e]
        if missing:
            raise ValueError(f"entries[{i}] has no {missing} field(s)")
    return list(entries)


def encode_prompts(entries: Sequence[dict], encoding) -> list[list[int]]:
    """The Alpaca prompt of every entry as token ids (ending in ``### Response:\\n``)."""
    return [encoding.encode(format_prompt(e), allowed_special="all") for e in entries]


# ------------------------------------------------------------------------ generation ----
@torch.no_grad()
def generate_ids(
    policy: nn.Module,
    prompts: Sequence[Sequence[int]],
    eos_id: int,
    max_new_tokens: int = 40,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
) -> tuple[list[list[int]], list[bool]]:
    """The response ids to every prompt (end-of-text cut off) and whether it ended there.

    Greedy with ``temperature=0``, sampled otherwise (reproducibly with a seeded
    ``generator``). Prompts of one length run together, so no padding is needed.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    device = _device(policy)
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(len(p), []).append(i)
    out: list[list[int]] = [[] for _ in prompts]
    ended = [False] * len(prompts)
    for length, members in sorted(groups.items()):
        for k in range(0, len(members), batch_size):
            chunk = members[k : k + batch_size]
            idx = torch.tensor([list(prompts[i]) for i in chunk], device=device)
            ids = generate(
                policy, idx, max_new_tokens, temperature=temperature, eos_id=eos_id,
                generator=generator,
            )  # fmt: skip
            for i, row in zip(chunk, ids[:, length:].tolist()):
                if eos_id in row:
                    out[i], ended[i] = row[: row.index(eos_id)], True
                else:
                    out[i] = row
    return out, ended


# --------------------------------------------------------------------- reward model ----
@torch.no_grad()
def reward_scores(
    reward_model: nn.Module,
    entries: Sequence[dict],
    responses: Sequence[str],
    encoding,
    batch_size: int = 64,
) -> Tensor:
    """The reward model's score of each (entry, response): ``(N,)`` float32.

    The text scored is ``prompt + format_response(response) + <|endoftext|>``, as in
    ``shared.reward_model.encode_pairs``. A response too long for the context is cut on
    the right (its end-of-text kept), which only happens to responses far longer than any
    the policies write.
    """
    if len(entries) != len(responses):
        raise ValueError(f"{len(entries)} entries but {len(responses)} responses")
    C = reward_model.cfg.context_length
    eot = encoding.eot_token
    seqs = []
    for e, r in zip(entries, responses):
        prompt = encoding.encode(format_prompt(e), allowed_special="all")
        body = encoding.encode(format_response(r), allowed_special="all")
        seqs.append((prompt + body)[: C - 1] + [eot])
    was = reward_model.training
    reward_model.eval()
    device = _device(reward_model)
    out = []
    try:
        for k in range(0, len(seqs), batch_size):
            idx, mask = pad_right(seqs[k : k + batch_size], eot)
            out.append(reward_model.score(idx.to(device), mask.to(device)).float().cpu())
    finally:
        reward_model.train(was)
    return torch.cat(out)


# ------------------------------------------------------------------------ evaluation ----
def evaluate_policy(
    policy: nn.Module,
    entries: Sequence[dict],
    encoding,
    *,
    reference: nn.Module | None = None,
    reward_model: nn.Module | None = None,
    baseline_responses: Sequence[str] | None = None,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    max_new_tokens: int = 40,
    kl_seed: int = 0,
    batch_size: int = 64,
) -> dict:
    """Answer ``entries`` with ``policy`` and measure the answers (see the module docstring).

    Returns a dict of plain numbers and lists: ``n``, ``exact``, ``correct``,
    ``preferred``, ``rating``, ``length``, ``eos``, ``distinct``, ``responses``,
    ``ratings``; with ``reward_model`` also ``rm_score``, ``rm_score_std``, ``rm_scores``;
    with ``baseline_responses`` also ``win_rate``, ``wins``, ``ties``, ``losses``; with
    ``reference`` also ``kl``, ``kl_stderr``, ``kl_k3``, ``kl_k3_stderr`` and
    ``kl_estimator``. The KL samples use their own generator seeded with ``kl_seed``, so
    they do not depend on whether the answers were greedy or sampled.
    """
    entries = _check_entries(entries)
    if baseline_responses is not None and len(baseline_responses) != len(entries):
        raise ValueError(f"{len(baseline_responses)} baseline responses for {len(entries)} entries")
    eos = encoding.eot_token
    prompts = encode_prompts(entries, encoding)
    C = policy.cfg.context_length
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > C:
        raise ValueError(
            f"the longest prompt has {longest} tokens; with max_new_tokens={max_new_tokens} "
            f"that is more than the context_length of {C}"
        )
    ids, ended = generate_ids(
        policy, prompts, eos, max_new_tokens, temperature, generator, batch_size
    )
    responses = [encoding.decode(r).strip() for r in ids]
    n = len(entries)
    verdicts = [gold.assess(e, r) for e, r in zip(entries, responses)]
    result: dict = {
        "n": n,
        "exact": sum(exact_match(r, e["output"]) for e, r in zip(entries, responses)) / n
        if all("output" in e for e in entries)
        else float("nan"),
        "correct": sum(v.correct for v in verdicts) / n,
        "preferred": sum(v.preferred for v in verdicts) / n,
        "rating": sum(v.rating for v in verdicts) / n,
        "length": sum(len(r) for r in ids) / n,
        "eos": sum(ended) / n,
        "distinct": len(set(responses)) / n,
    }
    if reward_model is not None:
        scores = reward_scores(reward_model, entries, responses, encoding, batch_size)
        result["rm_score"] = scores.mean().item()
        result["rm_score_std"] = scores.std().item() if n > 1 else 0.0
        result["rm_scores"] = [round(s, 6) for s in scores.tolist()]
    if baseline_responses is not None:
        verdict = [gold.compare(e, r, b) for e, r, b in zip(entries, responses, baseline_responses)]
        wins, ties = verdict.count("A"), verdict.count("tie")
        result.update(
            win_rate=(wins + 0.5 * ties) / n, wins=wins, ties=ties, losses=verdict.count("B")
        )
    if reference is not None:
        kl = kl_to_reference(
            policy, reference, prompts, max_new_tokens, temperature=1.0,
            generator=torch.Generator().manual_seed(kl_seed), eos_id=eos,
            batch_size=batch_size,
        )  # fmt: skip
        result.update(
            kl=kl["kl"],
            kl_stderr=kl["kl_stderr"],
            kl_k3=kl["kl_k3"],
            kl_k3_stderr=kl["kl_k3_stderr"],
            kl_estimator="k1 (sum over response tokens of log pi - log pi_ref) on one "
            "response per prompt sampled from the policy at temperature 1",
        )
    result["responses"] = responses
    result["ratings"] = [v.rating for v in verdicts]
    return result


# ------------------------------------------------------------------------ best-of-n ----
def best_of_n_kl(n: int) -> float:
    """The analytic KL(best-of-n ‖ π) = log n − (n − 1)/n (0 for n = 1)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    return math.log(n) - (n - 1) / n


def sample_candidates(
    policy: nn.Module,
    entries: Sequence[dict],
    encoding,
    n: int,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    max_new_tokens: int = 40,
    batch_size: int = 64,
) -> list[list[str]]:
    """``n`` sampled responses per entry (decoded, stripped): a list of ``n``-lists."""
    entries = _check_entries(entries)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if not temperature > 0:
        raise ValueError(f"best-of-n samples: temperature must be > 0, got {temperature}")
    prompts = encode_prompts(entries, encoding)
    ids, _ = generate_ids(
        policy, [p for p in prompts for _ in range(n)], encoding.eot_token, max_new_tokens,
        temperature, generator, batch_size,
    )  # fmt: skip
    texts = [encoding.decode(r).strip() for r in ids]
    return [texts[i * n : (i + 1) * n] for i in range(len(entries))]


def score_candidates(
    candidates: Sequence[Sequence[str]],
    entries: Sequence[dict],
    encoding,
    reward_model: nn.Module | None = None,
    batch_size: int = 64,
) -> dict[str, Tensor]:
    """Gold ratings (and reward-model scores) of every candidate: ``(P, n)`` tensors."""
    entries = _check_entries(entries)
    if len(candidates) != len(entries):
        raise ValueError(f"{len(candidates)} candidate lists for {len(entries)} entries")
    n = len(candidates[0])
    if any(len(c) != n for c in candidates):
        raise ValueError("every entry needs the same number of candidates")
    out = {
        "gold": torch.tensor(
            [[float(gold.assess(e, r).rating) for r in c] for e, c in zip(entries, candidates)]
        )
    }
    if reward_model is not None:
        flat_e = [e for e in entries for _ in range(n)]
        flat_r = [r for c in candidates for r in c]
        out["rm"] = reward_scores(reward_model, flat_e, flat_r, encoding, batch_size).view(-1, n)
    return out


def expected_best_of_n(select: Tensor, values: Tensor, n: int) -> Tensor:
    """The expected ``values`` of the best-of-``n`` choice by ``select``, per prompt: ``(P,)``.

    ``select`` and ``values`` are ``(P, N)``: N samples per prompt, scored by the selector
    (e.g. the reward model) and by what we measure (e.g. the gold rating). Choosing the
    best of a uniformly random ``n``-subset of the ``N`` samples, the sample of rank ``i``
    (1 = lowest ``select``) is the chosen one with probability ``C(i−1, n−1) / C(N, n)``;
    the expectation over all subsets is that weighted sum, an unbiased estimate of
    best-of-n with lower variance than one draw of ``n`` samples. Ties in ``select`` are
    broken by position.
    """
    if select.shape != values.shape or select.dim() != 2:
        raise ValueError(
            f"select {tuple(select.shape)} and values {tuple(values.shape)} must be one "
            "(prompts, samples) shape"
        )
    N = select.shape[1]
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= N:
        raise ValueError(f"n must be an int in [1, {N}], got {n!r}")
    order = torch.sort(select.double(), dim=1, stable=True).indices  # ascending
    ranked = values.double().gather(1, order)  # (P, N), values by rank of select
    weights = torch.tensor(
        [math.comb(i - 1, n - 1) for i in range(1, N + 1)], dtype=torch.float64
    ) / math.comb(N, n)  # (N,) sums to 1
    return (ranked * weights).sum(1)


def best_of_n(
    policy: nn.Module,
    reward_model: nn.Module | None,
    entries: Sequence[dict],
    encoding,
    n: int,
    generator: torch.Generator | None = None,
    score: str = "rm",
    temperature: float = 1.0,
    max_new_tokens: int = 40,
) -> dict:
    """For every entry, sample ``n`` responses and keep the best by ``score``.

    ``score="rm"`` picks by the reward model (the proxy: what a real system can do);
    ``score="gold"`` picks by the gold rating (an oracle: the ceiling of best-of-n).
    Returns the chosen ``responses``, their gold ``ratings`` and (with a reward model)
    ``rm_scores``, the means ``rating`` and ``rm_score``, ``correct`` and ``preferred``
    shares, and the analytic ``kl`` = log n − (n − 1)/n.
    """
    if score not in ("rm", "gold"):
        raise ValueError(f'score must be "rm" or "gold", got {score!r}')
    if score == "rm" and reward_model is None:
        raise ValueError('score="rm" needs a reward_model')
    entries = _check_entries(entries)
    candidates = sample_candidates(
        policy, entries, encoding, n, generator, temperature, max_new_tokens
    )
    scored = score_candidates(candidates, entries, encoding, reward_model)
    pick = scored[score].argmax(dim=1)  # first of the best on ties
    rows = torch.arange(len(entries))
    chosen = [c[int(k)] for c, k in zip(candidates, pick)]
    verdicts = [gold.assess(e, r) for e, r in zip(entries, chosen)]
    out = {
        "n": n,
        "score": score,
        "kl": best_of_n_kl(n),
        "responses": chosen,
        "ratings": scored["gold"][rows, pick].tolist(),
        "rating": scored["gold"][rows, pick].mean().item(),
        "correct": sum(v.correct for v in verdicts) / len(entries),
        "preferred": sum(v.preferred for v in verdicts) / len(entries),
    }
    if "rm" in scored:
        out["rm_scores"] = scored["rm"][rows, pick].tolist()
        out["rm_score"] = scored["rm"][rows, pick].mean().item()
    return out
