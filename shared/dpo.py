"""Direct Preference Optimization and its variants: the algorithm core of chapter 11.

**From the RLHF objective to a classification loss.** RLHF maximises reward while staying
close to the reference (the SFT model):

    max_π  E_{x, y~π}[ r(x, y) ]  −  β · KL( π(y|x) ‖ π_ref(y|x) ).

Its optimum has a closed form, ``π*(y|x) = π_ref(y|x) · exp(r(x, y)/β) / Z(x)``, and solving
that for the reward gives

    r(x, y) = β log π*(y|x)/π_ref(y|x) + β log Z(x).

``Z(x)`` is a sum over every possible response (hopeless to compute), but in the
Bradley–Terry probability that ``y⁺`` beats ``y⁻``, ``σ(r(x, y⁺) − r(x, y⁻))``, it cancels.
Maximum likelihood on preference pairs then trains the policy directly, with no reward
model and no sampling:

    L_DPO = −log σ( β [ (log π_θ(y⁺|x) − log π_ref(y⁺|x)) − (log π_θ(y⁻|x) − log π_ref(y⁻|x)) ] ).

``β log π_θ(y|x)/π_ref(y|x)`` is the *implicit reward* of a response; the metrics below
(TRL's names) track it: ``rewards/chosen``, ``rewards/rejected``, their difference
``rewards/margins`` and ``rewards/accuracies``, the share of pairs whose chosen response
has the larger implicit reward. ``log π(y|x)`` is the **sum** of the response's token
log-probs (``shared.policy.sequence_logprobs``); the prompt is not scored.

Write ``h = (log π_θ(y⁺) − log π_ref(y⁺)) − (log π_θ(y⁻) − log π_ref(y⁻))``. The variants
(the lecture's table) change what is compared and how:

==========  ============================================================  ================
loss_type   loss per pair                                                 reference model
==========  ============================================================  ================
``dpo``     ``−log σ(β h)``                                               yes
``ipo``     ``(h − 1/(2β))²``  (β plays the lecture's τ)                  yes
``rdpo``    ``−log σ(β h + α(|y⁺| − |y⁻|))``                              yes
``simpo``   ``−log σ(β(ℓ̄⁺ − ℓ̄⁻) − γ)``, ``ℓ̄ = log π_θ(y|x)/|y|``         no
``orpo``    ``−ℓ̄⁺ − β log σ(log odds(y⁺) − log odds(y⁻))``                no
==========  ============================================================  ================

where ``|y|`` is the number of response tokens and ``odds(y) = p/(1 − p)`` with
``p = exp(ℓ̄)``. IPO (Azar et al., 2023, "A General Theoretical Paradigm to Understand
Learning from Human Preferences") regresses ``h`` to a fixed target instead of pushing it
to infinity; R-DPO (Park et al., 2024, "Disentangling Length from Quality in Direct
Preference Optimization") penalises winning by length: from the length-penalised objective
``max E[r − α|y|] − β KL`` the reward is ``β log π/π_ref + α|y| + const``, so a longer chosen
response already has the larger margin and gets a *smaller* gradient weight than in DPO
(the lecture's table writes ``− α(|y⁺| − |y⁻|)``, which would reward length instead); SimPO (Meng, Xia and Chen, 2024,
"SimPO: Simple Preference Optimization with a Reference-Free Reward") uses the length-
averaged log-prob as the reward and asks for a margin ``γ``; ORPO (Hong, Lee and Thorne,
2024, "ORPO: Monolithic Preference Optimization without Reference Model") adds an odds-
ratio term, weighted by ``λ`` (here ``beta``, as TRL does), to the SFT loss on the chosen
response. For the two reference-free losses the implicit reward in the metrics is
``β · ℓ̄`` (TRL's convention); ``logps/chosen`` and ``logps/rejected`` are always the
summed log-probs of the policy.

Pairs are ``(prompt_ids, chosen_ids, rejected_ids)`` (``encode_preference_pairs`` makes them
from the preference data); the reference log-probs are computed once before training
(``reference_logprobs``), since the reference never changes.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from shared.checks import check_fields, check_int, check_number, check_token_ids
from shared.policy import SequenceBatch, logprobs_from_logits, pad_pairs, sequence_logprobs
from shared.preference_data import check_text_pair
from shared.prompts import PHI3_SPECIALS, check_template, format_response
from shared.train_state import data_digest, load_state, save_state
from shared.training import lr_at, make_optimizer

__all__ = [
    "DPOConfig",
    "LOSS_TYPES",
    "REFERENCE_FREE",
    "dpo_loss",
    "encode_preference_pairs",
    "pair_logprobs",
    "reference_logprobs",
    "train_dpo",
]

LOSS_TYPES = ("dpo", "ipo", "rdpo", "simpo", "orpo")
REFERENCE_FREE = ("simpo", "orpo")  # these need no reference model

Pair = tuple[list[int], list[int], list[int]]


# ----------------------------------------------------------------------------- checks ----
def _check_loss_type(loss_type: str) -> str:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    return loss_type


def _check_pairs(pairs: Sequence, context_length: int | None = None) -> list[Pair]:
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence) or len(pairs) == 0:
        raise ValueError("pairs must be a non-empty list of (prompt, chosen, rejected) id lists")
    out = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 3:
            raise ValueError(f"pairs[{i}] must be a (prompt_ids, chosen_ids, rejected_ids) triple")
        prompt, chosen, rejected = (
            check_token_ids(ids, f"pairs[{i}] {side}")
            for ids, side in zip(pair, ("prompt", "chosen", "rejected"))
        )
        for side, ids in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
            if not ids:
                raise ValueError(f"pairs[{i}] has an empty {side}")
            if context_length is not None and side != "prompt":
                if len(prompt) + len(ids) > context_length:
                    raise ValueError(
                        f"pairs[{i}]: prompt + {side} is {len(prompt) + len(ids)} tokens, more "
                        f"than the context_length of {context_length}"
                    )
        if chosen == rejected:
            raise ValueError(f"pairs[{i}] has the same chosen and rejected ids: nothing to prefer")
        out.append((prompt, chosen, rejected))
    return out


# -------------------------------------------------------------------------- encoding ----
def encode_preference_pairs(
    pairs: Sequence[dict], encoding, context_length: int, template: str = "alpaca"
) -> list[Pair]:
    """``(prompt_ids, chosen_ids, rejected_ids)`` for preference pairs with text fields.

    Each pair has ``prompt`` (the formatted prompt text), ``chosen`` and ``rejected``. A
    response is encoded exactly as supervised fine-tuning saw it:
    ``shared.prompts.format_response(text)`` (the response after one space, the project tokenizer's words
    all start with one) followed by end-of-text, so the policy is also judged on stopping,
    and ``prompt_ids + chosen_ids`` are the ids SFT trained on for that answer. A pair with
    a missing field or an empty prompt, with the same chosen and rejected text (nothing to
    prefer),
    or that does not fit in ``context_length`` tokens is an error that names it.

    ``template="phi3"`` closes each response with ``<|end|>``: the encoding must know the
    Phi-3 markers as special tokens (``shared.prompts.extend_encoding``), or each would be
    split into ordinary tokens, an error here as in ``shared.sft.InstructionDataset``; so
    is a prompt that holds a Phi-3 marker the encoding does not know.
    """
    check_template(template)
    context_length = check_int(context_length, "context_length", 1)
    if isinstance(pairs, (str, bytes, dict)) or not isinstance(pairs, Sequence):
        raise TypeError(f"pairs must be a list of dicts, got {type(pairs).__name__}")
    specials = getattr(encoding, "special_tokens_set", set())
    if template == "phi3" and not set(PHI3_SPECIALS) <= specials:
        raise ValueError("the phi3 template needs an encoding from extend_encoding()")
    out = []
    for i, p in enumerate(pairs):
        check_text_pair(p, i, specials)
        prompt = encoding.encode(p["prompt"], allowed_special="all")
        chosen, rejected = (
            # an empty response (a model that stopped at once) is the end-of-text alone
            (
                encoding.encode(format_response(p[side], template), allowed_special="all")
                if p[side].strip()
                else []
            )
            + [encoding.eot_token]
            for side in ("chosen", "rejected")
        )
        out.append((prompt, chosen, rejected))
    return _check_pairs(out, context_length)


# ------------------------------------------------------------------------- log-probs ----
def _pair_batch(pairs: Sequence[Pair], pad_id: int, context_length: int) -> SequenceBatch:
    """The chosen rows, then the rejected rows: one right-padded batch of ``2B`` rows."""
    rows = [(p, c) for p, c, _ in pairs] + [(p, r) for p, _, r in pairs]
    return pad_pairs(rows, pad_id, context_length)


def pair_logprobs(
    model: nn.Module, pairs: Sequence[Pair], pad_id: int = 0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Summed response log-probs of the chosen and rejected sides, with their lengths.

    One forward pass over ``2B`` rows (chosen and rejected together, as TRL's
    "concatenated forward" does). Returns ``(chosen_logps, rejected_logps,
    chosen_lengths, rejected_lengths)``, each ``(B,)``; the log-probs carry gradients.
    """
    pairs = _check_pairs(pairs, model.cfg.context_length)
    batch = _pair_batch(pairs, pad_id, model.cfg.context_length)
    logps = sequence_logprobs(model, batch)  # (2B,)
    lengths = batch.response_lengths.to(logps.device)
    B = len(pairs)
    return logps[:B], logps[B:], lengths[:B], lengths[B:]


