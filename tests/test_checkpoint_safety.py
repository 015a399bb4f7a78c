"""A save never swaps a good checkpoint for one that cannot be loaded, cleans up after a
killed save, writes through symbolic links; a load refuses an optimizer of another model."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import torch

from shared.checkpoints import CheckpointError, load_checkpoint, load_model, save_checkpoint
from shared.gpt import GPTConfig, GPTModel
from shared.reward_model import ScalarModel, load_scalar_model
from shared.training import make_optimizer, next_token_loss

CFG = GPTConfig(vocab_size=32, context_length=8, emb_dim=16, n_heads=2, n_layers=1)

pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(seed: int, cfg: GPTConfig = CFG) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(cfg)


def trained_pair(seed: int) -> tuple[GPTModel, torch.optim.Optimizer]:
    """A model and an AdamW that has taken one step, so its state is not empty."""
    model = make_model(seed)
    opt = make_optimizer(model, lr=1e-2)
    x = torch.randint(0, CFG.vocab_size, (2, CFG.context_length + 1))
    next_token_loss(model, x[:, :-1], x[:, 1:]).backward()
    opt.step()
    return model, opt


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def dead_pid() -> int:
    """The pid of a process that has exited (and been waited for)."""
    proc = subprocess.Popen([sys.executable, "-S", "-c", ""])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------ configs that do not fit

BAD_CONFIGS = {
    "another_model": (dataclasses.replace(CFG, emb_dim=24, n_heads=3), "emb_dim"),
    "negative_vocab": ({"vocab_size": -1}, "context_length"),
    "empty": ({}, "vocab_size"),
    "invalid_value": ({**CFG.to_dict(), "vocab_size": -1}, "vocab_size"),
    "more_layers": ({**CFG.to_dict(), "n_layers": 2}, "n_layers"),
    "untied": ({**CFG.to_dict(), "tie_weights": True}, "tie_weights"),
}


@pytest.mark.parametrize(("config", "field"), BAD_CONFIGS.values(), ids=BAD_CONFIGS)
def test_a_config_that_does_not_fit_never_replaces_a_good_checkpoint(tmp_path, config, field):
    good = make_model(0)
    path = save_checkpoint(tmp_path / "ck.pt", good, step=1)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=r"cannot save .*ck\.pt: the config") as err:
        save_checkpoint(path, make_model(1), step=2, config=config)
    assert field in str(err.value) and "left unchanged" in str(err.value)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]
    assert same_weights(load_model(path), good)


def test_a_fitting_config_given_as_a_dict_or_a_runtime_change_is_accepted(tmp_path):
    model = make_model(0)
    config = {**CFG.to_dict(), "drop_rate": 0.1, "fused_attention": False}
    path = save_checkpoint(tmp_path / "ck.pt", model, config=config)
    loaded = load_model(path)
    assert same_weights(loaded, model) and loaded.cfg.drop_rate == 0.1
    tied = make_model(0, dataclasses.replace(CFG, tie_weights=True))
    assert load_model(save_checkpoint(tmp_path / "tied.pt", tied)).cfg.tie_weights


def test_a_scalar_model_is_checked_against_what_load_scalar_model_builds(tmp_path):
    rm = ScalarModel(make_model(0))
    path = save_checkpoint(tmp_path / "rm.pt", rm)
    assert same_weights(load_scalar_model(path), rm)
    before = path.read_bytes()
    wider = dataclasses.replace(CFG, emb_dim=24, n_heads=3)
    with pytest.raises(CheckpointError, match=r"rm\.pt: the config does not fit.*emb_dim"):
        save_checkpoint(path, rm, config=wider)
    assert path.read_bytes() == before


# ------------------------------------------------------------------ leftovers of killed saves


def test_the_next_save_removes_a_killed_saves_temporary_and_spares_a_live_one(tmp_path):
    stale = tmp_path / f".ck.pt.{dead_pid()}.abcd1234.tmp"  # a save to ck.pt that was killed
    stale.write_bytes(b"\0" * 1000)
    live = tmp_path / f".other.pt.{os.getppid()}.abcd1234.tmp"  # another target, still writing
    live.write_bytes(b"\0" * 1000)
    save_checkpoint(tmp_path / "ck.pt", make_model(0))
    assert not stale.exists() and live.read_bytes() == b"\0" * 1000


def test_a_save_through_a_link_cleans_up_beside_the_file_it_replaces(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "store").mkdir()
    real = tmp_path / "store" / "real.pt"
    link = tmp_path / "runs" / "latest.pt"
    link.symlink_to(real)
    stale = real.parent / f".real.pt.{dead_pid()}.abcd1234.tmp"
    stale.write_bytes(b"\0" * 1000)
    save_checkpoint(link, make_model(0))
    assert not stale.exists()
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["real.pt"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["latest.pt"]


# ------------------------------------------------------------------ symbolic links


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
def test_saving_to_a_link_keeps_the_link_and_updates_its_target(tmp_path, relative):
    (tmp_path / "store").mkdir()
    real = save_checkpoint(tmp_path / "store" / "step1.pt", make_model(0), step=1)
    link = tmp_path / "latest.pt"
    link.symlink_to("store/step1.pt" if relative else real)
    pointing = os.readlink(link)
    newer = make_model(1)
    assert save_checkpoint(link, newer, step=2) == link
    assert link.is_symlink() and os.readlink(link) == pointing
    assert same_weights(load_model(real), newer) and same_weights(load_model(link), newer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "store"]
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["step1.pt"]


def test_a_dangling_link_gets_its_target_written(tmp_path):
    link = tmp_path / "latest.pt"
    link.symlink_to(tmp_path / "new.pt")
    save_checkpoint(link, make_model(0))
    assert link.is_symlink() and (tmp_path / "new.pt").is_file()


def test_a_loop_of_links_is_an_error_that_changes_nothing(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(OSError, match=r"a\.pt: its symbolic links form a loop"):
        save_checkpoint(a, make_model(0))
    assert a.is_symlink() and b.is_symlink() and len(list(tmp_path.iterdir())) == 2


# ------------------------------------------------------------------ optimizer of another model


def test_an_optimizer_of_another_model_is_refused_before_anything_is_loaded(tmp_path):
    model, opt = trained_pair(0)
    path = save_checkpoint(tmp_path / "ck.pt", model, opt, step=3)
    target = make_model(1)
    other, other_opt = trained_pair(2)  # same shapes: only the identity of the params differs
    weights = {k: v.clone() for k, v in target.state_dict().items()}
    state = other_opt.state_dict()
    moments = {i: s["exp_avg"].clone() for i, s in state["state"].items()}
    with pytest.raises(ValueError, match=r"ck\.pt: the optimizer updates \d+ of its \d+ param"):
        load_checkpoint(path, target, other_opt)
    assert all(torch.equal(weights[k], v) for k, v in target.state_dict().items())
    after = other_opt.state_dict()["state"]
    assert all(torch.equal(moments[i], after[i]["exp_avg"]) for i in moments)
    load_checkpoint(path, target, make_optimizer(target, lr=1e-2))  # its own one is fine
    assert same_weights(target, model)
