"""The instruction data: sizes, splits, held-out people, styles, and errors on bad entries."""

import json
from collections import Counter

import pytest

from shared import DATA_DIR, gold
from shared import instruction_data as idata
from shared.tiny_world import make_world


@pytest.fixture(scope="module")
def entries():
    return idata.make_instruction_data(make_world(seed=0), seed=0)


def test_size_kinds_and_split_shares(entries):
    assert len(entries) >= 1500
    assert len({e["kind"] for e in entries}) >= 8
    shares = Counter(e["split"] for e in entries)
    assert abs(shares["train"] / len(entries) - 0.85) < 0.02
    assert abs(shares["test"] / len(entries) - 0.10) < 0.02
    assert abs(shares["val"] / len(entries) - 0.05) < 0.02
    per_kind_test = Counter(e["kind"] for e in entries if e["split"] == "test")
    assert min(per_kind_test[k] for k in idata.KINDS) >= 10


def test_held_out_people_never_in_training(entries):
    world = make_world(seed=0)
    seen = {p for e in entries if e["split"] == "train" for p in e["people"]}
    everyone = {p.name for p in world.people}
    hidden = everyone - seen
    assert len(hidden) == round(0.3 * len(everyone))
    facts_about_hidden = [e for e in entries if set(e["people"]) & hidden]
    assert facts_about_hidden and all(e["split"] in ("test", "val") for e in facts_about_hidden)


def test_prompts_are_unique_so_test_prompts_are_unseen(entries):
    prompts = [(e["instruction"], e["input"]) for e in entries]
    assert len(set(prompts)) == len(prompts)


def test_house_style_by_phrasing_and_gold_rule_agrees(entries):
    for e in entries:
        assert e["style"] == idata.HOUSE_STYLE[e["template"]]
        verdict = gold.assess(e, e["output"])
        assert verdict.correct, e
        assert verdict.style == e["style"], e
    styles = Counter(e["style"] for e in entries if e["split"] == "train")
    assert 0.4 < styles["preferred"] / sum(styles.values()) < 0.6  # a real mix


def test_same_seed_same_data_other_seed_other_data(entries):
    again = idata.make_instruction_data(make_world(seed=0), seed=0)
    assert json.dumps(again) == json.dumps(entries)
    other = idata.make_instruction_data(make_world(seed=0), seed=1)
    assert json.dumps(other) != json.dumps(entries)


def test_committed_files_match_the_generator(entries):
    for split in ("train", "test", "val"):
        committed = json.loads((DATA_DIR / "instructions" / f"{split}.json").read_text("utf-8"))
        assert committed == [e for e in entries if e["split"] == split]


def test_lecture_style_examples():
    e = idata._spelling("turtle", __import__("random").Random(0), 0)
    assert e.instruction == "Identify the correct spelling of the following word."
    assert e.output == "The correct spelling is turtle." and e.input != "Word: turtle"
    assert e.input.startswith("Word: ")
    e = idata._opposite("big", "small", 1)
    assert e.output == "small" and e.style == "curt" and e.input == "Word: big"


def test_every_input_line_starts_like_a_sentence(entries):
    """No input starts with a lower-case word or a digit: at the start of a line the
    tokenizer only knows capitalised words (sentence starts)."""
    for e in entries:
        assert not e["input"] or not (e["input"][0].islower() or e["input"][0].isdigit()), e


def test_misspell_always_differs():
    import random

    rng = random.Random(0)
    for word in idata.SPELLING_WORDS:
        for _ in range(5):
            assert idata.misspell(word, rng) != word


def test_truth_statements_are_balanced_and_true_or_false():
    world = make_world(seed=0)
    items = idata.truth_statements(world, 200, seed=0)
    assert sum(label for _, label in items) == 100
    facts = {f"{p.name} lives in {p.town}." for p in world.people}
    for sentence, label in items:
        if " lives in " in sentence:
            assert (sentence in facts) == bool(label)


@pytest.mark.parametrize(
    "bad, words",
    [
        ([{"instruction": "x", "input": ""}], ["entry 0", "'output'"]),
        ([{"instruction": "x", "input": "", "output": "y"}, {"instruction": 3}], ["entry 1"]),
        ([{"instruction": "x", "input": None, "output": "y"}], ["entry 0", "'input'", "str"]),
        ([{"instruction": "", "input": "", "output": "y"}], ["entry 0", "'instruction'", "empty"]),
        (["not a dict"], ["entry 0", "dict"]),
    ],
)
def test_bad_entries_name_index_and_field(bad, words):
    with pytest.raises(ValueError) as err:
        idata.check_entries(bad)
    for word in words:
        assert word in str(err.value)


def test_entries_must_be_a_list():
    with pytest.raises(TypeError, match="list of dicts"):
        idata.check_entries("instruction")
