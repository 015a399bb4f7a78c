"""The shared evaluation of aligned policies: gold figures, reward scores, win rate, KL,
best-of-n and its analytic KL, on scripted and tiny random models."""

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from shared.alignment_eval import (
    best_of_n,
    best_of_n_kl,
    encode_prompts,
    evaluate_policy,
    expected_best_of_n,
    reward_scores,
    sample_candidates,
    score_candidates,
)
from shared.bpe import get_encoding
from shared.gpt import GPTConfig, GPTModel
from shared.instruction_data import make_instruction_data
from shared.prompts import format_prompt, format_response
from shared.reward_model import ScalarModel
from shared.tiny_world import make_world

torch.set_num_threads(1)
ENC = get_encoding()
ENTRIES = make_instruction_data(make_world(seed=0), seed=0)
TOWN = [e for e in ENTRIES if e["kind"] == "town" and e["style"] == "preferred"]
TOWN = [e for i, e in enumerate(TOWN) if e["answer"] not in {t["answer"] for t in TOWN[:i]}][:3]
MIXED = [e for e in ENTRIES if e["split"] == "test"][:6]
CFG = GPTConfig(
    vocab_size=ENC.n_vocab, context_length=128, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0
)


class Scripted(nn.Module):
    """A bigram table: the next token depends only on the last one. Starting from the last
    prompt token it writes ``text`` and then end-of-text, whatever the prompt."""

    def __init__(self, text: str, start: int):
        super().__init__()
        self.cfg = CFG
        ids = ENC.encode(format_response(text)) + [ENC.eot_token]
        self.table = nn.Parameter(torch.zeros(CFG.vocab_size, CFG.vocab_size))
        with torch.no_grad():
            for a, b in zip([start, *ids[:-1]], ids):
                self.table[a, b] = 50.0
        self.n_tokens = len(ids) - 1

    def forward(self, idx, kv_cache=None):
        return self.table[idx]  # (B, T, V)


def scripted(text):
    return Scripted(text, encode_prompts(TOWN[:1], ENC)[0][-1])


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return GPTModel(CFG).eval()


def test_a_policy_that_writes_the_right_sentence_gets_every_gold_figure(one_thread):
    entry = TOWN[0]
    result = evaluate_policy(scripted(entry["full"]), [entry], ENC)
    assert result["responses"] == [entry["full"]]
    assert (result["correct"], result["preferred"], result["rating"]) == (1.0, 1.0, 5.0)
    assert result["exact"] == 1.0  # the output of a preferred-style entry is the full sentence
    assert result["eos"] == 1.0 and result["length"] == len(ENC.encode(" " + entry["full"]))


def test_one_answer_for_every_prompt_is_one_distinct_response(one_thread):
    result = evaluate_policy(scripted(TOWN[0]["full"]), TOWN, ENC)
    assert result["distinct"] == pytest.approx(1 / 3)
    # the same sentence is a claim about another person for the other two: it answers nothing
    assert result["ratings"][0] == 5 and result["ratings"][1:] == [1, 1]


def test_win_rate_counts_ties_as_half(one_thread):
    entry = TOWN[0]
    policy = scripted(entry["full"])
    assert evaluate_policy(policy, [entry], ENC, baseline_responses=[""])["win_rate"] == 1.0
    same = evaluate_policy(policy, [entry], ENC, baseline_responses=[entry["full"]])
    assert (same["win_rate"], same["ties"]) == (0.5, 1)
    lost = evaluate_policy(
        scripted("Rushcombe is"), [entry], ENC, baseline_responses=[entry["full"]]
    )
    assert (lost["win_rate"], lost["losses"]) == (0.0, 1)


def test_kl_to_an_identical_reference_is_zero_and_to_another_is_positive(one_thread, tiny):
    result = evaluate_policy(tiny, MIXED, ENC, reference=copy.deepcopy(tiny), max_new_tokens=8)
    assert result["kl"] == 0.0 and result["kl_k3"] == 0.0
    assert "k1" in result["kl_estimator"]
    torch.manual_seed(1)
    other = GPTModel(CFG).eval()
    result = evaluate_policy(tiny, MIXED, ENC, reference=other, max_new_tokens=8)
    assert result["kl_k3"] > 0
    assert result["kl"] == pytest.approx(result["kl"], abs=4 * result["kl_stderr"] + 1e-6)


