"""The prompt formats of instruction fine-tuning: Alpaca and Phi-3, word for word.

Everything that writes or reads a prompt imports it from here: the fine-tuning data
(``shared.sft``), the preference pairs, the reward model, DPO, PPO, the judge's data and the
chat server. The module needs only ``tiktoken``, not torch.

- ``format_prompt`` / ``format_response`` / ``format_example``: an entry in the Alpaca or
  the Phi-3 template (the response after a space, see ``RESPONSE_LEAD``).
- ``PHI3_SPECIALS`` and ``extend_encoding``: Phi-3's chat markers as new special tokens.
- ``STOP_TOKENS``: the special tokens that end an answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import tiktoken

__all__ = [
    "ALPACA_HEADER",
    "PHI3_SPECIALS",
    "RESPONSE_LEAD",
    "STOP_TOKENS",
    "TEMPLATES",
    "check_template",
    "extend_encoding",
    "format_example",
    "format_prompt",
    "format_response",
]

TEMPLATES = ("alpaca", "phi3")
# The Alpaca template, word for word as the lecture shows it (Taori et al., 2023).
ALPACA_HEADER = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)
# The response follows the template after one space. The project's tokenizer learned its
# merges on the tiny world's text, where words follow spaces: " Nabo" and " goat" are single
# tokens the base model knows well, while "Nabo" or "goat" at the start of a line split into
# pieces it has hardly seen (a GPT-2-sized tokenizer and corpus would not care). The space
# belongs to the response, so the model writes it; decoded responses are stripped.
RESPONSE_LEAD = " "
# Phi-3's chat markers (Abdin et al., 2024), as the lecture shows them.
PHI3_SPECIALS = ("<|user|>", "<|assistant|>", "<|end|>", "<|system|>")
# Special tokens that end an answer when the model writes them: end-of-text, and the end of
# a turn in the Phi-3 template (present only in encodings extended with PHI3_SPECIALS).
STOP_TOKENS = ("<|endoftext|>", "<|end|>")


def check_template(template: str) -> str:
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    return template


def _field(entry: Mapping, name: str) -> str:
    """``entry[name]``, which must be a str: "None" or "5" must never be written into a
    prompt, and a missing ``input`` is an error, not "no input" (write ``"input": ""``)."""
    if not isinstance(entry, Mapping):
        raise TypeError(
            f"entry must be a dict with 'instruction' and 'input' (str), got {type(entry).__name__}"
        )
    if name not in entry:
        raise ValueError(f'the entry has no {name!r} field (use "" for none): {entry!r}')
    value = entry[name]
    if not isinstance(value, str):
        raise TypeError(f"the entry's {name!r} must be a str, got {value!r}")
    return value


def _extended(entry: Mapping) -> tuple[str, list[tuple[str, str]]]:
    """The optional fields of the extended record: ``system`` and ``history``."""
    system = entry.get("system", "")
    if not isinstance(system, str):
        raise TypeError(f"the entry's 'system' must be a str, got {system!r}")
    history = entry.get("history", [])
    if isinstance(history, (str, bytes)) or not isinstance(history, (list, tuple)):
        raise TypeError(
            f"the entry's 'history' must be a list of [instruction, response] pairs, got {history!r}"
        )
    for turn in history:
        if not (
            isinstance(turn, (list, tuple))
            and len(turn) == 2
            and all(isinstance(t, str) for t in turn)
        ):
            raise TypeError(
                f"each turn of 'history' must be an [instruction, response] pair of str, got {turn!r}"
            )
    return system, [tuple(turn) for turn in history]


def format_prompt(entry: dict, template: str = "alpaca") -> str:
    """The text the model sees before its answer; the response starts right after it.

    ``entry`` needs ``instruction`` and ``input``, both str (``input`` may be empty). The
    extended record of the lecture adds two optional fields: ``system``, a system prompt,
    and ``history``, the earlier rounds as ``[instruction, response]`` pairs. Alpaca writes
    the system prompt in place of its fixed header and every earlier round as an
    instruction and response block; Phi-3 opens with a ``<|system|>`` turn and writes every
    round as a ``<|user|>`` and an ``<|assistant|>`` turn, each turn closed by ``<|end|>``."""
    check_template(template)
    instruction, input_ = _field(entry, "instruction"), _field(entry, "input")
    system, history = _extended(entry)
    if template == "alpaca":
        text = system or ALPACA_HEADER
        for question, answer in history:
            text += f"\n\n### Instruction:\n{question}\n\n### Response:\n{format_response(answer)}"
        text += f"\n\n### Instruction:\n{instruction}"
        if input_:
            text += f"\n\n### Input:\n{input_}"
        return text + "\n\n### Response:\n"
    user = instruction
    if input_:  # Phi-3 has one user message: the input is folded into it
        user = f"{user}\n{input_}"
    text = f"<|system|>\n{system}<|end|>\n" if system else ""
    for question, answer in history:
        text += f"<|user|>\n{question}<|end|>\n<|assistant|>\n{format_response(answer, 'phi3')}\n"
    return text + f"<|user|>\n{user}<|end|>\n<|assistant|>\n"


def format_response(text: str, template: str = "alpaca") -> str:
    """A response as it follows the prompt: after ``RESPONSE_LEAD`` (a space), and closed
    with ``<|end|>`` in the Phi-3 template."""
    if not isinstance(text, str):
        raise TypeError(f"the response text must be a str, got {text!r}")
    end = "<|end|>" if check_template(template) == "phi3" else ""
    return RESPONSE_LEAD + text + end


def format_example(entry: dict, template: str = "alpaca") -> str:
    """Prompt and answer: one training example."""
    return format_prompt(entry, template) + format_response(_field(entry, "output"), template)


def extend_encoding(encoding: tiktoken.Encoding, specials: Sequence[str]) -> tiktoken.Encoding:
    """``encoding`` with ``specials`` added as new special tokens after the last id.

    The ranks (the learned merges) are unchanged, so every old text keeps its ids; the new
    tokens get ids ``n_vocab, n_vocab + 1, ...`` (no gap) and are only produced when written
    in the text and allowed as special. A token the encoding already has keeps its id, so
    extending twice with the same tokens changes nothing. A token listed twice is an error
    (it would leave a hole in the ids), and so is an empty or whitespace-only token: tiktoken
    never returns from encoding with an empty special token, and a " " special would turn
    every space of an allowed text into a control token.
    """
    if not isinstance(encoding, tiktoken.Encoding):
        raise TypeError(f"encoding must be a tiktoken.Encoding, got {type(encoding).__name__}")
    if isinstance(specials, (str, bytes)) or not isinstance(specials, Iterable):
        raise TypeError("specials must be a list of strings, not one string")
    specials = list(specials)
    for s in specials:
        if not isinstance(s, str):
            raise TypeError(f"special tokens must be str, got {s!r} in {specials!r}")
        if not s.strip():
            raise ValueError(
                f"special token {s!r} is empty or whitespace only: tiktoken would never return "
                "from encoding with an empty one, and whitespace would become a control token"
            )
    repeated = sorted({s for s in specials if specials.count(s) > 1})
    if repeated:
        raise ValueError(f"specials lists {repeated[0]!r} twice: give each new token once")
    taken = set(encoding.special_tokens_set)
    new = [s for s in specials if s not in taken]
    extra = {s: encoding.n_vocab + i for i, s in enumerate(new)}
    return tiktoken.Encoding(
        f"{encoding.name}+{len(new)}",
        pat_str=encoding._pat_str,
        mergeable_ranks=encoding._mergeable_ranks,
        special_tokens={**encoding._special_tokens, **extra},
    )
