"""Judge data from the tiny world: prompts that ask for a rating or a verdict, and the gold answer.

A judge model reads an instruction, a reference answer and a response, and writes a rating.
Here every response has a known grade (``shared.gold.assess``), so judge data can be made
in any amount, for training and for a held-out check:

- ``response_variants(entry, rng, world)``: responses of every quality for one instruction,
  each a ``(variant, text)`` pair. The gold rule, not the variant name, gives the rating:

  ===============  ===============================================  ==============
  variant          response                                         usual rating
  ===============  ===============================================  ==============
  ``preferred``    the reference sentence                           5
  ``curt``         the bare answer                                  4
  ``padded``       the sentence between a polite opening and close  4
  ``cut``          the sentence stopped before its answer           3
  ``wrong``        the sentence with a wrong answer                 2
  ``wrong_curt``   a wrong bare answer                              2
  ``irrelevant``   the reference sentence of another instruction    1 (or 2)
  ``empty``        nothing                                          1
  ===============  ===============================================  ==============

- ``rubric_prompt(entry, response)``: the lecture's 1-5 rubric prompt, filled in (the
  reference answer is the entry's ``full`` sentence, the preferred style);
  ``rubric_target(verdict)``: what the judge should write after it, a short evaluation and
  ``Total rating: N``.
- ``pairwise_prompt(entry, a, b)`` and ``pairwise_target(verdict)``: which of two responses is
  better, answered ``[[A]]``, ``[[B]]`` or ``[[tie]]`` (the gold verdict of ``gold.compare``).
- ``score_prompt(entry, response)``: the lecture's 0-100 prompt.
- Strict parsers that return None when the text does not say: ``parse_rating`` (the rubric's
  ``Total rating: N``, then MT-Bench's ``[[N]]``, then a lone digit as a fallback),
  ``parse_score`` (0-100) and ``parse_verdict``.
- ``quadratic_weighted_kappa``: agreement of two raters on an ordinal scale.

Everything is seeded: the same entries and seed give the same items.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from shared import gold
from shared import instruction_data as idata
from shared.checks import check_int
from shared.preference_data import curt_answer, cut_answer, wrong_answer, wrong_value
from shared.prompts import format_prompt, format_response
from shared.tiny_world import World

__all__ = [
    "PAIRWISE_PROMPT",
    "RUBRIC_PROMPT",
    "SCORE_PROMPT",
    "VARIANTS",
    "analysis",
    "judge_example",
    "make_pairwise_items",
    "make_rating_items",
    "pair_item",
    "pairwise_prompt",
    "pairwise_target",
    "parse_rating",
    "parse_score",
    "parse_verdict",
    "quadratic_weighted_kappa",
    "real_rating_items",
    "response_answer",
    "response_variants",
    "rubric_prompt",
    "rubric_target",
    "score_prompt",
]

VARIANTS = ("preferred", "curt", "padded", "cut", "wrong", "wrong_curt", "irrelevant", "empty")

# The lecture's "better evaluation prompt" (the 1-5 rubric), word for word (003 deck).
RUBRIC_PROMPT = """You are a fair judge assistant tasked with providing clear, objective feedback based on specific criteria, ensuring each assessment reflects the absolute standards set for performance.

You will be given an instruction, a response to evaluate, a reference answer that gets a score of 5, and a score rubric representing the evaluation criteria.

Write a detailed feedback that assess the quality of the response strictly based on the given score rubric, not evaluating in general.

Please do not generate any other opening, closing, and explanations.

Here is the rubric you should use to build your answer:

