"""Pretraining a GPT: the loss, the optimizer, the learning-rate schedule and the loop.

- ``next_token_loss``: cross-entropy between each position's logits and the next token.
- ``evaluate_loss`` and ``perplexity``: the numbers a training run is judged by.
- ``make_optimizer``: AdamW with weight decay on matrices only.
- ``lr_at``: linear warmup, then cosine decay to a floor.
- ``TokenBatches``: batches that are a pure function of ``(seed, batch index)``, so the
  data position is one integer that a checkpoint can store, and data-parallel ranks can
  each take their slice of the same global batch.
- ``train``: the one training loop used by the notebook, ``data/scripts/pretrain.py`` and the
  data-parallel launcher (periodic evaluation, clipping, schedule, checkpoints, resume).
- ``bigram_baseline``: the count-based model that any GPT worth training must beat.
- ``fact_probe_accuracy``: how many tiny-world facts the model completes exactly.
"""

from __future__ import annotations

import math
import numbers
import operator
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import tiktoken
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from shared.bpe import BPETokenizer, check_tokenizer
from shared.checkpoints import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from shared.checks import check_int, check_number, check_token_ids, is_number
from shared.datasets import SlidingWindowDataset
from shared.gpt import generate_greedy
from shared.train_state import check_settings

__all__ = [
    "TokenBatches",
    "bigram_baseline",
    "evaluate_loss",
    "fact_probe_accuracy",
    "lr_at",
    "make_optimizer",
    "next_token_loss",
    "perplexity",
    "sample_printer",
    "train",
]

HISTORY_KEYS = ("steps", "tokens_seen", "train_loss", "val_loss", "lr", "elapsed")


# --------------------------------------------------------------------------- loss


