"""Train the judge of chapter 12: ``python data/scripts/judge.py`` (``make judge``).

The judge reads the lecture's 1-5 rubric prompt (an instruction, a reference answer, a
response) and writes "Evaluation: ... Total rating: N", or reads the pairwise prompt and
writes ``[[A]]``, ``[[B]]`` or ``[[tie]]``; the gold rule (``shared.gold``) gives the targets
(``shared.judge_data``).

Three steps, each resumable (state in ``data/cache/judge_*``):

1. **Start from the SFT model** (``sft.pt``), not the base model: it already reads the Alpaca
   template, answers after one space and stops with end-of-text, which is how the judge is
   asked through the server (the rubric text is the user message).
2. **Extend the context from 128 to 1024 positions.** The rubric prompt is about 730 tokens
   in the Alpaca template. The learned table of 128 position vectors is stretched to 1024
   rows by linear interpolation (position interpolation, ``extend_context``), then
   ``--long-steps`` steps of plain next-token training on 1024-token windows of the
   tiny-world corpus teach the model to read that far: on validation windows the loss past
   position 128 falls from 3.6-5.1 to about 0.75 within 50 steps.
3. **Fine-tune on judge data** with the loss on the answer only (prompt masked): rubric
   items for the response variants of the training instructions, and pairwise items, each
   pair in both orders. The targets reason before they rate: the judge first names the
   reference's answer and the response's answer, then says right or wrong and how it is
   written, then the rating (``shared.judge_data.analysis``); trained to rate directly, the
   judge wrote the format but gave nearly every answer the same rating. Rubric and pairwise
   batches take turns; the rubric prompts' shared preamble runs once per batch
   (``SharedPrefix``), which makes a rubric batch about four times cheaper.

Then the released judge (bfloat16, ``context_length`` 1024 in its config, the tokenizer
recorded) is measured through ``shared.chat.ChatModel`` (the same code the server
runs, greedy decoding) on held-out items: rule-made responses to the test/validation
instructions, which ask about people the training items never show, and the real
responses of the SFT, DPO and PPO models. Writes into ``--out-dir``:

- ``judge.pt``; ``judge_log.json`` (both training histories);
- ``judge_metrics.json``: quadratic-weighted kappa and accuracy against the gold rating,
  overall and per source, the confusion matrix, the parse-failure rate, pairwise accuracy,
  swap consistency and first-position win rate, the timings;
- ``judge_eval.json``: every held-out item with the judge's raw answer and parsed rating;
- ``judge_arena.json``: the judge's pairwise verdicts, in both orders, between the saved
  answers of the SFT, PPO and DPO models (rounds 1 and 2) to 50 held-out prompts.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import (
    CACHE,
    CHECKPOINTS,
    DATA_DIR,
    add_common_flags,
    fraction,
    load_split,
    positive_float,
    positive_int,
    start_run,
)
from torch import Tensor, nn
from tqdm.auto import tqdm

from shared import bpe, gold, sft
from shared import judge_data as jd
from shared.chat import ChatModel
from shared.checkpoints import load_model, save_checkpoint
from shared.files import write_json
from shared.gpt import GPTModel
from shared.tiny_world import make_world
from shared.training import TokenBatches, lr_at, make_optimizer, train

CONTEXT = 1024
SETTINGS = dict(
    long_steps=150,
    long_batch=2,
    long_lr=1e-3,
    steps=600,  # optimizer steps, rubric and pairwise batches taking turns
    batch_size=16,
    max_lr=5e-4,
    warmup_steps=20,
    weight_decay=0.1,
    grad_clip=1.0,
    rating_items=6000,  # rubric items in the training mix
    pairwise_items=2400,  # pairwise items (half of them the other half swapped)
)
EVAL = dict(rule=120, sft=100, dpo=100, ppo=60, pairs=80)
OPTIONS = dict(temperature=0, seed=0, num_predict=80)


def extend_context(model: GPTModel, context: int) -> GPTModel:
    """A copy of ``model`` with ``context`` positions, the learned table stretched to fit.

    Position interpolation: new position ``j`` gets the learned vector at the fractional
    position ``j * (old - 1) / (context - 1)``, linearly interpolated, so the table keeps
    its shape (neighbours stay neighbours) at a finer step. Measured on 1024-token windows
    of validation text before any training, the loss past position 128 is 3.6-5.1 this way;
    tiling the learned vectors instead (positions 64-127 repeated, as some long-context
    models do) gives 7.0-7.8, and after 25 steps of training 0.95-1.0 vs 2.0-2.3.
    """
    old = model.cfg.context_length
    cfg = model.cfg.to_dict() | {"context_length": context}
    longer = GPTModel(cfg)
    state = {k: v for k, v in model.state_dict().items() if k != "pos_emb.weight"}
    missing, unexpected = longer.load_state_dict(state, strict=False)
    assert missing == ["pos_emb.weight"] and not unexpected, (missing, unexpected)
    with torch.no_grad():
        learned = model.pos_emb.weight.float().T[None]  # (1, emb_dim, old)
        stretched = F.interpolate(learned, size=context, mode="linear", align_corners=True)
        longer.pos_emb.weight.copy_(stretched[0].T)
    assert old < context
    return longer.float()


def training_items(train: list[dict], world, seed: int) -> tuple[list[dict], list[dict]]:
    """Rubric items and pairwise items (each pair in both orders: a judge that sees both
    orders in training has less reason to prefer a position), shuffled."""
    rng = random.Random(seed)
    ratings = jd.make_rating_items(train, world, seed=seed)
    ratings = rng.sample(ratings, SETTINGS["rating_items"])
    half = SETTINGS["pairwise_items"] // 2
    pairs = jd.make_pairwise_items(rng.sample(train, half), world, seed=seed + 1, per_entry=1)
    swapped = [jd.pair_item(p, p["b"], p["a"], p["variant"], world) for p in pairs]
    pairs += swapped
    rng.shuffle(pairs)
    return ratings, pairs


def as_entries(items: list[dict]) -> list[dict]:
    """Judge items as instruction entries (the judge prompt is the instruction)."""
    return [{"instruction": i["prompt"], "input": "", "output": i["target"]} for i in items]


class SharedPrefix(nn.Module):
    """``model``, run cheaply on batches whose rows all begin with ``prefix`` (token ids).

    Every rubric prompt begins with the same 600-odd tokens of the lecture's preamble. The
    shared part runs once, for one row and without a gradient, and each row's rest attends
    to its cached keys and values: the same logits as running each row whole (checked
    before training), for about a quarter of the work. The logits then cover the positions
    after the prefix only, and so do the targets of such a batch (``TakingTurns``). Other
    inputs run whole.
    """

    def __init__(self, model: GPTModel, prefix: list[int]) -> None:
        super().__init__()
        self.model, self.prefix = model, torch.tensor(prefix)

    def shares_prefix(self, idx: Tensor) -> bool:
        n = len(self.prefix)
        return idx.shape[1] > n and bool((idx[:, :n] == self.prefix).all())

    def forward(self, idx: Tensor) -> Tensor:
        if not self.shares_prefix(idx):
            return self.model(idx)
        n = len(self.prefix)
        cache = self.model.new_kv_cache()
        with torch.no_grad():
            self.model(idx[:1, :n], kv_cache=cache)
        for layer in cache.layers:  # the one row's keys and values, for every row
            layer.keys = layer.keys.repeat(idx.shape[0], 1, 1, 1)
            layer.values = layer.values.repeat(idx.shape[0], 1, 1, 1)
        return self.model(idx[:, n:], kv_cache=cache)


class TakingTurns:
    """Rubric batches (targets cut to the positions after the shared prefix) and pairwise
    batches, taking turns: batch ``2i`` is rubric batch ``i``, batch ``2i+1`` pairwise."""

    world_size, rank = 1, 0

    def __init__(self, rubric, pairwise, prefix_len: int) -> None:
        self.rubric, self.pairwise, self.prefix_len = rubric, pairwise, prefix_len
        self.batch_size, self.seed = rubric.batch_size, rubric.seed
        self.tokens_per_batch = (rubric.tokens_per_batch + pairwise.tokens_per_batch) // 2

    def __len__(self) -> int:
        return 2 * min(len(self.rubric), len(self.pairwise))

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if i % 2:
            return self.pairwise[i // 2]
        inputs, targets = self.rubric[i // 2]
        return inputs, targets[:, self.prefix_len :]

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def common_prefix(dataset: sft.InstructionDataset) -> list[int]:
    """The token ids every example of ``dataset`` begins with (within its prompts)."""
    first = dataset[0][0]
    n = min(prompt_len for _, prompt_len in dataset.items) - 1
    for ids, _ in dataset.items:
        while n and ids[:n] != first[:n]:
            n -= 1
    return first[:n]


def check_shared_prefix(wrapped: SharedPrefix, batches: TakingTurns) -> float:
    """The largest difference between the shared-prefix logits and running rows whole."""
    inputs, _ = batches[0]
    with torch.no_grad():
        whole = wrapped.model(inputs[:4])[:, len(wrapped.prefix) :]
        diff = (wrapped(inputs[:4]) - whole).abs().max().item()
    if diff > 1e-3:
        raise RuntimeError(f"shared-prefix logits differ from whole rows by {diff:.2e}")
    return diff


def eval_items(data: dict, world, seed: int) -> tuple[list[dict], list[dict]]:
    """Held-out rubric items (rule-made and real responses) and pairwise items."""
    rng = random.Random(seed)
    held = data["test"] + data["val"]
    rule = jd.make_rating_items(held, world, seed=seed, per_entry=1)
    rule = rng.sample(rule, EVAL["rule"])
    real = []
    lookup = {(e["instruction"], e["input"]): e for e in held}
    ck = DATA_DIR / "checkpoints"
    sources = [
        ("sft", "sft_responses.json", "model_response"),
        ("dpo", "dpo_responses.json", "dpo_response"),
        ("ppo", "ppo_responses.json", None),
    ]
    for name, file, key in sources:
        if not (ck / file).is_file() or not EVAL[name]:
            continue
        rows = json.loads((ck / file).read_text("utf-8"))
        # the reference and split of each row from the instruction data (PPO's rows lack them)
        rows = [
            lookup[(r["instruction"], r["input"])] | r
            for r in rows
            if (r["instruction"], r["input"]) in lookup
        ]
        key = key or next(k for k in rows[0] if k.endswith("response") and k != "sft_response")
        rows = rng.sample(rows, min(EVAL[name], len(rows)))
        real += jd.real_rating_items(rows, key, world, name)
    pairs = jd.make_pairwise_items(rng.sample(held, EVAL["pairs"]), world, seed=seed, per_entry=1)
    return rule + real, pairs


def judge_all(chat: ChatModel, prompts: list[str], desc: str, progress: bool) -> list[str]:
    return [
        chat.chat(p, **OPTIONS)
        for p in tqdm(prompts, desc=desc, disable=not progress, mininterval=2)
    ]


def measure(chat: ChatModel, ratings: list[dict], pairs: list[dict], progress: bool) -> dict:
    """Every figure of judge_metrics.json, and the items with the judge's answers."""
    t0 = time.perf_counter()
    answers = judge_all(chat, [i["prompt"] for i in ratings], "rubric items", progress)
    seconds_rubric = time.perf_counter() - t0
    for item, text in zip(ratings, answers):
        item["judge_answer"], item["judge_rating"] = text, jd.parse_rating(text)
    swapped = [jd.pairwise_prompt(p, p["b"], p["a"]) for p in pairs]
    both = judge_all(chat, [p["prompt"] for p in pairs] + swapped, "pairwise", progress)
    for k, p in enumerate(pairs):
        p["judge_ab"], p["judge_ba"] = both[k], both[len(pairs) + k]
        p["verdict_ab"], p["verdict_ba"] = (
            jd.parse_verdict(both[k]),
            jd.parse_verdict(both[len(pairs) + k]),
        )
    return {"ratings": ratings, "pairs": pairs, "seconds_rubric": seconds_rubric} | figures(
        ratings, pairs
    )


