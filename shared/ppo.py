"""PPO for a language model (RLHF): the algorithm core of chapter 10.

Four models take part (the lecture's RLHF-PPO slide):

- the **actor** ``π_θ``: the policy being trained (a ``GPTModel``, starting from SFT);
- the **critic** ``V_φ``: a value head on a GPT backbone (``shared.reward_model.ScalarModel``),
  trained alongside, estimating the return still to come from each token on;
- the **reward**: any ``score_fn(prompts, responses) -> (B,)`` (the reward model, or the gold
  rule itself), frozen;
- the **reference** ``π_ref``: a frozen copy of the SFT model, which the policy must not
  drift too far from.

One ``PPOTrainer.step()`` is a rollout followed by a few epochs of updates on it.

**Rollout.** Sample one response per prompt (the episode: each token is an action, the
prompt plus the tokens so far is the state). Score it once, then give every response
token ``t`` the lecture's reward

    R_t = −β log π_θ(a_t|s_t)/π_ref(a_t|s_t)            for t < T,
    R_T = −β log π_θ(a_T|s_T)/π_ref(a_T|s_T) + r(x, y)  at the last token,

so the score comes at the end and a KL penalty (the ``k1`` estimator of
``shared.policy``) at every step. A response that never produced end-of-text gets
``missing_eos_penalty`` added to (or in place of) its score, so that rambling to the
token limit does not pay.

**Advantages: GAE.** With the critic's values ``V_t``, the one-step error is
``δ_t = R_t + γ V_{t+1} − V_t`` (``V`` after the last token is 0: the episode ended), and
generalised advantage estimation sums them with decay ``γλ``:

    A_t = δ_t + γλ A_{t+1},        returns  G_t = A_t + V_t.

``λ = 0`` gives the one-step TD error, ``λ = 1`` (with ``γ = 1``) the reward-to-go minus the
value: ``A_t = Σ_{k≥t} R_k − V_t``. Advantages are then whitened (mean 0, std 1 over the
batch's response tokens), which keeps the step size independent of the reward's scale.

**Updates.** With ``ρ_t = π_θ(a_t|s_t) / π_old(a_t|s_t)`` (``π_old``: the policy that
sampled the rollout), the clipped surrogate objective (the lecture's PPO2) is

    J = E_t[ min( ρ_t A_t, clip(ρ_t, 1 − ε, 1 + ε) A_t ) ],

so a token whose probability already moved by more than ``ε`` in the helpful direction
gives no more gradient. The critic regresses on the returns with a clipped value loss,

    L_V = ½ E_t[ max( (V_t − G_t)², (clip(V_t, V_old − ε_v, V_old + ε_v) − G_t)² ) ],

and both are minimised together: ``loss = −J + vf_coef · L_V``, over several epochs of
shuffled minibatches of the same rollout, with gradients clipped to ``max_grad_norm``.

This follows TRL's ``PPOTrainer`` (a per-token KL penalty, the score at the end of the
response, whitened advantages, value clipping, the missing-eos penalty) and logs its metric
names, with two conventions stated exactly:

- TRL adds the score one position *past* the last response token (``sequence_lengths + 1``);
  here it is added *at* the last response token (the end-of-text, when the response has
  one). Either way the whole score arrives at the end of the episode.
- TRL's ``missing_eos_penalty`` is a positive amount *subtracted* from the score of a response
  without end-of-text (older TRL versions *replaced* that score with
  ``penalty_reward_value``); here ``PPOConfig.missing_eos_penalty`` is the signed amount
  *added* (−1 by default), and ``missing_eos_replaces_score`` gives the older behaviour.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from shared.checks import check_fields, check_int, check_number, check_token_ids, is_number
from shared.policy import (
    SequenceBatch,
    kl_k1,
    pad_pairs,
    sample_responses,
    token_logprobs,
)
from shared.training import make_optimizer

__all__ = [
    "PPOConfig",
    "PPOTrainer",
    "Rollout",
    "apply_missing_eos_penalty",
    "compute_gae",
    "masked_mean",
    "masked_whiten",
    "per_token_rewards",
    "policy_loss",
    "value_loss",
]

ScoreFn = Callable[[list[list[int]], list[list[int]]], Tensor]
RATIO_TOLERANCE = 1e-4  # |mean ρ − 1| allowed on the first minibatch, before any update


# ----------------------------------------------------------------------------- config ----
@dataclass(frozen=True)
class PPOConfig:
    """Hyperparameters of ``PPOTrainer`` (TRL's defaults where they apply).

    - ``eos_id``: the end-of-text id (``encoding.eot_token``); also used as padding.
    - ``kl_coef`` (β): weight of the per-token KL penalty in the reward.
    - ``gamma`` (γ), ``lam`` (λ): discount and GAE decay.
    - ``cliprange`` (ε), ``cliprange_value`` (ε_v): clipping of the ratio and of the value.
    - ``vf_coef``: weight of the value loss.
    - ``lr``: AdamW learning rate for actor and critic (one optimizer, constant rate).
    - ``num_ppo_epochs``: passes over each rollout; ``minibatch_size``: responses per update;
      ``rollout_batch_size``: responses sampled per step (a multiple of ``minibatch_size``).
    - ``max_new_tokens``, ``temperature``: sampling of the responses.
    - ``missing_eos_penalty``: added to the score of a response without end-of-text (or,
      with ``missing_eos_replaces_score``, used instead of it); ``None`` for none.
    - ``max_grad_norm``: gradient clipping; ``weight_decay``: AdamW's decay.
    - ``seed``: prompt order, sampling and minibatch shuffling.
    """

    eos_id: int
    kl_coef: float = 0.05
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    lr: float = 1e-5
    num_ppo_epochs: int = 4
    minibatch_size: int = 8
    rollout_batch_size: int = 16
    max_new_tokens: int = 24
    temperature: float = 1.0
    missing_eos_penalty: float | None = -1.0
    missing_eos_replaces_score: bool = False
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        ints = dict(eos_id=0, num_ppo_epochs=1, minibatch_size=1, rollout_batch_size=1,
                    max_new_tokens=1, seed=0)  # fmt: skip
        numbers = {
            "kl_coef": (0.0, None, False),
            "gamma": (0.0, 1.0, False),
            "lam": (0.0, 1.0, False),
            "cliprange": (0.0, None, True),
            "cliprange_value": (0.0, None, True),
            "vf_coef": (0.0, None, False),
            "lr": (0.0, None, False),
            "temperature": (0.0, None, True),
            "max_grad_norm": (0.0, None, True),
            "weight_decay": (0.0, None, False),
        }
        check_fields(self, ints, numbers)
        penalty = self.missing_eos_penalty
        if penalty is not None and not (is_number(penalty) and math.isfinite(penalty)):
            raise ValueError(
                f"PPOConfig.missing_eos_penalty must be a number or None, got {penalty!r}"
            )
        if self.rollout_batch_size % self.minibatch_size:
            raise ValueError(
                f"PPOConfig.rollout_batch_size={self.rollout_batch_size} must be a multiple of "
                f"minibatch_size={self.minibatch_size}"
            )


# ---------------------------------------------------------------------- building blocks ----
def _check_tensors(shape: tuple | None = None, **tensors: Tensor) -> None:
    """Each tensor finite and, when ``shape`` is given, of the mask's shape; the error names
    the tensor and the first bad position."""
    for name, x in tensors.items():
        if shape is not None and x.shape != shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)} but mask has {tuple(shape)}")
        bad = (~torch.isfinite(x)).nonzero()
        if len(bad):
            raise FloatingPointError(
                f"{name} is not finite at {bad[0].tolist()} ({len(bad)} in all)"
            )


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1 (response tokens)."""
    if x.shape != mask.shape:  # broadcasting would average over other positions
        raise ValueError(f"x has shape {tuple(x.shape)} but mask has {tuple(mask.shape)}")
    mask = mask.to(x.dtype)
    count = mask.sum()
    if count.item() == 0:
        raise ValueError("mask selects no position to average over")
    return (x * mask).sum() / count


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """``(x − mean) / std`` over the masked positions; 0 elsewhere. Same shape as ``x``.

    The variance is the unbiased one (divided by ``n − 1``), as in TRL. With
    ``shift_mean=False`` only the scale changes (the mean is added back).
    """
    mask = mask.to(x.dtype)
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = (((x - mean) * mask) ** 2).sum() / (n - 1).clamp(min=1)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def compute_gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimates and returns, both ``(B, L)`` like the inputs.

    Backwards over the positions, with ``V`` of a position outside ``mask`` taken as 0
    (the episode has ended, or not started)::

        δ_t = R_t + γ V_{t+1} − V_t
        A_t = δ_t + γλ A_{t+1}
        G_t = A_t + V_t            (the critic's regression target)

    ``mask`` marks each row's response tokens, one contiguous run (prompt and padding
    positions are 0, their advantages and returns come out 0), so padded rows and rows whose
    responses start at different columns need no special handling. A mask of other values
    than 0 and 1, or with a hole in a row (a response is one run of tokens: the episode
    would restart after the hole), is an error, as are NaN or infinite rewards or values
    and ``gamma``, ``lam`` outside [0, 1].
    """
    gamma = check_number(gamma, "gamma", 0, 1)
    lam = check_number(lam, "lam", 0, 1)
    if not (rewards.shape == values.shape == mask.shape) or rewards.dim() != 2:
        raise ValueError(
            f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and mask "
            f"{tuple(mask.shape)} must be the same (batch, length) shape"
        )
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must hold 0 or 1 at every position (1 on response tokens)")
    m = mask.float()
    starts = (m[:, 1:] > m[:, :-1]).sum(dim=1) + m[:, :1].sum(dim=1)  # runs of 1s per row
    holes = (starts > 1).nonzero().flatten().tolist()
    if holes:
        raise ValueError(
            f"mask row(s) {holes[:5]} have a hole: each row's response tokens must be one run"
        )
    _check_tensors(rewards=rewards, values=values)
    mask = mask.to(values.dtype)
    values = values * mask
    L = rewards.shape[1]
    advantages = torch.zeros_like(values)
    next_advantage = torch.zeros_like(values[:, 0])  # (B,)
    for t in reversed(range(L)):
        if t + 1 < L:
            alive = mask[:, t + 1]  # is position t+1 still part of the episode?
            next_value = values[:, t + 1]
        else:
            alive = next_value = torch.zeros_like(next_advantage)
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (B,)
        next_advantage = (delta + gamma * lam * next_advantage * alive) * mask[:, t]
        advantages[:, t] = next_advantage
    returns = (advantages + values) * mask
    return advantages, returns


def apply_missing_eos_penalty(
    scores: Tensor, has_eos: Tensor, penalty: float | None, replace: bool = False
) -> Tensor:
    """Scores ``(B,)`` with ``penalty`` added to (or, with ``replace``, instead of) the score
    of every response that has no end-of-text; the others are unchanged. ``has_eos`` has
    one flag per score, and scores and penalty are finite, or it is an error."""
    if scores.dim() != 1 or has_eos.shape != scores.shape:
        raise ValueError(
            f"scores {tuple(scores.shape)} and has_eos {tuple(has_eos.shape)} must be the "
            "same (batch,) shape: one flag per response"
        )
    _check_tensors(scores=scores)
    if penalty is None:
        return scores
    penalty = check_number(penalty, "penalty")
    missing = ~has_eos.to(torch.bool)
    penalised = torch.full_like(scores, penalty) if replace else scores + penalty
    return torch.where(missing, penalised, scores)


def per_token_rewards(
    logprobs: Tensor, ref_logprobs: Tensor, scores: Tensor, mask: Tensor, kl_coef: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The lecture's ``R_t``: ``−β k1_t`` at every response token, plus the score at the last.

    ``logprobs``, ``ref_logprobs`` and ``mask`` are ``(B, L)``; ``scores`` is ``(B,)``.
    Returns ``(rewards, kl, non_score_reward)``, all ``(B, L)`` and 0 outside ``mask``.
    Other shapes (which would broadcast) and NaN or infinite inputs are errors.
    """
    kl_coef = check_number(kl_coef, "kl_coef", 0)
    if not (logprobs.shape == ref_logprobs.shape == mask.shape) or mask.dim() != 2:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)}, ref_logprobs {tuple(ref_logprobs.shape)} and "
            f"mask {tuple(mask.shape)} must be the same (batch, length) shape"
        )
    if scores.shape != mask.shape[:1]:
        raise ValueError(f"scores has shape {tuple(scores.shape)}, expected ({mask.shape[0]},)")
    _check_tensors(logprobs=logprobs, ref_logprobs=ref_logprobs, scores=scores)
    mask_f = mask.to(logprobs.dtype)
    kl = kl_k1(logprobs, ref_logprobs) * mask_f  # (B, L)
    non_score = -kl_coef * kl
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask.bool(), positions, -1).max(dim=1).values  # (B,) last response col
    if bool((last < 0).any()):
        raise ValueError("every row of mask needs at least one response token")
    rewards = non_score.clone()
    rewards[torch.arange(len(last), device=last.device), last] += scores.to(rewards.dtype)
    return rewards, kl, non_score


