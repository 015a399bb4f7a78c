"""Tests of shared.gpt2_checkpoint: the Hugging Face GPT-2 layout, in and out."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from shared.gpt import GPTConfig, GPTModel
from shared.gpt2_checkpoint import (
    export_gpt2_state_dict,
    gpt2_config_from_hf,
    load_gpt2_file,
    load_gpt2_state_dict,
    load_pretrained_gpt2,
)

CFG = GPTConfig(vocab_size=97, context_length=16, emb_dim=32, n_heads=2, n_layers=2, qkv_bias=True)


def randomised_model(cfg: GPTConfig = CFG, seed: int = 0) -> GPTModel:
    """A model whose every parameter (biases, LayerNorm too) is random, so a misplaced
    tensor cannot hide behind a zero or a one."""
    torch.manual_seed(seed)
    model = GPTModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def logits(model: GPTModel, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    idx = torch.randint(0, model.cfg.vocab_size, (2, model.cfg.context_length))
    with torch.no_grad():
        return model(idx)


@pytest.mark.parametrize(
    "changes",
    [{}, {"tie_weights": True}, {"qkv_bias": False}, {"qkv_bias": False, "tie_weights": True}],
)
def test_export_then_load_gives_identical_logits(changes):
    cfg = dataclasses.replace(CFG, **changes)
    source = randomised_model(cfg)
    state = export_gpt2_state_dict(source)
    assert state["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)  # Conv1D (in, 3*out)
    target = GPTModel(cfg).eval()
    load_gpt2_state_dict(target, state)
    assert torch.equal(logits(source), logits(target))


def test_keys_without_prefix_and_mask_buffers_are_accepted():
    source = randomised_model()
    state = {k.removeprefix("transformer."): v for k, v in export_gpt2_state_dict(source).items()}
    del state["lm_head.weight"]  # the hub's files store no head: it is tied to wte
    state["h.0.attn.bias"] = torch.ones(1, 1, 16, 16)  # old causal-mask buffers
    state["h.1.attn.masked_bias"] = torch.tensor(-1e4)
    target = load_gpt2_state_dict(GPTModel(CFG).eval(), state)
    # Without lm_head the untied model's head becomes a copy of the embedding.
    assert torch.equal(target.out_head.weight, source.tok_emb.weight)
    assert target.out_head.weight is not target.tok_emb.weight


def test_wrong_shape_raises_naming_key_and_shapes_and_leaves_model_unchanged():
    state = export_gpt2_state_dict(randomised_model())
    state["transformer.h.1.mlp.c_fc.weight"] = torch.zeros(32, 100)
    target = GPTModel(CFG)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match=r"'h\.1\.mlp\.c_fc\.weight'.*\(32, 100\).*\(32, 128\)"):
        load_gpt2_state_dict(target, state)
    after = target.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_missing_and_unexpected_keys_raise_naming_them():
    state = export_gpt2_state_dict(randomised_model())
    del state["transformer.ln_f.bias"]
    with pytest.raises(ValueError, match=r"missing key\(s\): ln_f\.bias"):
        load_gpt2_state_dict(GPTModel(CFG), state)
    state = export_gpt2_state_dict(randomised_model())
    state["transformer.h.2.ln_1.weight"] = torch.ones(32)  # a third layer the model lacks
    with pytest.raises(ValueError, match=r"unexpected key\(s\): h\.2\.ln_1\.weight"):
        load_gpt2_state_dict(GPTModel(CFG), state)


def test_incompatible_bias_or_head_raise():
    state = export_gpt2_state_dict(randomised_model())
    no_bias = GPTModel(dataclasses.replace(CFG, qkv_bias=False))
    with pytest.raises(ValueError, match="qkv_bias=False"):
        load_gpt2_state_dict(no_bias, state)
    tied = GPTModel(dataclasses.replace(CFG, tie_weights=True))
    with pytest.raises(ValueError, match="tie_weights"):
        load_gpt2_state_dict(tied, state)  # the untied source's head differs from wte


def test_matches_hugging_face_gpt2():
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=32,
        vocab_size=97,
        n_positions=16,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():  # HF initialises biases to 0; make every tensor count
            p.add_(0.1 * torch.randn_like(p))
    cfg = gpt2_config_from_hf(hf_cfg)
    assert cfg == dataclasses.replace(CFG, tie_weights=True)
    ours = load_gpt2_state_dict(GPTModel(cfg).eval(), hf.state_dict())
    idx = torch.randint(0, 97, (3, 16))
    with torch.no_grad():
        expected = hf(idx).logits
    torch.testing.assert_close(ours(idx), expected, atol=1e-5, rtol=0)
    # ... and back: our export loads into Hugging Face's model with every key matched.
    hf2 = transformers.GPT2LMHeadModel(hf_cfg).eval()
    result = hf2.load_state_dict(export_gpt2_state_dict(ours), strict=False)
    assert not result.unexpected_keys
    assert all(k.endswith(("attn.bias", "attn.masked_bias")) for k in result.missing_keys)
    with torch.no_grad():
        torch.testing.assert_close(hf2(idx).logits, expected, atol=1e-5, rtol=0)


def test_config_from_hf_rejects_what_the_model_cannot_do():
    base = {"vocab_size": 97, "n_positions": 16, "n_embd": 32, "n_head": 2, "n_layer": 2}
    assert gpt2_config_from_hf(base).tie_weights
    with pytest.raises(ValueError, match="activation_function='relu'"):
        gpt2_config_from_hf({**base, "activation_function": "relu"})
    with pytest.raises(ValueError, match=r"missing \['n_layer'\]"):
        gpt2_config_from_hf({k: v for k, v in base.items() if k != "n_layer"})


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_file_round_trip(tmp_path, suffix):
    source = randomised_model()
    state = export_gpt2_state_dict(source)
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    loaded = load_gpt2_file(path)
    assert loaded.keys() == state.keys()
    target = load_gpt2_state_dict(GPTModel(CFG).eval(), loaded)
    assert torch.equal(logits(source), logits(target))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_corrupt_or_missing_file_raises_naming_it(tmp_path, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match=f"broken{suffix}"):
        load_gpt2_file(path)
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        load_gpt2_file(tmp_path / "absent.pt")


def test_pretrained_download_is_off_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMS_ONLINE", raising=False)
    with pytest.raises(RuntimeError, match="LLMS_ONLINE=1"):
        load_pretrained_gpt2("gpt2", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown GPT-2 checkpoint"):
        load_pretrained_gpt2("gpt5", cache_dir=tmp_path)
