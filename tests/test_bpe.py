"""The from-scratch BPE must train deterministically, round-trip any text, and give exactly
the ids of a ``tiktoken.Encoding`` built from its ranks."""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from shared import bpe
from shared.bpe import ENDOFTEXT, BPETokenizer, show_tokens

VOCAB_SIZE = 1024

HARD_STRINGS = [
    "",
    " ",
    "      ",
    "\t",
    "a  b   c    d",
    "line one\nline two\n\n\nafter blank lines\n",
    " \t \n\t\n  \r\n x",
    "trailing spaces   ",
    "Hello 🤗 world! 👍🏽 👨‍👩‍👧",
    "日本語のテキストと中文字符",
    "Ελληνικά, русский, עברית, العربية, हिन्दी",
    "combining: e\u0301 a\u0308 n\u0303, precomposed: é ä ñ",
    "digits 0 12 345 6789 1234567890123 3.14159 1,000,000",
    "it's we're they've I'm you'll he'd IT'S",
    "punctuation!!! ... ??? --- (brackets) [x] {y} <z> @#$%^&*",
    "Zyxqwv Plorth gribbled the snarfblat 42 times.",  # never seen in training
    "a" * 300,
    "\x00\x01\x1f\x7f \x85 \xa0 \u2028 \u3000 end",
]


def _training_text() -> str:
    """A few hundred KB of tiny-world text, or CPython's own help topics if the corpus
    module is not there (both are deterministic)."""
    try:
        from shared import tiny_world
    except ImportError:
        import pydoc_data.topics

        topics = pydoc_data.topics.topics
        return ENDOFTEXT.join(topics[k] for k in sorted(topics))[:300_000]
    world = tiny_world.make_world(seed=0)
    return tiny_world.generate_corpus(world, 300_000, seed=1)


@pytest.fixture(scope="module")
def text() -> str:
    return _training_text()


@pytest.fixture(scope="module")
def tok(text: str) -> BPETokenizer:
    return BPETokenizer.train(text, VOCAB_SIZE)


@pytest.fixture(scope="module")
def enc(tok: BPETokenizer):
    return tok.to_tiktoken("test")


def test_vocab_layout(tok: BPETokenizer) -> None:
    assert tok.vocab_size == len(tok) == VOCAB_SIZE
    assert len(tok.ranks) == VOCAB_SIZE - 1  # 256 bytes + 767 merges
    assert tok.special_tokens == {ENDOFTEXT: VOCAB_SIZE - 1}
    assert all(tok.ranks[bytes([b])] == b for b in range(256))
    assert sorted(tok.ranks.values()) == list(range(VOCAB_SIZE - 1))
    # Special tokens are cut out before training, so no merge contains their text.
    assert not any(b"<|" in t and b"|>" in t for t in tok.ranks)


def test_training_text_matches_tiktoken(tok: BPETokenizer, enc, text: str) -> None:
    ids = tok.encode(text, allowed_special="all")
    assert ids == enc.encode(text, allowed_special="all")
    assert tok.decode(ids) == text
    assert len(ids) < len(text.encode("utf-8")) / 2  # merges actually compress


@pytest.mark.parametrize("s", HARD_STRINGS, ids=range(len(HARD_STRINGS)))
def test_hard_strings_match_tiktoken_and_round_trip(tok: BPETokenizer, enc, s: str) -> None:
    ids = tok.encode(s)
    assert ids == enc.encode(s)
    assert tok.encode_ordinary(s) == enc.encode_ordinary(s)
    assert tok.decode(ids) == s
    assert tok.decode_bytes(ids) == s.encode("utf-8")


def test_lone_surrogate_is_replaced_like_tiktoken(tok: BPETokenizer, enc) -> None:
    ids = tok.encode("a\ud800b")
    assert ids == enc.encode("a\ud800b")
    assert tok.decode(ids) == "a\ufffdb"


def test_special_token_modes_match_tiktoken(tok: BPETokenizer, enc) -> None:
    s = f"first doc{ENDOFTEXT}second doc {ENDOFTEXT}"
    allowed = tok.encode(s, allowed_special={ENDOFTEXT})
    assert allowed == enc.encode(s, allowed_special={ENDOFTEXT})
    assert allowed.count(tok.special_tokens[ENDOFTEXT]) == 2
    assert tok.encode(s, allowed_special="all") == allowed
    as_text = tok.encode(s, disallowed_special=())
    assert as_text == enc.encode(s, disallowed_special=())
    assert tok.special_tokens[ENDOFTEXT] not in as_text
    assert tok.decode(allowed) == tok.decode(as_text) == s


