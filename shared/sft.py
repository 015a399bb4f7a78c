"""Instruction fine-tuning: the dataset, the collate function, evaluation.

The prompt formats (Alpaca, Phi-3, their special tokens) are in ``shared.prompts``.

- ``extend_vocabulary``: the new rows of the embedding matrix for the special tokens that
  ``shared.prompts.extend_encoding`` adds to the tokenizer (the Phi-3 template needs three).
- ``InstructionDataset``: every example tokenized once, with the length of its prompt.
- ``collate``: per-batch padding, targets shifted by one, -100 on padding and (optionally)
  on the prompt, cropping to ``allowed_max_length``.
- ``InstructionBatches``: deterministic shuffled batches with the interface of
  ``shared.training.TokenBatches``, so chapter 4's ``train`` loop fine-tunes unchanged.
- ``generate_responses``: greedy answers for many prompts, batched by prompt length.
- ``exact_match`` / ``normalized_match`` and ``accuracy_by_kind``: the evaluation table.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Sequence

import tiktoken
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from shared import gold
from shared.checks import check_int, check_token_ids
from shared.decoding import generate
from shared.instruction_data import check_entries
from shared.prompts import PHI3_SPECIALS, check_template, format_example, format_prompt

__all__ = [
    "IGNORE_INDEX",
    "InstructionBatches",
    "InstructionDataset",
    "accuracy_by_kind",
    "collate",
    "exact_match",
    "extend_vocabulary",
    "generate_responses",
    "normalized_match",
]

IGNORE_INDEX = -100  # F.cross_entropy leaves targets with this value out of the loss


@torch.no_grad()
def extend_vocabulary(model: nn.Module, new_size: int) -> nn.Module:
    """Grow ``model``'s token embedding (and its output head) to ``new_size`` rows, in place.

    New rows start at the mean of the old embeddings, so a new token begins as an "average"
    token rather than a random one, and the existing rows are copied unchanged: the model
    computes exactly what it did on every old token. With tied weights the output head is
    the same matrix; otherwise it grows the same way. ``model.cfg.vocab_size`` is updated.
    """
    old = model.tok_emb.weight
    new_size = check_int(new_size, "new_size", 1)
    if new_size < old.shape[0]:
        raise ValueError(f"new_size={new_size} is smaller than the vocabulary ({old.shape[0]})")
    tied = model.out_head.weight is model.tok_emb.weight

    def grown(weight: Tensor) -> nn.Parameter:
        rows = weight.mean(dim=0, keepdim=True).expand(new_size - weight.shape[0], -1)
        return nn.Parameter(torch.cat([weight, rows], dim=0))

    model.tok_emb.weight = grown(old)
    model.tok_emb.num_embeddings = new_size
    if tied:
        model.out_head.weight = model.tok_emb.weight
    else:
        model.out_head.weight = grown(model.out_head.weight)
    model.out_head.out_features = new_size
    if hasattr(model, "cfg"):
        model.cfg = dataclasses.replace(model.cfg, vocab_size=new_size)
    return model


# ------------------------------------------------------------------------ dataset ----
def _check_template_encoding(template: str, encoding: tiktoken.Encoding) -> None:
    """The Phi-3 markers must be special tokens of ``encoding``: in a plain encoding
    ``<|end|>`` is the pieces ``<``, ``|``, ... and a response would "end" at any ``<``."""
    check_template(template)
    if not isinstance(encoding, tiktoken.Encoding):
        raise TypeError(f"encoding must be a tiktoken.Encoding, got {type(encoding).__name__}")
    if template == "phi3" and not set(PHI3_SPECIALS) <= encoding.special_tokens_set:
        raise ValueError("the phi3 template needs an encoding from extend_encoding()")


class InstructionDataset(torch.utils.data.Dataset):
    """Entries tokenized once: item ``i`` is ``(token ids, prompt length)``.

    ``allowed_max_length`` (tokens, end-of-text included) truncates longer examples from
    the end and reports how many were cut; ``template`` is ``"alpaca"`` or ``"phi3"``
    (the encoding must then know the Phi-3 special tokens, see ``extend_encoding``).
    """

    def __init__(
        self,
        entries: Sequence[dict],
        encoding: tiktoken.Encoding,
        template: str = "alpaca",
        allowed_max_length: int | None = None,
    ) -> None:
        check_entries(entries)
        _check_template_encoding(template, encoding)
        if allowed_max_length is not None:  # one input and one target at least
            allowed_max_length = check_int(allowed_max_length, "allowed_max_length", 2)
        self.entries, self.template = list(entries), template
        self.eot = encoding.eot_token
        self.items: list[tuple[list[int], int]] = []
        self.truncated: list[int] = []
        for i, entry in enumerate(self.entries):
            prompt = encoding.encode(format_prompt(entry, template), allowed_special="all")
            ids = encoding.encode(format_example(entry, template), allowed_special="all")
            ids.append(self.eot)  # the model learns to stop: end-of-text after the answer
            if allowed_max_length is not None and len(ids) > allowed_max_length:
                ids = ids[:allowed_max_length]
                self.truncated.append(i)
            self.items.append((ids, min(len(prompt), len(ids))))
        if self.truncated:
            warnings.warn(
                f"{len(self.truncated)} of {len(self.items)} examples were longer than "
                f"allowed_max_length={allowed_max_length} tokens and were truncated "
                f"(indices {self.truncated[:5]}{'...' if len(self.truncated) > 5 else ''})",
                stacklevel=2,
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[list[int], int]:
        return self.items[i]


def collate(
    batch: Sequence[tuple[list[int], int] | list[int]],
    pad_id: int,
    ignore_index: int = IGNORE_INDEX,
    allowed_max_length: int | None = None,
    mask_prompt: bool = False,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Pad a batch to its own longest example; return ``(inputs, targets)``, both ``(b, T)``.

    Each sequence ends in end-of-text and is padded with ``pad_id`` to the longest in the
    batch; inputs drop the last position and targets the first, so target ``t`` is the
    token after input ``t``. In the targets, every padding position after the first
    end-of-text becomes ``ignore_index`` (the end-of-text itself stays a target: the model
    must learn to stop), and with ``mask_prompt`` so do the positions that predict the
    prompt. Items may be ``(ids, prompt_length)`` or bare id lists (no prompt to mask);
    an item with no tokens is an error (see ``_collate_item``).
    """
    if len(batch) == 0:
        raise ValueError("collate got an empty batch")
    pad_id = check_int(pad_id, "pad_id")
    ignore_index = check_int(ignore_index, "ignore_index")
    if allowed_max_length is not None:
        allowed_max_length = check_int(allowed_max_length, "allowed_max_length", 1)
    if not isinstance(mask_prompt, bool):
        raise TypeError(f"mask_prompt must be True or False, got {mask_prompt!r}")
    items = [_collate_item(b, r) for r, b in enumerate(batch)]
    width = max(len(ids) for ids, _ in items)
    inputs, targets = [], []
    for ids, prompt_len in items:
        padded = ids + [pad_id] * (width - len(ids))
        x, y = torch.tensor(padded[:-1]), torch.tensor(padded[1:])
        y[len(ids) - 1 :] = ignore_index  # targets after the end-of-text are padding
        if mask_prompt and prompt_len > 1:
            y[: prompt_len - 1] = ignore_index  # positions whose next token is in the prompt
        if allowed_max_length is not None:
            x, y = x[:allowed_max_length], y[:allowed_max_length]
        inputs.append(x)
        targets.append(y)
    inputs_t, targets_t = torch.stack(inputs), torch.stack(targets)
    if device is not None:
        inputs_t, targets_t = inputs_t.to(device), targets_t.to(device)
    return inputs_t, targets_t


