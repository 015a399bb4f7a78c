"""A scalar head on a GPT backbone: the reward model of chapter 9 and PPO's critic.

A language model ends in ``out_head``, a linear map from the last hidden state to one score
per vocabulary token. A reward model keeps the whole backbone (embeddings, blocks, final
LayerNorm) and swaps that head for ``nn.Linear(emb_dim, 1)``: one number per position.

- The **reward model** reads the number at the last real token of ``prompt + response``
  (the only position that has seen the whole response), trained on preference pairs with
  the Bradley–Terry loss ``-log σ(r⁺ - r⁻)`` (``bradley_terry_loss``).
- PPO's **critic** (value model) uses every position: ``V(s_t)``, the expected return from
  token ``t`` on.

Padding: ``score`` takes an ``attention_mask`` (1 = real token) and gives the same score
for right padding (real tokens first) and left padding (real tokens last). It reads the
last 1 of each row rather than assuming where the padding is, and it first moves a
left-padded row's tokens to the front (``align_left``): with learned absolute positions and
no padding mask, left padding would otherwise shift every position and let the real tokens
attend to the padding.
"""

from __future__ import annotations

import copy
import functools
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from shared.checkpoints import load_checkpoint, read_checkpoint
from shared.checks import check_fields, check_int, check_number
from shared.gpt import GPTConfig, GPTModel
from shared.policy import pad_right
from shared.preference_data import check_text_pair
from shared.prompts import format_response
from shared.train_state import data_digest, load_state, save_state
from shared.training import lr_at, make_optimizer

__all__ = [
    "RewardConfig",
    "ScalarModel",
    "align_left",
    "bradley_terry_loss",
    "encode_pairs",
    "final_hidden",
    "last_token_index",
    "load_scalar_model",
    "score_pairs",
    "train_reward_model",
]


def final_hidden(model: GPTModel, idx: Tensor) -> Tensor:
    """The final-LayerNorm hidden states ``(B, T, emb_dim)`` of a GPTModel: everything but
    the output head."""
    if idx.dim() != 2:
        raise ValueError(f"idx must be (batch, T) token ids, got shape {tuple(idx.shape)}")
    T = idx.shape[1]
    if T > model.cfg.context_length:
        raise ValueError(
            f"sequence length {T} exceeds the context length {model.cfg.context_length}"
        )
    pos = torch.arange(T, device=idx.device)
    x = model.drop_emb(model.tok_emb(idx) + model.pos_emb(pos))
    x = model.trf_blocks(x)
    return model.final_norm(x)


def last_token_index(attention_mask: Tensor) -> Tensor:
    """Index of the last 1 in each row of ``attention_mask`` ``(B, T)``: ``(B,)`` longs.

    Works for right padding (``1 1 1 0 0``) and left padding (``0 0 1 1 1``). A row with no
    real token is an error, since there is nothing to score.
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (batch, T), got {tuple(attention_mask.shape)}")
    mask = attention_mask.bool()
    empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"attention_mask rows {empty} have no real token to score")
    T = mask.shape[1]
    positions = torch.arange(T, device=mask.device).expand_as(mask)
    return torch.where(mask, positions, -1).max(dim=1).values


def align_left(idx: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Move each row's real tokens to the front (left padding becomes right padding).

    The model has learned absolute positions and no padding mask: a left-padded row would
    put its tokens at other positions and let them attend to the padding. Rolling every row
    so that its first real token sits at position 0 makes the score of a row independent of
    how it was padded. Rows must be contiguous (padding only before or after the tokens).
    """
    if attention_mask.shape != idx.shape or idx.dim() != 2:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but idx has "
            f"{tuple(idx.shape)}: both must be the same (batch, T)"
        )
    mask = attention_mask.bool()
    first = mask.long().argmax(dim=1)  # (B,) index of the first real token
    T = idx.shape[1]
    source = (torch.arange(T, device=idx.device)[None, :] + first[:, None]) % T  # (B, T)
    idx, moved = idx.gather(1, source), mask.gather(1, source)
    if not bool((moved.long().cummin(dim=1).values == moved.long()).all()):
        raise ValueError("attention_mask rows must be one run of real tokens, padded on one side")
    return idx, moved.to(attention_mask.dtype)


