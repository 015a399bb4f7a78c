"""Data-parallel training on 2 processes equals 1-process training on the same global batch.

Runs the ``python -m shared.distributed`` demonstration twice as subprocesses: once
plainly, once under ``torchrun --standalone --nproc_per_node=2`` (gloo backend, 1 thread
per process). Each of the two ranks sees half of every global batch and DDP averages the
gradients, so the weights and losses must match up to floating-point reduction order.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from shared.runtime import REPO_DIR

STEPS = 6
LR = 3e-3  # the demonstration's learning rate (shared.distributed.main)


def run_demo(out, nproc: int) -> dict:
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd = [*launcher, "-m", "shared.distributed", "--out", str(out), "--steps", str(STEPS)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    assert f"world_size={nproc}" in done.stdout
    return torch.load(out, weights_only=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    return run_demo(folder / "single.pt", 1), run_demo(folder / "ddp.pt", 2)


def test_two_processes_give_the_same_weights_as_one(runs):
    """Equal up to reduction order, which AdamW can amplify in a few weights, never more.

    Adam divides each gradient by its own running size, so a weight whose gradient is
    nearly zero moves by up to ``lr`` (3e-3) whatever rounding decided its sign: a handful
    of such weights may differ by ~1e-5. A real fault (ranks not averaging gradients)
    moves almost every weight by a good fraction of ``lr`` instead.
    """
    single, ddp = runs
    assert single["model"].keys() == ddp["model"].keys()
    diffs = torch.cat(
        [(single["model"][k] - ddp["model"][k]).abs().flatten() for k in single["model"]]
    )
    assert diffs.max().item() < LR / 10, diffs.max().item()
    assert diffs.mean().item() < 1e-6, diffs.mean().item()  # typical weight: equal
    assert (diffs > 1e-6).float().mean().item() < 1e-3  # fewer than 1 in 1,000 differ
    assert single["step"] == ddp["step"] == STEPS


def test_two_processes_give_the_same_losses_and_token_counts(runs):
    single, ddp = (r["extra"]["history"] for r in runs)
    assert single["steps"] == ddp["steps"] == [2, 4, 6]
    assert single["tokens_seen"] == ddp["tokens_seen"]  # counted over both ranks
    for key in ("train_loss", "val_loss"):
        assert single[key] == pytest.approx(ddp[key], abs=1e-5), key
    assert single["val_loss"][-1] < single["val_loss"][0]  # it did train
