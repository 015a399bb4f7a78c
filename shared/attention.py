"""Causal multi-head self-attention, the module chapter 2 builds and later chapters import.

Two paths compute the same thing: the explicit one (scores, mask, softmax, dropout, written
out so it can be read and inspected) and the fused one (``F.scaled_dot_product_attention``,
which picks a faster kernel). Tests and the notebook check that they agree to 1e-6.

For generation, ``forward(x, kv_cache=...)`` takes a ``LayerKVCache``: the keys and values
of earlier positions are kept, so each new token only computes its own (chapter 5).
``KVCache`` holds one ``LayerKVCache`` per transformer block.
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


class LayerKVCache:
    """The keys and values one attention layer has computed so far, for generation.

    Shapes are ``(batch, num_heads, max_len, head_dim)``; only the first ``length``
    positions are filled. ``update(k, v)`` appends a call's new keys/values and returns
    everything cached, ready to attend over.

    Design choice: the buffers are preallocated to ``max_len`` (the context length) on the
    first update, and later updates write into them in place. The alternative, growing two
    tensors with ``torch.cat`` on every step, needs no size up front and holds no unused
    memory, but copies the whole cache on every new token (O(T) per step, O(T^2) over a
    generation) and reallocates each time. Preallocation costs
    ``2 * batch * d_out * max_len`` numbers per layer from the start, which is small and
    known in advance because ``max_len`` is bounded by the context length anyway.

    Meant for inference (under ``torch.no_grad()``): the in-place writes would break
    backpropagation through earlier steps.
    """

    def __init__(self, max_len: int) -> None:
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
            raise ValueError(f"max_len must be a positive int, got {max_len!r}")
        self.max_len = max_len
        self.length = 0
        self.keys: Tensor | None = None  # (b, heads, max_len, head_dim), allocated lazily
        self.values: Tensor | None = None

    def reset(self) -> None:
        """Forget every position (the buffers are kept and reused)."""
        self.length = 0

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append ``k``, ``v`` ``(b, heads, T, head_dim)``; return all cached keys, values."""
        if k.dim() != 4 or k.shape != v.shape:
            raise ValueError(
                "expected keys and values of shape (batch, heads, T, head_dim), got "
                f"{tuple(k.shape)} and {tuple(v.shape)}"
            )
        b, h, T, hd = k.shape
        if self.length + T > self.max_len:
            raise ValueError(
                f"the KV cache holds {self.length} positions and cannot take {T} more: "
                f"its size is the context length {self.max_len}; reset it and re-encode the "
                "last context_length tokens instead"
            )
        full = (b, h, self.max_len, hd)
        if self.length == 0 and (
            self.keys is None
            or self.keys.shape != full
            or (self.keys.dtype, self.keys.device) != (k.dtype, k.device)
        ):
            self.keys, self.values = k.new_zeros(full), v.new_zeros(full)
        elif self.keys.shape != full:
            B, H, _, HD = self.keys.shape
            raise ValueError(
                f"the KV cache holds keys for batch={B}, heads={H}, head_dim={HD}, but got "
                f"keys of shape {tuple(k.shape)}; reset() it to start a new batch"
            )
        end = self.length + T
        self.keys[:, :, self.length : end] = k
        self.values[:, :, self.length : end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def __repr__(self) -> str:
        return f"LayerKVCache(length={self.length}, max_len={self.max_len})"


class KVCache:
    """One ``LayerKVCache`` per transformer block, all filled in step by the model.

    ``GPTModel.forward(idx, kv_cache=cache)`` passes ``cache.layers[i]`` to block ``i`` and
    places the new tokens at positions ``cache.length ...``. ``max_len`` is the model's
    context length: absolute position embeddings end there.
    """

    def __init__(self, n_layers: int, max_len: int) -> None:
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
        self.max_len = max_len
        self.layers = [LayerKVCache(max_len) for _ in range(n_layers)]

    @property
    def length(self) -> int:
        """Positions cached so far (the same in every layer after each model call)."""
        return self.layers[0].length

    def reset(self) -> None:
        for layer in self.layers:
            layer.reset()

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"KVCache(n_layers={len(self.layers)}, length={self.length}, max_len={self.max_len})"


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

    def forward(self, x: Tensor, kv_cache: LayerKVCache | None = None) -> Tensor:
        """``(b, T, d_in) -> (b, T, d_out)``; with ``kv_cache``, ``x`` continues the cache.

        With a cache holding ``past`` positions, the ``T`` new queries sit at positions
        ``past .. past + T - 1`` and see the keys ``0 .. past + T - 1`` causally. The
        cache-free path is the one chapter 2 builds, unchanged.
        """
        if kv_cache is not None:
            return self._forward_cached(x, kv_cache)
        if x.dim() != 3 or x.shape[-1] != self.d_in:
            raise ValueError(
                f"expected input of shape (batch, T, d_in={self.d_in}), got {tuple(x.shape)}"
            )
        b, T, _ = x.shape
        if T > self.context_length:
            raise ValueError(
                f"sequence length T={T} exceeds the context length {self.context_length}"
            )
        q, k, v = self._project(x)  # each (b, T, d_out)
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

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values: three matmuls, or one on the stacked weights if fused.

        One ``(d_in, 3 * d_out)`` matmul does the same arithmetic in one larger kernel,
        which runs closer to the machine's peak than three small ones. It is skipped when a
        hook watches one of the three projections, so hooks always see their module run.
        """
        lins = (self.W_query, self.W_key, self.W_value)
        if not self.fused or any(m._forward_hooks or m._forward_pre_hooks for m in lins):
            return self.W_query(x), self.W_key(x), self.W_value(x)
        weight = torch.cat([m.weight for m in lins])  # (3 * d_out, d_in)
        bias = None if self.W_query.bias is None else torch.cat([m.bias for m in lins])
        return F.linear(x, weight, bias).split(self.d_out, dim=-1)

    def _forward_cached(self, x: Tensor, cache: LayerKVCache) -> Tensor:
        if not isinstance(cache, LayerKVCache):
            raise TypeError(
                f"kv_cache must be a LayerKVCache (one layer of a KVCache), got "
                f"{type(cache).__name__}"
            )
        if x.dim() != 3 or x.shape[-1] != self.d_in:
            raise ValueError(
                f"expected input of shape (batch, T, d_in={self.d_in}), got {tuple(x.shape)}"
            )
        b, T, _ = x.shape
        past = cache.length
        if past + T > self.context_length:
            raise ValueError(
                f"the KV cache holds {past} positions; {T} more would exceed the context "
                f"length {self.context_length}"
            )
        q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)  # each (b, T, d_out)
        q = q.view(b, T, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, T, self.num_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, T, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = cache.update(k, v)  # (b, num_heads, past + T, head_dim): old and new keys
        # Rows past..past+T-1 of the causal mask: query i may see keys 0..past+i.
        mask = self.mask[past : past + T, : past + T]  # (T, past + T), True = hidden
        if self.fused:
            p = self.dropout.p if self.training else 0.0
            # is_causal=True would align the mask to the top-left corner when there are
            # fewer queries than keys; pass our own (SDPA's bool mask means "may attend").
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=~mask, dropout_p=p)
        else:
            out, _ = scaled_dot_product_attention(q, k, v, mask=mask, dropout=self.dropout)
        out = out.transpose(1, 2).contiguous().view(b, T, self.d_out)  # (b, T, d_out)
        return self.out_proj(out)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, fused={self.fused}"