def figures(ratings: list[dict], pairs: list[dict]) -> dict:
    def rating_figures(items):
        parsed = [i for i in items if i["judge_rating"] is not None]
        gold = [i["rating"] for i in parsed]
        said = [i["judge_rating"] for i in parsed]
        return {
            "n": len(items),
            "parse_failures": 1 - len(parsed) / len(items),
            "accuracy": sum(g == s for g, s in zip(gold, said)) / max(1, len(parsed)),
            "within_one": sum(abs(g - s) <= 1 for g, s in zip(gold, said)) / max(1, len(parsed)),
            # a failed parse counts as the worst disagreement it could be: rating 1 vs gold
            "kappa": jd.quadratic_weighted_kappa(
                [i["rating"] for i in items], [i["judge_rating"] or 1 for i in items]
            ),
            "mean_gold": sum(i["rating"] for i in items) / len(items),
            "mean_judge": sum(said) / max(1, len(said)),
        }

    by_source = {}
    for item in ratings:
        by_source.setdefault(item["source"], []).append(item)
    confusion = [[0] * 5 for _ in range(5)]
    for i in ratings:
        if i["judge_rating"] is not None:
            confusion[i["rating"] - 1][i["judge_rating"] - 1] += 1
    flip = {"A": "B", "B": "A", "tie": "tie"}
    n = len(pairs)
    consistent = [
        p
        for p in pairs
        if p["verdict_ab"] is not None and p["verdict_ab"] == flip.get(p["verdict_ba"])
    ]
    # the verdict after both orders: a consistent one, else a tie (AlpacaEval's convention)
    for p in pairs:
        p["verdict_both"] = p["verdict_ab"] if p in consistent else "tie"
    decided = [v for p in pairs for v in (p["verdict_ab"], p["verdict_ba"]) if v in ("A", "B")]
    pair_parse = [v for p in pairs for v in (p["verdict_ab"], p["verdict_ba"])]
    real = [i for i in ratings if i["source"] != "rule"]
    return {
        "rubric": rating_figures(ratings),
        "rubric_real": rating_figures(real) if real else None,
        "rubric_by_source": {k: rating_figures(v) for k, v in by_source.items()},
        "confusion": confusion,
        "pairwise": {
            "n_pairs": n,
            "parse_failures": sum(v is None for v in pair_parse) / len(pair_parse),
            "accuracy_ab": sum(p["verdict_ab"] == p["verdict"] for p in pairs) / n,
            "accuracy_ba": sum(p["verdict_ba"] == flip[p["verdict"]] for p in pairs) / n,
            "accuracy_both_orders": sum(p["verdict_both"] == p["verdict"] for p in pairs) / n,
            "swap_consistency": len(consistent) / n,
            "first_position_win_rate": sum(v == "A" for v in decided) / max(1, len(decided)),
        },
    }


