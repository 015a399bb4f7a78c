"""Templates, new special tokens, the collate function, batches and batched responses."""

import warnings

import pytest
import torch

from shared import bpe, prompts, sft
from shared.gpt import GPTConfig, GPTModel
from shared.training import make_optimizer, train

ENC = bpe.get_encoding()
EOT = ENC.eot_token
SPELLING = {
    "instruction": "Identify the correct spelling of the following word.",
    "input": "Ocassion",
    "output": "The correct spelling is 'Occasion.'",
}


def test_alpaca_template_is_the_lectures():
    text = prompts.format_example(SPELLING)
    assert text == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nIdentify the correct spelling of the "
        "following word.\n\n### Input:\nOcassion\n\n### Response:\n The correct spelling is "
        "'Occasion.'"
    )  # the lecture's template; the response follows it after a space (RESPONSE_LEAD)
    no_input = prompts.format_prompt({**SPELLING, "input": ""})
    assert "### Input" not in no_input and no_input.endswith("### Response:\n")


def test_phi3_template():
    assert prompts.format_example(SPELLING, "phi3") == (
        "<|user|>\nIdentify the correct spelling of the following word.\nOcassion<|end|>\n"
        "<|assistant|>\n The correct spelling is 'Occasion.'<|end|>"
    )
    with pytest.raises(ValueError, match="template must be one of"):
        prompts.format_prompt(SPELLING, "chatml")


def test_the_response_starts_with_a_word_the_base_model_knows():
    prompt = prompts.format_prompt({"instruction": "Where does Nabo live?", "input": ""})
    full = prompts.format_example(
        {"instruction": "Where does Nabo live?", "input": "", "output": "Nabo lives in Corton."}
    )
    ids, prompt_ids = ENC.encode(full), ENC.encode(prompt)
    assert ids[: len(prompt_ids)] == prompt_ids  # the prompt's tokens do not change
    assert ids[len(prompt_ids)] == ENC.encode(" Nabo")[0]


def test_extend_encoding_keeps_old_ids():
    enc = prompts.extend_encoding(ENC, prompts.PHI3_SPECIALS)
    assert enc.n_vocab == ENC.n_vocab + 4
    text = "Nabo lives in Rushcombe.<|endoftext|>"
    assert enc.encode(text, allowed_special="all") == ENC.encode(text, allowed_special="all")
    ids = enc.encode("<|user|>hi<|end|>", allowed_special="all")
    assert ids[0] == ENC.n_vocab and ids[-1] == ENC.n_vocab + 2
    with pytest.raises(TypeError, match="list of strings"):
        prompts.extend_encoding(ENC, "<|user|>")


@pytest.mark.parametrize("tie", [True, False])
def test_extend_vocabulary_keeps_old_outputs(tie):
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(50, 16, 32, 2, 2, tie_weights=tie)).eval()
    idx = torch.randint(0, 50, (2, 8))
    before = model(idx)
    sft.extend_vocabulary(model, 53)
    after = model(idx)
    assert after.shape == (2, 8, 53) and model.cfg.vocab_size == 53
    torch.testing.assert_close(after[..., :50], before)
    assert (model.out_head.weight is model.tok_emb.weight) == tie
    with pytest.raises(ValueError, match="smaller"):
        sft.extend_vocabulary(model, 10)


def reference_collate(batch, pad_id, allowed_max_length=None, mask_prompt=False):
    """The collate rules written as plain loops, to check the tensor version against."""
    width = max(len(ids) for ids, _ in batch)
    xs, ys = [], []
    for ids, prompt_len in batch:
        seq = list(ids) + [pad_id] * (width - len(ids))
        x, y = seq[:-1], seq[1:]
        for t in range(len(y)):
            if t >= len(ids) - 1 or (mask_prompt and t < prompt_len - 1):
                y[t] = -100
        if allowed_max_length:
            x, y = x[:allowed_max_length], y[:allowed_max_length]
        xs.append(x)
        ys.append(y)
    return torch.tensor(xs), torch.tensor(ys)


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("max_len", [None, 4])
def test_collate_matches_loops(mask, max_len):
    batch = [([5, 6, 7, EOT], 2), ([8, 9, EOT], 1), ([1, 2, 3, 4, 5, 6, EOT], 3)]
    x, y = sft.collate(batch, EOT, allowed_max_length=max_len, mask_prompt=mask)
    rx, ry = reference_collate(batch, EOT, max_len, mask)
    assert torch.equal(x, rx) and torch.equal(y, ry)


def test_collate_keeps_first_end_of_text_and_ignores_the_rest():
    x, y = sft.collate([([5, 6, EOT], 0), ([5, 6, 7, 8, EOT], 0)], EOT)
    assert x.tolist()[0] == [5, 6, EOT, EOT]
    assert y.tolist()[0] == [6, EOT, -100, -100]
    assert y.tolist()[1] == [6, 7, 8, EOT]


