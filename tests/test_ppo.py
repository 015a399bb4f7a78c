"""PPO: GAE, whitening, the clipped losses, the rollout's rewards, and the trainer."""

import copy
import math

import pytest
import torch

from shared.gpt import GPTConfig, GPTModel
from shared.ppo import (
    PPOConfig,
    PPOTrainer,
    apply_missing_eos_penalty,
    compute_gae,
    masked_mean,
    masked_whiten,
    per_token_rewards,
    policy_loss,
    value_loss,
)
from shared.reward_model import ScalarModel

torch.set_num_threads(1)
CFG = GPTConfig(vocab_size=12, context_length=16, emb_dim=16, n_heads=2, n_layers=2)
EOS, TARGET = 0, 7
PROMPTS = [[1, 2, 3], [4, 5, 6], [2, 9, 8], [3, 3, 1], [5, 1], [6, 2], [8, 8, 4, 1], [9, 10, 2]]


def target_share(prompts, responses):
    """The toy reward: the share of response tokens that are TARGET."""
    return torch.tensor([sum(t == TARGET for t in r) / len(r) for r in responses])


def make_trainer(score_fn=target_share, prompts=PROMPTS * 2, **overrides):
    torch.manual_seed(0)
    policy = GPTModel(CFG)
    reference = copy.deepcopy(policy)
    critic = ScalarModel(policy)
    settings = {"eos_id": EOS, "lr": 3e-3, "rollout_batch_size": 16, "minibatch_size": 8}
    settings.update(max_new_tokens=4, missing_eos_penalty=None)
    settings.update(overrides)
    return PPOTrainer(policy, critic, reference, score_fn, prompts, PPOConfig(**settings))


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


# ------------------------------------------------------------------------------ GAE ----
def test_gae_on_a_hand_computed_case():
    rewards, values, mask = t([1.0, 0.0, 2.0]), t([0.5, 1.0, 0.2]), t([1, 1, 1])
    adv, ret = compute_gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # δ2 = 2 − 0.2 = 1.8;  δ1 = 0 + 0.9·0.2 − 1 = −0.82;  δ0 = 1 + 0.9·1 − 0.5 = 1.4
    a2 = 1.8
    a1 = -0.82 + 0.72 * a2
    a0 = 1.4 + 0.72 * a1
    assert adv[0].tolist() == pytest.approx([a0, a1, a2])
    assert ret[0].tolist() == pytest.approx([a0 + 0.5, a1 + 1.0, a2 + 0.2])


def test_gae_with_gamma_lambda_one_is_reward_to_go_minus_values():
    torch.manual_seed(0)
    rewards, values = torch.randn(3, 6), torch.randn(3, 6)
    adv, ret = compute_gae(rewards, values, torch.ones(3, 6), gamma=1.0, lam=1.0)
    to_go = rewards.flip(1).cumsum(1).flip(1)  # Σ_{k ≥ t} R_k
    assert torch.allclose(adv, to_go - values, atol=1e-5)
    assert torch.allclose(ret, to_go, atol=1e-5)
    adv0, _ = compute_gae(rewards, values, torch.ones(3, 6), gamma=0.9, lam=0.0)
    next_v = torch.cat([values[:, 1:], torch.zeros(3, 1)], 1)
    assert torch.allclose(adv0, rewards + 0.9 * next_v - values, atol=1e-6)  # λ = 0: δ_t


def test_gae_ignores_prompt_and_padding_positions():
    rewards, values = t([1.0, 0.0, 2.0]), t([0.5, 1.0, 0.2])
    alone, _ = compute_gae(rewards, values, t([1, 1, 1]), 0.9, 0.8)
    # the same response starting at column 2 of a wider row, with junk around it
    r = t([9.0, 9.0, 1.0, 0.0, 2.0, 9.0])
    v = t([7.0, 7.0, 0.5, 1.0, 0.2, 7.0])
    m = t([0, 0, 1, 1, 1, 0])
    adv, ret = compute_gae(r, v, m, 0.9, 0.8)
    assert adv[0, 2:5].tolist() == pytest.approx(alone[0].tolist())
    assert adv[0, [0, 1, 5]].tolist() == [0, 0, 0] and ret[0, [0, 1, 5]].tolist() == [0, 0, 0]


