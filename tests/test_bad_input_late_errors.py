"""Errors that used to arrive late (after training ran, or after the model had changed)
now come first, and a failed load or resume leaves model and optimizer untouched."""

from __future__ import annotations

import pytest
import torch

from shared.checkpoints import (
    CheckpointError,
    load_checkpoint,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from shared.gpt import GPTConfig, GPTModel
from shared.training import TokenBatches, make_optimizer, train

CFG = GPTConfig(vocab_size=16, context_length=8, emb_dim=16, n_heads=2, n_layers=1)
IDS = torch.arange(400) % CFG.vocab_size
BATCHES = TokenBatches(IDS, CFG.context_length, 4, seed=0)
VAL = TokenBatches(IDS, CFG.context_length, 4, shuffle=False)

pytestmark = pytest.mark.usefixtures("one_thread")


def setup(seed: int = 0):
    torch.manual_seed(seed)
    model = GPTModel(CFG)
    return model, make_optimizer(model, lr=1e-2)


def run(model, opt, max_steps=2, **kwargs):
    return train(
        model, opt, BATCHES, VAL, max_steps, eval_every=1, eval_batches=1, progress=False, **kwargs
    )


class Frozen:
    """Model and optimizer state before a call, to check that a failure changed nothing."""

    def __init__(self, model, opt):
        self.model, self.opt = model, opt
        self.weights = {k: v.clone() for k, v in model.state_dict().items()}
        self.state = {
            i: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
            for i, s in opt.state_dict()["state"].items()
        }
        self.rng = torch.get_rng_state()

    def unchanged(self) -> bool:
        weights = all(torch.equal(self.weights[k], v) for k, v in self.model.state_dict().items())
        state = self.opt.state_dict()["state"]
        same_opt = state.keys() == self.state.keys() and all(
            torch.equal(torch.as_tensor(state[i][k]), torch.as_tensor(v))
            for i in state
            for k, v in self.state[i].items()
        )
        return weights and same_opt and torch.equal(self.rng, torch.get_rng_state())


@pytest.fixture
def trained(tmp_path):
    model, opt = setup()
    path = tmp_path / "run.pt"
    run(model, opt, checkpoint_path=path)
    return path


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("ck_{epoch}.pt", r"has the field \{epoch\}, but only \{step\}"),
        ("ck_{Step}.pt", r"\{Step\}"),
        ("ck_{}.pt", "not a valid pattern"),
        ("ck_{0}.pt", "not a valid pattern"),
        ("ck_{step:q}.pt", "not a valid pattern"),
        ("ck_{step.x}.pt", "not a valid pattern"),
        ("ck_{step.pt", "not a valid pattern"),
        ("ck_step}.pt", "not a valid pattern"),
    ],
)
def test_bad_checkpoint_path_fails_before_training(tmp_path, pattern, message):
    model, opt = setup()
    frozen = Frozen(model, opt)
    with pytest.raises(ValueError, match="checkpoint_path .*" + message):
        run(model, opt, checkpoint_path=tmp_path / pattern)
    assert frozen.unchanged() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("pattern", ["ck_{step}.pt", "ck_{step:06d}.pt", "{{x}}_{step}.pt"])
def test_good_checkpoint_paths(tmp_path, pattern):
    model, opt = setup()
    run(model, opt, checkpoint_path=tmp_path / pattern, checkpoint_every=1)
    assert len(list(tmp_path.iterdir())) == 2


def test_checkpoint_path_that_is_a_directory(tmp_path):
    model, opt = setup()
    with pytest.raises(IsADirectoryError, match="checkpoint_path"):
        run(model, opt, checkpoint_path=tmp_path)


def test_resume_from_a_model_file_without_training_state(tmp_path):
    donor, _ = setup(seed=3)
    path = save_checkpoint(tmp_path / "model.pt", donor)  # weights only
    model, opt = setup()
    frozen = Frozen(model, opt)
    with pytest.raises(CheckpointError, match=r"model\.pt holds no training state"):
        run(model, opt, resume_from=path)
    assert frozen.unchanged()
    donor_opt = make_optimizer(donor, 1e-2)
    path = save_checkpoint(tmp_path / "half.pt", donor, donor_opt, extra={"tokens_seen": 3})
    with pytest.raises(CheckpointError, match=r"missing \['history', 'rng_state'\]"):
        run(model, opt, resume_from=path)
    assert frozen.unchanged()


