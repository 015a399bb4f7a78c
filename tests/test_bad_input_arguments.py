"""Arguments of the wrong type or out of range name the parameter and what was expected;
the values a reasonable user would pass (numpy ints, blank environment variables) work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import shared
from shared import bpe
from shared.bpe import BPETokenizer
from shared.datasets import SlidingWindowDataset, make_dataloader, text_to_dataloader
from shared.decoding import generate, generate_text
from shared.distributed import init_distributed
from shared.gpt import GPTConfig, GPTModel
from shared.training import TokenBatches, lr_at, make_optimizer

CFG = GPTConfig(vocab_size=16, context_length=8, emb_dim=16, n_heads=2, n_layers=1)
TEXT = "the cat sat on the mat. the dog sat on the log. " * 10

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPTModel(CFG)


@pytest.fixture(scope="module")
def tok():
    return bpe.load_tokenizer()


# --------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"special_tokens": "EOT"}, TypeError, r"special_tokens must be a list of str.*\['EOT'\]"),
        ({"special_tokens": b"EOT"}, TypeError, "special_tokens must be a list"),
        ({"special_tokens": 5}, TypeError, "special_tokens must be a list"),
        ({"special_tokens": ["a", "a"]}, ValueError, "special_tokens must be distinct"),
        ({"special_tokens": [""]}, ValueError, "special_tokens"),
        ({"vocab_size": 2.5}, TypeError, "vocab_size must be an int"),
        ({"vocab_size": "300"}, TypeError, "vocab_size must be an int"),
        ({"vocab_size": 100}, ValueError, "vocab_size=100 is too small"),
    ],
)
def test_train_arguments(kwargs, error, message):
    args = {"vocab_size": 260, **kwargs}
    with pytest.raises(error, match=message):
        BPETokenizer.train(TEXT, **args)


def test_train_accepts_reasonable_values():
    tok = BPETokenizer.train(TEXT, np.int64(260), special_tokens=("<|eot|>",))
    assert tok.special_tokens == {"<|eot|>": 259}
    assert BPETokenizer.train(TEXT, 260, special_tokens=iter(["<|a|>"])).vocab_size == 260
    assert BPETokenizer.train(TEXT, 260, special_tokens=None).special_tokens == {}


@pytest.mark.parametrize(
    ("specials", "message"),
    [(["<|eot|>"], "special_tokens must be a dict"), ("<|eot|>", "special_tokens must be a dict")],
)
def test_constructor_special_tokens(tok, specials, message):
    with pytest.raises(TypeError, match=message):
        BPETokenizer(tok.ranks, specials)
    with pytest.raises(TypeError, match="ranks must be a dict"):
        BPETokenizer(list(tok.ranks))


@pytest.mark.parametrize(
    ("ids", "error", "message"),
    [
        (torch.tensor([[1, 2], [3, 4]]), ValueError, r"ids must be 1-D.*\(2, 2\)"),
        (np.array([[1, 2]]), ValueError, "ids must be 1-D"),
        (torch.tensor(5), ValueError, "ids must be 1-D"),
        ("hello", TypeError, "ids must be a sequence of token ids"),
        (b"hi", TypeError, "ids must be a sequence of token ids"),
        ([1.5, 2.0], TypeError, "ids must be integers"),
        (torch.tensor([1.0, 2.0]), TypeError, "ids must be integers"),
        ([1, None], TypeError, "ids must be integers"),
        ([99999], ValueError, "unknown token id 99999"),
        ([-1], ValueError, "unknown token id -1"),
    ],
)
def test_decode_arguments(tok, ids, error, message):
    with pytest.raises(error, match=message):
        tok.decode(ids)


def test_decode_accepts_tensors_arrays_and_numpy_ints(tok):
    ids = tok.encode("Nora lives in Redhill.")
    text = "Nora lives in Redhill."
    assert tok.decode(torch.tensor(ids)) == text
    assert tok.decode(np.array(ids)) == text
    assert tok.decode([np.int32(i) for i in ids]) == text
    assert tok.decode(torch.tensor([ids])[0]) == text


def test_encode_arguments(tok):
    with pytest.raises(TypeError, match="text must be a str"):
        tok.encode(b"bytes")
    with pytest.raises(TypeError, match="allowed_special must be 'all' or a collection"):
        tok.encode("x", allowed_special="<|endoftext|>")


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"eos_id": 2.5}, TypeError, "eos_id must be a token id"),
        ({"eos_id": True}, TypeError, "eos_id must be a token id"),
        ({"eos_id": "3"}, TypeError, "eos_id must be a token id"),
        ({"eos_id": 16}, ValueError, r"eos_id 16 is outside the vocabulary \[0, 16\)"),
        ({"eos_id": -1}, ValueError, "eos_id -1 is outside"),
        ({"max_new_tokens": 2.5}, TypeError, "max_new_tokens must be an int"),
        ({"max_new_tokens": "3"}, TypeError, "max_new_tokens must be an int"),
        ({"max_new_tokens": None}, TypeError, "max_new_tokens must be an int"),
        ({"max_new_tokens": -1}, ValueError, "max_new_tokens must be an int >= 0"),
        ({"temperature": "0.5"}, TypeError, "temperature must be a number"),
        ({"temperature": -1}, ValueError, "temperature must be a finite number >= 0"),
        ({"top_k": 2.5}, TypeError, "top_k must be a positive int"),
        ({"top_k": 0}, ValueError, "top_k must be a positive int"),
        ({"top_p": "0.9"}, TypeError, "top_p must be a number"),
        ({"top_p": float("nan")}, ValueError, "top_p must be in"),
        ({"use_cache": "no"}, TypeError, "use_cache must be True or False"),
        ({"generator": 123}, TypeError, "generator must be a torch.Generator"),
    ],
)
def test_generate_arguments(model, kwargs, error, message):
    args = {"max_new_tokens": 2, **kwargs}
    with pytest.raises(error, match=message):
        generate(model, torch.tensor([[1, 2]]), **args)


@pytest.mark.parametrize(
    ("idx", "error", "message"),
    [
        ([[1, 2]], TypeError, r"idx \(the prompt ids\) must be a torch.Tensor.*got a list"),
        ([1, 2], TypeError, "idx .* must be a torch.Tensor"),
        (np.array([[1, 2]]), TypeError, "got a ndarray"),
        (torch.tensor([1, 2]), ValueError, r"idx of shape \(batch, T\), got \(2,\)"),
        (torch.zeros(1, 0, dtype=torch.long), ValueError, "the prompt is empty"),
        (torch.tensor([[1.0, 2.0]]), TypeError, "integer tensor"),
        (torch.tensor([[1, 16]]), ValueError, "prompt token id 16 is outside"),
    ],
)
def test_generate_prompt(model, idx, error, message):
    with pytest.raises(error, match=message):
        generate(model, idx, 2)


def test_generate_accepts_numpy_ints(model):
    out = generate(
        model, torch.tensor([[1, 2]]), np.int64(3), eos_id=np.int64(5), top_k=np.int32(3)
    )
    assert out.shape[1] <= 5
    assert torch.equal(
        generate(model, torch.tensor([[1, 2]]), 3),
        generate(model, torch.tensor([[1, 2]]), np.int16(3)),
    )


def test_generate_text_arguments(model):
    enc = bpe.get_encoding()
    small = GPTModel(CFG)
    with pytest.raises(TypeError, match="encoding must be a tiktoken.Encoding"):
        generate_text(small, "gpt2", "hello")
    with pytest.raises(TypeError, match="prompt must be a str"):
        generate_text(small, enc, None)
    with pytest.raises(TypeError, match="stop_at_eos must be True or False"):
        generate_text(small, enc, "x", stop_at_eos="yes")
    big = GPTModel(GPTConfig(vocab_size=4096, context_length=8, emb_dim=8, n_heads=2, n_layers=1))
    with pytest.raises(ValueError, match="the prompt is empty"):
        generate_text(big, enc, "")


# --------------------------------------------------------------------------- data


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"stride": 0}, ValueError, "stride must be an int >= 1, got 0"),
        ({"stride": -3}, ValueError, "stride must be an int >= 1"),
        ({"stride": 2.5}, TypeError, "stride must be an int"),
        ({"context_length": 0}, ValueError, "context_length must be an int >= 1"),
        ({"batch_size": 2.5}, TypeError, "batch_size must be an int"),
        ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1"),
        ({"seed": 1.5}, TypeError, "seed must be an int"),
        ({"seed": -1}, ValueError, "seed must be an int >= 0"),
        ({"seed": 2**40}, ValueError, "seed must be below 2\\*\\*32"),
        ({"shuffle": "yes"}, TypeError, "shuffle must be True or False"),
        ({"rank": 2, "world_size": 2}, ValueError, "rank=2 is outside"),
        ({"world_size": 0}, ValueError, "world_size must be an int >= 1"),
        ({"token_ids": "some text"}, TypeError, "token_ids must be a sequence of token ids"),
        ({"token_ids": [[1, 2], [3]]}, TypeError, "token_ids must be a 1-D sequence"),
        ({"token_ids": [-1] + [1] * 100}, ValueError, "token_ids must be >= 0"),
        ({"token_ids": [1.5] * 100}, TypeError, "token_ids must be integers"),
    ],
)
def test_token_batches_arguments(kwargs, error, message):
    args = {"token_ids": list(range(100)), "context_length": 8, "batch_size": 2, **kwargs}
    with pytest.raises(error, match=message):
        TokenBatches(**args)


def test_stride_none_is_the_context_length_and_numpy_ints_work():
    a = TokenBatches(list(range(100)), 8, 2, stride=None)
    b = TokenBatches(
        list(range(100)), np.int64(8), np.int32(2), stride=np.int64(8), seed=np.int64(0)
    )
    assert a.dataset.stride == 8 and torch.equal(a[np.int64(1)][0], b[1][0])
    with pytest.raises(TypeError, match="batch index must be an int"):
        a[1.0]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"stride": 0}, ValueError, "stride must be an int >= 1"),
        ({"num_workers": -1}, ValueError, "num_workers must be an int >= 0"),
        ({"shuffle": "no"}, TypeError, "shuffle must be True or False"),
        ({"drop_last": None}, TypeError, "drop_last must be True or False"),
        ({"seed": "1"}, TypeError, "seed must be an int"),
        ({"batch_size": 1.0}, TypeError, "batch_size must be an int"),
    ],
)
def test_make_dataloader_arguments(kwargs, error, message):
    args = {"context_length": 8, "stride": 8, "batch_size": 2, **kwargs}
    with pytest.raises(error, match=message):
        make_dataloader(list(range(100)), **args)


def test_dataset_and_text_loader_arguments():
    ds = SlidingWindowDataset(list(range(50)), 8, 4)
    with pytest.raises(TypeError, match="window index must be an int"):
        ds[1.5]
    assert torch.equal(ds[np.int64(2)][0], ds[2][0])
    with pytest.raises(TypeError, match="text must be a str"):
        text_to_dataloader(["a"], bpe.get_encoding(), 8, 8, 1)
    with pytest.raises(TypeError, match="encoding must be a tiktoken.Encoding"):
        text_to_dataloader("abc", "gpt2", 8, 8, 1)


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"lr": -1e-3}, ValueError, "lr must be a finite number >= 0"),
        ({"lr": "1e-3"}, TypeError, "lr must be a number"),
        ({"weight_decay": float("nan")}, ValueError, "weight_decay"),
        ({"betas": (0.9,)}, ValueError, "betas must be two numbers"),
        ({"betas": (0.9, 1.5)}, ValueError, "betas must be two numbers"),
    ],
)
def test_make_optimizer_arguments(model, kwargs, error, message):
    args = {"lr": 1e-3, **kwargs}
    with pytest.raises(error, match=message):
        make_optimizer(model, **args)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((-1, 1e-3, 2, 10), ValueError, "step must be an int >= 0"),
        ((1.5, 1e-3, 2, 10), TypeError, "step must be an int"),
        ((1, float("nan"), 2, 10), ValueError, "max_lr must be a finite number"),
        ((1, -1.0, 2, 10), ValueError, "max_lr"),
        ((1, 1e-3, 20, 10), ValueError, "warmup_steps <= total_steps"),
        ((1, 1e-3, 2.0, 10), TypeError, "warmup_steps must be an int"),
    ],
)
def test_lr_at_arguments(args, error, message):
    with pytest.raises(error, match=message):
        lr_at(*args)


# --------------------------------------------------------------------------- environment


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("LLMS_SCALE", "LLMS_THREADS", "LLMS_SEED", "LLMS_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    yield monkeypatch
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("LLMS_THREADS", "abc", "LLMS_THREADS='abc' is not an integer"),
        ("LLMS_THREADS", "2.5", "LLMS_THREADS='2.5' is not an integer"),
        ("LLMS_THREADS", "0", "LLMS_THREADS=0 must be at least 1"),
        ("LLMS_THREADS", "-2", "LLMS_THREADS=-2"),
        ("LLMS_SEED", "-1", r"LLMS_SEED=-1 must be in \[0, 2\*\*32\)"),
        ("LLMS_SEED", "abc", "LLMS_SEED='abc' is not an integer"),
        ("LLMS_SEED", str(2**32), "LLMS_SEED=4294967296"),
        ("LLMS_SCALE", "huge", "LLMS_SCALE='huge'"),
        ("LLMS_DEVICE", "tpu", "LLMS_DEVICE='tpu'"),
    ],
)
def test_bad_environment_variables_are_named(clean_env, name, value, message):
    clean_env.setenv(name, value)
    torch.set_num_threads(1)
    with pytest.raises(ValueError, match=message):
        shared.setup(quiet=True)
    assert torch.get_num_threads() == 1  # nothing global changed


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"seed": -1}, ValueError, r"seed must be in \[0, 2\*\*32\)"),
        ({"seed": 1.5}, TypeError, "seed must be an int"),
        ({"seed": "7"}, TypeError, "seed must be an int"),
        ({"scale": 1}, TypeError, "scale must be one of"),
        ({"scale": "medium"}, ValueError, "scale 'medium'"),
    ],
)
def test_bad_setup_arguments(clean_env, kwargs, error, message):
    with pytest.raises(error, match=message):
        shared.setup(quiet=True, **kwargs)


def test_blank_and_padded_environment_values_are_accepted(clean_env):
    clean_env.setenv("LLMS_THREADS", " 1 ")
    clean_env.setenv("LLMS_SEED", "")
    clean_env.setenv("LLMS_SCALE", " ")
    rt = shared.setup(quiet=True)
    assert (rt.scale, rt.seed, rt.threads) == ("tiny", 123, 1)
    assert shared.setup(seed=np.int64(5), quiet=True).seed == 5


def test_choose_arguments():
    rt = shared.setup(scale="tiny", quiet=True)
    with pytest.raises(ValueError, match=r"unknown scale\(s\) \['tinny'\]"):
        rt.choose({"tinny": 1})
    with pytest.raises(TypeError, match="options must be a dict"):
        rt.choose([1, 2])


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc' is not an integer"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0 must be at least 1"),
        ({"RANK": "-1"}, "RANK=-1 must be at least 0"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 must be below WORLD_SIZE=2"),
    ],
)
def test_distributed_environment(monkeypatch, env, message):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        init_distributed(device="cpu")


@pytest.mark.parametrize("path", [None, 123, "", ["a.pt"]])
def test_path_arguments(path, model):
    from shared.checkpoints import load_model, read_checkpoint, save_checkpoint

    for call in (
        lambda: save_checkpoint(path, model),
        lambda: read_checkpoint(path),
        lambda: load_model(path),
        lambda: bpe.get_encoding(path),
        lambda: BPETokenizer.load(path),
    ):
        with pytest.raises(TypeError, match="path must be a non-empty str or Path"):
            call()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.uint32, np.int64])
def test_token_ids_stored_in_any_integer_dtype(dtype):
    ids = np.arange(100, dtype=dtype) % 16
    batches = TokenBatches(ids, 8, 2)
    assert batches[0][0].dtype == torch.int64
    assert len(make_dataloader(ids, 8, 8, 2)) == 6


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32])
def test_prompt_ids_in_other_integer_dtypes(model, dtype):
    expected = generate(model, torch.tensor([[1, 2]]), 3)
    assert torch.equal(generate(model, torch.tensor([[1, 2]], dtype=dtype), 3).long(), expected)
    with pytest.raises(TypeError, match="idx must be an integer tensor, got torch.bool"):
        generate(model, torch.tensor([[True, False]]), 3)
