"""A byte-level BPE tokenizer, trained from scratch, that gives the same ids as ``tiktoken``.

The recipe is GPT-2's: text is first cut into chunks by a regular expression (words with
their leading space, runs of digits, runs of punctuation, whitespace), each chunk becomes
its UTF-8 bytes, and training repeatedly merges the most frequent adjacent pair of tokens
into a new token. The result is ``ranks``: every token's bytes mapped to its id, the 256
single bytes first and then the merged tokens in the order they were learned. That one
table is all a ``tiktoken.Encoding`` needs, so ``BPETokenizer.to_tiktoken`` hands the same
vocabulary to tiktoken's fast Rust encoder and the ids come out identical.

Special tokens such as ``<|endoftext|>`` live outside the ranks: they never come out of
merges, and ``encode`` refuses them in ordinary text unless the caller allows them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import html
import json
import operator
import os
import weakref
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import regex
import tiktoken
from tqdm.auto import tqdm

from shared.checks import is_int
from shared.files import as_path, atomic_open
from shared.runtime import DATA_DIR
from shared.tiny_world import ENDOFTEXT  # the corpus owns the document separator

#: GPT-2's pre-tokenization pattern: English contractions, letters with an optional leading
#: space, digits with an optional leading space, other symbols with an optional leading
#: space, then whitespace (a run of spaces keeps its last space for the word that follows).
GPT2_SPLIT_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
GPT2_SPLIT_RE = regex.compile(GPT2_SPLIT_PATTERN)

FILE_FORMAT = "llms-from-scratch-bpe"
FILE_VERSION = 1
TOKENIZER_PATH = DATA_DIR / "tokenizer" / "tiny_world_4096.json"

SpecialSet = Collection[str] | Literal["all"]


def _special_regex(tokens: Iterable[str]) -> regex.Pattern:
    """A pattern matching any of ``tokens`` (longest first, so no token hides a longer one)."""
    alternatives = sorted(tokens, key=lambda t: (-len(t), t))
    return regex.compile("(" + "|".join(regex.escape(t) for t in alternatives) + ")")


def _without_surrogates(text: str) -> str:
    """Replace lone surrogates (which have no UTF-8 form) by U+FFFD, as tiktoken does."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _check_table(ranks: dict[bytes, int], special_tokens: dict[str, int], pattern: str) -> None:
    """Raise ValueError/TypeError describing the first thing wrong with a vocabulary."""
    if not isinstance(pattern, str) or not pattern:
        raise TypeError(f"pattern must be a non-empty str, got {pattern!r}")
    try:
        regex.compile(pattern)
    except regex.error as e:
        raise ValueError(f"pattern {pattern!r} does not compile: {e}") from None
    for token, rank in ranks.items():
        if not isinstance(token, bytes) or not token:
            raise TypeError(f"ranks keys must be non-empty bytes, got {token!r}")
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise TypeError(f"rank of {token!r} must be an int, got {rank!r}")
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"ranks must be exactly 0..{len(ranks) - 1}, each used once")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(
            f"{len(missing)} of the 256 single bytes have no rank (first: {bytes([missing[0]])!r})"
            "; without them some text could not be encoded"
        )
    for name, token_id in special_tokens.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"special token names must be non-empty str, got {name!r}")
        if isinstance(token_id, bool) or not isinstance(token_id, int):
            raise TypeError(f"id of special token {name!r} must be an int, got {token_id!r}")
        if token_id < len(ranks):
            raise ValueError(
                f"special token {name!r} has id {token_id}, but ids below {len(ranks)} "
                "belong to the ranks; special ids must come after them"
            )
    if len(set(special_tokens.values())) != len(special_tokens):
        raise ValueError(f"two special tokens share an id: {special_tokens}")
    # vocab_size is the largest id + 1: a gap would be ids no text gives and none decodes,
    # each an embedding row in a model (an id of 100,000 after 4,095 ranks: 95,905 of them)
    n = len(ranks)
    if sorted(special_tokens.values()) != list(range(n, n + len(special_tokens))):
        raise ValueError(
            f"special token ids must follow the ranks without a gap: {n}..."
            f"{n + len(special_tokens) - 1} in any order, got {special_tokens}"
        )


