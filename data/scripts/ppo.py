"""Fine-tune the SFT model with PPO against the reward model: ``python data/scripts/ppo.py`` (``make ppo``).

The four models of RLHF-PPO (``shared.ppo.PPOTrainer``):

- **actor**: the released SFT model (``data/checkpoints/sft.pt``), trained;
- **critic**: a ``ScalarModel`` initialised from the reward model (``rm.pt``), trained. Its
  backbone already reads prompt + response the way the reward model does and its head
  starts on the reward's scale, so the first value estimates are not noise (TRL's default
  too). Initialised from SFT, the zero head would predict 0 everywhere and the first
  advantages would be the raw rewards;
- **reward**: ``rm.pt``, frozen, scoring prompt + response + end-of-text (``score_fn``);
- **reference**: a frozen copy of ``sft.pt`` (the KL penalty of every token).

The prompts are those of the instruction training split. Every ``eval_every`` steps the
policy answers a fixed subset of the test prompts (sampled at temperature 1):
its mean reward-model score (the proxy), its mean gold rating and the KL to the SFT model,
the over-optimisation curve of Gao et al. (2022). Best-of-n on the same prompts gives the
other curve: 64 samples of the SFT model per prompt, scored by the reward model and the
gold rule; for every n ≤ 64 the expected proxy and gold score of the best of n (by the
reward model), against the analytic KL log n − (n − 1)/n.

Writes into ``--out-dir`` (default ``data/checkpoints/``):

- ``ppo.pt``: the policy, bfloat16 (every figure below is measured on the weights read
  back from this file);
- ``ppo_log.json``: ``steps`` (every step's metrics, TRL's names) and ``held_out`` (the
  curve);
- ``ppo_responses.json``: every test entry with the SFT and the PPO greedy responses,
  their gold ratings and reward-model scores;
- ``ppo_metrics.json``: ``shared.alignment_eval.evaluate_policy`` on the test split for SFT
  and PPO, the targets and whether they hold, the settings;
- ``best_of_n.json``: the best-of-n curve.

Interrupted runs continue where they stopped: the trainer's state goes to
``data/cache/ppo_<key>_state.pt`` every ``--checkpoint-every`` steps, the best-of-n
samples to ``data/cache/ppo_bon_<key>.json``.
"""

from __future__ import annotations

import argparse
import copy
import functools
import time
from pathlib import Path

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

from shared import alignment_eval as ae
from shared import bpe, gold
from shared.checkpoints import load_model, save_checkpoint
from shared.files import write_json
from shared.policy import pad_right
from shared.ppo import PPOConfig, PPOTrainer
from shared.prompts import format_prompt
from shared.reward_model import load_scalar_model
from shared.train_state import load_state, save_state

# PPO's hyperparameters (shared.ppo.PPOConfig) and the run's own settings.
PPO_SETTINGS = dict(
    kl_coef=0.2,
    lr=3e-5,
    rollout_batch_size=32,
    minibatch_size=8,
    num_ppo_epochs=2,
    max_new_tokens=32,
    temperature=1.0,
    missing_eos_penalty=-1.0,
    vf_coef=0.1,
    cliprange=0.2,
    cliprange_value=0.2,
    gamma=1.0,
    lam=0.95,
)
SETTINGS = dict(steps=24, eval_every=4, eval_prompts=40, bon_samples=64)
BEST_OF = (1, 2, 4, 8, 16, 32, 64)
# The targets of the released run (checked at the end, on the greedy answers to the test
# split): the reward rises by at least one standard deviation of the SFT policy's scores,
# the KL to the SFT model stays below KL_BOUND nats per response, the gold rating does not
# fall, and at least half of the answers are distinct. 4 nats over a response of about ten
# tokens is an average change of the token probabilities by a factor of about e^0.4 = 1.5.
KL_BOUND = 4.0


