"""The sliding-window dataset: targets are inputs shifted by one, windows start every
``stride`` tokens, and shuffling is reproducible from a seed."""

from __future__ import annotations

import pytest
import torch

from shared.datasets import SlidingWindowDataset, make_dataloader, text_to_dataloader

IDS = list(range(100, 150))  # 50 distinct ids, so every position is recognisable


def test_item_shapes_and_shift() -> None:
    ds = SlidingWindowDataset(IDS, context_length=8, stride=8)
    x, y = ds[2]
    assert x.shape == y.shape == (8,)
    assert x.dtype == y.dtype == torch.long
    assert x.tolist() == IDS[16:24]
    assert y.tolist() == IDS[17:25]
    assert torch.equal(x[1:], y[:-1])


@pytest.mark.parametrize(
    ("n", "context_length", "stride", "expected"),
    [(50, 8, 8, 6), (50, 8, 1, 42), (50, 8, 4, 11), (9, 8, 5, 1), (50, 49, 1, 1), (50, 10, 20, 2)],
)
def test_window_count(n: int, context_length: int, stride: int, expected: int) -> None:
    ds = SlidingWindowDataset(IDS[:n], context_length, stride)
    assert len(ds) == expected
    # The last window is full and the next start would not fit one.
    last_start = (len(ds) - 1) * stride
    assert ds[len(ds) - 1][1][-1].item() == IDS[last_start + context_length]
    assert last_start + stride + context_length + 1 > n


def test_stride_sets_window_starts() -> None:
    ds = SlidingWindowDataset(torch.tensor(IDS), context_length=4, stride=3)
    assert [ds[i][0][0].item() for i in range(4)] == [100, 103, 106, 109]
    assert ds[-1][0].tolist() == ds[len(ds) - 1][0].tolist()
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_too_short_says_how_many_tokens() -> None:
    with pytest.raises(ValueError, match="has 8 tokens.*needs 9"):
        SlidingWindowDataset(IDS[:8], context_length=8, stride=1)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"context_length": 0, "stride": 1}, ValueError),
        ({"context_length": 4, "stride": -2}, ValueError),
        ({"context_length": 4.0, "stride": 1}, TypeError),
        ({"context_length": True, "stride": 1}, TypeError),
    ],
)
def test_bad_arguments(kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        SlidingWindowDataset(IDS, **kwargs)


def test_bad_token_ids() -> None:
    with pytest.raises(ValueError, match="1-D"):
        SlidingWindowDataset(torch.zeros(4, 10, dtype=torch.long), 4, 1)
    with pytest.raises(TypeError, match="integers"):
        SlidingWindowDataset(torch.rand(20), 4, 1)


def test_batches() -> None:
    loader = make_dataloader(IDS, context_length=6, stride=6, batch_size=3, shuffle=False)
    batches = list(loader)
    assert len(batches) == 8 // 3  # 8 windows, the incomplete last batch dropped
    x, y = batches[0]
    assert x.shape == y.shape == (3, 6)
    assert x[1].tolist() == IDS[6:12]
    assert torch.equal(y[:, :-1], x[:, 1:])


def _order(seed: int | None) -> list[int]:
    loader = make_dataloader(IDS, 4, 2, batch_size=4, seed=seed)
    return [x[0].item() for batch, _ in loader for x in batch]


def test_shuffle_is_deterministic_with_seed() -> None:
    first = _order(seed=7)
    assert _order(seed=7) == first
    assert _order(seed=8) != first
    assert first != sorted(first)  # actually shuffled
    torch.manual_seed(0)
    unseeded = _order(seed=None)
    torch.manual_seed(0)
    assert _order(seed=None) == unseeded  # falls back on torch's global seed


def test_no_batch_at_all_is_an_error() -> None:
    with pytest.raises(ValueError, match="only 2 windows"):
        make_dataloader(IDS[:20], 8, 8, batch_size=4)


class _CharEncoding:
    """A stand-in encoding: one id per character, checking the special-token argument."""

    def encode(self, text: str, allowed_special=frozenset()) -> list[int]:
        assert allowed_special == {"<|endoftext|>"}
        return [ord(c) for c in text]


def test_text_to_dataloader() -> None:
    loader = text_to_dataloader("abcdefghij" * 3, _CharEncoding(), 4, 4, 2, shuffle=False)
    x, y = next(iter(loader))
    assert x[0].tolist() == [ord(c) for c in "abcd"]
    assert y[0].tolist() == [ord(c) for c in "bcde"]