def next_token_loss(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of predicting ``targets`` (b, T) from ``inputs`` (b, T).

    ``F.cross_entropy`` wants one row of logits per prediction, so the batch and time axes
    are flattened: ``(b, T, V) -> (b*T, V)`` against ``(b*T,)`` targets. Targets equal to
    -100 (the default ``ignore_index``) are left out of the mean.
    """
    logits = model(inputs)  # (b, T, V)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def evaluate_loss(
    model: nn.Module, loader: Iterable[tuple[Tensor, Tensor]], max_batches: int | None = None
) -> float:
    """Mean next-token loss over ``loader`` (or its first ``max_batches`` batches).

    Each batch is weighted by its number of (non-ignored) targets, so the result is the mean
    over tokens even when the last batch is smaller. The model runs in eval mode (no
    dropout) and its previous mode is restored.
    """
    max_batches = None if max_batches is None else check_int(max_batches, "max_batches", 0)
    was_training, device = model.training, _device_of(model)
    model.eval()
    total, count = 0.0, 0
    try:
        for i, (inputs, targets) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            n = int((targets != -100).sum())
            total += next_token_loss(model, inputs.to(device), targets.to(device)).item() * n
            count += n
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate_loss got no batches (an empty loader or max_batches=0)")
    return total / count


def perplexity(loss: float | Tensor) -> float:
    """``exp(loss)``: the number of equally likely tokens the model is as unsure as."""
    if not (is_number(loss) or isinstance(loss, Tensor)):  # float("3") and True are no loss
        raise TypeError(f"loss must be a number or a one-element tensor, got {loss!r}")
    return math.exp(float(loss))


# --------------------------------------------------------------------------- optimizer


def make_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
) -> torch.optim.AdamW:
    """AdamW with two parameter groups: weight decay for matrices, none for vectors.

    nanoGPT's rule: every parameter with ``dim >= 2`` decays (linear weights and the
    embeddings; the tied token-embedding / output-head matrix is 2-D and counted once),
    every 1-D parameter does not (biases, LayerNorm scale and shift). Decay pulls weights
    towards zero; on a LayerNorm scale, whose neutral value is 1, that would only hurt.
    ``betas=(0.9, 0.95)`` is the GPT-3 / nanoGPT choice for short, noisy runs.
    On CPU and CUDA the update runs as PyTorch's fused kernel (``fused=True``: the same
    AdamW arithmetic, a few times faster than its loop over parameters); elsewhere (MPS)
    the default implementation.
    """
    check_number(lr, "lr", 0.0)
    check_number(weight_decay, "weight_decay", 0.0)
    if (
        not isinstance(betas, (tuple, list))
        or len(betas) != 2
        or not all(isinstance(b, numbers.Real) and 0.0 <= b < 1.0 for b in betas)
    ):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    params = [p for p in model.parameters() if p.requires_grad]  # tied weights appear once
    if not params:
        raise ValueError("make_optimizer: the model has no trainable parameters")
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)
    except RuntimeError:  # torch < 2.4 has the fused kernel on CUDA only
        return torch.optim.AdamW(groups, lr=lr, betas=betas)


def lr_at(
    step: int, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0
) -> float:
    """Learning rate for ``step`` (0-based): linear warmup, then cosine decay to ``min_lr``.

    Warmup rises from ``max_lr / warmup_steps`` to ``max_lr`` at step ``warmup_steps - 1``
    (Adam's early moment estimates are noisy, so big first steps would be erratic). Then
    half a cosine brings it down to ``min_lr`` at ``total_steps``; later steps stay there.
    """
    step = check_int(step, "step", 0)
    warmup_steps = check_int(warmup_steps, "warmup_steps", 0)
    total_steps = check_int(total_steps, "total_steps", 0)
    max_lr = check_number(max_lr, "max_lr", 0.0)
    min_lr = check_number(min_lr, "min_lr", 0.0)
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"need 0 <= warmup_steps <= total_steps, got {warmup_steps}, {total_steps}"
        )
    if step < 0 or min_lr < 0 or min_lr > max_lr:
        raise ValueError(
            f"need step >= 0 and 0 <= min_lr <= max_lr, got {step}, {min_lr}, {max_lr}"
        )
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


# --------------------------------------------------------------------------- data


class TokenBatches:
    """Shuffled training batches where batch ``i`` depends only on ``(seed, i)``.

    The corpus is cut into windows (``SlidingWindowDataset``); each epoch visits every
    window once in an order drawn from a generator seeded by ``(seed, epoch)``. Because
    ``batches[i]`` is a pure function, "where are we in the data" is the single integer
    ``i``: a checkpoint stores it and a resumed run continues with exactly the batches an
    uninterrupted run would have seen.

    ``batch_size`` is the global batch. With ``world_size > 1`` (data-parallel training)
    rank ``r`` gets rows ``[r * b, (r + 1) * b)`` of every global batch, ``b = batch_size /
    world_size``, so the ranks together see exactly what one process would see.
    """

    def __init__(
        self,
        token_ids: Sequence[int] | Tensor,
        context_length: int,
        batch_size: int,
        stride: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        # stride=None means "no overlap"; an explicit 0 is an error, not that default
        stride = context_length if stride is None else stride
        self.dataset = SlidingWindowDataset(token_ids, context_length, stride)
        batch_size = check_int(batch_size, "batch_size", 1)
        world_size = check_int(world_size, "world_size", 1)
        rank = check_int(rank, "rank", 0)
        seed = check_int(seed, "seed", 0)
        if seed >= 2**32:
            raise ValueError(f"seed must be below 2**32 (as numpy's seeds are), got {seed}")
        if not isinstance(shuffle, bool):
            raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
        if batch_size % world_size != 0:
            raise ValueError(
                f"batch_size={batch_size} must be a positive multiple of world_size={world_size}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} is outside 0..{world_size - 1}")
        if len(self.dataset) < batch_size:
            raise ValueError(
                f"only {len(self.dataset)} windows, fewer than one batch of {batch_size}"
            )
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.local_batch_size = batch_size // world_size
        self._order: tuple[int, Tensor] | None = None  # (epoch, window order) cache

    def __len__(self) -> int:
        """Batches per epoch (the last incomplete batch of each epoch is dropped)."""
        return len(self.dataset) // self.batch_size

    @property
    def tokens_per_batch(self) -> int:
        """Tokens in one global batch (all ranks together)."""
        return self.batch_size * self.dataset.context_length

    def _epoch_order(self, epoch: int) -> Tensor:
        if self._order is None or self._order[0] != epoch:
            n = len(self.dataset)
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                order = torch.randperm(n, generator=g)
            else:
                order = torch.arange(n)
            self._order = (epoch, order)
        return self._order[1]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        """This rank's part of global batch ``i`` (any ``i >= 0``; epochs repeat)."""
        if isinstance(i, bool) or not hasattr(i, "__index__"):
            raise TypeError(f"batch index must be an int, got {i!r}")
        i = operator.index(i)
        if i < 0:
            raise IndexError(f"batch index must be >= 0, got {i}")
        epoch, j = divmod(i, len(self))
        start = j * self.batch_size + self.rank * self.local_batch_size
        rows = self._epoch_order(epoch)[start : start + self.local_batch_size]
        pairs = [self.dataset[int(r)] for r in rows]
        return torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])

    def __iter__(self):
        """One epoch, for ``evaluate_loss``; training indexes batches directly."""
        return (self[i] for i in range(len(self)))


