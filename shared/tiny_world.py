"""A seeded synthetic world of invented people, and the simple English corpus about it.

Why invent a world instead of downloading text? Because every later chapter needs a task
whose answer we can check. Each person has exactly four facts (town, pet, favourite
colour, age), so pretraining is measured by completing ``"Nabo lives in"`` with
``" Rushcombe"`` (seed 0), instruction tuning by questions about people held out of the training set,
and reward models or judges by answers that are known to be right or wrong.

Everything is drawn from ``random.Random(seed)`` instances (never the global generator,
never the order of a set or a hash), so the same seed gives the same bytes on every machine.

>>> world = make_world(seed=0)
>>> probe = fact_probes(world)[0]
>>> probe.prompt + probe.answer in make_splits(world, seed=0)["train"]
True
"""

from __future__ import annotations

import operator
import random
import re
from dataclasses import dataclass, field

from shared.checks import check_int, is_int

ENDOFTEXT = "<|endoftext|>"
ATTRIBUTES = ("town", "pet", "colour", "age")
TRAIN_CHARS = 4_500_000
VAL_CHARS = 250_000

# ---------------------------------------------------------------- vocabularies (data) ----
# Animals start with a consonant so that "Nabo's pet is a" is always followed by the answer.
# Each animal: (plural, what it does in a story, what it can do).
ANIMALS = {
    "cat": ("cats", "purrs", "climb trees"),
    "dog": ("dogs", "barks", "fetch a stick"),
    "rabbit": ("rabbits", "hops", "dig holes"),
    "horse": ("horses", "neighs", "run fast"),
    "goat": ("goats", "bleats", "climb rocks"),
    "parrot": ("parrots", "talks", "fly"),
    "hamster": ("hamsters", "runs in its wheel", "hide food in its cheeks"),
    "turtle": ("turtles", "walks slowly", "swim"),
    "frog": ("frogs", "croaks", "jump far"),
    "mouse": ("mice", "squeaks", "hide in small holes"),
    "duck": ("ducks", "quacks", "swim"),
    "pony": ("ponies", "trots", "pull a small cart"),
}
COLOURS = ("red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "grey", "white")
# Things in the real world whose colour everyone agrees on (general-knowledge sentences).
NATURE_COLOURS = (
    ("Grass", "green"),
    ("Snow", "white"),
    ("A clear sky", "blue"),
    ("A ripe lemon", "yellow"),
    ("A carrot", "orange"),
    ("Wet mud", "brown"),
    ("A ripe plum", "purple"),
    ("A strawberry", "red"),
)
# Objects grouped by kind; each kind has one true general-knowledge sentence.
OBJECT_KINDS = {
    "toy": ("kite", "ball", "doll", "puzzle", "marble", "drum"),
    "tool": ("hammer", "brush", "shovel", "rake", "ladder", "broom"),
    "container": ("basket", "box", "jar", "bag", "bucket", "cup", "bottle"),
    "clothing": ("hat", "coat", "scarf", "glove", "boot", "sock"),
    "thing": ("lamp", "candle", "book", "map", "key", "shell", "feather"),
}
KIND_SENTENCES = {
    "toy": "{A} is a toy, and children like to play with {plural}.",
    "tool": "{A} is a tool that helps people work.",
    "container": "{A} is a container, so you can put things in it.",
    "clothing": "{A} is something you wear.",
    "thing": "{A} is a thing you can carry in your hands.",
}
POSSESSIVE = {"she": "her", "he": "his"}
GARMENTS = ("hat", "coat", "scarf")
PLACES = ("park", "market", "river", "bridge", "library", "bakery", "garden", "square", "pond")
SPOTS = ("On the table", "In the kitchen", "In the shed", "By the door", "On the shelf")
TIMES = ("morning", "afternoon", "evening")
WEATHER = ("sunny", "windy", "rainy", "cold", "warm", "quiet")
# Towns are compounds of two parts; no part is a colour or an animal.
TOWN_STARTS = ("Mill", "Ash", "Oak", "Stone", "Elm", "Fern", "Hazel", "Thorn", "Bram")
TOWN_STARTS += ("Marsh", "Wil", "Bell", "Hart", "Lark", "Wren", "Rush", "Cor", "Pen")
TOWN_ENDS = ("brook", "hill", "ford", "field", "wick", "ton", "bury", "dale", "mere", "stead")
TOWN_ENDS += ("haven", "moor", "well", "combe")
# Names are built from syllables; the blocklist removes the ones that are English words.
ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
CLUSTERS = ("br", "dr", "tr", "gr")
VOWELS = ("a", "e", "i", "o", "a", "i", "o", "u")  # repeats make a, i, o more common
FINAL_VOWELS = ("a", "i", "o")  # no final e or u: that is where most English words are
CODAS = ("n", "l")
NOT_NAMES = frozenset(
    """bran gran grin brin data sofa soda polo memo halo lava tuba diva hero zero
    taco kilo mini hula gala coma cola lama mama papa dada nana tuna puma sumo silo solo logo
    limo lido hobo demo tiki deli pita feta beta zeta meta saga toga nova bola veto dodo bozo
    lira rota soma pupa sari sago tapa kava nada mesa pika koto lego soba kata hola gaga
    banana tomato potato salami safari bikini panini bolero libido mimosa medusa kimono
    domino merino pagoda sonata retina marina patina farina sahara bravo drama""".split()
)

# -------------------------------------------------------------- fact templates (data) ----
# The first template of each attribute is the canonical one: the probe is its text up to
# the value, so "Nabo lives in" must always be followed by Nabo's town, everywhere.
FACT_TEMPLATES = {
    "town": (
        "{name} lives in {value}.",
        "{value} is the town where {name} lives.",
        "{name}'s home is in {value}.",
        "{name}'s house is in {value}.",
    ),
    "pet": (
        "{name}'s pet is a {value}.",
        "{name} has a pet {value}.",
        "{name} keeps a {value} as a pet.",
        "{name} looks after a pet {value}.",
    ),
    "colour": (
        "{name}'s favourite colour is {value}.",
        "{name} likes the colour {value} best.",
        "The favourite colour of {name} is {value}.",
        "Of all the colours, {name} likes {value} most.",
    ),
    "age": (
        "{name}'s age is {value}.",
        "{name} is {value} years old.",
        "{name} is {words} years old.",
        "The age of {name} is {value}.",
    ),
}
CANONICAL_SHARE = 0.4  # how often a fact is stated with its canonical (probe) template
DOC_KINDS = ("facts", "story", "general")
DOC_WEIGHTS = (0.4, 0.4, 0.2)

_SMALL = "zero one two three four five six seven eight nine ten eleven twelve thirteen".split()
_SMALL += "fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()


@dataclass(frozen=True)
class Person:
    """One person: a name and the four facts. ``pronoun`` ("she"/"he") is grammar only."""

    name: str
    town: str
    pet: str
    colour: str
    age: int
    pronoun: str


@dataclass(frozen=True)
class Fact:
    person: str
    attribute: str
    value: str | int


@dataclass(frozen=True)
class Probe:
    """A completion test: greedy decoding of ``prompt`` should produce ``answer``."""

    prompt: str
    answer: str
    person: str
    attribute: str


@dataclass(frozen=True)
class World:
    """The people and the vocabularies the corpus talks about."""

    seed: int
    people: tuple[Person, ...]
    towns: tuple[str, ...]
    animals: tuple[str, ...] = tuple(ANIMALS)
    colours: tuple[str, ...] = COLOURS
    objects: tuple[str, ...] = tuple(o for kind in OBJECT_KINDS.values() for o in kind)
    places: tuple[str, ...] = PLACES
    _by_name: dict[str, Person] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {p.name: p for p in self.people})
        if len(self._by_name) != len(self.people):
            raise ValueError("person names in a World must be unique")

    def person(self, name: str) -> Person:
        """The person called ``name``; KeyError naming it if there is no such person."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no person called {name!r} in this world") from None

    def facts(self) -> list[Fact]:
        """Every (person, attribute, value), people in world order, attributes in order."""
        return [Fact(p.name, a, getattr(p, a)) for p in self.people for a in ATTRIBUTES]

    def to_dict(self) -> dict:
        """A JSON-ready description (what ``data/tiny_world/world.json`` holds)."""
        people = [
            {"name": p.name, "pronoun": p.pronoun} | {a: getattr(p, a) for a in ATTRIBUTES}
            for p in self.people
        ]
        vocab = ("towns", "animals", "colours", "objects", "places")
        return {"seed": self.seed, "attributes": list(ATTRIBUTES), "people": people} | {
            name: list(getattr(self, name)) for name in vocab
        }


# ------------------------------------------------------------------- small helpers ----
def number_words(n: int) -> str:
    """0..99 written in English words: 34 -> "thirty-four"."""
    if not is_int(n):
        raise TypeError(f"number_words handles the ints 0..99, got {n!r}")
    n = operator.index(n)
    if not 0 <= n <= 99:
        raise ValueError(f"number_words handles 0..99, got {n}")
    if n < 20:
        return _SMALL[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens - 2] + (f"-{_SMALL[ones]}" if ones else "")


def plural(noun: str) -> str:
    """English plural of the nouns used here (animals have their own irregular plurals)."""
    _check_word(noun, "noun")
    if noun in ANIMALS:
        return ANIMALS[noun][0]
    if noun.endswith(("s", "x", "sh", "ch")):
        return noun + "es"
    return noun + "s"


def article(word: str) -> str:
    """ "a" or "an" for the word that follows it, by its first letter ("an Apple")."""
    _check_word(word, "word")
    return "an" if word[0].lower() in "aeiou" else "a"


def _check_word(word: str, name: str) -> None:
    if not isinstance(word, str):
        raise TypeError(f"{name} must be a str, got {word!r}")
    if not word:
        raise ValueError(f"{name} is empty: there is no word to write")


def count_of(n: int, noun: str, rng: random.Random) -> str:
    """ "3 kites" or "three kites" (digits and words both appear, so both are learned)."""
    n = check_int(n, "n", 0)
    number = str(n) if rng.random() < 0.5 else number_words(n)
    return f"{number} {noun if n == 1 else plural(noun)}"


def split_documents(text: str) -> list[str]:
    """The documents of a corpus, without the separators and surrounding newlines."""
    return [doc.strip() for doc in text.split(ENDOFTEXT) if doc.strip()]


# ----------------------------------------------------------------------- the world ----
def _check_seed(seed: int) -> int:
    """An int >= 0: ``random.Random`` seeds None from the clock, -1 as 1 and hashes others,
    so any other seed would not give the same bytes again (or would repeat another's)."""
    return check_int(seed, "seed", 0)


def _make_name(rng: random.Random) -> str:
    def syllable() -> str:
        return rng.choice(ONSETS) + rng.choice(VOWELS)

    shape = rng.choices(("cvcv", "cvcvcv", "ccvc", "ccvcv"), weights=(55, 25, 12, 8))[0]
    if shape == "ccvc":
        return rng.choice(CLUSTERS) + rng.choice(VOWELS) + rng.choice(CODAS)
    head = rng.choice(CLUSTERS) + rng.choice(VOWELS) if shape == "ccvcv" else syllable()
    middle = syllable() if shape == "cvcvcv" else ""
    return head + middle + rng.choice(ONSETS) + rng.choice(FINAL_VOWELS)


def _spread(values: tuple, n: int, rng: random.Random) -> list:
    """``n`` values where each one is used equally often (±1), in random order."""
    order = list(values)
    rng.shuffle(order)
    out = [order[i % len(order)] for i in range(n)]
    rng.shuffle(out)
    return out


def make_world(seed: int = 0, n_people: int = 120, n_towns: int = 16) -> World:
    """Invent ``n_people`` people with unique names, spread evenly over towns, pets and colours."""
    seed = _check_seed(seed)
    n_people = check_int(n_people, "n_people")
    n_towns = check_int(n_towns, "n_towns")
    if not 2 <= n_people <= 1000:  # stories need a second person
        raise ValueError(f"n_people must be in 2..1000, got {n_people}")
    if not 1 <= n_towns <= len(TOWN_STARTS):
        raise ValueError(f"n_towns must be in 1..{len(TOWN_STARTS)}, got {n_towns}")
    rng = random.Random(seed)
    towns = tuple(s + rng.choice(TOWN_ENDS) for s in rng.sample(TOWN_STARTS, n_towns))
    taken = set(NOT_NAMES) | set(ANIMALS) | set(COLOURS) | {t.lower() for t in towns}
    names: list[str] = []
    while len(names) < n_people:
        name = _make_name(rng)
        repeated = re.search(r"(..)\1", name)  # "mama", "tutu": too childish, often words
        if name not in taken and not repeated:
            taken.add(name)
            names.append(name.capitalize())
    columns = [_spread(values, n_people, rng) for values in (towns, tuple(ANIMALS), COLOURS)]
    people = tuple(
        Person(name, town, pet, colour, age=rng.randint(5, 90), pronoun=rng.choice(("she", "he")))
        for name, town, pet, colour in zip(names, *columns)
    )
    return World(seed=seed, people=people, towns=towns)


def fact_probes(world: World) -> list[Probe]:
    """One probe per fact, in the canonical phrasing: ("Nabo lives in", " Rushcombe")."""
    probes = []
    for fact in world.facts():
        template = FACT_TEMPLATES[fact.attribute][0]
        prompt = template[: template.index(" {value}")].format(name=fact.person)
        probes.append(Probe(prompt, f" {fact.value}", fact.person, fact.attribute))
    return probes


# ------------------------------------------------------------------------ documents ----
class _Deck:
    """Deals people in shuffled rounds so that everyone is written about equally often."""

    def __init__(self, people: tuple[Person, ...], rng: random.Random) -> None:
        self.people, self.rng, self.queue = list(people), rng, []

    def draw(self) -> Person:
        if not self.queue:
            self.queue = self.people[:]
            self.rng.shuffle(self.queue)
        return self.queue.pop()

    def other(self, person: Person) -> Person:
        return self.rng.choice([p for p in self.people if p is not person])


def state_fact(person: Person, attribute: str, rng: random.Random) -> str:
    """One true sentence about ``person``; the canonical template ``CANONICAL_SHARE`` of the time."""
    templates = FACT_TEMPLATES[attribute]
    template = templates[0] if rng.random() < CANONICAL_SHARE else rng.choice(templates[1:])
    value = getattr(person, attribute)
    words = number_words(value) if attribute == "age" else value
    return template.format(name=person.name, value=value, words=words)


def _compare(a: Person, b: Person, rng: random.Random) -> str:
    """A true sentence relating two people."""
    topic = rng.choice(ATTRIBUTES)
    if topic == "town":
        if a.town == b.town:
            return f"{a.name} and {b.name} both live in {a.town}."
        return f"{a.name} and {b.name} live in different towns."
    if topic == "pet":
        if a.pet == b.pet:
            return f"{a.name} and {b.name} both have a pet {a.pet}."
        return f"{a.name} has a {a.pet}, but {b.name} has a {b.pet}."
    if topic == "colour" and a.colour == b.colour:
        return f"{a.name} and {b.name} both like {a.colour}."
    if a.age == b.age:
        return f"{a.name} and {b.name} are the same age."
    old, young = (a, b) if a.age > b.age else (b, a)
    if rng.random() < 0.5:
        return f"{old.name} is older than {young.name}."
    return f"{old.name} is {count_of(old.age - young.age, 'year', rng)} older than {young.name}."


def _facts_document(rng: random.Random, deck: _Deck) -> str:
    first = deck.draw()
    people = [first, deck.other(first)] if rng.random() < 0.35 else [first]
    sentences = []
    for person in people:
        if rng.random() < 0.3:
            sentences.append(rng.choice(("This is {}.", "Here are some facts about {}.")))
            sentences[-1] = sentences[-1].format(person.name)
        attributes = list(ATTRIBUTES)
        rng.shuffle(attributes)
        for attribute in attributes[: rng.choice((2, 3, 4, 4, 4))]:
            sentences.append(state_fact(person, attribute, rng))
    if len(people) == 2:
        sentences.append(_compare(*people, rng))
    return " ".join(sentences)


class _Story:
    """Writes a story of 3 to 8 sentences; "she"/"he" only right after a sentence about them."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.sentences, self.last = rng, [], None

    def subject(self, person: Person, start: bool = True) -> str:
        """The name, or "she"/"he" if the previous sentence was about this person only."""
        if self.last is person and self.rng.random() < 0.7:
            return person.pronoun.capitalize() if start else person.pronoun
        return person.name

    def has_room(self) -> bool:
        return len(self.sentences) < 8

    def say(self, sentence: str, about: Person | None = None) -> None:
        self.sentences.append(sentence)
        self.last = about  # None after sentences with two people: "she" would be ambiguous


def _story_document(rng: random.Random, deck: _Deck) -> str:
    p = deck.draw()
    friend = deck.other(p) if rng.random() < 0.6 else None
    story, her = _Story(rng), POSSESSIVE
    place = rng.choice(PLACES)
    opening = rng.randrange(3)
    if opening == 0:
        story.say(
            f"One {rng.choice(TIMES)}, {p.name} walks {her[p.pronoun]} {p.pet} "
            f"to the {place} in {p.town}.",
            p,
        )
    elif opening == 1:
        story.say(
            f"On a {rng.choice(WEATHER)} day, {p.name} takes {her[p.pronoun]} {p.pet} "
            f"to the {place} in {p.town}.",
            p,
        )
    else:
        story.say(f"{p.name} lives in {p.town} with a pet {p.pet}.", p)
        story.say(
            f"One {rng.choice(TIMES)}, {story.subject(p, start=False)} goes to the {place}.", p
        )
    if rng.random() < 0.6:
        garment = rng.choice(GARMENTS)
        if rng.random() < 0.5:
            story.say(f"{story.subject(p)} wears {her[p.pronoun]} {p.colour} {garment}.", p)
        else:
            story.say(
                f"{story.subject(p)} puts on {article(p.colour)} {p.colour} {garment}, "
                f"because {p.colour} is {her[p.pronoun]} favourite colour.",
                p,
            )
    thing, count = rng.choice(OBJECT_KINDS[rng.choice(("toy", "container", "thing"))]), 0
    if rng.random() < 0.8:
        count = rng.randint(2, 9)
        story.say(
            f"Near the {place}, {story.subject(p, start=False)} finds {count_of(count, thing, rng)}.",
            p,
        )
        if count <= 6 and rng.random() < 0.3:
            numbers = ", ".join(number_words(i) for i in range(1, count + 1))
            story.say(f"{story.subject(p)} counts them: {numbers}.", p)
    if friend is not None:
        if friend.town == p.town:
            story.say(f"{friend.name}, who also lives in {p.town}, comes to see {p.name}.")
        else:
            story.say(f"{friend.name} comes from {friend.town} to see {p.name}.")
        if count:
            given = rng.randint(1, count - 1)
            story.say(
                f"{p.name} gives {count_of(given, thing, rng)} to {friend.name} "
                f"and keeps {count_of(count - given, thing, rng)}."
            )
        if rng.random() < 0.5 and story.has_room():
            story.say(f"{friend.name}'s {friend.pet} {ANIMALS[friend.pet][1]}.")
        if rng.random() < 0.4 and story.has_room():
            story.say(_compare(p, friend, rng))
    if (rng.random() < 0.5 and story.has_room()) or len(story.sentences) < 3:
        story.say(f"{p.name}'s {p.pet} {ANIMALS[p.pet][1]}.", p)
    if (rng.random() < 0.6 and story.has_room()) or len(story.sentences) < 3:
        story.say(f"In the evening, {story.subject(p, start=False)} goes home to {p.town}.", p)
    return " ".join(story.sentences)


def _general_document(world: World, rng: random.Random) -> str:
    """General knowledge with no person in it: animals, colours, objects, numbers, scenes."""
    out: list[str] = []
    for topic in rng.sample(("animals", "colours", "objects", "sums", "counting", "scene"), 2):
        if topic == "animals":
            for animal in rng.sample(world.animals, 2):
                many, habit, ability = ANIMALS[animal]
                out += [f"A {animal} is an animal.", f"{many.capitalize()} can {ability}."]
                out.append(f"A {animal} {habit}.")
        elif topic == "colours":
            a, b, c = rng.sample(world.colours, 3)
            out.append(f"{a.capitalize()}, {b} and {c} are colours.")
            out += [f"{thing} is {colour}." for thing, colour in rng.sample(NATURE_COLOURS, 2)]
        elif topic == "objects":
            for kind in rng.sample(sorted(OBJECT_KINDS), 2):
                thing = rng.choice(OBJECT_KINDS[kind])
                out.append(
                    KIND_SENTENCES[kind].format(
                        A=f"{article(thing)} {thing}".capitalize(), plural=plural(thing)
                    )
                )
        elif topic == "sums":
            for _ in range(rng.randint(2, 4)):
                a, b = rng.randint(0, 10), rng.randint(0, 10)
                if rng.random() < 0.5:
                    out.append(
                        f"{number_words(a).capitalize()} plus {number_words(b)} is "
                        f"{number_words(a + b)}, so {a} + {b} = {a + b}."
                    )
                else:
                    a, b = max(a, b), min(a, b)
                    out.append(
                        f"{number_words(a).capitalize()} minus {number_words(b)} is "
                        f"{number_words(a - b)}, so {a} - {b} = {a - b}."
                    )
        elif topic == "counting":
            n = rng.randint(3, 10)
            out.append(", ".join(number_words(i) for i in range(1, n + 1)).capitalize() + ".")
            out.append(f"{number_words(n).capitalize()} comes after {number_words(n - 1)}.")
            out.append(f"{n} is more than {rng.randint(0, n - 1)}.")
        else:
            things = rng.sample(world.objects, 3)
            colours = [rng.choice(world.colours) for _ in things]
            listed = [f"{article(c)} {c} {t}" for c, t in zip(colours, things)]
            out.append(f"{rng.choice(SPOTS)} there is {listed[0]}, {listed[1]} and {listed[2]}.")
            out.append(f"The {things[1]} is {colours[1]}.")
    return " ".join(out)


def generate_corpus(world: World, n_chars: int, seed: int) -> str:
    """About ``n_chars`` characters of documents, each followed by a newline and ENDOFTEXT."""
    if not isinstance(world, World):
        raise TypeError(f"world must be a World (make_world), got {type(world).__name__}")
    n_chars = check_int(n_chars, "n_chars", 1)  # a float (NaN, inf) is refused
    rng = random.Random(_check_seed(seed))
    deck = _Deck(world.people, rng)
    parts, total = [], 0
    while total < n_chars:
        kind = rng.choices(DOC_KINDS, weights=DOC_WEIGHTS)[0]
        if kind == "facts":
            doc = _facts_document(rng, deck)
        elif kind == "story":
            doc = _story_document(rng, deck)
        else:
            doc = _general_document(world, rng)
        parts.append(f"{doc}\n{ENDOFTEXT}\n")
        total += len(parts[-1])
    return "".join(parts)


def make_splits(world: World, seed: int = 0) -> dict[str, str]:
    """Train (~4.5 M characters) and val (~250 k): the same world, different texts."""
    seed = _check_seed(seed)
    return {
        "train": generate_corpus(world, TRAIN_CHARS, seed=10 * seed + 1),
        "val": generate_corpus(world, VAL_CHARS, seed=10 * seed + 2),
    }
