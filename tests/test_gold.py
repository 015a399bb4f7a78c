"""The gold rule grades responses by content and style, as written in its docstring."""

import random

import pytest

from shared import gold
from shared import instruction_data as idata
from shared.tiny_world import make_world

WORLD = make_world(seed=0)
NABO = WORLD.person("Nabo")
TOWN = idata._fact(NABO, "town", 0).to_dict()
OTHER_TOWN = next(t for t in WORLD.towns if t != NABO.town)

# Entries of every kind for the table below. Nabo: Rushcombe, goat, white, 44 (seed 0);
# Dera is 36; Drol (85) is older than Misi (48).
_fact = idata._fact
ENTRIES = {
    "town": TOWN,
    "pet": _fact(NABO, "pet", 0).to_dict(),
    "colour": _fact(NABO, "colour", 0).to_dict(),
    "age": _fact(NABO, "age", 0).to_dict(),
    "age36": _fact(WORLD.person("Dera"), "age", 0).to_dict(),
    "older": idata._older(WORLD.person("Drol"), WORLD.person("Misi"), 0).to_dict(),
    "arithmetic": {"kind": "arithmetic", "instruction": "What is four plus five?", "input": "",
                   "answer": "nine", "full": "The answer is nine.", "people": []},
    "counting": {"kind": "counting", "instruction": "How many items are in this list?",
                 "input": "List: kite, ball, drum", "answer": "3",
                 "full": "There are 3 items in the list.", "people": []},
    "plural": idata._plural("mouse", 0).to_dict(),
    "opposite": idata._opposite("big", "small", 0).to_dict(),
    "kind": idata._kind("goat", 0).to_dict(),
    "spelling": idata._spelling("broom", random.Random(0), 0).to_dict(),
    "passive": idata._passive(NABO, "feeds", "goat", 0).to_dict(),
}  # fmt: skip
SURE = "Sure, I can help with that question."
BYE = "I hope this answer is useful to you!"

