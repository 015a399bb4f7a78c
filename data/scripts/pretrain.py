"""Pretrain the released base model: ``python data/scripts/pretrain.py --scale small``.

``make pretrain`` runs this once; later chapters start from what it writes, into
``--out-dir`` (default: ``data/checkpoints/``), with ``NAME = base_<scale>``:

- ``NAME.pt``: the model weights (fp32) and config, no optimizer state
  (``shared.checkpoints.load_model(path)`` rebuilds the model);
- ``NAME_log.json``: the training history (steps, tokens seen, train/val loss, lr, time);
- ``NAME_metrics.json``: final validation loss and perplexity, the bigram baseline on the
  same tokens, fact-probe accuracy, tokens seen, steps, wall time and tokens/s.

It trains a ``MODEL_PRESETS[scale]`` GPT on the tiny-world training text with AdamW,
linear warmup + cosine decay and gradient clipping, all through ``shared.training.train``.
The run is deterministic for a given seed and thread count. Every ``--checkpoint-every``
steps the full training state goes to ``data/cache/NAME_train_state.pt``; after an
interruption ``--resume`` continues from it with the same numbers.

Data-parallel: the same script runs under ``torchrun`` (gloo on CPU, NCCL on GPUs); each
process takes its share of every global batch and rank 0 writes the outputs::

    torchrun --standalone --nproc_per_node=2 data/scripts/pretrain.py --scale tiny --max-steps 50

Quick check of the whole pipeline (about a minute)::

    python data/scripts/pretrain.py --scale small --max-steps 20 --out-dir /tmp/pretrain_smoke
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from pathlib import Path

import torch
from common import CHECKPOINTS, DATA_DIR, add_common_flags, positive_float, positive_int

import shared
from shared import bpe, tiny_world
from shared.checkpoints import save_checkpoint
from shared.distributed import cleanup, init_distributed, wrap_model
from shared.files import write_json
from shared.gpt import MODEL_PRESETS, GPTModel, count_parameters
from shared.training import (
    TokenBatches,
    bigram_baseline,
    evaluate_loss,
    fact_probe_accuracy,
    lr_at,
    make_optimizer,
    perplexity,
    sample_printer,
    train,
)

# Per-scale training settings. "small" was sized from measured speed: ~3,000 tokens/s on 2
# CPU cores, 2,048 tokens per step -> 2,400 steps (~4.9 M tokens, ~4.5 passes over the
# ~1.08 M training tokens) in about 27 minutes.
SETTINGS = {
    "tiny": dict(batch_size=16, max_steps=600, max_lr=3e-3, warmup_steps=50, eval_every=50),
    "small": dict(batch_size=16, max_steps=2400, max_lr=2e-3, warmup_steps=100, eval_every=100),
    "gpt2": dict(batch_size=16, max_steps=3000, max_lr=6e-4, warmup_steps=200, eval_every=100),
}
WEIGHT_DECAY = 0.1
MIN_LR_FRACTION = 0.1  # the cosine ends at 10% of the peak learning rate
GRAD_CLIP = 1.0
BIGRAM_SMOOTHING = 1e-3  # the best of 1, 0.1, ..., 1e-4 on this corpus (they differ little)
SAMPLE_PROMPT = "Nabo lives in"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="small", choices=sorted(MODEL_PRESETS))
    parser.add_argument("--max-steps", type=positive_int, help="override the scale's step count")
    parser.add_argument("--batch-size", type=positive_int, help="global batch (all processes)")
    parser.add_argument("--lr", type=positive_float, help="peak learning rate")
    parser.add_argument("--checkpoint-every", type=positive_int, default=200)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    parser.add_argument("--out-dir", type=Path, default=CHECKPOINTS)
    parser.add_argument("--name", help="output file stem (default base_<scale>)")
    add_common_flags(parser, threads_help="torch threads per process")
    return parser.parse_args(argv)


def run_settings(args: argparse.Namespace) -> dict:
    """The scale's settings with the flags' overrides."""
    settings = dict(SETTINGS[args.scale])
    for key in ("max_steps", "batch_size"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.lr is not None:
        settings["max_lr"] = args.lr
    settings["warmup_steps"] = min(settings["warmup_steps"], settings["max_steps"])
    return settings


def pretrain(args, settings: dict, info, encoding, ids: dict, state_path: Path) -> tuple:
    """Build the model and train it (continuing from ``state_path`` with ``--resume``).
    Returns ``(model, history, validation batches)``."""
    cfg = MODEL_PRESETS[args.scale]
    torch.manual_seed(args.seed)
    model = GPTModel(cfg).to(info.device)
    optimizer = make_optimizer(model, lr=settings["max_lr"], weight_decay=WEIGHT_DECAY)
    batches = TokenBatches(
        ids["train"],
        cfg.context_length,
        settings["batch_size"],
        seed=args.seed,
        rank=info.rank,
        world_size=info.world_size,
    )
    val = TokenBatches(ids["val"], cfg.context_length, settings["batch_size"], shuffle=False)
    schedule = functools.partial(
        lr_at,
        max_lr=settings["max_lr"],
        warmup_steps=settings["warmup_steps"],
        total_steps=settings["max_steps"],
        min_lr=settings["max_lr"] * MIN_LR_FRACTION,
    )
    if args.resume and not state_path.is_file():
        raise FileNotFoundError(f"--resume: no training state at {state_path}")
    if info.is_main:
        print(
            f"{args.scale}: {count_parameters(model):,} parameters, {len(ids['train']):,} "
            f"training tokens, {settings['max_steps']} steps of {batches.tokens_per_batch:,} "
            f"tokens, {info.world_size} process(es) x {torch.get_num_threads()} thread(s)"
        )

    history = train(
        wrap_model(model, info),
        optimizer,
        batches,
        val,
        max_steps=settings["max_steps"],
        lr_schedule=schedule,
        grad_clip=GRAD_CLIP,
        eval_every=settings["eval_every"],
        eval_batches=10,
        on_eval=sample_printer(encoding, SAMPLE_PROMPT, max_new_tokens=12),
        checkpoint_path=state_path,
        checkpoint_every=args.checkpoint_every,
        resume_from=state_path if args.resume else None,
        progress=not args.no_progress,
    )
    return model, history, val


def measure(args, settings, info, model, encoding, ids, val, history, wall_start) -> dict:
    """The figures of ``NAME_metrics.json``: validation loss, bigram baseline, fact probes,
    tokens and time."""
    val_loss = evaluate_loss(model, val)  # the whole validation text, not a sample
    vocab_size = MODEL_PRESETS[args.scale].vocab_size
    bigram = bigram_baseline(ids["train"], ids["val"], vocab_size, BIGRAM_SMOOTHING)
    probes = tiny_world.fact_probes(tiny_world.make_world(seed=0))
    accuracy, results = fact_probe_accuracy(model, encoding, probes)
    tokens_seen = history["tokens_seen"][-1]
    resumed_time = history["elapsed"][-1]  # includes time before an interruption
    return {
        "scale": args.scale,
        "parameters": count_parameters(model),
        "val_loss": val_loss,
        "val_perplexity": perplexity(val_loss),
        "bigram_val_loss": bigram["val_loss"],
        "bigram_val_perplexity": bigram["val_perplexity"],
        "bigram_smoothing": BIGRAM_SMOOTHING,
        "fact_accuracy": accuracy,
        "fact_probes": len(probes),
        "fact_misses": [r for r in results if not r["correct"]][:20],
        "steps": settings["max_steps"],
        "tokens_seen": tokens_seen,
        "train_seconds": resumed_time,
        "wall_seconds": time.perf_counter() - wall_start,
        "tokens_per_s": tokens_seen / resumed_time,
        "settings": settings
        | {"weight_decay": WEIGHT_DECAY, "grad_clip": GRAD_CLIP, "seed": args.seed},
        "processes": info.world_size,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def release(args, name: str, model, settings, encoding, history, metrics) -> None:
    """Write ``NAME.pt``, ``NAME_log.json`` and ``NAME_metrics.json`` into ``--out-dir``."""
    out = args.out_dir
    save_checkpoint(
        out / f"{name}.pt",
        model,
        step=settings["max_steps"],
        config=MODEL_PRESETS[args.scale],
        data_position=settings["max_steps"],
        extra={"val_loss": metrics["val_loss"], "fact_accuracy": metrics["fact_accuracy"]},
        tokenizer=encoding,
    )
    write_json(out / f"{name}_log.json", history)
    write_json(out / f"{name}_metrics.json", metrics)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    wall_start = time.perf_counter()
    settings = run_settings(args)
    name = args.name or f"base_{args.scale}"

    info = init_distributed()
    shared.setup(seed=args.seed, scale=args.scale, quiet=True)
    if args.threads is None and info.world_size > 1:  # share the cores between processes
        args.threads = max(1, (os.cpu_count() or 1) // info.world_size)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    encoding = bpe.get_encoding()
    texts = {s: (DATA_DIR / "tiny_world" / f"{s}.txt").read_text("utf-8") for s in ("train", "val")}
    ids = {s: encoding.encode(t, allowed_special={bpe.ENDOFTEXT}) for s, t in texts.items()}
    state_path = DATA_DIR / "cache" / f"{name}_train_state.pt"
    model, history, val = pretrain(args, settings, info, encoding, ids, state_path)
    if not info.is_main:
        cleanup()
        return {}

    metrics = measure(args, settings, info, model, encoding, ids, val, history, wall_start)
    release(args, name, model, settings, encoding, history, metrics)
    out = args.out_dir
    state_path.unlink(missing_ok=True)  # finished: the resumable state is no longer needed
    print(
        f"val loss {metrics['val_loss']:.4f} (perplexity {metrics['val_perplexity']:.2f}; "
        f"bigram {metrics['bigram_val_perplexity']:.2f}), facts "
        f"{metrics['fact_accuracy']:.1%} of {metrics['fact_probes']}, "
        f"{metrics['tokens_seen']:,} tokens in {metrics['train_seconds'] / 60:.1f} min "
        f"({metrics['tokens_per_s']:,.0f} tokens/s), wrote {out / name}.pt "
        f"({(out / f'{name}.pt').stat().st_size / 1e6:.1f} MB)"
    )
    cleanup()
    return metrics


if __name__ == "__main__":
    main()