def test_masked_whiten_gives_mean_zero_std_one_on_the_mask():
    torch.manual_seed(0)
    x = torch.randn(4, 7) * 3 + 5
    mask = (torch.rand(4, 7) > 0.3).float()
    w = masked_whiten(x, mask)
    picked = w[mask.bool()]
    assert picked.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert picked.std().item() == pytest.approx(1.0, abs=1e-4)  # unbiased, as TRL
    assert (w[~mask.bool()] == 0).all()
    with pytest.raises(ValueError, match="mask"):
        masked_mean(x, torch.zeros_like(x))


# -------------------------------------------------------------------------- rewards ----
def test_score_lands_on_the_last_response_token_and_kl_everywhere():
    logp = t([0.0, -1.0, -2.0, -1.0, 0.0], [0.0, -1.0, -1.5, 0.0, 0.0])
    ref = t([0.0, -1.5, -1.0, -1.0, 0.0], [0.0, -2.0, -1.0, 0.0, 0.0])
    mask = t([0, 1, 1, 1, 0], [0, 1, 1, 0, 0])
    rewards, kl, non_score = per_token_rewards(logp, ref, t(2.0, -1.0), mask, kl_coef=0.1)
    assert torch.allclose(kl, t([0, 0.5, -1.0, 0, 0], [0, 1.0, -0.5, 0, 0]))
    assert torch.allclose(non_score, t([0, -0.05, 0.1, 0, 0], [0, -0.1, 0.05, 0, 0]))
    assert torch.allclose(rewards, t([0, -0.05, 0.1, 2.0, 0], [0, -0.1, -0.95, 0, 0]))


def test_missing_eos_penalty_is_added_or_replaces_the_score():
    scores, has_eos = t(2.0, 3.0, -1.0), torch.tensor([True, False, False])
    assert apply_missing_eos_penalty(scores, has_eos, -1.0).tolist() == [2.0, 2.0, -2.0]
    assert apply_missing_eos_penalty(scores, has_eos, -5.0, replace=True).tolist() == [2, -5, -5]
    assert apply_missing_eos_penalty(scores, has_eos, None).tolist() == [2.0, 3.0, -1.0]


# -------------------------------------------------------------------- clipped losses ----
@pytest.mark.parametrize(
    ("ratio", "advantage", "expected", "clipped"),
    [
        (1.5, 1.0, -1.2, True),  # A > 0: no credit beyond 1 + ε
        (1.5, -1.0, 1.5, False),  # A < 0 and ρ up: the full (pessimistic) penalty
        (0.5, 1.0, -0.5, False),  # A > 0 and ρ down: the full penalty
        (0.5, -1.0, 0.8, True),  # A < 0: no credit below 1 − ε
        (1.1, 1.0, -1.1, False),  # inside the clip range: the plain ρA
    ],
)
def test_policy_loss_on_hand_cases(ratio, advantage, expected, clipped):
    new = torch.tensor([[math.log(ratio)]], requires_grad=True)
    loss, stats = policy_loss(new, t([0.0]), t([advantage]), t([1.0]), cliprange=0.2)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats["clipfrac"].item() == float(clipped)
    assert stats["ratio"].item() == pytest.approx(ratio)
    assert stats["approxkl"].item() == pytest.approx(0.5 * math.log(ratio) ** 2)
    loss.backward()
    assert (new.grad.item() == 0.0) == clipped  # a clipped token gives no gradient


def test_value_loss_takes_the_larger_of_clipped_and_unclipped_errors():
    # V_old = 0, V = 1, G = 2, ε_v = 0.2: clipped V = 0.2, errors 1 and 3.24
    loss, clipfrac = value_loss(t([1.0]), t([0.0]), t([2.0]), t([1.0]), cliprange_value=0.2)
    assert loss.item() == pytest.approx(0.5 * 3.24) and clipfrac.item() == 1.0
    loss, clipfrac = value_loss(t([0.1]), t([0.0]), t([2.0]), t([1.0]), cliprange_value=0.2)
    assert loss.item() == pytest.approx(0.5 * 1.9**2) and clipfrac.item() == 0.0
    # V moved past G: the unclipped error is the larger one
    loss, _ = value_loss(t([3.0]), t([2.5]), t([2.0]), t([1.0]), cliprange_value=0.2)
    assert loss.item() == pytest.approx(0.5 * 1.0)


