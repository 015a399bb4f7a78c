"""The gold rule: a written rule that scores any response to a tiny-world instruction.

Real preference data comes from people, and nobody can say afterwards whether a reward model
or a judge got it right. In the tiny world we *know* the right answer and the preferred
style, so one function can grade any response, from the data or from any model:

- **correct**: does the response *claim* the right answer, and no other? A claim is read
  sentence by sentence, clause by clause (clauses split at ``,;:`` and at "and", "but",
  "or"), and an answer counts only when

  - it is asserted, not denied: a "not", "no", "never" or "...n't" earlier in its clause
    denies it ("Nabo does not have a goat."). A correction "a goat, not a mouse" asserts
    the goat and denies the mouse, so its one answer is the goat;
  - it is not in a question: a sentence that ends with "?" or opens like one ("Does Nabo
    have a goat?") answers nothing;
  - it is of the kind's type: the towns for a town question, numbers for age, sums and
    counting (digits or words, with or without a hyphen: "36", "thirty-six", "thirty
    six"), the two names for "who is older"; and it is not a word the question itself
    works on (the numbers of the sum, the word to turn into a plural);
  - for the person-fact kinds (town, pet, colour, age), its clause is about the person
    asked: the person is the clause's first person named ("Nabo lives in ...", "The age of
    Nabo is ...", "Nabo's pet is ..."), not someone related to them ("Nabo's friend",
    "the sister of Nabo", "someone near Nabo") and not another person; or the clause names
    nobody and is a pronoun's ("She lives in ...", "It is a goat."), a bare answer ("goat",
    "a goat", "The answer is 44.", "44 years old") or it continues a sentence whose
    clause before was about the person ("..., not a mouse"). So "A goat is an animal."
    claims nothing;
  - for "who is older", it names the older of the two: "X is older than Y", "Y is younger
    than X", "X is the older one", "The older one is X" or a bare "X" all name X; a
    comparison with anyone but the other of the two ("X is older than Z") names no one;
  - for the passive, the whole passive sentence is in a sentence that is not a question.

  The response is correct when it asserts the right answer, asserts no other and does not
  deny the right one. It is *wrong* when it asserts another answer. Denials alone are no
  answer ("Nabo does not have a mouse." says nothing about the pet).
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

What the rule does **not** check (its limits, by design: it reads words, not grammar):

- the attribute beyond the answer's type: "Nabo lives in a red house." claims the colour
  red, and "Nabo has 3 cats." claims the age 3;
- who a pronoun means, past the last person named ("Misi has a cat. She ..." is Misi);
- compound subjects: "Nabo and Misi live in Rushcombe." is read as a claim about Misi;
- meaning that takes more than word order: double negatives, "not only", hedges ("maybe a
  goat"), answers implied through someone else ("Misi lives in Corton, like Nabo.");
- questions without a "?" that open like a statement ("You mean Nabo's goat"), and
  statements that open like a question ("Where Nabo lives is Corton." answers nothing);
- for "who is older", claims through ages ("Nabo is 44 and Misi is 30.") and "the older of
  Nabo and Misi is Nabo";
- for the passive, anything but the exact phrase (a negated phrase is simply not it);
- whether the rest of the response is true or sensible: padding is judged by style only.
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
_TENS = "twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety"
_UNITS = "one|two|three|four|five|six|seven|eight|nine"
# A number in digits or words; "thirty six" and "thirty-six" are one number.
_NUMBER = re.compile(rf"\d+|\b(?:{_TENS})(?:[\s-]+(?:{_UNITS}))?\b|[a-z]+(?:-[a-z]+)?", re.I)
_SENTENCE_END = re.compile(r"[.!?]['\"]?$")
# Words a sentence cannot end on: a response that stops on one was cut off.
_DANGLING = frozenset("a an the is are was of in by than to and or at".split())
_FILLER_PIECES = tuple(piece.lower() for pair in idata.FILLERS for piece in pair)

# Word lists of the claim reading (see the module docstring).
_FACT_KINDS = ("town", "pet", "colour", "age")
_CLAUSE_BREAK = re.compile(r"[,;:]|\b(?:and|but|or)\b", re.I)
_NEGATIONS = frozenset("not no never nor neither none cannot".split())
_WH = frozenset("what which where who whose how why".split())
_AUX = frozenset("does do did is are was can will would could should".split())
_BARE = frozenset("a an the answer is it it's its this that".split())  # "the answer is X"
_AGE = frozenset("years year old".split())  # "44 years old" is a bare answer too
_OWNED = frozenset(w.lower() for w in (*ANIMALS, *COLOURS))  # "Nabo's goat"
_PRONOUNS = frozenset("he she they it his her their its".split())
_POSSESSIVES = frozenset("his her their its".split())
_ATTRIBUTES = frozenset("pet home house town favourite favorite colour color age".split())
# A name right after one of these is not the subject: "someone near Nabo", "than Nabo".
_RELATIONS = frozenset("near with to from by beside than for like about behind next".split())
_OLDER = {"older": True, "elder": True, "oldest": True, "eldest": True}
_OLDER |= {"younger": False, "youngest": False}


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


def _people(entry: dict, world: World) -> list[str]:
    """The people the entry asks about: its ``people`` field, else the names in the question."""
    if entry.get("people"):
        return list(entry["people"])
    question = f"{entry['instruction']} {entry['input']}"
    return [p.name for p in world.people if re.search(rf"\b{p.name}\b", question)]


def answer_vocabulary(kind: str, world: World, entry: dict) -> list[str] | None:
    """The answers a response to ``kind`` could give (None: numbers, handled apart)."""
    if kind == "town":
        return list(world.towns)
    if kind == "pet":
        return list(ANIMALS)
    if kind == "colour":
        return list(COLOURS)
    if kind == "older":
        return _people(entry, world)
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


def _mention_spans(text: str, vocabulary: list[str] | None) -> list[tuple[str, str, int]]:
    """Answers of the kind's type in ``text``, in order: ``(normal form, as written, start)``
    (the normal form is lower case, and a digit string for numbers)."""
    if vocabulary is None:
        found = []
        for m in _NUMBER.finditer(text):
            word = re.sub(r"[\s-]+", "-", m.group().lower())
            if word.isdigit():
                found.append((str(int(word)), m.group(), m.start()))
            elif word in _NUMBER_WORDS:
                found.append((str(_NUMBER_WORDS[word]), m.group(), m.start()))
        return found
    words = sorted({v.lower() for v in vocabulary}, key=len, reverse=True)
    if not words:
        return []
    pattern = r"\b(" + "|".join(re.escape(w) for w in words) + r")\b"
    return [(m.group().lower(), m.group(), m.start()) for m in re.finditer(pattern, text, re.I)]


def answers_in(text: str, vocabulary: list[str] | None) -> list[str]:
    """Answers of the kind's type mentioned in ``text``, in order (numbers as digit strings)."""
    return [normal for normal, _, _ in _mention_spans(text, vocabulary)]


