"""Alignment code on bad input (judge parsing, preference pairs, reward model, DPO, PPO,
policy log-probs): a clear error that names the argument, or the right answer, never a
silently wrong number."""

from __future__ import annotations

import copy

import pytest
import torch

from shared import bpe, dpo, policy, ppo
from shared import judge_data as jd
from shared import preference_data as pdata
from shared import reward_model as rmod
from shared.gpt import GPTConfig, GPTModel
from shared.prompts import PHI3_SPECIALS, extend_encoding, format_prompt

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = GPTConfig(vocab_size=12, context_length=16, emb_dim=16, n_heads=2, n_layers=1)
NAN, INF = float("nan"), float("inf")
PAIR = {
    "prompt": "Q:",
    "chosen": "Yes.",
    "rejected": "no",
    "kind": "town",
    "pair_type": "fact",
    "split": "train",
}
ENTRY = {
    "instruction": "Where does Nabo live?",
    "input": "",
    "full": "Nabo lives in Corton.",
    "answer": "Corton",
    "kind": "town",
}


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPTModel(CFG).eval()


class _Encoding:
    """Just enough of a tiktoken.Encoding: one id per character, no special tokens."""

    eot_token = 0
    special_tokens_set = {"<|endoftext|>"}

    def encode(self, text, allowed_special="all"):
        return [1 + ord(ch) % 11 for ch in text]


# --------------------------------------------------------------------- judge parsing ----
@pytest.mark.parametrize(
    "text",
    [
        "Total rating: 4.5",  # fractional
        "Total rating: 5/10",  # another scale
        "Total rating: 3 out of 10",
        "Evaluation: fine.\n\nTotal rating: 5 / 10",
        "Total rating: -3",
        "-3",  # a negative number is not a rating of 3
        "[[-3]]",
        "Total rating: 3-4",  # a range is not one rating
        "Total rating: 2\nTotal rating: 4.5",  # the last one counts, and it is no rating
    ],
)
def test_parse_rating_fails_on_out_of_scale_and_fractional_answers(text):
    assert jd.parse_rating(text) is None


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("Total rating: 4", 4),
        ("Total rating: 4.", 4),
        ("Total rating: 4.0", 4),
        ("Total rating: 4/5", 4),
        ("Total rating: 4 / 5", 4),
        ("Total rating: 4 out of 5", 4),
        ("**Total Rating:** 3", 3),
        ("The reference says 3. The response says 3: right.\n\nTotal rating: 5", 5),
        ("[[4]]", 4),
        ("Rating: [[2]]", 2),
        ("4", 4),
        (" 3.", 3),
        ("Rating 4.", 4),
        ("Total rating: 5 - excellent", 5),
    ],
)
def test_parse_rating_keeps_the_project_formats(text, want):
    """A guard, not a fix: what parsed before still parses the same."""
    assert jd.parse_rating(text) == want


@pytest.mark.parametrize("text", ["-5", "-85", "-7 points", "score: -20", "-100"])
def test_parse_score_refuses_negative_and_fractional_scores(text):
    assert jd.parse_score(text) is None


@pytest.mark.parametrize(
    ("text", "want"), [("85", 85), ("0", 0), (" 100.", 100), ("I'd rate it an 85 out of", 85)]
)
def test_parse_score_keeps_integer_answers(text, want):
    """A guard, not a fix: what parsed before still parses the same."""
    assert jd.parse_score(text) == want


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: jd.rubric_prompt(ENTRY, None), "response must be a str"),
        (lambda: jd.score_prompt(ENTRY, 3), "response must be a str"),
        (lambda: jd.pairwise_prompt(ENTRY, "a", None), "b must be a str"),
        (lambda: jd.judge_example("Judge this.", None), "target must be a str"),
        (lambda: jd.make_rating_items([], None, per_entry=0), "per_entry must be an int >= 1"),
        (lambda: jd.make_pairwise_items([], None, per_entry=-1), "per_entry must be an int >= 1"),
        (lambda: jd.make_pairwise_items([], None, per_entry=1.5), "per_entry must be an int"),
        (lambda: jd.quadratic_weighted_kappa([True, 2], [1, 2]), "rating True"),
    ],
)
def test_judge_helpers_refuse_wrong_types(call, message):
    with pytest.raises((TypeError, ValueError), match=message):
        call()