@torch.no_grad()
def _shared_prompt_logprobs(model: nn.Module, pairs: Sequence[Pair], pad_id: int) -> Tensor:
    """Summed response log-probs of ``[chosen rows; rejected rows]`` for pairs whose prompts
    all have the same length: the prompt runs once into a KV cache, both responses continue
    it (the prompt is most of every sequence here, so this nearly halves the work)."""
    device = next(model.parameters()).device
    prompts = torch.tensor([p for p, _, _ in pairs], device=device)  # (b, Lp)
    cache = model.new_kv_cache()
    first = model(prompts, kv_cache=cache)[:, -1:]  # (b, 1, V): predicts response token 0
    for layer in cache.layers:  # the same prompt cache for the chosen and the rejected rows
        layer.keys = torch.cat([layer.keys, layer.keys])
        layer.values = torch.cat([layer.values, layer.values])
    responses = [c for _, c, _ in pairs] + [r for _, _, r in pairs]
    width = max(len(r) for r in responses)
    ids = torch.full((len(responses), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(responses), width), device=device)
    for i, r in enumerate(responses):
        ids[i, : len(r)] = torch.tensor(r, device=device)
        mask[i, : len(r)] = 1.0
    logits = torch.cat([first, first])  # (2b, 1, V)
    if width > 1:
        rest = model(ids[:, :-1], kv_cache=cache)  # (2b, W-1, V)
        logits = torch.cat([logits, rest], dim=1)  # (2b, W, V)
    return (logprobs_from_logits(logits, ids) * mask).sum(1)  # (2b,)


