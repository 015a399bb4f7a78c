"""Tests of shared.decoding and the KV cache: same tokens with and without the cache,
the filters on hand-checked numbers, reproducible and correctly distributed sampling, errors.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from shared.attention import KVCache
from shared.bpe import get_encoding
from shared.decoding import (
    apply_temperature,
    generate,
    generate_text,
    sample_next,
    top_k_filter,
    top_p_filter,
)
from shared.gpt import GPTConfig, GPTModel, generate_greedy

CFG = GPTConfig(vocab_size=64, context_length=16, emb_dim=32, n_heads=4, n_layers=2)
# The lecture's top-k example: 9 logits, the top 3 at positions 3, 7, 0.
LECTURE_LOGITS = torch.tensor([4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79])


def make_model(cfg: GPTConfig = CFG, seed: int = 0) -> GPTModel:
    """A random model with weights large enough that the next-token logits differ clearly.

    With the usual 0.02 init the logits of an untrained model are nearly equal, and greedy
    ties could flip on a rounding error; std 0.3 spreads them out by whole units.
    """
    torch.manual_seed(seed)
    model = GPTModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
    return model


PROMPTS = [[5], [1, 2, 3, 4, 5], list(range(10, 26)), list(range(40, 60))]  # 1, 5, 16, 20 tokens


# --------------------------------------------------------------------------- KV cache


@pytest.mark.parametrize("fused", [False, True])
def test_cached_logits_equal_full_forward_at_every_step(fused: bool) -> None:
    model = make_model(dataclasses.replace(CFG, fused_attention=fused))
    torch.manual_seed(1)
    ids = torch.randint(0, CFG.vocab_size, (2, CFG.context_length))
    cache = model.new_kv_cache()
    with torch.no_grad():
        full = model(ids)  # (2, 16, vocab): position t sees ids[:, :t+1]
        prefill = model(ids[:, :5], kv_cache=cache)  # a 5-token prompt in one call
        torch.testing.assert_close(prefill, full[:, :5], atol=1e-5, rtol=0)
        for t in range(5, CFG.context_length):  # then one token per call
            step = model(ids[:, t : t + 1], kv_cache=cache)
            torch.testing.assert_close(step[:, 0], full[:, t], atol=1e-5, rtol=0)
    assert cache.length == CFG.context_length == len(cache)


def test_chunked_prefill_matches_full_forward() -> None:
    model = make_model()
    ids = torch.randint(0, CFG.vocab_size, (1, 12))
    cache = model.new_kv_cache()
    with torch.no_grad():
        chunks = [model(ids[:, a:b], kv_cache=cache) for a, b in [(0, 4), (4, 7), (7, 12)]]
        torch.testing.assert_close(torch.cat(chunks, dim=1), model(ids), atol=1e-5, rtol=0)


@pytest.mark.parametrize("prompt", PROMPTS, ids=lambda p: f"{len(p)}tok")
def test_cache_gives_identical_greedy_tokens(prompt: list[int]) -> None:
    model = make_model()
    idx = torch.tensor([prompt])
    n_new = 50  # far past the context of 16: the cache is reset and the window re-encoded
    cached = generate(model, idx, n_new, use_cache=True)
    plain = generate(model, idx, n_new, use_cache=False)
    assert cached.shape == (1, len(prompt) + n_new)
    assert torch.equal(cached[:, : len(prompt)], idx)  # a long prompt is returned in full
    assert torch.equal(cached, plain)
    assert torch.equal(cached, generate_greedy(model, idx, n_new))  # chapter 3's loop
    assert len(set(cached[0, len(prompt) :].tolist())) > 1  # not a trivially constant output


def test_cache_gives_identical_sampled_tokens_for_a_batch() -> None:
    model = make_model()
    idx = torch.tensor([[1, 2, 3], [7, 8, 9]])
    runs = [
        generate(
            model, idx, 40, temperature=1.0, top_k=20, top_p=0.9, use_cache=use_cache,
            generator=torch.Generator().manual_seed(5),
        )
        for use_cache in (True, False)
    ]  # fmt: skip
    assert torch.equal(runs[0], runs[1])


def test_cache_errors() -> None:
    model = make_model()
    cache = model.new_kv_cache()
    with torch.no_grad():
        model(torch.zeros(1, 10, dtype=torch.long), kv_cache=cache)
        with pytest.raises(ValueError, match="holds 10 positions; 7 more would exceed the context"):
            model(torch.zeros(1, 7, dtype=torch.long), kv_cache=cache)
        with pytest.raises(ValueError, match="batch=1"):
            model(torch.zeros(2, 1, dtype=torch.long), kv_cache=cache)
        with pytest.raises(ValueError, match="3 layers, the model 2 blocks"):
            model(torch.zeros(1, 1, dtype=torch.long), kv_cache=KVCache(3, 16))
        with pytest.raises(TypeError, match="must be a KVCache"):
            model(torch.zeros(1, 1, dtype=torch.long), kv_cache=[])  # type: ignore[arg-type]
        cache.reset()
        assert cache.length == 0
        model(torch.zeros(2, 16, dtype=torch.long), kv_cache=cache)  # a new batch after reset


# --------------------------------------------------------------------------- filters


def test_top_k_lecture_numbers() -> None:
    probs = torch.softmax(top_k_filter(LECTURE_LOGITS, 3), dim=-1)
    kept = probs.nonzero().flatten().tolist()
    assert kept == [0, 3, 7]
    assert (probs[[1, 2, 4, 5, 6, 8]] == 0).all()
    # Exact values; the lecture quotes 0.06, 0.57, 0.36 (0.5775 truncated, not rounded).
    expected = torch.tensor([0.0615, 0.5775, 0.3610])
    torch.testing.assert_close(probs[[0, 3, 7]], expected, atol=1e-4, rtol=0)
    assert torch.allclose(probs[[0, 3, 7]], torch.tensor([0.06, 0.57, 0.36]), atol=0.01)


def test_top_k_edge_cases() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.0, -1.0, 5.0]])
    assert torch.equal(top_k_filter(logits, 5), logits)  # k > vocabulary keeps everything
    one = top_k_filter(logits, 1)
    assert torch.isfinite(one).sum(-1).tolist() == [1, 1]
    assert one.argmax(-1).tolist() == [1, 2]
    tied = top_k_filter(torch.tensor([2.0, 2.0, 2.0, 1.0]), 2)
    assert torch.isfinite(tied).sum() == 2  # exactly k, even with ties


def test_top_p_keeps_the_right_set() -> None:
    probs = torch.tensor([0.05, 0.40, 0.10, 0.25, 0.20])  # sorted: 0.40, 0.25, 0.20, 0.10, 0.05
    logits = probs.log()
    kept = {p: torch.isfinite(top_p_filter(logits, p)).nonzero().flatten().tolist()
            for p in (0.3, 0.5, 0.7, 0.9, 1.0)}  # fmt: skip
    assert kept[0.3] == [1]  # 0.40 >= 0.3 alone
    assert kept[0.5] == [1, 3]  # 0.40 < 0.5, 0.65 >= 0.5
    assert kept[0.7] == [1, 3, 4]  # 0.65 < 0.7, 0.85 >= 0.7
    assert kept[0.9] == [1, 2, 3, 4]  # 0.85 < 0.9, 0.95 >= 0.9
    assert kept[1.0] == [0, 1, 2, 3, 4]
    # Surviving logits are unchanged; renormalised they are proportional to the originals.
    filtered = top_p_filter(logits, 0.5)
    assert torch.equal(filtered[[1, 3]], logits[[1, 3]])
    sure = torch.tensor([[10.0, 0.0, 0.0], [1.0, 1.0, 1.0]])  # confident row vs flat row
    assert torch.isfinite(top_p_filter(sure, 0.9)).sum(-1).tolist() == [1, 3]
    tiny = top_p_filter(logits, 1e-6)
    assert torch.isfinite(tiny).sum() == 1  # never empty


def test_temperature() -> None:
    logits = torch.tensor([1.0, 2.0, 4.0])
    assert torch.equal(apply_temperature(logits, 1.0), logits)
    assert torch.allclose(apply_temperature(logits, 2.0), logits / 2)
    entropies = []
    for t in (0.25, 1.0, 4.0):
        p = torch.softmax(apply_temperature(logits, t), -1)
        entropies.append(-(p * p.log()).sum().item())
    assert entropies[0] < entropies[1] < entropies[2]  # higher temperature, flatter
    greedy = torch.softmax(apply_temperature(logits, 0.0), -1)
    assert greedy.tolist() == [0.0, 0.0, 1.0]
    near_zero = torch.softmax(apply_temperature(logits, 0.01), -1)
    assert torch.allclose(near_zero, greedy, atol=1e-6)  # the limit t -> 0 is greedy


def test_temperature_zero_is_greedy() -> None:
    logits = torch.randn(8, 50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample_next(logits, temperature=0.0), logits.argmax(-1))
    assert torch.equal(sample_next(logits, 0.0, top_k=3, top_p=0.5), logits.argmax(-1))
    model = make_model()
    idx = torch.tensor([[3, 4]])
    assert torch.equal(generate(model, idx, 20, temperature=0.0), generate_greedy(model, idx, 20))
    # A very low temperature samples the argmax too (the gaps here are > 0.01).
    cold = generate(model, idx, 20, temperature=1e-4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(cold, generate_greedy(model, idx, 20))


# --------------------------------------------------------------------------- sampling


def test_seeded_sampling_is_reproducible() -> None:
    model = make_model()
    idx = torch.tensor([[1, 2]])

    def run(seed: int) -> torch.Tensor:
        return generate(
            model, idx, 30, temperature=1.5, generator=torch.Generator().manual_seed(seed)
        )

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))
    assert not torch.equal(run(7), generate_greedy(model, idx, 30))


def test_samples_follow_softmax_at_temperature_one() -> None:
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    probs = torch.softmax(logits, -1)
    n = 5000
    draws = sample_next(logits.expand(n, -1), generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=5).double()
    expected = n * probs.double()
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 18.47, (chi2, counts.tolist())  # chi-square, 4 dof, p = 0.001
    # ... and top-k draws never leave the kept set, with the renormalised probabilities.
    draws = sample_next(logits.expand(n, -1), top_k=2, generator=torch.Generator().manual_seed(1))
    assert set(draws.tolist()) == {0, 1}
    share = (draws == 0).double().mean().item()
    assert abs(share - torch.softmax(logits[:2], -1)[0].item()) < 0.03


def test_sample_next_shapes() -> None:
    g = torch.Generator().manual_seed(0)
    assert sample_next(torch.randn(10), generator=g).shape == ()
    assert sample_next(torch.randn(3, 4, 10), generator=g).shape == (3, 4)


# --------------------------------------------------------------------------- generation


def test_stops_at_eos() -> None:
    model = make_model()
    idx = torch.tensor([[1, 2, 3]])
    full = generate(model, idx, 30)
    eos = full[0, 6].item()  # use the 4th generated token as "end of text"
    first = 3 + full[0, 3:].tolist().index(eos)
    stopped = generate(model, idx, 30, eos_id=eos)
    assert torch.equal(stopped[0], full[0, : first + 1])
    # A batch: the row that finishes first is padded with eos until the other finishes.
    two = generate(model, torch.tensor([[1, 2, 3], [9, 9, 9]]), 30, eos_id=eos)
    row = two[0, 3:].tolist()
    assert row[: row.index(eos) + 1] == full[0, 3 : first + 1].tolist()
    assert set(row[row.index(eos) :]) == {eos}


def test_generate_text_round_trip() -> None:
    enc = get_encoding()
    cfg = dataclasses.replace(CFG, vocab_size=enc.n_vocab)
    model = make_model(cfg)
    text = generate_text(model, enc, "Nabo lives in", max_new_tokens=8, stop_at_eos=False)
    ids = enc.encode("Nabo lives in")
    expected = generate(model, torch.tensor([ids]), 8)[0, len(ids) :].tolist()
    assert text == enc.decode(expected)
    with pytest.raises(ValueError, match="prompt is empty"):
        generate_text(model, enc, "")
    small = make_model()  # vocabulary of 64: the tokenizer's ids do not fit
    with pytest.raises(ValueError, match="more ids than the model's vocabulary of 64"):
        generate_text(small, enc, "Rushcombe")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"temperature": -0.5}, ValueError, "temperature must be a finite number >= 0"),
        ({"temperature": float("nan")}, ValueError, "temperature"),
        ({"top_k": 0}, ValueError, "top_k must be a positive int"),
        ({"top_k": 2.5}, TypeError, "top_k"),
        ({"top_p": 0.0}, ValueError, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.5}, ValueError, "top_p"),
        ({"max_new_tokens": -1}, ValueError, "max_new_tokens must be an int >= 0"),
        ({"eos_id": 64}, ValueError, "eos_id 64"),
    ],
)
def test_generate_argument_errors(kwargs: dict, error: type, message: str) -> None:
    args = {"max_new_tokens": 3, **kwargs}
    with pytest.raises(error, match=message):
        generate(make_model(), torch.tensor([[1, 2]]), **args)


def test_prompt_errors() -> None:
    model = make_model()
    with pytest.raises(ValueError, match="prompt is empty"):
        generate(model, torch.zeros(1, 0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="prompt token id 64 is outside"):
        generate(model, torch.tensor([[1, 64]]), 3)
    with pytest.raises(ValueError, match="prompt token id -2"):
        generate(model, torch.tensor([[-2, 1]]), 3)
    with pytest.raises(ValueError, match=r"shape \(batch, T\), got \(3,\)"):
        generate(model, torch.tensor([1, 2, 3]), 3)
    with pytest.raises(TypeError, match="integer tensor"):
        generate(model, torch.tensor([[1.0, 2.0]]), 3)
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(torch.zeros(3), -1)
    with pytest.raises(ValueError, match="top_p"):
        top_p_filter(torch.zeros(3), 0)
    with pytest.raises(ValueError, match="top_k"):
        top_k_filter(torch.zeros(3), -1)


def test_generate_restores_training_mode() -> None:
    model = make_model().train()
    generate(model, torch.tensor([[1]]), 2)
    assert model.training
