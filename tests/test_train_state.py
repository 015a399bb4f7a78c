"""Resumable training state: atomic saves, safe loads, and a run with other settings refused."""

import re
import subprocess
from pathlib import Path

import pytest
import torch
from test_ppo import make_trainer

from shared.train_state import check_settings, data_digest, load_state, save_state

REPO = Path(__file__).resolve().parents[1]


def test_a_state_round_trips_with_its_settings(tmp_path):
    path = tmp_path / "state.pt"
    settings = {"lr": 1e-3, "betas": (0.9, 0.95), "data": data_digest([[1, 2], [3]])}
    assert load_state(path, settings) is None  # nothing saved yet: start from scratch
    save_state(path, settings, {"step": 3, "weights": torch.arange(4.0), "history": [{"x": 1.0}]})
    state = load_state(path, settings)  # a tuple setting compares equal after the round trip
    assert state["step"] == 3 and torch.equal(state["weights"], torch.arange(4.0))
    assert not list(tmp_path.glob("*.tmp*"))  # the temporary file was renamed into place


def test_other_settings_are_refused_naming_the_file_and_every_difference(tmp_path):
    path = tmp_path / "state.pt"
    save_state(path, {"lr": 1e-3, "steps": 10}, {"step": 1})
    with pytest.raises(ValueError, match=r"state\.pt .*lr=0\.001 then, 0\.002 now.*steps=10"):
        load_state(path, {"lr": 2e-3, "steps": 20})
    with pytest.raises(ValueError, match="records no settings"):
        check_settings(path, None, {"lr": 1e-3})


def test_other_data_gives_another_digest():
    assert data_digest([[1, 2, 3]]) != data_digest([[1, 2, 4]])
    assert data_digest(torch.tensor([1.0, 2.0])) != data_digest(torch.tensor([1.0, 2.5]))
    assert data_digest([[1, 2, 3]], None) == data_digest([[1, 2, 3]], None)


def test_damaged_or_unsafe_files_are_refused_without_running_them(tmp_path):
    cut = tmp_path / "cut.pt"
    save_state(cut, {}, {"w": torch.zeros(1000)})
    cut.write_bytes(cut.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"cannot read the training state .*cut\.pt"):
        load_state(cut, {})

    class Planted:
        def __reduce__(self):
            return (print, ("this must never run",))

    planted = tmp_path / "planted.pt"
    torch.save({"settings": {}, "x": Planted()}, planted)
    with pytest.raises(ValueError, match=r"planted\.pt: it holds objects other than tensors"):
        load_state(planted, {})


def test_a_ppo_trainer_state_saves_and_loads_safely(tmp_path):
    trainer = make_trainer()
    trainer.train(1, progress=False)
    path = tmp_path / "ppo_state.pt"
    save_state(path, {"run": "ppo"}, {"trainer": trainer.state_dict(), "curve": [{"kl": 0.1}]})
    again = make_trainer()
    again.load_state_dict(load_state(path, {"run": "ppo"})["trainer"])
    assert again.step_count == 1 and again.history == trainer.history
    for a, b in zip(trainer.policy.parameters(), again.policy.parameters()):
        assert torch.equal(a, b)


def test_nothing_loads_with_weights_only_false():
    files = subprocess.run(
        ["git", "ls-files", "*.py", "*.ipynb"], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    unsafe = re.compile(r"weights_only\s*=\s*False")
    found = [f for f in files if unsafe.search((REPO / f).read_text("utf-8"))]
    assert found == [], f"torch.load that may run code (weights_only off) in {found}"
