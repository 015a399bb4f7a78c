"""Checkpoints that are safe to write, safe to read, and say clearly what is wrong.

A checkpoint is one ``torch.save`` file holding a plain dict:

- ``format`` / ``version``: what kind of file this is;
- ``config``: the model's ``GPTConfig`` as a plain dict, so ``load_model`` can rebuild it;
- ``model``: the ``state_dict`` (tied weights are stored once, their storage is shared);
- ``optimizer``: the optimizer's ``state_dict`` or None (a released model leaves it out);
- ``step``, ``data_position``: where training stood, so a resumed run continues exactly;
- ``extra``: anything else small and plain (history, RNG state, metrics);
- ``tokenizer``: the identity of the tokenizer the ids belong to (``shared.bpe.
  tokenizer_identity``), or None;
- ``checksums``: a SHA-256 of the tensors of ``model``, ``optimizer`` and ``extra``.

Four promises:

1. **Atomic writes.** ``save_checkpoint`` writes a temporary file in the same folder,
   flushes it to disk (``fsync``), reads it back with ``weights_only=True`` and compares
   the checksums, and only then renames it over the target with ``os.replace``, which is
   atomic on POSIX and Windows. A crash, a full disk or a value that could not be read
   back leaves the previous checkpoint untouched, never half a file (or an unreadable one)
   in its place. So does a ``config`` that does not build a model with exactly these
   weights. Temporary files left by a killed writer are removed by the next save, and a
   symbolic link is written through (its target is replaced, the link stays).
2. **Safe reads.** ``torch.load(weights_only=True)`` only rebuilds tensors and plain Python
   containers, never arbitrary objects, so a checkpoint from elsewhere cannot run code.
3. **Intact numbers.** Tensor data damaged on disk does not match the stored checksum,
   and weights that are NaN or inf are refused (on save and on load), so a damaged file
   never becomes a model that quietly computes nonsense.
4. **All or nothing.** ``load_checkpoint`` checks the config, every key and every shape,
   the optimizer state (whose parameters must be the model's) and (if given) the tokenizer
   before it copies a single number into the model or the optimizer; a mismatch raises a
   ``CheckpointError`` that names the file and the offending keys, and the model is
   unchanged.

Files written before checksums and tokenizer identities existed load as before (they get
the finite-weights check only).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import operator
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shared.bpe import check_tokenizer, tokenizer_identity
from shared.files import as_path, atomic_open
from shared.gpt import GPTConfig, GPTModel

__all__ = ["CheckpointError", "load_checkpoint", "load_model", "read_checkpoint", "save_checkpoint"]

FORMAT = "llms-from-scratch-checkpoint"
VERSION = 1  # files with "checksums" / "tokenizer" keys still read as version 1 elsewhere
# Config fields that change how a model runs, not what its weights mean: a checkpoint
# trained without dropout may be fine-tuned with it, or run on the explicit attention path.
RUNTIME_KEYS = frozenset({"drop_rate", "fused_attention"})
# The parts of a checkpoint whose tensors are covered by a checksum.
CHECKSUMMED = ("model", "optimizer", "extra")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: corrupt, or not matching the model."""


# --------------------------------------------------------------------------- plain values

_PLAIN_SCALARS = (type(None), bool, int, float, complex, str, bytes, bytearray)
_PLAIN_TORCH = (torch.Size, torch.dtype, torch.device)


