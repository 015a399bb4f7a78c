"""How much faster is generation with a KV cache? Same model, same tokens, one run.

    python tests/bench_kv_cache.py [--new-tokens 256] [--prompt-tokens 16] [--repeats 2]

Generates ``--new-tokens`` greedy tokens after a prompt with the "small" preset (6 layers,
width 256, context 128), with and without the cache, asserts that the tokens are
identical, and prints tokens/s both ways and the ratio, in two settings:

(a) the context raised to 512 (a copy of the config), so prompt + new tokens fit and the
    cache is never reset: every step after the prompt runs one token through the model.
(b) the preset as it is (context 128): once the window is full it has to slide, the cached
    keys and values are stale (every token moved to a new position), and each step
    re-encodes the last 128 tokens, with or without cache. Only the first steps gain.

Without a cache, step ``t`` runs the whole window (``t`` tokens) through the model, so
generating ``n`` tokens costs ~``n^2 / 2`` token-passes; with it, ``n``. The weights are
those of ``data/checkpoints/base_small.pt`` if it exists (and fits), random otherwise; the
speed does not depend on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

import shared
from shared.decoding import generate
from shared.gpt import MODEL_PRESETS, GPTModel


def load_weights(model: GPTModel) -> str:
    """Copy the released small checkpoint into ``model`` if possible; say what was used."""
    path = shared.DATA_DIR / "checkpoints" / "base_small.pt"
    try:
        from shared.checkpoints import load_model

        released = load_model(path)
    except Exception as err:  # no file or no module yet: random weights are fine for speed
        return f"random weights ({type(err).__name__})"
    state = released.state_dict()
    # The position table of a longer context starts with the released one's rows.
    pos = model.pos_emb.weight.detach().clone()
    pos[: state["pos_emb.weight"].shape[0]] = state["pos_emb.weight"]
    state["pos_emb.weight"] = pos
    model.load_state_dict(state)
    return f"weights of {path.name}"


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


def best_time(model: GPTModel, prompt: torch.Tensor, n: int, use_cache: bool, runs: list):
    start = time.perf_counter()
    out = generate(model, prompt, n, use_cache=use_cache)
    runs.append(time.perf_counter() - start)
    return out


def compare(name: str, model: GPTModel, prompt: torch.Tensor, n: int, repeats: int) -> float:
    generate(model, prompt, 4, use_cache=True)  # warm-up (allocator, first-call overheads)
    generate(model, prompt, 4, use_cache=False)
    plain_runs: list[float] = []
    cached_runs: list[float] = []
    for _ in range(repeats):  # alternate, so a burst of other load hits both
        plain = best_time(model, prompt, n, False, plain_runs)
        cached = best_time(model, prompt, n, True, cached_runs)
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
    return t_plain / t_cached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs each, best taken")
    args = parser.parse_args()
    shared.setup(scale="small", quiet=True)
    torch.set_num_threads(args.threads)

    preset = MODEL_PRESETS["small"]
    long_cfg = dataclasses.replace(preset, context_length=512)
    torch.manual_seed(0)
    long_model = GPTModel(long_cfg).eval()
    source = load_weights(long_model)
    short_model = GPTModel(preset).eval()
    state = long_model.state_dict()
    state["pos_emb.weight"] = state["pos_emb.weight"][: preset.context_length]
    short_model.load_state_dict(state)  # the same weights, the preset's 128 positions
    prompt = torch.randint(0, preset.vocab_size, (1, args.prompt_tokens))
    print(f"small preset, {source}, {torch.get_num_threads()} threads, greedy decoding")

    ratio_a = compare("a", long_model, prompt, args.new_tokens, args.repeats)
    ratio_b = compare("b", short_model, prompt, args.new_tokens, args.repeats)
    print(f"\nspeed-up (a) {ratio_a:.1f}x (goal >= 5x), (b) {ratio_b:.1f}x")


if __name__ == "__main__":
    main()
