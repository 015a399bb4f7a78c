"""The one setup call every notebook makes: seeds, threads, device and scale."""

import random

import numpy as np
import pytest
import torch

import shared
from shared.runtime import choose_device


def draws():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_setup_seeds_every_generator():
    shared.setup(seed=7, quiet=True)
    first = draws()
    shared.setup(seed=7, quiet=True)
    assert draws() == first
    shared.setup(seed=8, quiet=True)
    assert draws() != first


def test_defaults_are_the_ci_scale(monkeypatch):
    for name in ("LLMS_SCALE", "LLMS_THREADS", "LLMS_SEED", "LLMS_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    rt = shared.setup(quiet=True)
    assert (rt.scale, rt.seed, rt.threads) == ("tiny", 123, 2)
    assert torch.get_num_threads() == 2


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("LLMS_SCALE", "small")
    monkeypatch.setenv("LLMS_THREADS", "1")
    monkeypatch.setenv("LLMS_DEVICE", "cpu")
    rt = shared.setup(quiet=True)
    assert (rt.scale, rt.threads, rt.device.type) == ("small", 1, "cpu")


def test_bad_settings_fail_clearly(monkeypatch):
    monkeypatch.setenv("LLMS_SCALE", "huge")
    with pytest.raises(ValueError, match="huge"):
        shared.setup(quiet=True)
    with pytest.raises(ValueError, match="tpu"):
        choose_device("tpu")


def test_choose_falls_back_to_the_nearest_smaller_scale():
    rt = shared.setup(scale="gpt2", quiet=True)
    assert rt.choose({"tiny": 1, "small": 2}) == 2
    assert rt.choose({"tiny": 1, "gpt2": 3}) == 3
    with pytest.raises(KeyError):
        shared.setup(scale="tiny", quiet=True).choose({"small": 2})


def test_setup_prints_what_it_chose(capsys):
    shared.setup(scale="tiny")
    assert "scale=tiny" in capsys.readouterr().out