def rewrite_extra(path, **changes):
    ckpt = read_checkpoint(path)
    model, opt = setup()
    load_checkpoint(path, model, opt)
    save_checkpoint(
        path,
        model,
        opt,
        ckpt["step"],
        ckpt["config"],
        ckpt["data_position"],
        {**ckpt["extra"], **changes},
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rng_state": torch.zeros(7, dtype=torch.uint8)}, "random-generator state is damaged"),
        ({"rng_state": torch.get_rng_state().float()}, "random-generator state is damaged"),
        ({"rng_state": "abc"}, "random-generator state is damaged"),
        ({"history": {"steps": [1]}}, "history is damaged"),
        ({"history": [1, 2]}, "history is damaged"),
        ({"tokens_seen": "many"}, "tokens_seen is damaged"),
    ],
)
def test_damaged_training_state_fails_before_the_model_changes(trained, changes, message):
    rewrite_extra(trained, **changes)
    model, opt = setup(seed=7)
    frozen = Frozen(model, opt)
    with pytest.raises(CheckpointError, match=r"run\.pt.*" + message):
        run(model, opt, max_steps=4, resume_from=trained)
    assert frozen.unchanged()


def test_resume_beyond_max_steps(trained):
    model, opt = setup(seed=7)
    frozen = Frozen(model, opt)
    with pytest.raises(ValueError, match=r"already at step 2, beyond max_steps=1"):
        run(model, opt, max_steps=1, resume_from=trained)
    assert frozen.unchanged()
    assert run(model, opt, max_steps=2, resume_from=trained)["steps"] == [1, 2]


def test_optimizer_of_another_kind_fails_before_loading(trained):
    model, _ = setup(seed=7)
    sgd = torch.optim.SGD(
        [
            {"params": [p for p in model.parameters() if p.dim() >= 2]},
            {"params": [p for p in model.parameters() if p.dim() < 2]},
        ],
        lr=0.1,
        momentum=0.9,
    )
    frozen = Frozen(model, sgd)
    with pytest.raises(CheckpointError, match=r"different kind of optimizer than SGD"):
        load_checkpoint(trained, model, sgd)
    assert frozen.unchanged()


def test_optimizer_state_of_other_shapes_fails_before_loading(tmp_path):
    wide = GPTConfig(vocab_size=16, context_length=8, emb_dim=32, n_heads=2, n_layers=1)
    torch.manual_seed(0)
    big = GPTModel(wide)
    big_opt = make_optimizer(big, 1e-2)
    run_big = train(big, big_opt, BATCHES, VAL, 1, progress=False)  # noqa: F841
    path = save_checkpoint(tmp_path / "big.pt", big, big_opt)
    model, opt = setup()
    run(model, opt, max_steps=1)
    frozen = Frozen(model, opt)
    with pytest.raises(CheckpointError, match="optimizer state 'exp_avg' of parameter"):
        load_checkpoint(path, None, opt)
    assert frozen.unchanged()


def test_a_stored_config_that_is_not_valid(tmp_path):
    model, _ = setup()
    bad = {**CFG.to_dict(), "n_heads": 3}
    with pytest.raises(CheckpointError, match=r"odd\.pt"):  # refused when saving ...
        save_checkpoint(tmp_path / "odd.pt", model, config=bad)
    path = save_checkpoint(tmp_path / "odd.pt", model, config=CFG.to_dict())
    stored = torch.load(path, weights_only=True)  # ... and when a file holds one anyway
    stored["config"] = bad
    torch.save(stored, path)
    with pytest.raises(CheckpointError, match=r"odd\.pt: the stored config is not valid.*n_heads"):
        load_model(path)


def test_load_checkpoint_arguments_are_checked_before_loading(trained):
    model, opt = setup(seed=7)
    frozen = Frozen(model, opt)
    with pytest.raises(TypeError, match="optimizer must be"):
        load_checkpoint(trained, model, "adam")
    with pytest.raises(TypeError, match="model must be"):
        load_checkpoint(trained, {"w": 1}, opt)
    assert frozen.unchanged()
