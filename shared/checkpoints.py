"""Checkpoints that are safe to write, safe to read, and say clearly what is wrong.

A checkpoint is one ``torch.save`` file holding a plain dict:

- ``format`` / ``version``: what kind of file this is;
- ``config``: the model's ``GPTConfig`` as a plain dict, so ``load_model`` can rebuild it;
- ``model``: the ``state_dict`` (tied weights are stored once, their storage is shared);
- ``optimizer``: the optimizer's ``state_dict`` or None (a released model leaves it out);
- ``step``, ``data_position``: where training stood, so a resumed run continues exactly;
- ``extra``: anything else small and plain (history, RNG state, metrics).

Three promises:

1. **Atomic writes.** ``save_checkpoint`` writes a temporary file in the same folder,
   flushes it to disk (``fsync``) and then renames it over the target with ``os.replace``,
   which is atomic on POSIX and Windows. A crash or full disk mid-save leaves the previous
   checkpoint untouched, never half a file in its place.
2. **Safe reads.** ``torch.load(weights_only=True)`` only rebuilds tensors and plain Python
   containers, never arbitrary objects, so a checkpoint from elsewhere cannot run code.
3. **All or nothing.** ``load_checkpoint`` checks the config, every key and every shape
   before it copies a single number into the model or the optimizer; a mismatch raises a
   ``CheckpointError`` that names the file and the offending keys, and the model is unchanged.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shared.files import atomic_open
from shared.gpt import GPTConfig, GPTModel

__all__ = ["CheckpointError", "load_checkpoint", "load_model", "save_checkpoint"]

FORMAT = "llms-from-scratch-checkpoint"
VERSION = 1
# Config fields that change how a model runs, not what its weights mean: a checkpoint
# trained without dropout may be fine-tuned with it, or run on the explicit attention path.
RUNTIME_KEYS = frozenset({"drop_rate", "fused_attention"})


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: corrupt, or not matching the model."""


def _config_dict(config: GPTConfig | Mapping | None) -> dict | None:
    if config is None:
        return None
    if isinstance(config, GPTConfig):
        return config.to_dict()
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"config must be a GPTConfig, a dict or None, got {type(config).__name__}")


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    step: int = 0,
    config: GPTConfig | Mapping | None = None,
    data_position: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` (and optionally ``optimizer``) to ``path`` atomically; return the path.

    ``config`` defaults to ``model.cfg`` when the model has one (every ``GPTModel`` does).
    ``extra`` must hold only tensors and plain Python values (what ``weights_only`` loads).
    """
    path = Path(path)
    if config is None:
        config = getattr(model, "cfg", None)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": _config_dict(config),
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "step": int(step),
        "data_position": int(data_position),
        "extra": dict(extra or {}),
    }
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load and sanity-check the raw checkpoint dict, without touching any model."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (PermissionError, IsADirectoryError):
        raise  # the file system's own message says it best
    # A cut-off zip archive surfaces as OSError, RuntimeError or EOFError depending on where
    # the cut is; a damaged pickle inside it as UnpicklingError.
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt and cannot be read ({type(e).__name__}: "
            f"{str(e).split('. ')[0].splitlines()[0] if str(e) else 'no detail'})"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint written by save_checkpoint")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {ckpt.get('version')!r}, "
            f"this code reads version {VERSION}"
        )
    return ckpt


def _check_config(path: Path, stored: dict | None, expected: dict) -> None:
    """Raise naming every key (except the run-time ones) whose value differs."""
    if stored is None:
        raise CheckpointError(f"checkpoint {path} stores no config to check against")
    keys = sorted((set(stored) | set(expected)) - RUNTIME_KEYS)
    diffs = [k for k in keys if stored.get(k) != expected.get(k)]
    if diffs:
        detail = ", ".join(
            f"{k}: file {stored.get(k)!r} vs expected {expected.get(k)!r}" for k in diffs
        )
        raise CheckpointError(f"checkpoint {path} has a different config ({detail})")


def _check_state(path: Path, stored: Mapping[str, torch.Tensor], model: nn.Module) -> None:
    """Same keys, same shapes: checked in full before ``load_state_dict`` copies anything."""
    own = model.state_dict()
    missing = sorted(set(own) - set(stored))
    unexpected = sorted(set(stored) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model: missing keys {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    wrong = [
        f"{k}: file {tuple(stored[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if tuple(stored[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise CheckpointError(f"checkpoint {path} has different shapes: {'; '.join(wrong)}")


def _check_optimizer(path: Path, stored: dict | None, optimizer: torch.optim.Optimizer) -> None:
    if stored is None:
        raise CheckpointError(f"checkpoint {path} holds no optimizer state to resume from")
    ours = [len(g["params"]) for g in optimizer.param_groups]
    theirs = [len(g["params"]) for g in stored["param_groups"]]
    if ours != theirs:
        raise CheckpointError(
            f"checkpoint {path}: optimizer parameter groups have sizes {theirs}, "
            f"but this optimizer has {ours}"
        )


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    expected_config: GPTConfig | Mapping | None = None,
) -> dict:
    """Read ``path``, check it, then (only if every check passed) fill ``model``/``optimizer``.

    The config is compared with ``expected_config``, or with ``model.cfg`` when not given;
    the run-time fields ``drop_rate`` and ``fused_attention`` may differ.
    Returns the checkpoint dict (``step``, ``data_position``, ``extra``, ``config``, ...).
    Raises ``CheckpointError`` naming the file for a corrupt file, a different config (with
    the differing keys), missing/unexpected keys or different shapes.
    """
    path = Path(path)
    ckpt = read_checkpoint(path)
    if expected_config is None and model is not None:
        expected_config = getattr(model, "cfg", None)
    if expected_config is not None:
        _check_config(path, ckpt["config"], _config_dict(expected_config))
    if model is not None:
        _check_state(path, ckpt["model"], model)
    if optimizer is not None:
        _check_optimizer(path, ckpt["optimizer"], optimizer)
    # Every check passed: now copy the numbers in.
    if model is not None:
        model.load_state_dict(ckpt["model"])
    if optimizer is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt


def load_model(
    path: str | os.PathLike, device: torch.device | str = "cpu", **runtime: Any
) -> GPTModel:
    """Rebuild the ``GPTModel`` stored in ``path`` from its own config, in eval mode.

    Keyword arguments override the run-time fields of the config, e.g.
    ``load_model(path, drop_rate=0.1)`` or ``load_model(path, fused_attention=False)``.
    """
    path = Path(path)
    ckpt = read_checkpoint(path)
    if ckpt["config"] is None:
        raise CheckpointError(f"checkpoint {path} stores no config, so the model cannot be built")
    not_runtime = sorted(set(runtime) - RUNTIME_KEYS)
    if not_runtime:
        raise ValueError(
            f"load_model can only override {sorted(RUNTIME_KEYS)}, not {not_runtime}: "
            "the other fields are fixed by the stored weights"
        )
    model = GPTModel(GPTConfig.from_dict({**ckpt["config"], **runtime}))
    _check_state(path, ckpt["model"], model)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()
