"""The pretraining pieces: loss, optimizer groups, schedule, batches, the loop and resume."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from shared.gpt import GPTConfig, GPTModel
from shared.training import (
    TokenBatches,
    bigram_baseline,
    evaluate_loss,
    fact_probe_accuracy,
    lr_at,
    make_optimizer,
    next_token_loss,
    perplexity,
    train,
)

CFG = GPTConfig(vocab_size=32, context_length=16, emb_dim=32, n_heads=2, n_layers=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(seed: int = 0, cfg: GPTConfig = CFG) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(cfg)


def pattern_ids(n: int = 3000, seed: int = 0) -> torch.Tensor:
    """A learnable stream: runs of 'count up by a random step', so context matters."""
    g = torch.Generator().manual_seed(seed)
    out, x = [], 0
    while len(out) < n:
        step = int(torch.randint(1, 4, (), generator=g))
        for _ in range(8):
            x = (x + step) % CFG.vocab_size
            out.append(x)
    return torch.tensor(out[:n])


# --------------------------------------------------------------------------- loss


def test_next_token_loss_is_mean_negative_log_prob_of_targets():
    model = make_model()
    x = torch.randint(0, CFG.vocab_size, (3, 9))
    inputs, targets = x[:, :-1], x[:, 1:]
    log_probs = torch.log_softmax(model(inputs), dim=-1)  # (3, 8, V)
    by_hand = -log_probs.gather(-1, targets[..., None]).mean()
    assert torch.allclose(next_token_loss(model, inputs, targets), by_hand, atol=1e-6)


def test_untrained_loss_is_close_to_log_vocab():
    # N(0, 0.02) weights give near-zero logits: a near-uniform guess over the vocabulary.
    cfg = dataclasses.replace(CFG, vocab_size=500)
    model = make_model(cfg=cfg)
    x = torch.randint(0, 500, (4, 17))
    loss = next_token_loss(model, x[:, :-1], x[:, 1:]).item()
    assert abs(loss - math.log(500)) < 0.05


def test_evaluate_loss_weights_batches_by_tokens_and_restores_mode():
    model = make_model()
    x = torch.randint(0, CFG.vocab_size, (5, 9))
    batches = [(x[:4, :-1], x[:4, 1:]), (x[4:, :-1], x[4:, 1:])]  # sizes 4 and 1
    whole = next_token_loss(model, x[:, :-1], x[:, 1:]).item()
    assert evaluate_loss(model, batches) == pytest.approx(whole, abs=1e-6)
    assert evaluate_loss(model, batches, max_batches=1) == pytest.approx(
        next_token_loss(model, *batches[0]).item(), abs=1e-6
    )
    assert model.training
    with pytest.raises(ValueError, match="no batches"):
        evaluate_loss(model, [])


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(torch.tensor(math.log(7.0))) == pytest.approx(7.0)


# --------------------------------------------------------------------------- optimizer


def test_weight_decay_groups_follow_parameter_dims():
    model = make_model(cfg=dataclasses.replace(CFG, tie_weights=True, qkv_bias=True))
    opt = make_optimizer(model, lr=1e-3, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() == 1 for p in no_decay["params"])
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))  # tied counted once
    # Per block: 4 attention matrices + 2 feed-forward = 6 matrices; 3 qkv biases, out_proj
    # bias, 2 ff biases, 2 LayerNorms x 2 = 10 vectors. Plus tok/pos embeddings, final norm.
    assert len(decay["params"]) == 6 * CFG.n_layers + 2
    assert len(no_decay["params"]) == 10 * CFG.n_layers + 2


def test_lr_schedule_warmup_then_cosine():
    kw = dict(max_lr=1.0, warmup_steps=10, total_steps=110, min_lr=0.1)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.55)  # halfway through the cosine: the middle
    assert lr_at(110, **kw) == lr_at(500, **kw) == 0.1
    values = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert lr_at(5, max_lr=1.0, warmup_steps=0, total_steps=10) < 1.0  # no warmup works
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_at(0, 1.0, warmup_steps=20, total_steps=10)
    with pytest.raises(ValueError, match="min_lr"):
        lr_at(0, 1.0, 1, 10, min_lr=2.0)


# --------------------------------------------------------------------------- batches


def test_token_batches_are_a_pure_function_of_seed_and_index():
    ids = torch.arange(1000)  # distinct ids: a window's first id tells where it starts
    a, b = TokenBatches(ids, 16, 4, seed=3), TokenBatches(ids, 16, 4, seed=3)
    assert torch.equal(a[5][0], b[5][0]) and torch.equal(a[20][0], b[20][0])
    assert torch.equal(a[20][0], a[20][0]) and torch.equal(
        a[1][0], TokenBatches(ids, 16, 4, seed=3)[1][0]
    )
    assert not torch.equal(a[0][0], TokenBatches(ids, 16, 4, seed=4)[0][0])
    x, y = a[0]
    assert x.shape == y.shape == (4, 16) and torch.equal(x[:, 1:], y[:, :-1])
    # One epoch visits each window at most once (the remainder is dropped).
    starts = torch.cat([a[i][0][:, 0] for i in range(len(a))])
    assert len(a) == 62 // 4 and len(set(starts.tolist())) == len(starts)
    assert not torch.equal(a[0][0], a[len(a)][0])  # epoch 2 is shuffled differently


def test_token_batches_ranks_split_the_global_batch():
    ids = torch.arange(2000) % CFG.vocab_size
    whole = TokenBatches(ids, 16, 8, seed=1)
    shards = [TokenBatches(ids, 16, 8, seed=1, rank=r, world_size=2) for r in range(2)]
    for i in (0, 7, 100):
        assert torch.equal(torch.cat([s[i][0] for s in shards]), whole[i][0])
    with pytest.raises(ValueError, match="multiple of world_size"):
        TokenBatches(ids, 16, 7, world_size=2)


# --------------------------------------------------------------------------- the loop


def run(steps, init_seed=0, **kwargs):
    torch.manual_seed(init_seed)
    model = GPTModel(CFG)
    opt = make_optimizer(model, lr=3e-3)
    batches = TokenBatches(pattern_ids(), CFG.context_length, 8, seed=0)
    val = TokenBatches(pattern_ids(seed=99), CFG.context_length, 8, shuffle=False)
    schedule = kwargs.pop("lr_schedule", lambda s: lr_at(s, 3e-3, 5, 40, 3e-4))
    history = train(
        model, opt, batches, val, max_steps=steps, lr_schedule=schedule, eval_every=10,
        eval_batches=3, progress=False, **kwargs,
    )  # fmt: skip
    return model, history


def test_train_learns_and_records_history():
    _, history = run(40)
    assert history["steps"] == [10, 20, 30, 40]
    assert history["tokens_seen"] == [10 * 8 * 16 * k for k in (1, 2, 3, 4)]
    assert history["lr"][-1] == pytest.approx(lr_at(39, 3e-3, 5, 40, 3e-4))
    assert history["val_loss"][-1] < history["val_loss"][0] - 0.5
    assert history["val_loss"][-1] < math.log(CFG.vocab_size) - 1.0


def test_train_is_deterministic_and_resume_matches_uninterrupted(tmp_path):
    seen = []
    model_a, hist_a = run(
        40,
        checkpoint_path=tmp_path / "a_{step}.pt",
        checkpoint_every=20,
        on_eval=lambda step, m: seen.append(step),
    )
    assert seen == [10, 20, 30, 40]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_20.pt", "a_40.pt"]
    _, hist_again = run(40)
    assert hist_again["val_loss"] == hist_a["val_loss"]  # same seed, same numbers, exactly

    model_b, hist_b = run(40, init_seed=7, resume_from=tmp_path / "a_20.pt")  # init replaced
    for key in ("steps", "tokens_seen", "train_loss", "val_loss", "lr"):
        assert hist_b[key] == hist_a[key], key
    for (name, pa), pb in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_resume_uses_the_data_position(tmp_path):
    # The same checkpoint resumed from a different data position gives different losses,
    # so the equality above really depends on where in the data the run continues.
    run(20, checkpoint_path=tmp_path / "mid.pt", checkpoint_every=20)
    ckpt = torch.load(tmp_path / "mid.pt", weights_only=True)
    assert (ckpt["step"], ckpt["data_position"]) == (20, 20)
    ckpt["data_position"] = 3
    torch.save(ckpt, tmp_path / "moved.pt")
    _, resumed = run(40, resume_from=tmp_path / "mid.pt")
    _, moved = run(40, resume_from=tmp_path / "moved.pt")
    assert resumed["val_loss"][-1] != moved["val_loss"][-1]


def test_gradient_clipping_bounds_the_update():
    # With clipping at a tiny norm and plain SGD, one step moves the weights by <= lr * norm.
    torch.manual_seed(0)
    model = GPTModel(CFG)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    batches = TokenBatches(pattern_ids(), CFG.context_length, 8)
    train(model, opt, batches, [batches[0]], max_steps=1, grad_clip=1e-3, progress=False)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert 0 < (after - before).norm().item() <= 1e-3 * (1 + 1e-4)


def test_train_checks_its_arguments():
    batches = TokenBatches(pattern_ids(), CFG.context_length, 8, world_size=2)
    model = make_model()
    with pytest.raises(ValueError, match="world_size=2"):
        train(model, make_optimizer(model, 1e-3), batches, [], max_steps=1, progress=False)
    batches = TokenBatches(pattern_ids(), CFG.context_length, 8)
    with pytest.raises(ValueError, match="eval_every"):
        train(model, make_optimizer(model, 1e-3), batches, [], 5, eval_every=0, progress=False)
    with pytest.raises(ValueError, match="checkpoint_path"):
        train(model, make_optimizer(model, 1e-3), batches, [], 5, checkpoint_every=2)


# --------------------------------------------------------------------------- measures


def test_bigram_baseline_matches_hand_count():
    train_ids, val_ids = [0, 1, 0, 1, 0, 2], [0, 1, 2]
    # Counts after 0: {1: 2, 2: 1} of 3; after 1: {0: 2} of 2. V = 3, k = 0.5.
    p01 = (2 + 0.5) / (3 + 1.5)
    p12 = (0 + 0.5) / (2 + 1.5)
    result = bigram_baseline(train_ids, val_ids, vocab_size=3, smoothing=0.5)
    expected = -(math.log(p01) + math.log(p12)) / 2
    assert result["val_loss"] == pytest.approx(expected)
    assert result["val_perplexity"] == pytest.approx(math.exp(expected))
    with pytest.raises(ValueError, match="smoothing"):
        bigram_baseline(train_ids, val_ids, 3, smoothing=0)
    with pytest.raises(ValueError, match="val_ids"):
        bigram_baseline(train_ids, [0, 5], 3)


def test_bigram_baseline_learns_a_deterministic_sequence():
    ids = torch.arange(1000) % 50  # every token has exactly one successor
    assert bigram_baseline(ids, ids[:100], 50, smoothing=1e-4)["val_perplexity"] < 1.01


class CharEncoding:
    """A stand-in tokenizer: one token per character (ids are code points)."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)


class Successor(torch.nn.Module):
    """A 'model' whose greedy next token is always the previous token + 1."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = GPTConfig(vocab_size=128, context_length=32, emb_dim=2, n_heads=1, n_layers=1)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return F.one_hot((idx + 1) % 128, 128).float() + self.dummy


def test_fact_probe_accuracy_counts_exact_token_matches():
    Probe = dataclasses.make_dataclass("Probe", ["prompt", "answer"])
    probes = [Probe("abc", "de"), Probe("abc", "dx"), Probe("klmn", "o"), Probe("x", "yz{")]
    accuracy, results = fact_probe_accuracy(Successor(), CharEncoding(), probes)
    assert accuracy == 0.75
    assert [r["correct"] for r in results] == [True, False, True, True]
    assert results[1] == {"prompt": "abc", "answer": "dx", "predicted": "de", "correct": False}
