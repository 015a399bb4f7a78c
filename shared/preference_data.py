"""Preference pairs from the tiny world: a prompt, a chosen and a rejected response.

Preference tuning (the reward model of chapter 9, PPO and DPO in chapters 10-11) learns from
pairs in which one response is better than the other. Here the better side is known by the
gold rule (``shared.gold``), so every pair is right by construction, and each pair has a
``pair_type`` that says what it teaches:

=============  ==========================================  =================  ===========
pair_type      chosen                                      rejected           ratings
=============  ==========================================  =================  ===========
``style``      the right answer, one polite sentence       the same answer,   5 vs 4
                                                           curt or padded
``fact``       the right answer (any style)                a wrong answer,    5 or 4 vs 2
                                                           one polite sentence
``complete``   the right answer, one polite sentence       the sentence cut   5 vs 3
                                                           off before the
                                                           answer
``sampled``    the best of the SFT model's own samples     the worst of them  by the rule
=============  ==========================================  =================  ===========

The ``fact`` pairs whose chosen side is curt ("Rushcombe" over "Nabo lives in Corton.") say that being right matters more than sounding right. The ``sampled`` pairs come
from ``sampled_pairs``, run by ``make rm`` on the released SFT model: responses the policy
really produces, which is what a reward model will be asked to score.

Splits follow the instruction data: pairs built on its training prompts are for training,
pairs on its test and validation prompts are held out, and those include every question
about the held-out people.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from shared import gold
from shared import instruction_data as idata
from shared.prompts import PHI3_SPECIALS, format_prompt
from shared.tiny_world import ANIMALS, OBJECT_KINDS, World, article, number_words

__all__ = [
    "PAIR_TYPES",
    "check_pairs",
    "check_text_pair",
    "curt_answer",
    "cut_answer",
    "make_preference_pairs",
    "sampled_pairs",
    "wrong_answer",
    "wrong_value",
]

PAIR_TYPES = ("style", "fact", "complete", "sampled")
FIELDS = ("prompt", "chosen", "rejected", "kind", "pair_type", "split")
_WORD_NUMBERS = {number_words(n): n for n in range(100)}


def wrong_value(entry: dict, rng: random.Random, world: World) -> str:
    """Another answer of the same type as the entry's answer, never the right one."""
    kind, answer = entry["kind"], entry["answer"]
    if kind == "older":
        return next(p for p in entry["people"] if p != answer)
    if kind in ("age", "arithmetic", "counting"):
        words = answer in _WORD_NUMBERS
        n = _WORD_NUMBERS[answer] if words else int(answer)
        asked = {int(m) for m in gold.answers_in(f"{entry['instruction']} {entry['input']}", None)}
        choices = [m for m in range(max(0, n - 4), n + 5) if m != n and m not in asked]
        m = rng.choice(choices)
        return number_words(m) if words else str(m)
    if kind == "plural":
        nouns = list(ANIMALS) + [o for k in OBJECT_KINDS.values() for o in k]
        asked = entry["input"].split()[-1]
        return idata.plural(
            rng.choice([n for n in nouns if idata.plural(n) != answer and n != asked])
        )
    if kind == "passive":
        verb = rng.choice([v for v in idata.VERBS.values() if f" {v} " not in f" {answer} "])
        return re.sub(r"(?<= is )\w+(?= by )", verb, answer)
    vocabulary = gold.answer_vocabulary(kind, world, entry)
    asked = set(gold.answers_in(f"{entry['instruction']} {entry['input']}", vocabulary))
    return rng.choice([v for v in vocabulary if v.lower() != answer.lower() and v not in asked])


def wrong_answer(entry: dict, rng: random.Random, world: World) -> str:
    """The entry's complete sentence (``full``) with a wrong answer in place of the right one.

    The wrong answer replaces the last mention of the right one, with its article adjusted
    ("a bucket is a toy", "an animal"); the gold rule must rate the result 2 (wrong), which
    ``make_preference_pairs`` checks for every pair.
    """
    full, answer = entry["full"], entry["answer"]
    wrong = wrong_value(entry, rng, world)
    if entry["kind"] == "older":
        young = next(p for p in entry["people"] if p != answer)
        return f"{young} is older than {answer}."
    if entry["kind"] == "passive":
        return wrong + "."
    if entry["kind"] == "kind":
        return re.sub(rf"\b(a|an) {answer}\.$", f"{article(wrong)} {wrong}.", full)
    head, sep, tail = full.rpartition(answer)
    if not sep:
        raise ValueError(f"the answer {answer!r} is not in the sentence {full!r}")
    return head + wrong + tail


def cut_answer(full: str, answer: str) -> str:
    """The sentence stopped before its answer: what a response looks like when it runs out
    of tokens or stops early ("Nabo lives in"). When the answer opens the sentence ("Himo is
    older than Ladi."), it stops before the sentence's last word instead."""
    words = full.split()
    last = answer.lower().split()[-1]
    keep = max((i for i, w in enumerate(words) if last in w.lower()), default=len(words) - 1)
    if keep < 2:
        keep = len(words) - 1
    return " ".join(words[:keep])


def curt_answer(entry: dict) -> str:
    """The bare answer, as the curt house style writes it."""
    if entry["kind"] == "passive":  # the curt passive is lower-case and has no full stop
        return entry["answer"][0].lower() + entry["answer"][1:]
    return entry["answer"]


def _other_style(entry: dict, rng: random.Random) -> str:
    """The right answer in a dispreferred style: curt or padded, chosen at random."""
    if rng.random() < 0.5:
        return curt_answer(entry)
    opening, closing = rng.choice(idata.FILLERS)
    return f"{opening} {entry['full']} {closing}"


