"""Judge data: gold targets, the lecture's prompts, strict parsers and the kappa."""

import json
import random
from pathlib import Path

import pytest

from shared import gold
from shared import judge_data as jd
from shared.tiny_world import make_world

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="module")
def world():
    return make_world(seed=0)


@pytest.fixture(scope="module")
def entries():
    return json.loads((DATA / "instructions" / "train.json").read_text("utf-8"))[:300]


def test_rubric_prompt_is_the_lectures(entries):
    p = jd.rubric_prompt(entries[0], "Nabo lives in Corton.")
    assert p.startswith("You are a fair judge assistant tasked with providing clear, objective")
    assert p.count("\n- ") == 5 and p.rstrip().endswith("Feedback::")
    assert "Total rating: (your rating, as a number between 1 and 5)" in p
    assert f"Reference Answer: {entries[0]['full']}" in p
    assert "Answer: Nabo lives in Corton." in p


def test_score_prompt_asks_for_an_integer(entries):
    p = jd.score_prompt(entries[0], "x")
    assert "on a scale from 0 to 100" in p and p.endswith("Respond with the integer number only.")


def test_variants_cover_every_rating(entries, world):
    items = jd.make_rating_items(entries, world, seed=0)
    assert {i["rating"] for i in items} == {1, 2, 3, 4, 5}
    for i in items:
        assert i["target"].endswith(f"Total rating: {i['rating']}")
        assert jd.parse_rating(i["target"]) == i["rating"]
        want = {"preferred": 5, "curt": 4, "padded": 4, "cut": 3, "wrong": 2, "empty": 1}
        if i["variant"] in want:
            assert i["rating"] == want[i["variant"]], i


def test_items_are_deterministic(entries, world):
    a = jd.make_rating_items(entries[:50], world, seed=3, per_entry=3)
    b = jd.make_rating_items(entries[:50], world, seed=3, per_entry=3)
    c = jd.make_rating_items(entries[:50], world, seed=4, per_entry=3)
    assert a == b and a != c
    assert jd.make_pairwise_items(entries[:50], world, 1) == jd.make_pairwise_items(
        entries[:50], world, 1
    )


def test_pairwise_targets_follow_gold(entries, world):
    items = jd.make_pairwise_items(entries, world, seed=0)
    assert {i["verdict"] for i in items} == {"A", "B", "tie"}
    for i in items:
        assert i["verdict"] == gold.compare(i, i["a"], i["b"], world)
        assert jd.parse_verdict(i["target"]) == i["verdict"]
        assert i["target"].startswith(f"The reference says {i['answer']}. A says ")
        assert f"Response A: {i['a']}\n" in i["prompt"]


def test_real_items(world):
    rows = json.loads((DATA / "checkpoints" / "sft_responses.json").read_text("utf-8"))[:20]
    items = jd.real_rating_items(rows, "model_response", world, "sft")
    assert [i["rating"] for i in items] == [
        gold.assess(r, r["model_response"], world).rating for r in rows
    ]


def test_judge_example_is_alpaca(entries):
    prompt, target = jd.judge_example("Judge this.", "Total rating: 3")
    assert prompt.endswith("### Response:\n") and "Judge this." in prompt
    assert target == " Total rating: 3"


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("Evaluation: fine.\n\nTotal rating: 4", 4),
        ("Total rating: 2\nTotal rating: 5", 5),
        ("**Total Rating:** 3", 3),
        ("total rating: 4/5", 4),
        ("Rating: [[5]]", 5),
        ("4", 4),
        (" 3.", 3),
        ("Total rating: 7", None),
        ("Total rating: 45", None),
        ("I would give 3 or 4", None),
        ("a 4.5", None),
        ("", None),
        ("no idea", None),
        (None, None),
    ],
)
def test_parse_rating(text, want):
    assert jd.parse_rating(text) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [("85", 85), (" 100.", 100), ("I'd rate it an 85 out of", 85), ("101", None), ("7 or 8", None)],
)
def test_parse_score(text, want):
    assert jd.parse_score(text) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("[[A]]", "A"),
        ("Verdict: [[b]]", "B"),
        ("[[tie]]", "tie"),
        ("[[C]]", "tie"),
        ("[[A]] then [[B]]", None),
        ("A", None),
    ],
)
def test_parse_verdict(text, want):
    assert jd.parse_verdict(text) == want


def test_kappa():
    assert jd.quadratic_weighted_kappa([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]) == pytest.approx(1.0)
    assert jd.quadratic_weighted_kappa([1, 5, 1, 5], [5, 1, 5, 1]) < 0
    near = jd.quadratic_weighted_kappa([1, 2, 3, 4, 5], [2, 2, 3, 4, 4])
    far = jd.quadratic_weighted_kappa([1, 2, 3, 4, 5], [5, 2, 3, 4, 1])
    assert far < near < 1
    rng = random.Random(0)
    a = [rng.randint(1, 5) for _ in range(2000)]
    b = [rng.randint(1, 5) for _ in range(2000)]
    assert abs(jd.quadratic_weighted_kappa(a, b)) < 0.06
    with pytest.raises(ValueError):
        jd.quadratic_weighted_kappa([1, 6], [1, 2])
    with pytest.raises(ValueError):
        jd.quadratic_weighted_kappa([1], [1, 2])


def test_targets_name_both_answers_before_the_rating(entries, world):
    rng = random.Random(0)
    for e in entries[:120]:
        for variant, response in jd.response_variants(e, rng, world, entries):
            target = jd.rubric_target(e, response, world)
            assert target.startswith(f"Evaluation: The reference says {e['answer']}.")
            verdict = gold.assess(e, response, world)
            said = jd.response_answer(e, response, world)
            if verdict.rating in (4, 5) and e["kind"] != "passive":
                # the named answer is the right one, as written in the response
                assert said in response
                assert gold.normal_answer(e, said, world) == gold.normal_answer(
                    e, e["answer"], world
                )
            if verdict.rating == 2:
                assert said is not None and f"says {said}: wrong." in target, (variant, target)
            if variant == "empty":
                assert "The response is empty." in target


def test_response_answer_examples(world):
    town = {"kind": "town", "instruction": "Where does Nabo live?", "input": ""}
    town |= {"answer": "Rushcombe", "full": "Nabo lives in Rushcombe.", "people": ["Nabo"]}
    assert jd.response_answer(town, "Nabo lives in Rushcombe.", world) == "Rushcombe"
    assert jd.response_answer(town, "I like the sky.", world) is None
    sums = {"kind": "arithmetic", "instruction": "How much is seven plus seven?", "input": ""}
    sums |= {"answer": "fourteen", "full": "The answer is fourteen.", "people": []}
    assert jd.response_answer(sums, "The answer is Fifteen.", world) == "Fifteen"
    # seven is in the question, so it is not the answer given
    assert jd.response_answer(sums, "Seven and seven make 14.", world) == "14"
    assert jd.analysis(sums, "14", world) == (
        "The reference says fourteen. The response says 14: right, but a bare answer "
        "without a sentence."
    )
