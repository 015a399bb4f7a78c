"""Instruction-tune the released base model: ``python data/scripts/sft.py`` (``make sft``).

Starts from ``data/checkpoints/base_small.pt`` and fine-tunes it on
``data/instructions/train.json`` in the Alpaca template with the prompt masked, through
``shared.training.train`` (AdamW, warmup + cosine, clipping). Writes into ``--out-dir``
(default ``data/checkpoints/``):

- ``sft.pt``: the fine-tuned model, stored in bfloat16 (half the size; every figure below
  is measured on the model read back from this file);
- ``sft_log.json``: the training history;
- ``sft_responses.json``: every test entry with the model's greedy ``model_response``;
- ``sft_metrics.json``: exact-match, normalised-match, content accuracy (the gold rule) and
  preferred-style share on the test split, overall, per kind and for the held-out people;
  the base model's figures in the same format; validation loss before and after; and the
  two comparisons run at the same settings, prompt masking off and the Phi-3 template.

An interrupted run continues where it stopped when started again: the training state goes
to ``data/cache/sft_<variant>_state.pt`` every ``--checkpoint-every`` steps, and a finished
comparison run leaves its figures in ``data/cache/sft_<variant>_result.json``.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import time
from pathlib import Path

import torch
from common import (
    CACHE,
    CHECKPOINTS,
    DATA_DIR,
    add_common_flags,
    load_split,
    positive_float,
    positive_int,
    start_run,
)

from shared import bpe, sft
from shared.checkpoints import load_model, save_checkpoint
from shared.files import write_json
from shared.prompts import PHI3_SPECIALS, extend_encoding
from shared.training import evaluate_loss, lr_at, make_optimizer, train

SETTINGS = dict(batch_size=16, max_steps=480, max_lr=3e-4, warmup_steps=20, weight_decay=0.1)
MIN_LR_FRACTION = 0.1
COMPARE_STEPS = 120  # the three variants are compared in shorter runs, all of the same length
GRAD_CLIP = 1.0
# (template, mask_prompt) of the released model and of the two comparison runs
VARIANTS = {
    "alpaca_masked": ("alpaca", True),
    "alpaca_unmasked": ("alpaca", False),
    "phi3_masked": ("phi3", True),
}


def held_out_people(train: list[dict], test: list[dict]) -> set[str]:
    seen = {p for e in train for p in e["people"]}
    return {p for e in test for p in e["people"]} - seen


def evaluate(model, encoding, test, template: str, held_out: set[str]) -> dict:
    """Greedy responses to the test split and the figures of ``sft.accuracy_by_kind``."""
    responses = sft.generate_responses(model, encoding, test, template, progress=True)
    table = sft.accuracy_by_kind(test, responses)
    hidden = [i for i, e in enumerate(test) if held_out & set(e["people"])]
    hidden_table = sft.accuracy_by_kind([test[i] for i in hidden], [responses[i] for i in hidden])
    return {
        "overall": table.loc["all"].to_dict(),
        "per_kind": table.drop(index="all").to_dict(orient="index"),
        "held_out_people": hidden_table.loc["all"].to_dict(),
        "responses": responses,
    }


def finetune(variant: str, args, encoding, data: dict, progress: bool, steps=None) -> tuple:
    """Fine-tune the base model in one variant; return (model, encoding, history)."""
    template, mask = VARIANTS[variant]
    torch.manual_seed(args.seed)
    model = load_model(DATA_DIR / "checkpoints" / "base_small.pt")
    if template == "phi3":
        encoding = extend_encoding(encoding, PHI3_SPECIALS)
        sft.extend_vocabulary(model, encoding.n_vocab)
    ctx = model.cfg.context_length
    datasets = {
        s: sft.InstructionDataset(data[s], encoding, template, allowed_max_length=ctx)
        for s in ("train", "val")
    }
    batches = sft.InstructionBatches(
        datasets["train"], SETTINGS["batch_size"], seed=args.seed, mask_prompt=mask
    )
    val = sft.InstructionBatches(
        datasets["val"], SETTINGS["batch_size"], shuffle=False, mask_prompt=mask
    )
    steps = steps or args.max_steps or SETTINGS["max_steps"]
    max_lr = args.max_lr or SETTINGS["max_lr"]
    optimizer = make_optimizer(model, lr=max_lr, weight_decay=SETTINGS["weight_decay"])
    schedule = functools.partial(
        lr_at,
        max_lr=max_lr,
        warmup_steps=min(SETTINGS["warmup_steps"], steps),
        total_steps=steps,
        min_lr=max_lr * MIN_LR_FRACTION,
    )
    state = CACHE / f"sft_{variant}_{steps}_{max_lr:g}_state.pt"
    model.train()
    history = train(
        model,
        optimizer,
        batches,
        val,
        max_steps=steps,
        lr_schedule=schedule,
        grad_clip=GRAD_CLIP,
        eval_every=40,
        eval_batches=8,
        checkpoint_path=state,
        checkpoint_every=args.checkpoint_every,
        resume_from=state if state.is_file() else None,
        progress=progress,
    )
    model.eval()
    return model, encoding, history, val


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--max-steps", type=positive_int, help="override the step count (a quick check)"
    )
    parser.add_argument("--max-lr", type=positive_float, help="override the peak learning rate")
    parser.add_argument("--checkpoint-every", type=positive_int, default=40)
    parser.add_argument("--out-dir", type=Path, default=CHECKPOINTS)
    parser.add_argument("--no-comparisons", action="store_true", help="only the released model")
    parser.add_argument(
        "--only-comparisons", action="store_true", help="keep the released model, rerun the rest"
    )
    parser.add_argument("--compare-steps", type=positive_int, default=COMPARE_STEPS)
    add_common_flags(parser)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    start_run(args)
    encoding = bpe.get_encoding()
    data = {s: load_split(s) for s in ("train", "val", "test")}
    held_out = held_out_people(data["train"], data["test"])
    progress = not args.no_progress

    out = args.out_dir
    if args.only_comparisons:
        metrics = json.loads((out / "sft_metrics.json").read_text("utf-8"))
        return compare(args, encoding, data, held_out, progress, metrics, out, start)
    base = load_model(DATA_DIR / "checkpoints" / "base_small.pt")
    print("base model on the test split ...")
    base_eval = evaluate(base, encoding, data["test"], "alpaca", held_out)
    model, _, history, val = finetune("alpaca_masked", args, encoding, data, progress)
    val_before = evaluate_loss(base, val)

    path = out / "sft.pt"
    released = copy.deepcopy(model).to(torch.bfloat16)
    extra = {"template": "alpaca", "mask_prompt": True, "base": "base_small.pt"}
    save_checkpoint(
        path, released, step=history["steps"][-1], config=model.cfg, extra=extra, tokenizer=encoding
    )
    model = load_model(path)  # every figure below is of the stored (bfloat16) weights
    val_after = evaluate_loss(model, val)
    print("fine-tuned model on the test split ...")
    sft_eval = evaluate(model, encoding, data["test"], "alpaca", held_out)
    responses = [
        {**e, "model_response": r} for e, r in zip(data["test"], sft_eval.pop("responses"))
    ]
    base_eval.pop("responses")

    metrics = {
        "test": sft_eval,
        "base_test": base_eval,
        "val_loss_before": val_before,
        "val_loss_after": val_after,
        "comparisons": {},
        "held_out_people": len(held_out),
        "test_entries": len(data["test"]),
        "train_entries": len(data["train"]),
        "steps": history["steps"][-1],
        "train_seconds": history["elapsed"][-1],
        "settings": SETTINGS
        | {
            "max_lr": args.max_lr or SETTINGS["max_lr"],
            "max_steps": args.max_steps or SETTINGS["max_steps"],
            "grad_clip": GRAD_CLIP,
            "seed": args.seed,
        },
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    write_json(out / "sft_log.json", history)
    write_json(out / "sft_responses.json", responses)
    write_json(out / "sft_metrics.json", metrics)  # written again with each comparison
    for state in CACHE.glob("sft_alpaca_masked_*_state.pt"):
        state.unlink()
    o = sft_eval["overall"]
    print(
        f"test exact match {o['exact']:.1%} (base {base_eval['overall']['exact']:.1%}), "
        f"content {o['correct']:.1%}, held-out people {sft_eval['held_out_people']['exact']:.1%}"
        f"; val loss {val_before:.3f} -> {val_after:.3f}; wrote {path} "
        f"({path.stat().st_size / 1e6:.1f} MB)"
    )

    if args.no_comparisons:
        return metrics
    return compare(args, encoding, data, held_out, progress, metrics, out, start)


def compare(args, encoding, data, held_out, progress, metrics, out, start) -> dict:
    """The three variants, each fine-tuned for ``--compare-steps`` steps, on the test split."""
    steps = args.compare_steps
    metrics["comparisons"] = {"steps": steps}
    for variant in VARIANTS:
        max_lr = args.max_lr or SETTINGS["max_lr"]
        cached = CACHE / f"sft_{variant}_{steps}_{max_lr:g}_result.json"
        if cached.is_file() and not args.max_steps:
            result = json.loads(cached.read_text("utf-8"))
        else:
            print(f"comparison run: {variant}, {steps} steps ...")
            m, enc, hist, _ = finetune(variant, args, encoding, data, progress, steps=steps)
            result = evaluate(m, enc, data["test"], VARIANTS[variant][0], held_out)
            result.pop("responses")
            result["final_val_loss"] = hist["val_loss"][-1]
            write_json(cached, result)
            for state in CACHE.glob(f"sft_{variant}_{steps}_*_state.pt"):
                state.unlink()
            print(f"{variant}: test exact match {result['overall']['exact']:.1%}")
        metrics["comparisons"][variant] = result
        write_json(out / "sft_metrics.json", metrics)
    metrics["wall_seconds"] = time.perf_counter() - start
    write_json(out / "sft_metrics.json", metrics)
    print(f"done in {metrics['wall_seconds'] / 60:.1f} min")
    return metrics


if __name__ == "__main__":
    main()