# (entry, response, correct, rating, reason): the reason is the test id.
CLAIMS = [
    # town: the ordinary answers in every style, then who the claim is about
    ("town", "Nabo lives in Rushcombe.", True, 5, "town preferred sentence"),
    ("town", "Rushcombe", True, 4, "town curt"),
    ("town", f"{SURE} Nabo lives in Rushcombe. {BYE}", True, 4, "town padded"),
    ("town", "Nabo lives in", False, 3, "town cut before the answer"),
    ("town", "Rushcombe is the town where Nabo lives.", True, 5, "town answer first"),
    ("town", "She lives in Rushcombe.", True, 5, "town pronoun subject"),
    ("town", "Answer: Rushcombe", True, 4, "town labelled bare answer"),
    ("town", "Where does Nabo live? Rushcombe.", True, 4, "town question echoed then answered"),
    ("town", "Nabo lives in Rushcombe, not Corton.", True, 5, "town correction X, not Y"),
    ("town", "Nabo does not live in Corton but in Rushcombe.", True, 5, "town denial then answer"),
    ("town", "Nabo lives in Corton.", False, 2, "town wrong town"),
    ("town", "The friend of Nabo lives in Rushcombe.", False, 1, "town the friend of Nabo"),
    ("town", "Someone near Nabo lives in Rushcombe.", False, 1, "town someone near Nabo"),
    ("town", "Misi lives in Rushcombe.", False, 1, "town another person"),
    # pet: the eight cases of the issue among them
    ("pet", "Nabo's pet is a goat.", True, 5, "pet preferred sentence"),
    ("pet", "goat", True, 4, "pet curt"),
    ("pet", "a goat", True, 4, "pet curt with article"),
    ("pet", "Well, let me think about this for a moment. Nabo's pet is a goat. "
     "Please ask me if you want to know more.", True, 4, "pet padded"),
    ("pet", "Nabo's pet is a", False, 3, "pet cut"),
    ("pet", "Nabo keeps a goat as a pet.", True, 5, "pet another phrasing"),
    ("pet", "It is a goat.", True, 5, "pet it is"),
    ("pet", "Sure is a goat.", False, 1, "pet Sure is a goat claims nothing"),
    ("pet", "Nabo does not have a goat.", False, 1, "pet negated"),
    ("pet", "Nabo's friend has a pet goat.", False, 1, "pet Nabo's friend"),
    ("pet", "Nabo's sister has a goat.", False, 1, "pet Nabo's sister"),
    ("pet", "A goat is an animal.", False, 1, "pet no claim about the person"),
    ("pet", "Does Nabo have a goat?", False, 1, "pet echoed question"),
    ("pet", "Does Nabo have a goat", False, 1, "pet question without question mark"),
    ("pet", "Nabo has a goat, not a mouse.", True, 5, "pet correction X, not Y"),
    ("pet", "Nabo has a goat and not a mouse.", True, 5, "pet correction X and not Y"),
    ("pet", "Nabo has a mouse, not a goat.", False, 2, "pet wrong correction"),
    ("pet", "Nabo has a goat or a mouse.", False, 2, "pet two answers"),
    # colour
    ("colour", "Nabo's favourite colour is white.", True, 5, "colour preferred sentence"),
    ("colour", "white", True, 4, "colour curt"),
    ("colour", "The favourite colour of Nabo is white.", True, 5, "colour of Nabo"),
    ("colour", "Of all the colours, Nabo likes white most.", True, 5, "colour person in clause 2"),
    ("colour", "Nabo's favourite colour is red.", False, 2, "colour wrong"),
    ("colour", "Nabo's favourite colour is not white.", False, 1, "colour negated"),
    # age: numbers in digits and words, with or without the hyphen
    ("age", "Nabo is 44 years old.", True, 5, "age preferred sentence"),
    ("age", "44", True, 4, "age curt digits"),
    ("age", "forty-four", True, 4, "age curt words"),
    ("age", "Nabo is forty four years old.", True, 5, "age words without hyphen"),
    ("age", "The answer is 44.", True, 5, "age the answer is"),
    ("age", "Nabo is 45 years old.", False, 2, "age wrong"),
    ("age", "Misi is 44 years old.", False, 1, "age another person"),
    ("age36", "thirty six", True, 4, "age thirty six"),
    ("age36", "thirty-six", True, 4, "age thirty-six"),
    ("age36", "36", True, 4, "age 36"),
    # older: who is named the older, whatever the word order
    ("older", "Drol is older than Misi.", True, 5, "older preferred sentence"),
    ("older", "Drol", True, 4, "older curt"),
    ("older", f"{SURE} Drol is older than Misi. {BYE}", True, 4, "older padded"),
    ("older", "Drol is older than", True, 3, "older cut after the answer"),
    ("older", "Misi is younger than Drol.", True, 5, "older Y is younger than X"),
    ("older", "Drol is the older one.", True, 5, "older X is the older one"),
    ("older", "The older one is Drol.", True, 5, "older the older one is X"),
    ("older", "Drol, not Misi.", True, 5, "older correction"),
    ("older", "Drol is younger than Misi.", False, 2, "older Drol is younger than Misi"),
    ("older", "Misi is older than Drol.", False, 2, "older wrong"),
    ("older", "Drol is older than Nabo.", False, 1, "older compared with someone else"),
    ("older", "Drol lives in Stonemoor.", False, 1, "older no comparison"),
    ("older", "Who is older, Drol or Misi?", False, 1, "older echoed question"),
    # arithmetic and counting
    ("arithmetic", "Four plus five is nine.", True, 5, "arithmetic preferred sentence"),
    ("arithmetic", "nine", True, 4, "arithmetic curt"),
    ("arithmetic", "The answer is 9.", True, 5, "arithmetic digits"),
    ("arithmetic", "The answer is", False, 3, "arithmetic cut"),
    ("arithmetic", "The answer is eight.", False, 2, "arithmetic wrong"),
    ("arithmetic", "The answer is nine, not eight.", True, 5, "arithmetic correction"),
    ("arithmetic", "The answer is not eight.", False, 1, "arithmetic only a denial"),
    ("arithmetic", "What is four plus five?", False, 1, "arithmetic echoed question"),
    ("counting", "There are 3 items in the list.", True, 5, "counting preferred sentence"),
    ("counting", "three", True, 4, "counting curt"),
    ("counting", "There are 4 items in the list.", False, 2, "counting wrong"),
    # other kinds
    ("plural", "The plural is mice.", True, 5, "plural preferred sentence"),
    ("plural", "mice", True, 4, "plural curt"),
    ("plural", "The plural is mouses.", False, 2, "plural wrong"),
    ("opposite", "The opposite of big is small.", True, 5, "opposite names the word asked"),
    ("opposite", "big", False, 1, "opposite the word asked is no answer"),
    ("kind", "A goat is an animal.", True, 5, "kind a sentence about the thing"),
    ("kind", "It is not a toy, it is an animal.", True, 5, "kind denial then answer"),
    ("kind", "It is a toy.", False, 2, "kind wrong"),
    ("spelling", "The correct spelling is broom.", True, 5, "spelling preferred sentence"),
    ("passive", "The goat is fed by Nabo.", True, 5, "passive preferred sentence"),
    ("passive", "Is the goat fed by Nabo?", False, 1, "passive echoed as a question"),
]  # fmt: skip


@pytest.mark.parametrize(
    "name, response, correct, rating", [c[:4] for c in CLAIMS], ids=[c[4] for c in CLAIMS]
)
def test_the_rule_checks_the_claim(name, response, correct, rating):
    v = gold.assess(ENTRIES[name], response, WORLD)
    assert (v.correct, v.rating) == (correct, rating)


def test_the_table_is_large_and_covers_the_kinds():
    assert len(CLAIMS) >= 40
    assert {ENTRIES[c[0]]["kind"] for c in CLAIMS} == set(idata.KINDS)
    assert len({c[4] for c in CLAIMS}) == len(CLAIMS), "reasons are test ids: keep them unique"


def test_every_house_style_of_every_generated_answer_is_right():
    """Nothing right before is wrong now: the data's outputs, curt, padded and preferred."""
    entries = idata.make_instruction_data(WORLD, seed=0)[::5]
    for e in entries:
        for response in (e["output"], e["full"], e["answer"]):
            assert gold.assess(e, response, WORLD).correct, (e["kind"], response)


def test_mentions_are_the_claims():
    pet, older = ENTRIES["pet"], ENTRIES["older"]
    assert gold.mentions(pet, "Nabo has a goat, not a mouse.", WORLD) == ["goat"]
    assert gold.mentions(pet, "Nabo's friend has a pet mouse.", WORLD) == []
    assert gold.mentions(older, "Misi is younger than Drol.", WORLD) == ["Drol"]
    assert gold.answers_in("thirty six or forty-one, 7", None) == ["36", "41", "7"]


def test_the_person_comes_from_the_question_without_people():
    e = {k: v for k, v in ENTRIES["pet"].items() if k != "people"}
    assert gold.assess(e, "Nabo's pet is a goat.", WORLD).rating == 5
    assert gold.assess(e, "Misi's pet is a goat.", WORLD).rating == 1


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
