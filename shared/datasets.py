"""Next-token training data: slide a window over one long sequence of token ids.

A language model learns to predict token ``t+1`` from tokens ``..t``. Cutting a window of
``context_length + 1`` tokens out of the corpus gives ``context_length`` such examples at
once: the input is the window without its last token, the target the window without its
first token (the same tokens shifted left by one). ``stride`` is how far the next window
starts: ``stride == context_length`` tiles the corpus without overlap, a smaller stride
makes overlapping windows (more examples, more repetition).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import tiktoken
import torch
from torch.utils.data import DataLoader, Dataset

from shared.bpe import ENDOFTEXT, BPETokenizer
from shared.checks import check_int


class SlidingWindowDataset(Dataset):
    """Item ``i`` is ``(ids[s : s+T], ids[s+1 : s+T+1])`` with ``s = i * stride``, ``T =
    context_length``, both LongTensors of shape ``(T,)``. Only full windows are used.
    """

    def __init__(
        self, token_ids: Sequence[int] | torch.Tensor, context_length: int, stride: int
    ) -> None:
        self.context_length = check_int(context_length, "context_length", 1)
        self.stride = check_int(stride, "stride", 1)
        if isinstance(token_ids, (str, bytes)):
            raise TypeError(
                f"token_ids must be a sequence of token ids, got a {type(token_ids).__name__}; "
                "encode the text first"
            )
        try:
            ids = torch.as_tensor(token_ids)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"token_ids must be a 1-D sequence of ints ({e})") from None
        if ids.dim() != 1:
            raise ValueError(f"token_ids must be 1-D, got shape {tuple(ids.shape)}")
        if ids.numel() and (ids.dtype.is_floating_point or ids.dtype == torch.bool):
            raise TypeError(f"token_ids must be integers, got dtype {ids.dtype}")
        if len(ids) < context_length + 1:
            raise ValueError(
                f"token_ids has {len(ids)} tokens, but one window of context_length="
                f"{context_length} needs {context_length + 1} (inputs plus the shifted target)"
            )
        ids = ids.long()  # (uint16/uint32 storage, as nanoGPT keeps tokens, has few ops)
        if ids.numel() and int(ids.min()) < 0:
            raise ValueError(f"token_ids must be >= 0, found {int(ids.min())}")
        self.ids = ids

    def __len__(self) -> int:
        # Window starts are 0, stride, 2*stride, ... up to len - (T + 1).
        return (len(self.ids) - self.context_length - 1) // self.stride + 1

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(i, bool) or not hasattr(i, "__index__"):
            raise TypeError(f"window index must be an int, got {i!r}")
        i = operator.index(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} is out of range for {len(self)} windows")
        start = (i % len(self)) * self.stride
        window = self.ids[start : start + self.context_length + 1]
        return window[:-1], window[1:]


def make_dataloader(
    token_ids: Sequence[int] | torch.Tensor,
    context_length: int,
    stride: int,
    batch_size: int,
    shuffle: bool = True,
    drop_last: bool = True,
    seed: int | None = None,
    num_workers: int = 0,
) -> DataLoader:
    """Batches of ``(inputs, targets)``, each of shape ``(batch_size, context_length)``.

    With ``shuffle`` the order comes from a ``torch.Generator`` seeded with ``seed`` (or
    drawn from torch's global generator when ``seed`` is None, so ``shared.setup()`` still
    makes it reproducible); the same seed always gives the same batches.
    """
    dataset = SlidingWindowDataset(token_ids, context_length, stride)
    batch_size = check_int(batch_size, "batch_size", 1)
    num_workers = check_int(num_workers, "num_workers", 0)
    for name, flag in (("shuffle", shuffle), ("drop_last", drop_last)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if seed is not None:
        seed = check_int(seed, "seed", 0)
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"only {len(dataset)} windows but batch_size={batch_size} with drop_last=True "
            "would give no batch at all; use a smaller batch, stride or context_length"
        )
    generator = None
    if shuffle:
        generator = torch.Generator()
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        generator=generator,
        num_workers=num_workers,
    )


def text_to_dataloader(
    text: str,
    encoding: tiktoken.Encoding | BPETokenizer,
    context_length: int,
    stride: int,
    batch_size: int,
    **kwargs,
) -> DataLoader:
    """Encode ``text`` (``<|endoftext|>`` allowed as a document separator) and batch it.

    ``encoding`` is anything with tiktoken's ``encode`` signature: a ``tiktoken.Encoding``
    such as ``shared.bpe.get_encoding()`` or a ``BPETokenizer``. Other keyword arguments
    go to ``make_dataloader``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if isinstance(encoding, (str, bytes)) or not hasattr(encoding, "encode"):
        raise TypeError(
            f"encoding must be a tiktoken.Encoding or BPETokenizer, got {type(encoding).__name__}"
        )
    ids = encoding.encode(text, allowed_special={ENDOFTEXT})
    return make_dataloader(ids, context_length, stride, batch_size, **kwargs)