class BPETokenizer:
    """Byte-level BPE: ``ranks`` (token bytes -> id), ``special_tokens`` and a split pattern.

    Build one with ``BPETokenizer.train(text, vocab_size)`` or ``BPETokenizer.load(path)``.
    """

    def __init__(
        self,
        ranks: dict[bytes, int],
        special_tokens: dict[str, int] | None = None,
        pattern: str = GPT2_SPLIT_PATTERN,
    ) -> None:
        if not isinstance(ranks, Mapping):
            raise TypeError(
                f"ranks must be a dict of token bytes -> id, got {type(ranks).__name__}"
            )
        if special_tokens is not None and not isinstance(special_tokens, Mapping):
            raise TypeError(
                "special_tokens must be a dict of token text -> id (or None), got "
                f"{type(special_tokens).__name__} {special_tokens!r}"
            )
        special_tokens = dict(special_tokens or {})
        _check_table(ranks, special_tokens, pattern)
        self.ranks: dict[bytes, int] = dict(ranks)
        self.special_tokens: dict[str, int] = special_tokens
        self.pattern: str = pattern
        self._split = regex.compile(pattern)
        # id -> bytes for decoding; special tokens decode to their own text.
        self._decoder: dict[int, bytes] = {i: t for t, i in self.ranks.items()}
        self._decoder.update({i: s.encode("utf-8") for s, i in special_tokens.items()})
        self._chunk_cache: dict[str, tuple[int, ...]] = {}

    # ----------------------------------------------------------------- training

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        special_tokens: Sequence[str] | None = (ENDOFTEXT,),
        progress: bool = False,
        pattern: str = GPT2_SPLIT_PATTERN,
    ) -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``.

        ``vocab_size`` counts everything: 256 bytes + merges + special tokens, so 4096 with
        ``<|endoftext|>`` learns 3839 merges and gives ``<|endoftext|>`` the last id, 4095.

        Fast because the text is only read once: identical chunks ("the", " Nora", ...)
        are counted together, and each merge updates the pair counts of just the chunks
        that contain the merged pair. Ties between equally frequent pairs go to the pair
        with the smallest ids, so training is deterministic.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if isinstance(vocab_size, bool) or not hasattr(vocab_size, "__index__"):
            raise TypeError(f"vocab_size must be an int, got {vocab_size!r}")
        vocab_size = operator.index(vocab_size)
        if special_tokens is None:
            special_tokens = ()
        if isinstance(special_tokens, (str, bytes)) or not isinstance(special_tokens, Iterable):
            # a bare "EOT" would otherwise become the three tokens "E", "O", "T"
            raise TypeError(
                f"special_tokens must be a list of str, got {special_tokens!r}; "
                f"for one token write [{special_tokens!r}]"
            )
        special_tokens = list(special_tokens)
        if len(set(special_tokens)) != len(special_tokens) or not all(
            isinstance(s, str) and s for s in special_tokens
        ):
            raise ValueError(f"special_tokens must be distinct non-empty str: {special_tokens}")
        smallest = max(257, 256 + len(special_tokens))
        if vocab_size < smallest:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: the 256 single bytes and "
                f"{len(special_tokens)} special token(s) alone need {smallest}"
            )
        n_bytes_and_merges = vocab_size - len(special_tokens)

        # 1. Count each distinct chunk once. Special tokens cut the text and are dropped,
        #    so no merge ever crosses or builds one.
        segments = _special_regex(special_tokens).split(text) if special_tokens else [text]
        split = regex.compile(pattern)
        chunk_freq: Counter[str] = Counter()
        for segment in segments[::2] if special_tokens else segments:
            chunk_freq.update(split.findall(segment))

        # 2. Each distinct chunk as a list of token ids (its bytes at first), with counts
        #    of every adjacent pair and, per pair, the chunks where it occurs.
        words = [list(chunk.encode("utf-8")) for chunk in chunk_freq]
        freqs = list(chunk_freq.values())
        pair_count: dict[tuple[int, int], int] = defaultdict(int)
        where: dict[tuple[int, int], set[int]] = defaultdict(set)
        for w, (word, freq) in enumerate(zip(words, freqs)):
            for pair in zip(word, word[1:]):
                pair_count[pair] += freq
                where[pair].add(w)
        # A max-heap of (-count, a, b); entries go stale when counts change and are
        # skipped when popped, which is cheaper than re-sorting after every merge.
        heap = [(-c, a, b) for (a, b), c in pair_count.items()]
        heapq.heapify(heap)

        vocab = [bytes([b]) for b in range(256)]  # id -> bytes
        ranks = {token: i for i, token in enumerate(vocab)}
        bar = tqdm(total=n_bytes_and_merges - 256, desc="BPE merges", disable=not progress)
        while len(vocab) < n_bytes_and_merges:
            pair = _pop_most_frequent(heap, pair_count)
            if pair is None:
                raise ValueError(
                    f"the training text only supports {len(vocab) - 256} merges, so "
                    f"vocab_size can be at most {len(vocab) + len(special_tokens)} "
                    f"(asked for {vocab_size}); give it more text"
                )
            a, b = pair
            merged = vocab[a] + vocab[b]
            new_id = ranks.get(merged)
            if new_id is None:  # (rarely, two different pairs spell the same bytes)
                new_id = len(vocab)
                vocab.append(merged)
                ranks[merged] = new_id
                bar.update()
            # 3. Rewrite only the chunks that contain the pair, fixing the pair counts.
            touched: set[tuple[int, int]] = set()
            for w in sorted(where.pop(pair)):
                old = words[w]
                new = _merge_pair(old, a, b, new_id)
                if len(new) == len(old):
                    continue  # the index is a superset: this chunk lost the pair earlier
                freq = freqs[w]
                for p in zip(old, old[1:]):
                    pair_count[p] -= freq
                    touched.add(p)
                for p in zip(new, new[1:]):
                    pair_count[p] += freq
                    where[p].add(w)
                    touched.add(p)
                words[w] = new
            for p in touched:
                if pair_count[p] > 0:
                    heapq.heappush(heap, (-pair_count[p], *p))
                else:
                    del pair_count[p]
        bar.close()
        specials = {s: len(vocab) + k for k, s in enumerate(special_tokens)}
        return cls(ranks, specials, pattern)

    # ----------------------------------------------------------------- encoding

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text`` treating special-token strings as plain text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        text = _without_surrogates(text)
        ids: list[int] = []
        for chunk in self._split.findall(text):
            cached = self._chunk_cache.get(chunk)
            if cached is None:
                cached = tuple(self._encode_chunk(chunk.encode("utf-8")))
                if len(self._chunk_cache) >= 100_000:  # keep memory bounded
                    self._chunk_cache.clear()
                self._chunk_cache[chunk] = cached
            ids.extend(cached)
        return ids

    def _encode_chunk(self, piece: bytes) -> list[int]:
        """BPE one chunk exactly as tiktoken does, in O(n log n) for n bytes.

        A chunk that is a whole token is that token. Otherwise start from single bytes
        and repeatedly merge the adjacent pair whose concatenation has the lowest rank
        (leftmost on a tie) until no adjacent pair forms a token.

        Rescanning every pair after each merge would cost O(n^2) on a long chunk (a
        100,000-letter word with no spaces), so the parts are a linked list (``nxt[i]``:
        where the part starting at byte ``i`` ends) and the candidate pairs sit in a heap
        ordered by ``(rank, start)``: the same lowest-rank, leftmost choice. A merge only
        creates the two pairs around the merged part; heap entries that a merge made stale
        are recognised when popped (their part is gone or no longer ends where it did).
        """
        ranks = self.ranks
        rank = ranks.get(piece)
        if rank is not None:
            return [rank]
        n = len(piece)
        nxt = list(range(1, n + 1))  # part starting at i covers piece[i:nxt[i]]
        prv = list(range(-1, n - 1))  # start of the previous part, -1 for the first
        alive = [True] * n  # is i still the start of a part?
        heap = []
        for i in range(n - 1):
            r = ranks.get(piece[i : i + 2])
            if r is not None:
                heap.append((r, i, i + 2))  # (rank, start of left part, end of right part)
        heapq.heapify(heap)
        while heap:
            _, left, end = heapq.heappop(heap)
            right = nxt[left] if alive[left] else n
            if right == n or nxt[right] != end:
                continue  # stale: a merge has changed one of the two parts since
            alive[right] = False  # the right part joins the left one
            nxt[left] = end
            if end < n:
                prv[end] = left
                r = ranks.get(piece[left : nxt[end]])
                if r is not None:
                    heapq.heappush(heap, (r, left, nxt[end]))
            before = prv[left]
            if before >= 0:
                r = ranks.get(piece[before:end])
                if r is not None:
                    heapq.heappush(heap, (r, before, end))
        ids, i = [], 0
        while i < n:
            ids.append(ranks[piece[i : nxt[i]]])
            i = nxt[i]
        return ids

    def encode(
        self,
        text: str,
        *,
        allowed_special: SpecialSet = frozenset(),
        disallowed_special: SpecialSet = "all",
    ) -> list[int]:
        """Encode ``text``; same arguments and same ids as ``tiktoken.Encoding.encode``.

        By default every special token is disallowed: if one appears in ``text`` this
        raises ValueError rather than silently treating the reader's text as a control
        token. Allowed special tokens become their id; with ``disallowed_special=()``,
        special-token strings that are not allowed are encoded as ordinary text.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        allowed = self._special_set(allowed_special, "allowed_special")
        if disallowed_special == "all":
            disallowed = set(self.special_tokens) - allowed
        else:
            disallowed = self._special_set(disallowed_special, "disallowed_special")
        if disallowed:
            found = _special_regex(disallowed).search(text)
            if found:
                token = found.group()
                raise ValueError(
                    f"the text contains the special token {token!r}, which is disallowed. "
                    f"To encode it as the special token, pass allowed_special={{{token!r}}} "
                    "(or 'all'); to encode it as ordinary text, pass disallowed_special=()."
                )
        if not allowed:
            return self.encode_ordinary(text)
        ids: list[int] = []
        # split() with a group alternates: text, special, text, special, ..., text.
        for i, part in enumerate(_special_regex(allowed).split(text)):
            if i % 2:
                ids.append(self.special_tokens[part])
            elif part:
                ids.extend(self.encode_ordinary(part))
        return ids

    def _special_set(self, value: SpecialSet, argument: str) -> set[str]:
        if value == "all":
            return set(self.special_tokens)
        if isinstance(value, str):
            raise TypeError(
                f"{argument} must be 'all' or a collection of special tokens, got the str "
                f"{value!r}; wrap a single token in a set: {{{value!r}}}"
            )
        unknown = sorted(set(value) - set(self.special_tokens))
        if unknown:
            raise ValueError(
                f"{argument} names {unknown}, which are not special tokens of this "
                f"tokenizer (it has {sorted(self.special_tokens)})"
            )
        return set(value)

    # ----------------------------------------------------------------- decoding

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (a special token gives its text as UTF-8)."""
        if isinstance(token_id, bool):
            raise TypeError(f"token ids are ints, not bool: got {token_id!r}")
        try:
            return self._decoder[token_id]
        except (KeyError, TypeError):
            raise ValueError(
                f"unknown token id {token_id!r}: this tokenizer's ids run from 0 to "
                f"{self.vocab_size - 1} (vocab_size {self.vocab_size})"
            ) from None

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Concatenate the tokens' bytes; accepts ints, numpy ints or a 1-D integer tensor
        (``operator.index`` refuses floats, which would otherwise be silently truncated)."""
        if isinstance(ids, (str, bytes)):
            raise TypeError(f"ids must be a sequence of token ids, got {type(ids).__name__}")
        if str(getattr(ids, "dtype", "")) in ("bool", "torch.bool"):
            raise TypeError(f"ids must be token ids (ints), got a bool array: {ids!r}")
        ndim = getattr(ids, "ndim", 1)
        if ndim != 1:
            raise ValueError(
                f"ids must be 1-D (one sequence of token ids), got shape {tuple(ids.shape)}; "
                "decode a batch row by row"
            )
        out = []
        for i in ids:
            if not is_int(i):  # operator.index alone would take True as the id 1
                raise TypeError(f"ids must be integers (not bools or floats), got {i!r}")
            try:
                out.append(self.token_bytes(operator.index(i)))
            except TypeError:
                raise TypeError(f"ids must be integers, got {i!r}") from None
        return b"".join(out)

    def decode(self, ids: Iterable[int]) -> str:
        """Decode to text; bytes that are not valid UTF-8 (a token split mid-character)
        become U+FFFD, the replacement character."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    @property
    def vocab_size(self) -> int:
        """Number of ids: one more than the largest id (ranks and special tokens)."""
        return max([len(self.ranks) - 1, *self.special_tokens.values()]) + 1

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.ranks) - 256}, "
            f"special_tokens={self.special_tokens})"
        )

    # ----------------------------------------------------------------- files

    def save(self, path: str | os.PathLike) -> Path:
        """Write the tokenizer as one JSON file, atomically and byte-for-byte reproducibly.

        Token bytes are stored as base64 (they need not be valid UTF-8), one per line, in
        rank order, so a diff shows which merges changed.
        """
        path = as_path(path)
        by_rank = sorted(self.ranks, key=self.ranks.__getitem__)
        payload = {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "pattern": self.pattern,
            "special_tokens": dict(sorted(self.special_tokens.items(), key=lambda kv: kv[1])),
            "ranks": [base64.b64encode(t).decode("ascii") for t in by_rank],
        }
        data = (json.dumps(payload, indent=1, ensure_ascii=True) + "\n").encode("ascii")
        with atomic_open(path, "wb") as f:
            f.write(data)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike = TOKENIZER_PATH) -> BPETokenizer:
        """Read a file written by ``save``, checking everything; errors name the file."""
        path = as_path(path)
        return cls._from_json_bytes(_read_tokenizer_file(path), path)

    @classmethod
    def _from_json_bytes(cls, data: bytes, path: Path) -> BPETokenizer:
        def bad(what: str) -> ValueError:
            return ValueError(f"{path}: {what}")

        try:
            payload = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise bad(f"not a valid JSON file ({e})") from None
        if not isinstance(payload, dict):
            raise bad(f"expected a JSON object, found {type(payload).__name__}")
        if payload.get("format") != FILE_FORMAT:
            raise bad(f"format is {payload.get('format')!r}, expected {FILE_FORMAT!r}")
        if payload.get("version") != FILE_VERSION:
            raise bad(f"version is {payload.get('version')!r}, this code reads {FILE_VERSION}")
        pattern, specials, encoded = (
            payload.get(k) for k in ("pattern", "special_tokens", "ranks")
        )
        if not isinstance(pattern, str):
            raise bad("'pattern' is missing or not a string")
        if not isinstance(specials, dict):
            raise bad("'special_tokens' is missing or not an object")
        if not isinstance(encoded, list):
            raise bad("'ranks' is missing or not a list")
        ranks: dict[bytes, int] = {}
        for rank, item in enumerate(encoded):
            try:
                token = base64.b64decode(item, validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise bad(f"rank {rank} is not valid base64: {item!r}") from None
            if not token:
                raise bad(f"rank {rank} is an empty token")
            if token in ranks:
                raise bad(f"token {token!r} appears twice, at ranks {ranks[token]} and {rank}")
            ranks[token] = rank
        try:
            return cls(ranks, specials, pattern)
        except (TypeError, ValueError) as e:
            raise bad(str(e)) from None

    # ----------------------------------------------------------------- tiktoken

    def to_tiktoken(self, name: str = "tiny_world_4096") -> tiktoken.Encoding:
        """The same vocabulary as a ``tiktoken.Encoding``: identical ids, Rust speed."""
        return tiktoken.Encoding(
            name,
            pat_str=self.pattern,
            mergeable_ranks=dict(self.ranks),
            special_tokens=dict(self.special_tokens),
        )


def _read_tokenizer_file(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(
            f"no tokenizer file at {path}; run `make data` to train and write it"
        )
    return path.read_bytes()


def _pop_most_frequent(
    heap: list[tuple[int, int, int]], pair_count: dict[tuple[int, int], int]
) -> tuple[int, int] | None:
    """Pop the pair with the highest current count (then the smallest ids), or None."""
    while heap:
        negative_count, a, b = heapq.heappop(heap)
        if pair_count.get((a, b)) == -negative_count:
            return a, b
    return None


def _merge_pair(word: list[int], a: int, b: int, new_id: int) -> list[int]:
    """Replace every non-overlapping (a, b), left to right, by ``new_id``."""
    out: list[int] = []
    i, n = 0, len(word)
    while i < n:
        if i + 1 < n and word[i] == a and word[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


# --------------------------------------------------------------------- project tokenizer


#: The recipe of the project tokenizer: these generated corpora (relative to ``data/``),
#: joined by ENDOFTEXT, trained to PROJECT_VOCAB_SIZE. The tiny world alone is too small
#: for 4,096 tokens: it has only ~700 distinct chunks, which run out after ~1,260 merges
#: (every word is then one token). The CPython documentation text, the new domain of the
#: continued-pretraining chapter, supplies the rest of the vocabulary.
PROJECT_TRAINING_FILES = ("tiny_world/train.txt", "python_docs/train.txt")
PROJECT_VOCAB_SIZE = 4096


def train_project_tokenizer(
    data_dir: str | os.PathLike = DATA_DIR, progress: bool = False
) -> BPETokenizer:
    """Train the project tokenizer from the generated corpora in ``data_dir`` (~2 s)."""
    paths = [Path(data_dir) / name for name in PROJECT_TRAINING_FILES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing corpus file(s) {missing}; run `make data` first")
    text = ENDOFTEXT.join(p.read_text(encoding="utf-8") for p in paths)
    return BPETokenizer.train(text, PROJECT_VOCAB_SIZE, progress=progress)


def load_tokenizer(path: str | os.PathLike = TOKENIZER_PATH) -> BPETokenizer:
    """The project's tokenizer (``data/tokenizer/tiny_world_4096.json``) as a BPETokenizer."""
    return BPETokenizer.load(path)


# Encodings by (resolved path, SHA-256 of the file): a file that changed on disk is read
# again instead of returning the vocabulary it used to hold.
_ENCODINGS: dict[tuple[str, str], tiktoken.Encoding] = {}


def get_encoding(path: str | os.PathLike = TOKENIZER_PATH) -> tiktoken.Encoding:
    """The project's tokenizer as a (cached) ``tiktoken.Encoding``: what later chapters use.

    The file is read on every call (a few milliseconds) and the cache is keyed by its
    content, so rewriting the tokenizer file is seen at once.

    >>> enc = get_encoding()
    >>> enc.decode(enc.encode("Nabo lives in Rushcombe."))
    'Nabo lives in Rushcombe.'
    """
    path = as_path(path)
    data = _read_tokenizer_file(path)
    key = (str(path.resolve()), hashlib.sha256(data).hexdigest())
    encoding = _ENCODINGS.get(key)
    if encoding is None:
        encoding = BPETokenizer._from_json_bytes(data, path).to_tiktoken(path.stem)
        if len(_ENCODINGS) >= 8:  # keep memory bounded: drop the oldest
            del _ENCODINGS[next(iter(_ENCODINGS))]
        _ENCODINGS[key] = encoding
    return encoding


# --------------------------------------------------------------------- identity

_IDENTITIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tokenizer_identity(tokenizer: BPETokenizer | tiktoken.Encoding) -> dict:
    """What identifies a vocabulary, as a small plain dict that a checkpoint can store.

    ``fingerprint`` is a digest of the split pattern, every rank and every special token:
    two tokenizers with the same fingerprint give the same ids for every text, whatever
    their names. ``ranks_fingerprint`` covers the pattern and ranks only, and
    ``special_tokens`` is kept in full, so an encoding that only *adds* special tokens to
    the recorded one (a vocabulary extended for fine-tuning) can be recognised as
    compatible. Works for a ``BPETokenizer`` and any ``tiktoken.Encoding``.
    """
    if isinstance(tokenizer, BPETokenizer):
        ranks, specials, pattern = tokenizer.ranks, tokenizer.special_tokens, tokenizer.pattern
        name, n_vocab = "BPETokenizer", tokenizer.vocab_size
    elif isinstance(tokenizer, tiktoken.Encoding):
        cached = _IDENTITIES.get(tokenizer)
        if cached is not None:
            return dict(cached, special_tokens=dict(cached["special_tokens"]))
        # the tables the Encoding was built from (its documented constructor arguments)
        ranks, specials = tokenizer._mergeable_ranks, tokenizer._special_tokens
        pattern, name, n_vocab = tokenizer._pat_str, tokenizer.name, tokenizer.n_vocab
    else:
        raise TypeError(
            "tokenizer must be a BPETokenizer or a tiktoken.Encoding, got "
            f"{type(tokenizer).__name__}"
        )
    h = hashlib.sha256()
    h.update(pattern.encode("utf-8") + b"\0")
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        h.update(rank.to_bytes(8, "little") + len(token).to_bytes(8, "little") + token)
    ranks_digest = h.hexdigest()[:16]
    for text, token_id in sorted(specials.items(), key=lambda kv: kv[1]):
        raw = text.encode("utf-8")
        h.update(token_id.to_bytes(8, "little") + len(raw).to_bytes(8, "little") + raw)
    identity = {
        "name": name,
        "n_vocab": n_vocab,
        "fingerprint": h.hexdigest()[:16],
        "ranks_fingerprint": ranks_digest,
        "special_tokens": dict(specials),
    }
    if isinstance(tokenizer, tiktoken.Encoding):
        _IDENTITIES[tokenizer] = identity
        identity = dict(identity, special_tokens=dict(specials))
    return identity


def tokenizer_fingerprint(tokenizer: BPETokenizer | tiktoken.Encoding) -> str:
    """A 16-hex-digit digest of the ranks, special tokens and split pattern."""
    return tokenizer_identity(tokenizer)["fingerprint"]


def _describe(identity: dict) -> str:
    return (
        f"{identity.get('name')!r} ({identity.get('n_vocab')} tokens, fingerprint "
        f"{identity.get('fingerprint')})"
    )


def check_tokenizer(
    recorded: dict | None,
    tokenizer: BPETokenizer | tiktoken.Encoding,
    vocab_size: int | None = None,
    what: str = "the model",
) -> None:
    """Raise ValueError if ``tokenizer`` is not the one ``what`` was trained with.

    ``recorded`` is the ``tokenizer_identity`` stored with the model (None: nothing to
    compare, as for checkpoints written before identities were stored). The same
    fingerprint passes, and so does an encoding that keeps the recorded ranks and special
    tokens and only adds special tokens. With ``vocab_size`` (the model's), an encoding
    with more ids than the model has rows in its embedding is refused as well.
    """
    mine = tokenizer_identity(tokenizer)
    if vocab_size is not None and mine["n_vocab"] > vocab_size:
        raise ValueError(
            f"the tokenizer {_describe(mine)} has more ids than {what}'s vocabulary of "
            f"{vocab_size}: it does not belong to {what}"
        )
    if not recorded or mine["fingerprint"] == recorded.get("fingerprint"):
        return
    specials = recorded.get("special_tokens") or {}
    extends = mine["ranks_fingerprint"] == recorded.get("ranks_fingerprint") and all(
        mine["special_tokens"].get(text) == token_id for text, token_id in specials.items()
    )
    if not extends:
        raise ValueError(
            f"{what} was trained with the tokenizer {_describe(recorded)}, but the tokenizer "
            f"given is {_describe(mine)}: they give different ids for the same text, so "
            "the output would be garbage. Use the tokenizer the model was trained with."
        )


# --------------------------------------------------------------------- visualisation

_COLOURS = ("#fde2a7", "#bfe3f5", "#cdeac0", "#f7c6d9", "#ddd0f4", "#ffd3b6")
_VISIBLE = {" ": "\u00b7", "\n": "\u21b5\n", "\t": "\u2192"}


class TokenView:
    """Token boundaries of a text: coloured HTML in a notebook, ``a|b|c`` as plain text."""

    def __init__(self, ids: list[int], pieces: list[str]) -> None:
        self.ids = ids
        self.pieces = pieces

    def __str__(self) -> str:
        return "|".join(self.pieces)

    def __repr__(self) -> str:
        return f"{len(self.ids)} tokens: {self}"

    def _repr_html_(self) -> str:
        spans = []
        for k, (token_id, piece) in enumerate(zip(self.ids, self.pieces)):
            shown = "".join(_VISIBLE.get(c, c) for c in piece)
            spans.append(
                f'<span title="id {token_id}" style="background:{_COLOURS[k % len(_COLOURS)]};'
                f'padding:1px 0;border-radius:2px">{html.escape(shown)}</span>'
            )
        return (
            f'<div style="font-family:monospace;white-space:pre-wrap;line-height:1.7">'
            f'{"".join(spans)}</div><div style="color:#777">{len(self.ids)} tokens</div>'
        )


def show_tokens(text: str, tokenizer: BPETokenizer | tiktoken.Encoding) -> TokenView:
    """Encode ``text`` (special tokens allowed) and show where each token starts and ends.

    A token that ends inside a multi-byte character shows U+FFFD for the partial bytes.
    """
    ids = tokenizer.encode(text, allowed_special="all")
    if isinstance(tokenizer, BPETokenizer):
        raw = [tokenizer.token_bytes(i) for i in ids]
    else:
        raw = [tokenizer.decode_single_token_bytes(i) for i in ids]
    return TokenView(ids, [r.decode("utf-8", errors="replace") for r in raw])
