"""Damaged tensor data inside a readable file is refused, never loaded as weights."""

from __future__ import annotations

import struct
import zipfile

import pytest
import torch

from shared.checkpoints import CheckpointError, load_checkpoint, load_model, save_checkpoint
from shared.gpt import GPTConfig, GPTModel
from shared.training import make_optimizer, next_token_loss

CFG = GPTConfig(vocab_size=32, context_length=8, emb_dim=16, n_heads=2, n_layers=1)

pytestmark = pytest.mark.usefixtures("one_thread")


def model_and_optimizer(seed: int = 0):
    torch.manual_seed(seed)
    model = GPTModel(CFG)
    opt = make_optimizer(model, lr=1e-2)
    x = torch.randint(0, CFG.vocab_size, (2, CFG.context_length + 1))
    next_token_loss(model, x[:, :-1], x[:, 1:]).backward()
    opt.step()
    return model, opt


def data_records(path) -> list[tuple[str, int, int]]:
    """(name, offset of the first data byte, size) of every tensor record in the zip."""
    out = []
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if "/data/" in info.filename and info.file_size >= 64:
                name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 :][:4])
                start = info.header_offset + 30 + name_len + extra_len
                out.append((info.filename, start, info.file_size))
    return out


def overwrite(path, start: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[start : start + len(data)] = data
    path.write_bytes(bytes(raw))


PATTERNS = {
    "nan": b"\xff" * 16,  # float32 NaNs
    "inf": struct.pack("<4f", *[float("inf")] * 4),
    "zeros": b"\x00" * 16,  # finite: only the checksum can tell
    "big": struct.pack("<4f", 1e30, -1e30, 3.0, 4.0),
    "one_bit": None,  # flip a single bit
}


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("record", [0, 1, -1])
def test_overwritten_tensor_bytes_are_refused(tmp_path, pattern, record):
    model, opt = model_and_optimizer()
    path = save_checkpoint(tmp_path / "ck.pt", model, opt)
    name, start, size = data_records(path)[record]
    at = start + size // 2 - (size // 2) % 4
    data = PATTERNS[pattern]
    if data is None:
        data = bytes([path.read_bytes()[at] ^ 0x10])
    overwrite(path, at, data)
    victim, victim_opt = model_and_optimizer(seed=1)
    before = {k: v.clone() for k, v in victim.state_dict().items()}
    opt_before = victim_opt.state_dict()["state"][0]["exp_avg"].clone()
    with pytest.raises(CheckpointError, match=r"ck\.pt is corrupt"):
        load_checkpoint(path, victim, victim_opt)
    assert all(torch.equal(before[k], v) for k, v in victim.state_dict().items())
    assert torch.equal(opt_before, victim_opt.state_dict()["state"][0]["exp_avg"])
    with pytest.raises(CheckpointError, match=r"ck\.pt is corrupt"):
        load_model(path)


def test_the_message_names_the_damaged_part(tmp_path):
    model, opt = model_and_optimizer()
    path = save_checkpoint(tmp_path / "ck.pt", model, opt, extra={"t": torch.arange(64.0)})
    checks = {}
    for name, start, _size in data_records(path):
        fresh = tmp_path / f"copy_{len(checks)}.pt"
        fresh.write_bytes(path.read_bytes())
        overwrite(fresh, start + 8, b"\x00\x00\x80\x7f")  # +inf
        with pytest.raises(CheckpointError) as info:
            load_model(fresh)
        checks[name] = str(info.value)
    parts = {msg.split("the tensors of ")[1].split(" ")[0] for msg in checks.values()}
    assert parts == {"'model'", "'optimizer'", "'extra'"}


def old_style_save(path, model) -> None:
    """A file as written before checksums existed."""
    payload = {
        "format": "llms-from-scratch-checkpoint",
        "version": 1,
        "config": CFG.to_dict(),
        "model": model.state_dict(),
        "optimizer": None,
        "step": 0,
        "data_position": 0,
        "extra": {},
    }
    torch.save(payload, path)


def test_old_files_without_checksums_still_load(tmp_path):
    model, _ = model_and_optimizer()
    old_style_save(tmp_path / "old.pt", model)
    loaded = load_model(tmp_path / "old.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), loaded.parameters()))
    assert loaded.tokenizer_identity is None


@pytest.mark.parametrize("pattern", ["nan", "inf", "big"])
def test_old_files_with_non_finite_weights_are_refused(tmp_path, pattern):
    model, _ = model_and_optimizer()
    path = tmp_path / "old.pt"
    old_style_save(path, model)
    name, start, size = data_records(path)[0]
    overwrite(path, start, PATTERNS[pattern] if pattern != "big" else b"\xff\xff\xff\x7f")
    with pytest.raises(CheckpointError, match=r"old\.pt holds non-finite .*weights"):
        load_model(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_not_saved(tmp_path, value):
    model, _ = model_and_optimizer()
    with torch.no_grad():
        model.out_head.weight[0, 0] = value
    with pytest.raises(ValueError, match=r"non-finite.*out_head\.weight.*ck\.pt"):
        save_checkpoint(tmp_path / "ck.pt", model)
    assert not (tmp_path / "ck.pt").exists()


def test_structurally_damaged_payload_is_refused(tmp_path):
    model, _ = model_and_optimizer()
    path = tmp_path / "odd.pt"
    payload = {
        "format": "llms-from-scratch-checkpoint",
        "version": 1,
        "config": CFG.to_dict(),
        "model": {k: v.tolist() for k, v in model.state_dict().items()},
        "optimizer": None,
        "step": 0,
        "data_position": 0,
        "extra": {},
    }
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"odd\.pt is corrupt.*not tensors"):
        load_model(path)
    payload["model"], payload["step"] = model.state_dict(), "seven"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"odd\.pt is corrupt: 'step'"):
        load_model(path)
