"""Instruction data from the tiny world: questions with answers that can be checked.

Each entry has the Alpaca fields (``instruction``, ``input``, ``output``) and what later
chapters need to check and rank responses:

- ``kind``: the task (``town``, ``pet``, ``colour``, ``age``, ``older``, ``arithmetic``,
  ``plural``, ``opposite``, ``spelling``, ``passive``, ``kind``, ``counting``);
- ``answer``: the core of a right answer (``"Rushcombe"``, ``"9"``, ``"kites"``);
- ``full``: the answer as one complete sentence (``"Nabo lives in Rushcombe."``);
- ``style``: how ``output`` is written (below); ``template``: which phrasing was used;
- ``people``: the people the prompt is about; ``split``: ``train``, ``test`` or ``val``.

**Two styles.** Real instruction data is collected from several sources, each with its own
house style. Here each phrasing of a question is one "source": phrasings 0 and 3 answer
in the *preferred* style (one direct, complete, polite sentence), phrasing 1 *curtly* (the
bare answer, no sentence) and phrasing 2 *padded* with filler around the sentence. A model
fine-tuned on this data learns all three, and which one it uses depends on how it is asked:
exactly the situation preference tuning (chapters 9-11) is for. ``shared.gold`` tells the
styles apart by rule.

**Held-out people.** 30% of the people never appear in the training split, so questions
about them can only be answered from what pretraining stored.

**Written the way pretraining wrote.** The tokenizer learned its merges on the tiny world's
text, where a word like ``goat`` always follows a space: `` goat`` is one token, while
``goat`` at the start of a line is three pieces (``g``, ``o``, ``at``) the model has hardly
ever seen. So every word a model must read follows a space: a word to work on is given as
``Word: horse`` and a list as ``List: key, rabbit``; only sentences start a line, as they
do in the pretraining text. (Responses get the same treatment in ``shared.sft``: the
response follows the template after a space.)
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict, dataclass

from shared.checks import check_int
from shared.tiny_world import ANIMALS, COLOURS, OBJECT_KINDS, World, article, number_words, plural

__all__ = [
    "FILLERS",
    "KINDS",
    "STYLES",
    "Entry",
    "check_entries",
    "make_instruction_data",
    "truth_statements",
]

STYLES = ("preferred", "curt", "padded")
HOUSE_STYLE = ("preferred", "curt", "padded", "preferred")  # by phrasing (template) index
# Filler for the padded style: (opening, closing) per phrasing that uses it. No filler holds a
# number, a name or any other possible answer, so it never changes what a response claims.
FILLERS = (
    ("Sure, I can help with that question.", "I hope this answer is useful to you!"),
    ("Well, let me think about this for a moment.", "Please ask me if you want to know more."),
)
WORD_LABEL, LIST_LABEL = "Word:", "List:"  # how a word or a list to work on is given
HELD_OUT_SHARE = 0.3
SPLIT_SHARES = {"train": 0.85, "test": 0.10, "val": 0.05}
MIN_PER_KIND = {"test": 10, "val": 5}  # so that every kind's test accuracy means something

# ------------------------------------------------------------------ phrasings (data) ----
# Four phrasings per kind; the index is the "source" and fixes the house style above.
QUESTIONS = {
    "town": (
        "Where does {name} live?",
        "Which town is {name}'s home?",
        "In which town does {name} live?",
        "Name the town where {name} lives.",
    ),
    "pet": (
        "What pet does {name} have?",
        "What kind of pet does {name} keep?",
        "Which animal is {name}'s pet?",
        "Tell me what {name}'s pet is.",
    ),
    "colour": (
        "What is {name}'s favourite colour?",
        "Which colour does {name} like best?",
        "What colour does {name} like most?",
        "Name {name}'s favourite colour.",
    ),
    "age": (
        "How old is {name}?",
        "What is {name}'s age?",
        "How many years old is {name}?",
        "Tell me the age of {name}.",
    ),
    "older": (
        "Who is older, {a} or {b}?",
        "Which of {a} and {b} is older?",
        "Of {a} and {b}, who is older?",
        "Tell me who is older: {a} or {b}.",
    ),
    "arithmetic": (
        "What is {a} {op} {b}?",
        "Work out {a} {op} {b}.",
        "Calculate {a} {op} {b}.",
        "How much is {a} {op} {b}?",
    ),
    "plural": (
        "What is the plural of the word below?",
        "Give the plural form of this noun.",
        "Write this word in the plural.",
        "How do you write more than one of this?",
    ),
    "opposite": (
        "What is the opposite of the word below?",
        "Give an antonym of this word.",
        "Which word means the opposite of this one?",
        "Name the opposite of this word.",
    ),
    "spelling": (
        "Identify the correct spelling of the following word.",  # the lecture's example
        "Correct the spelling of this word.",
        "Fix the spelling mistake in this word.",
        "How is this word spelled correctly?",
    ),
    "passive": (
        "Rewrite this sentence in the passive voice.",
        "Convert the active sentence to passive.",  # the lecture's example
        "Change this sentence to the passive voice.",
        "Turn this sentence into the passive.",
    ),
    "kind": (
        "What kind of thing is the item below?",
        "Which group does this item belong to?",
        "Classify this item by its kind.",
        "Say what sort of thing this is.",
    ),
    "counting": (
        "How many items are in this list?",
        "Count the things in this list.",
        "How many words does this list have?",
        "Tell me how many items this list holds.",
    ),
}
KINDS = tuple(QUESTIONS)
FACT_KINDS = ("town", "pet", "colour", "age")
# Entries per kind that is not about a person's facts (the facts come from the people).
COUNTS = {
    "older": 320,
    "arithmetic": 400,
    "plural": 300,
    "opposite": 300,
    "spelling": 200,
    "passive": 400,
    "kind": 300,
    "counting": 200,
}
OPPOSITES = (
    ("big", "small"), ("hot", "cold"), ("fast", "slow"), ("happy", "sad"), ("up", "down"),
    ("day", "night"), ("wet", "dry"), ("full", "empty"), ("long", "short"), ("early", "late"),
    ("high", "low"), ("hard", "soft"), ("strong", "weak"), ("loud", "quiet"),
    ("clean", "dirty"), ("near", "far"), ("thick", "thin"), ("open", "closed"),
    ("light", "dark"), ("old", "young"),
)  # fmt: skip
# Active verb -> past participle, for the passive voice.
VERBS = {
    "feeds": "fed", "washes": "washed", "finds": "found", "carries": "carried",
    "paints": "painted", "brings": "brought", "sees": "seen", "holds": "held",
    "takes": "taken", "draws": "drawn", "calls": "called", "hides": "hidden",
}  # fmt: skip
KIND_NAMES = {"toy": "toy", "tool": "tool", "container": "container", "clothing": "garment"}
# Words whose spelling the model is asked to fix: all of them occur in the pretraining text.
SPELLING_WORDS = tuple(ANIMALS) + COLOURS + tuple(o for k in OBJECT_KINDS.values() for o in k)


@dataclass
class Entry:
    instruction: str
    input: str
    output: str
    kind: str
    answer: str
    full: str
    style: str
    template: int
    people: list[str]
    split: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _styled(full: str, curt: str, template: int) -> tuple[str, str]:
    """(output, style) of an answer in the house style of phrasing ``template``."""
    style = HOUSE_STYLE[template]
    if style == "curt":
        return curt, style
    if style == "padded":
        opening, closing = FILLERS[template % len(FILLERS)]
        return f"{opening} {full} {closing}", style
    return full, style


def _entry(kind, template, question, input_, answer, full, curt, people=()) -> Entry:
    output, style = _styled(full, curt, template)
    return Entry(question, input_, output, kind, answer, full, style, template, list(people))


# ------------------------------------------------------------------------ generators ----
def _fact(person, kind: str, template: int) -> Entry:
    value = getattr(person, kind)
    question = QUESTIONS[kind][template].format(name=person.name)
    full = {
        "town": "{name} lives in {value}.",
        "pet": "{name}'s pet is a {value}.",  # every animal starts with a consonant
        "colour": "{name}'s favourite colour is {value}.",
        "age": "{name} is {value} years old.",
    }[kind].format(name=person.name, value=value)
    return _entry(kind, template, question, "", str(value), full, str(value), [person.name])


def _older(a, b, template: int) -> Entry:
    old, young = (a, b) if a.age > b.age else (b, a)
    question = QUESTIONS["older"][template].format(a=a.name, b=b.name)
    full = f"{old.name} is older than {young.name}."
    return _entry("older", template, question, "", old.name, full, old.name, [a.name, b.name])


def _arithmetic(rng: random.Random, template: int) -> Entry:
    if rng.random() < 0.5:
        a, b = rng.randint(1, 10), rng.randint(1, 10)
        op, c = "plus", a + b
    else:  # the result never equals an operand, so a right answer is never in the question
        a = rng.randint(3, 10)
        b = rng.choice([x for x in range(1, a) if 2 * x != a])
        op, c = "minus", a - b
    words = rng.random() < 0.5
    say = number_words if words else str
    question = QUESTIONS["arithmetic"][template].format(a=say(a), op=op, b=say(b))
    full = f"The answer is {say(c)}."
    return _entry("arithmetic", template, question, "", say(c), full, say(c))


def _plural(noun: str, template: int) -> Entry:
    many = plural(noun)
    full = f"The plural is {many}."
    q = QUESTIONS["plural"][template]
    return _entry("plural", template, q, f"{WORD_LABEL} {noun}", many, full, many)


def _opposite(word: str, other: str, template: int) -> Entry:
    full = f"The opposite is {other}."
    q = QUESTIONS["opposite"][template]
    return _entry("opposite", template, q, f"{WORD_LABEL} {word}", other, full, other)


def misspell(word: str, rng: random.Random) -> str:
    """A plausible misspelling of ``word``: a letter doubled, dropped, swapped or changed."""
    if not isinstance(word, str):
        raise TypeError(f"word must be a str, got {word!r}")
    if not word:
        raise ValueError("cannot misspell the empty word")
    for _ in range(100):
        i = rng.randrange(1, len(word)) if len(word) > 1 else 0
        how = rng.choice(("double", "drop", "swap", "vowel"))
        if how == "double":
            wrong = word[:i] + word[i] + word[i:]
        elif how == "drop" and len(word) > 3:
            wrong = word[:i] + word[i + 1 :]
        elif how == "swap" and i < len(word) - 1:
            wrong = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        elif how == "vowel" and word[i] in "aeiou":
            wrong = word[:i] + rng.choice([v for v in "aeiou" if v != word[i]]) + word[i + 1 :]
        else:
            continue
        if wrong != word:
            return wrong
    raise ValueError(f"could not misspell {word!r}")


def _spelling(word: str, rng: random.Random, template: int) -> Entry:
    wrong = misspell(word, rng)
    full = f"The correct spelling is {word}."
    q = QUESTIONS["spelling"][template]
    return _entry("spelling", template, q, f"{WORD_LABEL} {wrong}", word, full, word)


def _passive(person, verb: str, thing: str, template: int) -> Entry:
    active = f"{person.name} {verb} the {thing}."
    full = f"The {thing} is {VERBS[verb]} by {person.name}."
    curt = full[:-1].lower().replace(person.name.lower(), person.name)
    q = QUESTIONS["passive"][template]
    return _entry("passive", template, q, active, full[:-1], full, curt, [person.name])


def _kind(thing: str, template: int) -> Entry:
    if thing in ANIMALS:
        kind = "animal"
    else:
        kind = next(KIND_NAMES[k] for k, things in OBJECT_KINDS.items() if thing in things)
    full = f"It is {article(kind)} {kind}."
    q = QUESTIONS["kind"][template]
    return _entry("kind", template, q, f"{WORD_LABEL} {thing}", kind, full, kind)


def _counting(rng: random.Random, things: list[str], template: int) -> Entry:
    items = rng.sample(things, rng.randint(2, 6))
    n = len(items)
    full = f"There are {n} items in the list."
    q = QUESTIONS["counting"][template]
    return _entry("counting", template, q, f"{LIST_LABEL} {', '.join(items)}", str(n), full, str(n))


# ------------------------------------------------------------------------- the data ----
def make_instruction_data(world: World, seed: int = 0) -> list[dict]:
    """Every instruction entry, with its split; the same bytes for the same seed.

    Facts: each training-side person gets two phrasings per attribute, each held-out person
    one (those go to test and validation only). The other kinds come in the numbers of
    ``COUNTS``. Prompts are unique, so no test prompt is also a training prompt.
    """
    _check_world(world)
    rng = random.Random(check_int(seed, "seed", 0))
    names = [p.name for p in world.people]
    held_out = set(rng.sample(names, round(HELD_OUT_SHARE * len(names))))
    seen = [p for p in world.people if p.name not in held_out]
    hidden = [p for p in world.people if p.name in held_out]
    _check_older_pairs(seen, hidden)

    entries: list[Entry] = []
    for p in seen:
        for kind in FACT_KINDS:
            for template in rng.sample(range(4), 2):
                entries.append(_fact(p, kind, template))
    for p in hidden:
        for kind in FACT_KINDS:
            entries.append(_fact(p, kind, rng.randrange(4)))

    def pair(pool_a, pool_b):
        while True:
            a, b = rng.choice(pool_a), rng.choice(pool_b)
            if a is not b and a.age != b.age:
                return (a, b) if rng.random() < 0.5 else (b, a)

    for i in range(COUNTS["older"]):
        # one pair in eight involves a held-out person (test and validation only)
        a, b = pair(seen, hidden) if i % 8 == 0 else pair(seen, seen)
        entries.append(_older(a, b, rng.randrange(4)))
    for _ in range(COUNTS["arithmetic"]):
        entries.append(_arithmetic(rng, rng.randrange(4)))
    nouns = list(ANIMALS) + [o for k in OBJECT_KINDS.values() for o in k]
    for _ in range(COUNTS["plural"]):
        entries.append(_plural(rng.choice(nouns), rng.randrange(4)))
    for _ in range(COUNTS["opposite"]):
        a, b = rng.choice(OPPOSITES)
        a, b = (a, b) if rng.random() < 0.5 else (b, a)
        entries.append(_opposite(a, b, rng.randrange(4)))
    for _ in range(COUNTS["spelling"]):
        entries.append(_spelling(rng.choice(SPELLING_WORDS), rng, rng.randrange(4)))
    things = [o for k in ("toy", "tool", "container") for o in OBJECT_KINDS[k]] + list(ANIMALS)
    for _ in range(COUNTS["passive"]):
        verb, thing = rng.choice(sorted(VERBS)), rng.choice(things)
        entries.append(_passive(rng.choice(seen), verb, thing, rng.randrange(4)))
    classifiable = list(ANIMALS) + [o for k in KIND_NAMES for o in OBJECT_KINDS[k]]
    for _ in range(COUNTS["kind"]):
        entries.append(_kind(rng.choice(classifiable), rng.randrange(4)))
    for _ in range(COUNTS["counting"]):
        entries.append(_counting(rng, nouns, rng.randrange(4)))

    unique: dict[tuple[str, str], Entry] = {}
    for e in entries:  # the first entry of a repeated prompt wins
        unique.setdefault((e.instruction, e.input), e)
    entries = list(unique.values())
    _assign_splits(entries, held_out, rng)
    return [e.to_dict() for e in entries]


def _check_world(world: World) -> None:
    if not isinstance(world, World):
        raise TypeError(f"world must be a tiny_world.World, got {type(world).__name__}")


def _check_older_pairs(seen: list, hidden: list) -> None:
    """The "older" questions draw two people of different ages, both from outside the
    held-out share or one from each side, until they find them: raise instead of looping
    forever when no such pair exists (a world of 2 people has 1 person outside)."""
    ages = {p.age for p in seen}
    if len(ages) < 2 or not any(ages - {p.age} for p in hidden):
        raise ValueError(
            f"make_instruction_data needs a world with at least 3 people "
            f"(make_world(n_people=3) or more; the data uses 120): it asks who is older of "
            f"two people of different ages, outside the held-out {HELD_OUT_SHARE:.0%} and "
            f"across it, but this world has {len(seen)} people outside with "
            f"{len(ages)} different age(s) and {len(hidden)} held out"
        )


def _assign_splits(entries: list[Entry], held_out: set[str], rng: random.Random) -> None:
    """85/10/5 overall; every entry about a held-out person goes to test (2/3) or val (1/3).

    The remaining test and validation places are filled kind by kind in proportion, so that
    every kind has questions in the test split.
    """
    n = len(entries)
    targets = {s: round(share * n) for s, share in SPLIT_SHARES.items() if s != "train"}
    hidden = [e for e in entries if held_out & set(e.people)]
    rng.shuffle(hidden)
    cut = round(len(hidden) * 2 / 3)
    for e in hidden[:cut]:
        e.split = "test"
    for e in hidden[cut:]:
        e.split = "val"
    rest = [e for e in entries if not e.split]
    by_kind: dict[str, list[Entry]] = {}
    for e in rest:
        by_kind.setdefault(e.kind, []).append(e)
    need = {s: targets[s] - sum(e.split == s for e in hidden) for s in targets}
    for split in ("test", "val"):
        share = need[split] / len(rest)
        for kind in KINDS:
            pool = [e for e in by_kind.get(kind, []) if not e.split]
            rng.shuffle(pool)
            take = max(MIN_PER_KIND[split], round(share * len(by_kind.get(kind, []))))
            for e in pool[:take]:
                e.split = split
    for e in entries:
        e.split = e.split or "train"


# ------------------------------------------------------------------ classification ----
def truth_statements(world: World, n: int, seed: int = 0) -> list[tuple[str, int]]:
    """``n`` sentences about people's facts, half true (label 1) and half false (label 0).

    A false sentence gives a person another person's value of the same attribute, so true
    and false sentences use the same words and only knowledge of the world separates them.
    """
    _check_world(world)
    n = check_int(n, "n", 0)
    rng = random.Random(check_int(seed, "seed", 0))
    out = []
    for i in range(n):
        p = rng.choice(world.people)
        kind = rng.choice(FACT_KINDS)
        value = getattr(p, kind)
        if i % 2 == 1:
            others = [getattr(q, kind) for q in world.people if getattr(q, kind) != value]
            if not others:
                raise ValueError(
                    f"every person has the same {kind} ({value!r}), so no false statement "
                    "about it can be made: use a world with more people or towns"
                )
            value = rng.choice(others)
        sentence = _fact(p, kind, 0).full.replace(str(getattr(p, kind)), str(value))
        out.append((sentence, int(i % 2 == 0)))
    return out


# ---------------------------------------------------------------------- validation ----
REQUIRED_FIELDS = ("instruction", "input", "output")


def check_entries(entries, required: tuple[str, ...] = REQUIRED_FIELDS) -> None:
    """Raise a ValueError naming the entry's index and field if any entry is malformed.

    Every entry must be a dict whose ``required`` fields are strings (``input`` may be
    empty); ``instruction`` and ``output`` must not be empty.
    """
    if isinstance(entries, (str, bytes)) or not hasattr(entries, "__len__"):
        raise TypeError(f"entries must be a list of dicts, got {type(entries).__name__}")
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise ValueError(f"entry {i} must be a dict, got {type(e).__name__}")
        for field in required:
            if field not in e:
                raise ValueError(f"entry {i} has no {field!r} field")
            if not isinstance(e[field], str):
                raise ValueError(
                    f"entry {i}: field {field!r} must be a str, got {type(e[field]).__name__}"
                )
            if field != "input" and not e[field].strip():
                raise ValueError(f"entry {i}: field {field!r} is empty")


def summary(entries: list[dict]) -> Counter:
    """How many entries per (split, kind)."""
    return Counter((e["split"], e["kind"]) for e in entries)
