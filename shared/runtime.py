"""Notebook conventions in one call: ``rt = shared.setup()`` at the top of every chapter.

Environment variables (all optional):

- ``LLMS_SCALE``: ``tiny`` (default; what CI and the committed outputs use), ``small``
  (a laptop, minutes to an hour) or ``gpt2`` (a GPU).
- ``LLMS_DEVICE``: ``cpu``, ``cuda`` or ``mps``. Default: ``cuda`` if available, else
  ``cpu``; ``mps`` only when asked, because some kernels still differ there.
- ``LLMS_THREADS``: torch CPU threads. Default 2 at the ``tiny`` scale, so that results
  compared in CI do not drift with the number of cores; all cores otherwise.
- ``LLMS_SEED``: the seed for ``random``, numpy and torch (default 123).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_DIR / "data"

SCALES = ("tiny", "small", "gpt2")
DEVICES = ("cpu", "cuda", "mps")


@dataclass(frozen=True)
class Runtime:
    """What ``setup`` chose; notebooks print it once and read sizes from ``choose``."""

    scale: str
    device: torch.device
    seed: int
    threads: int

    def choose(self, options: dict):
        """Pick the value for the current scale from ``{"tiny": ..., "small": ..., ...}``.

        A scale missing from ``options`` falls back to the nearest smaller one, so a
        chapter that has nothing bigger to offer than ``small`` still runs at ``gpt2``.
        """
        for name in reversed(SCALES[: SCALES.index(self.scale) + 1]):
            if name in options:
                return options[name]
        raise KeyError(f"no option for scale {self.scale!r} or smaller in {sorted(options)}")

    def __str__(self) -> str:
        return (
            f"scale={self.scale} device={self.device.type} threads={self.threads} "
            f"seed={self.seed} torch={torch.__version__.split('+')[0]}"
        )


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _scale_from_env() -> str:
    scale = os.environ.get("LLMS_SCALE", "tiny").strip().lower()
    if scale not in SCALES:
        raise ValueError(f"LLMS_SCALE={scale!r} is not one of {', '.join(SCALES)}")
    return scale


def choose_device(name: str | None = None) -> torch.device:
    """``name`` or ``LLMS_DEVICE`` if given (checked), else cuda if present, else cpu."""
    name = (name or os.environ.get("LLMS_DEVICE", "")).strip().lower()
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in DEVICES:
        raise ValueError(f"LLMS_DEVICE={name!r} is not one of {', '.join(DEVICES)}")
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if not available[name]:
        raise RuntimeError(f"device {name!r} was asked for but is not available here")
    return torch.device(name)


def setup(seed: int | None = None, scale: str | None = None, quiet: bool = False) -> Runtime:
    """Seed everything, fix the thread count, choose device and scale, set print options."""
    scale = scale or _scale_from_env()
    if scale not in SCALES:
        raise ValueError(f"scale {scale!r} is not one of {', '.join(SCALES)}")
    seed = int(os.environ.get("LLMS_SEED", 123)) if seed is None else seed
    default_threads = 2 if scale == "tiny" else (os.cpu_count() or 1)
    threads = int(os.environ.get("LLMS_THREADS", default_threads))
    torch.set_num_threads(threads)
    seed_everything(seed)
    torch.set_printoptions(precision=4, sci_mode=False, linewidth=100)
    np.set_printoptions(precision=4, suppress=True, linewidth=100)
    rt = Runtime(scale=scale, device=choose_device(), seed=seed, threads=threads)
    if not quiet:
        print(rt)
    return rt