def _collate_item(item, row: int) -> tuple[list[int], int]:
    """``(ids, prompt_length)`` of one batch item, checked. An empty row is refused: it has
    no end-of-text to learn, and ``y[len(ids) - 1:]`` would mask only its last position, so
    it would train the model to predict padding after padding."""
    ids, prompt_len = item if isinstance(item, tuple) else (item, 0)
    ids = check_token_ids(ids, f"row {row} of the batch")
    if not ids:
        raise ValueError(
            f"row {row} of the batch has no tokens: every example needs at least its "
            "end-of-text (was it truncated to nothing?)"
        )
    return ids, check_int(prompt_len, f"the prompt length of row {row}", 0)


class InstructionBatches:
    """Shuffled, collated batches where batch ``i`` depends only on ``(seed, i)``.

    The same interface as ``shared.training.TokenBatches`` (``batches[i]``, ``len``,
    ``batch_size``, ``seed``, ``world_size``), so ``shared.training.train`` runs SFT with
    its schedule, clipping, evaluation and resumable checkpoints. Iterating gives one epoch
    in order (no shuffling when ``shuffle=False``): what ``evaluate_loss`` reads.
    """

    world_size = 1
    rank = 0

    def __init__(
        self,
        dataset: InstructionDataset,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        mask_prompt: bool = False,
        allowed_max_length: int | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if len(dataset) < batch_size:
            raise ValueError(f"only {len(dataset)} examples, fewer than one batch of {batch_size}")
        seed = check_int(seed, "seed", 0)  # checked now, not at the first batch
        for name, flag in (("shuffle", shuffle), ("mask_prompt", mask_prompt)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        if allowed_max_length is not None:
            allowed_max_length = check_int(allowed_max_length, "allowed_max_length", 1)
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.shuffle, self.mask_prompt = shuffle, mask_prompt
        self.allowed_max_length = allowed_max_length
        self.local_batch_size = batch_size
        self.tokens_per_batch = batch_size * (
            sum(len(ids) for ids, _ in dataset.items) // len(dataset) + 1
        )

    def __len__(self) -> int:
        return len(self.dataset) // self.batch_size

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        i = check_int(i, "batch index")  # batches[True] is not batch 1
        if i < 0:
            raise IndexError(f"batch index must be >= 0, got {i}")
        epoch, j = divmod(i, len(self))
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(len(self.dataset), generator=g)
        else:
            order = torch.arange(len(self.dataset))
        rows = order[j * self.batch_size : (j + 1) * self.batch_size].tolist()
        return collate(
            [self.dataset[r] for r in rows],
            pad_id=self.dataset.eot,
            allowed_max_length=self.allowed_max_length,
            mask_prompt=self.mask_prompt,
        )

    def __iter__(self):
        return (self[i] for i in range(len(self)))


# --------------------------------------------------------------------- responses ----
@torch.no_grad()
def generate_responses(
    model: nn.Module,
    encoding: tiktoken.Encoding,
    entries: Sequence[dict],
    template: str = "alpaca",
    max_new_tokens: int = 40,
    batch_size: int = 64,
    progress: bool = False,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> list[str]:
    """The response to every entry's prompt, decoded and stripped: greedy by default,
    sampled with ``temperature > 0`` (reproducibly with a seeded ``generator``).

    Prompts with the same number of tokens run together in one batch (no padding needed);
    generation stops at end-of-text (and at ``<|end|>`` for Phi-3), which is cut off. A
    prompt longer than the model's context is an error: the model would see only its end,
    without the instruction (``generate`` crops from the left).
    """
    check_entries(entries, required=("instruction", "input"))
    _check_template_encoding(template, encoding)
    batch_size = check_int(batch_size, "batch_size", 1)
    device = next(model.parameters()).device
    prompts = [encoding.encode(format_prompt(e, template), allowed_special="all") for e in entries]
    context = getattr(getattr(model, "cfg", None), "context_length", None)
    too_long = [i for i, ids in enumerate(prompts) if context and len(ids) > context]
    if too_long:
        i = too_long[0]
        raise ValueError(
            f"entry {i}'s prompt is {len(prompts[i])} tokens, longer than the model's context "
            f"of {context}: the model would see only its last {context} tokens, without the "
            f"instruction ({len(too_long)} such entries); shorten the entries"
        )
    stops = {encoding.eot_token}
    if template == "phi3":
        stops.add(encoding.encode("<|end|>", allowed_special="all")[0])
    groups: dict[int, list[int]] = {}
    for i, ids in enumerate(prompts):
        groups.setdefault(len(ids), []).append(i)
    chunks = [
        members[k : k + batch_size]
        for _, members in sorted(groups.items())
        for k in range(0, len(members), batch_size)
    ]
    out: list[str] = [""] * len(entries)
    for chunk in tqdm(chunks, disable=not progress, desc="responses", mininterval=1.0):
        idx = torch.tensor([prompts[i] for i in chunk], device=device)
        ids = generate(
            model,
            idx,
            max_new_tokens,
            temperature=temperature,
            eos_id=encoding.eot_token,
            generator=generator,
        )
        for i, row in zip(chunk, ids[:, idx.shape[1] :].tolist()):
            cut = next((k for k, t in enumerate(row) if t in stops), len(row))
            out[i] = encoding.decode(row[:cut]).strip()
    return out


def exact_match(response: str, reference: str) -> bool:
    """The response is the reference, apart from surrounding whitespace."""
    return response.strip() == reference.strip()


def normalized_match(response: str, reference: str) -> bool:
    """Equal after lower-casing and removing punctuation and extra spaces."""

    def norm(text: str) -> str:
        return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())

    return norm(response) == norm(reference)


def accuracy_by_kind(entries: Sequence[dict], responses: Sequence[str]):
    """A pandas table, one row per kind plus "all": exact and normalised match, the gold
    rule's content accuracy (right answer, any style) and share of preferred style."""
    import pandas as pd

    if len(entries) != len(responses):
        raise ValueError(f"{len(entries)} entries but {len(responses)} responses")
    rows = []
    for e, r in zip(entries, responses):
        verdict = gold.assess(e, r)
        rows.append(
            {
                "kind": e["kind"],
                "exact": exact_match(r, e["output"]),
                "normalised": normalized_match(r, e["output"]),
                "correct": verdict.correct,
                "preferred": verdict.preferred,
            }
        )
    df = pd.DataFrame(rows)
    table = df.groupby("kind").agg(
        n=("exact", "size"),
        exact=("exact", "mean"),
        normalised=("normalised", "mean"),
        correct=("correct", "mean"),
        preferred=("preferred", "mean"),
    )
    total = df.drop(columns="kind").mean().to_frame("all").T
    total.insert(0, "n", len(df))
    return pd.concat([table, total]).round(3)
