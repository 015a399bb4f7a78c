"""How much faster is generation with a KV cache? Same model, same tokens, one run.

    python bench/bench_kv_cache.py [--new-tokens 256] [--repeats 2] [--json out.json]

Generates ``--new-tokens`` greedy tokens with and without the cache, asserts that the
tokens are identical, and prints tokens/s both ways and the ratio, in three settings:

(a) a 1024-token context (the chapter 12 judge, ``data/checkpoints/judge.pt``), a prompt
    of 768 tokens (about the rubric prompt) + 256 new = 1024: the case the cache is for.
    Without it, every step runs the whole sequence (769 ... 1024 tokens) through the
    model; with it, one token that attends over the cached keys and values.
(b) the same model, a 16-token prompt + 256 new: the sequences are short, so each
    uncached step is cheap too and the gain is smaller.
(c) the ``small`` preset's own context (128): once the window is full it has to slide,
    the cached keys and values are stale (every token moved to a new position), and each
    step re-encodes the last 128 tokens, with or without cache. Only the first steps gain.

Without a cache, step ``t`` runs the whole window through the model, so ``n`` new tokens
after a prompt of ``P`` cost about ``n * P + n^2 / 2`` token-passes; with it, ``P + n``.
Without the judge checkpoint, (a) and (b) use random weights: the speed does not depend
on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

import shared
from shared.decoding import generate
from shared.gpt import MODEL_PRESETS, GPTModel


def long_context_model() -> tuple[GPTModel, str]:
    """The released judge (context 1024), or random weights of that shape."""
    path = shared.DATA_DIR / "checkpoints" / "judge.pt"
    try:
        from shared.checkpoints import load_model

        return load_model(path), f"weights of {path.name}"
    except Exception as err:  # no file: random weights are fine for speed
        torch.manual_seed(0)
        cfg = dataclasses.replace(MODEL_PRESETS["small"], context_length=1024)
        return GPTModel(cfg).eval(), f"random weights ({type(err).__name__})"


def token_passes(prompt_len: int, n: int, context: int, use_cache: bool) -> int:
    """How many token positions go through the model to generate ``n`` tokens (the work)."""
    total, length = 0, prompt_len
    for step in range(n):
        window = min(length, context)
        if not use_cache or step == 0 or length > context:
            total += window  # the whole window: no cache, first step, or the window slid
        else:
            total += 1  # only the newest token
        length += 1
    return total


def timed(model: GPTModel, prompt: torch.Tensor, n: int, use_cache: bool, runs: list):
    start = time.perf_counter()
    out = generate(model, prompt, n, use_cache=use_cache)
    runs.append(time.perf_counter() - start)
    return out


def compare(name: str, model: GPTModel, prompt: torch.Tensor, n: int, repeats: int) -> dict:
    generate(model, prompt, 4, use_cache=True)  # warm-up (allocator, first-call overheads)
    generate(model, prompt, 4, use_cache=False)
    plain_runs: list[float] = []
    cached_runs: list[float] = []
    for _ in range(repeats):  # alternate, so a burst of other load hits both
        plain = timed(model, prompt, n, False, plain_runs)
        cached = timed(model, prompt, n, True, cached_runs)
        assert torch.equal(plain, cached), f"{name}: the KV cache changed the greedy tokens"
    t_plain, t_cached = min(plain_runs), min(cached_runs)
    C, P = model.cfg.context_length, prompt.shape[1]
    work = [token_passes(P, n, C, use_cache) for use_cache in (False, True)]
    one_token_steps = max(0, min(P + n, C) - P)  # steps before the window has to slide
    print(f"\n({name}) context {C}, prompt {P} + {n} new tokens = {P + n}")
    print(f"    steps that run one token through the model (cache): {one_token_steps} of {n}")
    print(f"    token positions through the model: {work[0]:,} without cache, {work[1]:,} with")
    print(f"    -> expected speed-up from the work alone: {work[0] / work[1]:.1f}x")
    print(f"    no cache  : {n / t_plain:8.1f} tokens/s ({t_plain:.2f} s, best of {repeats})")
    print(f"    KV cache  : {n / t_cached:8.1f} tokens/s ({t_cached:.2f} s, best of {repeats})")
    print(f"    speed-up  : {t_plain / t_cached:.1f}x, identical greedy tokens: True")
    return {
        "setting": name,
        "context": C,
        "prompt": P,
        "new_tokens": n,
        "tokens_per_s_plain": n / t_plain,
        "tokens_per_s_cached": n / t_cached,
        "speedup": t_plain / t_cached,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs each, best taken")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    shared.setup(scale="small", quiet=True)
    torch.set_num_threads(args.threads)
    n = args.new_tokens

    long_model, source = long_context_model()
    C = long_model.cfg.context_length
    small = GPTModel(MODEL_PRESETS["small"]).eval()
    state = long_model.state_dict()
    state["pos_emb.weight"] = state["pos_emb.weight"][: small.cfg.context_length]
    small.load_state_dict(state)  # the same weights, the preset's 128 positions
    torch.manual_seed(0)
    vocab = long_model.cfg.vocab_size
    long_prompt = torch.randint(0, vocab, (1, max(1, C - n)))
    short_prompt = long_prompt[:, :16]
    print(f"{source}, {torch.get_num_threads()} threads, greedy decoding")
    results = [
        compare("a", long_model, long_prompt, n, args.repeats),
        compare("b", long_model, short_prompt, n, args.repeats),
        compare("c", small, short_prompt, n, args.repeats),
    ]
    print("\nspeed-up " + ", ".join(f"({r['setting']}) {r['speedup']:.1f}x" for r in results))
    print("goal: >= 5x at a 1024-token context, setting (a)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
