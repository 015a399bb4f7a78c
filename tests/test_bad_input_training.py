"""Training that would silently do harm raises before the first step, naming the argument;
a loss that is not finite stops training and writes no checkpoint."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shared.checkpoints import read_checkpoint
from shared.gpt import GPTConfig, GPTModel
from shared.training import TokenBatches, lr_at, make_optimizer, train

CFG = GPTConfig(vocab_size=16, context_length=8, emb_dim=16, n_heads=2, n_layers=1)
IDS = torch.arange(400) % CFG.vocab_size

pytestmark = pytest.mark.usefixtures("one_thread")


def setup(seed: int = 0, lr: float = 1e-2):
    torch.manual_seed(seed)
    model = GPTModel(CFG)
    return model, make_optimizer(model, lr=lr)


def batches(batch_size=4, seed=0, ids=IDS, shuffle=True, context_length=CFG.context_length):
    """The default differs from the others only in the one argument given."""
    if context_length != CFG.context_length:  # same number of batches, shorter windows
        return TokenBatches(ids[:200], context_length, batch_size, seed=seed, shuffle=shuffle)
    return TokenBatches(ids, context_length, batch_size, seed=seed, shuffle=shuffle)


VAL = TokenBatches(IDS, CFG.context_length, 4, shuffle=False)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model, before) -> bool:
    return all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def run(model, opt, max_steps=2, **kwargs):
    kwargs = {"eval_every": 1, "eval_batches": 1, "progress": False, **kwargs}
    return train(model, opt, kwargs.pop("train_batches", batches()), VAL, max_steps, **kwargs)


@pytest.mark.parametrize(
    ("grad_clip", "error"),
    [
        (0, ValueError),
        (0.0, ValueError),
        (-1.0, ValueError),
        (-1e-9, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ("1.0", TypeError),
        (True, TypeError),
        ([1.0], TypeError),
    ],
)
def test_bad_grad_clip(grad_clip, error):
    model, opt = setup()
    before = snapshot(model)
    with pytest.raises(error, match="grad_clip"):
        run(model, opt, grad_clip=grad_clip)
    assert unchanged(model, before)


@pytest.mark.parametrize("grad_clip", [None, 0.5, 1, np.float32(2.0)])
def test_good_grad_clip(grad_clip):
    model, opt = setup()
    assert len(run(model, opt, grad_clip=grad_clip)["val_loss"]) == 2


BAD_SCHEDULES = [
    (lambda s: float("nan"), ValueError, r"lr_schedule\(0\) returned nan"),
    (lambda s: -1e-3, ValueError, r"lr_schedule\(0\) returned -0.001"),
    (lambda s: float("inf"), ValueError, r"lr_schedule\(0\)"),
    (lambda s: 1e-3 if s < 3 else float("nan"), ValueError, r"lr_schedule\(3\) returned nan"),
    (lambda s: 1e-3 * (2 - s), ValueError, r"lr_schedule\(3\) returned -0.001"),
    (lambda s: None, TypeError, r"lr_schedule\(0\) must return a number"),
    (lambda s: "1e-3", TypeError, r"lr_schedule\(0\) must return a number"),
    (lambda s: torch.tensor(float("nan")), ValueError, r"lr_schedule\(0\)"),
    ("cosine", TypeError, "lr_schedule must be a function"),
    (lambda s: lr_at(s, 1e-3, 2, 3), ValueError, "step"),  # min_lr fine; ends at 3 < 5
]


@pytest.mark.parametrize(("schedule", "error", "message"), BAD_SCHEDULES)
def test_bad_schedules_fail_before_the_first_step(schedule, error, message):
    model, opt = setup()
    before = snapshot(model)
    if schedule is BAD_SCHEDULES[-1][0]:
        # lr_at itself is fine past total_steps (it stays at min_lr): not an error
        run(model, opt, max_steps=5, lr_schedule=schedule)
        return
    with pytest.raises(error, match=message):
        run(model, opt, max_steps=5, lr_schedule=schedule)
    assert unchanged(model, before)


@pytest.mark.parametrize(
    "schedule",
    [
        lambda s: 0.0,  # a zero learning rate is allowed (warmup from 0, a frozen step)
        lambda s: np.float64(1e-3),
        lambda s: torch.tensor(1e-3),
        lambda s: 1,  # an int
        lambda s: lr_at(s, 1e-3, 1, 2, min_lr=1e-4),
    ],
)
def test_good_schedules(schedule):
    model, opt = setup()
    run(model, opt, max_steps=3, lr_schedule=schedule)


@pytest.mark.parametrize("lr", [float("nan"), -1.0, float("inf")])
def test_bad_optimizer_learning_rate(lr):
    model, opt = setup()
    for group in opt.param_groups:
        group["lr"] = lr
    with pytest.raises(ValueError, match="learning rate"):
        run(model, opt)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        make_optimizer(model, lr=lr)


def test_optimizer_built_for_another_model():
    model, _ = setup()
    other, other_opt = setup(seed=1)
    before, other_before = snapshot(model), snapshot(other)
    with pytest.raises(ValueError, match="optimizer updates .* not the model's"):
        run(model, other_opt)
    assert unchanged(model, before) and unchanged(other, other_before)
    copy = GPTModel(CFG)
    copy.load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="built for another model"):
        run(model, make_optimizer(copy, 1e-3))  # same config and weights, other tensors
    mixed = torch.optim.AdamW(list(model.parameters()) + [torch.nn.Parameter(torch.ones(2))])
    with pytest.raises(ValueError, match="1 of its"):
        run(model, mixed)


def test_an_optimizer_over_part_of_the_model_is_fine():
    model, _ = setup()
    head_only = torch.optim.AdamW(model.out_head.parameters(), lr=1e-3)
    before = model.tok_emb.weight.clone()
    run(model, head_only)
    assert torch.equal(model.tok_emb.weight, before)


@pytest.mark.parametrize(
    ("changed", "message"),
    [
        ({"batch_size": 8}, "batch_size=4 then, 8 now"),
        ({"seed": 1}, "seed=0 then, 1 now"),
        ({"ids": IDS[:200]}, "batches_per_epoch"),
        ({"shuffle": False}, "shuffle=True then, False now"),
        ({"context_length": 4}, "tokens_per_batch=32 then, 16 now"),
    ],
)
def test_resume_with_other_batches_is_refused(tmp_path, changed, message):
    model, opt = setup()
    path = tmp_path / "ck.pt"
    run(model, opt, max_steps=2, checkpoint_path=path)
    fresh, fresh_opt = setup(seed=5)
    before, opt_before = snapshot(fresh), fresh_opt.state_dict()
    with pytest.raises(ValueError, match=message):
        run(fresh, fresh_opt, max_steps=4, resume_from=path, train_batches=batches(**changed))
    assert unchanged(fresh, before) and fresh_opt.state_dict()["state"] == opt_before["state"]
    run(fresh, fresh_opt, max_steps=4, resume_from=path)  # the same batches resume fine


class InstructionBatches:
    """A batch provider duck-typed like TokenBatches (no .dataset), with ignored targets."""

    def __init__(self, batch_size=2, seed=0):
        self.batch_size, self.seed, self.world_size = batch_size, seed, 1
        self.tokens_per_batch = batch_size * CFG.context_length

    def __len__(self):
        return 5

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 1000 + i)
        x = torch.randint(0, CFG.vocab_size, (self.batch_size, CFG.context_length), generator=g)
        y = x.roll(-1, 1)
        y[:, : CFG.context_length // 2] = -100  # the prompt part is not trained on
        return x, y


def test_duck_typed_batches_train_and_resume(tmp_path):
    model, opt = setup()
    path = tmp_path / "sft.pt"
    run(model, opt, max_steps=2, checkpoint_path=path, train_batches=InstructionBatches())
    assert read_checkpoint(path)["extra"]["batch_size"] == 2
    fresh, fresh_opt = setup(seed=3)
    with pytest.raises(ValueError, match="batch_size=2 then, 3 now"):
        run(fresh, fresh_opt, 3, resume_from=path, train_batches=InstructionBatches(3))
    run(fresh, fresh_opt, 3, resume_from=path, train_batches=InstructionBatches())


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_a_non_finite_loss_stops_training_and_writes_no_checkpoint(tmp_path, bad_value):
    model, opt = setup()

    def poison(step, m):  # the weights go bad after step 2 (as a diverging run's would)
        if step == 2:
            with torch.no_grad():
                m.final_norm.scale.fill_(bad_value)

    path = tmp_path / "run_{step}.pt"
    with pytest.raises(FloatingPointError, match="loss at step 2 is nan.*no checkpoint"):
        run(
            model,
            opt,
            max_steps=6,
            eval_every=2,
            on_eval=poison,
            checkpoint_path=path,
            checkpoint_every=3,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # step 3 never saved


def test_a_diverging_run_stops_with_a_clear_error(tmp_path):
    model, opt = setup(lr=1e20)
    with pytest.raises(FloatingPointError, match="not finite"):
        run(
            model,
            opt,
            max_steps=30,
            eval_every=100,
            grad_clip=None,
            checkpoint_path=tmp_path / "ck.pt",
            checkpoint_every=1,
        )
    if (tmp_path / "ck.pt").exists():  # any checkpoint written before is a finite one
        ckpt = read_checkpoint(tmp_path / "ck.pt")
        assert all(math.isfinite(v.abs().max()) for v in ckpt["model"].values())


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"max_steps": 2.5}, TypeError, "max_steps"),
        ({"max_steps": 0}, ValueError, "max_steps"),
        ({"eval_every": -1}, ValueError, "eval_every"),
        ({"eval_batches": 0}, ValueError, "eval_batches"),
        ({"checkpoint_every": 0, "checkpoint_path": "x.pt"}, ValueError, "checkpoint_every"),
        ({"on_eval": "print"}, TypeError, "on_eval"),
        ({"progress": "yes"}, TypeError, "progress"),
        ({"train_batches": [(IDS[:8][None], IDS[1:9][None])]}, TypeError, "train_batches"),
    ],
)
def test_other_bad_arguments_name_the_parameter(kwargs, error, name):
    model, opt = setup()
    kwargs = {"max_steps": 2, **kwargs}
    with pytest.raises(error, match=name):
        run(model, opt, **kwargs)


def test_empty_validation_loader():
    model, opt = setup()
    with pytest.raises(ValueError, match="val_loader is empty"):
        train(model, opt, batches(), [], 2, progress=False)


def test_a_batch_whose_targets_are_all_ignored_is_named():
    class AllIgnored(InstructionBatches):
        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            return x, torch.full_like(y, -100)

    model, opt = setup()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"train_batches\[0\] has no target .* -100"):
        run(model, opt, train_batches=AllIgnored())
    assert unchanged(model, before)