def test_random_policy_report_has_every_figure(one_thread, tiny):
    rm = ScalarModel(tiny).eval()
    result = evaluate_policy(
        tiny, MIXED, ENC, reward_model=rm, baseline_responses=[""] * len(MIXED),
        temperature=1.0, generator=torch.Generator().manual_seed(0), max_new_tokens=6,
    )  # fmt: skip
    assert result["n"] == len(result["responses"]) == len(result["ratings"]) == len(MIXED)
    assert result["rm_scores"] == [0.0] * len(MIXED)  # the head starts at zero
    assert 0 < result["length"] <= 6 and 0 <= result["distinct"] <= 1
    for key in ("exact", "correct", "preferred", "win_rate"):
        assert 0.0 <= result[key] <= 1.0
    assert 1.0 <= result["rating"] <= 5.0


def test_sampling_is_reproducible_with_a_seeded_generator(one_thread, tiny):
    def run():
        g = torch.Generator().manual_seed(3)
        return evaluate_policy(tiny, MIXED, ENC, temperature=1.0, generator=g, max_new_tokens=5)

    assert run()["responses"] == run()["responses"]


def test_reward_scores_read_prompt_response_and_eot(one_thread, tiny):
    torch.manual_seed(0)
    rm = ScalarModel(tiny).eval()
    nn.init.normal_(rm.head.weight)
    responses = ["Nabo lives in Rushcombe.", "No.", "Yes"]
    got = reward_scores(rm, TOWN, responses, ENC, batch_size=2)
    for e, r, s in zip(TOWN, responses, got):
        ids = ENC.encode(format_prompt(e) + format_response(r)) + [ENC.eot_token]
        alone = rm.score(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
        assert s.item() == pytest.approx(alone.item(), abs=1e-5)


def test_too_long_a_generation_is_an_error_that_says_so(tiny):
    with pytest.raises(ValueError, match="context_length"):
        evaluate_policy(tiny, MIXED, ENC, max_new_tokens=100)
    with pytest.raises(ValueError, match="baseline"):
        evaluate_policy(tiny, MIXED, ENC, baseline_responses=["x"])


# ------------------------------------------------------------------------ best-of-n ----
def test_analytic_kl_of_best_of_n_matches_the_exact_kl_of_a_fine_discrete_policy():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
    M = 100_000  # a policy uniform over M responses with distinct scores
    i = torch.arange(1, M + 1, dtype=torch.float64)
    for n in (2, 4, 16, 64):
        p = (i / M) ** n - ((i - 1) / M) ** n  # P(best of n is the i-th lowest)
        exact = (p * torch.log(p * M).nan_to_num(0.0)).sum().item()
        assert exact == pytest.approx(best_of_n_kl(n), abs=2e-3)
    with pytest.raises(ValueError):
        best_of_n_kl(0)


def test_expected_best_of_n_is_the_mean_over_all_subsets():
    torch.manual_seed(0)
    select, values = torch.randn(3, 6), torch.randn(3, 6)
    for n in range(1, 7):
        brute = torch.zeros(3, dtype=torch.float64)
        subsets = list(itertools.combinations(range(6), n))
        for s in subsets:
            cols = torch.tensor(s)
            pick = cols[select[:, cols].argmax(1)]
            brute += values[torch.arange(3), pick].double()
        brute /= len(subsets)
        assert torch.allclose(expected_best_of_n(select, values, n), brute, atol=1e-12)
    assert torch.allclose(expected_best_of_n(select, values, 1), values.double().mean(1))


def test_best_of_n_by_gold_is_never_below_best_of_n_by_the_reward_model(one_thread, tiny):
    torch.manual_seed(0)
    rm = ScalarModel(tiny).eval()
    nn.init.normal_(rm.head.weight)

    def run(score, n):
        g = torch.Generator().manual_seed(0)
        return best_of_n(tiny, rm, MIXED, ENC, n, g, score=score, max_new_tokens=5)

    by_rm, by_gold = run("rm", 4), run("gold", 4)
    assert by_rm["kl"] == by_gold["kl"] == pytest.approx(math.log(4) - 0.75)
    assert all(g >= r for g, r in zip(by_gold["ratings"], by_rm["ratings"]))
    g = torch.Generator().manual_seed(0)
    candidates = sample_candidates(tiny, MIXED, ENC, 4, g, max_new_tokens=5)
    scored = score_candidates(candidates, MIXED, ENC, rm)
    assert by_rm["rm_scores"] == pytest.approx(scored["rm"].max(1).values.tolist(), abs=1e-6)
    assert run("rm", 1)["responses"] == run("gold", 1)["responses"]
    with pytest.raises(ValueError, match="reward_model"):
        best_of_n(tiny, None, MIXED, ENC, 2, score="rm")
