"""Checkpoints: round trip, corrupt files, config/shape mismatches, interrupted saves."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from shared.checkpoints import CheckpointError, load_checkpoint, load_model, save_checkpoint
from shared.gpt import GPTConfig, GPTModel
from shared.training import make_optimizer, next_token_loss

CFG = GPTConfig(vocab_size=64, context_length=16, emb_dim=32, n_heads=2, n_layers=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(seed: int, cfg: GPTConfig = CFG) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(cfg)


def trained_pair(seed: int = 0) -> tuple[GPTModel, torch.optim.Optimizer]:
    """A model and an AdamW that has taken one step, so its state is not empty."""
    model = make_model(seed)
    opt = make_optimizer(model, lr=1e-2)
    x = torch.randint(0, CFG.vocab_size, (2, CFG.context_length))
    next_token_loss(model, x[:, :-1], x[:, 1:]).backward()
    opt.step()
    return model, opt


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_restores_weights_optimizer_and_metadata(tmp_path):
    model, opt = trained_pair()
    path = save_checkpoint(
        tmp_path / "ck.pt", model, opt, step=7, data_position=11, extra={"note": [1.5, 2.5]}
    )
    other = make_model(seed=1)
    assert not same_weights(model, other)
    other_opt = make_optimizer(other, lr=1e-2)
    ckpt = load_checkpoint(path, other, other_opt)
    assert same_weights(model, other)
    assert (ckpt["step"], ckpt["data_position"], ckpt["extra"]) == (7, 11, {"note": [1.5, 2.5]})
    assert ckpt["config"] == CFG.to_dict()
    state, other_state = opt.state_dict()["state"], other_opt.state_dict()["state"]
    assert state.keys() == other_state.keys() and len(state) > 0
    for k in state:
        assert torch.equal(state[k]["exp_avg_sq"], other_state[k]["exp_avg_sq"])


def test_tied_weights_are_stored_once_and_stay_tied(tmp_path):
    cfg = dataclasses.replace(CFG, tie_weights=True, vocab_size=2048)
    model = make_model(0, cfg)
    path = save_checkpoint(tmp_path / "tied.pt", model)
    n_bytes = 4 * sum(p.numel() for p in model.parameters())  # parameters() counts tied once
    assert path.stat().st_size < n_bytes * 1.1
    loaded = load_model(path)
    assert loaded.out_head.weight is loaded.tok_emb.weight
    assert same_weights(model, loaded) and not loaded.training


@pytest.mark.parametrize("keep", [0.02, 0.5, 0.98])
def test_truncated_file_gives_clear_error_and_leaves_model_unchanged(tmp_path, keep):
    path = save_checkpoint(tmp_path / "ck.pt", make_model(0))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    model = make_model(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"ck\.pt is truncated or corrupt"):
        load_checkpoint(path, model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(path)


def test_garbage_and_missing_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pt")  # valid torch file, wrong kind
    with pytest.raises(CheckpointError, match="not a checkpoint written by save_checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_config_mismatch_names_the_keys_and_touches_nothing(tmp_path):
    path = save_checkpoint(tmp_path / "ck.pt", make_model(0))
    wider = dataclasses.replace(CFG, emb_dim=48, n_heads=4)
    model = make_model(1, wider)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="emb_dim: file 32 vs expected 48") as err:
        load_checkpoint(path, model)
    assert "n_heads" in str(err.value) and "vocab_size" not in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match="n_layers"):
        load_checkpoint(path, expected_config=dataclasses.replace(CFG, n_layers=3))


def test_runtime_fields_may_differ(tmp_path):
    model = make_model(0)
    path = save_checkpoint(tmp_path / "ck.pt", model)
    other = dataclasses.replace(CFG, drop_rate=0.1, fused_attention=not CFG.fused_attention)
    target = make_model(1, other)
    load_checkpoint(path, target)  # dropout and the attention path do not change the weights
    assert same_weights(model, target)
    loaded = load_model(path, drop_rate=0.2)
    assert loaded.cfg.drop_rate == 0.2 and same_weights(model, loaded)
    with pytest.raises(ValueError, match="emb_dim"):
        load_model(path, emb_dim=64)


def test_shape_mismatch_is_caught_before_any_copy(tmp_path):
    # A model without a .cfg (so no config check): the shape check alone must catch it.
    class Plain(torch.nn.Module):
        def __init__(self, n: int) -> None:
            super().__init__()
            self.a = torch.nn.Linear(4, 4)
            self.b = torch.nn.Linear(4, n)

    path = save_checkpoint(tmp_path / "plain.pt", Plain(3))
    target = Plain(5)
    a_before = target.a.weight.clone()
    with pytest.raises(CheckpointError, match=r"b\.weight: file \(3, 4\) vs model \(5, 4\)"):
        load_checkpoint(path, target)
    assert torch.equal(target.a.weight, a_before)  # 'a' fits but was not loaded either


def test_interrupted_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    good = make_model(0)
    path = save_checkpoint(tmp_path / "ck.pt", good)
    original = path.read_bytes()

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip file")  # some bytes reach the disk, then it dies
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, make_model(1))
    monkeypatch.undo()
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp file left behind
    assert same_weights(load_model(path), good)


def test_optimizer_group_mismatch_is_rejected_before_loading(tmp_path):
    model, opt = trained_pair()
    path = save_checkpoint(tmp_path / "ck.pt", model, opt)
    target = make_model(1)
    single_group = torch.optim.AdamW(target.parameters(), lr=1e-2)
    before = target.tok_emb.weight.clone()
    with pytest.raises(CheckpointError, match="parameter groups"):
        load_checkpoint(path, target, single_group)
    assert torch.equal(target.tok_emb.weight, before)
    no_opt = save_checkpoint(tmp_path / "weights_only.pt", model)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(no_opt, target, make_optimizer(target, lr=1e-2))