def _plain(value: Any, where: str) -> Any:
    """``value`` as something ``torch.load(weights_only=True)`` reads back, or TypeError.

    Kept: None, bool, int, float, complex, str, bytes, tensors, ``torch.Size``/``dtype``/
    ``device``, and lists, tuples, sets and dicts of these. Converted, because a careful
    user would expect them to work: numpy scalars (to Python numbers), numpy arrays (to
    tensors), paths (to str), dataclasses such as ``GPTConfig`` (to dicts), other mappings
    (to dicts), frozensets (to sets), subclasses of int/float/str (to the base type).
    Anything else (a function, a module, an arbitrary object) would make the file
    unreadable with ``weights_only=True``, so it is refused here, naming where it sits.
    """
    if type(value) in _PLAIN_SCALARS or isinstance(value, _PLAIN_TORCH):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach()  # a Parameter or a tensor that requires grad: just the data
    if isinstance(value, np.generic):
        return _plain(value.item(), where)
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufc":
            raise TypeError(f"{where} is a numpy array of dtype {value.dtype}, not numbers")
        return torch.from_numpy(np.ascontiguousarray(value).copy())
    for base in (bool, int, float, str):  # IntEnum, numpy-free subclasses, ...
        if isinstance(value, base):
            return base(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, GPTConfig):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value), where)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            key = _plain(k, f"a key of {where}")
            if isinstance(key, (torch.Tensor, list, dict, set, bytearray)):
                raise TypeError(f"{where} has a key of type {type(k).__name__}")
            out[key] = _plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, (set, frozenset)):
        return {_plain(v, f"an element of {where}") for v in value}
    raise TypeError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which a checkpoint "
        "cannot hold (it must load with weights_only=True): store tensors, numbers, str, "
        "lists and dicts of them"
    )


def _non_negative_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an int, got {value!r}")
    value = operator.index(value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


# --------------------------------------------------------------------------- checksums


def _tensor_digest(obj: Any) -> str:
    """SHA-256 over every tensor in ``obj`` (with its place, dtype and shape)."""
    h = hashlib.sha256()

    def walk(x: Any, where: str) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"{where}:{t.dtype}:{tuple(t.shape)};".encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy().data)
        elif isinstance(x, Mapping):
            for k in sorted(x, key=repr):
                walk(x[k], f"{where}/{k!r}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{where}/{i}")

    walk(obj, "")
    return h.hexdigest()


def _non_finite(state: Mapping[str, Any]) -> list[str]:
    """Keys of floating tensors holding a NaN or an inf (the max of |x| propagates both)."""
    return [
        k
        for k, v in state.items()
        if isinstance(v, torch.Tensor)
        and v.is_floating_point()
        and v.numel()
        and not math.isfinite(v.detach().abs().amax())
    ]


def _verify(path: Path, ckpt: dict) -> None:
    """Structure, checksums (when stored) and finite weights, or CheckpointError."""
    kinds = {"config": (dict, type(None)), "model": dict, "optimizer": (dict, type(None))}
    kinds.update({"extra": dict, "step": int, "data_position": int})
    for key, kind in kinds.items():
        if not isinstance(ckpt.get(key), kind):
            raise CheckpointError(
                f"checkpoint {path} is corrupt: {key!r} is a {type(ckpt.get(key)).__name__}"
            )
    not_tensors = [k for k, v in ckpt["model"].items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"checkpoint {path} is corrupt: {not_tensors[:5]} are not tensors")
    stored = ckpt.get("checksums")
    if stored is not None:
        for part in CHECKSUMMED:
            if stored.get(part) != _tensor_digest(ckpt.get(part)):
                raise CheckpointError(
                    f"checkpoint {path} is corrupt: the tensors of {part!r} do not match the "
                    "checksum stored when the file was written (damaged on disk or in transfer)"
                )
    bad = _non_finite(ckpt["model"])
    if bad:
        raise CheckpointError(
            f"checkpoint {path} holds non-finite (NaN or inf) weights in {bad[:5]}"
            f"{'...' if len(bad) > 5 else ''}; the file is corrupt or training diverged"
        )


# --------------------------------------------------------------------------- saving


def _config_dict(config: GPTConfig | Mapping | None) -> dict | None:
    if config is None:
        return None
    if isinstance(config, GPTConfig):
        return config.to_dict()
    if isinstance(config, Mapping):
        return _plain(config, "config")
    raise TypeError(f"config must be a GPTConfig, a dict or None, got {type(config).__name__}")


