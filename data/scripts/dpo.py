"""Preference-tune the SFT model with DPO: ``python data/scripts/dpo.py`` (``make dpo``).

Starts from the released SFT model (``data/checkpoints/sft.pt``), which is also the frozen
reference: its log-probs of every training pair are computed once (``shared.dpo``). The
pairs are the rule-made ones of ``data/preferences/train.json`` plus, when ``make rm`` has
written them, the ``sampled`` pairs of ``data/checkpoints/rm_pairs_sampled.json``.

The runs, each measured on the held-out prompts (the test split of the instructions) and
the held-out pairs (``data/preferences/test.json``):

- **round 1**, the released DPO model (``dpo.pt``, bfloat16; its figures are measured on
  the model read back from the file);
- **loss types**: ``dpo``, ``ipo``, ``rdpo``, ``simpo``, ``orpo`` (``shared.dpo``), shorter
  runs of the same length, with hyperparameters from the lecture's ranges;
- **a β sweep** over the lecture's range for DPO, in runs of the same short length: the
  KL to SFT against the share of preferred style and of right answers;
- **round 2** (iterative DPO): the round-1 policy samples ``samples`` answers per training
  prompt at temperature 1, the reward model (``rm.pt``) scores them, the best and the worst
  form a pair; DPO from round 1 with round 1 as the reference (``dpo_round2.pt``).

Writes into ``--out-dir`` (default ``data/checkpoints/``): ``dpo.pt``, ``dpo_round2.pt``,
``dpo_log.json`` (the training history of every run), ``dpo_responses.json`` (each test
entry with the greedy responses of SFT, round 1 and round 2) and ``dpo_metrics.json``
(every figure chapter 11 shows). Interrupted runs continue where they stopped: finished
runs leave their figures in ``data/cache/dpo_*``, and a run in progress its state. A loss
that is not finite stops the run with an error and writes no checkpoint, so the last good
one stays in place.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch
from common import (
    CACHE,
    CHECKPOINTS,
    DATA_DIR,
    add_common_flags,
    digest,
    key_of,
    load_json,
    positive_float,
    positive_int,
    start_run,
)

from shared import bpe, gold, sft
from shared import dpo as dpo_lib
from shared import reward_model as rmod
from shared.alignment_eval import evaluate_policy
from shared.checkpoints import load_model, save_checkpoint
from shared.files import write_json
from shared.prompts import format_prompt, format_response
from shared.train_state import data_digest, load_state, save_state

# Round 1 (the released model): DPO on every training pair.
SETTINGS = dict(loss_type="dpo", beta=0.1, lr=1e-4, steps=150, batch_size=16, warmup_steps=10)
# The comparison runs: shorter, all of the same length.
SHORT_STEPS = 20
# Each loss type with hyperparameters from the lecture's table (for IPO, beta is its tau;
# for ORPO, its lambda).
LOSS_VARIANTS = {
    "dpo": dict(beta=0.1),
    "ipo": dict(beta=0.5),
    "rdpo": dict(beta=0.1, rdpo_alpha=0.05),
    "simpo": dict(beta=2.0, simpo_gamma=0.5),
    "orpo": dict(beta=0.5),
}
BETAS = (0.01, 0.05, 0.1, 0.5)
# Round 2: on-policy pairs ranked by the reward model, round 1 as the reference.
ROUND2 = dict(prompts=240, samples=4, temperature=1.0, beta=0.1, lr=5e-5, steps=30)
STYLES = ("preferred", "curt", "padded", "cut", "empty")
KL_NEW_TOKENS = 40  # sampled continuation length for the KL estimate (as in generation)


# ------------------------------------------------------------------------- evaluation ----
class Evaluator:
    """Measures a policy on the held-out prompts and pairs, against the SFT model.

    Figures: those of ``shared.alignment_eval.evaluate_policy`` (content accuracy by the
    gold rule, preferred-style share, exact match, mean gold rating, gold win rate against
    SFT's greedy answers, mean reward-model score, length, distinct share, KL to SFT), the
    share of each style, and the implicit-reward accuracy on the held-out pairs.
    """

    def __init__(self, sft_model, encoding, entries, test_pairs, rm_model=None, seed=0):
        self.sft, self.enc, self.entries, self.rm = sft_model, encoding, entries, rm_model
        self.seed = seed
        self.pairs = test_pairs

    @property
    def pad(self) -> int:
        return self.enc.eot_token

    @functools.cached_property
    def ref_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return dpo_lib.reference_logprobs(self.sft, self.pairs, pad_id=self.pad)

    @functools.cached_property
    def sft_responses(self) -> list[str]:
        return evaluate_policy(self.sft, self.entries, self.enc)["responses"]

    @torch.no_grad()
    def reward_accuracy(self, policy, loss_type: str = "dpo", stride: int = 1) -> float:
        """Share of held-out pairs whose chosen side has the larger implicit reward."""
        rows = list(range(0, len(self.pairs), stride))
        pairs = [self.pairs[i] for i in rows]
        chosen, rejected = dpo_lib.reference_logprobs(policy, pairs, pad_id=self.pad)
        if loss_type in dpo_lib.REFERENCE_FREE:  # the reward is β times the mean log-prob
            chosen = chosen / torch.tensor([len(c) for _, c, _ in pairs])
            rejected = rejected / torch.tensor([len(r) for _, _, r in pairs])
        if loss_type not in dpo_lib.REFERENCE_FREE:
            chosen = chosen - self.ref_pairs[0][rows]
            rejected = rejected - self.ref_pairs[1][rows]
        # a tie (the SFT model against itself: every implicit reward is 0) counts half
        return ((chosen > rejected).float() + 0.5 * (chosen == rejected).float()).mean().item()

    def __call__(self, policy, loss_type="dpo", pair_stride=1) -> dict:
        """``shared.alignment_eval.evaluate_policy`` against SFT, plus the styles and the
        implicit-reward accuracy on the held-out pairs."""
        policy.eval()
        out = evaluate_policy(
            policy,
            self.entries,
            self.enc,
            reference=self.sft,
            reward_model=self.rm,
            baseline_responses=self.sft_responses,
            kl_seed=self.seed,
        )
        styles = [
            gold.response_style(r, e["answer"]) for e, r in zip(self.entries, out["responses"])
        ]
        out["styles"] = {s: styles.count(s) / len(styles) for s in STYLES}
        out["reward_accuracy"] = self.reward_accuracy(policy, loss_type, pair_stride)
        return out


# ---------------------------------------------------------------------------- training ----
def train_run(name, policy, pairs, ref, settings, args, pad_id: int, log_every=10):
    """``train_dpo`` with a resumable state in the cache; a non-finite loss is fatal."""
    state = CACHE / f"dpo_{name}_state.pt"
    config = dpo_lib.DPOConfig(
        **settings, seed=args.seed, log_every=log_every, pad_id=pad_id, checkpoint_every=40
    )
    history = dpo_lib.train_dpo(
        policy, pairs, ref, config, progress=not args.no_progress, checkpoint_path=state
    )
    return history, state


def release(policy, path: Path, encoding, step: int, extra: dict):
    """bfloat16 copy of ``policy`` to ``path`` (atomic), then the float32 model read back."""
    save_checkpoint(
        path, copy.deepcopy(policy).to(torch.bfloat16), step=step, extra=extra, tokenizer=encoding
    )
    return load_model(path, tokenizer=encoding).eval()


def train_and_release(name, policy, pairs, ref, settings, args, path: Path, encoding, extra):
    """Train (or take the finished weights from the cache), then release to ``path``.

    Nothing is written to ``path`` unless training finished: a ``FloatingPointError`` (a
    loss or gradient that is not finite) propagates before any file is touched, so the
    last good checkpoint stays. Returns ``(released model, history)``.
    """
    weights = CACHE / f"dpo_{name}_weights.pt"
    run = {**settings, "seed": args.seed, "pairs": data_digest(pairs)}
    saved = load_state(weights, run)
    if saved is not None:
        policy.load_state_dict(saved["policy"])
        history = saved["history"]
    else:
        print(f"{name}: {len(pairs)} pairs, {settings}")
        history, state = train_run(name, policy, pairs, ref, settings, args, encoding.eot_token)
        save_state(weights, run, {"policy": policy.state_dict(), "history": history})
        state.unlink(missing_ok=True)
    return release(policy, path, encoding, settings["steps"], extra), history


def sample_round2_pairs(policy, rm_model, encoding, entries, seed, progress) -> tuple[list, dict]:
    """Pairs from the policy's own samples, best vs worst by the reward model's score."""
    generator = torch.Generator().manual_seed(seed)
    samples = [
        sft.generate_responses(
            policy, encoding, entries, temperature=ROUND2["temperature"], generator=generator,
            progress=progress,
        )
        for _ in range(ROUND2["samples"])
    ]  # fmt: skip
    pad = encoding.eot_token
    pairs, agree = [], {"agree": 0, "tie": 0, "disagree": 0}
    for i, e in enumerate(entries):
        texts = sorted({s[i] for s in samples if s[i].strip()})  # distinct, non-empty
        if len(texts) < 2:
            continue
        prompt = encoding.encode(format_prompt(e), allowed_special="all")
        seqs = [
            prompt + encoding.encode(format_response(t), allowed_special="all") + [pad]
            for t in texts
        ]
        with torch.no_grad():
            scores = rm_model.score(*rmod.pad_right(seqs, pad)).float().tolist()
        best = max(range(len(texts)), key=lambda k: scores[k])
        worst = min(range(len(texts)), key=lambda k: scores[k])
        if scores[best] <= scores[worst]:
            continue
        verdict = gold.compare(e, texts[best], texts[worst])
        agree[{"A": "agree", "tie": "tie", "B": "disagree"}[verdict]] += 1
        pairs.append(
            {
                "prompt": format_prompt(e),
                "chosen": texts[best],
                "rejected": texts[worst],
                "chosen_score": scores[best],
                "rejected_score": scores[worst],
                "gold": verdict,
                "kind": e["kind"],
                "pair_type": "rm_ranked",
            }
        )
    return pairs, agree


def short_row(result: dict) -> dict:
    """The figures without the per-response lists."""
    return {k: v for k, v in result.items() if not isinstance(v, list)}


# -------------------------------------------------------------------------------- main ----
class Run(NamedTuple):
    """What every stage of ``main`` reads: the flags, the models, the data, the reference."""

    args: argparse.Namespace
    enc: object
    sft_path: Path
    sft_model: object
    rm_model: object | None
    pool: list
    sampled: list
    train_ids: list
    test_ids: list
    entries: list
    train_entries: list
    base_key: str
    ref: tuple
    evaluate: Evaluator
    quick: Evaluator

    @property
    def pad(self) -> int:
        return self.enc.eot_token

    @property
    def ctx(self) -> int:
        return self.sft_model.cfg.context_length


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=CHECKPOINTS)
    parser.add_argument(
        "--steps", type=positive_int, default=SETTINGS["steps"], help="round-1 steps"
    )
    parser.add_argument("--short-steps", type=positive_int, default=SHORT_STEPS)
    parser.add_argument("--round2-steps", type=positive_int, default=ROUND2["steps"])
    parser.add_argument("--round2-prompts", type=positive_int, default=ROUND2["prompts"])
    parser.add_argument("--lr", type=positive_float, default=SETTINGS["lr"])
    parser.add_argument("--beta", type=positive_float, default=SETTINGS["beta"])
    parser.add_argument("--rm", type=Path, default=CHECKPOINTS / "rm.pt")
    parser.add_argument("--sampled-pairs", type=Path, default=CHECKPOINTS / "rm_pairs_sampled.json")
    parser.add_argument("--skip-comparisons", action="store_true", help="round 1 and 2 only")
    add_common_flags(parser)
    return parser.parse_args(argv)


def load_pairs(args, enc, ctx: int) -> tuple[list, list, list, list]:
    """The training pool (rule-made and sampled pairs), the pool's sampled part, and the
    encoded training and held-out pairs."""
    train_pairs = load_json(DATA_DIR / "preferences" / "train.json")
    test_pairs = load_json(DATA_DIR / "preferences" / "test.json")
    sampled = []
    if args.sampled_pairs.is_file():
        sampled = load_json(args.sampled_pairs)["train"]
    pool = train_pairs + sampled
    # Round 1 sees each pair at most once: its reference log-probs are only needed for the
    # pairs of that one pass, a random subset when the pool is larger.
    n_used = min(len(pool), max(args.steps, args.short_steps) * SETTINGS["batch_size"])
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(args.seed))
    train_ids = dpo_lib.encode_preference_pairs([pool[i] for i in order[:n_used]], enc, ctx)
    test_ids = dpo_lib.encode_preference_pairs(test_pairs, enc, ctx)
    return pool, sampled, train_ids, test_ids


def reference_of(sft_model, train_ids, base_key: str, pad: int) -> tuple:
    """The SFT model's log-probs of the training pairs, computed once (cached)."""
    ref_path = CACHE / f"dpo_ref_{base_key}.pt"
    ref_run = {"pairs": data_digest(train_ids)}
    saved = load_state(ref_path, ref_run)
    if saved is not None:
        return (saved["chosen"], saved["rejected"])
    print("reference log-probs of the training pairs (once) ...")
    ref = dpo_lib.reference_logprobs(sft_model, train_ids, batch_size=32, pad_id=pad)
    save_state(ref_path, ref_run, {"chosen": ref[0], "rejected": ref[1]})
    return ref


def prepare(args) -> Run:
    """Set torch up, load the models and the data, and compute the reference log-probs."""
    start_run(args)
    enc = bpe.get_encoding()
    pad = enc.eot_token
    sft_path = CHECKPOINTS / "sft.pt"
    sft_model = load_model(sft_path, tokenizer=enc).eval()
    for p in sft_model.parameters():
        p.requires_grad_(False)
    ctx = sft_model.cfg.context_length
    rm_model = rmod.load_scalar_model(args.rm, tokenizer=enc) if args.rm.is_file() else None
    if rm_model is None:
        print(f"note: no reward model at {args.rm}: round 2 and the reward scores are skipped")

    pool, sampled, train_ids, test_ids = load_pairs(args, enc, ctx)
    entries = load_json(DATA_DIR / "instructions" / "test.json")
    train_entries = load_json(DATA_DIR / "instructions" / "train.json")
    print(
        f"{len(train_ids)} of {len(pool)} training pairs ({len(sampled)} sampled), "
        f"{len(test_ids)} held-out "
        f"pairs, {len(entries)} held-out prompts"
    )
    base_key = key_of(digest(sft_path), len(train_ids), len(sampled), args.seed)
    ref = reference_of(sft_model, train_ids, base_key, pad)
    evaluate = Evaluator(sft_model, enc, entries, test_ids, rm_model, seed=args.seed)
    # the comparison runs are measured on every other held-out prompt
    quick = Evaluator(sft_model, enc, entries[::2], test_ids, rm_model, seed=args.seed)
    quick.ref_pairs = evaluate.ref_pairs
    return Run(
        args, enc, sft_path, sft_model, rm_model, pool, sampled, train_ids, test_ids, entries,
        train_entries, base_key, ref, evaluate, quick,
    )  # fmt: skip


def cached(name: str, key: str, compute):
    """``compute()``, or its result kept in ``data/cache/dpo_<name>_<key>_result.json``."""
    path = CACHE / f"dpo_{name}_{key}_result.json"
    if path.is_file():
        return load_json(path)
    result = compute()
    write_json(path, result)
    return result


def trainable_copy(model):
    """A copy of ``model`` whose parameters take gradients."""
    policy = copy.deepcopy(model)
    for p in policy.parameters():
        p.requires_grad_(True)
    return policy


def round_one(run: Run, settings: dict, key: str) -> tuple:
    """The released model: DPO from SFT against SFT on every training pair (``dpo.pt``).
    Returns ``(released model, history, figures)``."""
    policy = trainable_copy(run.sft_model)
    extra = {"base": "sft.pt", "reference": "sft.pt", "template": "alpaca", **settings}
    round1, history = train_and_release(
        f"round1_{key}", policy, run.train_ids, run.ref, settings, run.args,
        run.args.out_dir / "dpo.pt", run.enc, extra,
    )  # fmt: skip
    result = cached("round1", key, lambda: run.evaluate(round1))
    print(f"round 1: {json.dumps(short_row(result))}")
    return round1, history, result


def short_run(run: Run, name: str, loss_type: str, settings: dict, key: str) -> dict:
    """One comparison run from SFT: its figures on the quick evaluation, and its history."""
    print(f"{name}: {settings}")
    model = trainable_copy(run.sft_model)
    run_ref = None if loss_type in dpo_lib.REFERENCE_FREE else run.ref
    hist, state = train_run(
        f"{name}_{key}", model, run.train_ids, run_ref, settings, run.args, run.pad
    )
    out = short_row(run.quick(model, loss_type, pair_stride=4))
    out["history"], out["settings"] = hist, settings
    state.unlink(missing_ok=True)
    return out


def comparisons(run: Run, logs: dict) -> tuple[dict, dict]:
    """The loss types and the β sweep, short runs of the same length; their histories go
    into ``logs``. Returns the figures ``(by loss type, by β)``."""
    args = run.args
    loss_rows, beta_rows = {}, {}
    variants = [(f"loss_{t}", t, kw) for t, kw in LOSS_VARIANTS.items()]
    variants += [
        (f"beta_{b:g}", "dpo", {"beta": b}) for b in BETAS if b != LOSS_VARIANTS["dpo"]["beta"]
    ]
    for name, loss_type, kw in variants:
        run_settings = dict(SETTINGS, lr=args.lr, steps=args.short_steps, loss_type=loss_type)
        run_settings.update(kw)
        key = key_of(run.base_key, run_settings)
        compute = functools.partial(short_run, run, name, loss_type, run_settings, key)
        row = cached(name, key, compute)
        logs[name] = row.pop("history")
        (loss_rows if name.startswith("loss_") else beta_rows)[name.split("_", 1)[1]] = row
        print(
            f"{name}: {json.dumps({k: row[k] for k in ('preferred', 'correct', 'kl', 'reward_accuracy')})}"
        )
    beta_rows[f"{LOSS_VARIANTS['dpo']['beta']:g}"] = loss_rows["dpo"]
    return loss_rows, beta_rows


def round2_pairs(run: Run, round1, key: str) -> dict:
    """Round 2's pairs from the round-1 policy's samples, and their agreement with the gold
    rule (cached)."""
    pairs_path = CACHE / f"dpo_round2_pairs_{key}.json"
    if pairs_path.is_file():
        return load_json(pairs_path)
    args = run.args
    print("round 2: sampling the round-1 policy ...")
    rng = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(run.train_entries), generator=rng)[: args.round2_prompts].tolist()
    r2_pairs, agree = sample_round2_pairs(
        round1, run.rm_model, run.enc, [run.train_entries[i] for i in order], args.seed + 1,
        not args.no_progress,
    )  # fmt: skip
    sampled_info = {"pairs": r2_pairs, "gold_agreement": agree}
    write_json(pairs_path, sampled_info)
    return sampled_info


