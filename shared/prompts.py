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

from collections.abc import Sequence

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
PHI3_SPECIALS = ("<|user|>", "<|assistant|>", "<|end|>")
# Special tokens that end an answer when the model writes them: end-of-text, and the end of
# a turn in the Phi-3 template (present only in encodings extended with PHI3_SPECIALS).
STOP_TOKENS = ("<|endoftext|>", "<|end|>")


def check_template(template: str) -> str:
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    return template


def format_prompt(entry: dict, template: str = "alpaca") -> str:
    """The text the model sees before its answer; the response starts right after it."""
    check_template(template)
    if template == "alpaca":
        text = f"{ALPACA_HEADER}\n\n### Instruction:\n{entry['instruction']}"
        if entry["input"]:
            text += f"\n\n### Input:\n{entry['input']}"
        return text + "\n\n### Response:\n"
    user = entry["instruction"]
    if entry["input"]:  # Phi-3 has one user message: the input is folded into it
        user = f"{user}\n{entry['input']}"
    return f"<|user|>\n{user}\n<|assistant|>\n"


def format_response(text: str, template: str = "alpaca") -> str:
    """A response as it follows the prompt: after ``RESPONSE_LEAD`` (a space), and closed
    with ``<|end|>`` in the Phi-3 template."""
    end = "<|end|>" if check_template(template) == "phi3" else ""
    return RESPONSE_LEAD + text + end


def format_example(entry: dict, template: str = "alpaca") -> str:
    """Prompt and answer: one training example."""
    return format_prompt(entry, template) + format_response(entry["output"], template)


def extend_encoding(encoding: tiktoken.Encoding, specials: Sequence[str]) -> tiktoken.Encoding:
    """``encoding`` with ``specials`` added as new special tokens after the last id.

    The ranks (the learned merges) are unchanged, so every old text keeps its ids; the new
    tokens get ids ``n_vocab, n_vocab + 1, ...`` and are only produced when written in the
    text and allowed as special.
    """
    if isinstance(specials, str):
        raise TypeError("specials must be a list of strings, not one string")
    taken = set(encoding.special_tokens_set)
    new = [s for s in specials if s not in taken]
    extra = {s: encoding.n_vocab + i for i, s in enumerate(new)}
    return tiktoken.Encoding(
        f"{encoding.name}+{len(new)}",
        pat_str=encoding._pat_str,
        mergeable_ranks=encoding._mergeable_ranks,
        special_tokens={**encoding._special_tokens, **extra},
    )
