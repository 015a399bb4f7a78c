"""Tests of shared.attention: both paths agree with PyTorch, causality, shapes, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shared.attention import (
    KVCache,
    LayerKVCache,
    MultiHeadAttention,
    causal_mask,
    scaled_dot_product_attention,
)


def make_mha(d_in: int = 12, d_out: int = 16, context_length: int = 8, num_heads: int = 4,
             **kwargs) -> MultiHeadAttention:  # fmt: skip
    torch.manual_seed(0)
    return MultiHeadAttention(d_in, d_out, context_length, num_heads, **kwargs).eval()


def reference_mha(mha: MultiHeadAttention, x: torch.Tensor) -> torch.Tensor:
    """The same computation written against PyTorch's own attention, reusing mha's weights."""
    b, T, _ = x.shape
    h, hd = mha.num_heads, mha.head_dim
    q, k, v = (lin(x).view(b, T, h, hd).transpose(1, 2)
               for lin in (mha.W_query, mha.W_key, mha.W_value))  # fmt: skip
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return mha.out_proj(out.transpose(1, 2).reshape(b, T, mha.d_out))


def test_causal_mask() -> None:
    m = causal_mask(4)
    assert m.dtype == torch.bool and m.shape == (4, 4)
    assert m.tolist()[1] == [False, False, True, True]
    assert not m.diagonal().any()


@pytest.mark.parametrize("causal", [True, False])
def test_function_matches_pytorch(causal: bool) -> None:
    torch.manual_seed(1)
    q, k, v = torch.randn(3, 2, 2, 5, 4).unbind(0)
    out, weights = scaled_dot_product_attention(q, k, v, causal=causal)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 2, 5), atol=1e-6)
    if causal:
        assert (weights.triu(diagonal=1) == 0).all()
    else:
        assert (weights > 0).all()


@pytest.mark.parametrize("qkv_bias", [False, True])
@pytest.mark.parametrize("T", [1, 5, 8])
def test_explicit_fused_and_pytorch_agree(qkv_bias: bool, T: int) -> None:
    mha = make_mha(qkv_bias=qkv_bias)
    x = torch.randn(2, T, 12)
    explicit = mha(x)
    mha.fused = True
    fused = mha(x)
    assert explicit.shape == (2, T, 16)
    assert torch.allclose(explicit, fused, atol=1e-6)
    assert torch.allclose(explicit, reference_mha(mha, x), atol=1e-6)


@pytest.mark.parametrize("fused", [False, True])
def test_causality(fused: bool) -> None:
    mha = make_mha(fused=fused)
    x = torch.randn(1, 8, 12)
    y = x.clone()
    y[0, 5] += 1.0  # change one token; positions before it must not notice
    a, b = mha(x), mha(y)
    assert torch.equal(a[0, :5], b[0, :5])
    assert not torch.allclose(a[0, 5:], b[0, 5:], atol=1e-4)


def test_shapes_and_buffer() -> None:
    mha = make_mha(d_in=6, d_out=9, context_length=10, num_heads=3)
    assert (mha.head_dim, mha.num_heads) == (3, 3)
    assert mha(torch.randn(4, 7, 6)).shape == (4, 7, 9)
    assert mha.mask.shape == (10, 10)
    assert "mask" not in mha.state_dict()  # non-persistent: checkpoints do not carry it
    mha(torch.randn(1, 3, 6)).sum().backward()
    assert all(p.grad is not None for p in mha.parameters())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"d_out": 10, "num_heads": 4}, "d_out=10 is not divisible by num_heads=4"),
        ({"num_heads": 0}, "num_heads=0"),
        ({"context_length": -1}, "context_length=-1"),
    ],
)
def test_constructor_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_mha(**kwargs)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((5, 12), r"\(batch, T, d_in=12\), got \(5, 12\)"),
        ((2, 5, 11), r"got \(2, 5, 11\)"),
        ((1, 9, 12), "T=9 exceeds the context length 8"),
    ],
)
def test_forward_errors(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_mha()(torch.randn(*shape))


def test_function_errors() -> None:
    q = torch.randn(1, 3, 4)
    with pytest.raises(ValueError, match="3 queries and 5 keys"):
        scaled_dot_product_attention(q, torch.randn(1, 5, 4), torch.randn(1, 5, 4))
    with pytest.raises(ValueError, match="shapes do not fit"):
        scaled_dot_product_attention(q, torch.randn(1, 3, 2), torch.randn(1, 3, 4))
    with pytest.raises(ValueError, match="positive int T"):
        causal_mask(0)


def test_dropout_only_in_training() -> None:
    torch.manual_seed(2)
    q, k, v = torch.randn(3, 1, 6, 4).unbind(0)
    drop = nn.Dropout(0.5)
    _, plain = scaled_dot_product_attention(q, k, v)
    _, dropped = scaled_dot_product_attention(q, k, v, dropout=drop)
    kept = dropped != 0
    assert 0 < kept.sum() < (plain != 0).sum()  # some weights dropped, some kept
    assert torch.allclose(dropped[kept], 2 * plain[kept])  # survivors scaled by 1/(1-p)
    drop.eval()
    assert torch.equal(scaled_dot_product_attention(q, k, v, dropout=drop)[1], plain)

    for fused in (False, True):
        mha = make_mha(dropout=0.5, fused=fused)  # make_mha returns eval mode
        no_drop = make_mha(dropout=0.0, fused=fused)
        x = torch.randn(2, 8, 12)
        assert torch.allclose(mha(x), no_drop(x), atol=1e-6)
        mha.train()
        assert not torch.allclose(mha(x), no_drop(x), atol=1e-3)


@pytest.mark.parametrize("fused", [False, True])
def test_kv_cache_matches_full_attention(fused: bool) -> None:
    mha = make_mha(fused=fused)
    x = torch.randn(2, 8, 12)
    cache = LayerKVCache(max_len=8)
    with torch.no_grad():
        # Queries at positions past..past+T-1 must see keys 0..past+T-1, causally.
        parts = [mha(x[:, a:b], kv_cache=cache) for a, b in [(0, 3), (3, 4), (4, 8)]]
        torch.testing.assert_close(torch.cat(parts, dim=1), mha(x), atol=1e-6, rtol=0)
    assert cache.length == 8 and cache.keys.shape == (2, 4, 8, 4)
    with pytest.raises(ValueError, match="holds 8 positions; 1 more would exceed"):
        mha(x[:, :1], kv_cache=cache)
    with pytest.raises(TypeError, match="LayerKVCache"):
        mha(x, kv_cache=KVCache(1, 8))  # the whole-model cache, not one layer of it


def test_layer_kv_cache_update_and_reset() -> None:
    cache = LayerKVCache(max_len=5)
    k, v = torch.randn(2, 1, 2, 3, 4).unbind(0)
    keys, values = cache.update(k, v)
    assert torch.equal(keys, k) and torch.equal(values, v)
    keys, _ = cache.update(k[:, :, :2], v[:, :, :2])
    assert keys.shape == (1, 2, 5, 4) and torch.equal(keys[:, :, 3:], k[:, :, :2])
    with pytest.raises(ValueError, match="holds 5 positions and cannot take 1 more"):
        cache.update(k[:, :, :1], v[:, :, :1])
    cache.reset()
    assert cache.length == 0 and len(KVCache(3, 5).layers) == 3
    with pytest.raises(ValueError, match="max_len must be a positive int"):
        LayerKVCache(0)