# -------------------------------------------------------------------------- trainer ----
def test_ratio_is_one_on_the_first_minibatch_and_the_trainer_checks_it():
    trainer = make_trainer()
    metrics = trainer.step()
    assert metrics["val/ratio_first"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["objective/kl"] == pytest.approx(0.0, abs=1e-5)  # first rollout: π = π_ref
    expected = {
        "objective/kl", "objective/entropy", "objective/non_score_reward",
        "objective/rlhf_reward", "objective/scores", "policy/approxkl_avg",
        "policy/clipfrac_avg", "loss/policy_avg", "loss/value_avg", "val/ratio",
        "val/num_eos_tokens", "val/ratio_first",
    }  # fmt: skip
    assert expected <= set(metrics)
    rollout = trainer.rollout()
    rollout.logprobs = rollout.logprobs - 0.1 * rollout.mask  # pretend π_old was different
    with pytest.raises(RuntimeError, match="ratio"):
        trainer.update(rollout)


def test_rewarding_a_token_raises_its_probability_with_bounded_kl():
    trainer = make_trainer()
    policy = trainer.policy

    def p_target() -> float:
        with torch.no_grad():
            return sum(
                torch.softmax(policy(torch.tensor([p]))[0, -1], -1)[TARGET].item() for p in PROMPTS
            ) / len(PROMPTS)

    before = p_target()
    history = trainer.train(5, progress=False)
    assert p_target() > 2 * before
    assert history[-1]["objective/scores"] > history[0]["objective/scores"]
    assert all(h["objective/kl"] < 2.0 for h in history)  # nats per response of ≤ 4 tokens


def test_missing_eos_penalty_in_the_rollout():
    constant = lambda prompts, responses: torch.ones(len(responses))  # noqa: E731
    trainer = make_trainer(score_fn=constant, missing_eos_penalty=-1.0, max_new_tokens=3)
    r = trainer.rollout()
    assert r.has_eos.any() and (~r.has_eos).any()  # both kinds in this batch
    assert r.has_eos.tolist() == [resp[-1] == EOS for resp in r.responses]
    assert r.scores.tolist() == [1.0 if e else 0.0 for e in r.has_eos.tolist()]
    last = r.mask.shape[1] - 1 - r.mask.flip(1).argmax(1)  # last response column per row
    at_last = r.rewards.gather(1, last[:, None]).squeeze(1)
    assert torch.allclose(
        at_last - r.non_score_reward.gather(1, last[:, None]).squeeze(1), r.scores
    )
    trainer = make_trainer(
        score_fn=constant, missing_eos_penalty=-3.0, missing_eos_replaces_score=True,
        max_new_tokens=3,
    )  # fmt: skip
    r = trainer.rollout()
    assert r.scores.tolist() == [1.0 if e else -3.0 for e in r.has_eos.tolist()]


def test_same_seed_same_run_and_resume_continues_exactly():
    a, b = make_trainer(seed=5), make_trainer(seed=5)
    assert a.train(2, progress=False) == b.train(2, progress=False)
    c = make_trainer(seed=5)
    c.step()
    state = copy.deepcopy(c.state_dict())
    d = make_trainer(seed=5)  # fresh weights, as a new process would have
    d.load_state_dict(state)
    assert d.step() == a.history[1]
    for p, q in zip(a.policy.parameters(), d.policy.parameters()):
        assert torch.equal(p, q)
    assert len(d.history) == 2
    other = make_trainer(seed=5, kl_coef=0.2)
    with pytest.raises(ValueError, match="kl_coef"):
        other.load_state_dict(state)


def test_bad_settings_name_the_parameter():
    with pytest.raises(ValueError, match="cliprange"):
        PPOConfig(eos_id=0, cliprange=0.0)
    with pytest.raises(ValueError, match="lam"):
        PPOConfig(eos_id=0, lam=1.5)
    with pytest.raises(ValueError, match="minibatch_size"):
        PPOConfig(eos_id=0, rollout_batch_size=10, minibatch_size=4)
    with pytest.raises(ValueError, match="missing_eos_penalty"):
        PPOConfig(eos_id=0, missing_eos_penalty=float("nan"))
    with pytest.raises(ValueError, match=r"prompts\[1\].*context_length"):
        make_trainer(prompts=[[1, 2], [1] * 13] * 8)
    with pytest.raises(ValueError, match="rollout_batch_size"):
        make_trainer(prompts=PROMPTS)
    bad_shape = lambda prompts, responses: torch.zeros(len(responses), 2)  # noqa: E731
    with pytest.raises(ValueError, match="score_fn"):
        make_trainer(score_fn=bad_shape).step()
    trainer = make_trainer()
    with pytest.raises(ValueError, match="reference"):
        PPOTrainer(
            trainer.policy, trainer.critic, trainer.policy, target_share, PROMPTS * 2,
            trainer.config,
        )  # fmt: skip
