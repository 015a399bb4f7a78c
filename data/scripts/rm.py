"""Train the reward model on preference pairs: ``python data/scripts/rm.py`` (``make rm``).

Starts from the released SFT model (``data/checkpoints/sft.pt``): its backbone gets a scalar
head (``shared.reward_model.ScalarModel``) and learns, with the Bradley–Terry loss, to score
the chosen response of each pair above the rejected one. The pairs:

- the rule-made pairs of ``data/preferences/train.json`` (style, fact, complete);
- ``sampled`` pairs from the SFT model's own responses: four samples at temperature 1 per
  training prompt, the best and the worst by the gold rule (``shared.preference_data``).

Writes into ``--out-dir`` (default ``data/checkpoints/``):

- ``rm.pt``: the reward model, stored in bfloat16 (every figure below is measured on the
  model read back from this file);
- ``rm_log.json``: the training history (loss, accuracy, margin; held-out accuracy);
- ``rm_pairs_sampled.json``: the sampled pairs, training and held-out;
- ``rm_metrics.json``: held-out accuracy per kind and pair type (the RewardBench-style
  table), for the held-out people apart, and the scores of every held-out pair.

Interrupted runs continue where they stopped (``data/cache/rm_*``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch
from common import (
    CACHE,
    CHECKPOINTS,
    DATA_DIR,
    add_common_flags,
    digest,
    load_json,
    positive_int,
    start_run,
)

from shared import bpe, preference_data, sft
from shared import reward_model as rmod
from shared.checkpoints import load_model, save_checkpoint
from shared.files import write_json
from shared.tiny_world import make_world

SETTINGS = dict(steps=450, batch_size=16, lr=2e-4, warmup_steps=20, samples=4, temperature=1.0)


def sample_pairs(model, encoding, entries: list[dict], seed: int, progress: bool) -> list[dict]:
    """Pairs from ``SETTINGS['samples']`` sampled responses per entry, ranked by the rule."""
    generator = torch.Generator().manual_seed(seed)
    samples = [
        sft.generate_responses(
            model,
            encoding,
            entries,
            temperature=SETTINGS["temperature"],
            generator=generator,
            progress=progress,
        )
        for _ in range(SETTINGS["samples"])
    ]
    per_entry = [list(s) for s in zip(*samples)]
    return preference_data.sampled_pairs(entries, per_entry, make_world(seed=0))


def accuracy_table(pairs: list[dict], chosen: torch.Tensor, rejected: torch.Tensor) -> dict:
    """Share of pairs ranked right, per kind and pair type, per kind, per type and overall."""
    df = pd.DataFrame(
        {
            "kind": [p["kind"] for p in pairs],
            "pair_type": [p["pair_type"] for p in pairs],
            "right": (chosen > rejected).tolist(),
        }
    )
    table = df.pivot_table(index="kind", columns="pair_type", values="right", aggfunc="mean")
    table["all"] = df.groupby("kind")["right"].mean()
    table.loc["all"] = df.groupby("pair_type")["right"].mean()
    table.loc["all", "all"] = df["right"].mean()
    return json.loads(table.round(4).to_json(orient="index"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=positive_int, default=SETTINGS["steps"])
    parser.add_argument("--out-dir", type=Path, default=CHECKPOINTS)
    add_common_flags(parser)
    parser.add_argument("--sft", type=Path, default=CHECKPOINTS / "sft.pt")
    return parser.parse_args(argv)


def load_pairs(args, policy, encoding, sft_digest: str) -> tuple[dict, dict]:
    """The rule-made pairs and the sampled pairs (sampled once, then cached), by split."""
    rule = {s: load_json(DATA_DIR / "preferences" / f"{s}.json") for s in ("train", "test")}
    sampled_path = CACHE / f"rm_pairs_sampled_{args.seed}_{sft_digest[:12]}.json"
    if sampled_path.is_file():
        sampled = load_json(sampled_path)
    else:
        instructions = {s: load_json(DATA_DIR / "instructions" / f"{s}.json") for s in rule}
        print("sampling the SFT model's own responses ...")
        sampled = {
            s: sample_pairs(policy, encoding, instructions[s], args.seed + i, not args.no_progress)
            for i, s in enumerate(("train", "test"))
        }
        write_json(sampled_path, sampled)
    return rule, sampled


def train_reward(args, policy, encoding, train_ids, test_ids, state_path: Path) -> tuple:
    """A scalar head on the SFT backbone, trained with the Bradley-Terry loss (resumable).
    Returns ``(model, held-out scores before training, history)``."""
    torch.manual_seed(args.seed)
    model = rmod.ScalarModel(policy)
    pad = encoding.eot_token
    before = rmod.score_pairs(model, test_ids, pad)
    config = rmod.RewardConfig(
        steps=args.steps,
        lr=SETTINGS["lr"],
        batch_size=SETTINGS["batch_size"],
        warmup_steps=SETTINGS["warmup_steps"],
        pad_id=pad,
        seed=args.seed,
        eval_every=50,
        checkpoint_every=50,
    )
    history = rmod.train_reward_model(
        model,
        train_ids,
        config,
        evaluate_on=test_ids[::4],
        checkpoint_path=state_path,
        progress=not args.no_progress,
    )
    return model, before, history


def release(model, policy, path: Path, steps: int, encoding):
    """bfloat16 weights to ``path``; returns the reward model read back from it."""
    extra = {"base": "sft.pt", "template": "alpaca", "score": "last real token"}
    released = rmod.ScalarModel(policy)
    released.load_state_dict(model.state_dict())
    save_checkpoint(path, released.to(torch.bfloat16), step=steps, extra=extra, tokenizer=encoding)
    return rmod.load_scalar_model(path, tokenizer=encoding)


def metrics_of(args, rule, sampled, train_pairs, test_pairs, before, chosen, rejected, start):
    """The figures of ``rm_metrics.json``: accuracy per kind and pair type, before training
    and on the held-out people, the margin, the sizes and the settings."""
    held_out = {n for p in rule["test"] for n in p["people"]} - {
        n for p in rule["train"] for n in p["people"]
    }
    hidden = [i for i, p in enumerate(test_pairs) if held_out & set(p["people"])]
    return {
        "accuracy": accuracy_table(test_pairs, chosen, rejected),
        # an untrained head scores everything 0: every pair is a tie, counted as half right
        "accuracy_before": float(((before[0] > before[1]) + 0.5 * (before[0] == before[1])).mean()),
        "held_out_people_accuracy": float((chosen[hidden] > rejected[hidden]).float().mean()),
        "held_out_people_pairs": len(hidden),
        "mean_margin": float((chosen - rejected).mean()),
        "test_pairs": len(test_pairs),
        "train_pairs": len(train_pairs),
        "sampled_pairs": {s: len(v) for s, v in sampled.items()},
        "settings": SETTINGS | {"steps": args.steps, "seed": args.seed},
        "train_seconds": time.perf_counter() - start,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    start_run(args)
    encoding = bpe.get_encoding()
    policy = load_model(args.sft, tokenizer=encoding)
    ctx = policy.cfg.context_length

    sft_digest = digest(args.sft)
    rule, sampled = load_pairs(args, policy, encoding, sft_digest)
    train_pairs = rule["train"] + sampled["train"]
    test_pairs = rule["test"] + sampled["test"]
    print(
        f"{len(train_pairs)} training pairs ({len(sampled['train'])} sampled), "
        f"{len(test_pairs)} held-out pairs ({len(sampled['test'])} sampled)"
    )
    train_ids = rmod.encode_pairs(train_pairs, encoding, ctx)
    test_ids = rmod.encode_pairs(test_pairs, encoding, ctx)

    state_path = CACHE / f"rm_{args.steps}_{sft_digest[:12]}_state.pt"
    model, before, history = train_reward(args, policy, encoding, train_ids, test_ids, state_path)

    out = args.out_dir
    path = out / "rm.pt"
    model = release(model, policy, path, args.steps, encoding)  # figures of the stored weights
    chosen, rejected = rmod.score_pairs(model, test_ids, encoding.eot_token)
    metrics = metrics_of(
        args, rule, sampled, train_pairs, test_pairs, before, chosen, rejected, start
    )
    scores = [
        {"kind": p["kind"], "pair_type": p["pair_type"], "chosen": c, "rejected": r}
        for p, c, r in zip(test_pairs, chosen.tolist(), rejected.tolist())
    ]
    write_json(out / "rm_log.json", history)
    write_json(out / "rm_pairs_sampled.json", sampled)
    write_json(out / "rm_scores.json", scores)
    write_json(out / "rm_metrics.json", metrics)
    state_path.unlink(missing_ok=True)
    print(
        f"held-out pair accuracy {metrics['accuracy']['all']['all']:.1%} (before "
        f"{metrics['accuracy_before']:.1%}), held-out people "
        f"{metrics['held_out_people_accuracy']:.1%}; wrote {path} "
        f"({path.stat().st_size / 1e6:.1f} MB) in {metrics['train_seconds'] / 60:.1f} min"
    )
    return metrics


if __name__ == "__main__":
    main()
