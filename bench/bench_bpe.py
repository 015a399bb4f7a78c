"""Benchmark the from-scratch BPE: training time, against Hugging Face ``tokenizers``' Rust
trainer and tiktoken's educational trainer, and encoding speed against ``tiktoken.Encoding``.
A script, not a test:

    .venv/bin/python bench/bench_bpe.py [--sample-chars 80000] [--sample-vocab 512]

Figures are wall-clock times on whatever else the machine is doing, so read the ratios
(both sides measured in the same run), not the absolute numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

from tiktoken._educational import bpe_train
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from shared import bpe
from shared.bpe import ENDOFTEXT, GPT2_SPLIT_PATTERN, BPETokenizer


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def train_hf(text: str, vocab_size: int) -> Tokenizer:
    """HF ``tokenizers``' byte-level BPE trainer (Rust, multi-threaded), GPT-2 style."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[ENDOFTEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(text.split(ENDOFTEXT), trainer=trainer)
    return tok


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=bpe.DATA_DIR)
    parser.add_argument("--vocab-size", type=int, default=bpe.PROJECT_VOCAB_SIZE)
    parser.add_argument(
        "--sample-chars",
        type=int,
        default=80_000,
        help="tiny-world characters for the race against tiktoken._educational",
    )
    parser.add_argument("--sample-vocab", type=int, default=512)
    parser.add_argument("--skip-educational", action="store_true")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    results: dict = {}

    files = {name: args.data_dir / name for name in bpe.PROJECT_TRAINING_FILES}
    for name in ("tiny_world/val.txt", "python_docs/val.txt"):
        files[name] = args.data_dir / name
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"missing {missing}: run `make data` first")
    texts = {name: path.read_text(encoding="utf-8") for name, path in files.items()}
    world_train = texts["tiny_world/train.txt"]

    print("1. training")
    start = time.perf_counter()
    try:
        BPETokenizer.train(world_train, args.vocab_size)
        outcome = "done"
    except ValueError as e:  # the tiny world runs out of pairs long before 4,096
        outcome = f"impossible, it ran out of pairs: {e}"
    print(
        f"   tiny-world train ({len(world_train):,} chars), vocab {args.vocab_size}: "
        f"{time.perf_counter() - start:.2f} s, {outcome}"
    )
    project_text = ENDOFTEXT.join(texts[name] for name in bpe.PROJECT_TRAINING_FILES)
    tok, seconds = timed(BPETokenizer.train, project_text, args.vocab_size)
    print(
        f"   project recipe {bpe.PROJECT_TRAINING_FILES} ({len(project_text):,} chars), "
        f"vocab {args.vocab_size}: {seconds:.2f} s"
    )
    hf, t_hf = timed(train_hf, project_text, args.vocab_size)
    print(
        f"   HF tokenizers' Rust BpeTrainer, same text and vocab ({hf.get_vocab_size():,}): "
        f"{t_hf:.2f} s; ours takes {seconds / t_hf:.1f}x as long"
    )
    results["train"] = {
        "chars": len(project_text),
        "vocab": args.vocab_size,
        "ours_s": seconds,
        "hf_tokenizers_s": t_hf,
    }

    if not args.skip_educational:
        print("2. against tiktoken._educational.bpe_train (same text, same vocab size)")
        sample = world_train[: args.sample_chars].replace(ENDOFTEXT, "")
        ours, t_ours = timed(BPETokenizer.train, sample, args.sample_vocab, special_tokens=())
        with contextlib.redirect_stdout(io.StringIO()):  # it narrates every merge
            theirs, t_theirs = timed(
                bpe_train, sample, args.sample_vocab, GPT2_SPLIT_PATTERN, visualise=None
            )
        merges = {t: r for t, r in theirs.items() if r >= 256}
        same = sum(ours.ranks.get(t) == r for t, r in merges.items())
        print(
            f"   {len(sample):,} chars, vocab {args.sample_vocab}: ours {t_ours:.3f} s, "
            f"educational {t_theirs:.2f} s, speed-up {t_theirs / t_ours:.0f}x"
        )
        results["educational"] = {"ours_s": t_ours, "educational_s": t_theirs}
        learned = {t for t in ours.ranks if len(t) > 1}
        print(
            f"   same merge at the same rank: {same} of {len(merges)}; same set of tokens: "
            f"{len(learned & set(merges))} of {len(merges)} (each breaks ties between equally "
            "frequent pairs its own way, so the orders drift apart after the first tie)"
        )

    print("3. encoding speed, from scratch vs tiktoken.Encoding (same ranks)")
    enc = tok.to_tiktoken()
    for name in ("tiny_world/val.txt", "python_docs/val.txt"):
        text = texts[name]
        fresh = BPETokenizer(tok.ranks, tok.special_tokens, tok.pattern)  # empty chunk cache
        ids, t_cold = timed(fresh.encode, text, allowed_special="all")
        _, t_warm = timed(fresh.encode, text, allowed_special="all")
        ids_tt, t_tt = timed(enc.encode, text, allowed_special="all")
        assert ids == ids_tt, f"from-scratch and tiktoken ids differ on {name}"
        n = len(ids)
        print(f"   {name}: {n:,} tokens ({len(text) / n:.2f} chars/token), ids identical")
        print(
            f"     from scratch {n / t_cold:,.0f} tokens/s (cold cache), {n / t_warm:,.0f} "
            f"(warm); tiktoken {n / t_tt:,.0f} tokens/s = {t_warm / t_tt:.1f}x warm"
        )
        results.setdefault("encode", {})[name] = {
            "tokens": n,
            "ours_cold": n / t_cold,
            "ours_warm": n / t_warm,
            "tiktoken": n / t_tt,
        }
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