# --------------------------------------------------------------------------- the loop


def _mean_over_ranks(value: float) -> float:
    """The mean of ``value`` over data-parallel ranks (itself when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


def _on_any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any (so all ranks stop together)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _checkpoint_file(pattern: str | Path, step: int) -> Path:
    """``pattern`` with ``{step}`` filled in; any other field is an error naming it."""
    if not isinstance(pattern, (str, Path)):
        raise TypeError(f"checkpoint_path must be a str or Path, got {pattern!r}")
    try:
        path = Path(str(pattern).format(step=step))
    except KeyError as e:
        raise ValueError(
            f"checkpoint_path {str(pattern)!r} has the field {{{e.args[0]}}}, but only {{step}} "
            "is filled in (write {{ and }} for literal braces)"
        ) from None
    except (IndexError, ValueError, AttributeError, TypeError) as e:
        raise ValueError(
            f"checkpoint_path {str(pattern)!r} is not a valid pattern ({e}); only {{step}} is "
            "filled in"
        ) from None
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint_path {path} is a directory; name a file in it")
    return path


def _check_optimizer_fits(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every parameter the optimizer updates must be one of the model's own."""
    own = {id(p) for p in model.parameters()}
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if not params:
        raise ValueError("optimizer has no parameters to update")
    foreign = sum(id(p) not in own for p in params)
    if foreign:
        raise ValueError(
            f"optimizer updates {foreign} of its {len(params)} parameters that are not the "
            "model's: it was built for another model (or a copy); build it with "
            "make_optimizer(model, ...) for the model being trained"
        )


def _check_schedule(
    lr_schedule: Callable[[int], float] | None,
    optimizer: torch.optim.Optimizer,
    first: int,
    max_steps: int,
) -> dict[int, float] | None:
    """The learning rate of every step still to run, each finite and >= 0, or ValueError."""
    if lr_schedule is None:
        for group in optimizer.param_groups:
            lr = group.get("lr")
            if isinstance(lr, Tensor):
                lr = lr.item()
            if not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr < 0:
                raise ValueError(
                    f"the optimizer's learning rate must be finite and >= 0, got {lr!r}"
                )
        return None
    lrs = {}
    for step in range(first, max_steps):
        lr = lr_schedule(step)
        if isinstance(lr, Tensor) and lr.numel() == 1 and not lr.dtype.is_complex:
            lr = lr.item()  # a schedule written with torch math
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
            raise TypeError(f"lr_schedule({step}) must return a number, got {lr!r}")
        if not math.isfinite(lr) or lr < 0:
            raise ValueError(
                f"lr_schedule({step}) returned {lr!r}; a learning rate must be finite and >= 0"
            )
        lrs[step] = float(lr)
    return lrs


BATCH_SETTINGS = ("batch_size", "seed", "batches_per_epoch", "shuffle", "tokens_per_batch")


def _batch_settings(batches) -> dict:
    """What decides which batches a run sees (None: the batches do not say)."""
    return {
        "batch_size": batches.batch_size,
        "seed": getattr(batches, "seed", None),
        "batches_per_epoch": len(batches),
        "shuffle": getattr(batches, "shuffle", None),
        "tokens_per_batch": getattr(batches, "tokens_per_batch", None),
    }