# ------------------------------------------------------------------ preference pairs ----
@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"chosen": ""}, ["pair 1", "empty 'chosen'"]),
        ({"chosen": "  "}, ["pair 1", "empty 'chosen'"]),
        ({"prompt": ""}, ["pair 1", "empty 'prompt'"]),
        ({"prompt": "\n"}, ["pair 1", "empty 'prompt'"]),
        ({"split": ""}, ["pair 1", "empty 'split'"]),
        ({"chosen": "no ", "rejected": "no"}, ["pair 1", "the same text"]),
    ],
)
def test_check_pairs_refuses_empty_and_identical_fields(change, words):
    with pytest.raises(ValueError) as info:
        pdata.check_pairs([PAIR, PAIR | change])
    for w in words:
        assert w in str(info.value)


def test_check_pairs_accepts_an_empty_rejected_response():
    """A guard, not a fix: sampled pairs may have an empty rejected side."""
    pdata.check_pairs([PAIR | {"rejected": ""}])  # a model that stopped at once


def test_sampled_pairs_refuse_a_string_or_no_samples():
    world = None
    entry = {**ENTRY, "split": "train", "people": ["Nabo"]}
    with pytest.raises(TypeError, match=r"samples\[0\] must be a list of responses"):
        pdata.sampled_pairs([entry], ["Nabo lives in Corton."], world)
    with pytest.raises(ValueError, match=r"samples\[0\] is empty"):
        pdata.sampled_pairs([entry], [[]], world)


# ---------------------------------------------------------------------- reward model ----
@pytest.mark.parametrize(
    "change", [{"rejected": "Yes."}, {"rejected": " Yes. "}, {"chosen": "", "rejected": " "}]
)
def test_encode_pairs_refuses_identical_sides_like_the_dpo_encoder(change):
    bad = PAIR | change
    with pytest.raises(ValueError, match="chosen and rejected are the same text") as mine:
        rmod.encode_pairs([PAIR, bad], _Encoding(), 16)
    with pytest.raises(ValueError) as theirs:
        dpo.encode_preference_pairs([PAIR, bad], _Encoding(), 16)
    assert str(mine.value) == str(theirs.value)


@pytest.mark.parametrize(
    ("pairs", "kwargs", "error", "message"),
    [
        ("Q: yes no", {}, TypeError, "pairs must be a list of dicts"),
        (["Q: yes no"], {}, TypeError, "pair 0 must be a dict"),
        ([{"prompt": "Q:", "chosen": "a"}], {}, ValueError, "pair 0 has no 'rejected'"),
        ([PAIR | {"chosen": None}], {}, ValueError, "pair 0: 'chosen' must be a string"),
        ([PAIR | {"prompt": " "}], {}, ValueError, "pair 0 has an empty prompt"),
        ([PAIR], {"max_length": 0}, ValueError, "max_length must be an int >= 1"),
        ([PAIR], {"max_length": 16.0}, TypeError, "max_length must be an int"),
    ],
)
def test_encode_pairs_names_bad_pairs(pairs, kwargs, error, message):
    kwargs = {"max_length": 16, **kwargs}
    with pytest.raises(error, match=message):
        rmod.encode_pairs(pairs, _Encoding(), **kwargs)


@pytest.mark.parametrize(
    ("chosen", "rejected", "kwargs", "error", "message"),
    [
        (t(), t(), {}, ValueError, "empty"),
        (t(1.0, NAN), t(0.0, 0.0), {}, FloatingPointError, r"chosen.*not finite.*\[1\]"),
        (t(1.0, 0.0), t(INF, 0.0), {}, FloatingPointError, r"rejected.*not finite.*\[0\]"),
        (t(1.0), t(0.0), {"margin": NAN}, ValueError, "margin must be a finite number"),
        (t(1.0), t(0.0), {"margin": t(NAN)}, FloatingPointError, "margin.*not finite"),
        (t(1.0, 2.0), t(0.0, 0.0), {"margin": t(1.0, 1.0, 1.0)}, ValueError, "margin"),
        (t(1.0), t(0.0), {"centring": NAN}, ValueError, "centring must be a finite number"),
        ([1.0], [0.0], {}, TypeError, "chosen must be a tensor"),
    ],
)
def test_bradley_terry_loss_refuses_what_would_give_nan(chosen, rejected, kwargs, error, message):
    with pytest.raises(error, match=message):
        rmod.bradley_terry_loss(chosen, rejected, **kwargs)


