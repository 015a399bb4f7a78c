"""Hooks are always removed; the logit lens ends at the model's logits; patching is exact."""

import pytest
import torch

from shared.gpt import GPTConfig, GPTModel
from shared.hooks import (
    Hooks,
    hook_names,
    layer_names,
    logit_lens,
    patch_residual,
    residual_stream,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPTModel(GPTConfig(64, 16, 32, 2, 3)).eval()


IDX = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(1))


def count_hooks(model):
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        + len(m._load_state_dict_post_hooks)
        for m in model.modules()
    )  # fmt: skip


def test_every_kind_of_hook_fires_and_is_removed(model):
    calls = []
    with Hooks() as h:
        h.forward(model.trf_blocks[0], lambda m, a, o: calls.append("forward"))
        h.pre(model.trf_blocks[1], lambda m, a: calls.append("pre"))
        h.backward(model.trf_blocks[2], lambda m, gi, go: calls.append("backward"))
        h.load_post(model, lambda m, keys: calls.append("load"))
        assert len(h) == 4 and count_hooks(model) == 4
        model(IDX).sum().backward()
        model.load_state_dict(model.state_dict())
    assert calls == ["forward", "pre", "backward", "load"]
    assert count_hooks(model) == 0
    model.zero_grad(set_to_none=True)


def test_a_hook_that_raises_leaves_no_hook_behind(model):
    before = model(IDX)

    def broken(module, args, output):
        raise RuntimeError("broken hook")

    with pytest.raises(RuntimeError, match="broken hook"), Hooks() as h:
        h.forward(model.trf_blocks[1], broken)
        model(IDX)
    assert count_hooks(model) == 0
    assert torch.equal(model(IDX), before)


def test_residual_stream_and_lens_end_at_the_logits(model):
    logits, resid = residual_stream(model, IDX)
    assert resid.shape == (4, 2, 10, 32) and len(layer_names(model)) == 4
    for norm in ("own", "final"):
        lens = logit_lens(model, resid, norm)
        assert lens.shape == (4, 2, 10, 64)
        torch.testing.assert_close(lens[-1], logits, atol=1e-5, rtol=0)
    assert count_hooks(model) == 0
    with pytest.raises(ValueError, match="norm must be"):
        logit_lens(model, resid, "mean")


def test_patching_with_the_own_value_changes_nothing(model):
    logits, resid = residual_stream(model, IDX)
    for layer in range(4):
        same = patch_residual(model, IDX, layer, 3, resid[layer, :, 3])
        torch.testing.assert_close(same, logits)
    other = patch_residual(model, IDX, 1, 3, torch.zeros(32))
    assert torch.allclose(other[:, :3], logits[:, :3])  # earlier positions cannot see it
    assert not torch.allclose(other[:, 3:], logits[:, 3:])
    with pytest.raises(ValueError, match="layer must be"):
        patch_residual(model, IDX, 9, 0, torch.zeros(32))
    assert count_hooks(model) == 0


def test_not_a_gpt():
    with pytest.raises(TypeError, match="GPTModel"):
        residual_stream(torch.nn.Linear(2, 2), IDX)


def test_layer_names_and_transformer_lens_names_line_up(model):
    assert layer_names(model) == ["embed", "block 0", "block 1", "block 2"]
    assert hook_names(model) == [
        "blocks.0.hook_resid_pre",
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
        "blocks.2.hook_resid_post",
    ]
    with pytest.raises(TypeError, match="GPTModel"):
        hook_names(torch.nn.Linear(2, 2))