def policy_loss(
    new_logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    cliprange: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped surrogate as a loss to minimise, averaged over response tokens.

    ``ρ = exp(log π_θ − log π_old)``; per token, ``max(−A ρ, −A clip(ρ, 1−ε, 1+ε))``, which
    is ``−min(ρA, clip(ρ)A)``. Returns ``(loss, stats)`` with the detached ``ratio`` (mean),
    ``clipfrac`` (share of tokens where the clipped term is the one used) and ``approxkl``
    (``½ E[(log ρ)²]``, how far this update moved the policy). Every tensor has the shape
    of ``mask`` and is finite, and ``cliprange`` is above 0, or it is an error.
    """
    cliprange = check_number(cliprange, "cliprange", 0, exclusive=True)
    _check_tensors(
        mask.shape, new_logprobs=new_logprobs, old_logprobs=old_logprobs, advantages=advantages
    )
    log_ratio = new_logprobs - old_logprobs  # (B, L)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "ratio": masked_mean(ratio, mask),
            "ratio_var": masked_mean((ratio - masked_mean(ratio, mask)) ** 2, mask),
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approxkl": 0.5 * masked_mean(log_ratio**2, mask),
        }
    return loss, stats


def value_loss(
    new_values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    cliprange_value: float,
) -> tuple[Tensor, Tensor]:
    """``½ E[max((V − G)², (V_clipped − G)²)]`` over response tokens, and the clip fraction.

    ``V_clipped = V_old + clip(V − V_old, −ε_v, ε_v)``: like the policy's ratio, the value
    may not jump further than ``ε_v`` from what it predicted at rollout time, and taking
    the larger error keeps the loss pessimistic. The target ``G_t = A_t + V_t`` is the
    lecture's critic target ``r_t + γ V_{t+1}`` when ``λ = 0`` and the observed
    reward-to-go when ``γ = λ = 1``. Every tensor has the shape of ``mask`` and is finite,
    and ``cliprange_value`` is above 0, or it is an error.
    """
    cliprange_value = check_number(cliprange_value, "cliprange_value", 0, exclusive=True)
    _check_tensors(mask.shape, new_values=new_values, old_values=old_values, returns=returns)
    clipped_values = old_values + torch.clamp(
        new_values - old_values, -cliprange_value, cliprange_value
    )
    unclipped_error = (new_values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    clipfrac = masked_mean((clipped_error > unclipped_error).float(), mask).detach()
    return loss, clipfrac


# ----------------------------------------------------------------------------- rollout ----
@dataclass
class Rollout:
    """One batch of experience. Per-token tensors are ``(B, T-1)``, aligned with
    ``token_logprobs``: column ``t`` is about the token at position ``t + 1``."""

    prompts: list[list[int]]
    responses: list[list[int]]
    batch: SequenceBatch  # (B, T) input_ids, attention_mask, response_mask
    mask: Tensor  # (B, T-1) 1.0 on response tokens
    logprobs: Tensor  # log π_old(a_t | s_t)
    ref_logprobs: Tensor  # log π_ref(a_t | s_t)
    values: Tensor  # V_old(s_t), the critic at rollout time
    raw_scores: Tensor  # (B,) score_fn's scores
    scores: Tensor  # (B,) after the missing-eos penalty
    has_eos: Tensor  # (B,) bool
    kl: Tensor  # k1 per token
    non_score_reward: Tensor  # −β k1 per token
    rewards: Tensor  # R_t
    advantages: Tensor  # whitened A_t
    returns: Tensor  # G_t = A_t + V_t (before whitening)


def _parameters_shared(a: nn.Module, b: nn.Module) -> bool:
    ids = {id(p) for p in a.parameters()}
    return any(id(p) in ids for p in b.parameters())


# ----------------------------------------------------------------------------- trainer ----
class PPOTrainer:
    """PPO with an actor, a critic, a frozen reference and a frozen score function.

    ``policy`` and ``critic`` are trained (one AdamW over both, like TRL's policy-and-value
    wrapper); ``reference`` never is. ``prompts`` are token-id lists; each step draws
    ``rollout_batch_size`` of them (a new permutation every pass over the prompts).
    ``score_fn(prompts, responses)`` gets the id lists (responses include their end-of-text
    when there is one) and returns one float per response.

    All models run in eval mode, i.e. without dropout: with dropout the policy's log-probs
    at update time would differ from those at rollout time even before any update, and the
    ratio ρ would not start at 1. The trainer checks that it does (``val/ratio_first``).
    """

    def __init__(
        self,
        policy: nn.Module,
        critic: nn.Module,
        reference: nn.Module,
        score_fn: ScoreFn,
        prompts: Sequence[Sequence[int]],
        config: PPOConfig,
    ) -> None:
        if not isinstance(config, PPOConfig):
            raise TypeError(f"config must be a PPOConfig, got {type(config).__name__}")
        if not callable(score_fn):
            raise TypeError(f"score_fn must be callable, got {type(score_fn).__name__}")
        for name, model in (("policy", policy), ("critic", critic), ("reference", reference)):
            if not isinstance(model, nn.Module) or getattr(model, "cfg", None) is None:
                raise TypeError(f"{name} must be a GPT-like nn.Module with a .cfg")
        if reference is policy or _parameters_shared(policy, reference):
            raise ValueError(
                "reference shares parameters with policy: pass a frozen copy "
                "(copy.deepcopy(policy)) so it stays where the policy started"
            )
        if critic is policy or _parameters_shared(policy, critic):
            raise ValueError("critic shares parameters with policy: give it its own backbone")
        C = policy.cfg.context_length
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
            raise TypeError("prompts must be a list of token-id lists")
        if len(prompts) < config.rollout_batch_size:
            raise ValueError(
                f"{len(prompts)} prompts is fewer than one rollout of "
                f"rollout_batch_size={config.rollout_batch_size}"
            )
        self.prompts = [check_token_ids(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
        for i, p in enumerate(self.prompts):
            if not p:
                raise ValueError(f"prompts[{i}] is empty")
            if len(p) + config.max_new_tokens > C:
                raise ValueError(
                    f"prompts[{i}] has {len(p)} tokens; with max_new_tokens="
                    f"{config.max_new_tokens} that is more than the context_length of {C}"
                )
        if config.eos_id >= policy.cfg.vocab_size:
            raise ValueError(f"PPOConfig.eos_id={config.eos_id} is outside the vocabulary")
        self.policy, self.critic, self.reference = policy, critic, reference
        self.score_fn, self.config = score_fn, config
        for p in reference.parameters():
            p.requires_grad_(False)
        self.params = [p for m in (policy, critic) for p in m.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(
            nn.ModuleList([policy, critic]), lr=config.lr, weight_decay=config.weight_decay
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step_count = 0
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------------- data ----
    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    def _prompt_rows(self, step: int) -> list[int]:
        """Prompts of step ``step``: a slice of a permutation fixed by (seed, pass)."""
        n, k = len(self.prompts), self.config.rollout_batch_size
        per_pass = n // k
        epoch, j = divmod(step, per_pass)
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return torch.randperm(n, generator=g)[j * k : (j + 1) * k].tolist()

    def _score(self, prompts: list[list[int]], responses: list[list[int]]) -> Tensor:
        scores = self.score_fn(prompts, responses)
        scores = torch.as_tensor(scores, dtype=torch.float32).to(self.device)
        if scores.shape != (len(responses),):
            raise ValueError(
                f"score_fn returned shape {tuple(scores.shape)}, expected ({len(responses)},): "
                "one score per response"
            )
        if not bool(torch.isfinite(scores).all()):
            raise ValueError(f"score_fn returned non-finite scores: {scores.tolist()}")
        return scores

    # ---------------------------------------------------------------------- rollout ----
    @torch.no_grad()
    def rollout(self, prompts: Sequence[Sequence[int]] | None = None) -> Rollout:
        """Sample, score and evaluate one batch of responses (no update).

        ``prompts`` defaults to this step's share of the training prompts.
        """
        cfg = self.config
        for m in (self.policy, self.critic, self.reference):
            m.eval()
        if prompts is None:
            prompts = [self.prompts[i] for i in self._prompt_rows(self.step_count)]
        prompts = [list(p) for p in prompts]
        responses = sample_responses(
            self.policy,
            prompts,
            cfg.max_new_tokens,
            temperature=cfg.temperature,
            generator=self.generator,
            eos_id=cfg.eos_id,
        )
        C = self.policy.cfg.context_length
        batch = pad_pairs(list(zip(prompts, responses)), cfg.eos_id, C).to(self.device)
        ids = batch.input_ids  # (B, T)
        mask = batch.target_mask.float()  # (B, T-1)
        logprobs = token_logprobs(self.policy, ids, cfg.temperature) * mask  # (B, T-1)
        ref_logprobs = token_logprobs(self.reference, ids, cfg.temperature) * mask
        values = self.critic(ids)  # (B, T): V of the state that ends at each position
        if values.shape != ids.shape:
            raise ValueError(
                f"critic(idx) returned shape {tuple(values.shape)}, expected {tuple(ids.shape)}:"
                " one value per position, like shared.reward_model.ScalarModel"
            )
        values = values[:, :-1].float() * mask  # (B, T-1): the state before each token
        raw_scores = self._score(prompts, responses)  # (B,)
        has_eos = torch.tensor([r[-1] == cfg.eos_id for r in responses], device=self.device)
        scores = apply_missing_eos_penalty(
            raw_scores, has_eos, cfg.missing_eos_penalty, cfg.missing_eos_replaces_score
        )
        rewards, kl, non_score = per_token_rewards(
            logprobs, ref_logprobs, scores, mask, cfg.kl_coef
        )
        advantages, returns = compute_gae(rewards, values, mask, cfg.gamma, cfg.lam)
        advantages = masked_whiten(advantages, mask)
        return Rollout(
            prompts, responses, batch, mask, logprobs, ref_logprobs, values, raw_scores,
            scores, has_eos, kl, non_score, rewards, advantages, returns,
        )  # fmt: skip

    # ----------------------------------------------------------------------- update ----
    def update(self, rollout: Rollout) -> dict[str, float]:
        """``num_ppo_epochs`` passes of shuffled minibatches over ``rollout``; mean stats."""
        cfg = self.config
        B = rollout.mask.shape[0]
        if B % cfg.minibatch_size:
            raise ValueError(f"the rollout has {B} responses, not a multiple of minibatch_size")
        stats: dict[str, list[float]] = {}
        ratio_first = None
        for _epoch in range(cfg.num_ppo_epochs):
            order = torch.randperm(B, generator=self.generator).to(self.device)
            for start in range(0, B, cfg.minibatch_size):
                rows = order[start : start + cfg.minibatch_size]
                ids = rollout.batch.input_ids[rows]  # (mb, T)
                mask = rollout.mask[rows]  # (mb, T-1)
                new_logprobs, entropy = token_logprobs(
                    self.policy, ids, cfg.temperature, return_entropy=True
                )  # (mb, T-1) each
                new_values = self.critic(ids)[:, :-1].float()  # (mb, T-1)
                try:
                    pg_loss, pg = policy_loss(
                        new_logprobs, rollout.logprobs[rows], rollout.advantages[rows], mask,
                        cfg.cliprange,
                    )  # fmt: skip
                    vf_loss, vf_clipfrac = value_loss(
                        new_values, rollout.values[rows], rollout.returns[rows], mask,
                        cfg.cliprange_value,
                    )  # fmt: skip
                except FloatingPointError as e:  # the policy or the critic went NaN
                    raise FloatingPointError(
                        f"the PPO loss is not finite at step {self.step_count} ({e})"
                    ) from e
                if ratio_first is None:
                    ratio_first = pg["ratio"].item()
                    if abs(ratio_first - 1.0) > RATIO_TOLERANCE:
                        raise RuntimeError(
                            f"the ratio π_θ/π_old on the first minibatch is {ratio_first:.6f}, "
                            "not 1: before any update the policy must give the rollout's "
                            "tokens the log-probs it sampled them with (dropout on? another "
                            "temperature? weights changed since the rollout?)"
                        )
                loss = pg_loss + cfg.vf_coef * vf_loss
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(
                        f"the PPO loss is {loss.item()} at step {self.step_count}"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.optimizer.step()
                row = {
                    "policy/approxkl_avg": pg["approxkl"].item(),
                    "policy/clipfrac_avg": pg["clipfrac"].item(),
                    "policy/entropy_avg": masked_mean(entropy.detach(), mask).item(),
                    "loss/policy_avg": pg_loss.item(),
                    "loss/value_avg": vf_loss.item(),
                    "val/clipfrac_avg": vf_clipfrac.item(),
                    "val/ratio": pg["ratio"].item(),
                    "val/ratio_var": pg["ratio_var"].item(),
                    "grad_norm": grad_norm.item(),
                }
                for k, v in row.items():
                    stats.setdefault(k, []).append(v)
        out = {k: sum(v) / len(v) for k, v in stats.items()}
        out["val/ratio_first"] = ratio_first
        return out

    # ------------------------------------------------------------------------ steps ----
    def step(self) -> dict[str, float]:
        """One rollout and its updates; returns (and appends to ``history``) the metrics."""
        r = self.rollout()
        mask = r.mask
        sums = {
            "kl": r.kl.sum(1),  # (B,) summed over each response
            "non_score": r.non_score_reward.sum(1),
            "neg_logp": (-r.logprobs * mask).sum(1),
        }
        metrics: dict[str, float] = {
            "step": self.step_count + 1,
            "episode": (self.step_count + 1) * self.config.rollout_batch_size,
            "lr": self.optimizer.param_groups[0]["lr"],
            "objective/kl": sums["kl"].mean().item(),
            "objective/entropy": sums["neg_logp"].mean().item(),
            "objective/non_score_reward": sums["non_score"].mean().item(),
            "objective/rlhf_reward": (r.scores + sums["non_score"]).mean().item(),
            "objective/scores": r.scores.mean().item(),
            "val/num_eos_tokens": int(r.has_eos.sum().item()),
            "val/response_length": r.batch.response_lengths.float().mean().item(),
        }
        metrics.update(self.update(r))
        self.step_count += 1
        self.history.append(metrics)
        return metrics

    def train(self, n_steps: int, progress: bool = True) -> list[dict[str, float]]:
        """Run ``n_steps`` more steps; return their metrics (also kept in ``history``)."""
        n_steps = check_int(n_steps, "n_steps", 0)
        out = []
        bar = tqdm(range(n_steps), disable=not progress, desc="ppo", mininterval=1.0)
        for _ in bar:
            m = self.step()
            out.append(m)
            bar.set_postfix(
                score=f"{m['objective/scores']:.3f}", kl=f"{m['objective/kl']:.3f}", refresh=False
            )
        bar.close()
        return out

    # ------------------------------------------------------------------------ state ----
    def state_dict(self) -> dict:
        """Everything needed to continue exactly: weights, optimizer, generator, step,
        history and the config (checked on load)."""
        return {
            "policy": self.policy.state_dict(),
            "critic": self.critic.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self.generator.get_state(),
            "step": self.step_count,
            "history": [dict(h) for h in self.history],
            "config": asdict(self.config),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``; a different config is an error naming the fields."""
        missing = {"policy", "critic", "optimizer", "rng", "step", "config"} - set(state)
        if missing:
            raise ValueError(f"state is missing {sorted(missing)}")
        mine = asdict(self.config)
        differ = [f.name for f in fields(PPOConfig) if state["config"].get(f.name) != mine[f.name]]
        if differ:
            raise ValueError(
                f"the state was saved with another PPOConfig: {differ} differ "
                f"(saved {[state['config'].get(k) for k in differ]}, now {[mine[k] for k in differ]})"
            )
        self.policy.load_state_dict(state["policy"])
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["rng"])
        self.step_count = int(state["step"])
        self.history = [dict(h) for h in state.get("history", [])]