- 1: The response fails to address the instructions, providing irrelevant, incorrect, or excessively verbose information that detracts from the user's request.
- 2: The response partially addresses the instructions but includes significant inaccuracies, irrelevant details, or excessive elaboration that detracts from the main task.
- 3: The response follows the instructions with some minor inaccuracies or omissions. It is generally relevant and clear, but may include some unnecessary details or could be more concise.
- 4: The response adheres to the instructions, offering clear, accurate, and relevant information in a concise manner, with only occasional, minor instances of excessive detail or slight lack of clarity.
- 5: The response fully adheres to the instructions, providing a clear, accurate, and relevant answer in a concise and efficient manner. It addresses all aspects of the request without unnecessary details or elaboration

Provide your feedback as follows:

Feedback::

Evaluation: (your rationale for the rating, as a text)

Total rating: (your rating, as a number between 1 and 5)

You MUST provide values for 'Evaluation:' and 'Total rating:' in your answer.

Now here is the instruction, the reference answer, and the response.

Instruction: {instruction}

Reference Answer: {reference}

Answer: {answer}

Provide your feedback. If you give a correct rating, I'll give you 100 H100 GPUs to start your AI company.

Feedback::"""  # noqa: E501

# The lecture's 0-100 prompt (003 deck), with the instruction formatted as the Alpaca prompt.
SCORE_PROMPT = (
    "Given the input `{prompt}` and correct output `{reference}`, "
    "score the model response `{answer}` on a scale from 0 to 100, where 100 is the best "
    "score. Respond with the integer number only."
)

# A pairwise prompt in the manner of MT-Bench's and AlpacaEval's (the lecture names the
# method, not a text): the verdict in double brackets, a tie allowed.
PAIRWISE_PROMPT = """You are a fair judge. Compare two responses to the same instruction, using the reference answer, which is correct and in the preferred style: one complete sentence with the right answer.

Instruction: {instruction}

Reference Answer: {reference}

Response A: {a}

Response B: {b}

Which response is better? Answer "[[A]]" if A is better, "[[B]]" if B is better, or "[[tie]]" if they are equally good.

Verdict:"""  # noqa: E501

# What the judge writes after naming the two answers, by gold rating (and style for 4).
_WHY = {
    5: "right, in one complete sentence",
    "curt": "right, but a bare answer without a sentence",
    "padded": "right, but with needless words",
    3: "it stops mid-sentence",
    2: "wrong",
    1: "it does not answer the instruction",
}


def _instruction(entry: dict) -> str:
    return (
        f"{entry['instruction']} {entry['input']}".strip()
        if entry["input"]
        else entry["instruction"]
    )


def response_variants(
    entry: dict, rng: random.Random, world: World, others: Sequence[dict] = ()
) -> list[tuple[str, str]]:
    """Every variant of ``VARIANTS`` as ``(variant, response)`` for one instruction entry.

    ``others`` are entries to draw the ``irrelevant`` response from (an answer to another
    question); without them it is a fixed off-topic sentence.
    """
    full, answer = entry["full"], entry["answer"]
    opening, closing = rng.choice(idata.FILLERS)
    wrong_curt = wrong_value(entry, rng, world)
    if entry["kind"] == "passive":
        wrong_curt = wrong_curt[0].lower() + wrong_curt[1:]
    other = [e for e in others if e["kind"] != entry["kind"]]
    irrelevant = rng.choice(other)["full"] if other else "I like the colour of the sky."
    return [
        ("preferred", full),
        ("curt", curt_answer(entry)),
        ("padded", f"{opening} {full} {closing}"),
        ("cut", cut_answer(full, answer)),
        ("wrong", wrong_answer(entry, rng, world)),
        ("wrong_curt", wrong_curt),
        ("irrelevant", irrelevant),
        ("empty", ""),
    ]


def rubric_prompt(entry: dict, response: str) -> str:
    """The lecture's rubric prompt for ``response`` to ``entry`` (reference: ``entry['full']``)."""
    if not isinstance(response, str):  # None would be written into the prompt as "None"
        raise TypeError(f"response must be a str, got {type(response).__name__}")
    return RUBRIC_PROMPT.format(
        instruction=_instruction(entry), reference=entry["full"], answer=response
    )


