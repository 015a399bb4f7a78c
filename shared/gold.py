"""The gold rule: a written rule that scores any response to a tiny-world instruction.

Real preference data comes from people, and nobody can say afterwards whether a reward model
or a judge got it right. In the tiny world we *know* the right answer and the preferred
style, so one function can grade any response, from the data or from any model:

- **correct**: does it give the right answer (the town, the sum, the plural, ...) and no
  other answer of the same type? What counts as "an answer of the same type" is the kind's
  vocabulary: the towns for a town question, numbers for arithmetic, the two names for
  "who is older" (there the first name mentioned is the answer), and so on.
- **style**: ``preferred`` (one complete sentence ending in ``.``, ``!`` or ``?``),
  ``padded`` (filler, or more than one sentence), ``curt`` (a bare answer without a
  sentence), ``cut`` (stops mid-sentence: no
  full stop, and a last word such as "is" or "the" that no sentence ends on, or more than
  two words that do not end with the answer) or ``empty``.
- **rating**, 1 to 5, the scale of the lecture's rubric prompt:

  | rating | rule |
  |---|---|
  | 5 | correct, preferred style |
  | 4 | correct, curt or padded |
  | 3 | incomplete: cut off before any answer, or a right answer in a cut-off sentence |
  | 2 | wrong: gives an answer of the right type, but not (only) the right one |
  | 1 | empty, or nothing that answers the question |

``compare(entry, a, b)`` turns two ratings into a pairwise verdict (``"A"``, ``"B"`` or
``"tie"``): the gold label for preference pairs and for pairwise judges.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from shared import instruction_data as idata
from shared.tiny_world import ANIMALS, COLOURS, OBJECT_KINDS, World, make_world, number_words

__all__ = [
    "Verdict",
    "answer_vocabulary",
    "answers_in",
    "assess",
    "compare",
    "gold_reward",
    "mentions",
    "normal_answer",
    "response_style",
]

_NUMBER_WORDS = {number_words(n): n for n in range(100)}
_SENTENCE_END = re.compile(r"[.!?]['\"]?$")
# Words a sentence cannot end on: a response that stops on one was cut off.
_DANGLING = frozenset("a an the is are was of in by than to and or at".split())
_FILLER_PIECES = tuple(piece.lower() for pair in idata.FILLERS for piece in pair)


@dataclass(frozen=True)
class Verdict:
    correct: bool
    style: str
    rating: int

    @property
    def preferred(self) -> bool:
        return self.style == "preferred"


@functools.lru_cache(maxsize=4)
def _default_world(seed: int = 0) -> World:
    return make_world(seed=seed)


def answer_vocabulary(kind: str, world: World, entry: dict) -> list[str] | None:
    """The answers a response to ``kind`` could give (None: numbers, handled apart)."""
    if kind == "town":
        return list(world.towns)
    if kind == "pet":
        return list(ANIMALS)
    if kind == "colour":
        return list(COLOURS)
    if kind == "older":
        return list(entry["people"])
    if kind == "plural":
        nouns = list(ANIMALS) + [o for k in OBJECT_KINDS.values() for o in k]
        return [idata.plural(n) for n in nouns] + [n + "s" for n in nouns]
    if kind == "opposite":
        return sorted({w for pair in idata.OPPOSITES for w in pair})
    if kind == "spelling":
        return list(idata.SPELLING_WORDS)
    if kind == "kind":
        return ["animal", *idata.KIND_NAMES.values()]
    return None  # age, arithmetic, counting: any number


def _mention_spans(text: str, vocabulary: list[str] | None) -> list[tuple[str, str]]:
    """Answers of the kind's type in ``text``, in order: ``(normal form, as written)`` pairs
    (the normal form is lower case, and a digit string for numbers)."""
    found = []
    if vocabulary is None:
        for m in re.finditer(r"\d+|[a-z]+(?:-[a-z]+)?", text, re.I):
            word = m.group().lower()
            if word.isdigit():
                found.append((str(int(word)), m.group()))
            elif word in _NUMBER_WORDS:
                found.append((str(_NUMBER_WORDS[word]), m.group()))
        return found
    words = sorted({v.lower() for v in vocabulary}, key=len, reverse=True)
    pattern = r"\b(" + "|".join(re.escape(w) for w in words) + r")\b"
    return [(m.group().lower(), m.group()) for m in re.finditer(pattern, text, re.I)]


def answers_in(text: str, vocabulary: list[str] | None) -> list[str]:
    """Answers of the kind's type mentioned in ``text``, in order (numbers as digit strings)."""
    return [normal for normal, _ in _mention_spans(text, vocabulary)]


