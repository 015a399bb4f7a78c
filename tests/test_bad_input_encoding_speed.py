"""Long chunks encode in O(n log n) with exactly tiktoken's ids.

Run as a script to print the speed of the chunk encoder before (the plain rescanning
loop, kept below as the reference) and after, on one long chunk and on the tiny-world
validation text:

    .venv/bin/python tests/test_bad_input_encoding_speed.py [--letters 100000]

The "before" loop needs minutes for 100,000 letters (it is quadratic); ``--letters 20000``
gives a quick look.
"""

from __future__ import annotations

import random
import time

import pytest

from shared import bpe
from shared.bpe import BPETokenizer


def quadratic_encode_chunk(tok: BPETokenizer, piece: bytes) -> list[int]:
    """The straightforward loop: rescan every pair after every merge (O(n^2))."""
    rank = tok.ranks.get(piece)
    if rank is not None:
        return [rank]
    parts = [piece[i : i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        best_rank, best_i = None, -1
        for i in range(len(parts) - 1):
            r = tok.ranks.get(parts[i] + parts[i + 1])
            if r is not None and (best_rank is None or r < best_rank):
                best_rank, best_i = r, i
        if best_rank is None:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return [tok.ranks[p] for p in parts]


@pytest.fixture(scope="module")
def project():
    tok = bpe.load_tokenizer()
    return tok, tok.to_tiktoken()


def letters(n: int, seed: int = 0, alphabet: str = "abcdefghijklmnopqrstuvwxyz") -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(n))


def test_a_100000_letter_chunk_is_fast_and_matches_tiktoken(project):
    tok, enc = project
    text = letters(100_000)
    start = time.perf_counter()
    ids = tok.encode(text)
    elapsed = time.perf_counter() - start
    assert ids == enc.encode(text)
    assert elapsed < 5.0, f"encoding 100,000 letters took {elapsed:.1f} s"  # ~0.2 s here


@pytest.mark.parametrize(
    "text",
    [
        "a" * 5_000,  # one letter repeated: every pair ties, leftmost must win
        "ab" * 3_000,
        "é" * 2_000,  # multi-byte characters
        "日本語" * 700,
        "0123456789" * 500,  # a run of digits is one chunk
        "!?" * 2_000,
        " " * 3_000,  # whitespace chunk
        "\U0001f600" * 500,
    ],
)
def test_long_repetitive_chunks_match_tiktoken(project, text):
    tok, enc = project
    assert tok.encode(text) == enc.encode(text)


def test_random_chunks_match_the_quadratic_reference(project):
    tok, _ = project
    rng = random.Random(1)
    alphabets = ["abcdefghij", "the quick brown fox", "aeiou", "xyz123!", "ßéè日"]
    for k in range(300):
        text = letters(rng.randint(1, 60), seed=k, alphabet=rng.choice(alphabets))
        piece = text.encode("utf-8")
        assert tok._encode_chunk(piece) == quadratic_encode_chunk(tok, piece), text


def test_whole_validation_text_matches_tiktoken(project):
    tok, enc = project
    text = (bpe.DATA_DIR / "tiny_world" / "val.txt").read_text(encoding="utf-8")
    fresh = BPETokenizer(tok.ranks, tok.special_tokens, tok.pattern)  # empty chunk cache
    assert fresh.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")


def _bench(n_letters: int) -> None:
    tok = bpe.load_tokenizer()
    enc = tok.to_tiktoken()

    def timed(fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        return out, time.perf_counter() - start

    def encode_all(encode_chunk, chunks):
        return [i for c in chunks for i in encode_chunk(c)]

    long_chunk = letters(n_letters).encode("utf-8")
    val = (bpe.DATA_DIR / "tiny_world" / "val.txt").read_text(encoding="utf-8")
    chunks = [c.encode("utf-8") for c in tok._split.findall(val.replace(bpe.ENDOFTEXT, ""))]
    reference = enc.encode_ordinary(val.replace(bpe.ENDOFTEXT, ""))
    for name, text_bytes in ((f"{n_letters:,}-letter chunk", [long_chunk]), ("val.txt", chunks)):
        expected = enc.encode_ordinary(b"".join(text_bytes).decode("utf-8"))
        if name == "val.txt":
            assert expected == reference
        # every chunk encoded from scratch (no chunk cache), as for new text
        after, t_after = timed(encode_all, tok._encode_chunk, text_bytes)
        before, t_before = timed(encode_all, lambda c: quadratic_encode_chunk(tok, c), text_bytes)
        _, t_tiktoken = timed(enc.encode_ordinary, b"".join(text_bytes).decode("utf-8"))
        print(
            f"{name:>24}: before {t_before:8.3f} s, after {t_after:7.3f} s, tiktoken "
            f"{t_tiktoken:.4f} s; ids identical to tiktoken: {before == after == expected}"
        )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--letters", type=int, default=100_000)
    _bench(parser.parse_args().letters)