def round_two(run: Run, round1, r1_key: str) -> tuple:
    """Iterative DPO: from round 1 against round 1, on its own samples ranked by the reward
    model (``dpo_round2.pt``). Returns ``(history, figures, the pairs' summary)``."""
    args = run.args
    r2_settings = dict(SETTINGS, beta=ROUND2["beta"], lr=ROUND2["lr"], steps=args.round2_steps)
    r2_key = key_of(r1_key, digest(args.rm), args.round2_prompts, ROUND2, r2_settings)
    sampled_info = round2_pairs(run, round1, r2_key)
    r2_ids = dpo_lib.encode_preference_pairs(sampled_info["pairs"], run.enc, run.ctx)
    policy2 = trainable_copy(round1)
    ref2 = None
    if not (CACHE / f"dpo_round2_{r2_key}_weights.pt").is_file():
        ref2 = dpo_lib.reference_logprobs(round1, r2_ids, batch_size=32, pad_id=run.pad)
    extra2 = {"base": "dpo.pt", "reference": "dpo.pt", "template": "alpaca", **r2_settings}
    round2, history = train_and_release(
        f"round2_{r2_key}", policy2, r2_ids, ref2, r2_settings, args,
        args.out_dir / "dpo_round2.pt", run.enc, extra2,
    )  # fmt: skip
    result = cached("round2", r2_key, lambda: run.evaluate(round2))
    n_pairs = len(sampled_info["pairs"])
    info = {
        "pairs": n_pairs,
        "prompts": args.round2_prompts,
        "gold_agreement": {
            k: v / max(1, n_pairs) for k, v in sampled_info["gold_agreement"].items()
        },
        "settings": r2_settings | {k: ROUND2[k] for k in ("samples", "temperature")},
        "examples": sampled_info["pairs"][:8],
    }
    print(f"round 2: {json.dumps(short_row(result))}")
    return history, result, info