def test_dataset_truncates_and_reports():
    entries = [SPELLING, {**SPELLING, "output": "word " * 200}]
    with pytest.warns(UserWarning, match="1 of 2 examples were longer"):
        ds = sft.InstructionDataset(entries, ENC, allowed_max_length=100)
    assert ds.truncated == [1] and len(ds[1][0]) == 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sft.InstructionDataset([SPELLING], ENC, allowed_max_length=1000)


def test_dataset_rejects_bad_entries_and_missing_specials():
    with pytest.raises(ValueError, match="entry 1 has no 'output'"):
        sft.InstructionDataset([SPELLING, {"instruction": "x", "input": ""}], ENC)
    with pytest.raises(ValueError, match="extend_encoding"):
        sft.InstructionDataset([SPELLING], ENC, template="phi3")


def tiny_model():
    torch.manual_seed(0)
    return GPTModel(GPTConfig(ENC.n_vocab, 128, 32, 2, 1))


def test_batches_are_deterministic_and_train_runs(one_thread):
    entries = [{**SPELLING, "input": w} for w in ("cat", "dgo", "frgo", "hosre", "ducc", "pnoy")]
    ds = sft.InstructionDataset(entries, ENC)
    batches = sft.InstructionBatches(ds, 2, seed=1, mask_prompt=True)
    assert len(batches) == 3
    for i in range(4):
        assert all(torch.equal(a, b) for a, b in zip(batches[i], batches[i]))
    x, y = batches[0]
    assert (y == -100).sum() > 0 and x.shape == y.shape
    model = tiny_model()
    history = train(model, make_optimizer(model, 1e-3), batches, batches, max_steps=3,
                    eval_every=3, eval_batches=1, progress=False)  # fmt: skip
    assert len(history["val_loss"]) == 1
    with pytest.raises(ValueError, match="fewer than one batch"):
        sft.InstructionBatches(ds, 10)


def test_batched_responses_equal_one_by_one(one_thread):
    model = tiny_model().eval()
    entries = [{**SPELLING, "input": w} for w in ("cat", "dog", "horse", "kite")]
    together = sft.generate_responses(model, ENC, entries, max_new_tokens=5)
    alone = [sft.generate_responses(model, ENC, [e], max_new_tokens=5)[0] for e in entries]
    assert together == alone


def test_sampled_responses_repeat_with_the_same_seed(one_thread):
    model = tiny_model().eval()
    entries = [{**SPELLING, "input": w} for w in ("cat", "dog", "horse", "kite")]

    def sample(seed):
        g = torch.Generator().manual_seed(seed)
        return sft.generate_responses(
            model, ENC, entries, max_new_tokens=6, temperature=1.0, generator=g
        )

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)
    assert (
        prompts.format_response("x", "phi3") == " x<|end|>" and prompts.format_response("x") == " x"
    )


def test_matches_and_table():
    assert sft.exact_match(" Nabo lives in Rushcombe. ", "Nabo lives in Rushcombe.")
    assert not sft.exact_match("nabo lives in rushcombe", "Nabo lives in Rushcombe.")
    assert sft.normalized_match("nabo lives in rushcombe", "Nabo lives in Rushcombe.")
    e = {"kind": "town", "instruction": "Where does Nabo live?", "input": "",
         "answer": "Rushcombe", "output": "Nabo lives in Rushcombe."}  # fmt: skip
    table = sft.accuracy_by_kind([e, e], ["Nabo lives in Rushcombe.", "Rushcombe"])
    assert table.loc["all", "exact"] == 0.5 and table.loc["all", "correct"] == 1.0
    assert table.loc["town", "n"] == 2


def test_the_extended_record_system_prompt_and_history():
    """The lecture's extended record: an optional system prompt and earlier rounds."""
    entry = {
        "instruction": "And Misi?",
        "input": "",
        "system": "You answer questions about the tiny world.",
        "history": [["Where does Nabo live?", "Nabo lives in Corton."]],
    }
    assert prompts.format_prompt(entry, "phi3") == (
        "<|system|>\nYou answer questions about the tiny world.<|end|>\n"
        "<|user|>\nWhere does Nabo live?<|end|>\n<|assistant|>\n Nabo lives in Corton.<|end|>\n"
        "<|user|>\nAnd Misi?<|end|>\n<|assistant|>\n"
    )
    assert prompts.format_prompt(entry) == (
        "You answer questions about the tiny world.\n\n### Instruction:\nWhere does Nabo live?"
        "\n\n### Response:\n Nabo lives in Corton.\n\n### Instruction:\nAnd Misi?"
        "\n\n### Response:\n"
    )
    plain = {"instruction": "And Misi?", "input": ""}
    assert prompts.format_prompt({**plain, "system": "", "history": []}) == prompts.format_prompt(
        plain
    )
    for bad in ({"history": "Nabo"}, {"history": [["only one"]]}, {"system": None}):
        with pytest.raises(TypeError, match="system|history"):
            prompts.format_prompt({**plain, **bad})