@torch.no_grad()
def reference_logprobs(
    ref_model: nn.Module, pairs: Sequence[Pair], batch_size: int = 32, pad_id: int = 0
) -> tuple[Tensor, Tensor]:
    """``log π_ref(y⁺|x)`` and ``log π_ref(y⁻|x)`` for every pair: two ``(N,)`` tensors.

    The reference is frozen, so these numbers never change during training: computing
    them once halves the work of every step (TRL's ``precompute_ref_log_probs``). Pairs
    are grouped by prompt length, and each group's prompts run once for both responses
    (with a KV cache, when the model has one); the numbers equal ``pair_logprobs`` up to
    float rounding. The model runs in eval mode (no dropout); its mode is restored
    afterwards. Any model works here, not only the reference: it is also how a trained
    policy's log-probs of held-out pairs are measured.
    """
    batch_size = check_int(batch_size, "batch_size", 1)
    pad_id = check_int(pad_id, "pad_id", 0)
    pairs = _check_pairs(pairs, ref_model.cfg.context_length)
    was_training = ref_model.training
    ref_model.eval()
    chosen = torch.zeros(len(pairs))
    rejected = torch.zeros(len(pairs))
    groups: dict[int, list[int]] = {}
    for i, (prompt, _, _) in enumerate(pairs):
        groups.setdefault(len(prompt), []).append(i)
    cached = hasattr(ref_model, "new_kv_cache")
    try:
        for _, members in sorted(groups.items()):
            for s in range(0, len(members), batch_size):
                rows = members[s : s + batch_size]
                chunk = [pairs[i] for i in rows]
                if cached:
                    both = _shared_prompt_logprobs(ref_model, chunk, pad_id).float().cpu()
                    c, r = both[: len(rows)], both[len(rows) :]
                else:
                    c, r, _, _ = pair_logprobs(ref_model, chunk, pad_id)
                chosen[rows] = c.float().cpu()
                rejected[rows] = r.float().cpu()
    finally:
        ref_model.train(was_training)
    return chosen, rejected