ARENA_PROMPTS = 50


def arena(judge: ChatModel, out: Path, seed: int, progress: bool) -> dict:
    """Pairwise verdicts, in both orders, between the chapter 10-11 models' saved answers to
    ``ARENA_PROMPTS`` held-out prompts: the battles of an arena-style rating (chapter 12)."""
    ck = DATA_DIR / "checkpoints"
    rows = json.loads((ck / "dpo_responses.json").read_text("utf-8"))
    answers = {m: [r[f"{m}_response"] for r in rows] for m in ("sft", "dpo", "dpo_round2")}
    if (ck / "ppo_responses.json").is_file():
        ppo = {
            (r["instruction"], r["input"]): r["ppo_response"]
            for r in json.loads((ck / "ppo_responses.json").read_text("utf-8"))
        }
        if all((r["instruction"], r["input"]) in ppo for r in rows):
            answers["ppo"] = [ppo[(r["instruction"], r["input"])] for r in rows]
    picked = sorted(random.Random(seed).sample(range(len(rows)), ARENA_PROMPTS))
    models = list(answers)
    battles, prompts = [], []
    for i in picked:
        for x in range(len(models)):
            for y in range(x + 1, len(models)):
                a, b = models[x], models[y]
                for first, second in ((a, b), (b, a)):
                    ra, rb = answers[first][i], answers[second][i]
                    battles.append(
                        {
                            "prompt_index": i,
                            "model_a": first,
                            "model_b": second,
                            "gold": gold.compare(rows[i], ra, rb),
                        }
                    )
                    prompts.append(jd.pairwise_prompt(rows[i], ra, rb))
    said = judge_all(judge, prompts, "arena", progress)
    for battle, text in zip(battles, said):
        battle["judge_answer"], battle["verdict"] = text, jd.parse_verdict(text)
    result = {"models": models, "prompts": picked, "battles": battles, "options": OPTIONS}
    write_json(out / "judge_arena.json", result)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=positive_int, help="override the judge fine-tuning steps")
    parser.add_argument("--long-steps", type=positive_int, help="override the long-context steps")
    parser.add_argument(
        "--max-lr", type=positive_float, help="override the judge fine-tuning peak lr"
    )
    parser.add_argument("--eval-scale", type=fraction, default=1.0, help="share of the eval sets")
    parser.add_argument("--checkpoint-every", type=positive_int, default=20)
    parser.add_argument("--out-dir", type=Path, default=CHECKPOINTS)
    add_common_flags(parser)
    parser.add_argument("--only-arena", action="store_true", help="the arena battles only")
    return parser.parse_args(argv)


