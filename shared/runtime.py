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

import operator
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
SEED_LIMIT = 2**32  # numpy's seeds are 32-bit; torch and random take them as well


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
        if not isinstance(options, dict):
            raise TypeError(f"options must be a dict of scale -> value, got {options!r}")
        unknown = sorted(set(options) - set(SCALES), key=str)
        if unknown:
            raise ValueError(f"options has unknown scale(s) {unknown}; scales are {SCALES}")
        for name in reversed(SCALES[: SCALES.index(self.scale) + 1]):
            if name in options:
                return options[name]
        raise KeyError(f"no option for scale {self.scale!r} or smaller in {sorted(options)}")

    def __str__(self) -> str:
        return (
            f"scale={self.scale} device={self.device.type} threads={self.threads} "
            f"seed={self.seed} torch={torch.__version__.split('+')[0]}"
        )


def _check_seed(seed: object, name: str) -> int:
    if isinstance(seed, bool) or not hasattr(seed, "__index__"):
        raise TypeError(f"{name} must be an int, got {seed!r}")
    seed = operator.index(seed)
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{name} must be in [0, 2**32), got {seed}")
    return seed


def _env(name: str) -> str | None:
    """The stripped value of an environment variable; unset or blank gives None."""
    value = os.environ.get(name, "").strip()
    return value or None


def _int_from_env(name: str, default: int) -> int:
    value = _env(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy and torch (CPU and every GPU)."""
    seed = _check_seed(seed, "seed")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _scale_from_env() -> str:
    scale = (_env("LLMS_SCALE") or "tiny").lower()
    if scale not in SCALES:
        raise ValueError(f"LLMS_SCALE={scale!r} is not one of {', '.join(SCALES)}")
    return scale


def choose_device(name: str | None = None) -> torch.device:
    """``name`` or ``LLMS_DEVICE`` if given (checked), else cuda if present, else cpu."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"device name must be a str such as 'cpu', got {name!r}")
    from_env = not name
    name = (name or _env("LLMS_DEVICE") or "").strip().lower()
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in DEVICES:
        what = f"LLMS_DEVICE={name!r}" if from_env else f"device {name!r}"
        raise ValueError(f"{what} is not one of {', '.join(DEVICES)}")
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
    if scale is not None and not isinstance(scale, str):
        raise TypeError(f"scale must be one of {', '.join(SCALES)} (a str), got {scale!r}")
    scale = scale or _scale_from_env()
    if scale not in SCALES:
        raise ValueError(f"scale {scale!r} is not one of {', '.join(SCALES)}")
    if seed is None:
        seed = _int_from_env("LLMS_SEED", 123)
        if not 0 <= seed < SEED_LIMIT:
            raise ValueError(f"LLMS_SEED={seed} must be in [0, 2**32)")
    seed = _check_seed(seed, "seed")
    default_threads = 2 if scale == "tiny" else (os.cpu_count() or 1)
    threads = _int_from_env("LLMS_THREADS", default_threads)
    if threads < 1:
        raise ValueError(f"LLMS_THREADS={threads} must be at least 1")
    device = choose_device()  # checked before anything global changes
    torch.set_num_threads(threads)
    seed_everything(seed)
    torch.set_printoptions(precision=4, sci_mode=False, linewidth=100)
    np.set_printoptions(precision=4, suppress=True, linewidth=100)
    rt = Runtime(scale=scale, device=device, seed=seed, threads=threads)
    if not quiet:
        print(rt)
    return rt
