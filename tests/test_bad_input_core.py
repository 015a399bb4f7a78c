"""Bad input to the core modules (prompts, sft, instruction data, tiny world, BPE, GPT,
training, GPT-2 configs): a clear error at once, never a hang or a silently wrong answer.

The calls that used to hang run in a child process with a timeout, so a regression fails
the test instead of hanging the suite.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tiktoken
import torch

from shared import bpe, prompts, sft, tiny_world
from shared.bpe import BPETokenizer
from shared.gpt import (
    GPTConfig,
    GPTModel,
    LayerNorm,
    generate_greedy,
    memory_bytes,
    training_memory_estimate,
)
from shared.gpt2_checkpoint import (
    export_gpt2_state_dict,
    gpt2_config_from_hf,
    load_gpt2_state_dict,
)
from shared.instruction_data import make_instruction_data, misspell, truth_statements
from shared.training import bigram_baseline, evaluate_loss, perplexity

REPO = Path(__file__).resolve().parent.parent
NAN, INF = float("nan"), float("inf")
ENTRY = {"instruction": "Where does Nabo live?", "input": "", "output": "Nabo lives in Corton."}
CFG = GPTConfig(vocab_size=16, context_length=8, emb_dim=16, n_heads=2, n_layers=1)
HF_CFG = {"vocab_size": 16, "n_positions": 8, "n_embd": 16, "n_head": 2, "n_layer": 1}

pytestmark = pytest.mark.usefixtures("one_thread")


def small_encoding() -> tiktoken.Encoding:
    """A byte-level encoding with <|endoftext|>: no file to read, built in a millisecond."""
    ranks = {bytes([b]): b for b in range(256)}
    return tiktoken.Encoding(
        "bytes", pat_str=r"\S+|\s+", mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 256}
    )


def _limit_memory() -> None:
    """At most 4 GiB for the child: a runaway loop must not take the machine's memory."""
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def run_child(code: str, timeout: float = 60) -> str:
    """Run ``code`` in a fresh interpreter; its stdout, or a failure if it hangs."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=_limit_memory,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the call did not return within {timeout} s (it hangs)")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def enc():
    return bpe.get_encoding()


@pytest.fixture(scope="module")
def world():
    return tiny_world.make_world(seed=0, n_people=12, n_towns=4)


def tiny_lm(vocab: int, context: int = 128) -> GPTModel:
    torch.manual_seed(0)
    return GPTModel(GPTConfig(vocab, context, 16, 2, 1)).eval()


# ------------------------------------------------------------------------ hangs ----
def test_an_empty_special_token_is_refused_instead_of_hanging_the_encoder():
    out = run_child(
        """
        import tiktoken
        from shared import prompts
        ranks = {bytes([b]): b for b in range(256)}
        enc = tiktoken.Encoding("bytes", pat_str=r"\\S+|\\s+", mergeable_ranks=ranks,
                                special_tokens={"<|endoftext|>": 256})
        try:
            extended = prompts.extend_encoding(enc, [""])
        except ValueError as e:
            print("refused:", e)
        else:
            print("encoded:", extended.encode("hi", allowed_special="all"))
        """,
        timeout=30,
    )
    assert out.startswith("refused:") and "empty" in out, out


@pytest.mark.parametrize("specials", [[" "], ["\n\t"], ["<|a|>", " "]])
def test_a_whitespace_special_token_is_refused(specials):
    with pytest.raises(ValueError, match="whitespace"):
        prompts.extend_encoding(small_encoding(), specials)


def test_a_repeated_special_token_is_refused_instead_of_leaving_a_hole_in_the_ids():
    with pytest.raises(ValueError, match=r"'<\|a\|>' twice"):
        prompts.extend_encoding(small_encoding(), ["<|a|>", "<|a|>", "<|b|>"])


@pytest.mark.parametrize("specials", [[None], [b"<|a|>"], ["<|a|>", 3]])
def test_a_special_token_that_is_not_a_str_is_refused(specials):
    with pytest.raises(TypeError, match="special tokens must be str"):
        prompts.extend_encoding(small_encoding(), specials)


def test_extend_encoding_ids_follow_without_a_gap_and_old_tokens_are_kept():
    base = small_encoding()
    once = prompts.extend_encoding(base, ["<|a|>", "<|b|>"])
    again = prompts.extend_encoding(once, ["<|a|>", "<|endoftext|>", "<|c|>"])
    assert once._special_tokens == {"<|endoftext|>": 256, "<|a|>": 257, "<|b|>": 258}
    assert again._special_tokens["<|c|>"] == 259 and again.n_vocab == 260
    with pytest.raises(TypeError, match="tiktoken.Encoding"):
        prompts.extend_encoding(bpe.load_tokenizer(), ["<|a|>"])


def test_instruction_data_from_a_too_small_world_raises_instead_of_looping_forever():
    out = run_child(
        """
        from shared.instruction_data import make_instruction_data
        from shared.tiny_world import make_world
        try:
            make_instruction_data(make_world(n_people=2))
        except ValueError as e:
            print("refused:", e)
        else:
            print("returned")
        """
    )
    assert out.startswith("refused:") and "n_people" in out and "3" in out, out


# ----------------------------------------------------------------- prompts ----
@pytest.mark.parametrize("template", prompts.TEMPLATES)
@pytest.mark.parametrize(
    ("entry", "error", "message"),
    [
        ({"instruction": None, "input": ""}, TypeError, "'instruction' must be a str, got None"),
        ({"instruction": 3, "input": ""}, TypeError, "'instruction' must be a str"),
        ({"instruction": "Hi"}, ValueError, "no 'input' field"),
        ({"input": ""}, ValueError, "no 'instruction' field"),
        ({"instruction": "Hi", "input": None}, TypeError, "'input' must be a str, got None"),
        ({"instruction": "Hi", "input": ["a"]}, TypeError, "'input' must be a str"),
        (["Hi", ""], TypeError, "entry must be a dict"),
        (None, TypeError, "entry must be a dict"),
    ],
)
def test_format_prompt_refuses_missing_and_non_str_fields(template, entry, error, message):
    with pytest.raises(error, match=message):
        prompts.format_prompt(entry, template)


@pytest.mark.parametrize("output", [None, 5])
def test_format_example_and_response_refuse_a_non_str_output(output):
    with pytest.raises(TypeError, match="must be a str"):
        prompts.format_example({**ENTRY, "output": output})
    with pytest.raises(TypeError, match="must be a str"):
        prompts.format_response(output)
    with pytest.raises(ValueError, match="no 'output' field"):
        prompts.format_example({"instruction": "Hi", "input": ""})


# --------------------------------------------------------------------- sft ----
def test_collate_refuses_an_empty_row():
    with pytest.raises(ValueError, match="row 1 .*no tokens"):
        sft.collate([([5, 6, 7], 1), ([], 0)], pad_id=9)
    with pytest.raises(ValueError, match="row 0 .*no tokens"):
        sft.collate([[]], pad_id=9)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"pad_id": 2.5}, TypeError, "pad_id must be an int"),
        ({"pad_id": True}, TypeError, "pad_id must be an int"),
        ({"allowed_max_length": 0}, ValueError, "allowed_max_length must be an int >= 1"),
        ({"allowed_max_length": -2}, ValueError, "allowed_max_length must be an int >= 1"),
        ({"mask_prompt": "no"}, TypeError, "mask_prompt must be True or False"),
        ({"batch": [([1, 2.5, 3], 1)]}, TypeError, "row 0"),
        ({"batch": [([1, 2, 3], 1.5)]}, TypeError, "prompt length of row 0"),
        ({"batch": [([1, 2, 3], -1)]}, ValueError, "prompt length of row 0"),
    ],
)
def test_collate_checks_its_arguments(kwargs, error, message):
    args = {"batch": [([1, 2, 3], 1)], "pad_id": 9} | kwargs
    with pytest.raises(error, match=message):
        sft.collate(**args)


def test_instruction_dataset_refuses_a_length_that_leaves_no_target(enc):
    with pytest.raises(ValueError, match="allowed_max_length must be an int >= 2"):
        sft.InstructionDataset([ENTRY], enc, allowed_max_length=0)


def test_phi3_responses_on_the_plain_encoding_name_extend_encoding(enc):
    model = tiny_lm(enc.n_vocab)
    with pytest.raises(ValueError, match="extend_encoding"):
        sft.generate_responses(model, enc, [ENTRY], template="phi3", max_new_tokens=2)


def test_a_prompt_longer_than_the_context_is_refused(enc):
    model = tiny_lm(enc.n_vocab, context=16)
    with pytest.raises(ValueError, match=r"entry 0's prompt is \d+ tokens.*context of 16"):
        sft.generate_responses(model, enc, [ENTRY], max_new_tokens=2)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1"),
        ({"batch_size": 2.5}, TypeError, "batch_size must be an int"),
    ],
)
def test_generate_responses_checks_its_arguments(enc, kwargs, error, message):
    model = tiny_lm(enc.n_vocab)
    with pytest.raises(error, match=message):
        sft.generate_responses(model, enc, [ENTRY], max_new_tokens=2, **kwargs)


# ------------------------------------------------------------------ tiny world ----
def test_article_reads_capitalised_vowels():
    assert tiny_world.article("Apple") == "an" and tiny_world.article("Egg") == "an"
    assert tiny_world.article("apple") == "an" and tiny_world.article("Kite") == "a"
    with pytest.raises(ValueError, match="empty"):
        tiny_world.article("")
    with pytest.raises(TypeError, match="word must be a str"):
        tiny_world.article(None)


@pytest.mark.parametrize(
    ("n_chars", "error"), [(NAN, TypeError), (2.5, TypeError), ("9", TypeError)]
)
def test_generate_corpus_checks_n_chars(world, n_chars, error):
    with pytest.raises(error, match="n_chars"):
        tiny_world.generate_corpus(world, n_chars, 1)


def test_generate_corpus_of_infinite_length_is_refused_instead_of_filling_the_memory():
    out = run_child(
        """
        from shared.tiny_world import generate_corpus, make_world
        try:
            generate_corpus(make_world(n_people=4), float("inf"), 1)
        except (TypeError, ValueError) as e:
            print("refused:", e)
        else:
            print("returned")
        """,
        timeout=30,
    )
    assert out.startswith("refused:") and "n_chars" in out, out


@pytest.mark.parametrize("seed", [None, 1.5, "1", True, -1])
def test_generators_refuse_seeds_that_are_not_reproducible(world, seed):
    """None seeds from the clock, -1 is the same stream as 1, 1.5 and "1" are hashed."""
    with pytest.raises((TypeError, ValueError), match="seed"):
        tiny_world.generate_corpus(world, 100, seed)
    with pytest.raises((TypeError, ValueError), match="seed"):
        tiny_world.make_world(seed=seed, n_people=4)
    with pytest.raises((TypeError, ValueError), match="seed"):
        make_instruction_data(world, seed=seed)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"n_people": 4.5}, TypeError, "n_people must be an int"),
        ({"n_people": True}, TypeError, "n_people must be an int"),
        ({"n_towns": 2.0}, TypeError, "n_towns must be an int"),
    ],
)
def test_make_world_checks_its_numbers(kwargs, error, message):
    with pytest.raises(error, match=message):
        tiny_world.make_world(**kwargs)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: tiny_world.number_words(True), TypeError, "handles the ints 0..99"),
        (lambda: tiny_world.number_words(3.0), TypeError, "handles the ints 0..99"),
        (lambda: tiny_world.plural(""), ValueError, "empty"),
        (lambda: tiny_world.plural(None), TypeError, "noun must be a str"),
        (lambda: misspell("", np.random), ValueError, "empty"),
    ],
)
def test_small_helpers_check_their_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_truth_statements_checks_n_and_a_world_without_false_values(world):
    with pytest.raises(TypeError, match="n must be an int"):
        truth_statements(world, 2.5)
    with pytest.raises(ValueError, match="n must be an int >= 0"):
        truth_statements(world, -1)
    one_town = tiny_world.make_world(seed=0, n_people=4, n_towns=1)
    with pytest.raises(ValueError, match="every person has the same town"):
        truth_statements(one_town, 50)


# ------------------------------------------------------------------------- BPE ----
@pytest.mark.parametrize(
    "ids", [[True, False], (True,), torch.tensor([True, False]), [1, np.True_]]
)
def test_bools_are_not_token_ids(ids):
    tok = bpe.load_tokenizer()
    with pytest.raises(TypeError, match="bool"):
        tok.decode(ids)
    with pytest.raises(TypeError, match="bool"):
        tok.token_bytes(True)


@pytest.mark.parametrize(
    "specials", [{"<|e|>": 100_000}, {"<|e|>": 4096}, {"<|a|>": 4095, "<|b|>": 4097}]
)
def test_special_ids_must_follow_the_ranks_without_a_gap(specials):
    """vocab_size is the largest id + 1: a gap would be rows of the embedding that no text
    can produce and ids that decode to nothing (100,000 gave 95,905 of them)."""
    tok = bpe.load_tokenizer()
    with pytest.raises(ValueError, match="without a gap"):
        BPETokenizer(tok.ranks, specials)
    assert BPETokenizer(tok.ranks, {"<|b|>": 4096, "<|a|>": 4095}).vocab_size == 4097


# ------------------------------------------------------------------------- GPT ----
@pytest.mark.parametrize(
    ("eos_id", "error", "message"),
    [
        (16, ValueError, r"eos_id 16 is outside the vocabulary \[0, 16\)"),
        (-1, ValueError, "eos_id -1 is outside"),
        (True, TypeError, "eos_id must be a token id"),
        (2.0, TypeError, "eos_id must be a token id"),
    ],
)
def test_generate_greedy_checks_eos_id(eos_id, error, message):
    model = tiny_lm(16, context=8)
    with pytest.raises(error, match=message):
        generate_greedy(model, torch.tensor([[1, 2]]), 3, eos_id=eos_id)


def test_generate_greedy_refuses_a_model_with_nan_weights():
    model = tiny_lm(16, context=8)
    with torch.no_grad():
        model.out_head.weight.fill_(NAN)
    with pytest.raises(ValueError, match="NaN.*weights finite"):
        generate_greedy(model, torch.tensor([[1, 2]]), 3)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_new_tokens": 2.5}, TypeError, "max_new_tokens must be an int"),
        ({"max_new_tokens": True}, TypeError, "max_new_tokens must be an int"),
        ({"context_length": 0}, ValueError, "context_length must be an int >= 1"),
        ({"context_length": -3}, ValueError, "context_length must be an int >= 1"),
        ({"idx": torch.zeros(1, 0, dtype=torch.long)}, ValueError, "prompt is empty"),
        ({"idx": [[1, 2]]}, TypeError, "must be a torch.Tensor"),
    ],
)
def test_generate_greedy_checks_its_arguments(kwargs, error, message):
    args = {"idx": torch.tensor([[1, 2]]), "max_new_tokens": 3} | kwargs
    with pytest.raises(error, match=message):
        generate_greedy(tiny_lm(16, context=8), **args)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: memory_bytes(CFG, 0), "dtype_bytes must be an int >= 1"),
        (lambda: memory_bytes(CFG, 2.5), "dtype_bytes must be an int"),
        (lambda: training_memory_estimate(CFG, batch_size=1.5), "batch_size must be an int"),
        (lambda: training_memory_estimate(CFG, dtype_bytes=-4), "dtype_bytes must be an int"),
        (lambda: training_memory_estimate(CFG, seq_len=2.5), "seq_len must be an int"),
    ],
)
def test_memory_estimates_check_their_numbers(call, message):
    with pytest.raises((TypeError, ValueError), match=message):
        call()


# -------------------------------------------------------------------- training ----
@pytest.mark.parametrize("smoothing", [NAN, INF, True, "0.1"])
def test_bigram_baseline_refuses_a_smoothing_that_is_not_a_positive_number(smoothing):
    with pytest.raises((TypeError, ValueError), match="smoothing"):
        bigram_baseline([0, 1, 2, 1], [0, 1, 2], 3, smoothing=smoothing)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (([0, 1.7, 2], [0, 1], 3), TypeError, "train_ids"),
        (([0, 1, 2], torch.tensor([0.0, 1.0]), 3), TypeError, "val_ids"),
        (([0, 1, 2], [0, 1], 2.5), TypeError, "vocab_size must be an int"),
    ],
)
def test_bigram_baseline_refuses_ids_that_are_not_ints(args, error, message):
    with pytest.raises(error, match=message):
        bigram_baseline(*args)


@pytest.mark.parametrize("max_batches", [2.5, True])
def test_evaluate_loss_checks_max_batches(max_batches):
    model = tiny_lm(16, context=8)
    batches = [(torch.tensor([[1, 2]]), torch.tensor([[2, 3]]))] * 3
    with pytest.raises((TypeError, ValueError), match="max_batches"):
        evaluate_loss(model, batches, max_batches=max_batches)


# ------------------------------------------------------------------ GPT-2 files ----
@pytest.mark.parametrize("tie", ["false", "true", 0, 1, None])
def test_gpt2_config_refuses_a_tie_flag_that_is_not_a_bool(tie):
    with pytest.raises(TypeError, match="tie_word_embeddings must be true or false"):
        gpt2_config_from_hf(HF_CFG | {"tie_word_embeddings": tie})


def test_gpt2_config_accepts_bools_and_refuses_other_attention_math():
    assert not gpt2_config_from_hf(HF_CFG | {"tie_word_embeddings": False}).tie_weights
    assert gpt2_config_from_hf(HF_CFG).tie_weights
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx"):
        gpt2_config_from_hf(HF_CFG | {"scale_attn_by_inverse_layer_idx": True})
    with pytest.raises(ValueError, match="scale_attn_weights"):
        gpt2_config_from_hf(HF_CFG | {"scale_attn_weights": False})
    with pytest.raises(ValueError, match="n_inner"):
        gpt2_config_from_hf(HF_CFG | {"n_inner": 32})
    assert gpt2_config_from_hf(HF_CFG | {"n_inner": None, "n_embd": 16}).emb_dim == 16
    with pytest.raises(TypeError, match="config"):
        gpt2_config_from_hf(["vocab_size"])


@pytest.mark.parametrize("bad", ["nan", "int"])
def test_gpt2_state_dict_with_nan_or_integer_weights_is_refused(bad):
    model = GPTModel(GPTConfig(16, 8, 16, 2, 1, qkv_bias=True, tie_weights=True))
    state = export_gpt2_state_dict(model)
    key = "transformer.h.0.mlp.c_fc.weight"
    state[key] = state[key].fill_(NAN) if bad == "nan" else state[key].long()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="h.0.mlp.c_fc.weight"):
        load_gpt2_state_dict(model, state)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------ sweep ----
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"seed": None}, TypeError, "seed must be an int"),
        ({"seed": 1.5}, TypeError, "seed must be an int"),
        ({"shuffle": "no"}, TypeError, "shuffle must be True or False"),
        ({"mask_prompt": 1}, TypeError, "mask_prompt must be True or False"),
        ({"allowed_max_length": -1}, ValueError, "allowed_max_length must be an int >= 1"),
    ],
)
def test_instruction_batches_check_their_settings_at_once(enc, kwargs, error, message):
    dataset = sft.InstructionDataset([ENTRY] * 4, enc)
    with pytest.raises(error, match=message):
        sft.InstructionBatches(dataset, 2, **kwargs)


@pytest.mark.parametrize("i", [True, 1.0])
def test_instruction_batch_index_must_be_an_int(enc, i):
    batches = sft.InstructionBatches(sft.InstructionDataset([ENTRY] * 4, enc), 2)
    with pytest.raises(TypeError, match="batch index must be an int"):
        batches[i]


@pytest.mark.parametrize("new_size", [20.0, True, "20"])
def test_extend_vocabulary_needs_an_int_size(new_size):
    with pytest.raises(TypeError, match="new_size must be an int"):
        sft.extend_vocabulary(tiny_lm(16, context=8), new_size)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: GPTConfig(16, 8, 16, 2, 1, drop_rate=False), ValueError, "drop_rate"),
        (lambda: GPTModel(CFG)([[1, 2]]), TypeError, "must be a torch.Tensor"),
        (lambda: LayerNorm(4, eps=NAN), ValueError, "eps"),
        (lambda: perplexity("3"), TypeError, "loss"),
        (lambda: perplexity(True), TypeError, "loss"),
    ],
)
def test_model_pieces_refuse_values_of_the_wrong_kind(call, error, message):
    with pytest.raises(error, match=message):
        call()