def long_context_model(args, enc, long_steps: int, logs: dict) -> GPTModel:
    """Steps 1-2: the SFT model with ``CONTEXT`` positions, trained on long tiny-world text
    (its history goes to ``logs["long"]``)."""
    torch.manual_seed(args.seed)
    model = extend_context(load_model(DATA_DIR / "checkpoints" / "sft.pt"), CONTEXT)
    text = (DATA_DIR / "tiny_world" / "train.txt").read_text("utf-8")[:400_000]
    ids = enc.encode(text, allowed_special="all")
    long_batches = TokenBatches(ids, CONTEXT, SETTINGS["long_batch"], seed=args.seed)
    val_ids = enc.encode(
        (DATA_DIR / "tiny_world" / "val.txt").read_text("utf-8")[:40_000], allowed_special="all"
    )
    long_val = TokenBatches(val_ids, CONTEXT, SETTINGS["long_batch"], shuffle=False)
    if long_steps:
        opt = make_optimizer(model, lr=SETTINGS["long_lr"], weight_decay=SETTINGS["weight_decay"])
        state = CACHE / f"judge_long_{long_steps}_state.pt"
        model.train()
        logs["long"] = train(
            model,
            opt,
            long_batches,
            list(long_val)[:2],
            max_steps=long_steps,
            lr_schedule=lambda s: SETTINGS["long_lr"],
            grad_clip=SETTINGS["grad_clip"],
            eval_every=long_steps,
            eval_batches=2,
            checkpoint_path=state,
            checkpoint_every=args.checkpoint_every,
            resume_from=state if state.is_file() else None,
            progress=not args.no_progress,
        )
    return model