# ------------------------------------------------------------------------------ loss ----
def _check_loss_inputs(loss_type: str, logps: dict, lengths: dict) -> None:
    """The tensors of ``dpo_loss``: ``(B,)`` each, ``B >= 1``, the log-probs that
    ``loss_type`` uses finite and at most 0 (a probability is at most 1; above it, ORPO's
    odds are NaN), the lengths it uses positive. Each error names the argument."""
    for name, t in (logps | lengths).items():
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    chosen, rejected = logps["chosen_logps"], logps["rejected_logps"]
    if chosen is None or rejected is None or chosen.shape != rejected.shape or chosen.dim() != 1:
        shapes = [None if t is None else tuple(t.shape) for t in (chosen, rejected)]
        raise ValueError(
            f"chosen_logps {shapes[0]} and rejected_logps {shapes[1]} must both be (batch,)"
        )
    B = chosen.shape[0]
    if B == 0:
        raise ValueError("chosen_logps and rejected_logps are empty: no pair to average over")
    used = ["chosen_logps", "rejected_logps"]
    if loss_type not in REFERENCE_FREE:
        used += ["ref_chosen_logps", "ref_rejected_logps"]
        for name in used[2:]:
            if logps[name] is None:
                raise ValueError(
                    f"loss_type={loss_type!r} needs {name} (the reference's log-probs)"
                )
    for name in used:
        t = logps[name]
        if t.shape != (B,):
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected ({B},)")
        bad = (~torch.isfinite(t.detach())).nonzero().flatten().tolist()
        if bad:
            raise FloatingPointError(
                f"{name} is not finite for pairs {bad[:5]} ({len(bad)} in all): "
                f"{t[bad[0]].item()} at [{bad[0]}]"
            )
        above = (t.detach() > 0).nonzero().flatten().tolist()
        if above:
            raise ValueError(
                f"{name} must be summed log-probs, <= 0 (a probability is at most 1), got "
                f"{t[above[0]].item()} at [{above[0]}]"
            )
    if loss_type in ("rdpo", "simpo", "orpo"):
        for name, t in lengths.items():
            if t is None:
                raise ValueError(f"loss_type={loss_type!r} needs {name} (response lengths)")
            if t.shape != (B,):
                raise ValueError(f"{name} has shape {tuple(t.shape)}, expected ({B},)")
            if not bool((torch.isfinite(t) & (t > 0)).all()):
                raise ValueError(f"{name} must be positive token counts, got {t.tolist()}")


