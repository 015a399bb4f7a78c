"""What every script in ``data/scripts/`` starts with: ``from common import ...``.

The scripts run as ``python data/scripts/<name>.py`` from the repository root (Python puts
this folder first on ``sys.path``, so ``common`` is found). This module

- makes ``import shared`` work from a clone where the package is not pip-installed;
- names the folders: ``REPO_DIR``, ``DATA_DIR`` (``data/``, where the scripts read their
  inputs and write their outputs), ``CHECKPOINTS`` and ``CACHE`` (interrupted runs);
- adds the flags every training script takes (``add_common_flags``), checks every flag
  before any work (the argparse types ``positive_int``, ``non_negative_int``,
  ``positive_float``, ``fraction``), and starts a run (``start_run``);
- holds the small helpers the scripts share: ``load_json``, ``load_split``, ``digest``,
  ``key_of``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

try:
    import shared
except ImportError:  # run from a clone where `shared` is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import shared

import torch  # noqa: E402

from shared.runtime import DATA_DIR, REPO_DIR  # noqa: E402

CHECKPOINTS = DATA_DIR / "checkpoints"
CACHE = DATA_DIR / "cache"
__all__ = ["CACHE", "CHECKPOINTS", "DATA_DIR", "REPO_DIR", "shared"]


def positive_int(text: str) -> int:
    """An argparse type: an int >= 1 (a step count of 0 must not mean "the default")."""
    return _number(text, int, 1, "an int >= 1")


def non_negative_int(text: str) -> int:
    """An argparse type: an int >= 0."""
    return _number(text, int, 0, "an int >= 0")


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (a learning rate of 0 trains nothing)."""
    value = _number(text, float, 0.0, "a finite number > 0")
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a share in (0, 1]."""
    value = _number(text, float, 0.0, "a number in (0, 1]")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def _number(text: str, kind: type, minimum: float, expected: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not math.isfinite(value) or value < minimum:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def add_common_flags(
    parser: argparse.ArgumentParser,
    seed: int = 123,
    threads_help: str = "torch threads (default: all cores)",
) -> argparse.ArgumentParser:
    """``--seed``, ``--no-progress`` and ``--threads``, as every training script takes them."""
    parser.add_argument("--seed", type=non_negative_int, default=seed)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--threads", type=positive_int, help=threads_help)
    return parser


def start_run(args: argparse.Namespace) -> None:
    """Seed everything (``--seed``), set the thread count (``--threads``; on a busy machine
    one thread can be faster than two fighting) and make sure the cache folder exists."""
    shared.setup(seed=args.seed, scale="small", quiet=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    CACHE.mkdir(parents=True, exist_ok=True)


def load_json(path: Path):
    return json.loads(path.read_text("utf-8"))


def load_split(name: str) -> list[dict]:
    """One split of the instruction data (``data/instructions/<name>.json``)."""
    return load_json(DATA_DIR / "instructions" / f"{name}.json")


def digest(path: Path) -> str:
    """The first 12 hex digits of a file's sha256 (names cache files after their inputs)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def key_of(*parts) -> str:
    """The first 12 hex digits of the sha256 of ``parts`` as JSON (keys sorted)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]
