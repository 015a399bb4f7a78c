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


def test_score_with_left_padding_reads_the_last_position(rm):
    idx = torch.tensor([[0, 0, 3, 4, 5]])
    mask = torch.tensor([[0, 0, 1, 1, 1]])
    assert rm.score(idx, mask).item() == pytest.approx(rm(idx)[0, 4].item())


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
