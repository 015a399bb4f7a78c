"""``get_encoding(path)`` follows the file: a changed tokenizer file is read again."""

from __future__ import annotations

import os
import shutil

import pytest

from shared import bpe
from shared.bpe import BPETokenizer, get_encoding


@pytest.fixture(scope="module")
def small_tokenizers():
    text = "the cat sat on the mat. the dog sat on the log. " * 20
    return BPETokenizer.train(text, 270), BPETokenizer.train(text, 272)


def test_rewritten_file_gives_the_new_encoding(tmp_path, small_tokenizers):
    small, bigger = small_tokenizers
    path = small.save(tmp_path / "tok.json")
    assert get_encoding(path).n_vocab == 270
    bigger.save(path)  # atomic replace: a new inode
    assert get_encoding(path).n_vocab == 272
    assert get_encoding(path).encode("the cat") == bigger.encode("the cat")


def test_file_rewritten_in_place_with_the_same_mtime(tmp_path, small_tokenizers):
    small, bigger = small_tokenizers
    path = small.save(tmp_path / "tok.json")
    stat = path.stat()
    assert get_encoding(path).n_vocab == 270
    with open(path, "wb") as f:  # same inode, then the old timestamps put back
        f.write(bigger.save(tmp_path / "other.json").read_bytes())
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert get_encoding(path).n_vocab == 272


def test_file_replaced_by_a_copy_under_another_name(tmp_path, small_tokenizers):
    small, bigger = small_tokenizers
    path = small.save(tmp_path / "tok.json")
    assert get_encoding(path).n_vocab == 270
    shutil.copy(bigger.save(tmp_path / "b.json"), path)
    assert get_encoding(path).n_vocab == 272


def test_same_file_is_served_from_the_cache(tmp_path, small_tokenizers):
    path = small_tokenizers[0].save(tmp_path / "tok.json")
    assert get_encoding(path) is get_encoding(str(path))
    assert get_encoding() is get_encoding(bpe.TOKENIZER_PATH)


def test_deleted_file_is_an_error_not_the_cached_encoding(tmp_path, small_tokenizers):
    path = small_tokenizers[0].save(tmp_path / "tok.json")
    get_encoding(path)
    path.unlink()
    with pytest.raises(FileNotFoundError, match=r"tok\.json"):
        get_encoding(path)


def test_corrupted_file_is_an_error_not_the_cached_encoding(tmp_path, small_tokenizers):
    path = small_tokenizers[0].save(tmp_path / "tok.json")
    get_encoding(path)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"tok\.json: not a valid JSON"):
        get_encoding(path)
