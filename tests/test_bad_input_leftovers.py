"""Temporary files left by a writer that was killed mid-save are removed by the next save
to the same folder; temporary files of live writers, and other files, are left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from shared.checkpoints import save_checkpoint
from shared.files import OLD_TEMPORARY_AGE, atomic_open, remove_stale_temporaries, write_text
from shared.gpt import GPTConfig, GPTModel

CFG = GPTConfig(vocab_size=32, context_length=8, emb_dim=16, n_heads=2, n_layers=1)
REPO = Path(__file__).resolve().parent.parent


def dead_pid() -> int:
    """The pid of a process that has exited (and been waited for)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_writer_killed_mid_save_leaves_a_temporary_that_the_next_save_removes(tmp_path):
    target = tmp_path / "ck.pt"
    script = (  # shared/files.py alone (the package would import torch: slow to start)
        "import importlib.util, sys, time\n"
        "spec = importlib.util.spec_from_file_location('files', sys.argv[2])\n"
        "files = importlib.util.module_from_spec(spec); spec.loader.exec_module(files)\n"
        "with files.atomic_open(sys.argv[1], 'wb') as f:\n"
        "    f.write(b'x' * 100_000); f.flush(); print('writing', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(target), str(REPO / "shared" / "files.py")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert len(leftovers) == 1 and leftovers[0].name.startswith(".ck.pt.")
        # while the writer lives, its temporary file is not stale
        assert remove_stale_temporaries(tmp_path) == []
        proc.send_signal(signal.SIGKILL)  # no chance to clean up
        proc.wait()
    finally:
        proc.kill()
    assert leftovers[0].exists() and not target.exists()
    save_checkpoint(target, GPTModel(CFG))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


@pytest.mark.parametrize(
    "name",
    [
        ".ck.pt.{pid}.abcd1234.tmp",  # the same target
        ".other.pt.{pid}.x_y_z_00.tmp",  # another target in the same folder
        ".notes.txt.{pid}.aaaaaaaa.tmp",  # a text file written by write_text
        "..hidden.{pid}.abcdefgh.tmp",
    ],
)
def test_stale_temporaries_of_dead_writers_are_removed(tmp_path, name):
    stale = tmp_path / name.format(pid=dead_pid())
    stale.write_bytes(b"\0" * 1000)
    write_text(tmp_path / "notes.txt", "hello")
    assert not stale.exists()


@pytest.mark.parametrize(
    "name",
    [
        ".ck.pt.{me}.abcd1234.tmp",  # this process: maybe another thread is writing it
        ".ck.pt.1.abcd1234.tmp",  # pid 1 is alive
        "ck.pt.{dead}.abcd1234.tmp",  # not hidden: not one of ours
        ".ck.pt.{dead}.abcd1234.bak",
        ".ck.pt.{dead}.abc.tmp",  # not the random part mkstemp makes
        ".ck.pt.abcd1234.tmp",  # old-style name, but recent
        "ck.pt",
    ],
)
def test_other_files_are_left_alone(tmp_path, name):
    keep = tmp_path / name.format(me=os.getpid(), dead=dead_pid())
    keep.write_bytes(b"keep")
    save_checkpoint(tmp_path / "model.pt", GPTModel(CFG))
    assert keep.exists()


def test_old_style_temporaries_are_removed_once_abandoned(tmp_path):
    old = tmp_path / ".ck.pt.abcd1234.tmp"
    old.write_bytes(b"x")
    then = time.time() - OLD_TEMPORARY_AGE - 60
    os.utime(old, (then, then))
    with atomic_open(tmp_path / "a.bin") as f:
        f.write(b"a")
    assert not old.exists()


def test_a_directory_with_a_temporary_name_is_not_touched(tmp_path):
    folder = tmp_path / f".ck.pt.{dead_pid()}.abcd1234.tmp"
    folder.mkdir()
    save_checkpoint(tmp_path / "ck.pt", GPTModel(CFG))
    assert folder.is_dir()


def test_a_missing_folder_is_not_an_error():
    assert remove_stale_temporaries("/nonexistent/folder/for/sure") == []


def test_failed_save_leaves_nothing_behind(tmp_path):
    with pytest.raises(RuntimeError), atomic_open(tmp_path / "x.bin") as f:
        f.write(b"partial")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    torch.manual_seed(0)