def _check_training_state(path, ckpt: dict, batches, max_steps: int) -> Tensor:
    """What ``train`` needs from a checkpoint to resume, checked before anything is loaded;
    returns the RNG state."""
    extra = ckpt["extra"]
    missing = [k for k in ("tokens_seen", "history", "rng_state") if k not in extra]
    if missing or ckpt["optimizer"] is None:
        raise CheckpointError(
            f"resume_from {path} holds no training state to resume from (missing "
            f"{missing or ['optimizer']}); it is a model file: load it with load_model or "
            "load_checkpoint and start a new run instead"
        )
    history = extra["history"]
    if not isinstance(history, dict) or not all(
        isinstance(history.get(k), list) for k in HISTORY_KEYS
    ):
        raise CheckpointError(f"resume_from {path}: the stored history is damaged")
    if isinstance(extra["tokens_seen"], bool) or not isinstance(extra["tokens_seen"], int):
        raise CheckpointError(f"resume_from {path}: the stored tokens_seen is damaged")
    rng = extra["rng_state"]
    expected = torch.get_rng_state()
    if not isinstance(rng, Tensor) or rng.dtype != torch.uint8 or rng.shape != expected.shape:
        raise CheckpointError(
            f"resume_from {path}: the stored random-generator state is damaged (expected a "
            f"uint8 tensor of shape {tuple(expected.shape)})"
        )
    # what a resumed run must match to see the same batches as the interrupted one
    saved = {k: extra.get(k) for k in BATCH_SETTINGS}
    now = _batch_settings(batches)
    both = [k for k in BATCH_SETTINGS if saved[k] is not None and now[k] is not None]
    check_settings(f"resume_from {path}", {k: saved[k] for k in both}, {k: now[k] for k in both})
    if ckpt["step"] > max_steps:
        raise ValueError(
            f"resume_from {path} is already at step {ckpt['step']}, beyond max_steps="
            f"{max_steps}; max_steps counts all steps, including those before the resume"
        )
    return rng