class ScalarModel(nn.Module):
    """A copy of a GPT backbone with a scalar head: ``forward(idx)`` gives ``(B, T)``.

    The backbone is deep-copied, so the language model it came from stays untouched (the
    SFT model is still needed as PPO's frozen reference). The head starts at zero, so every
    score starts at 0 and the first gradients come from the loss alone.
    """

    def __init__(self, backbone: GPTModel) -> None:
        super().__init__()
        if not isinstance(backbone, GPTModel):
            raise TypeError(f"backbone must be a GPTModel, got {type(backbone).__name__}")
        self.backbone = copy.deepcopy(backbone)
        self.backbone.out_head = nn.Identity()  # the vocabulary head is not used
        self.cfg = backbone.cfg
        self.head = nn.Linear(self.cfg.emb_dim, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, idx: Tensor) -> Tensor:
        return self.head(final_hidden(self.backbone, idx)).squeeze(-1)  # (B, T)

    def score(self, idx: Tensor, attention_mask: Tensor) -> Tensor:
        """One scalar per sequence ``(B,)``, read at the last real token."""
        if attention_mask.shape != idx.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but idx has "
                f"{tuple(idx.shape)}"
            )
        idx, attention_mask = align_left(idx, attention_mask)
        values = self(idx)  # (B, T)
        last = last_token_index(attention_mask)  # (B,)
        return values.gather(1, last[:, None]).squeeze(1)


def bradley_terry_loss(
    chosen: Tensor, rejected: Tensor, margin: float | Tensor = 0.0, centring: float = 0.0
) -> Tensor:
    """Mean of ``-log σ(r⁺ - r⁻ - margin)``, plus ``centring · mean((r⁺ + r⁻)²)``.

    Bradley–Terry: the probability that the chosen response beats the rejected one is
    ``σ(r⁺ - r⁻)``; the loss is its negative log-likelihood, written with ``logsigmoid``
    for numerical stability. A ``margin`` (Llama 2's reward model) asks for a larger gap
    where the preference is clearer. The loss only sees differences, so adding a constant
    to every score changes nothing: ``centring`` is a small penalty that keeps the scores
    near zero (the "reward centring" of the literature), which PPO's per-token rewards like.

    An empty batch, or a score or margin that is NaN or infinite, is an error (the mean
    would be NaN): a ValueError, or a FloatingPointError that names the first bad pair.
    """
    for name, scores in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(scores, Tensor):
            raise TypeError(f"{name} must be a tensor of scores, got {type(scores).__name__}")
    if chosen.shape != rejected.shape:
        raise ValueError(
            f"chosen scores {tuple(chosen.shape)} and rejected scores "
            f"{tuple(rejected.shape)} must have the same shape"
        )
    if chosen.numel() == 0:
        raise ValueError("chosen and rejected are empty: the loss of no pair is undefined")
    centring = check_number(centring, "centring", 0)
    if isinstance(margin, Tensor):
        try:
            fits = torch.broadcast_shapes(margin.shape, chosen.shape) == chosen.shape
        except RuntimeError:
            fits = False
        if not fits:  # a margin per pair, or one for all
            raise ValueError(
                f"margin has shape {tuple(margin.shape)}, which does not fit the "
                f"{tuple(chosen.shape)} scores"
            )
    else:
        margin = check_number(margin, "margin")
    for name, values in (("chosen", chosen), ("rejected", rejected), ("margin", margin)):
        bad = (~torch.isfinite(torch.as_tensor(values).detach())).nonzero().tolist()
        if bad:
            raise FloatingPointError(f"{name} is not finite at {bad[0]} ({len(bad)} in all)")
    loss = -F.logsigmoid(chosen - rejected - margin).mean()
    if centring:
        loss = loss + centring * ((chosen + rejected) ** 2).mean()
    return loss


def load_scalar_model(path: str | os.PathLike, *, tokenizer=None) -> ScalarModel:
    """Rebuild a ``ScalarModel`` saved with ``save_checkpoint`` (config from the file), in
    eval mode and float32 (a bfloat16 file is widened)."""
    ckpt = read_checkpoint(path)
    if ckpt["config"] is None:
        raise ValueError(f"checkpoint {path} stores no config, so the model cannot be built")
    model = ScalarModel(GPTModel(GPTConfig.from_dict(ckpt["config"])))
    load_checkpoint(path, model, tokenizer=tokenizer, _checkpoint=ckpt)
    return model.float().eval()