def _check_fits_config(path: Path, config: dict, state: Mapping, model: nn.Module) -> None:
    """The model ``config`` builds has exactly the keys and shapes of ``state``, or raise.

    That model is what ``load_model`` builds, or for a ``ScalarModel`` (its keys start
    with ``backbone.``) what ``load_scalar_model`` builds: a file it cannot read must
    never replace a good one.
    """
    required = [f.name for f in dataclasses.fields(GPTConfig) if f.default is dataclasses.MISSING]
    missing = [k for k in required if k not in config]
    try:
        if missing:
            raise ValueError(f"the fields {missing} are missing")
        cfg = GPTConfig.from_dict(config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"cannot save {path}: the config does not build a GPTModel ({e}); "
            f"{path} was left unchanged"
        ) from None
    scalar = any(k.startswith("backbone.") for k in state)
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        want = {k: tuple(v.shape) for k, v in GPTModel(cfg).state_dict().items()}
    if scalar:  # shared.reward_model.ScalarModel: no vocabulary head, a head of one output
        want = {f"backbone.{k}": s for k, s in want.items() if not k.startswith("out_head.")}
        want.update({"head.weight": (1, cfg.emb_dim), "head.bias": (1,)})
    have = {k: tuple(v.shape) for k, v in state.items()}
    untied = False
    if want == have and cfg.tie_weights and not scalar:
        # load_model would copy both into the one tied matrix: the last one would win
        emb, head = state["tok_emb.weight"], state["out_head.weight"]
        untied = emb.data_ptr() != head.data_ptr() and not torch.equal(emb, head)
    if want == have and not untied:
        return
    problems = []
    own = getattr(model, "cfg", None)
    if isinstance(own, GPTConfig):  # name the fields, when the model knows its own
        own = own.to_dict()
        fields = [k for k in sorted(own.keys() - RUNTIME_KEYS) if own[k] != config.get(k)]
        problems += [f"{k}: config {config.get(k)!r} vs model {own[k]!r}" for k in fields]
    wrong = sorted(k for k in want.keys() & have.keys() if want[k] != have[k])
    problems += [f"{k}: weights {have[k]} vs config {want[k]}" for k in wrong[:3]]
    for name, keys in (
        ("missing", want.keys() - have.keys()),
        ("unexpected", have.keys() - want.keys()),
    ):
        if keys:
            problems.append(f"{name} keys {sorted(keys)[:3]}{'...' if len(keys) > 3 else ''}")
    if untied:
        problems.append("tie_weights: out_head.weight and tok_emb.weight differ")
    raise CheckpointError(
        f"cannot save {path}: the config does not fit the weights ({'; '.join(problems)}); "
        f"{path} was left unchanged"
    )


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    step: int = 0,
    config: GPTConfig | Mapping | None = None,
    data_position: int = 0,
    extra: Mapping[str, Any] | None = None,
    *,
    tokenizer: Any = None,
) -> Path:
    """Write ``model`` (and optionally ``optimizer``) to ``path`` atomically; return the path.

    ``config`` defaults to ``model.cfg`` when the model has one (every ``GPTModel`` does).
    ``extra`` must hold only tensors and plain Python values (what ``weights_only`` loads);
    numpy values, paths and dataclasses are converted, anything else is a TypeError raised
    before a byte is written. ``tokenizer`` (a ``tiktoken.Encoding`` or ``BPETokenizer``)
    records which vocabulary the model's ids belong to; without it, the identity the model
    was loaded with (if any) is kept. Weights that are NaN or inf are refused, and so is a
    ``config`` that does not build a model with these keys and shapes (the ``GPTModel``
    of ``load_model``, or for a ``ScalarModel`` that of ``load_scalar_model``). A
    symbolic link at ``path`` stays: the file it points to is replaced.

    The file is read back with ``weights_only=True`` and its checksums compared before it
    replaces ``path``, so a save never swaps a good checkpoint for an unreadable one.
    """
    path = as_path(path)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}"
        )
    step = _non_negative_int(step, "step")
    data_position = _non_negative_int(data_position, "data_position")
    if extra is not None and not isinstance(extra, Mapping):
        raise TypeError(f"extra must be a dict or None, got {type(extra).__name__}")
    if config is None:
        config = getattr(model, "cfg", None)
    config_dict = _config_dict(config)
    state = model.state_dict()
    bad = _non_finite(state)
    if bad:
        raise ValueError(
            f"model has non-finite (NaN or inf) weights in {bad[:5]}; refusing to write "
            f"{path}, which could not be used"
        )
    if config_dict is not None:
        _check_fits_config(path, config_dict, state, model)
    if tokenizer is not None:
        identity = tokenizer_identity(tokenizer)
        vocab = (config_dict or {}).get("vocab_size")
        check_tokenizer(None, tokenizer, vocab, "the model")
    else:
        identity = getattr(model, "tokenizer_identity", None)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": config_dict,
        "model": state,
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "step": step,
        "data_position": data_position,
        "extra": _plain(dict(extra or {}), "extra"),
        "tokenizer": identity,
    }
    payload["checksums"] = {part: _tensor_digest(payload[part]) for part in CHECKSUMMED}

    def read_back(tmp: Path) -> None:
        try:
            loaded = torch.load(tmp, map_location="cpu", weights_only=True)
        except Exception as e:  # what weights_only refuses, or a bad write
            raise CheckpointError(
                f"the checkpoint written for {path} does not load back with weights_only=True "
                f"({type(e).__name__}); {path} was left unchanged"
            ) from e
        _verify(path, loaded)

    with atomic_open(path, "wb", verify=read_back) as f:
        torch.save(payload, f)
    return path