def mentions(entry: dict, response: str, world: World | None = None) -> list[str]:
    """The answers ``response`` gives that the gold rule grades, as written there, in order:
    answers of the kind's type, less those the question itself contains (except the right
    one). Empty for the passive kind, which is graded as a whole phrase."""
    kind = entry["kind"]
    if kind == "passive":
        return []
    world = world or _default_world()
    vocabulary = answer_vocabulary(kind, world, entry)
    spans = _mention_spans(response, vocabulary)
    if kind == "older":
        return [surface for _, surface in spans]
    target = normal_answer(entry, entry["answer"], world)
    asked = set(answers_in(f"{entry['instruction']} {entry['input']}", vocabulary))
    return [surface for normal, surface in spans if normal not in asked or normal == target]


def normal_answer(entry: dict, answer: str, world: World | None = None) -> str:
    """``answer`` in the normal form the gold rule compares (lower case; numbers as digits)."""
    vocabulary = answer_vocabulary(entry["kind"], world or _default_world(), entry)
    spans = answers_in(answer, vocabulary) if vocabulary is None else []
    return spans[0] if spans else answer.lower()


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def response_style(response: str, answer: str = "") -> str:
    """``preferred``, ``padded``, ``curt``, ``cut`` or ``empty``, by the rules above."""
    text = response.strip()
    if not text:
        return "empty"
    low = text.lower()
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    if any(piece in low for piece in _FILLER_PIECES) or len(sentences) > 1:
        return "padded"
    if _SENTENCE_END.search(text):
        return "preferred"
    if low.split()[-1] in _DANGLING:  # "Nabo is", "The plural of horse is"
        return "cut"
    if len(text.split()) <= 2 or (answer and _normal(text).endswith(_normal(answer))):
        return "curt"
    return "cut"


def assess(entry: dict, response: str, world: World | None = None) -> Verdict:
    """Grade ``response`` to the instruction ``entry`` (a dict from ``instruction_data``)."""
    if not isinstance(response, str):
        raise TypeError(f"response must be a str, got {type(response).__name__}")
    for field in ("kind", "answer", "instruction", "input"):
        if field not in entry:
            raise ValueError(f"the entry has no {field!r} field, so it cannot be graded")
    kind, answer = entry["kind"], entry["answer"]
    world = world or _default_world()
    style = response_style(response, answer)
    if kind == "passive":
        correct = _normal(answer) in _normal(response)
        wrong = not correct and re.search(r"\bby \w", _normal(response)) is not None
    else:
        vocabulary = answer_vocabulary(kind, world, entry)
        target = answers_in(answer, vocabulary)[0] if vocabulary is None else answer.lower()
        found = answers_in(response, vocabulary)
        if kind == "older":
            correct = bool(found) and found[0] == target
        else:
            asked = set(answers_in(f"{entry['instruction']} {entry['input']}", vocabulary))
            found = [m for m in found if m not in asked or m == target]
            correct = bool(found) and all(m == target for m in found)
        wrong = bool(found) and not correct
    if style == "empty":
        rating = 1
    elif correct:
        rating = {"preferred": 5, "cut": 3}.get(style, 4)
    elif wrong:
        rating = 2
    else:
        rating = 3 if style == "cut" else 1
    return Verdict(correct=correct, style=style, rating=rating)


def gold_reward(entry: dict, response: str, world: World | None = None) -> float:
    """The rating as a number, for places that want a scalar reward."""
    return float(assess(entry, response, world).rating)


def compare(entry: dict, a: str, b: str, world: World | None = None) -> str:
    """The gold pairwise verdict: ``"A"`` if ``a`` rates higher, ``"B"`` if ``b``, else ``"tie"``."""
    ra, rb = assess(entry, a, world).rating, assess(entry, b, world).rating
    return "A" if ra > rb else "B" if rb > ra else "tie"
