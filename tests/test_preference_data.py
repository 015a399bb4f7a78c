"""Preference pairs: every pair is right by the gold rule, splits follow the instructions."""

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from shared import gold
from shared import instruction_data as idata
from shared import preference_data as pdata
from shared.prompts import format_prompt
from shared.tiny_world import make_world

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
WORLD = make_world(seed=0)


@pytest.fixture(scope="module")
def entries():
    return idata.make_instruction_data(WORLD, seed=0)


@pytest.fixture(scope="module")
def pairs(entries):
    return pdata.make_preference_pairs(entries, WORLD, seed=0)


def test_three_pairs_per_entry_every_kind_and_type(entries, pairs):
    assert len(pairs) == 3 * len(entries)
    assert Counter(p["pair_type"] for p in pairs) == {t: len(entries) for t in pdata.PAIR_TYPES[:3]}
    assert {p["kind"] for p in pairs} == set(idata.KINDS)
    pdata.check_pairs(pairs)


def test_the_gold_rule_prefers_every_chosen_response(pairs):
    expected = {"style": ({5}, {4}), "fact": ({4, 5}, {2}), "complete": ({5}, {3})}
    for p in pairs:
        chosen, rejected = gold.assess(p, p["chosen"]), gold.assess(p, p["rejected"])
        ok_chosen, ok_rejected = expected[p["pair_type"]]
        assert chosen.rating in ok_chosen and rejected.rating in ok_rejected, p


def test_held_out_people_only_in_held_out_pairs(entries, pairs):
    train_people = {n for e in entries if e["split"] == "train" for n in e["people"]}
    test_people = {n for p in pairs if p["split"] != "train" for n in p["people"]}
    assert test_people - train_people, "some held-out people are asked about"
    for p in pairs:
        if p["split"] == "train":
            assert set(p["people"]) <= train_people
    train_prompts = {p["prompt"] for p in pairs if p["split"] == "train"}
    assert not train_prompts & {p["prompt"] for p in pairs if p["split"] != "train"}


def test_the_prompt_is_the_alpaca_prompt(pairs):

    p = pairs[0]
    assert p["prompt"] == format_prompt(p, "alpaca")
    assert p["prompt"].endswith("### Response:\n")


def test_wrong_answers_are_wrong_for_every_kind(entries):
    rng = random.Random(1)
    for e in entries[::7]:
        wrong = pdata.wrong_answer(e, rng, WORLD)
        assert wrong != e["full"]
        assert gold.assess(e, wrong).rating == 2, (e["full"], wrong)


def test_sampled_pairs_take_best_and_worst(entries):
    e = next(x for x in entries if x["kind"] == "town")
    other = next(t for t in WORLD.towns if t != e["answer"])
    samples = [[f"Answer: {e['answer']}", e["full"], e["full"].replace(e["answer"], other), ""]]
    (pair,) = pdata.sampled_pairs([e], samples, WORLD)
    assert (pair["chosen"], pair["rejected"]) == (e["full"], "")
    assert (pair["chosen_rating"], pair["rejected_rating"]) == (5, 1)
    assert pdata.sampled_pairs([e], [[e["full"], e["full"]]], WORLD) == []
    with pytest.raises(ValueError, match="2 entries but 1"):
        pdata.sampled_pairs([e, e], samples, WORLD)


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ([{"prompt": "x"}], ["pair 0", "'chosen'"]),
        ([{f: "x" for f in pdata.FIELDS} | {"pair_type": "nice"}], ["pair 0", "pair_type"]),
        ([{f: "x" for f in pdata.FIELDS} | {"pair_type": "fact"}], ["pair 0", "the same"]),
        ([{f: "x" for f in pdata.FIELDS} | {"chosen": 3}], ["pair 0", "'chosen'", "str"]),
        ("pairs", ["list of dicts"]),
    ],
)
def test_check_pairs_names_the_pair_and_field(bad, words):
    with pytest.raises((TypeError, ValueError)) as info:
        pdata.check_pairs(bad)
    for w in words:
        assert w in str(info.value)


def test_committed_pairs_load_and_check():
    for split in ("train", "test", "val"):
        pairs = json.loads((DATA_DIR / "preferences" / f"{split}.json").read_text("utf-8"))
        pdata.check_pairs(pairs)
        assert {p["split"] for p in pairs} == {split}