def dpo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    chosen_lengths: Tensor | None = None,
    rejected_lengths: Tensor | None = None,
    *,
    beta: float = 0.1,
    loss_type: str = "dpo",
    simpo_gamma: float = 0.5,
    rdpo_alpha: float = 0.1,
) -> tuple[Tensor, dict[str, float]]:
    """The mean preference loss over a batch of pairs, and TRL-named metrics.

    Inputs are ``(B,)`` **summed** response log-probs (the policy's, and for the losses
    that use one, the reference's) and the response lengths in tokens (needed by
    ``rdpo``, ``simpo`` and ``orpo``). See the module docstring for each ``loss_type``.
    Returns ``(loss, metrics)``; ``metrics`` holds floats: ``loss``, ``rewards/chosen``,
    ``rewards/rejected``, ``rewards/margins``, ``rewards/accuracies``, ``logps/chosen``,
    ``logps/rejected`` (and, for ORPO, ``nll_loss``, ``log_odds_chosen``, the mean log odds
    ratio, and ``log_odds_ratio``, the mean of its log-sigmoid, as TRL logs them). TRL calls
    the plain loss ``loss_type="sigmoid"``, and it averages IPO's log-ratios over tokens, so
    its τ values do not carry over to the summed log-ratios used here.

    Gradient of DPO (the lecture's slide): ``−β σ(r̂⁻ − r̂⁺) [∇ log π(y⁺) − ∇ log π(y⁻)]``;
    pairs the implicit reward already ranks correctly get a small weight.

    Inputs the mean would turn into NaN are errors that name the argument: an empty
    batch, a log-prob above 0 (impossible: a probability is at most 1), and (a
    ``FloatingPointError``) a NaN or infinite log-prob, or a pair whose loss is NaN anyway.
    """
    loss_type = _check_loss_type(loss_type)
    beta = check_number(beta, "beta", 0, exclusive=True)
    _check_loss_inputs(
        loss_type,
        dict(chosen_logps=chosen_logps, rejected_logps=rejected_logps,
             ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps),
        dict(chosen_lengths=chosen_lengths, rejected_lengths=rejected_lengths),
    )  # fmt: skip
    uses_reference = loss_type not in REFERENCE_FREE

    metrics: dict[str, float] = {}
    if uses_reference:
        chosen_ratio = chosen_logps - ref_chosen_logps.to(chosen_logps)  # log π_θ/π_ref, (B,)
        rejected_ratio = rejected_logps - ref_rejected_logps.to(rejected_logps)
        h = chosen_ratio - rejected_ratio  # (B,)
        chosen_reward, rejected_reward = beta * chosen_ratio, beta * rejected_ratio
        if loss_type == "dpo":
            losses = -F.logsigmoid(beta * h)
        elif loss_type == "ipo":
            losses = (h - 1.0 / (2.0 * beta)) ** 2
        else:  # rdpo
            alpha = check_number(rdpo_alpha, "rdpo_alpha", 0)
            length_gap = (chosen_lengths - rejected_lengths).to(h)
            losses = -F.logsigmoid(beta * h + alpha * length_gap)  # see the docstring's sign
    else:
        chosen_avg = chosen_logps / chosen_lengths.to(chosen_logps)  # ℓ̄⁺, (B,)
        rejected_avg = rejected_logps / rejected_lengths.to(rejected_logps)
        chosen_reward, rejected_reward = beta * chosen_avg, beta * rejected_avg
        if loss_type == "simpo":
            gamma = check_number(simpo_gamma, "simpo_gamma", 0)
            losses = -F.logsigmoid(beta * (chosen_avg - rejected_avg) - gamma)
        else:  # orpo: log odds(y) = log p − log(1 − p), p = exp(ℓ̄); expm1 keeps it exact
            log_odds = (chosen_avg - torch.log(-torch.expm1(chosen_avg))) - (
                rejected_avg - torch.log(-torch.expm1(rejected_avg))
            )
            nll = -chosen_avg  # the SFT loss on the chosen response, per token
            odds_term = -F.logsigmoid(log_odds)
            losses = nll + beta * odds_term
            metrics["nll_loss"] = nll.mean().item()
            metrics["log_odds_chosen"] = log_odds.mean().item()  # TRL's names for the two
            metrics["log_odds_ratio"] = F.logsigmoid(log_odds).mean().item()
    nan = torch.isnan(losses.detach()).nonzero().flatten().tolist()
    if nan:  # e.g. ORPO with both average log-probs at 0: infinite odds on both sides
        raise FloatingPointError(
            f"the {loss_type} loss is NaN for pairs {nan[:5]} ({len(nan)} in all): their "
            "log-probs are at the edge of what it can compute (a log-prob of 0 is a "
            "probability of 1, whose odds are infinite)"
        )
    loss = losses.mean()
    margin = (chosen_reward - rejected_reward).detach()
    metrics.update(
        {
            "loss": loss.item(),
            "rewards/chosen": chosen_reward.detach().mean().item(),
            "rewards/rejected": rejected_reward.detach().mean().item(),
            "rewards/margins": margin.mean().item(),
            "rewards/accuracies": (margin > 0).float().mean().item(),
            "logps/chosen": chosen_logps.detach().mean().item(),
            "logps/rejected": rejected_logps.detach().mean().item(),
        }
    )
    return loss, metrics