def make_score_fn(reward_model, eos_id: int, context_length: int, batch_size: int = 64):
    """``score_fn(prompts, responses)`` for the trainer: the reward model's score of
    prompt + response + end-of-text (appended when the response did not produce it)."""

    @torch.no_grad()
    def score_fn(prompts: list[list[int]], responses: list[list[int]]) -> torch.Tensor:
        seqs = []
        for p, r in zip(prompts, responses):
            body = r if r and r[-1] == eos_id else [*r, eos_id]
            seqs.append((p + body)[-context_length:])
        out = []
        for k in range(0, len(seqs), batch_size):
            idx, mask = pad_right(seqs[k : k + batch_size], eos_id)
            out.append(reward_model.score(idx, mask).float())
        return torch.cat(out)

    return score_fn


def summary(result: dict) -> dict:
    """``evaluate_policy``'s figures without the per-entry lists."""
    return {k: v for k, v in result.items() if not isinstance(v, list)}


def held_out_point(policy, reference, reward_model, entries, encoding, step, seed) -> dict:
    """One point of the over-optimisation curve, on answers sampled at temperature 1 (the
    distribution PPO trains and the KL is measured on; best-of-n samples the same way)."""
    sampled = ae.evaluate_policy(
        policy, entries, encoding, reference=reference, reward_model=reward_model,
        temperature=1.0, generator=torch.Generator().manual_seed(seed),
        max_new_tokens=PPO_SETTINGS["max_new_tokens"], kl_seed=seed + 1,
    )  # fmt: skip
    keys = ("kl", "kl_stderr", "kl_k3", "rm_score", "correct", "preferred", "length", "distinct")
    return {"step": step, "gold_rating": sampled["rating"], **{k: sampled[k] for k in keys}}


def best_of_n_candidates(policy, entries, encoding, key: str, seed: int, progress) -> list:
    """``bon_samples`` responses of the SFT policy to each entry, cached in ``data/cache``."""
    N = SETTINGS["bon_samples"]
    cached = CACHE / f"ppo_bon_{key}.json"
    if cached.is_file():
        return load_json(cached)
    if progress:
        print(f"best-of-n: sampling {N} responses to each of {len(entries)} prompts ...")
    candidates = ae.sample_candidates(
        policy, entries, encoding, N, torch.Generator().manual_seed(seed),
        max_new_tokens=PPO_SETTINGS["max_new_tokens"],
    )  # fmt: skip
    write_json(cached, candidates)
    return candidates


def best_of_n_curve(policy, reward_model, entries, encoding, key: str, seed: int, progress):
    """Proxy and gold score of best-of-n for every n in ``BEST_OF``, from one set of samples."""
    N = SETTINGS["bon_samples"]
    candidates = best_of_n_candidates(policy, entries, encoding, key, seed, progress)
    scored = ae.score_candidates(candidates, entries, encoding, reward_model)
    verdicts = [[gold.assess(e, r) for r in c] for e, c in zip(entries, candidates)]
    correct = torch.tensor([[float(v.correct) for v in row] for row in verdicts])
    preferred = torch.tensor([[float(v.preferred) for v in row] for row in verdicts])
    rows = []
    for n in BEST_OF:
        by_rm = {
            name: ae.expected_best_of_n(scored["rm"], values, n).mean().item()
            for name, values in (
                ("rm_score", scored["rm"]),
                ("gold_rating", scored["gold"]),
                ("correct", correct),
                ("preferred", preferred),
            )
        }
        oracle = ae.expected_best_of_n(scored["gold"], scored["gold"], n).mean().item()
        rows.append({"n": n, "kl": ae.best_of_n_kl(n), **by_rm, "gold_rating_by_gold": oracle})
    best = scored["rm"].argmax(1)
    examples = [
        {
            "instruction": e["instruction"],
            "input": e["input"],
            "first_sample": c[0],
            "best_of_64_by_rm": c[int(k)],
            "rm_score": scored["rm"][i, int(k)].item(),
            "gold_rating": scored["gold"][i, int(k)].item(),
        }
        for i, (e, c, k) in enumerate(zip(entries, candidates, best))
    ]
    return {"samples_per_prompt": N, "prompts": len(entries), "curve": rows, "examples": examples}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=positive_int, default=SETTINGS["steps"])
    parser.add_argument("--kl-coef", type=positive_float, default=PPO_SETTINGS["kl_coef"])
    parser.add_argument("--lr", type=positive_float, default=PPO_SETTINGS["lr"])
    parser.add_argument("--eval-every", type=positive_int, default=SETTINGS["eval_every"])
    parser.add_argument("--checkpoint-every", type=positive_int, default=5)
    parser.add_argument("--sft", type=Path, default=CHECKPOINTS / "sft.pt")
    parser.add_argument("--rm", type=Path, default=CHECKPOINTS / "rm.pt")
    parser.add_argument("--out-dir", type=Path, default=CHECKPOINTS)
    parser.add_argument("--no-best-of-n", action="store_true", help="skip the best-of-n curve")
    parser.add_argument(
        "--best-of-n-samples-only",
        action="store_true",
        help="only sample (and cache) the SFT responses of best-of-n: needs no reward model",
    )
    add_common_flags(parser)
    return parser.parse_args(argv)


