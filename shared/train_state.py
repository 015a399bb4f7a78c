"""Training state that survives an interruption: one file, written atomically, read safely.

Every long training loop saves its state here and continues from it: the reward model
(``reward_model.train_reward_model``), DPO (``dpo.train_dpo``), PPO (``ppo.PPOTrainer``) and,
inside its model checkpoints, pretraining (``training.train`` checks its settings with
``check_settings``).

- ``save_state(path, settings, state)``: ``state`` (tensors, numbers, lists, dicts) with the
  ``settings`` of the run, through a temporary file and one rename, so an interrupted save
  never leaves half a file behind.
- ``load_state(path, settings)``: ``None`` when there is no file yet; the state when the file
  was saved with the same settings; otherwise an error that names the file and every setting
  that differs. A run with other settings must not quietly continue another run.
  Files are read with ``weights_only=True``: a planted file cannot run code.
- ``data_digest(*items)``: a short digest of the data a run trains on (pairs, token ids,
  tensors), to put among the settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from shared.files import atomic_open

__all__ = ["check_settings", "data_digest", "load_state", "save_state"]

SETTINGS = "settings"  # the key under which a state file records its run's settings


def data_digest(*items: Any) -> str:
    """A sha256 digest (16 hex digits) of tensors and of anything ``repr`` writes out in full
    (lists of token ids, strings, numbers)."""
    h = hashlib.sha256()
    for item in items:
        if isinstance(item, torch.Tensor):
            h.update(item.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(repr(item).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _plain(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings as JSON would store them (tuples become lists), so equal settings compare
    equal after a save and a load."""
    return json.loads(json.dumps(dict(settings), sort_keys=True))


def check_settings(path: str | os.PathLike, saved: Any, now: Mapping[str, Any]) -> None:
    """Refuse to continue from ``path`` unless it was saved with the settings ``now``."""
    if not isinstance(saved, Mapping):
        raise ValueError(
            f"{path} records no settings of the run that saved it: it is not a training state "
            "this code wrote; delete it to start over"
        )
    now = _plain(now)
    differ = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if differ:
        pairs = ", ".join(f"{k}={saved.get(k)!r} then, {now.get(k)!r} now" for k in differ)
        raise ValueError(
            f"{path} was saved by a run with other settings ({pairs}): continuing it would mix "
            "two runs. Use the same settings, or delete the file to start over"
        )


def save_state(
    path: str | os.PathLike, settings: Mapping[str, Any], state: Mapping[str, Any]
) -> None:
    """Write ``state`` and the run's ``settings`` to ``path`` atomically."""
    if SETTINGS in state:
        raise ValueError(f"state may not have a key {SETTINGS!r}: it is where the settings go")
    with atomic_open(Path(path)) as f:
        torch.save({SETTINGS: _plain(settings), **state}, f)


def load_state(path: str | os.PathLike, settings: Mapping[str, Any]) -> dict | None:
    """The state saved at ``path`` by a run with these ``settings``; ``None`` if there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # it holds objects whose loading would run code
        raise ValueError(
            f"cannot read the training state {path}: it holds objects other than tensors and "
            "plain data, which are never loaded (they could run code); delete it"
        ) from exc
    except Exception as exc:  # truncated, or not a torch file at all
        raise ValueError(
            f"cannot read the training state {path} ({type(exc).__name__}: {exc}); delete it "
            "to start over"
        ) from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a training state (a {type(state).__name__}); delete it")
    check_settings(path, state.pop(SETTINGS, None), settings)
    return state
