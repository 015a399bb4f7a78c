"""The scalar head: scores at the last real token, the Bradley-Terry loss."""

import math

import pytest
import torch

from shared.gpt import GPTConfig, GPTModel
from shared.reward_model import ScalarModel, bradley_terry_loss, final_hidden, last_token_index

torch.set_num_threads(1)
CFG = GPTConfig(vocab_size=50, context_length=16, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)


@pytest.fixture
def rm():
    torch.manual_seed(0)
    model = ScalarModel(GPTModel(CFG))
    torch.nn.init.normal_(model.head.weight)
    return model.eval()


def test_final_hidden_then_head_gives_the_logits():
    torch.manual_seed(0)
    gpt = GPTModel(CFG).eval()
    idx = torch.randint(0, 50, (2, 7))
    assert torch.allclose(gpt.out_head(final_hidden(gpt, idx)), gpt(idx), atol=1e-6)


def test_backbone_is_a_copy_and_head_starts_at_zero():
    gpt = GPTModel(CFG)
    model = ScalarModel(gpt)
    assert model.backbone is not gpt
    assert torch.equal(model(torch.randint(0, 50, (2, 5))), torch.zeros(2, 5))
    model.backbone.tok_emb.weight.data.zero_()
    assert gpt.tok_emb.weight.abs().sum() > 0


@pytest.mark.parametrize(
    ("mask", "expected"),
    [([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], [2, 4]), ([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]], [4, 4])],
)
def test_last_token_index_right_and_left_padding(mask, expected):
    assert last_token_index(torch.tensor(mask)).tolist() == expected


def test_score_with_right_padding_equals_the_unpadded_score(rm):
    a, b = [3, 4, 5], [6, 7, 8, 9, 10]
    alone = [rm.score(torch.tensor([s]), torch.ones(1, len(s))).item() for s in (a, b)]
    idx = torch.tensor([a + [0, 0], b])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1] * 5])
    assert rm.score(idx, mask).tolist() == pytest.approx(alone, abs=1e-5)


def test_score_is_identical_under_left_and_right_padding(rm):
    a, b = [3, 4, 5], [6, 7, 8, 9, 10]
    right = rm.score(torch.tensor([a + [0, 0], b]), torch.tensor([[1, 1, 1, 0, 0], [1] * 5]))
    left = rm.score(torch.tensor([[0, 0] + a, b]), torch.tensor([[0, 0, 1, 1, 1], [1] * 5]))
    assert torch.equal(left, right)
    with pytest.raises(ValueError, match="one run of real tokens"):
        rm.score(torch.tensor([[1, 0, 2, 0]]), torch.tensor([[1, 0, 1, 0]]))


def test_bad_masks_are_refused(rm):
    with pytest.raises(ValueError, match="no real token"):
        rm.score(torch.tensor([[1, 2]]), torch.tensor([[0, 0]]))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        rm.score(torch.tensor([[1, 2]]), torch.tensor([[1, 1, 1]]))
    with pytest.raises(TypeError, match="GPTModel"):
        ScalarModel(torch.nn.Linear(2, 2))


def test_bradley_terry_loss():
    zero = torch.zeros(4)
    assert bradley_terry_loss(zero, zero).item() == pytest.approx(math.log(2))
    chosen, rejected = torch.tensor([2.0]), torch.tensor([0.5])
    expected = -math.log(1 / (1 + math.exp(-1.5)))
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(expected)
    assert bradley_terry_loss(chosen + 10, rejected + 10).item() == pytest.approx(expected)
    with_margin = -math.log(1 / (1 + math.exp(-0.5)))
    assert bradley_terry_loss(chosen, rejected, margin=1.0).item() == pytest.approx(with_margin)
    centred = bradley_terry_loss(chosen, rejected, centring=0.1).item()
    assert centred == pytest.approx(expected + 0.1 * 2.5**2)
    with pytest.raises(ValueError, match="same shape"):
        bradley_terry_loss(torch.zeros(2), torch.zeros(3))


def _toy_pairs(n=32):
    """Chosen responses end in token 7, rejected ones in token 9."""
    g = torch.Generator().manual_seed(1)
    pairs = []
    for _ in range(n):
        prompt = torch.randint(10, 50, (4,), generator=g).tolist()
        pairs.append((prompt + [7, 1], prompt + [9, 1]))
    return pairs


def test_training_ranks_toy_pairs_and_resumes_identically(tmp_path):
    from shared.reward_model import RewardConfig, score_pairs, train_reward_model

    pairs = _toy_pairs()
    torch.manual_seed(0)
    base = GPTModel(CFG)
    c, r = score_pairs(ScalarModel(base), pairs, pad_id=0)
    assert (c > r).float().mean() == 0  # all scores are 0 before training
    config = RewardConfig(steps=30, pad_id=0, lr=3e-3, batch_size=8, seed=3, eval_every=10)
    full = ScalarModel(base)
    history = train_reward_model(full, pairs, config, evaluate_on=pairs, progress=False)
    assert history["steps"] == [10, 20, 30]
    assert history["eval_accuracy"][-1] == 1.0 and history["eval_margin"][-1] > 0
    assert history["loss"][-1] < history["loss"][0]

    path = tmp_path / "rm_state.pt"
    import shared.reward_model as rm_module

    calls = []
    real_loss = rm_module.bradley_terry_loss

    def interrupted(*a, **k):  # stop the run during step 25, as a Ctrl-C would
        calls.append(1)
        if len(calls) == 25:
            raise KeyboardInterrupt
        return real_loss(*a, **k)

    rm_module.bradley_terry_loss = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            train_reward_model(
                ScalarModel(base), pairs, config, checkpoint_path=path, progress=False
            )
    finally:
        rm_module.bradley_terry_loss = real_loss
    resumed = ScalarModel(base)
    again = train_reward_model(resumed, pairs, config, checkpoint_path=path, progress=False)
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    assert again["steps"] == [10, 20, 30]


def test_resume_refuses_other_settings(tmp_path):
    from shared.reward_model import RewardConfig, train_reward_model

    pairs = _toy_pairs(16)
    path = tmp_path / "rm_state.pt"
    model = ScalarModel(GPTModel(CFG))
    train_reward_model(
        model, pairs, RewardConfig(steps=4, batch_size=8), checkpoint_path=path, progress=False
    )
    with pytest.raises(ValueError, match="batch_size=8 then, 4 now.*delete the file"):
        train_reward_model(
            model, pairs, RewardConfig(steps=4, batch_size=4), checkpoint_path=path, progress=False
        )


def test_encode_pairs_refuses_too_long():
    from shared.bpe import get_encoding
    from shared.reward_model import encode_pairs

    enc = get_encoding()
    pair = {"prompt": "Where does Nabo live?\n", "chosen": "Nabo lives in Corton.", "rejected": "x"}
    (c, r) = encode_pairs([pair], enc, 128)[0]
    assert c[-1] == r[-1] == enc.eot_token
    with pytest.raises(ValueError, match="pair 0: prompt \\+ chosen is"):
        encode_pairs([pair], enc, 8)


def test_save_and_load_scalar_model(tmp_path, rm):
    from shared.checkpoints import save_checkpoint
    from shared.reward_model import load_scalar_model

    path = save_checkpoint(tmp_path / "rm.pt", rm)
    back = load_scalar_model(path)
    idx = torch.randint(0, 50, (2, 6))
    assert torch.equal(back(idx), rm(idx))