def test_align_left_and_score_pairs_refuse_mismatches(model):
    with pytest.raises(ValueError, match="attention_mask has shape"):
        rmod.align_left(torch.ones(1, 3, dtype=torch.long), torch.tensor([[0, 1, 1, 1]]))
    rm = rmod.ScalarModel(model)
    with pytest.raises(ValueError, match="encoded must be a non-empty list"):
        rmod.score_pairs(rm, [], pad_id=0)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        rmod.score_pairs(rm, [([1, 2], [1, 3])], pad_id=0, batch_size=0)


# ------------------------------------------------------------------------------- DPO ----
@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((t(), t(), t(), t()), {}, ValueError, "empty"),
        ((t(NAN), t(-2.0), t(-1.0), t(-2.0)), {}, FloatingPointError, "chosen_logps"),
        ((t(-1.0), t(-2.0), t(-1.0), t(-INF)), {}, FloatingPointError, "ref_rejected_logps"),
        ((t(-1.0), t(-2.0), t(NAN), t(-2.0)), {"loss_type": "ipo"}, FloatingPointError, "ref_"),
        ((t(0.5), t(-2.0), None, None, t(2), t(2)), {"loss_type": "orpo"}, ValueError, "<= 0"),
        ((t(-1.0), t(0.5), None, None, t(2), t(2)), {"loss_type": "orpo"}, ValueError, "<= 0"),
        ((t(0.5), t(-2.0), t(-1.0), t(-2.0)), {}, ValueError, r"chosen_logps.*<= 0"),
        ((t(-1), t(-2), None, None, t(NAN), t(2)), {"loss_type": "simpo"}, ValueError, "length"),
        (([-1.0], t(-2.0), t(-1.0), t(-2.0)), {}, TypeError, "chosen_logps must be a tensor"),
    ],
)
def test_dpo_loss_refuses_what_would_give_nan(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        dpo.dpo_loss(*args, **kwargs)


def test_orpo_with_log_probs_at_zero_is_an_error_not_nan():
    zero, length = t(0.0), t(2)
    with pytest.raises(FloatingPointError, match="orpo"):
        dpo.dpo_loss(zero, zero, None, None, length, length, loss_type="orpo")


def test_phi3_template_needs_the_extended_encoding():
    enc = bpe.get_encoding()
    entry = {"instruction": "Where does Nabo live?", "input": ""}
    pair = {"prompt": format_prompt(entry, "phi3"), "chosen": "In Corton.", "rejected": "No."}
    with pytest.raises(ValueError, match="extend_encoding"):
        dpo.encode_preference_pairs([pair], enc, 128, template="phi3")
    with pytest.raises(ValueError, match="extend_encoding"):  # a Phi-3 prompt, the plain encoding
        dpo.encode_preference_pairs([pair], enc, 128)
    with pytest.raises(ValueError, match="extend_encoding"):
        rmod.encode_pairs([pair], enc, 128)
    extended = extend_encoding(enc, PHI3_SPECIALS)
    [(prompt, chosen, _)] = dpo.encode_preference_pairs([pair], extended, 128, template="phi3")
    end = extended.encode_single_token("<|end|>")
    assert chosen[-2:] == [end, extended.eot_token]
    assert extended.encode_single_token("<|assistant|>") in prompt


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"context_length": None}, TypeError, "context_length must be an int"),
        ({"context_length": 0}, ValueError, "context_length must be an int >= 1"),
    ],
)
def test_encode_preference_pairs_checks_its_arguments(kwargs, error, message):
    kwargs = {"context_length": 16, **kwargs}
    with pytest.raises(error, match=message):
        dpo.encode_preference_pairs([PAIR], _Encoding(), **kwargs)


def test_reference_logprobs_checks_pad_id(model):
    with pytest.raises(ValueError, match="pad_id must be an int >= 0"):
        dpo.reference_logprobs(model, [([1, 2], [3, 0], [4, 0])], pad_id=-1)