# ------------------------------------------------------------------ training on pairs ----
def encode_pairs(pairs: Sequence[dict], encoding, max_length: int) -> list[tuple[list, list]]:
    """``(chosen_ids, rejected_ids)`` per pair: prompt + response + end-of-text, with the
    response written as in fine-tuning (``shared.prompts.format_response``: after a space).

    A pair longer than ``max_length`` tokens (the model's context) is an error that names
    the pair, rather than a silent cut that would score a different text. So are, as in
    ``shared.dpo.encode_preference_pairs``, a missing or non-string field, an empty
    prompt, the same chosen and rejected text (nothing to prefer), and a Phi-3 prompt
    with an encoding that does not know its markers (``extend_encoding``).
    """
    max_length = check_int(max_length, "max_length", 1)
    if isinstance(pairs, (str, bytes, dict)) or not isinstance(pairs, Sequence):
        raise TypeError(f"pairs must be a list of dicts, got {type(pairs).__name__}")
    specials = getattr(encoding, "special_tokens_set", set())
    out = []
    for i, p in enumerate(pairs):
        check_text_pair(p, i, specials)
        prompt = encoding.encode(p["prompt"], allowed_special="all")
        both = []
        for side in ("chosen", "rejected"):
            response = encoding.encode(format_response(p[side]), allowed_special="all")
            ids = prompt + response + [encoding.eot_token]
            if len(ids) > max_length:
                raise ValueError(
                    f"pair {i}: prompt + {side} is {len(ids)} tokens, more than the "
                    f"context of {max_length}"
                )
            both.append(ids)
        out.append(tuple(both))
    return out


def _pair_scores(model: ScalarModel, batch: Sequence[tuple], pad_id: int) -> tuple:
    """Scores of the chosen and the rejected sides, in one forward pass over ``2B`` rows."""
    idx, mask = pad_right([c for c, _ in batch] + [r for _, r in batch], pad_id)
    device = next(model.parameters()).device
    scores = model.score(idx.to(device), mask.to(device))
    return scores[: len(batch)], scores[len(batch) :]


@torch.no_grad()
def score_pairs(
    model: ScalarModel, encoded: Sequence[tuple], pad_id: int, batch_size: int = 64
) -> tuple[Tensor, Tensor]:
    """The model's scores of every chosen and every rejected response: two ``(N,)`` tensors."""
    batch_size = check_int(batch_size, "batch_size", 1)
    pad_id = check_int(pad_id, "pad_id", 0)
    if isinstance(encoded, (str, bytes)) or not isinstance(encoded, Sequence) or not encoded:
        raise ValueError("encoded must be a non-empty list of (chosen_ids, rejected_ids) pairs")
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    for k in range(0, len(encoded), batch_size):
        c, r = _pair_scores(model, encoded[k : k + batch_size], pad_id)
        chosen.append(c.float())
        rejected.append(r.float())
    model.train(was_training)
    return torch.cat(chosen), torch.cat(rejected)