def _pair(entry: dict, chosen: str, rejected: str, pair_type: str, template: str) -> dict:
    return {
        "prompt": format_prompt(entry, template),
        "chosen": chosen,
        "rejected": rejected,
        "kind": entry["kind"],
        "pair_type": pair_type,
        "split": entry["split"],
        "instruction": entry["instruction"],
        "input": entry["input"],
        "answer": entry["answer"],
        "people": list(entry["people"]),
    }


def make_preference_pairs(
    entries: Sequence[dict], world: World, seed: int = 0, template: str = "alpaca"
) -> list[dict]:
    """Three rule-made pairs per instruction entry (``style``, ``fact``, ``complete``).

    Every pair is checked with ``shared.gold.compare``: the chosen response must rate
    higher than the rejected one, or a ValueError names the entry.
    """
    rng = random.Random(seed)
    pairs = []
    for i, e in enumerate(entries):
        full = e["full"]
        right = full if rng.random() < 0.75 else curt_answer(e)
        made = [
            _pair(e, full, _other_style(e, rng), "style", template),
            _pair(e, right, wrong_answer(e, rng, world), "fact", template),
            _pair(e, full, cut_answer(full, e["answer"]), "complete", template),
        ]
        for p in made:
            if gold.compare(p, p["chosen"], p["rejected"], world) != "A":
                raise ValueError(
                    f"entry {i} ({e['kind']}): the gold rule does not prefer the chosen "
                    f"{p['chosen']!r} over the rejected {p['rejected']!r} ({p['pair_type']})"
                )
        pairs.extend(made)
    return pairs


def sampled_pairs(
    entries: Sequence[dict],
    samples: Sequence[Sequence[str]],
    world: World,
    template: str = "alpaca",
) -> list[dict]:
    """Pairs from a model's own samples: per entry, the best- and the worst-rated sample.

    ``samples[i]`` are responses to ``entries[i]``. Entries whose samples all rate the same
    give no pair (nothing to prefer). Ties in rating are broken by the first sample.
    """
    if len(entries) != len(samples):
        raise ValueError(f"{len(entries)} entries but {len(samples)} lists of samples")
    pairs = []
    for i, (e, responses) in enumerate(zip(entries, samples)):
        if isinstance(responses, str) or not isinstance(responses, Sequence):
            # a string would be read as one response per character
            raise TypeError(
                f"samples[{i}] must be a list of responses, got {type(responses).__name__}"
            )
        if not responses:
            raise ValueError(f"samples[{i}] is empty: give at least one response per entry")
        rated = [(gold.assess(e, r, world).rating, r) for r in responses]
        best = max(rated, key=lambda x: x[0])
        worst = min(rated, key=lambda x: x[0])
        if best[0] > worst[0]:
            pair = _pair(e, best[1], worst[1], "sampled", template)
            pair["chosen_rating"], pair["rejected_rating"] = best[0], worst[0]
            pairs.append(pair)
    return pairs


def check_pairs(pairs: Sequence[dict]) -> None:
    """Every pair has the fields, as strings, non-empty (blank counts as empty) except
    ``rejected``: an empty rejected response is a model that stopped at once. Chosen and
    rejected must differ (other than in surrounding blanks, as ``shared.dpo`` and
    ``shared.reward_model`` encode them). Errors name the index and field."""
    if not isinstance(pairs, Sequence) or isinstance(pairs, (str, bytes)):
        raise TypeError(f"pairs must be a list of dicts, got {type(pairs).__name__}")
    for i, p in enumerate(pairs):
        if not isinstance(p, dict):
            raise TypeError(f"pair {i} must be a dict, got {type(p).__name__}")
        for field in FIELDS:
            if field not in p:
                raise ValueError(f"pair {i} has no {field!r} field")
            if not isinstance(p[field], str):
                raise TypeError(f"pair {i}: {field!r} must be a str, got {type(p[field]).__name__}")
            if field != "rejected" and not p[field].strip():
                raise ValueError(f"pair {i} has an empty {field!r}")
        if p["pair_type"] not in PAIR_TYPES:
            raise ValueError(f"pair {i}: pair_type {p['pair_type']!r} is not one of {PAIR_TYPES}")
        if p["chosen"].strip() == p["rejected"].strip():
            raise ValueError(
                f"pair {i}: chosen and rejected are the same text {p['chosen']!r}, so there is "
                "nothing to prefer"
            )


def check_text_pair(pair: object, i: int, specials: set[str] = frozenset()) -> None:
    """One preference pair with text fields, before it is encoded (the reward model's and
    DPO's encoders): a dict with str ``prompt``, ``chosen`` and ``rejected``, a non-empty
    prompt, two different sides (else there is nothing to prefer), and no Phi-3 marker the
    encoding (its ``specials``) would split into ordinary tokens."""
    if not isinstance(pair, dict):
        raise TypeError(f"pair {i} must be a dict, got {type(pair).__name__}")
    for field in ("prompt", "chosen", "rejected"):
        if field not in pair:
            raise ValueError(f"pair {i} has no {field!r} field")
        if not isinstance(pair[field], str):
            raise ValueError(f"pair {i}: {field!r} must be a string, got {pair[field]!r}")
    if not pair["prompt"].strip():
        raise ValueError(f"pair {i} has an empty prompt")
    if pair["chosen"].strip() == pair["rejected"].strip():
        raise ValueError(
            f"pair {i}: chosen and rejected are the same text {pair['chosen']!r}, so there is "
            "nothing to prefer"
        )
    unknown = [s for s in PHI3_SPECIALS if s in pair["prompt"] and s not in specials]
    if unknown:
        raise ValueError(
            f"pair {i}: the prompt has {unknown[0]}, which this encoding would split into "
            "ordinary tokens: the phi3 template needs an encoding from extend_encoding()"
        )