# ------------------------------------------------------------------------------- PPO ----
B, L = 2, 4
MASK = t([0, 1, 1, 0], [1, 1, 1, 1])
R, V = torch.randn(B, L, generator=torch.Generator().manual_seed(0)), torch.zeros(B, L)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((R, V, MASK, NAN, 0.95), ValueError, "gamma must be a finite number"),
        ((R, V, MASK, 1.0, INF), ValueError, "lam must be a finite number"),
        ((R, V, MASK, 1.5, 0.95), ValueError, "gamma"),
        ((R, V, MASK, "1", 0.95), TypeError, "gamma must be a number"),
        ((R, V, t([1, 0, 1, 0], [1, 1, 1, 1]), 1.0, 0.95), ValueError, r"row\(s\) \[0\]"),
        ((R, V, t([1, 1, 0.5, 0], [1, 1, 1, 1]), 1.0, 0.95), ValueError, "0 or 1"),
        ((R.masked_fill(MASK == 1, NAN), V, MASK, 1.0, 0.95), FloatingPointError, "rewards"),
        ((R, V + INF, MASK, 1.0, 0.95), FloatingPointError, "values"),
    ],
)
def test_compute_gae_refuses_bad_input(args, error, message):
    with pytest.raises(error, match=message):
        ppo.compute_gae(*args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((t([-1.0] * L), torch.zeros(B, L), t(1.0, 2.0), MASK, 0.1), "logprobs"),
        ((torch.zeros(B, L), torch.zeros(B, L), t(1.0), MASK, 0.1), "scores"),
        ((torch.zeros(B, L), torch.zeros(B, L), t(1.0, 2.0), MASK[:1], 0.1), "mask"),
        ((torch.zeros(B, L), torch.zeros(B, L), t(1.0, 2.0), MASK, NAN), "kl_coef"),
        ((torch.zeros(B, L), torch.zeros(B, L), t(1.0, NAN), MASK, 0.1), "scores"),
    ],
)
def test_per_token_rewards_refuses_mismatched_shapes(args, message):
    with pytest.raises((ValueError, FloatingPointError), match=message):
        ppo.per_token_rewards(*args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((torch.zeros(B, L), torch.zeros(B, 1), torch.zeros(B, L), MASK, 0.2), "old_values"),
        ((torch.zeros(B, L), torch.zeros(B, L), torch.zeros(L), MASK, 0.2), "returns"),
        ((torch.zeros(B, L), torch.zeros(B, L), torch.zeros(B, L), MASK, -0.2), "cliprange_value"),
        ((torch.zeros(B, L), torch.zeros(B, L), torch.full((B, L), NAN), MASK, 0.2), "returns"),
    ],
)
def test_value_loss_refuses_bad_input(args, message):
    with pytest.raises((ValueError, FloatingPointError), match=message):
        ppo.value_loss(*args)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((t(1.0, 2.0), torch.tensor([True]), -1.0), ValueError, "has_eos"),
        ((t(1.0, 2.0), torch.tensor([[True, False]]), -1.0), ValueError, "has_eos"),
        ((t(1.0, 2.0), torch.tensor([True, False]), NAN), ValueError, "penalty"),
        ((t(1.0, 2.0), torch.tensor([True, False]), "-1"), TypeError, "penalty"),
        ((t(1.0, NAN), torch.tensor([True, False]), -1.0), FloatingPointError, "scores"),
    ],
)
def test_apply_missing_eos_penalty_refuses_bad_input(args, error, message):
    with pytest.raises(error, match=message):
        ppo.apply_missing_eos_penalty(*args)