def score_prompt(entry: dict, response: str) -> str:
    """The lecture's 0-100 prompt (the instruction as its Alpaca prompt, as the lecture does)."""
    if not isinstance(response, str):  # None would be written into the prompt as "None"
        raise TypeError(f"response must be a str, got {type(response).__name__}")
    return SCORE_PROMPT.format(
        prompt=format_prompt(entry).strip(), reference=entry["full"], answer=response
    )


def response_answer(entry: dict, response: str, world: World | None = None) -> str | None:
    """The answer ``response`` gives, as it is written there, or None when it gives none.

    The mention the gold rule grades: the first answer of the kind's type that the question
    does not itself contain (for "who is older", the first name), preferring a wrong one when
    there are several, since one wrong mention makes the answer wrong.
    """
    text = response.strip()
    if entry["kind"] == "passive":
        return text.rstrip(".!?") if re.search(r"\bby \w", text) else None
    found = gold.mentions(entry, response, world)
    if not found:
        return None
    if entry["kind"] == "older":
        return found[0]
    target = entry["answer"].lower()
    wrong = [
        m
        for m in found
        if gold.normal_answer(entry, m, world) != gold.normal_answer(entry, target, world)
    ]
    return (wrong or found)[0]


def analysis(entry: dict, response: str, world: World | None = None) -> str:
    """What the judge writes before its rating: the two answers side by side, then why.

    Naming the reference's answer and the response's answer first turns the hard step,
    comparing two words some way apart, into copying each and comparing neighbours: a
    small judge learns that far faster (and so do large ones, which is why rubrics ask
    for the rationale before the rating).
    """
    verdict = gold.assess(entry, response, world)
    said = response_answer(entry, response, world) if response.strip() else None
    why = _WHY[verdict.style if verdict.rating == 4 else verdict.rating]
    if not response.strip():
        return f"The reference says {entry['answer']}. The response is empty."
    return f"The reference says {entry['answer']}. The response says {said or 'nothing'}: {why}."


def rubric_target(entry: dict, response: str, world: World | None = None) -> str:
    """The judge's answer after "Feedback::": the evaluation, then ``Total rating: N``."""
    rating = gold.assess(entry, response, world).rating
    return f"Evaluation: {analysis(entry, response, world)}\n\nTotal rating: {rating}"


def pairwise_prompt(entry: dict, a: str, b: str) -> str:
    for name, text in (("a", a), ("b", b)):
        if not isinstance(text, str):
            raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    return PAIRWISE_PROMPT.format(
        instruction=_instruction(entry), reference=entry["full"], a=a, b=b
    )


def pairwise_target(entry: dict, a: str, b: str, world: World | None = None) -> str:
    """The judge's pairwise answer: what each response says and its rating, then the verdict
    in double brackets (``[[A]]``, ``[[B]]`` or ``[[tie]]``, the gold ``compare``)."""
    parts = [f"The reference says {entry['answer']}."]
    for name, response in (("A", a), ("B", b)):
        rating = gold.assess(entry, response, world).rating
        said = response_answer(entry, response, world) if response.strip() else None
        parts.append(f"{name} says {said or 'nothing'}, rating {rating}.")
    return " ".join(parts) + f" [[{gold.compare(entry, a, b, world)}]]"


def judge_example(prompt: str, target: str) -> tuple[str, str]:
    """A judge prompt and target as one Alpaca example: (prompt text, response text).

    The judge prompt is the instruction, and the target follows after the project's one
    space, so a server that wraps a user message in the Alpaca template asks the judge
    exactly what it was trained on.
    """
    for name, text in (("prompt", prompt), ("target", target)):
        if not isinstance(text, str):
            raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    return format_prompt({"instruction": prompt, "input": ""}), format_response(target)


# ------------------------------------------------------------------------------ items