def test_disallowed_special_raises_naming_it(tok: BPETokenizer, enc) -> None:
    s = f"some text {ENDOFTEXT} more"
    with pytest.raises(ValueError, match=r"<\|endoftext\|>.*allowed_special"):
        tok.encode(s)
    with pytest.raises(ValueError):
        enc.encode(s)  # tiktoken agrees that this is an error


def test_bad_special_arguments(tok: BPETokenizer) -> None:
    with pytest.raises(TypeError, match="wrap a single token"):
        tok.encode("x", allowed_special=ENDOFTEXT)
    with pytest.raises(ValueError, match="<|nope|>"):
        tok.encode("x", allowed_special={"<|nope|>"})


def test_unknown_id_raises_naming_it(tok: BPETokenizer) -> None:
    with pytest.raises(ValueError, match=f"unknown token id {VOCAB_SIZE}.*{VOCAB_SIZE}"):
        tok.decode([1, 2, VOCAB_SIZE])
    with pytest.raises(ValueError, match="unknown token id -1"):
        tok.decode([-1])
    assert tok.token_bytes(ord("A")) == b"A"


def test_decode_accepts_tensors_but_not_floats(tok: BPETokenizer) -> None:
    ids = tok.encode("Hello world")
    assert tok.decode(torch.tensor(ids)) == "Hello world"
    with pytest.raises(TypeError):
        tok.decode([float(i) for i in ids])


def test_decode_replaces_partial_characters(tok: BPETokenizer) -> None:
    # "日" is the three UTF-8 bytes e6 97 a5; single bytes have ids equal to their value.
    assert tok.decode([0xE6, 0x97, 0xA5]) == "日"
    assert tok.decode([0xE6, 0x97]) == "\ufffd"  # an incomplete character
    assert tok.decode_bytes([0xE6]) == b"\xe6"


def test_save_load_round_trip(tok: BPETokenizer, tmp_path: Path) -> None:
    path = tok.save(tmp_path / "sub" / "tok.json")
    loaded = BPETokenizer.load(path)
    assert loaded.ranks == tok.ranks
    assert loaded.special_tokens == tok.special_tokens
    assert loaded.pattern == tok.pattern
    assert loaded.encode("Hello there, 123!") == tok.encode("Hello there, 123!")
    again = loaded.save(tmp_path / "again.json")
    assert again.read_bytes() == path.read_bytes()  # deterministic bytes
    assert [p.name for p in path.parent.iterdir()] == ["tok.json"]  # no temp file left


def _corrupt(tok: BPETokenizer, tmp_path: Path, edit) -> Path:
    path = tok.save(tmp_path / "tok.json")
    payload = json.loads(path.read_text())
    edit(payload)
    path.write_text(json.dumps(payload))
    return path


def _drop_byte(p: dict) -> None:
    p["ranks"].remove(base64.b64encode(b"A").decode())


def _duplicate(p: dict) -> None:
    p["ranks"][300] = p["ranks"][299]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p.update(format="something-else"), "format"),
        (lambda p: p.update(version=2), "version"),
        (lambda p: p["ranks"].__setitem__(5, "***not base64***"), "rank 5 is not valid base64"),
        (_drop_byte, "single bytes"),
        (_duplicate, "appears twice"),
        (lambda p: p.update(special_tokens={ENDOFTEXT: 3}), "special"),
        (lambda p: p.update(pattern="(unclosed"), "does not compile"),
        (lambda p: p.pop("ranks"), "'ranks' is missing"),
    ],
    ids=[
        "format",
        "version",
        "base64",
        "missing-byte",
        "duplicate",
        "special-id",
        "pattern",
        "no-ranks",
    ],
)
def test_corrupt_files_raise_naming_the_file(tok, tmp_path: Path, edit, message: str) -> None:
    path = _corrupt(tok, tmp_path, edit)
    with pytest.raises(ValueError, match=message) as info:
        BPETokenizer.load(path)
    assert str(path) in str(info.value)


def test_truncated_json_raises_naming_the_file(tok: BPETokenizer, tmp_path: Path) -> None:
    path = tok.save(tmp_path / "tok.json")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a valid JSON") as info:
        BPETokenizer.load(path)
    assert str(path) in str(info.value)


def test_missing_file_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="make data") as info:
        BPETokenizer.load(tmp_path / "nope.json")
    assert "nope.json" in str(info.value)


def test_training_is_deterministic(tok: BPETokenizer, text: str) -> None:
    assert BPETokenizer.train(text, VOCAB_SIZE).ranks == tok.ranks