# -------------------------------------------------------------------------- training ----
def _batch_rows(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Rows of batch ``step``: a slice of a permutation that depends only on (seed, epoch)."""
    per_epoch = n // batch_size
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return order[k * batch_size : (k + 1) * batch_size].tolist()


@dataclass(frozen=True)
class DPOConfig:
    """Hyperparameters of ``train_dpo`` (the names of TRL's ``DPOConfig`` where it has them).

    - ``steps``, ``batch_size`` (pairs per step), ``lr`` (AdamW; linear warmup over
      ``warmup_steps``, then constant), ``weight_decay``, ``max_grad_norm`` (clipping).
    - ``beta`` (β): the strength of the KL constraint, i.e. how far the implicit reward
      ``β log π/π_ref`` may pull the policy from the reference.
    - ``loss_type``: one of ``LOSS_TYPES`` (``dpo_loss``); ``simpo_gamma`` and
      ``rdpo_alpha`` are the target margin of SimPO and the length weight of R-DPO.
    - ``pad_id``: the id that pads a batch (masked out everywhere).
    - ``seed``: the order of the pairs; ``log_every``: steps averaged per history row;
      ``checkpoint_every``: steps between saved states.
    """

    steps: int
    lr: float = 5e-6
    beta: float = 0.1
    loss_type: str = "dpo"
    batch_size: int = 8
    seed: int = 0
    log_every: int = 10
    pad_id: int = 0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    simpo_gamma: float = 0.5
    rdpo_alpha: float = 0.1
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        _check_loss_type(self.loss_type)
        ints = dict(steps=1, batch_size=1, seed=0, log_every=1, pad_id=0, warmup_steps=0,
                    checkpoint_every=1)  # fmt: skip
        numbers = {
            "lr": (0.0, None, False),
            "beta": (0.0, None, True),
            "max_grad_norm": (0.0, None, True),
            "weight_decay": (0.0, None, False),
            "simpo_gamma": (0.0, None, False),
            "rdpo_alpha": (0.0, None, False),
        }
        check_fields(self, ints, numbers)


def _reference_tensors(ref_logps, n_pairs: int, loss_type: str) -> tuple[Tensor, Tensor] | None:
    """The reference log-probs as two float32 CPU tensors of shape ``(n_pairs,)``, checked."""
    if loss_type in REFERENCE_FREE:
        return None
    if ref_logps is None:
        raise ValueError(
            f"ref_logps is needed for loss_type={loss_type!r}: pass "
            "reference_logprobs(reference, pairs)"
        )
    if not isinstance(ref_logps, (tuple, list)) or len(ref_logps) != 2:
        raise ValueError("ref_logps must be the (chosen, rejected) pair of reference_logprobs")
    chosen, rejected = (torch.as_tensor(t, dtype=torch.float32).cpu() for t in ref_logps)
    if chosen.shape != (n_pairs,) or rejected.shape != (n_pairs,):
        raise ValueError(
            f"ref_logps has shapes {tuple(chosen.shape)} and {tuple(rejected.shape)}"
            f" but there are {n_pairs} pairs: was it computed on other pairs?"
        )
    bad = (~torch.isfinite(chosen) | ~torch.isfinite(rejected)).nonzero().flatten()
    if len(bad):
        raise FloatingPointError(
            f"ref_logps are not finite for {len(bad)} pairs (first: pairs[{bad[0].item()}]):"
            " is the reference model broken?"
        )
    return chosen, rejected


def train_dpo(
    policy: nn.Module,
    pairs: Sequence[Pair],
    ref_logps: tuple[Tensor, Tensor] | None,
    config: DPOConfig,
    *,
    progress: bool = True,
    checkpoint_path: str | os.PathLike | None = None,
) -> list[dict[str, float]]:
    """Train ``policy`` on preference pairs with ``dpo_loss``; return the history.

    ``ref_logps`` is ``reference_logprobs(reference, pairs)`` (``None`` is allowed for the
    reference-free ``simpo`` and ``orpo``); ``config`` is a ``DPOConfig``. Each step takes
    ``batch_size`` pairs (a permutation per epoch, fixed by ``seed``), runs chosen and
    rejected through the policy in one pass, and takes an AdamW step
    (``shared.training.make_optimizer``; linear warmup over ``warmup_steps``, then constant
    ``lr``) with gradients clipped to ``max_grad_norm``. The policy runs in eval mode, i.e.
    without dropout (TRL's ``disable_dropout``): dropout would make the policy and the
    reference disagree even before training. Same seed and same starting weights give the
    same history.

    The history has one dict per ``log_every`` steps (and the last step): ``step``,
    ``lr``, ``grad_norm`` and the metrics of ``dpo_loss``, averaged over those steps.

    A loss or a gradient norm that is not finite stops training with a
    ``FloatingPointError`` that says at which step, before the optimizer step that would
    spread it into the weights. With ``checkpoint_path``, the state (weights, optimizer,
    step, history) is saved there every ``checkpoint_every`` steps (``shared.train_state``),
    and a run started again with the same config, pairs and reference continues from it
    (the same history as an uninterrupted run); a state saved by a run with other settings
    is an error that names the file. The caller deletes the file once the result is safe.
    """
    if not isinstance(config, DPOConfig):
        raise TypeError(f"config must be a DPOConfig, got {type(config).__name__}")
    steps, batch_size, loss_type = config.steps, config.batch_size, config.loss_type
    pairs = _check_pairs(pairs, policy.cfg.context_length)
    if len(pairs) < batch_size:
        raise ValueError(f"{len(pairs)} pairs is fewer than one batch of batch_size={batch_size}")
    ref = _reference_tensors(ref_logps, len(pairs), loss_type)

    optimizer = make_optimizer(policy, lr=config.lr, weight_decay=config.weight_decay)
    schedule = functools.partial(
        lr_at, max_lr=config.lr, warmup_steps=min(config.warmup_steps, steps),
        total_steps=steps, min_lr=config.lr,
    )  # fmt: skip
    history: list[dict[str, float]] = []
    window: list[dict[str, float]] = []
    first = 0
    settings = {
        **asdict(config),
        "pairs": data_digest(pairs),
        "reference": data_digest(*(ref or ())),
    }
    settings.pop("checkpoint_every")  # where the run saves does not change what it computes
    state = None if checkpoint_path is None else load_state(checkpoint_path, settings)
    if state is not None:
        policy.load_state_dict(state["policy"])
        optimizer.load_state_dict(state["optimizer"])
        first, history, window = state["step"], state["history"], state["window"]
    device = next(policy.parameters()).device
    params = [p for p in policy.parameters() if p.requires_grad]
    was_training = policy.training
    policy.eval()  # no dropout; gradients flow as usual
    bar = tqdm(
        range(first, steps), disable=not progress, desc=loss_type, mininterval=1.0,
        initial=first, total=steps,
    )  # fmt: skip
    try:
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = schedule(step)
            rows = _batch_rows(len(pairs), batch_size, config.seed, step)
            batch = [pairs[i] for i in rows]
            chosen, rejected, c_len, r_len = pair_logprobs(policy, batch, config.pad_id)
            refs = (None, None) if ref is None else tuple(t[rows].to(device) for t in ref)
            try:
                loss, metrics = dpo_loss(
                    chosen, rejected, *refs, c_len, r_len, beta=config.beta,
                    loss_type=loss_type, simpo_gamma=config.simpo_gamma,
                    rdpo_alpha=config.rdpo_alpha,
                )  # fmt: skip
            except FloatingPointError as e:  # the policy's log-probs went NaN or infinite
                raise FloatingPointError(
                    f"the {loss_type} loss is not finite at step {step} ({e}): training "
                    "stopped before this step changed the weights (lower lr or check the inputs)"
                ) from e
            if not math.isfinite(loss.item()):
                raise FloatingPointError(
                    f"the {loss_type} loss is {loss.item()} at step {step}: training stopped "
                    "before this step changed the weights (lower lr or check the inputs)"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm).item()
            if not math.isfinite(grad_norm):
                raise FloatingPointError(
                    f"the gradient norm is {grad_norm} at step {step}: training stopped "
                    "before this step changed the weights"
                )
            metrics["grad_norm"] = grad_norm
            optimizer.step()
            metrics["lr"] = schedule(step)
            window.append(metrics)
            done = step + 1
            if done % config.log_every == 0 or done == steps:
                row = {"step": done}
                row.update({k: sum(m[k] for m in window) / len(window) for k in window[0]})
                history.append(row)
                window = []
                bar.set_postfix(
                    loss=f"{row['loss']:.3f}", margin=f"{row['rewards/margins']:.2f}", refresh=False
                )
            if checkpoint_path is not None and (
                done % config.checkpoint_every == 0 or done == steps
            ):
                state = dict(step=done, policy=policy.state_dict(),
                             optimizer=optimizer.state_dict(), history=history, window=window)  # fmt: skip
                save_state(checkpoint_path, settings, state)
    finally:
        bar.close()
        policy.train(was_training)
    return history
