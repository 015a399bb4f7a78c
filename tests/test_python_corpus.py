"""The CPython documentation corpus: real text, deterministic, split by whole documents."""

from __future__ import annotations

import re
import sys
from pydoc_data.topics import topics

import pytest

from shared import python_corpus as pc
from shared.tiny_world import ENDOFTEXT, split_documents


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return pc.python_docs_documents()


def test_corpus_is_large_and_starts_with_the_topics(docs):
    total = sum(map(len, docs))
    assert total > 1_000_000, total
    texts = list(dict.fromkeys(topics[k].strip() for k in sorted(topics)))  # "if" == "else"
    assert docs[: len(texts)] == texts
    assert docs[0].startswith('The "assert" statement')


def test_docstrings_of_modules_classes_and_methods(docs):
    text = "\n".join(docs)
    for header in ("json.dumps(", "textwrap.wrap(", "collections.OrderedDict", "pathlib.Path"):
        assert f"\n{header}" in text or text.startswith(header), header
    assert re.search(r"^json\.JSONEncoder\.encode\(self, o\)$", text, re.M)
    assert re.search(r"^dataclasses\.field\(\*, default=\.\.\.,", text, re.M)  # no 0x7f... address
    assert not re.search(r" at 0x[0-9a-f]{8,}", text)


def test_documents_are_unique_and_clean(docs):
    assert len(set(docs)) == len(docs)
    assert all(doc and doc == doc.strip() and ENDOFTEXT not in doc for doc in docs)


def test_deterministic_text(docs):
    text = pc.python_docs_text()
    assert text == pc.python_docs_text()
    assert split_documents(text) == docs
    assert text.count(ENDOFTEXT) == len(docs) and text.endswith(f"\n{ENDOFTEXT}\n")


def test_splits_partition_the_documents(docs):
    splits = pc.make_python_splits(seed=0)
    train, val = (split_documents(splits[k]) for k in ("train", "val"))
    assert sorted(train + val) == sorted(docs)
    assert not set(train) & set(val)
    assert 0.03 < len(val) / len(docs) < 0.07
    assert 0.02 < len(splits["val"]) / len(splits["train"]) < 0.10
    assert pc.make_python_splits(seed=0) == splits
    assert pc.make_python_splits(seed=1)["val"] != splits["val"]


def test_build_info_names_the_running_python():
    info = pc.build_info()
    assert info["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert info["python_full"].startswith(info["python"] + ".")
    assert info["platform"] == sys.platform
