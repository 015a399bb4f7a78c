"""A model is never silently paired with another tokenizer: checkpoints record the
tokenizer's identity, and loading or generating with a different one names both."""

from __future__ import annotations

import pytest
import tiktoken
import torch

from shared import bpe
from shared.bpe import check_tokenizer, tokenizer_fingerprint, tokenizer_identity
from shared.checkpoints import CheckpointError, load_checkpoint, load_model, save_checkpoint
from shared.decoding import generate_text
from shared.gpt import GPTConfig, GPTModel

pytestmark = pytest.mark.usefixtures("one_thread")


def config(vocab_size: int = 4096) -> GPTConfig:
    return GPTConfig(vocab_size=vocab_size, context_length=8, emb_dim=8, n_heads=2, n_layers=1)


@pytest.fixture(scope="module")
def enc() -> tiktoken.Encoding:
    return bpe.get_encoding()


def variant(enc: tiktoken.Encoding, name: str | None = None, specials=None, swap=True):
    """Another encoding of the same size: two merged tokens trade ids (or only new specials)."""
    ranks = dict(enc._mergeable_ranks)
    if swap:
        a, b = (t for t, r in ranks.items() if r in (300, 301))
        ranks[a], ranks[b] = ranks[b], ranks[a]
    return tiktoken.Encoding(
        name or enc.name,
        pat_str=enc._pat_str,
        mergeable_ranks=ranks,
        special_tokens=dict(enc._special_tokens) if specials is None else specials,
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory, enc):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ck") / "model.pt"
    return save_checkpoint(path, GPTModel(config()), tokenizer=enc)


def test_identity_is_the_same_for_the_bpe_tokenizer_and_its_encoding(enc):
    tok = bpe.load_tokenizer()
    assert tokenizer_fingerprint(tok) == tokenizer_fingerprint(enc)
    assert tokenizer_fingerprint(tok.to_tiktoken("another name")) == tokenizer_fingerprint(enc)
    assert tokenizer_fingerprint(variant(enc)) != tokenizer_fingerprint(enc)


OTHERS = {
    "swapped_ranks_same_name": lambda enc: variant(enc),
    "swapped_ranks_other_name": lambda enc: variant(enc, "other_4096"),
    "special_token_dropped": lambda enc: variant(enc, specials={}, swap=False),
    "special_token_renamed": lambda enc: variant(enc, specials={"<|eot|>": 4095}, swap=False),
    "other_pattern": lambda enc: tiktoken.Encoding(
        enc.name,
        pat_str=r"\S+|\s+",
        mergeable_ranks=enc._mergeable_ranks,
        special_tokens=enc._special_tokens,
    ),
}


@pytest.mark.parametrize("other", OTHERS)
def test_load_model_with_another_tokenizer_names_both(saved, enc, other):
    wrong = OTHERS[other](enc)
    with pytest.raises(CheckpointError, match=r"model\.pt was trained with the tokenizer") as info:
        load_model(saved, tokenizer=wrong)
    message = str(info.value)
    assert tokenizer_fingerprint(enc) in message and tokenizer_fingerprint(wrong) in message


@pytest.mark.parametrize("other", OTHERS)
def test_generate_text_with_another_tokenizer_names_both(saved, enc, other):
    model = load_model(saved)  # no tokenizer given here: generate_text still checks
    wrong = OTHERS[other](enc)
    with pytest.raises(ValueError, match="was trained with the tokenizer 'tiny_world_4096'") as i:
        generate_text(model, wrong, "Nora lives in", max_new_tokens=2)
    assert tokenizer_fingerprint(wrong) in str(i.value)


def test_load_checkpoint_with_another_tokenizer_leaves_the_model_unchanged(saved, enc):
    torch.manual_seed(1)
    model = GPTModel(config())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="trained with the tokenizer"):
        load_checkpoint(saved, model, tokenizer=variant(enc))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert getattr(model, "tokenizer_identity", None) is None