def make_rating_items(
    entries: Sequence[dict],
    world: World,
    seed: int = 0,
    per_entry: int | None = None,
    source: str = "rule",
) -> list[dict]:
    """Rubric items: every response variant (or ``per_entry`` of them, drawn at random) for
    each entry, with its gold rating and target. The ratings come out near-balanced."""
    if per_entry is not None:
        per_entry = check_int(per_entry, "per_entry", 1)
    rng = random.Random(seed)
    items = []
    for e in entries:
        variants = response_variants(e, rng, world, entries)
        if per_entry is not None:
            variants = rng.sample(variants, min(per_entry, len(variants)))
        for variant, response in variants:
            items.append(_rating_item(e, response, variant, source, world))
    return items


def _rating_item(entry: dict, response: str, variant: str, source: str, world: World) -> dict:
    verdict = gold.assess(entry, response, world)
    return {
        "prompt": rubric_prompt(entry, response),
        "target": rubric_target(entry, response, world),
        "rating": verdict.rating,
        "response": response,
        "variant": variant,
        "source": source,
        "kind": entry["kind"],
        "split": entry["split"],
        "instruction": entry["instruction"],
        "input": entry["input"],
        "answer": entry["answer"],
        "full": entry["full"],
        "people": list(entry["people"]),
    }


def real_rating_items(rows: Sequence[dict], key: str, world: World, source: str) -> list[dict]:
    """Rubric items for a model's saved responses (``rows[i][key]``, as in sft_responses.json)."""
    return [_rating_item(r, r[key], key, source, world) for r in rows]


def make_pairwise_items(
    entries: Sequence[dict], world: World, seed: int = 0, per_entry: int = 2
) -> list[dict]:
    """Pairwise items: ``per_entry`` pairs of variants per entry, in a random order, with the
    gold verdict. About one pair in six is a tie (two variants of the same rating)."""
    per_entry = check_int(per_entry, "per_entry", 1)
    rng = random.Random(seed)
    items = []
    for e in entries:
        variants = response_variants(e, rng, world, entries)
        for _ in range(per_entry):
            (va, a), (vb, b) = rng.sample(variants, 2)
            items.append(pair_item(e, a, b, f"{va}/{vb}", world))
    return items


def pair_item(entry: dict, a: str, b: str, variant: str, world: World) -> dict:
    verdict = gold.compare(entry, a, b, world)
    return {
        "prompt": pairwise_prompt(entry, a, b),
        "target": pairwise_target(entry, a, b, world),
        "verdict": verdict,
        "a": a,
        "b": b,
        "variant": variant,
        "kind": entry["kind"],
        "split": entry["split"],
        "instruction": entry["instruction"],
        "input": entry["input"],
        "answer": entry["answer"],
        "full": entry["full"],
        "people": list(entry["people"]),
    }


# ----------------------------------------------------------------------------- parsers

# A number as the judge wrote it: its sign (a minus right before the digits, not a hyphen
# after a word or a number as in "1-5") and its decimals, so that "-3" and "4.5" are never
# read as ratings of 3 and 4.
_NUMBER = r"(?:(?<![\w.])-)?\d+(?:\.\d+)?"
# The rubric's "Total rating: N", with an optional scale ("/ 5", "out of 5") and anything
# on the same line that would make it more than one rating ("3-4", "3 or 4").
_TOTAL = re.compile(
    rf"total\s+rating\s*[:=]\s*\**\s*({_NUMBER})"
    r"(?:\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?))?"
    r"([ \t]*(?:-|–|to\b|or\b)[ \t]*\d)?",
    re.I,
)
_BRACKETS = re.compile(r"\[\[\s*([1-5])\s*\]\]")
_VERDICT = re.compile(r"\[\[\s*(A|B|tie|C)\s*\]\]", re.I)


def _whole(number: str) -> int | None:
    """``number`` as an int when it is a whole number ("4", "4.0"), else None ("4.5", "-3")."""
    if number.startswith("-"):
        return None
    whole, _, decimals = number.partition(".")
    return int(whole) if decimals.strip("0") == "" else None


