"""Decoding on NaN or inf: an error naming the bad input, never a silently chosen token."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.decoding import (
    apply_temperature,
    generate,
    sample_next,
    top_k_filter,
    top_p_filter,
)
from shared.gpt import GPTConfig, GPTModel

CFG = GPTConfig(vocab_size=16, context_length=8, emb_dim=16, n_heads=2, n_layers=1)
INF, NAN = float("inf"), float("nan")

pytestmark = pytest.mark.usefixtures("one_thread")


def row(*values: float) -> torch.Tensor:
    return torch.tensor([list(values)])


BAD_LOGITS = [
    (row(1.0, NAN, 0.0), "contain NaN"),
    (row(NAN, NAN, NAN), "contain NaN"),
    (torch.tensor([[0.0, 1.0], [NAN, 1.0]]), r"contain NaN \(row\(s\) \[1\]\)"),
    (row(1.0, INF, 0.0), r"contain \+inf"),
    (row(INF, INF), r"contain \+inf"),
    (row(-INF, -INF, -INF), "all -inf"),
    (torch.tensor([[0.0, -INF], [-INF, -INF]]), r"row\(s\) \[1\] of logits are all -inf"),
    (torch.full((2, 3, 4), -INF), "all -inf"),
    (torch.tensor([[1.0, NAN]], dtype=torch.bfloat16), "contain NaN"),
]


@pytest.mark.parametrize(("logits", "message"), BAD_LOGITS)
@pytest.mark.parametrize(
    "decode",
    [
        lambda x: sample_next(x, temperature=0.0),
        lambda x: sample_next(x, temperature=1.0),
        lambda x: sample_next(x, temperature=0.7, top_k=2, top_p=0.9),
        lambda x: apply_temperature(x, 0.0),
        lambda x: apply_temperature(x, 2.0),
        lambda x: top_k_filter(x, 1),
        lambda x: top_p_filter(x, 0.5),
    ],
    ids=["greedy", "sample", "sample_filtered", "temp0", "temp2", "top_k", "top_p"],
)
def test_bad_logits_are_refused_by_every_decoder(logits, message, decode):
    with pytest.raises(ValueError, match=message):
        decode(logits)


@pytest.mark.parametrize("temperature", [1e-39, 1e-45, 5e-40, np.float32(1e-39)])
def test_a_temperature_so_small_it_overflows_names_the_temperature(temperature):
    logits = row(2.0, 1.0, 0.5)
    with pytest.raises(ValueError, match=r"temperature=.* is too small.*temperature=0"):
        sample_next(logits, temperature=temperature)


def test_small_but_workable_temperatures_still_sample():
    logits = row(2.0, 1.0, 0.5)
    assert sample_next(logits, temperature=1e-6).item() == 0
    assert sample_next(row(-1e-30, -INF, -2e-30), temperature=1e-8).item() == 0


def test_masked_tokens_alone_are_fine():
    logits = row(-INF, 0.5, -INF, 0.1)
    assert sample_next(logits, temperature=0.0).item() == 1
    g = torch.Generator().manual_seed(0)
    draws = {sample_next(logits, 1.0, generator=g).item() for _ in range(50)}
    assert draws <= {1, 3}


@pytest.mark.parametrize(
    ("logits", "error", "message"),
    [
        ([0.1, 0.2], TypeError, "logits must be a torch.Tensor"),
        (np.zeros((1, 3)), TypeError, "logits must be a torch.Tensor"),
        (torch.tensor([[1, 2, 3]]), TypeError, "floating-point"),
        (torch.zeros(1, 0), ValueError, r"shape \(\.\.\., vocab\)"),
        (torch.tensor(1.0), ValueError, r"shape \(\.\.\., vocab\)"),
    ],
)
def test_logits_of_the_wrong_kind(logits, error, message):
    with pytest.raises(error, match=message):
        sample_next(logits)


def broken_model(value: float) -> GPTModel:
    torch.manual_seed(0)
    model = GPTModel(CFG)
    with torch.no_grad():
        model.final_norm.scale.fill_(value)
    return model


@pytest.mark.parametrize("value", [NAN, INF])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("use_cache", [True, False])
def test_a_model_with_non_finite_weights_is_named(value, temperature, use_cache):
    with pytest.raises(ValueError, match=r"the model's logits contain .*weights finite"):
        generate(
            broken_model(value),
            torch.tensor([[1, 2]]),
            3,
            temperature=temperature,
            use_cache=use_cache,
        )


def test_a_model_that_masks_everything_is_named():
    torch.manual_seed(0)
    model = GPTModel(CFG)
    with torch.no_grad():
        model.out_head.weight.zero_()
        model.out_head.weight[:, 0] = -INF  # every logit -inf (when feature 0 is > 0)
        model.final_norm.scale.zero_()
        model.final_norm.shift.fill_(1.0)
    with pytest.raises(ValueError, match="all -inf.*step 0"):
        generate(model, torch.tensor([[1, 2]]), 2)


def test_good_input_gives_the_same_tokens_as_plain_argmax_and_sampling():
    torch.manual_seed(0)
    model = GPTModel(CFG)
    idx = torch.tensor([[1, 2, 3]])
    out = generate(model, idx, 5)
    with torch.no_grad():
        ids = idx
        for _ in range(5):
            ids = torch.cat([ids, model(ids[:, -8:])[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, ids)
    logits = torch.randn(3, 16)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    expected = torch.multinomial(torch.softmax(logits / 0.8, -1), 1, generator=g2).view(3)
    assert torch.equal(sample_next(logits, 0.8, generator=g1), expected)