# --------------------------------------------------------------------------- loading


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load and check the raw checkpoint dict (structure, checksums, finite weights),
    without touching any model."""
    path = as_path(path)
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
    _verify(path, ckpt)
    ckpt.setdefault("tokenizer", None)  # files written before identities were stored
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
    """Same groups, same hyper-parameter names (same kind of optimizer), same state shapes:
    everything ``optimizer.load_state_dict`` or the next ``step`` would trip over later."""
    if stored is None:
        raise CheckpointError(f"checkpoint {path} holds no optimizer state to resume from")
    try:
        groups, state = stored["param_groups"], stored["state"]
        theirs = [len(g["params"]) for g in groups]
        their_keys = [set(g) - {"params"} for g in groups]
        ids = [i for g in groups for i in g["params"]]
    except (KeyError, TypeError) as e:
        raise CheckpointError(
            f"checkpoint {path}: the optimizer state is malformed ({e!r})"
        ) from None
    ours = [len(g["params"]) for g in optimizer.param_groups]
    if ours != theirs:
        raise CheckpointError(
            f"checkpoint {path}: optimizer parameter groups have sizes {theirs}, "
            f"but this optimizer has {ours}"
        )
    our_keys = [set(g) - {"params"} for g in optimizer.param_groups]
    missing = sorted(set().union(*our_keys) - set().union(*their_keys))
    if missing:
        raise CheckpointError(
            f"checkpoint {path}: the stored optimizer state has no {missing}: it was written "
            f"by a different kind of optimizer than {type(optimizer).__name__}"
        )
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, p in zip(ids, params):
        for name, value in (state.get(i) or {}).items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != p.shape:
                raise CheckpointError(
                    f"checkpoint {path}: optimizer state {name!r} of parameter {i} has shape "
                    f"{tuple(value.shape)}, but the parameter has {tuple(p.shape)}"
                )


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    expected_config: GPTConfig | Mapping | None = None,
    *,
    tokenizer: Any = None,
    _checkpoint: dict | None = None,
) -> dict:
    """Read ``path``, check it, then (only if every check passed) fill ``model``/``optimizer``.

    The config is compared with ``expected_config``, or with ``model.cfg`` when not given;
    the run-time fields ``drop_rate`` and ``fused_attention`` may differ. With
    ``tokenizer``, it must be the one recorded in the file (or an extension of it).
    Returns the checkpoint dict (``step``, ``data_position``, ``extra``, ``config``,
    ``tokenizer``, ...). Raises ``CheckpointError`` naming the file for a corrupt file, a
    different config (with the differing keys), missing/unexpected keys or different
    shapes, and a ``ValueError`` for an optimizer built for another model; then neither
    the model nor the optimizer has changed. The model keeps the stored tokenizer identity
    as ``model.tokenizer_identity``.
    """
    path = as_path(path)
    ckpt = read_checkpoint(path) if _checkpoint is None else _checkpoint
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or None, got {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}"
        )
    if model is not None and optimizer is not None:
        own = {id(p) for p in model.parameters()}
        params = [p for g in optimizer.param_groups for p in g["params"]]
        foreign = sum(id(p) not in own for p in params)
        if foreign:
            raise ValueError(
                f"cannot load checkpoint {path}: the optimizer updates {foreign} of its "
                f"{len(params)} parameters that are not the model's (it was built for "
                "another model, or a copy); nothing was loaded"
            )
    if expected_config is None and model is not None:
        expected_config = getattr(model, "cfg", None)
    if expected_config is not None:
        _check_config(path, ckpt["config"], _config_dict(expected_config))
    if model is not None:
        _check_state(path, ckpt["model"], model)
    if optimizer is not None:
        _check_optimizer(path, ckpt["optimizer"], optimizer)
    if tokenizer is not None:
        vocab = (ckpt["config"] or {}).get("vocab_size")
        try:
            check_tokenizer(ckpt["tokenizer"], tokenizer, vocab, f"checkpoint {path}")
        except ValueError as e:
            raise CheckpointError(str(e)) from None
    # Every check passed: now copy the numbers in (the optimizer first, from a backup if
    # the model then fails, so that nothing is left half loaded).
    if optimizer is not None:
        backup = copy.deepcopy(optimizer.state_dict())
        optimizer.load_state_dict(ckpt["optimizer"])
    if model is not None:
        try:
            model.load_state_dict(ckpt["model"])
        except BaseException:
            if optimizer is not None:
                optimizer.load_state_dict(backup)
            raise
        model.tokenizer_identity = ckpt["tokenizer"]
    return ckpt


def load_model(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    *,
    tokenizer: Any = None,
    **runtime: Any,
) -> GPTModel:
    """Rebuild the ``GPTModel`` stored in ``path`` from its own config, in eval mode.

    Keyword arguments override the run-time fields of the config, e.g.
    ``load_model(path, drop_rate=0.1)`` or ``load_model(path, fused_attention=False)``.
    With ``tokenizer`` (the encoding the notebook will use), a file that records another
    tokenizer is refused with an error naming both. The model remembers the stored
    identity (``model.tokenizer_identity``), which ``generate_text`` checks as well.
    """
    path = as_path(path)
    ckpt = read_checkpoint(path)
    if ckpt["config"] is None:
        raise CheckpointError(f"checkpoint {path} stores no config, so the model cannot be built")
    not_runtime = sorted(set(runtime) - RUNTIME_KEYS)
    if not_runtime:
        raise ValueError(
            f"load_model can only override {sorted(RUNTIME_KEYS)}, not {not_runtime}: "
            "the other fields are fixed by the stored weights"
        )
    try:
        cfg = GPTConfig.from_dict({**ckpt["config"], **runtime})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: the stored config is not valid ({e})") from e
    model = GPTModel(cfg)
    load_checkpoint(path, model, tokenizer=tokenizer, _checkpoint=ckpt)
    return model.to(device).eval()
