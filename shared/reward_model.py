"""A scalar head on a GPT backbone: the reward model of chapter 9 and PPO's critic.

A language model ends in ``out_head``, a linear map from the last hidden state to one score
per vocabulary token. A reward model keeps the whole backbone (embeddings, blocks, final
LayerNorm) and swaps that head for ``nn.Linear(emb_dim, 1)``: one number per position.

- The **reward model** reads the number at the last real token of ``prompt + response``
  (the only position that has seen the whole response), trained on preference pairs with
  the Bradley–Terry loss ``-log σ(r⁺ - r⁻)`` (``bradley_terry_loss``).
- PPO's **critic** (value model) uses every position: ``V(s_t)``, the expected return from
  token ``t`` on.

Padding: ``score`` takes an ``attention_mask`` (1 = real token) and works with right
padding (real tokens first) and left padding (real tokens last) alike, because it looks up
the last 1 in each row rather than assuming where the padding is. With left padding the
positions of the real tokens shift, which changes what a model with learned absolute
positions computes; right padding is what the training code here uses.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.gpt import GPTModel

__all__ = ["ScalarModel", "bradley_terry_loss", "final_hidden", "last_token_index"]


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
    """
    if chosen.shape != rejected.shape:
        raise ValueError(
            f"chosen scores {tuple(chosen.shape)} and rejected scores "
            f"{tuple(rejected.shape)} must have the same shape"
        )
    if centring < 0:
        raise ValueError(f"centring must be >= 0, got {centring}")
    loss = -F.logsigmoid(chosen - rejected - margin).mean()
    if centring:
        loss = loss + centring * ((chosen + rejected) ** 2).mean()
    return loss