def test_first_merge_is_most_frequent_pair() -> None:
    # Pairs inside chunks: "ab" occurs 6 times, "bc" 3 times, "ca" and others fewer.
    tiny = BPETokenizer.train("ab ab ab abc abc abc", 258, special_tokens=())
    by_rank = sorted(tiny.ranks, key=tiny.ranks.__getitem__)
    assert by_rank[256:] == [b"ab", b" ab"]


def _naive_train(text: str) -> list[bytes]:
    """Reference trainer: recount every pair in every chunk occurrence before each merge,
    until no pair is left. Returns the merged tokens in rank order."""
    words = [list(c.encode()) for c in bpe.GPT2_SPLIT_RE.findall(text)]
    vocab = [bytes([b]) for b in range(256)]
    while counts := Counter(p for w in words for p in zip(w, w[1:])):
        (a, b), _ = max(counts.items(), key=lambda kv: (kv[1], -kv[0][0], -kv[0][1]))
        merged = vocab[a] + vocab[b]
        if merged in vocab:  # two pairs can spell the same bytes: reuse that token
            new_id = vocab.index(merged)
        else:
            new_id = len(vocab)
            vocab.append(merged)
        words = [bpe._merge_pair(w, a, b, new_id) for w in words]
    return vocab[256:]


def test_incremental_training_equals_naive_recount(text: str) -> None:
    # Run to exhaustion, so the rare pairs (count 1, many ties) are compared too.
    sample = text[:3_000].replace(ENDOFTEXT, " ")
    expected = _naive_train(sample)
    fast = BPETokenizer.train(sample, 256 + len(expected), special_tokens=())
    assert sorted(fast.ranks, key=fast.ranks.__getitem__)[256:] == expected
    with pytest.raises(ValueError, match=f"at most {256 + len(expected)}"):
        BPETokenizer.train(sample, 257 + len(expected), special_tokens=())


def test_encode_rule_is_tiktokens() -> None:
    """Lowest-rank pair first, leftmost on a tie, and a chunk that is a whole token is
    that token even when no chain of merges builds it (here b"xyz")."""
    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({b"aa": 256, b"xyz": 257, b" a": 258, b"ab": 259})
    tok = BPETokenizer(ranks, {ENDOFTEXT: 260})
    enc = tok.to_tiktoken("hand-made")
    expected = {
        "aaa": [256, 97],
        "aaaaa": [256, 256, 97],
        " ab": [258, 98],
        " aab": [32, 256, 98],
        "xyz": [257],
        " xyz": [32, 120, 121, 122],
    }
    for s, ids in expected.items():
        assert tok.encode(s) == enc.encode(s) == ids, s


def test_vocab_size_errors() -> None:
    with pytest.raises(ValueError, match="too small"):
        BPETokenizer.train("hello world", 256)
    with pytest.raises(ValueError, match="at most"):
        BPETokenizer.train("hello hello", 1000)


def test_show_tokens(tok: BPETokenizer, enc) -> None:
    s = "Hello  world\n🤗"
    view = show_tokens(s, tok)
    assert view.ids == tok.encode(s)
    assert "".join(view.pieces).replace("\ufffd", "") == s.replace("🤗", "")
    assert str(view).count("|") == len(view.ids) - 1
    assert view._repr_html_().count("<span") == len(view.ids)
    assert show_tokens(s, enc).pieces == view.pieces


def test_get_encoding_is_cached(tok: BPETokenizer, tmp_path: Path) -> None:
    path = tok.save(tmp_path / "mine.json")
    first = bpe.get_encoding(path)
    assert bpe.get_encoding(str(path)) is first
    assert first.name == "mine"
    assert first.encode("abc def") == tok.encode("abc def")


def test_committed_tokenizer_matches_tiktoken_on_the_corpus() -> None:
    corpora = [
        bpe.DATA_DIR / name
        for name in ("tiny_world/train.txt", "tiny_world/val.txt", "python_docs/val.txt")
    ]
    missing = [p for p in (bpe.TOKENIZER_PATH, *corpora) if not p.is_file()]
    if missing:
        pytest.skip(f"run `make data` first; missing: {', '.join(map(str, missing))}")
    tok = bpe.load_tokenizer()
    enc = bpe.get_encoding()
    assert tok.vocab_size == enc.n_vocab == bpe.PROJECT_VOCAB_SIZE
    assert tok.special_tokens == {ENDOFTEXT: bpe.PROJECT_VOCAB_SIZE - 1}
    for path in corpora:
        text = path.read_text(encoding="utf-8")
        ids = tok.encode(text, allowed_special="all")
        assert ids == enc.encode(text, allowed_special="all"), path
        assert tok.decode(ids) == text, path