def curve_prompts(test: list[dict]) -> list[dict]:
    """The fixed subset of the test prompts that the curve and best-of-n are measured on."""
    step_sz = max(1, len(test) // SETTINGS["eval_prompts"])
    return test[::step_sz][: SETTINGS["eval_prompts"]]


def make_trainer(args, policy, encoding, train: list[dict]) -> tuple:
    """The reference, the frozen reward model, the trainer (its critic initialised from the
    reward model) and the number of training prompts."""
    eos = encoding.eot_token
    reference = copy.deepcopy(policy).eval()
    reward_model = load_scalar_model(args.rm, tokenizer=encoding)
    for p in reward_model.parameters():
        p.requires_grad_(False)
    torch.manual_seed(args.seed)
    critic = load_scalar_model(args.rm, tokenizer=encoding).train()
    ctx = policy.cfg.context_length

    texts = sorted({format_prompt(e) for e in train})
    prompts = [encoding.encode(t, allowed_special="all") for t in texts]

    config = PPOConfig(
        eos_id=eos,
        **(PPO_SETTINGS | {"kl_coef": args.kl_coef, "lr": args.lr, "seed": args.seed}),
    )
    trainer = PPOTrainer(policy, critic, reference, make_score_fn(reward_model, eos, ctx),
                         prompts, config)  # fmt: skip
    return reference, reward_model, trainer, len(prompts)


def record_point(curve: list[dict], point: dict, start: float) -> None:
    """Add one point to the over-optimisation curve and print it."""
    curve.append(point)
    print(
        f"step {point['step']:>4}: held-out reward {point['rm_score']:+.3f}, gold rating "
        f"{point['gold_rating']:.2f}, KL {point['kl']:.2f} ± {point['kl_stderr']:.2f} "
        f"({time.perf_counter() - start:.0f} s)",
        flush=True,
    )


def train_policy(trainer, args, point_at, start: float) -> tuple[list[dict], Path]:
    """PPO to ``args.steps``, continuing from the state in the cache; ``point_at(step)``
    measures the held-out curve. Returns the curve and the state's path."""
    key = key_of(
        digest(args.sft),
        digest(args.rm),
        PPO_SETTINGS,
        args.kl_coef,
        args.lr,
        args.seed,
        args.steps,
        args.eval_every,
    )
    state_path = CACHE / f"ppo_{key}_state.pt"
    curve: list[dict] = []
    run = {"key": key}  # the file name holds the key too; the check names it if it differs
    state = load_state(state_path, run)
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        curve = state["curve"]
        print(f"continuing from step {trainer.step_count} ({state_path.name})")

    if not curve:
        record_point(curve, point_at(trainer.step_count), start)
    while trainer.step_count < args.steps:
        n = min(args.checkpoint_every, args.steps - trainer.step_count)
        n = min(n, args.eval_every - trainer.step_count % args.eval_every)
        trainer.train(n, progress=not args.no_progress)
        if trainer.step_count % args.eval_every == 0 or trainer.step_count == args.steps:
            record_point(curve, point_at(trainer.step_count), start)
        save_state(state_path, run, {"trainer": trainer.state_dict(), "curve": curve})
    return curve, state_path


def release(policy, args, encoding) -> tuple[Path, object]:
    """bfloat16 weights to ``ppo.pt``; returns its path and the float32 model read back."""
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    path = out / "ppo.pt"
    released = copy.deepcopy(policy).to(torch.bfloat16)
    extra = {
        "base": args.sft.name,
        "reward_model": args.rm.name,
        "template": "alpaca",
        "ppo": dict(PPO_SETTINGS | {"kl_coef": args.kl_coef, "lr": args.lr}),
        "steps": args.steps,
    }
    save_checkpoint(path, released, step=args.steps, extra=extra, tokenizer=encoding)
    return path, load_model(path, tokenizer=encoding).float().eval()


def evaluate_release(final, sft_model, test, encoding, reference, reward_model, seed) -> tuple:
    """SFT and the released PPO model on the test split, and the targets:
    ``(sft figures, ppo figures, targets)``."""
    sft_eval = ae.evaluate_policy(
        sft_model, test, encoding, reference=reference, reward_model=reward_model,
        max_new_tokens=PPO_SETTINGS["max_new_tokens"], kl_seed=seed,
    )  # fmt: skip
    ppo_eval = ae.evaluate_policy(
        final, test, encoding, reference=reference, reward_model=reward_model,
        baseline_responses=sft_eval["responses"],
        max_new_tokens=PPO_SETTINGS["max_new_tokens"], kl_seed=seed,
    )  # fmt: skip
    sft_std = sft_eval["rm_score_std"]
    rise = ppo_eval["rm_score"] - sft_eval["rm_score"]
    targets = {
        "reward_rise": rise,
        "reward_rise_in_sft_std": rise / sft_std if sft_std > 0 else float("nan"),
        "reward_rise_ok": rise >= sft_std,
        "kl": ppo_eval["kl"],
        "kl_bound": KL_BOUND,
        "kl_ok": ppo_eval["kl"] <= KL_BOUND,
        "gold_rating_change": ppo_eval["rating"] - sft_eval["rating"],
        "gold_ok": ppo_eval["rating"] >= sft_eval["rating"],
        "distinct": ppo_eval["distinct"],
        "distinct_ok": ppo_eval["distinct"] >= 0.5,
    }
    return sft_eval, ppo_eval, targets


def responses_of(test: list[dict], sft_eval: dict, ppo_eval: dict) -> list[dict]:
    """Each test entry with the SFT and PPO responses, ratings and reward-model scores."""
    return [
        {
            **{k: e[k] for k in ("instruction", "input", "output", "answer", "kind", "people")},
            "sft_response": s,
            "ppo_response": p,
            "sft_rating": sr,
            "ppo_rating": pr,
            "sft_rm_score": ss,
            "ppo_rm_score": ps,
        }
        for e, s, p, sr, pr, ss, ps in zip(
            test,
            sft_eval["responses"],
            ppo_eval["responses"],
            sft_eval["ratings"],
            ppo_eval["ratings"],
            sft_eval["rm_scores"],
            ppo_eval["rm_scores"],
        )  # fmt: skip
    ]


def metrics_of(args, sft_eval, ppo_eval, targets, n_train, n_curve, train_seconds) -> dict:
    """``ppo_metrics.json`` but its total time: both evaluations, the targets, the settings."""
    return {
        "sft": summary(sft_eval),
        "ppo": summary(ppo_eval),
        "targets": targets,
        "settings": {
            **SETTINGS,
            **PPO_SETTINGS,
            "kl_coef": args.kl_coef,
            "lr": args.lr,
            "steps": args.steps,
            "eval_every": args.eval_every,
            "seed": args.seed,
            "critic_init": "rm.pt",
            "train_prompts": n_train,
            "curve_prompts": n_curve,
        },
        "sft_digest": digest(args.sft),
        "rm_digest": digest(args.rm),
        "train_seconds": train_seconds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def summary_line(sft_eval: dict, ppo_eval: dict, targets: dict, path: Path, minutes: float) -> str:
    """The closing line: reward, KL, gold rating, correctness, style, win rate, diversity."""
    return (
        f"held-out reward {sft_eval['rm_score']:+.3f} -> {ppo_eval['rm_score']:+.3f} "
        f"(+{targets['reward_rise_in_sft_std']:.2f} SFT std), KL {ppo_eval['kl']:.2f} nats "
        f"(bound {KL_BOUND}), gold rating {sft_eval['rating']:.2f} -> {ppo_eval['rating']:.2f}, "
        f"correct {sft_eval['correct']:.1%} -> {ppo_eval['correct']:.1%}, preferred "
        f"{sft_eval['preferred']:.1%} -> {ppo_eval['preferred']:.1%}, win rate vs SFT "
        f"{ppo_eval['win_rate']:.1%}, distinct {ppo_eval['distinct']:.1%}; wrote {path} in "
        f"{minutes:.1f} min"
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    start_run(args)
    progress = not args.no_progress
    encoding = bpe.get_encoding()

    policy = load_model(args.sft, tokenizer=encoding).float().eval()
    train = load_json(DATA_DIR / "instructions" / "train.json")
    test = load_json(DATA_DIR / "instructions" / "test.json")
    curve_entries = curve_prompts(test)
    bon_key = key_of(
        digest(args.sft),
        args.seed,
        SETTINGS["bon_samples"],
        PPO_SETTINGS["max_new_tokens"],
        [e["instruction"] + e["input"] for e in curve_entries],
    )
    if args.best_of_n_samples_only:
        best_of_n_candidates(policy, curve_entries, encoding, bon_key, args.seed, progress)
        print(f"best-of-n samples cached ({time.perf_counter() - start:.0f} s)")
        return {}
    reference, reward_model, trainer, n_prompts = make_trainer(args, policy, encoding, train)
    point_at = functools.partial(
        held_out_point, policy, reference, reward_model, curve_entries, encoding, seed=args.seed
    )
    curve, state_path = train_policy(trainer, args, point_at, start)
    train_seconds = time.perf_counter() - start

    # ---- release: bf16 weights, every figure measured on the weights read back
    out = args.out_dir
    path, final = release(policy, args, encoding)
    sft_model = load_model(args.sft, tokenizer=encoding).float().eval()
    sft_eval, ppo_eval, targets = evaluate_release(
        final, sft_model, test, encoding, reference, reward_model, args.seed
    )
    metrics = metrics_of(
        args, sft_eval, ppo_eval, targets, n_prompts, len(curve_entries), train_seconds
    )
    write_json(out / "ppo_log.json", {"steps": trainer.history, "held_out": curve})
    write_json(out / "ppo_responses.json", responses_of(test, sft_eval, ppo_eval))

    if not args.no_best_of_n:
        bon = best_of_n_curve(
            sft_model, reward_model, curve_entries, encoding, bon_key, args.seed, progress
        )
        write_json(out / "best_of_n.json", bon)
    metrics["total_seconds"] = time.perf_counter() - start
    write_json(out / "ppo_metrics.json", metrics)
    state_path.unlink(missing_ok=True)
    print(summary_line(sft_eval, ppo_eval, targets, path, metrics["total_seconds"] / 60))
    return metrics


if __name__ == "__main__":
    main()
