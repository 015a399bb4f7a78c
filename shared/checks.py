"""Argument checks shared by every module: one function, and one wording, per idea.

- ``check_int``: an int (numpy ints too; not bools, floats or None), within bounds.
- ``check_number``: a finite real number (numpy floats too; not bools), within bounds.
- ``check_token_ids``: a flat list of token ids, from a list or a 1-D integer tensor.
- ``check_bool``: True or False, nothing that merely behaves like one.
- ``check_fields``: the fields of a config dataclass (``PPOConfig``, ``DPOConfig``, ...).
- ``is_int`` / ``is_number``: the same tests as predicates, for code that reports a bad
  value its own way (the judge server answers HTTP 400 instead of raising).

Bools are refused although Python counts them as ints: ``max_new_tokens=True`` is a slip,
never a request for one token.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence

__all__ = [
    "check_bool",
    "check_fields",
    "check_int",
    "check_number",
    "check_token_ids",
    "is_int",
    "is_number",
]


def is_int(value: object) -> bool:
    """True for ints and numpy ints; False for bools, floats and everything else."""
    return not isinstance(value, bool) and hasattr(value, "__index__")


def is_number(value: object) -> bool:
    """True for real numbers (ints, floats, numpy scalars); False for bools."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def check_int(
    value: object, name: str, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as a plain int, or a TypeError/ValueError that names ``name``."""
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {value!r}")
    value = operator.index(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be an int <= {maximum}, got {value}")
    return value


def check_number(
    value: object,
    name: str,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    exclusive: bool = False,
) -> float:
    """``value`` as a finite float, at least ``minimum`` (above it with ``exclusive``) and
    at most ``maximum``; otherwise a TypeError/ValueError that names ``name``."""
    if not is_number(value):
        raise TypeError(f"{name} must be a number, got {value!r}")
    number = float(value)
    low_ok = minimum is None or (number > minimum if exclusive else number >= minimum)
    high_ok = maximum is None or number <= maximum
    if not (math.isfinite(number) and low_ok and high_ok):
        bounds = []
        if minimum is not None:
            bounds.append(f"{'>' if exclusive else '>='} {minimum:g}")
        if maximum is not None:
            bounds.append(f"<= {maximum:g}")
        bound = (" " + " and ".join(bounds)) if bounds else ""
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return number


def check_token_ids(ids: object, name: str) -> list[int]:
    """A list of token ids (ints, or a 1-D integer tensor) as a plain list of ints; bools and
    floats are refused (``[True, False]`` is a slip, never the ids 1 and 0)."""
    if hasattr(ids, "dim") and hasattr(ids, "tolist"):  # a tensor, without importing torch
        if ids.dtype.is_floating_point or ids.dtype.is_complex or str(ids.dtype) == "torch.bool":
            raise TypeError(f"{name} must hold integer token ids, got a {ids.dtype} tensor")
        if ids.dim() != 1:
            raise ValueError(f"{name} must be a 1-D list of token ids, got {tuple(ids.shape)}")
        return ids.tolist()
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise TypeError(f"{name} must be a list of token ids, got {type(ids).__name__}")
    if not all(is_int(t) for t in ids):
        raise TypeError(f"{name} must contain only int token ids, got {list(ids)[:5]}")
    return [operator.index(t) for t in ids]


def check_bool(value: object, name: str) -> bool:
    """``value`` if it is True or False (numpy bools too); a TypeError otherwise."""
    if type(value).__name__ not in ("bool", "bool_"):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_fields(
    config: object,
    ints: dict[str, int] | None = None,
    numbers: dict[str, tuple[float | None, float | None, bool]] | None = None,
) -> None:
    """Check the fields of a config dataclass, naming each as ``Class.field``: every field in
    ``ints`` an int at least its minimum, every field in ``numbers`` a finite number within
    ``(minimum, maximum, exclusive)`` (``exclusive``: strictly above the minimum)."""
    cls = type(config).__name__
    for name, minimum in (ints or {}).items():
        check_int(getattr(config, name), f"{cls}.{name}", minimum)
    for name, (low, high, exclusive) in (numbers or {}).items():
        check_number(getattr(config, name), f"{cls}.{name}", low, high, exclusive=exclusive)