def batches_of(items: list[dict], enc, seed: int, shuffle: bool = True):
    """Instruction batches of judge items, the loss on the answer only."""
    dataset = sft.InstructionDataset(as_entries(items), enc, "alpaca", CONTEXT)
    return sft.InstructionBatches(
        dataset, SETTINGS["batch_size"], seed=seed, shuffle=shuffle, mask_prompt=True
    )


def probe_report(probe: list[dict], enc, log: list, step: int, wrapped: SharedPrefix) -> None:
    """``on_eval``: agreement with gold on the 40 held-out rubric items of ``probe``,
    printed as training goes and added to ``log``."""
    was_training = wrapped.training
    wrapped.eval()
    chat = ChatModel("judge", wrapped.model, enc, "alpaca")
    said = [jd.parse_rating(chat.chat(i["prompt"], **OPTIONS)) for i in probe]
    gold_ratings = [i["rating"] for i in probe]
    kappa = jd.quadratic_weighted_kappa(gold_ratings, [s or 1 for s in said])
    right = sum(s == g for s, g in zip(said, gold_ratings))
    tqdm.write(f"step {step}: {right}/{len(probe)} ratings right, kappa {kappa:.2f}")
    log.append([step, right, kappa])
    wrapped.train(was_training)


def tune_judge(
    model, args, enc, world, data: dict, steps: int, long_steps: int, logs: dict
) -> tuple[list[dict], list[dict]]:
    """Step 3: judge fine-tuning, the loss on the answer only (its history and the probe's
    figures go to ``logs``). Returns the rubric and the pairwise training items."""
    # rubric and pairwise batches take turns, and the rubric prompts' shared preamble runs
    # once per batch (SharedPrefix)
    rubric, pairwise = training_items(data["train"], world, args.seed)
    val_items = jd.make_rating_items(data["val"][:8], world, seed=args.seed, per_entry=2)
    rubric_batches = batches_of(rubric, enc, args.seed)
    prefix = common_prefix(rubric_batches.dataset)
    batches = TakingTurns(rubric_batches, batches_of(pairwise, enc, args.seed + 1), len(prefix))
    val = TakingTurns(
        batches_of(val_items, enc, 0, shuffle=False),
        batches_of(pairwise[:32], enc, 0, False),
        len(prefix),
    )
    wrapped = SharedPrefix(model, prefix)
    check_shared_prefix(wrapped, batches)
    probe = jd.make_rating_items(data["val"][8:48], world, seed=args.seed, per_entry=1)
    logs["probe"] = []  # (step, ratings right, kappa) on the 40 probe items

    opt = make_optimizer(model, lr=SETTINGS["max_lr"], weight_decay=SETTINGS["weight_decay"])
    schedule = functools.partial(
        lr_at,
        max_lr=SETTINGS["max_lr"],
        warmup_steps=min(SETTINGS["warmup_steps"], steps),
        total_steps=steps,
        min_lr=SETTINGS["max_lr"] * 0.1,
    )
    state = CACHE / f"judge_tune_{long_steps}_{steps}_{SETTINGS['max_lr']:g}_state.pt"
    wrapped.train()
    logs["judge"] = train(
        wrapped,
        opt,
        batches,
        val,
        max_steps=steps,
        lr_schedule=schedule,
        grad_clip=SETTINGS["grad_clip"],
        eval_every=min(200, steps),
        eval_batches=2,
        on_eval=functools.partial(probe_report, probe, enc, logs["probe"]),
        checkpoint_path=state,
        checkpoint_every=args.checkpoint_every,
        resume_from=state if state.is_file() else None,
        progress=not args.no_progress,
    )
    return rubric, pairwise


