"""The synthetic world and its corpus: deterministic, consistent with the facts, well split."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from shared import tiny_world as tw

NAME = r"\b(?!(?:She|He)\b)([A-Z][a-z]+)"  # a capitalised word, not a pronoun
WORD = r"([a-z]+)"
TOWN = r"([A-Z][a-z]+)"
# Every phrasing in the corpus that ties a person to a value: (regex, attribute).
# Group 1 is the name, group 2 the value. The corpus must never contradict the world.
STATEMENTS = [
    (NAME + r" lives in " + TOWN, "town"),
    (TOWN + r" is the town where " + NAME + " lives", "town"),  # groups swapped, see below
    (NAME + r"'s (?:home|house) is in " + TOWN, "town"),
    (NAME + r" comes from " + TOWN, "town"),
    (NAME + r", who also lives in " + TOWN, "town"),
    (NAME + r" (?:walks|takes) (?:her|his) [a-z]+ to the [a-z]+ in " + TOWN, "town"),
    (NAME + r" goes home to " + TOWN, "town"),
    (NAME + r"'s pet is an? " + WORD, "pet"),
    (NAME + r" (?:has|looks after) a pet " + WORD, "pet"),
    (NAME + r" keeps an? " + WORD + " as a pet", "pet"),
    (NAME + r" (?:walks|takes) (?:her|his) " + WORD, "pet"),
    (NAME + r" lives in [A-Z][a-z]+ with a pet " + WORD, "pet"),
    (NAME + r" has an? " + WORD + r", but", "pet"),
    (r"but " + NAME + r" has an? " + WORD, "pet"),
    (NAME + r"'s favourite colour is " + WORD, "colour"),
    (r"favourite colour of " + NAME + r" is " + WORD, "colour"),
    (NAME + r" likes the colour " + WORD + " best", "colour"),
    (NAME + r" likes " + WORD + " most", "colour"),
    (NAME + r" wears (?:her|his) " + WORD, "colour"),
    (NAME + r" puts on an? " + WORD, "colour"),
    (NAME + r"'s age is (\d+)", "age"),
    (r"The age of " + NAME + r" is (\d+)", "age"),
    (NAME + r" is ([\w-]+) years old\b", "age"),  # not "years older than"
]
PRONOUNS = {"she": "she", "her": "she", "he": "he", "his": "he"}
# "34" or "thirty-four" -> 34 (number_words itself is checked in test_number_words)
NUMBERS = {tw.number_words(i): i for i in range(100)} | {str(i): i for i in range(100)}


@pytest.fixture(scope="module")
def world() -> tw.World:
    return tw.make_world(seed=0)


@pytest.fixture(scope="module")
def splits(world) -> dict[str, str]:
    return tw.make_splits(world, seed=0)


def test_same_seed_same_bytes_other_seed_differs(world):
    assert tw.make_world(seed=0) == world
    assert tw.make_world(seed=1).people != world.people
    a = tw.generate_corpus(world, 50_000, seed=7)
    assert a == tw.generate_corpus(tw.make_world(seed=0), 50_000, seed=7)
    assert a != tw.generate_corpus(world, 50_000, seed=8)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_names_are_unique_invented_words(seed):
    world = tw.make_world(seed=seed)
    names = [p.name for p in world.people]
    assert len(set(names)) == len(names) == 120
    vocabulary = set(world.animals) | set(world.colours) | set(world.objects)
    for name in names:
        assert re.fullmatch(r"[A-Z][a-z]{2,7}", name), name
        # pronounceable: no two vowels in a row, no three consonants in a row
        assert not re.search(r"[aeiou]{2}|[^aeiou]{3}", name.lower()), name
        assert name.lower() not in vocabulary | tw.NOT_NAMES | {t.lower() for t in world.towns}


def test_world_shape_and_spread(world):
    assert 12 <= len(world.towns) <= 20 and len(set(world.towns)) == len(world.towns)
    assert len(world.animals) == 12 and len(world.colours) == 10 and len(world.objects) >= 30
    assert tw.ATTRIBUTES == ("town", "pet", "colour", "age")
    for attribute, vocabulary in [("town", world.towns), ("pet", world.animals)]:
        counts = Counter(getattr(p, attribute) for p in world.people)
        assert set(counts) == set(vocabulary)
        assert min(counts.values()) >= 5, (attribute, counts)
    assert min(Counter(p.colour for p in world.people).values()) >= 5
    assert all(5 <= p.age <= 90 and p.pronoun in ("she", "he") for p in world.people)


def test_person_lookup_and_facts(world):
    first = world.people[0]
    assert world.person(first.name) is first
    with pytest.raises(KeyError, match="Nobody"):
        world.person("Nobody")
    facts = world.facts()
    assert len(facts) == 120 * 4
    assert facts[0] == tw.Fact(first.name, "town", first.town)
    assert facts[3] == tw.Fact(first.name, "age", first.age)


def test_probes_one_per_fact_in_canonical_form(world):
    probes = tw.fact_probes(world)
    assert len(probes) == len(world.facts())
    nabo = world.people[0]
    assert [(p.prompt, p.answer) for p in probes[:4]] == [
        (f"{nabo.name} lives in", f" {nabo.town}"),
        (f"{nabo.name}'s pet is a", f" {nabo.pet}"),
        (f"{nabo.name}'s favourite colour is", f" {nabo.colour}"),
        (f"{nabo.name}'s age is", f" {nabo.age}"),
    ]
    for probe in probes:
        assert probe.answer.startswith(" ") and not probe.answer.endswith(".")
        assert str(getattr(world.person(probe.person), probe.attribute)) == probe.answer[1:]


def test_every_probe_phrasing_is_in_train(world, splits):
    missing = [p for p in tw.fact_probes(world) if f"{p.prompt}{p.answer}." not in splits["train"]]
    assert not missing, missing[:5]


@pytest.mark.parametrize("split", ["train", "val"])
def test_no_false_statement_about_anyone(world, splits, split):
    text = splits[split]
    for pattern, attribute in STATEMENTS:
        matches = list(re.finditer(pattern, text))
        for m in matches:
            name, value = m.group(1), m.group(2)
            if " is the town where " in pattern:
                name, value = value, name
            person = world.person(name)  # KeyError if a name is not a person of the world
            truth = getattr(person, attribute)
            ok = NUMBERS.get(value) == truth if attribute == "age" else value == truth
            assert ok, f"{m.group(0)!r}: {name}'s {attribute} is {truth}"
        if split == "train":
            assert matches, f"pattern never used: {pattern}"


def test_pair_statements_and_pronouns_are_true(world, splits):
    text = splits["train"]
    p = world.person
    for a, b in re.findall(NAME + " is older than " + NAME, text):
        assert p(a).age > p(b).age
    for a, n, b in re.findall(NAME + r" is ([\w-]+) years? older than " + NAME, text):
        assert p(a).age - p(b).age == NUMBERS[n]
    for a, b in re.findall(NAME + " and " + NAME + " are the same age", text):
        assert p(a).age == p(b).age
    for a, b, town in re.findall(NAME + " and " + NAME + " both live in " + TOWN, text):
        assert p(a).town == p(b).town == town
    for a, b in re.findall(NAME + " and " + NAME + " live in different towns", text):
        assert p(a).town != p(b).town
    for a, b, pet in re.findall(NAME + " and " + NAME + " both have a pet " + WORD, text):
        assert p(a).pet == p(b).pet == pet
    for a, b, colour in re.findall(NAME + " and " + NAME + " both like " + WORD, text):
        assert p(a).colour == p(b).colour == colour
    for name, possessive in re.findall(NAME + r" (?:walks|takes|wears) (her|his)\b", text):
        assert p(name).pronoun == PRONOUNS[possessive]


def test_pronouns_refer_to_someone_in_the_document(world, splits):
    for doc in tw.split_documents(splits["val"]):
        names = set(re.findall(r"\b[A-Z][a-z]+\b", doc)) & {p.name for p in world.people}
        used = {PRONOUNS[w.lower()] for w in re.findall(r"\b(?:[Ss]he|[Hh]e|her|his)\b", doc)}
        assert used <= {world.person(n).pronoun for n in names}, doc


def test_arithmetic_and_counting_are_right(splits):
    text = splits["train"]
    sums = re.findall(r"(\d+) ([+-]) (\d+) = (\d+)", text)
    assert len(sums) > 100
    for a, op, b, c in sums:
        assert (int(a) + int(b) if op == "+" else int(a) - int(b)) == int(c)

    gift = r"finds (\w+) ([a-z]+)\. .*? gives (\w+) [a-z]+ to [A-Z][a-z]+ and keeps (\w+) [a-z]+\."
    gifts = re.findall(gift, text)  # one line per document, so "." never crosses documents
    assert len(gifts) > 100
    for found, thing, given, kept in gifts:
        assert NUMBERS[found] == NUMBERS[given] + NUMBERS[kept], (found, thing, given, kept)


def test_number_words():
    expected = {0: "zero", 7: "seven", 13: "thirteen", 20: "twenty", 34: "thirty-four"}
    assert {n: tw.number_words(n) for n in expected} == expected
    assert tw.number_words(99) == "ninety-nine"
    with pytest.raises(ValueError, match="100"):
        tw.number_words(100)


def test_simple_grammar(splits):
    text = splits["val"]
    assert not re.search(r"\ba [aeiou]|\ban [^aeiou\s]", text)  # a/an
    assert "  " not in text and " ," not in text and " ." not in text
    for doc in tw.split_documents(text):
        assert "\n" not in doc and doc.endswith(".") and doc[0].isupper(), doc


def test_stories_have_three_to_eight_sentences(world):
    rng = random.Random(0)
    deck = tw._Deck(world.people, rng)
    lengths = [len(re.findall(r"\.(?: |$)", tw._story_document(rng, deck))) for _ in range(500)]
    assert min(lengths) >= 3 and max(lengths) <= 8, Counter(lengths)


def test_sizes_and_val_is_new_text(splits):
    train, val = splits["train"], splits["val"]
    assert 4_500_000 <= len(train) < 4_510_000
    assert 250_000 <= len(val) < 260_000
    for text in (train, val):
        assert text.endswith(f"\n{tw.ENDOFTEXT}\n")
        assert text.count(tw.ENDOFTEXT) == len(tw.split_documents(text))
    train_docs = set(tw.split_documents(train))
    val_docs = tw.split_documents(val)
    shared_docs = sum(doc in train_docs for doc in val_docs)
    assert shared_docs <= 0.02 * len(val_docs), shared_docs
    assert val[:2000] not in train


def test_bad_arguments_are_rejected(world):
    with pytest.raises(ValueError, match="n_people"):
        tw.make_world(n_people=0)
    with pytest.raises(ValueError, match="n_chars"):
        tw.generate_corpus(world, 0, seed=1)