def _check_train_arguments(
    model,
    optimizer,
    train_batches,
    val_loader,
    max_steps,
    lr_schedule,
    grad_clip,
    eval_every,
    eval_batches,
    on_eval,
    checkpoint_path,
    checkpoint_every,
    progress,
) -> tuple:
    """``train``'s checks, before anything changes. Returns the bare model (unwrapped from
    DDP), the number of processes, whether this one is rank 0, and the checked numbers
    ``max_steps, eval_every, eval_batches, checkpoint_every, grad_clip``."""
    raw = getattr(model, "module", model)  # the bare model inside a DDP wrapper
    if not isinstance(raw, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {optimizer!r}")
    _check_optimizer_fits(raw, optimizer)
    for attribute in ("__getitem__", "__len__", "batch_size", "world_size"):
        if not hasattr(train_batches, attribute):
            raise TypeError(
                f"train_batches must be a batch provider like TokenBatches (indexable, with "
                f"len, batch_size, seed and world_size); {type(train_batches).__name__} "
                f"has no {attribute}"
            )
    if len(train_batches) < 1:
        raise ValueError("train_batches is empty: there is not one batch to train on")
    distributed = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if distributed else 1
    is_main = not distributed or dist.get_rank() == 0
    if train_batches.world_size != world:
        raise ValueError(
            f"train_batches is split for world_size={train_batches.world_size}, "
            f"but {world} process(es) are training"
        )
    max_steps = check_int(max_steps, "max_steps", 1)
    eval_every = check_int(eval_every, "eval_every", 1)
    eval_batches = check_int(eval_batches, "eval_batches", 1)
    if checkpoint_every is not None:
        checkpoint_every = check_int(checkpoint_every, "checkpoint_every", 1)
    if grad_clip is not None:
        grad_clip = check_number(grad_clip, "grad_clip (the largest gradient norm; None: off)")
        if grad_clip <= 0:
            raise ValueError(
                f"grad_clip must be > 0 (or None for no clipping), got {grad_clip!r}: a "
                "norm of 0 or less would zero or flip every update"
            )
    for name, fn in (("lr_schedule", lr_schedule), ("on_eval", on_eval)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be a function or None, got {fn!r}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    if checkpoint_every is not None and checkpoint_path is None:
        raise ValueError("checkpoint_every needs a checkpoint_path to write to")
    if checkpoint_path is not None:
        _checkpoint_file(checkpoint_path, 0)  # an unknown {field} fails now, not after hours
    if hasattr(val_loader, "__len__") and len(val_loader) == 0:
        raise ValueError("val_loader is empty: evaluation would have no batch to measure")
    return raw, world, is_main, max_steps, eval_every, eval_batches, checkpoint_every, grad_clip


def _non_finite_loss(step: int, loss_value: float, targets: Tensor, data_position: int):
    """The error for a loss that is not finite on this rank or another, saying why."""
    if math.isfinite(loss_value):  # only another rank's loss is bad
        return FloatingPointError(
            f"the training loss at step {step} is not finite on another "
            "data-parallel rank; stopped before the update"
        )
    if not bool((targets != -100).any()):
        return ValueError(
            f"train_batches[{data_position}] has no target to learn from (every "
            "target is -100, ignored), so its loss is undefined; no update was made"
        )
    return FloatingPointError(
        f"the training loss at step {step} is {loss_value} (not finite): training "
        "diverged or the batch is broken; stopped before the update, and no "
        "checkpoint was written from this state. Lower the learning rate or clip "
        "the gradients (grad_clip)."
    )


def _optimizer_step(model, optimizer, inputs, targets, grad_clip, step, data_position) -> float:
    """One update: forward, backward, clipping, AdamW. A loss or gradient norm that is not
    finite (on any rank) raises before the weights change. Returns the loss."""
    loss = next_token_loss(model, inputs, targets)
    loss_value = loss.item()
    if _on_any_rank(not math.isfinite(loss_value)):
        raise _non_finite_loss(step, loss_value, targets, data_position)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # under DDP this also averages the gradients over ranks
    if grad_clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if not math.isfinite(norm.item()):  # the same on every rank (averaged grads)
            raise FloatingPointError(
                f"the gradient norm at step {step} is {norm.item()} (not finite) although "
                f"the loss was {loss_value:.4g}; stopped before the update, no checkpoint "
                "was written"
            )
    optimizer.step()
    return loss_value


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_batches: TokenBatches,
    val_loader: Iterable[tuple[Tensor, Tensor]],
    max_steps: int,
    lr_schedule: Callable[[int], float] | None = None,
    grad_clip: float | None = 1.0,
    eval_every: int = 50,
    eval_batches: int = 10,
    on_eval: Callable[[int, nn.Module], None] | None = None,
    checkpoint_path: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume_from: str | Path | None = None,
    progress: bool = True,
    tokenizer=None,
) -> dict[str, list]:
    """Train ``model`` until ``max_steps`` optimizer steps in total; return the history.

    One step: take global batch number ``data_position`` (this rank's slice of it), set the
    learning rate from ``lr_schedule(step)`` (if given), forward, backward, clip the gradient
    norm to ``grad_clip`` (if given), optimizer step. Every ``eval_every`` steps and at the
    end, the loss on ``eval_batches`` fixed training batches and validation batches goes
    into the history and ``on_eval(step, model)`` is called (e.g. to print a sample).
    Every ``checkpoint_every`` steps and at the end, a checkpoint with everything needed to
    resume is written to ``checkpoint_path`` (a ``{step}`` in the path is replaced by the
    step, to keep every checkpoint instead of overwriting one).

    ``model`` may be wrapped in ``DistributedDataParallel``: gradients are then averaged
    over ranks during ``backward``, evaluation losses are averaged over ranks, and only
    rank 0 shows progress, calls ``on_eval`` and writes checkpoints.

    ``resume_from`` loads a checkpoint written by this function (weights, optimizer state,
    step, data position, tokens seen, history, RNG state) and continues as if never
    stopped: same thread count, same batches, same numbers. ``train_batches`` must have
    the batch size, seed and epoch length the run was started with.
    ``tokenizer`` (optional) is recorded in the checkpoints, see ``save_checkpoint``.

    Everything is checked before the first step, and a failed check changes nothing:
    argument types and ranges, the checkpoint path pattern, that the optimizer updates
    this model's parameters, every learning rate the schedule will give (finite, >= 0),
    and the whole training state of ``resume_from``. A loss or gradient norm that is not
    finite stops training with a ``FloatingPointError`` before that update, and no
    checkpoint is written from that state.

    History (one entry per evaluation): ``steps``, ``tokens_seen``, ``train_loss``,
    ``val_loss``, ``lr`` and ``elapsed`` (seconds of training).
    """
    checked = _check_train_arguments(
        model, optimizer, train_batches, val_loader, max_steps, lr_schedule, grad_clip,
        eval_every, eval_batches, on_eval, checkpoint_path, checkpoint_every, progress,
    )  # fmt: skip
    raw, world, is_main, max_steps, eval_every, eval_batches, checkpoint_every, grad_clip = checked
    device = _device_of(raw)

    # Read and check the whole training state before anything changes.
    step, data_position, tokens_seen = 0, 0, 0
    history: dict[str, list] = {key: [] for key in HISTORY_KEYS}
    if resume_from is not None:
        ckpt = read_checkpoint(resume_from)
        rng_state = _check_training_state(resume_from, ckpt, train_batches, max_steps)
        step, data_position = ckpt["step"], ckpt["data_position"]
    lrs = _check_schedule(lr_schedule, optimizer, step, max_steps)
    if resume_from is not None:
        load_checkpoint(resume_from, raw, optimizer, _checkpoint=ckpt)  # all or nothing
        tokens_seen = ckpt["extra"]["tokens_seen"]
        history = {key: list(ckpt["extra"]["history"][key]) for key in HISTORY_KEYS}
        torch.set_rng_state(rng_state)  # CPU dropout masks continue as well
    elapsed_before = history["elapsed"][-1] if history["elapsed"] else 0.0
    eval_train = [train_batches[i] for i in range(min(eval_batches, len(train_batches)))]
    lr = optimizer.param_groups[0]["lr"]

    def record() -> None:
        history["steps"].append(step)
        history["tokens_seen"].append(tokens_seen)
        history["train_loss"].append(_mean_over_ranks(evaluate_loss(raw, eval_train)))
        history["val_loss"].append(_mean_over_ranks(evaluate_loss(raw, val_loader, eval_batches)))
        history["lr"].append(lr)
        history["elapsed"].append(elapsed_before + time.perf_counter() - start)

    def save() -> None:
        extra = {
            "tokens_seen": tokens_seen,
            "history": history,
            "rng_state": torch.get_rng_state(),
            **_batch_settings(train_batches),  # what a resumed run must match
        }
        path = _checkpoint_file(checkpoint_path, step)
        config = getattr(raw, "cfg", None)
        save_checkpoint(
            path, raw, optimizer, step, config, data_position, extra, tokenizer=tokenizer
        )

    start = time.perf_counter()
    # Refresh at most once a second: in a notebook each refresh is a widget message, and a
    # flood of them slows the kernel (and the tools that run notebooks) for nothing.
    bar = tqdm(
        total=max_steps,
        initial=step,
        disable=not (progress and is_main),
        unit="step",
        mininterval=1.0,
    )
    model.train()
    try:
        while step < max_steps:
            if lrs is not None:
                lr = lrs[step]
                for group in optimizer.param_groups:
                    group["lr"] = lr
            inputs, targets = train_batches[data_position]
            batch = (inputs.to(device), targets.to(device))
            loss_value = _optimizer_step(model, optimizer, *batch, grad_clip, step, data_position)
            step, data_position = step + 1, data_position + 1
            tokens_seen += inputs.numel() * world
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}", refresh=False)
            if step % eval_every == 0 or step == max_steps:
                record()
                if is_main:
                    bar.set_postfix(val=f"{history['val_loss'][-1]:.3f}", refresh=True)
                    if on_eval is not None:
                        on_eval(step, raw)
            at_checkpoint = checkpoint_every is not None and step % checkpoint_every == 0
            if is_main and checkpoint_path is not None and (at_checkpoint or step == max_steps):
                save()
    finally:
        bar.close()
    return history


