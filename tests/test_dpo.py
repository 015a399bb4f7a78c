"""DPO and its variants: the loss values, the gradient's direction, training, bad input."""

import copy
import math

import pytest
import torch

from shared.dpo import (
    LOSS_TYPES,
    DPOConfig,
    dpo_loss,
    encode_preference_pairs,
    pair_logprobs,
    reference_logprobs,
    train_dpo,
)
from shared.gpt import GPTConfig, GPTModel
from shared.policy import pad_pairs, sequence_logprobs

torch.set_num_threads(1)
CFG = GPTConfig(vocab_size=12, context_length=16, emb_dim=16, n_heads=2, n_layers=2)
EOS = 0
PAIRS = [
    ([1, 2, 3], [4, 5, EOS], [6, EOS]),
    ([2, 3], [7, 7, 8, EOS], [9, 9, EOS]),
    ([3, 1, 4, 1], [5, EOS], [10, 11, 10, EOS]),
    ([5, 9], [2, 6, EOS], [3, 5, EOS]),
]


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return GPTModel(CFG).eval()


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_initial_dpo_loss_with_policy_equal_to_reference_is_ln2(reference):
    policy = copy.deepcopy(reference)
    ref = reference_logprobs(reference, PAIRS, batch_size=2)
    chosen, rejected, c_len, r_len = pair_logprobs(policy, PAIRS)
    loss, metrics = dpo_loss(chosen, rejected, *ref, c_len, r_len, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert metrics["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    history = train_dpo(
        policy, PAIRS, ref, DPOConfig(steps=1, lr=1e-3, batch_size=4, log_every=1), progress=False
    )
    assert history[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # measured before the step


def test_ipo_at_h_zero_is_the_squared_target():
    same = t(-3.0, -5.0)
    for beta in (0.1, 0.5, 1.0):
        loss, _ = dpo_loss(same, same, same, same, beta=beta, loss_type="ipo")
        assert loss.item() == pytest.approx((1 / (2 * beta)) ** 2)


def test_losses_on_hand_values():
    c, r, rc, rr = t(-4.0), t(-6.0), t(-5.0), t(-5.0)  # h = (−4+5) − (−6+5) = 2
    beta = 0.5
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    loss, m = dpo_loss(c, r, rc, rr, beta=beta)
    assert loss.item() == pytest.approx(-math.log(sig(beta * 2)))
    assert m["rewards/chosen"] == pytest.approx(0.5) and m["rewards/rejected"] == pytest.approx(
        -0.5
    )
    assert m["rewards/margins"] == pytest.approx(1.0) and m["rewards/accuracies"] == 1.0
    assert m["logps/chosen"] == -4.0 and m["logps/rejected"] == -6.0
    loss, _ = dpo_loss(c, r, rc, rr, beta=beta, loss_type="ipo")
    assert loss.item() == pytest.approx((2 - 1 / (2 * beta)) ** 2)
    lc, lr = torch.tensor([4]), torch.tensor([2])
    loss, _ = dpo_loss(c, r, rc, rr, lc, lr, beta=beta, loss_type="rdpo", rdpo_alpha=0.3)
    assert loss.item() == pytest.approx(-math.log(sig(beta * 2 + 0.3 * (4 - 2))))  # +α(|yw| − |yl|)
    loss, m = dpo_loss(c, r, None, None, lc, lr, beta=2.0, loss_type="simpo", simpo_gamma=0.5)
    assert loss.item() == pytest.approx(-math.log(sig(2.0 * (-4 / 4 - -6 / 2) - 0.5)))
    assert m["rewards/chosen"] == pytest.approx(2.0 * -1.0)  # β times the averaged log-prob
    loss, m = dpo_loss(c, r, None, None, lc, lr, beta=0.5, loss_type="orpo")
    odds = lambda avg: avg - math.log(1 - math.exp(avg))  # noqa: E731
    expected = 1.0 + 0.5 * -math.log(sig(odds(-1.0) - odds(-3.0)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert m["nll_loss"] == pytest.approx(1.0)


def test_dpo_gradient_raises_the_chosen_and_lowers_the_rejected_log_prob():
    chosen, rejected = t(-4.0, -2.0).requires_grad_(), t(-3.0, -6.0).requires_grad_()
    ref_c, ref_r = t(-4.0, -3.0), t(-3.5, -5.0)
    beta = 0.1
    loss, _ = dpo_loss(chosen, rejected, ref_c, ref_r, beta=beta)
    loss.backward()
    h = (chosen - ref_c) - (rejected - ref_r)
    weight = beta * torch.sigmoid(-beta * h.detach()) / 2  # the lecture's σ(r̂⁻ − r̂⁺), mean
    assert torch.allclose(chosen.grad, -weight) and torch.allclose(rejected.grad, weight)
    assert (chosen.grad < 0).all()  # descending the loss raises log π(y⁺)


def test_summed_and_averaged_log_probs(reference):
    chosen, rejected, c_len, r_len = pair_logprobs(reference, PAIRS)
    rows = [(p, c) for p, c, _ in PAIRS]
    avg = sequence_logprobs(reference, pad_pairs(rows, EOS), average=True)
    assert torch.allclose(avg * c_len, chosen, atol=1e-6)
    assert c_len.tolist() == [3, 4, 2, 3] and r_len.tolist() == [2, 3, 4, 3]
    # SimPO compares averages: the same pairs with a longer chosen side keep the same loss
    loss_a, _ = dpo_loss(t(-2.0), t(-3.0), None, None, t(2), t(3), beta=2.0, loss_type="simpo")
    loss_b, _ = dpo_loss(t(-4.0), t(-3.0), None, None, t(4), t(3), beta=2.0, loss_type="simpo")
    assert loss_a.item() == pytest.approx(loss_b.item())
    loss_c, _ = dpo_loss(t(-4.0), t(-3.0), t(0.0), t(0.0), beta=2.0)  # DPO's sums do change
    assert loss_c.item() != pytest.approx(loss_a.item())


@pytest.mark.parametrize("loss_type", ["dpo", "ipo", "simpo"])
def test_a_few_steps_separate_chosen_from_rejected(reference, loss_type):
    policy = copy.deepcopy(reference)
    ref = reference_logprobs(reference, PAIRS) if loss_type != "simpo" else None
    beta = {"dpo": 0.5, "ipo": 0.5, "simpo": 2.0}[loss_type]
    history = train_dpo(
        policy,
        PAIRS,
        ref,
        DPOConfig(steps=25, lr=3e-3, beta=beta, loss_type=loss_type, batch_size=4, log_every=5),
        progress=False,
    )
    assert history[-1]["rewards/margins"] > 0.45
    assert history[-1]["rewards/accuracies"] == 1.0
    assert history[-1]["loss"] < history[0]["loss"]
    if loss_type == "ipo":  # IPO regresses h to 1/(2β): the margin β·h settles at 1/2
        assert history[-1]["rewards/margins"] == pytest.approx(0.5, abs=0.05)
    chosen, _, _, _ = pair_logprobs(policy, PAIRS)
    before, _, _, _ = pair_logprobs(reference, PAIRS)
    assert (chosen > before).all()  # on this toy case the chosen responses became likelier


def test_training_is_deterministic_for_a_seed(reference):
    ref = reference_logprobs(reference, PAIRS)
    runs = []
    for _ in range(2):
        policy = copy.deepcopy(reference)
        runs.append(
            train_dpo(
                policy,
                PAIRS,
                ref,
                DPOConfig(steps=4, lr=1e-3, batch_size=2, seed=3, log_every=2, loss_type="rdpo"),
                progress=False,
            )
        )
    assert runs[0] == runs[1] and [r["step"] for r in runs[0]] == [2, 4]


def test_orpo_trains_without_a_reference(reference):
    policy = copy.deepcopy(reference)
    history = train_dpo(
        policy,
        PAIRS,
        None,
        DPOConfig(steps=3, lr=1e-3, loss_type="orpo", batch_size=2),
        progress=False,
    )
    assert {"nll_loss", "log_odds_ratio", "rewards/margins"} <= set(history[-1])


def test_bad_input_names_the_parameter(reference):
    ref = reference_logprobs(reference, PAIRS)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(t(-1.0), t(-2.0), t(-1.0), t(-2.0), loss_type="kto2")
    for beta in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="beta"):
            dpo_loss(t(-1.0), t(-2.0), t(-1.0), t(-2.0), beta=beta)
        with pytest.raises(ValueError, match="beta"):
            train_dpo(
                copy.deepcopy(reference), PAIRS, ref, DPOConfig(steps=1, beta=beta), progress=False
            )
    with pytest.raises(ValueError, match="chosen_logps"):
        dpo_loss(t(-1.0, -2.0), t(-2.0), t(-1.0), t(-2.0))
    with pytest.raises(ValueError, match="ref_chosen_logps"):
        dpo_loss(t(-1.0), t(-2.0))
    with pytest.raises(ValueError, match="chosen_lengths"):
        dpo_loss(t(-1.0), t(-2.0), loss_type="simpo")
    with pytest.raises(ValueError, match="ref_logps"):
        train_dpo(
            copy.deepcopy(reference),
            PAIRS[:3],
            ref,
            DPOConfig(steps=1, batch_size=2),
            progress=False,
        )
    with pytest.raises(ValueError, match="ref_logps"):
        train_dpo(
            copy.deepcopy(reference), PAIRS, None, DPOConfig(steps=1, batch_size=2), progress=False
        )
    with pytest.raises(ValueError, match="loss_type"):
        train_dpo(
            copy.deepcopy(reference),
            PAIRS,
            ref,
            DPOConfig(steps=1, loss_type="ppo"),
            progress=False,
        )
    with pytest.raises(ValueError, match="batch_size"):
        train_dpo(
            copy.deepcopy(reference), PAIRS, ref, DPOConfig(steps=1, batch_size=5), progress=False
        )
    with pytest.raises(ValueError, match=r"pairs\[1\].*context_length"):
        reference_logprobs(reference, [PAIRS[0], ([1] * 10, [2] * 7, [3])])
    with pytest.raises(ValueError, match=r"pairs\[0\] has an empty rejected"):
        pair_logprobs(reference, [([1], [2], [])])


class _Encoding:
    """Just enough of a tiktoken.Encoding: one id per character."""

    eot_token = 0

    def encode(self, text, allowed_special="all"):
        return [1 + ord(ch) % 11 for ch in text]


def test_encode_preference_pairs_adds_the_space_and_the_end_of_text():
    pairs = [{"prompt": "Q:", "chosen": "Yes.", "rejected": "no"}]
    [(prompt, chosen, rejected)] = encode_preference_pairs(pairs, _Encoding(), 16)
    assert len(prompt) == 2 and len(chosen) == len(" Yes.") + 1 and chosen[-1] == 0
    assert rejected[-1] == 0 and len(rejected) == 4
    with pytest.raises(ValueError, match="context_length"):
        encode_preference_pairs(pairs, _Encoding(), 6)


def test_loss_types_listed():
    assert set(LOSS_TYPES) == {"dpo", "ipo", "rdpo", "simpo", "orpo"}


def test_responses_are_encoded_exactly_as_sft_trained_on_them():
    """prompt ids + chosen ids == the ids of the same answer in SFT's InstructionDataset."""
    import json

    import shared
    from shared import bpe, prompts, sft

    enc = bpe.get_encoding()
    entries = json.loads((shared.DATA_DIR / "instructions" / "train.json").read_text("utf-8"))
    entries = entries[:40]
    pairs = [
        {"prompt": prompts.format_prompt(e), "chosen": e["output"], "rejected": e["answer"] + "?"}
        for e in entries
    ]
    encoded = encode_preference_pairs(pairs, enc, 128)
    dataset = sft.InstructionDataset(entries, enc)
    for (prompt, chosen, rejected), (ids, prompt_len), e in zip(encoded, dataset.items, entries):
        assert prompt + chosen == ids and len(prompt) == prompt_len
        assert enc.decode(chosen[:1]).startswith(" ")  # the leading space of format_response
        assert chosen[-1] == rejected[-1] == enc.eot_token
        assert enc.decode(chosen[:-1]) == prompts.format_response(e["output"])


def test_bad_pairs_are_named():
    good = {"prompt": "Q:", "chosen": "Yes.", "rejected": "no"}
    for bad, message in (
        ({"prompt": "Q:", "chosen": "Yes."}, r"pair 1 has no 'rejected' field"),
        ({"prompt": "Q:", "rejected": "no"}, r"pair 1 has no 'chosen' field"),
        ({"prompt": " ", "chosen": "a", "rejected": "no"}, r"pair 1 has an empty prompt"),
        ({"prompt": "Q:", "chosen": " ", "rejected": ""}, r"pair 1: chosen and rejected"),
        ({"prompt": "Q:", "chosen": None, "rejected": "no"}, r"pair 1: 'chosen' must be"),
        ({"prompt": "Q:", "chosen": "Yes.", "rejected": "Yes."}, r"pair 1: chosen and rejected"),
    ):
        with pytest.raises(ValueError, match=message):
            encode_preference_pairs([good, bad], _Encoding(), 16)
    # an empty response (the model stopped at once) is the end-of-text alone
    [(_, _, rejected)] = encode_preference_pairs([good | {"rejected": ""}], _Encoding(), 16)
    assert rejected == [0]
    with pytest.raises(TypeError, match="pair 0"):
        encode_preference_pairs(["Q: Yes. no"], _Encoding(), 16)
    with pytest.raises(ValueError, match=r"pairs\[1\] has the same chosen and rejected"):
        pair_logprobs(copy.deepcopy(GPTModel(CFG)), [PAIRS[0], ([1, 2], [3, EOS], [3, EOS])])


def test_a_non_finite_loss_stops_training_before_the_weights_change(reference):
    ref = reference_logprobs(reference, PAIRS)
    broken = (ref[0].clone(), ref[1].clone())
    broken[1][2] = float("nan")
    with pytest.raises(FloatingPointError, match=r"pairs\[2\]"):
        train_dpo(
            copy.deepcopy(reference),
            PAIRS,
            broken,
            DPOConfig(steps=2, batch_size=2),
            progress=False,
        )
    policy = copy.deepcopy(reference)
    with torch.no_grad():
        policy.out_head.weight[3, 0] = float("inf")  # every logit row that uses it breaks
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    with pytest.raises(FloatingPointError, match=r"loss is not finite at step 0"):
        train_dpo(policy, PAIRS, ref, DPOConfig(steps=3, lr=1e-3, batch_size=2), progress=False)
    after = policy.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no step was taken


def test_an_interrupted_run_resumes_to_the_same_result(reference, tmp_path, monkeypatch):
    import shared.dpo as dpo

    ref = reference_logprobs(reference, PAIRS)
    kwargs = dict(steps=6, lr=1e-3, batch_size=2, seed=1, log_every=2)
    whole = copy.deepcopy(reference)
    expected = train_dpo(whole, PAIRS, ref, DPOConfig(**kwargs), progress=False)

    state = tmp_path / "state.pt"
    calls = {"n": 0}
    real = dpo.pair_logprobs

    def interrupted(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(dpo, "pair_logprobs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_dpo(
            copy.deepcopy(reference),
            PAIRS,
            ref,
            DPOConfig(checkpoint_every=2, **kwargs),
            progress=False,
            checkpoint_path=state,
        )
    monkeypatch.setattr(dpo, "pair_logprobs", real)
    assert torch.load(state, weights_only=True)["step"] == 2
    resumed = copy.deepcopy(reference)
    history = train_dpo(
        resumed,
        PAIRS,
        ref,
        DPOConfig(checkpoint_every=2, **kwargs),
        progress=False,
        checkpoint_path=state,
    )
    assert history == expected
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="other settings"):
        train_dpo(
            copy.deepcopy(reference),
            PAIRS,
            ref,
            DPOConfig(**(kwargs | {"lr": 2e-3})),
            progress=False,
            checkpoint_path=state,
        )


def test_make_dpo_keeps_the_last_good_checkpoint_when_the_loss_is_not_finite(
    reference, tmp_path, monkeypatch
):
    import argparse
    import importlib.util

    import shared
    from shared.checkpoints import save_checkpoint

    script = shared.DATA_DIR / "scripts" / "dpo.py"
    spec = importlib.util.spec_from_file_location("make_dpo", script)
    make_dpo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_dpo)
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setattr(make_dpo, "CACHE", cache)
    path = tmp_path / "dpo.pt"
    save_checkpoint(path, reference, step=7)
    good = path.read_bytes()
    ref = reference_logprobs(reference, PAIRS)
    policy = copy.deepcopy(reference)
    with torch.no_grad():
        policy.out_head.weight[3, 0] = float("inf")
    settings = dict(loss_type="dpo", beta=0.1, lr=1e-3, steps=4, batch_size=2, warmup_steps=0)
    args = argparse.Namespace(seed=0, no_progress=True)
    with pytest.raises(FloatingPointError, match="not finite|nan"):
        make_dpo.train_and_release(
            "broken", policy, PAIRS, ref, settings, args, path, _Encoding(), {}
        )
    assert path.read_bytes() == good  # the last good checkpoint is untouched
    assert not list(cache.glob("*weights*"))  # nor is a broken result cached


def test_reference_logprobs_with_a_shared_prompt_equal_the_plain_forward(reference):
    pairs = PAIRS + [([1, 2, 3], [7, EOS], [8, 9, 10, 11, EOS]), ([2, 3], [4], [5])]
    chosen, rejected = reference_logprobs(reference, pairs, batch_size=2)
    c, r, _, _ = pair_logprobs(reference, pairs)
    assert torch.allclose(chosen, c.detach(), atol=1e-5)
    assert torch.allclose(rejected, r.detach(), atol=1e-5)


def test_rdpo_gives_a_longer_chosen_answer_a_smaller_gradient_weight():
    """The derived sign: R-DPO's reward carries +α|y|, so a pair whose chosen side is the
    longer one already has a larger margin and pushes less than plain DPO."""
    chosen, rejected = t(-5.0, -5.0), t(-6.0, -6.0)
    ref_c, ref_r = t(-5.0, -5.0), t(-6.0, -6.0)  # h = 0 for both pairs
    lengths_c, lengths_r = torch.tensor([8, 3]), torch.tensor([3, 8])  # chosen longer, shorter
    weights = {}
    for loss_type in ("dpo", "rdpo"):
        c = chosen.clone().requires_grad_(True)
        loss, _ = dpo_loss(c, rejected, ref_c, ref_r, lengths_c, lengths_r, beta=0.1,
                           loss_type=loss_type, rdpo_alpha=0.1)  # fmt: skip
        loss.backward()
        weights[loss_type] = -c.grad  # how hard each pair pushes its chosen side up
    assert weights["rdpo"][0] < weights["dpo"][0]  # chosen longer: less push
    assert weights["rdpo"][1] > weights["dpo"][1]  # chosen shorter: more push
