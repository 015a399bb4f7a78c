"""The gold rule grades responses by content and style, as written in its docstring."""

import pytest

from shared import gold
from shared import instruction_data as idata
from shared.tiny_world import make_world

WORLD = make_world(seed=0)
NABO = WORLD.person("Nabo")
TOWN = idata._fact(NABO, "town", 0).to_dict()
OTHER_TOWN = next(t for t in WORLD.towns if t != NABO.town)


@pytest.mark.parametrize(
    "response, correct, style, rating",
    [
        (f"Nabo lives in {NABO.town}.", True, "preferred", 5),
        (NABO.town, True, "curt", 4),
        ("Nabo lives in", False, "cut", 3),
        ("Nabo is", False, "cut", 3),
        (
            f"Sure, I can help with that question. Nabo lives in {NABO.town}. Bye.",
            True,
            "padded",
            4,
        ),
        (f"Nabo lives in {NABO.town}. Nabo likes it.", True, "padded", 4),
        (f"Nabo lives in {OTHER_TOWN}.", False, "preferred", 2),
        (OTHER_TOWN, False, "curt", 2),
        (f"Nabo lives in {NABO.town} or {OTHER_TOWN}.", False, "preferred", 2),
        ("Nabo lives in", False, "cut", 3),
        ("", False, "empty", 1),
        ("   ", False, "empty", 1),
        ("I like cheese very much.", False, "preferred", 1),
    ],
)
def test_town_responses(response, correct, style, rating):
    v = gold.assess(TOWN, response)
    assert (v.correct, v.style, v.rating) == (correct, style, rating)


def test_older_uses_the_first_name():
    a, b = WORLD.people[0], next(p for p in WORLD.people if p.age != WORLD.people[0].age)
    e = idata._older(a, b, 0).to_dict()
    old, young = (a, b) if a.age > b.age else (b, a)
    assert gold.assess(e, f"{old.name} is older than {young.name}.").rating == 5
    assert gold.assess(e, f"{young.name} is older than {old.name}.").rating == 2


def test_arithmetic_ignores_the_numbers_of_the_question():
    e = {
        "kind": "arithmetic",
        "instruction": "What is four plus five?",
        "input": "",
        "answer": "nine",
    }
    assert gold.assess(e, "Four plus five is nine.").rating == 5
    assert gold.assess(e, "Four plus five is 9.").rating == 5
    assert gold.assess(e, "Four plus five is eight.").rating == 2
    assert gold.assess(e, "9").rating == 4


def test_passive():
    e = {"kind": "passive", "instruction": "x", "input": "Nabo feeds the goat.",
         "answer": "The goat is fed by Nabo"}  # fmt: skip
    assert gold.assess(e, "The goat is fed by Nabo.").rating == 5
    assert gold.assess(e, "the goat is fed by Nabo").rating == 4
    assert gold.assess(e, "The goat is feed by Nabo.").rating == 2


def test_compare_and_reward():
    assert gold.compare(TOWN, f"Nabo lives in {NABO.town}.", NABO.town) == "A"
    assert gold.compare(TOWN, OTHER_TOWN, NABO.town) == "B"
    assert gold.compare(TOWN, NABO.town, NABO.town) == "tie"
    assert gold.gold_reward(TOWN, NABO.town) == 4.0


def test_bad_input():
    with pytest.raises(TypeError, match="response must be a str"):
        gold.assess(TOWN, None)
    with pytest.raises(ValueError, match="'answer'"):
        gold.assess({"kind": "town", "instruction": "x", "input": ""}, "y")
