"""The policy toolkit: padding, per-token and per-response log-probs, sampling, KL."""

import copy
import math

import pytest
import torch

from shared.gpt import GPTConfig, GPTModel
from shared.policy import (
    kl_k1,
    kl_k2,
    kl_k3,
    kl_to_reference,
    pad_pairs,
    sample_responses,
    sequence_logprobs,
    token_logprobs,
)

torch.set_num_threads(1)
CFG = GPTConfig(vocab_size=12, context_length=16, emb_dim=16, n_heads=2, n_layers=2)
EOS = 0


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPTModel(CFG).eval()


def test_pad_pairs_masks_prompt_response_and_padding():
    batch = pad_pairs([([5, 6], [7, 8, 0]), ([4, 5, 6, 7], [9])], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 0], [4, 5, 6, 7, 9]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert batch.response_mask.tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 0, 1]]
    assert batch.target_mask.tolist() == [[0, 1, 1, 1], [0, 0, 0, 1]]
    assert batch.prompt_lengths.tolist() == [2, 4] and batch.response_lengths.tolist() == [3, 1]
    short = pad_pairs([([1], [2]), ([1, 2, 3], [4, 5])], pad_id=11)
    assert short.input_ids[0].tolist() == [1, 2, 11, 11, 11]
    assert short.attention_mask[0].tolist() == [1, 1, 0, 0, 0]


@pytest.mark.parametrize(
    ("pairs", "kwargs", "message"),
    [
        ([([], [1])], {}, "empty prompt"),
        ([([1], [])], {}, "empty response"),
        ([([1] * 10, [2] * 7)], {"context_length": 16}, "context_length"),
        ([([1], [2], [3])], {}, r"pairs\[0\]"),
        ([], {}, "pairs"),
    ],
)
def test_pad_pairs_refuses_bad_input(pairs, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        pad_pairs(pairs, pad_id=0, **kwargs)


def test_token_logprobs_are_the_log_softmax_of_the_next_token(model):
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    got = token_logprobs(model, ids)
    assert got.shape == (1, 4)
    with torch.no_grad():
        for t in range(4):
            probs = torch.softmax(model(ids[:, : t + 1])[0, -1], dim=-1)
            assert got[0, t].item() == pytest.approx(math.log(probs[ids[0, t + 1]]), abs=1e-5)
    hot = token_logprobs(model, ids, temperature=2.0)
    with torch.no_grad():
        expected = torch.log_softmax(model(ids)[0, 0] / 2.0, dim=-1)[4].item()
    assert hot[0, 0].item() == pytest.approx(expected, abs=1e-6)


def test_token_logprobs_refuses_sequences_longer_than_the_context(model):
    with pytest.raises(ValueError, match="context_length"):
        token_logprobs(model, torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(model, torch.zeros(1, 4, dtype=torch.long), temperature=0.0)


def test_sequence_logprobs_sum_the_response_only_and_ignore_padding(model):
    pairs = [([3, 4], [5, 6, 0]), ([7, 8, 9, 10], [1])]
    batch = pad_pairs(pairs, pad_id=0)
    with torch.no_grad():
        total = sequence_logprobs(model, batch)
        mean = sequence_logprobs(model, batch, average=True)
        for i, (p, r) in enumerate(pairs):
            logp = token_logprobs(model, torch.tensor([p + r]))[0]  # alone, no padding
            expected = logp[len(p) - 1 :].sum().item()  # only the response tokens
            assert total[i].item() == pytest.approx(expected, abs=1e-5)
            assert mean[i].item() == pytest.approx(expected / len(r), abs=1e-5)
    # summed and averaged differ exactly by the response length
    assert torch.allclose(mean * batch.response_lengths, total, atol=1e-6)
    assert not torch.allclose(mean, total)


def test_sequence_logprobs_have_gradients(model):
    batch = pad_pairs([([3, 4], [5, 6])], pad_id=0)
    trainable = copy.deepcopy(model)
    sequence_logprobs(trainable, batch).sum().backward()
    assert trainable.tok_emb.weight.grad is not None


def test_sample_responses_end_in_eos_or_are_cut_and_are_reproducible(model):
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8], [9]]
    a = sample_responses(model, prompts, 6, generator=torch.Generator().manual_seed(1), eos_id=EOS)
    b = sample_responses(model, prompts, 6, generator=torch.Generator().manual_seed(1), eos_id=EOS)
    assert a == b and len(a) == 4
    for r in a:
        assert 1 <= len(r) <= 6
        assert EOS not in r[:-1]  # nothing after the end-of-text
        assert r[-1] == EOS or len(r) == 6
    greedy_like = sample_responses(model, [[1, 2, 3]], 6, temperature=1e-4, eos_id=EOS)
    with torch.no_grad():
        first = model(torch.tensor([[1, 2, 3]]))[0, -1].argmax().item()
    assert greedy_like[0][0] == first


def test_sample_responses_refuses_prompts_that_do_not_fit(model):
    with pytest.raises(ValueError, match=r"prompts\[1\].*context_length"):
        sample_responses(model, [[1, 2], [1] * 12], max_new_tokens=5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        sample_responses(model, [[1, 2]], max_new_tokens=0)


def test_kl_estimators_on_hand_values():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    r = 0.25 / 0.5
    assert kl_k1(logp, ref).item() == pytest.approx(math.log(2))
    assert kl_k2(logp, ref).item() == pytest.approx(0.5 * math.log(r) ** 2)
    assert kl_k3(logp, ref).item() == pytest.approx((r - 1) - math.log(r))
    same = torch.tensor([-1.0, -2.0])
    for k in (kl_k1, kl_k2, kl_k3):
        assert torch.equal(k(same, same), torch.zeros(2))


def test_k1_and_k3_are_unbiased_and_k3_is_never_negative():
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(10), 0)
    q = torch.softmax(torch.randn(10), 0)
    exact = (p * (p.log() - q.log())).sum()
    # the expectation over tokens drawn from p, computed exactly
    for k in (kl_k1, kl_k3):
        assert (p * k(p.log(), q.log())).sum().item() == pytest.approx(exact.item(), rel=1e-5)
    assert (kl_k3(p.log(), q.log()) >= 0).all()
    assert (kl_k1(p.log(), q.log()) < 0).any()  # one token's k1 can be negative


def test_kl_to_reference_is_zero_for_a_copy_and_positive_for_a_changed_policy(model):
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8], [9, 10]] * 4
    same = kl_to_reference(
        model, copy.deepcopy(model), prompts, 5, generator=torch.Generator().manual_seed(0)
    )
    assert same["kl"] == 0.0 and same["kl_k3"] == 0.0 and same["n"] == 16
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.out_head.weight.add_(torch.randn_like(changed.out_head.weight))
    kl = kl_to_reference(
        changed, model, prompts, 5, eos_id=EOS, generator=torch.Generator().manual_seed(0)
    )
    assert kl["kl"] > 0 and kl["kl_k3"] > 0
    assert 0 < kl["kl_stderr"] < kl["kl"]