@pytest.mark.parametrize(
    ("cliprange", "error"),
    [(-1, ValueError), (0.0, ValueError), (NAN, ValueError), ("0.2", TypeError)],
)
def test_policy_loss_refuses_a_bad_cliprange(cliprange, error):
    new, old, adv = torch.zeros(B, L), torch.zeros(B, L), torch.ones(B, L)
    with pytest.raises(error, match="cliprange"):
        ppo.policy_loss(new, old, adv, MASK, cliprange)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((torch.zeros(B, L), torch.zeros(B, 1), torch.ones(B, L), MASK, 0.2), "old_logprobs"),
        ((torch.zeros(B, L), torch.zeros(B, L), torch.ones(1, L), MASK, 0.2), "advantages"),
        ((torch.zeros(B, L), torch.zeros(B, L), torch.ones(B, L), MASK[:, :2], 0.2), "mask"),
        ((torch.full((B, L), NAN), torch.zeros(B, L), torch.ones(B, L), MASK, 0.2), "new_logprobs"),
    ],
)
def test_policy_loss_refuses_mismatched_shapes(args, message):
    with pytest.raises((ValueError, FloatingPointError), match=message):
        ppo.policy_loss(*args)


def test_masked_mean_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="mask"):
        ppo.masked_mean(torch.ones(B, 1), MASK)
    with pytest.raises(ValueError, match="mask"):
        ppo.masked_whiten(torch.ones(B, L), MASK[0])


def test_trainer_train_uses_the_shared_int_check():
    torch.manual_seed(0)
    actor = GPTModel(CFG)
    trainer = ppo.PPOTrainer(
        actor, rmod.ScalarModel(actor), copy.deepcopy(actor), lambda p, r: torch.zeros(len(r)),
        [[1, 2]] * 2, ppo.PPOConfig(eos_id=0, rollout_batch_size=2, minibatch_size=2, max_new_tokens=2),
    )  # fmt: skip
    with pytest.raises(ValueError, match="n_steps must be an int >= 0"):
        trainer.train(-1, progress=False)
    with pytest.raises(TypeError, match="n_steps must be an int"):
        trainer.train(True, progress=False)


# ---------------------------------------------------------------------------- policy ----
def test_averaged_log_probs_of_a_row_without_response_tokens_are_an_error(model):
    batch = policy.pad_pairs([([1, 2], [3, 0]), ([4], [5])], pad_id=0)
    empty = policy.SequenceBatch(
        batch.input_ids,
        batch.attention_mask,
        batch.response_mask * torch.tensor([[1], [0]]),
        batch.prompt_lengths,
        batch.response_lengths * torch.tensor([1, 0]),
    )
    with pytest.raises(ValueError, match=r"rows \[1\] have no response token"):
        policy.sequence_logprobs(model, empty, average=True)
    with pytest.raises(TypeError, match="batch must be a SequenceBatch"):
        policy.sequence_logprobs(model, (batch.input_ids, batch.response_mask))
    avg = policy.sequence_logprobs(model, batch, average=True)
    total = policy.sequence_logprobs(model, batch)
    assert torch.equal(avg, total / batch.response_lengths)


def test_log_probs_and_kl_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="targets"):
        policy.logprobs_from_logits(torch.zeros(1, 4, 12), torch.zeros(1, 3, dtype=torch.long))
    for kl in (policy.kl_k1, policy.kl_k2, policy.kl_k3):
        with pytest.raises(ValueError, match="ref_logp"):
            kl(torch.zeros(2, 3), torch.zeros(2, 1))


@pytest.mark.parametrize(
    ("seqs", "pad_id", "error", "message"),
    [
        ([], 0, ValueError, "seqs must be a non-empty list"),
        ([[1.5, 2]], 0, TypeError, r"seqs\[0\]"),
        ([[1, 2]], -1, ValueError, "pad_id must be an int >= 0"),
    ],
)
def test_pad_right_checks_its_input(seqs, pad_id, error, message):
    with pytest.raises(error, match=message):
        policy.pad_right(seqs, pad_id)


def test_log_probs_of_a_response_without_a_prompt_are_an_error(model):
    batch = policy.pad_pairs([([1, 2], [3, 0]), ([4], [5])], pad_id=0)
    response_mask = batch.response_mask.clone()
    response_mask[1, 0] = 1  # row 1: the whole sequence is response, its first token unscored
    no_prompt = policy.SequenceBatch(
        batch.input_ids,
        batch.attention_mask,
        response_mask,
        torch.tensor([2, 0]),
        torch.tensor([2, 2]),
    )
    with pytest.raises(ValueError, match=r"rows \[1\] have no prompt token"):
        policy.sequence_logprobs(model, no_prompt)
