"""Causal multi-head self-attention, the module chapter 2 builds and later chapters import.

Two paths compute the same thing: the explicit one (scores, mask, softmax, dropout, written
out so it can be read and inspected) and the fused one (``F.scaled_dot_product_attention``,
which picks a faster kernel). Tests and the notebook check that they agree to 1e-6.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def causal_mask(T: int, device: torch.device | str | None = None) -> Tensor:
    """Boolean ``(T, T)`` mask, True above the diagonal: the future a position may not see."""
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"causal_mask needs a positive int T, got {T!r}")
    return torch.triu(torch.ones(T, T, dtype=torch.bool, device=device), diagonal=1)


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    causal: bool = True,
    dropout: Callable[[Tensor], Tensor] | None = None,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Explicit attention: ``softmax(q @ k^T / sqrt(d) + mask) @ v``; returns (out, weights).

    ``q``, ``k``, ``v`` are ``(..., T, d)``. With ``causal`` a causal mask is built (queries
    and keys must then be the same length); ``mask`` (bool, True = hidden, broadcastable to
    the ``(..., T, T)`` scores) replaces it, e.g. a precomputed buffer. ``dropout`` (such as
    an ``nn.Dropout``) is applied to the weights, as in GPT-2.
    """
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"shapes do not fit: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    # Dividing by sqrt(d) keeps the scores' variance near 1 so softmax does not saturate.
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., T_q, T_k)
    if mask is None and causal:
        if q.shape[-2] != k.shape[-2]:
            raise ValueError(
                f"causal attention needs as many queries as keys, got {q.shape[-2]} queries "
                f"and {k.shape[-2]} keys; pass an explicit mask instead"
            )
        mask = causal_mask(q.shape[-2], device=q.device)
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))  # exp(-inf) = 0 after softmax
    weights = torch.softmax(scores, dim=-1)  # each row sums to 1
    if dropout is not None:
        weights = dropout(weights)
    return weights @ v, weights  # (..., T_q, d_v), (..., T_q, T_k)


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention: ``(batch, T, d_in) -> (batch, T, d_out)``.

    The ``num_heads`` heads share one big projection per role (query, key, value), split
    into ``head_dim = d_out // num_heads`` slices, attend independently, and are joined back
    by ``out_proj``. ``fused=True`` uses ``F.scaled_dot_product_attention`` instead of the
    explicit path; both give the same numbers (the fused one draws different dropout masks).
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        num_heads: int,
        dropout: float = 0.0,
        qkv_bias: bool = False,
        fused: bool = False,
    ) -> None:
        super().__init__()
        if min(d_in, d_out, context_length, num_heads) < 1:
            raise ValueError(
                f"sizes must be positive, got d_in={d_in}, d_out={d_out}, "
                f"context_length={context_length}, num_heads={num_heads}"
            )
        if d_out % num_heads != 0:
            raise ValueError(f"d_out={d_out} is not divisible by num_heads={num_heads}")
        self.d_in, self.d_out, self.context_length = d_in, d_out, context_length
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.fused = fused
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        # Not persistent: it is rebuilt from context_length, so checkpoints need not carry it.
        self.register_buffer("mask", causal_mask(context_length), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_in:
            raise ValueError(
                f"expected input of shape (batch, T, d_in={self.d_in}), got {tuple(x.shape)}"
            )
        b, T, _ = x.shape
        if T > self.context_length:
            raise ValueError(
                f"sequence length T={T} exceeds the context length {self.context_length}"
            )
        q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)  # each (b, T, d_out)
        # Split d_out into heads, then move heads next to batch: (b, num_heads, T, head_dim).
        q = q.view(b, T, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, T, self.num_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, T, self.num_heads, self.head_dim).transpose(1, 2)
        if self.fused:
            p = self.dropout.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            out, _ = scaled_dot_product_attention(
                q, k, v, mask=self.mask[:T, :T], dropout=self.dropout
            )  # out: (b, num_heads, T, head_dim)
        out = out.transpose(1, 2).contiguous().view(b, T, self.d_out)  # (b, T, d_out)
        return self.out_proj(out)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, fused={self.fused}"