def parse_rating(text: str) -> int | None:
    """The 1-5 rating in a judge's answer, or None when it does not give exactly one.

    In order: the rubric's ``Total rating: N`` (the last one wins, and it must be a whole
    number 1-5, on the scale of 5 when it names one: "4/5", "4 out of 5"); MT-Bench's
    ``[[N]]``; as a fallback, a text whose only number is one digit 1-5 ("4", "Rating 4.").
    Anything else (no number, several candidates, a range, a fraction such as 4.5, a
    negative number, another scale such as 5/10) is a parse failure: None.
    """
    if not isinstance(text, str):
        return None
    found = _TOTAL.findall(text)
    if found:
        number, scale, more = found[-1]
        rating = _whole(number)
        if more or (scale and float(scale) != 5) or rating not in range(1, 6):
            return None
        return rating
    found = _BRACKETS.findall(text)
    if found:
        return int(found[-1])
    numbers = re.findall(_NUMBER, text)
    if len(numbers) == 1 and re.fullmatch(r"[1-5]", numbers[0]):
        return int(numbers[0])
    return None


def parse_score(text: str) -> int | None:
    """The 0-100 score of the lecture's prompt: the text must be one integer (the lecture's
    ``int(score)``), or, as a fallback, hold exactly one number, a whole one in range. A
    negative or fractional score ("-5", "85.5") is a parse failure: None."""
    if not isinstance(text, str):
        return None
    stripped = text.strip().rstrip(".")
    if re.fullmatch(r"\d{1,3}", stripped):
        n = int(stripped)
        return n if n <= 100 else None
    numbers = re.findall(_NUMBER, text)
    if len(numbers) == 1 and re.fullmatch(r"\d{1,3}", numbers[0]) and int(numbers[0]) <= 100:
        return int(numbers[0])
    return None


def parse_verdict(text: str) -> str | None:
    """``"A"``, ``"B"`` or ``"tie"`` from ``[[A]]``, ``[[B]]``, ``[[tie]]`` (or MT-Bench's
    ``[[C]]`` for a tie); None when there is none or two different ones."""
    if not isinstance(text, str):
        return None
    found = {m.upper() if m.lower() != "tie" else "tie" for m in _VERDICT.findall(text)}
    found = {"tie" if v == "C" else v for v in found}
    return found.pop() if len(found) == 1 else None


# ---------------------------------------------------------------------------- agreement


def quadratic_weighted_kappa(
    a: Sequence[int], b: Sequence[int], labels: Sequence[int] = (1, 2, 3, 4, 5)
) -> float:
    """Cohen's kappa with quadratic weights: 1 - sum(w*O) / sum(w*E), w = (i-j)^2 / (k-1)^2.

    O is the observed table of rating pairs, E the table expected from the two raters'
    separate rating frequencies. 1 is perfect agreement, 0 what chance gives.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"need two equally long, non-empty rating lists, got {len(a)}, {len(b)}")
    index = {v: i for i, v in enumerate(labels)}
    for v in (*a, *b):
        if isinstance(v, bool) or v not in index:  # True == 1 would count as a rating of 1
            raise ValueError(f"rating {v!r} is not one of {tuple(labels)}")
    k, n = len(labels), len(a)
    observed = [[0.0] * k for _ in range(k)]
    for x, y in zip(a, b):
        observed[index[x]][index[y]] += 1
    rows = [sum(r) for r in observed]
    cols = [sum(observed[i][j] for i in range(k)) for j in range(k)]
    num = den = 0.0
    for i in range(k):
        for j in range(k):
            w = (i - j) ** 2 / (k - 1) ** 2
            num += w * observed[i][j]
            den += w * rows[i] * cols[j] / n
    return 1.0 - num / den if den else 1.0