def _batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Batch ``step``: a slice of a permutation that depends only on (seed, epoch)."""
    per_epoch = n // batch_size
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
    return order[k * batch_size : (k + 1) * batch_size].tolist()


@dataclass(frozen=True)
class RewardConfig:
    """Hyperparameters of ``train_reward_model`` (the names of TRL's ``RewardConfig`` where
    it has them).

    - ``steps``, ``batch_size`` (pairs per step), ``lr`` (peak AdamW rate; warmup over
      ``warmup_steps``, then cosine decay to a tenth), ``weight_decay``.
    - ``margin``: Bradley–Terry with a margin, ``-log σ(r⁺ − r⁻ − margin)``; ``centring``:
      weight of the ``(r⁺ + r⁻)²`` term that keeps rewards near zero (see
      ``bradley_terry_loss``).
    - ``pad_id``: the id that pads a batch (scores read the last real token, so any id works).
    - ``seed``: the batches (batch ``i`` depends only on ``(seed, i)``).
    - ``eval_every``: steps between history rows; ``checkpoint_every``: between saved states.
    """

    steps: int
    lr: float = 1e-4
    batch_size: int = 16
    warmup_steps: int = 10
    weight_decay: float = 0.0
    margin: float = 0.0
    centring: float = 0.0
    pad_id: int = 0
    seed: int = 0
    eval_every: int = 50
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        ints = dict(steps=1, batch_size=1, warmup_steps=0, pad_id=0, seed=0, eval_every=1,
                    checkpoint_every=1)  # fmt: skip
        numbers = {
            "lr": (0.0, None, False),
            "weight_decay": (0.0, None, False),
            "margin": (None, None, False),
            "centring": (0.0, None, False),
        }
        check_fields(self, ints, numbers)


def train_reward_model(
    model: ScalarModel,
    train: Sequence[tuple],
    config: RewardConfig,
    *,
    evaluate_on: Sequence[tuple] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, list]:
    """Train ``model`` on encoded pairs with the Bradley–Terry loss; return the history.

    AdamW with warmup and cosine decay (to 10%), gradients clipped to norm 1 (settings in
    ``config``, a ``RewardConfig``). The history has, per logged step, the mean ``loss``,
    ``accuracy`` (share of pairs with r⁺ > r⁻) and ``margin`` (mean r⁺ − r⁻) of the
    training batches since the last log, and with ``evaluate_on`` the same two figures on
    those pairs (``eval_accuracy``, ``eval_margin``). With ``checkpoint_path``, the state is
    saved every ``config.checkpoint_every`` steps and at the end (``shared.train_state``),
    and a run started again with the same config and pairs continues from it: batch ``i``
    depends only on ``(seed, i)``.
    """
    if not isinstance(config, RewardConfig):
        raise TypeError(f"config must be a RewardConfig, got {type(config).__name__}")
    steps, batch_size, seed, pad_id = config.steps, config.batch_size, config.seed, config.pad_id
    if len(train) < batch_size:
        raise ValueError(f"{len(train)} training pairs is fewer than one batch of {batch_size}")
    optimizer = make_optimizer(model, lr=config.lr, weight_decay=config.weight_decay)
    schedule = functools.partial(
        lr_at, max_lr=config.lr, warmup_steps=min(config.warmup_steps, steps),
        total_steps=steps, min_lr=config.lr / 10,
    )  # fmt: skip
    keys = ("steps", "loss", "accuracy", "margin", "eval_accuracy", "eval_margin", "lr")
    history: dict[str, list] = {k: [] for k in keys}
    start = 0
    settings = {**asdict(config), "train": data_digest(list(train))}
    settings.pop("checkpoint_every")  # where the run saves does not change what it computes
    if evaluate_on:
        settings["evaluate_on"] = data_digest(list(evaluate_on))
    state = None if checkpoint_path is None else load_state(checkpoint_path, settings)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = state["step"], state["history"]

    def save(step: int) -> None:
        if checkpoint_path is not None:
            state = dict(model=model.state_dict(), optimizer=optimizer.state_dict(),
                         step=step, history=history)  # fmt: skip
            save_state(checkpoint_path, settings, state)

    model.train()
    running = []
    bar = tqdm(total=steps, initial=start, disable=not progress, desc="reward model", mininterval=1)
    for step in range(start, steps):
        for group in optimizer.param_groups:
            group["lr"] = schedule(step)
        batch = [train[i] for i in _batch_indices(len(train), batch_size, seed, step)]
        chosen, rejected = _pair_scores(model, batch, pad_id)
        try:
            loss = bradley_terry_loss(
                chosen, rejected, margin=config.margin, centring=config.centring
            )
        except FloatingPointError as e:  # the model's scores went NaN or infinite
            raise FloatingPointError(
                f"the loss is not finite at step {step} ({e}); nothing saved"
            ) from e
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"the loss is {loss.item()} at step {step}; nothing saved")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        diff = (chosen - rejected).detach()
        running.append((loss.item(), (diff > 0).float().mean().item(), diff.mean().item()))
        bar.update(1)
        done = step + 1
        if done % config.eval_every == 0 or done == steps:
            history["steps"].append(done)
            for key, column in zip(("loss", "accuracy", "margin"), zip(*running)):
                history[key].append(sum(column) / len(column))
            history["lr"].append(schedule(step))
            running = []
            if evaluate_on:
                c, r = score_pairs(model, evaluate_on, pad_id)
                history["eval_accuracy"].append((c > r).float().mean().item())
                history["eval_margin"].append((c - r).mean().item())
                model.train()
            bar.set_postfix(loss=f"{history['loss'][-1]:.3f}", acc=f"{history['accuracy'][-1]:.2f}")
        if done % config.checkpoint_every == 0 or done == steps:
            save(done)
    bar.close()
    model.eval()
    return history