def release(model, out: Path, steps: int, enc) -> tuple[Path, ChatModel]:
    """bfloat16 weights to ``judge.pt``; returns its path and the judge read back from it."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "judge.pt"
    extra = {
        "template": "alpaca",
        "base": "sft.pt",
        "context_extension": "the learned 128 positions stretched to 1024 by linear "
        "interpolation; trained on 1024-token tiny-world windows",
        "prompts": ["rubric (the lecture's 1-5)", "pairwise ([[A]]/[[B]]/[[tie]])"],
    }
    save_checkpoint(
        path,
        copy.deepcopy(model).to(torch.bfloat16),
        step=steps,
        config=model.cfg,
        extra=extra,
        tokenizer=enc,
    )
    return path, ChatModel("judge", load_model(path, tokenizer=enc), enc, "alpaca")


def evaluate_judge(judge: ChatModel, data: dict, world, out: Path, seed: int, progress) -> dict:
    """The judge's figures on the held-out items; the items with its answers go to
    ``judge_eval.json``."""
    ratings, pairs = eval_items(data, world, seed=seed + 7)
    result = measure(judge, ratings, pairs, progress)
    write_json(
        out / "judge_eval.json",
        {"ratings": result.pop("ratings"), "pairs": result.pop("pairs"), "options": OPTIONS},
    )
    return result


def summary_line(metrics: dict, path: Path) -> str:
    """The closing line: kappa, accuracy, parse failures and the pairwise figures."""
    r, p = metrics["rubric"], metrics["pairwise"]
    real = metrics["rubric_real"] or r
    return (
        f"judge: kappa {r['kappa']:.3f} (real responses {real['kappa']:.3f}), accuracy "
        f"{r['accuracy']:.1%}, parse failures {r['parse_failures']:.1%}; pairwise swap "
        f"consistency {p['swap_consistency']:.1%}, first-position wins "
        f"{p['first_position_win_rate']:.1%}, accuracy {p['accuracy_both_orders']:.1%}; "
        f"{metrics['wall_seconds'] / 60:.1f} min; wrote {path}"
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    start_run(args)
    progress = not args.no_progress
    enc = bpe.get_encoding()
    world = make_world(seed=0)
    data = {s: load_split(s) for s in ("train", "val", "test")}
    long_steps = args.long_steps if args.long_steps is not None else SETTINGS["long_steps"]
    steps = args.steps or SETTINGS["steps"]
    SETTINGS["max_lr"] = args.max_lr or SETTINGS["max_lr"]
    for k in EVAL:
        EVAL[k] = max(1, round(EVAL[k] * args.eval_scale)) if EVAL[k] else 0

    if args.only_arena:
        judge = ChatModel("judge", load_model(args.out_dir / "judge.pt", tokenizer=enc), enc)
        battles = arena(judge, args.out_dir, args.seed, progress)["battles"]
        print(f"arena: {len(battles)} battles in {time.perf_counter() - start:.0f} s")
        return {}

    logs = {}
    model = long_context_model(args, enc, long_steps, logs)
    rubric, pairwise = tune_judge(model, args, enc, world, data, steps, long_steps, logs)
    model.eval()
    train_seconds = time.perf_counter() - start

    out = args.out_dir
    path, judge = release(model, out, steps, enc)
    result = evaluate_judge(judge, data, world, out, args.seed, progress)
    metrics = result | {
        "eval_sizes": dict(EVAL),
        "training_items": {"rubric": len(rubric), "pairwise": len(pairwise)},
        "steps": steps,
        "long_steps": long_steps,
        "context_length": CONTEXT,
        "settings": SETTINGS,
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - start,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "targets": {"kappa": 0.6, "swap_consistency": 0.8, "parse_failures": 0.02},
    }
    arena(judge, out, args.seed, progress)
    write_json(out / "judge_log.json", logs)
    write_json(out / "judge_metrics.json", metrics)
    for f in CACHE.glob("judge_*_state.pt"):
        f.unlink()
    print(summary_line(metrics, path))
    return metrics


if __name__ == "__main__":
    main()
