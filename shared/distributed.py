"""Data-parallel training with ``torchrun``: every process holds the whole model, takes its
own slice of every global batch, and gradients are averaged across processes in
``backward()``, so all copies take the same optimizer step.

``torchrun --nproc_per_node=N script.py`` starts N copies of a script and tells each one who
it is through environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, and where to
meet: ``MASTER_ADDR``/``MASTER_PORT``). ``init_distributed`` reads them and joins the
process group (gloo on CPU, NCCL on GPUs); ``wrap_model`` wraps the model in
``DistributedDataParallel``; ``shared.training.train`` then runs unchanged.

``python -m shared.distributed`` is a small demonstration (and what the test runs): it
trains a very small byte-level GPT on the first bytes of the tiny-world corpus and writes
the final weights and loss history, so a 2-process run can be compared with a 1-process
run on the same global batch::

    torchrun --standalone --nproc_per_node=2 -m shared.distributed --out ddp.pt
    python -m shared.distributed --out single.pt   # same numbers to float tolerance
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["DistInfo", "cleanup", "init_distributed", "wrap_model"]


@dataclass(frozen=True)
class DistInfo:
    """Who this process is: ``rank`` of ``world_size``, and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 logs and saves; the others only compute."""
        return self.rank == 0


def _int_from_env(name: str, default: int, minimum: int) -> int:
    """An integer environment variable (as torchrun sets them), checked, naming it."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None
    if number < minimum:
        raise ValueError(f"{name}={number} must be at least {minimum}")
    return number


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group if started by ``torchrun`` (``WORLD_SIZE > 1``), else run alone.

    The backend is NCCL for CUDA devices and gloo on CPU. Under CUDA each process uses the
    GPU numbered by its ``LOCAL_RANK`` (its index on this machine).
    """
    world_size = _int_from_env("WORLD_SIZE", 1, minimum=1)
    rank = _int_from_env("RANK", 0, minimum=0)
    local_rank = _int_from_env("LOCAL_RANK", 0, minimum=0)
    if rank >= world_size:
        raise ValueError(f"RANK={rank} must be below WORLD_SIZE={world_size}")
    if device is not None and device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or None, got {device!r}")
    use_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda"
    dev = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if world_size > 1 and not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, world_size, local_rank, dev)


def wrap_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """``DistributedDataParallel(model)`` when several processes train, else ``model``.

    DDP first broadcasts rank 0's weights (so all copies start equal), then hooks into
    ``backward()`` to all-reduce (average) each gradient as soon as it is ready, overlapping
    communication with the rest of the backward pass.
    """
    if info.world_size == 1:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def cleanup() -> None:
    """Leave the process group (call once at the end of a distributed script).

    The barrier waits until every rank is done (rank 0 may still be saving): a rank that
    tears down its gloo connections while a peer is still using them can abort the peer.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    """The demonstration run described in the module docstring."""
    from shared.gpt import GPTConfig, GPTModel
    from shared.runtime import DATA_DIR
    from shared.training import TokenBatches, make_optimizer, train

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="where rank 0 writes weights + history")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8, help="global batch (all ranks)")
    parser.add_argument("--n-bytes", type=int, default=50_000, help="corpus bytes to use")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    info = init_distributed(device="cpu")
    train_bytes = (DATA_DIR / "tiny_world" / "train.txt").read_bytes()[: args.n_bytes]
    val_bytes = (DATA_DIR / "tiny_world" / "val.txt").read_bytes()[:20_000]
    cfg = GPTConfig(vocab_size=256, context_length=32, emb_dim=64, n_heads=4, n_layers=2)
    torch.manual_seed(args.seed)  # same initial weights on every rank (DDP also broadcasts)
    model = GPTModel(cfg).to(info.device)
    optimizer = make_optimizer(model, lr=3e-3, weight_decay=0.1)
    # Bytes as tokens (vocabulary 256): no tokenizer needed.
    batches = TokenBatches(
        list(train_bytes),
        cfg.context_length,
        args.batch_size,
        seed=args.seed,
        rank=info.rank,
        world_size=info.world_size,
    )
    val = TokenBatches(list(val_bytes), cfg.context_length, args.batch_size, shuffle=False)
    history = train(
        wrap_model(model, info),
        optimizer,
        batches,
        val,
        max_steps=args.steps,
        eval_every=max(1, args.steps // 3),
        eval_batches=2,
        checkpoint_path=args.out,  # rank 0 writes it at the end, with the history
        progress=False,
    )
    if info.is_main:
        print(f"world_size={info.world_size} val loss {history['val_loss'][-1]:.4f}")
    cleanup()


if __name__ == "__main__":
    main()
