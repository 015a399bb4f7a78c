"""Whatever ``save_checkpoint`` accepts loads back with ``weights_only=True``; what cannot
is refused before a byte is written, so it never replaces the last good checkpoint."""

from __future__ import annotations

import enum
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch

from shared.checkpoints import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from shared.gpt import GPTConfig, GPTModel

CFG = GPTConfig(vocab_size=32, context_length=8, emb_dim=16, n_heads=2, n_layers=1)


class Colour(enum.IntEnum):
    RED = 1


@dataclass
class RunInfo:
    name: str
    lr: float


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPTModel(CFG)


# (value given in extra, what load_checkpoint returns for it)
CONVERTED = [
    (np.float64(1.5), 1.5),
    (np.float32(0.25), 0.25),
    (np.int64(7), 7),
    (np.bool_(True), True),
    (np.str_("abc"), "abc"),
    (Path("/tmp/run.pt"), "/tmp/run.pt"),
    (PurePosixPath("a/b"), "a/b"),
    (CFG, CFG.to_dict()),
    (RunInfo("x", 0.1), {"name": "x", "lr": 0.1}),
    (Colour.RED, 1),
    (frozenset({1, 2}), {1, 2}),
    ([np.float64(1.0), {"k": np.int32(2)}], [1.0, {"k": 2}]),
    ({"nested": (np.float64(3.0), Path("p"))}, {"nested": (3.0, "p")}),
    (OrderedDict(a=1), {"a": 1}),
    (float("nan"), "nan"),  # a metric may be NaN; it is a plain float
]


@pytest.mark.parametrize(("value", "expected"), CONVERTED, ids=lambda v: type(v).__name__)
def test_reasonable_values_are_converted_and_load_back(tmp_path, model, value, expected):
    path = save_checkpoint(tmp_path / "ck.pt", model, extra={"value": value})
    got = load_checkpoint(path, GPTModel(CFG))["extra"]["value"]
    if expected == "nan":
        assert got != got
    else:
        assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    "array", [np.arange(6).reshape(2, 3), np.ones(3, dtype=np.float16), np.array([True, False])]
)
def test_numpy_arrays_become_tensors(tmp_path, model, array):
    path = save_checkpoint(tmp_path / "ck.pt", model, extra={"a": array})
    got = read_checkpoint(path)["extra"]["a"]
    assert isinstance(got, torch.Tensor) and np.array_equal(got.numpy(), array)


def test_parameters_and_tensors_that_need_grad_are_stored_as_data(tmp_path, model):
    extra = {"p": torch.nn.Parameter(torch.ones(2)), "t": torch.ones(2, requires_grad=True)}
    path = save_checkpoint(tmp_path / "ck.pt", model, extra=extra)
    got = read_checkpoint(path)["extra"]
    assert torch.equal(got["p"], torch.ones(2)) and torch.equal(got["t"], torch.ones(2))


class Opaque:
    pass


REFUSED = [
    ("fn", lambda: 1),
    ("obj", Opaque()),
    ("module", torch.nn.Linear(2, 2)),
    ("lock", threading.Lock()),
    ("gen", (i for i in range(3))),
    ("objarray", np.array([object()], dtype=object)),
    ("nested", {"deep": [1, 2, Opaque()]}),
    ("key", {Opaque(): 1}),
    ("type", int),
    ("range", range(3)),
    ("slice", slice(1, 2)),
    ("ellipsis", ...),
]


@pytest.mark.parametrize(("name", "value"), REFUSED, ids=[n for n, _ in REFUSED])
def test_unloadable_values_are_refused_before_writing(tmp_path, model, name, value):
    good = save_checkpoint(tmp_path / "ck.pt", model, step=1)
    before = good.read_bytes()
    with pytest.raises(TypeError, match=r"extra\[") as info:
        save_checkpoint(good, model, step=2, extra={name: value})
    assert name in str(info.value) or "key" in str(info.value)
    assert good.read_bytes() == before  # the last good checkpoint is untouched
    assert read_checkpoint(good)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary left


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"step": 2.5}, TypeError, "step"),
        ({"step": -1}, ValueError, "step"),
        ({"step": "3"}, TypeError, "step"),
        ({"data_position": -4}, ValueError, "data_position"),
        ({"data_position": 1.0}, TypeError, "data_position"),
        ({"extra": [1, 2]}, TypeError, "extra"),
        ({"config": "small"}, TypeError, "config"),
        ({"config": {"f": lambda: 0}}, TypeError, "config"),
        ({"optimizer": "adam"}, TypeError, "optimizer"),
    ],
)
def test_bad_arguments_name_the_parameter(tmp_path, model, kwargs, error, name):
    with pytest.raises(error, match=name):
        save_checkpoint(tmp_path / "ck.pt", model, **kwargs)
    assert not list(tmp_path.iterdir())


def test_numpy_step_is_accepted(tmp_path, model):
    path = save_checkpoint(tmp_path / "ck.pt", model, step=np.int64(5), data_position=np.int32(3))
    ckpt = read_checkpoint(path)
    assert (ckpt["step"], ckpt["data_position"]) == (5, 3)


def test_model_that_is_not_a_module(tmp_path):
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        save_checkpoint(tmp_path / "ck.pt", {"w": torch.ones(2)})


def test_file_that_does_not_read_back_never_replaces_the_good_one(tmp_path, model, monkeypatch):
    """Even if something slips past the checks, the read-back before the rename stops it."""
    good = save_checkpoint(tmp_path / "ck.pt", model, step=1)
    before = good.read_bytes()
    real_save = torch.save

    def sabotaged(obj, f):  # writes a pickle that weights_only refuses
        obj["extra"]["bad"] = Opaque()
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", sabotaged)
    with pytest.raises(CheckpointError, match=r"ck\.pt.*does not load back"):
        save_checkpoint(good, model, step=2)
    assert good.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_directory_as_path_is_refused(tmp_path, model):
    (tmp_path / "ck.pt").mkdir()
    with pytest.raises(IsADirectoryError, match=r"ck\.pt"):
        save_checkpoint(tmp_path / "ck.pt", model)
