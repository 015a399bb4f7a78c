"""Tests of shared.gpt: shapes, parameter and memory counts, layers, causality, errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shared.gpt import (
    GELU,
    GPT2_CONFIGS,
    GPT3_CONFIGS,
    MODEL_PRESETS,
    FeedForward,
    GPTConfig,
    GPTModel,
    LayerNorm,
    TransformerBlock,
    count_parameters,
    generate_greedy,
    memory_bytes,
    training_memory_estimate,
)

SMALL = GPTConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=4, n_layers=2)


def make_model(cfg: GPTConfig = SMALL, seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(cfg).eval()


def test_shapes():
    model = make_model()
    idx = torch.randint(0, SMALL.vocab_size, (3, 5))
    assert model(idx).shape == (3, 5, SMALL.vocab_size)
    x = torch.randn(2, 5, SMALL.emb_dim)
    assert TransformerBlock(SMALL)(x).shape == x.shape
    assert FeedForward(SMALL)(x).shape == x.shape
    assert FeedForward(SMALL).layers[0].out_features == 4 * SMALL.emb_dim


@pytest.mark.parametrize("qkv_bias", [False, True])
@pytest.mark.parametrize("tie_weights", [False, True])
def test_parameter_count_formula_matches_module(qkv_bias, tie_weights):
    cfg = dataclasses.replace(SMALL, qkv_bias=qkv_bias, tie_weights=tie_weights)
    model = GPTModel(cfg)
    assert count_parameters(cfg) == sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == count_parameters(cfg)


def test_tied_weights_are_one_tensor():
    model = GPTModel(dataclasses.replace(SMALL, tie_weights=True))
    assert model.out_head.weight is model.tok_emb.weight
    untied = GPTModel(SMALL)
    assert count_parameters(untied) - count_parameters(model) == SMALL.vocab_size * SMALL.emb_dim


def test_presets_build_and_count():
    for name, cfg in MODEL_PRESETS.items():
        assert cfg.vocab_size == 4096, name
    assert count_parameters(GPTModel(MODEL_PRESETS["tiny"])) == count_parameters(
        MODEL_PRESETS["tiny"]
    )
    assert 4e6 < count_parameters(MODEL_PRESETS["small"]) < 7e6
    small = MODEL_PRESETS["small"]
    assert (small.n_layers, small.emb_dim, small.head_dim, small.context_length) == (
        6,
        256,
        64,
        128,
    )


def test_gpt2_sizes():
    assert count_parameters(GPT2_CONFIGS["gpt2-small"]) == 124_439_808  # the published 124M
    for name, millions in [("gpt2-medium", 355), ("gpt2-large", 774), ("gpt2-xl", 1558)]:
        n = count_parameters(GPT2_CONFIGS[name])
        assert abs(n / 1e6 - millions) / millions < 0.01, (name, n)


def test_gpt3_sizes_and_7b_memory():
    for name, billions in [("gpt3-small", 0.125), ("gpt3-6.7b", 6.7), ("gpt3-175b", 175)]:
        n = count_parameters(GPT3_CONFIGS[name])
        assert abs(n / 1e9 - billions) / billions < 0.02, (name, n)
    gb = memory_bytes(GPT3_CONFIGS["gpt3-6.7b"], dtype_bytes=4) / 1e9
    assert 26 < gb < 29, gb  # "a 7B model needs ~28 GB in fp32"
    assert memory_bytes(GPT3_CONFIGS["gpt3-6.7b"], 2) * 2 == memory_bytes(
        GPT3_CONFIGS["gpt3-6.7b"], 4
    )


def test_training_memory_estimate():
    cfg = GPT2_CONFIGS["gpt2-small"]
    est = training_memory_estimate(cfg, batch_size=2, seq_len=256)
    w = memory_bytes(cfg)
    assert est["weights"] + est["gradients"] + est["optimizer"] == 4 * w
    assert est["total"] == 4 * w + est["activations"]
    bigger = training_memory_estimate(cfg, batch_size=4, seq_len=256)
    assert bigger["activations"] == 2 * est["activations"]
    with pytest.raises(ValueError, match="seq_len"):
        training_memory_estimate(cfg, seq_len=cfg.context_length + 1)


def test_layernorm_matches_torch():
    torch.manual_seed(0)
    x = torch.randn(4, 7, 16) * 3 + 1
    ours, ref = LayerNorm(16), nn.LayerNorm(16)
    with torch.no_grad():
        for p in (ours.scale, ours.shift):
            p.copy_(torch.randn(16))
        ref.weight.copy_(ours.scale)
        ref.bias.copy_(ours.shift)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)


def test_gelu_matches_torch():
    x = torch.linspace(-6, 6, 1001)
    torch.testing.assert_close(GELU()(x), F.gelu(x, approximate="tanh"), atol=1e-6, rtol=0)
    torch.testing.assert_close(GELU("none")(x), F.gelu(x), atol=1e-6, rtol=0)
    assert (GELU()(x) - GELU("none")(x)).abs().max() < 1e-3
    with pytest.raises(ValueError, match="approximate"):
        GELU("fast")


def test_causal_later_token_does_not_change_earlier_logits():
    model = make_model()
    idx = torch.randint(0, SMALL.vocab_size, (1, 8))
    changed = idx.clone()
    changed[0, 5] = (idx[0, 5] + 1) % SMALL.vocab_size
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 5:], b[:, 5:], atol=1e-4)


def test_init_scales_residual_projections():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=50, context_length=8, emb_dim=64, n_heads=4, n_layers=8)
    model = GPTModel(cfg)
    expected = 0.02 / (2 * cfg.n_layers) ** 0.5
    block = model.trf_blocks[0]
    assert abs(block.att.out_proj.weight.std().item() - expected) < 0.2 * expected
    assert abs(block.ff.layers[2].weight.std().item() - expected) < 0.2 * expected
    assert abs(block.ff.layers[0].weight.std().item() - 0.02) < 0.002
    assert torch.all(block.ff.layers[0].bias == 0)


def test_bad_inputs_raise_helpful_errors():
    model = make_model()
    with pytest.raises(ValueError, match=r"token id 50 .*vocab_size=50"):
        model(torch.tensor([[1, 2, 50]]))
    with pytest.raises(ValueError, match=r"token id -1"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match=r"T=9 exceeds the context length 8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match=r"unsqueeze"):
        model(torch.zeros(4, dtype=torch.long))


def test_config_validation_and_dict_round_trip():
    assert GPTConfig.from_dict(SMALL.to_dict()) == SMALL
    assert GPTModel(SMALL.to_dict()).cfg == SMALL
    with pytest.raises(ValueError, match=r"unknown GPTConfig key\(s\) \['emb_size'\]"):
        GPTConfig.from_dict({**SMALL.to_dict(), "emb_size": 16})
    with pytest.raises(ValueError, match="not divisible"):
        dataclasses.replace(SMALL, n_heads=5)
    with pytest.raises(ValueError, match="n_layers"):
        dataclasses.replace(SMALL, n_layers=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        SMALL.emb_dim = 32  # type: ignore[misc]


def test_generate_greedy_deterministic_and_crops_context():
    model = make_model()
    model.train()  # generation must switch dropout off and then restore the mode
    start = torch.tensor([[1, 2, 3]])
    out1 = generate_greedy(model, start, max_new_tokens=12)
    out2 = generate_greedy(model, start, max_new_tokens=12)
    assert model.training
    assert out1.shape == (1, 15)  # longer than context_length=8: the context was cropped
    assert torch.equal(out1, out2)
    assert torch.equal(out1[:, :3], start)
    # Each new token is the argmax given at most the last 8 tokens.
    with torch.no_grad():
        model.eval()
        for t in range(3, 15):
            context = out1[:, max(0, t - 8) : t]
            assert model(context)[0, -1].argmax().item() == out1[0, t].item()


def test_generate_greedy_stops_at_eos():
    model = make_model()
    start = torch.tensor([[1, 2, 3]])
    full = generate_greedy(model, start, max_new_tokens=10)
    eos = full[0, 4].item()  # the second generated token
    stopped = generate_greedy(model, start, max_new_tokens=10, eos_id=eos)
    first_eos = (full[0, 3:] == eos).nonzero()[0].item() + 3
    assert torch.equal(stopped[0], full[0, : first_eos + 1])


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_explicit_and_fused_attention_give_the_same_logits(qkv_bias):
    cfg = dataclasses.replace(SMALL, qkv_bias=qkv_bias)
    assert cfg.fused_attention  # the default: training uses F.scaled_dot_product_attention
    fused = make_model(cfg)
    explicit = make_model(dataclasses.replace(cfg, fused_attention=False))
    explicit.load_state_dict(fused.state_dict())  # same parameters: the flag adds none
    assert fused.trf_blocks[0].att.fused and not explicit.trf_blocks[0].att.fused
    idx = torch.randint(0, cfg.vocab_size, (3, cfg.context_length))
    with torch.no_grad():
        torch.testing.assert_close(fused(idx), explicit(idx), atol=1e-5, rtol=0)


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_fused_path_gives_the_same_gradients_as_the_explicit_one(qkv_bias):
    cfg = dataclasses.replace(SMALL, qkv_bias=qkv_bias)
    fused = make_model(cfg).train()
    explicit = make_model(dataclasses.replace(cfg, fused_attention=False)).train()
    explicit.load_state_dict(fused.state_dict())
    assert all(m.fused for m in (fused.final_norm, fused.trf_blocks[1].ff.layers[1]))
    assert not any(m.fused for m in (explicit.final_norm, explicit.trf_blocks[1].ff.layers[1]))
    idx = torch.randint(0, cfg.vocab_size, (3, cfg.context_length))
    for model in (fused, explicit):
        F.cross_entropy(model(idx).flatten(0, 1), idx.flatten()).backward()
    for (name, a), b in zip(fused.named_parameters(), explicit.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_hooks_on_the_projections_still_fire_on_the_fused_path():
    model = make_model()
    idx = torch.randint(0, SMALL.vocab_size, (2, 5))
    seen = []
    att = model.trf_blocks[0].att
    handle = att.W_key.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        hooked = model(idx)
    handle.remove()
    assert seen == [(2, 5, SMALL.emb_dim)]  # the hook saw its module run
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hooked, atol=1e-5, rtol=0)


def test_set_fused_switches_every_layer_and_the_config():
    model = make_model()
    idx = torch.randint(0, SMALL.vocab_size, (2, 6))
    with torch.no_grad():
        before = model(idx)
        assert model.set_fused(False) is model
        assert not model.cfg.fused_attention
        flags = [m.fused for m in model.modules() if hasattr(m, "fused")]
        assert len(flags) == 1 + SMALL.n_layers * 4 and not any(flags)
        torch.testing.assert_close(model(idx), before, atol=1e-5, rtol=0)
    with pytest.raises(TypeError, match="bool"):
        model.set_fused(1)


def test_lean_reference_computes_the_same_function():
    from lean_gpt import LeanGPT

    for cfg in (SMALL, dataclasses.replace(SMALL, qkv_bias=True, tie_weights=True)):
        model = make_model(cfg)
        lean = LeanGPT.from_gpt(model)
        idx = torch.randint(0, cfg.vocab_size, (3, cfg.context_length))
        with torch.no_grad():
            torch.testing.assert_close(lean(idx), model(idx), atol=1e-5, rtol=0)
        assert count_parameters(lean) == count_parameters(model)


def test_config_from_old_dict_and_flag_validation():
    old = {k: v for k, v in SMALL.to_dict().items() if k != "fused_attention"}
    assert GPTConfig.from_dict(old) == SMALL  # saved before the field existed: the default
    assert SMALL.to_dict()["fused_attention"] is True
    with pytest.raises(ValueError, match="fused_attention must be a bool"):
        dataclasses.replace(SMALL, fused_attention=1)


def test_kv_cache_positions_continue_from_the_cache():
    model = make_model()
    idx = torch.randint(0, SMALL.vocab_size, (2, 8))
    cache = model.new_kv_cache()
    with torch.no_grad():
        first = model(idx[:, :6], kv_cache=cache)
        last = model(idx[:, 6:], kv_cache=cache)  # positions 6 and 7, not 0 and 1
        full = model(idx)
    assert cache.length == 8
    torch.testing.assert_close(torch.cat([first, last], 1), full, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="would exceed the context length 8"):
        model(idx[:, :1], kv_cache=cache)