def test_the_right_tokenizer_passes(saved, enc):
    model = load_model(saved, tokenizer=enc)
    assert model.tokenizer_identity["fingerprint"] == tokenizer_fingerprint(enc)
    assert isinstance(generate_text(model, enc, "Nora lives in", max_new_tokens=2), str)
    load_model(saved, tokenizer=bpe.load_tokenizer())


def test_an_encoding_that_only_adds_special_tokens_fits_an_extended_model(tmp_path, enc):
    """Fine-tuning may append special tokens to the vocabulary: that is not another tokenizer."""
    extended = variant(enc, "chat", {"<|endoftext|>": 4095, "<|im_end|>": 4096}, swap=False)
    torch.manual_seed(0)
    base = save_checkpoint(tmp_path / "base.pt", GPTModel(config()), tokenizer=enc)
    bigger = GPTModel(config(4097))
    bigger.tokenizer_identity = load_model(base).tokenizer_identity  # carried from the base
    path = save_checkpoint(tmp_path / "sft.pt", bigger)  # identity kept without tokenizer=
    model = load_model(path, tokenizer=extended)
    assert model.tokenizer_identity["fingerprint"] == tokenizer_fingerprint(enc)
    generate_text(model, extended, "Nora<|im_end|>", max_new_tokens=2)
    # recorded with the extended encoding itself
    path = save_checkpoint(tmp_path / "sft2.pt", bigger, tokenizer=extended)
    assert load_model(path, tokenizer=extended).tokenizer_identity["name"] == "chat"
    with pytest.raises(CheckpointError, match="trained with the tokenizer 'chat'"):
        load_model(path, tokenizer=enc)  # the base encoding lacks <|im_end|>


def test_an_extended_encoding_does_not_fit_the_unextended_model(saved, enc):
    extended = variant(enc, "chat", {"<|endoftext|>": 4095, "<|im_end|>": 4096}, swap=False)
    with pytest.raises(CheckpointError, match=r"4097 tokens.*more ids than .*4096"):
        load_model(saved, tokenizer=extended)
    with pytest.raises(ValueError, match="more ids than the model's vocabulary of 4096"):
        generate_text(load_model(saved), extended, "Nora", max_new_tokens=1)


def test_saving_with_a_tokenizer_bigger_than_the_model_is_refused(tmp_path, enc):
    with pytest.raises(ValueError, match="more ids than the model's vocabulary of 100"):
        save_checkpoint(tmp_path / "ck.pt", GPTModel(config(100)), tokenizer=enc)
    assert not (tmp_path / "ck.pt").exists()


@pytest.mark.parametrize("bad", ["tiny_world_4096", 4096, {"name": "x"}, None.__class__])
def test_tokenizer_argument_of_the_wrong_type(tmp_path, bad):
    with pytest.raises(TypeError, match="tokenizer must be a BPETokenizer or a tiktoken"):
        save_checkpoint(tmp_path / "ck.pt", GPTModel(config(300)), tokenizer=bad)


def test_files_without_an_identity_still_load_and_are_not_checked(tmp_path, enc):
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "old.pt", GPTModel(config()))
    model = load_model(path, tokenizer=variant(enc))
    assert model.tokenizer_identity is None
    generate_text(model, variant(enc), "Nora", max_new_tokens=1)


def test_check_tokenizer_directly(enc):
    recorded = tokenizer_identity(enc)
    check_tokenizer(recorded, enc)
    check_tokenizer(None, variant(enc))
    with pytest.raises(ValueError, match="the run was trained with"):
        check_tokenizer(recorded, variant(enc), what="the run")


def test_fact_probes_and_the_sample_printer_check_the_tokenizer(saved, enc):
    from types import SimpleNamespace

    from shared.training import fact_probe_accuracy, sample_printer

    model = load_model(saved)
    probes = [SimpleNamespace(prompt="Nora lives in", answer=" Redhill")]
    with pytest.raises(ValueError, match="trained with the tokenizer"):
        fact_probe_accuracy(model, variant(enc), probes)
    assert fact_probe_accuracy(model, enc, probes)[0] in (0.0, 1.0)
    printer = sample_printer(variant(enc), "Nora lives in", 2)
    with pytest.raises(ValueError, match="trained with the tokenizer"):
        printer(1, model)