def responses_of(entries: list[dict], sft_result: dict, results: dict) -> list[dict]:
    """Each held-out entry with the greedy responses of SFT, round 1 and round 2."""
    return [
        dict(
            e,
            sft_response=s,
            dpo_response=r1,
            **(
                {"dpo_round2_response": results["round2"]["responses"][i]}
                if "round2" in results
                else {}
            ),
        )
        for i, (e, s, r1) in enumerate(
            zip(entries, sft_result["responses"], results["round1"]["responses"])
        )
    ]


def summary_line(metrics: dict) -> str:
    """The closing line: implicit-reward accuracy, style, right answers and KL."""
    s, r1 = metrics["sft"], metrics["round1"]
    line = (
        f"held-out pairs ranked right by the implicit reward {r1['reward_accuracy']:.1%}; "
        f"preferred style {s['preferred']:.1%} -> {r1['preferred']:.1%}, right answers "
        f"{s['correct']:.1%} -> {r1['correct']:.1%}, KL to SFT {r1['kl']:.2f}"
    )
    if metrics["round2"]:
        r2 = metrics["round2"]
        line += f"; round 2: preferred {r2['preferred']:.1%}, right {r2['correct']:.1%}, KL {r2['kl']:.2f}"
    return f"{line}; {metrics['train_seconds'] / 60:.1f} min"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    run = prepare(args)
    results, logs = {}, {}
    sft_result = cached(
        "sft",
        key_of(run.base_key, "eval"),
        lambda: run.evaluate(run.sft_model),
    )
    settings = dict(SETTINGS, lr=args.lr, beta=args.beta, steps=args.steps)
    r1_key = key_of(run.base_key, settings)
    round1, logs["round1"], results["round1"] = round_one(run, settings, r1_key)
    loss_rows, beta_rows = {}, {}
    if not args.skip_comparisons:
        loss_rows, beta_rows = comparisons(run, logs)
    round2_info = None
    if run.rm_model is not None:
        logs["round2"], results["round2"], round2_info = round_two(run, round1, r1_key)

    metrics = {
        "sft": short_row(sft_result),
        "round1": short_row(results["round1"]),
        "round2": short_row(results["round2"]) if "round2" in results else None,
        "round2_pairs": round2_info,
        "loss_types": loss_rows,
        "beta_sweep": beta_rows,
        "settings": settings,
        "short_steps": args.short_steps,
        "short_run_prompts": len(run.entries[::2]),
        "loss_variants": LOSS_VARIANTS,
        "train_pairs": len(run.train_ids),
        "train_pool": len(run.pool),
        "sampled_pairs": len(run.sampled),
        "test_pairs": len(run.test_ids),
        "test_prompts": len(run.entries),
        "reward_model": args.rm.name if run.rm_model is not None else None,
        "sft_digest": digest(run.sft_path),
        "seed": args.seed,
        "train_seconds": time.perf_counter() - start,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    write_json(args.out_dir / "dpo_log.json", logs)
    write_json(args.out_dir / "dpo_responses.json", responses_of(run.entries, sft_result, results))
    write_json(args.out_dir / "dpo_metrics.json", metrics)
    print(summary_line(metrics))
    return metrics


if __name__ == "__main__":
    try:
        main()
    except FloatingPointError as exc:
        sys.exit(f"make dpo stopped, no checkpoint written (the last good one is kept): {exc}")