def _check_encoding(model: nn.Module, encoding) -> None:
    """The encoding must be the one the model was trained with (when that is recorded)."""
    if isinstance(encoding, (BPETokenizer, tiktoken.Encoding)):
        cfg = getattr(model, "cfg", None)
        vocab = getattr(cfg, "vocab_size", None)
        check_tokenizer(getattr(model, "tokenizer_identity", None), encoding, vocab)


def sample_printer(encoding, prompt: str, max_new_tokens: int = 24) -> Callable:
    """An ``on_eval`` callback that prints the greedy continuation of ``prompt``."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", 1)
    ids = encoding.encode(prompt, allowed_special="all")
    if not ids:
        raise ValueError("prompt is empty: give at least one token of text")

    def on_eval(step: int, model: nn.Module) -> None:
        _check_encoding(model, encoding)
        idx = torch.tensor([ids], device=_device_of(model))
        out = generate_greedy(model, idx, max_new_tokens)[0, len(ids) :].tolist()
        text = encoding.decode(out).replace("\n", "\\n")
        tqdm.write(f"step {step:>5}: {prompt}|{text}")

    return on_eval


# --------------------------------------------------------------------------- measures


def bigram_baseline(
    train_ids: Sequence[int] | Tensor,
    val_ids: Sequence[int] | Tensor,
    vocab_size: int,
    smoothing: float = 0.01,
) -> dict[str, float]:
    """Validation loss and perplexity of a count-based bigram model with add-k smoothing.

    ``P(b | a) = (count(a, b) + k) / (count(a) + k * V)``, counted on ``train_ids``:
    the next token predicted from the current one alone. A transformer that cannot beat
    this has not learned to use its context. ``k > 0`` gives unseen pairs some probability
    (an infinite loss otherwise); a small ``k`` suits a vocabulary where most pairs never
    occur.
    """
    smoothing = check_number(smoothing, "smoothing", 0, exclusive=True)
    vocab_size = check_int(vocab_size, "vocab_size", 1)
    train, val = (  # checked ids: as_tensor(dtype=long) alone would cut 1.7 to the id 1
        torch.tensor(
            check_token_ids(list(ids) if hasattr(ids, "__array_interface__") else ids, name)
        )
        for name, ids in (("train_ids", train_ids), ("val_ids", val_ids))
    )
    for name, ids in (("train_ids", train), ("val_ids", val)):
        if len(ids) < 2 or int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
            raise ValueError(f"{name} needs >= 2 ids, all in [0, {vocab_size})")
    V = vocab_size
    pair_counts = torch.bincount(train[:-1] * V + train[1:], minlength=V * V)  # row-major (a, b)
    row_counts = torch.bincount(train[:-1], minlength=V)
    counts = pair_counts[val[:-1] * V + val[1:]].double()
    probs = (counts + smoothing) / (row_counts[val[:-1]].double() + smoothing * V)
    loss = -probs.log().mean().item()
    return {"val_loss": loss, "val_perplexity": math.exp(loss), "smoothing": smoothing}


@torch.no_grad()
def fact_probe_accuracy(
    model: nn.Module, encoding, probes: Sequence, device: torch.device | str | None = None
) -> tuple[float, list[dict]]:
    """Greedy-complete every probe prompt; count exact matches of the answer's tokens.

    A probe has ``.prompt`` and ``.answer`` (``"Nora lives in"`` -> ``" Redhill"``). The
    model must produce exactly the answer's token ids right after the prompt. Prompts with
    the same number of tokens are completed together in one batch. Returns the accuracy
    and one dict per probe (``prompt``, ``answer``, ``predicted`` text, ``correct``).
    """
    if not probes:
        raise ValueError("fact_probe_accuracy needs at least one probe")
    _check_encoding(model, encoding)
    bad = [n for n, p in model.named_parameters() if not bool(p.isfinite().all())]
    if bad:
        raise ValueError(f"the model has non-finite (NaN or inf) weights in {bad[:5]}")
    device = torch.device(device) if device is not None else _device_of(model)
    prompts = [encoding.encode(p.prompt) for p in probes]
    answers = [encoding.encode(p.answer) for p in probes]
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(prompts):
        by_length.setdefault(len(ids), []).append(i)
    results: list[dict | None] = [None] * len(probes)
    for length, members in by_length.items():
        idx = torch.tensor([prompts[i] for i in members], device=device)
        n_new = max(len(answers[i]) for i in members)
        out = generate_greedy(model, idx, n_new)[:, length:].tolist()
        for i, generated in zip(members, out):
            predicted = generated[: len(answers[i])]
            results[i] = {
                "prompt": probes[i].prompt,
                "answer": probes[i].answer,
                "predicted": encoding.decode(predicted),
                "correct": predicted == answers[i],
            }
    accuracy = sum(r["correct"] for r in results) / len(results)
    return accuracy, results