def normal_answer(entry: dict, answer: str, world: World | None = None) -> str:
    """``answer`` in the normal form the gold rule compares (lower case; numbers as digits)."""
    vocabulary = answer_vocabulary(entry["kind"], world or _default_world(), entry)
    spans = answers_in(answer, vocabulary) if vocabulary is None else []
    return spans[0] if spans else answer.lower()


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower().replace("\u2019", "'"))


def _negation(word: str) -> bool:
    return word in _NEGATIONS or word.endswith("n't")


def _question(sentence: str, names: set[str]) -> bool:
    """Whether ``sentence`` asks rather than tells: it ends with "?", opens with "what",
    "where"..., or opens with a verb before its subject ("Does Nabo have a goat")."""
    words = _words(sentence)
    if sentence.rstrip("'\" ").endswith("?") or words[0] in _WH:
        return True
    subject = words[1] if len(words) > 1 else ""
    return words[0] in _AUX and (subject in names or subject in _PRONOUNS or subject in _BARE)


def _sentences(response: str, names: set[str] = frozenset()) -> list[str]:
    """The sentences of ``response`` that are not questions (a question answers nothing)."""
    sentences = re.split(r"(?<=[.!?])\s+|\n+", response.strip())
    return [s for s in sentences if _words(s) and not _question(s, names)]


def _clauses(sentence: str) -> list[str]:
    return [c for c in _CLAUSE_BREAK.split(sentence) if c.strip()]


def _bare(clause: str, spans: list[tuple[str, str, int]]) -> bool:
    """Whether ``clause`` is at most one answer and a few empty words ("The answer is X.")."""
    rest = clause
    for _, surface, start in reversed(spans):
        rest = rest[:start] + " " + rest[start + len(surface) :]
    return len(spans) <= 1 and all(w in _BARE | _AGE or _negation(w) for w in _words(rest))


def _subject(words: list[str], names: set[str]) -> str | None:
    """Who a clause is about: its first person named (lower case), ``"pronoun"`` for one,
    ``"other"`` when that first person is named only as a relation ("Nabo's friend", "the
    friend of Nabo", "near Nabo"), None when it names no one."""
    for i, word in enumerate(words):
        base = word[:-2] if word.endswith("'s") else word
        if base not in names and word not in _PRONOUNS:
            continue
        before = words[i - 1] if i else ""
        after = words[i + 1] if i + 1 < len(words) else ""
        owner = word.endswith("'s") or word in _POSSESSIVES
        if before in _RELATIONS or (before == "of" and (i < 2 or words[i - 2] not in _ATTRIBUTES)):
            return "other"
        if owner and after and after not in _ATTRIBUTES and after not in _OWNED:
            return "other"
        return "pronoun" if word in _PRONOUNS else base
    return None


def _older_claim(clause: str, pair: list[str]) -> tuple[str, bool] | None:
    """(the name ``clause`` says is the older, whether it denies it), or None."""
    words, low = _words(clause), [p.lower() for p in pair]
    named = [(i, w) for i, w in enumerate(words) if w in low]
    comparative = next((i for i, w in enumerate(words) if w in _OLDER), None)
    if comparative is None:  # a bare name: "Nabo", "The answer is Nabo."
        if len(named) != 1 or not all(w in _BARE or _negation(w) or w in low for w in words):
            return None
        return named[0][1], any(_negation(w) for w in words)
    k = comparative
    before = [w for i, w in named if i < k]
    after = [w for i, w in named if i > k and words[i - 1] != "than"]
    subject = before[-1] if before else after[0] if after else None  # "The older one is X"
    if subject is None:
        return None
    other = next((p for p in low if p != subject), None)
    if words[k + 1 : k + 2] == ["than"] and k + 2 < len(words) and words[k + 2] != other:
        return None  # "X is older than X", "X is older than Z": not about the two
    older = subject if _OLDER[words[k]] else other
    return (older, any(_negation(w) for w in words[:k])) if older else None


def _older_claims(response: str, pair: list[str], names: set[str]) -> tuple[list, set[str]]:
    """``_claims`` for "who is older": the names the response says are the older."""
    asserted, denied = [], set()
    for sentence in _sentences(response, names):
        for clause in _clauses(sentence):
            claim = _older_claim(clause, pair)
            if claim and claim[1]:
                denied.add(claim[0])
            elif claim:  # the name as written, if it is written ("Y is younger" is not)
                written = re.search(rf"\b{re.escape(claim[0])}\b", response, re.I)
                name = next(p for p in pair if p.lower() == claim[0])
                asserted.append((claim[0], written.group() if written else name))
    return asserted, denied


def _claims(entry: dict, response: str, world: World) -> tuple[list[tuple[str, str]], set[str]]:
    """What ``response`` claims: the answers it asserts, as ``(normal, as written)`` in order,
    and the normal forms of those it denies. Not for the passive."""
    kind, people = entry["kind"], _people(entry, world)
    names = {p.name.lower() for p in world.people} | {p.lower() for p in people}
    if kind == "older":
        return _older_claims(response, people, names)
    vocabulary = answer_vocabulary(kind, world, entry)
    target = normal_answer(entry, entry["answer"], world)
    asked = set(answers_in(f"{entry['instruction']} {entry['input']}", vocabulary)) - {target}
    person = people[0].lower() if kind in _FACT_KINDS and people else None
    asserted, denied = [], set()
    last = person  # whom a pronoun means: the last person named
    for sentence in _sentences(response, names):
        about = False
        for i, clause in enumerate(_clauses(sentence)):
            spans = [s for s in _mention_spans(clause, vocabulary) if s[0] not in asked]
            if person:  # is the clause about the person asked?
                subject = _subject(_words(clause), names)
                if subject is None:  # the rest of the sentence, or a bare answer
                    about = about if i else _bare(clause, spans)
                else:
                    last = last if subject in ("pronoun", "other") else subject
                    about = (last if subject == "pronoun" else subject) == person
                if not about:
                    continue
            for normal, surface, start in spans:
                if any(_negation(w) for w in _words(clause[:start])):
                    denied.add(normal)
                else:
                    asserted.append((normal, surface))
    return asserted, denied


def mentions(entry: dict, response: str, world: World | None = None) -> list[str]:
    """The answers ``response`` claims, which the gold rule grades, as written there, in order:
    asserted (not denied, not asked back), about the person asked, less those the question
    itself contains (except the right one). Empty for the passive kind, which is graded as a
    whole phrase."""
    if entry["kind"] == "passive":
        return []
    return [surface for _, surface in _claims(entry, response, world or _default_world())[0]]


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
        names = {p.name.lower() for p in world.people}
        said = [_normal(sentence) for sentence in _sentences(response, names)]
        correct = any(_normal(answer) in s for s in said)
        wrong = not correct and any(re.search(r"\bby \w", s) for s in said)
    else:
        asserted, denied = _claims(entry, response, world)
        target = normal_answer(entry, answer, world)
        correct = bool(asserted) and target not in denied
        correct = correct and all(normal == target for normal, _ in asserted)
        wrong = bool(asserted) and not correct
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
