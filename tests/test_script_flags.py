"""The training scripts refuse a bad flag before any work, so no release is replaced by a run
that did not do what was asked (a step count of 0 once meant "the default")."""

import importlib.util

import pytest

import shared

SCRIPTS = shared.REPO_DIR / "data" / "scripts"
BAD = [
    ("sft", ["--max-steps", "0"]),
    ("sft", ["--max-lr", "0"]),
    ("sft", ["--checkpoint-every", "-1"]),
    ("sft", ["--compare-steps", "x"]),
    ("judge", ["--steps", "0"]),
    ("judge", ["--eval-scale", "-1"]),
    ("judge", ["--eval-scale", "1.5"]),
    ("judge", ["--max-lr", "nan"]),
    ("judge", ["--long-steps", "0"]),
    ("rm", ["--steps", "0"]),
    ("dpo", ["--steps", "0"]),
    ("dpo", ["--beta", "-0.1"]),
    ("dpo", ["--round2-prompts", "0"]),
    ("ppo", ["--steps", "0"]),
    ("ppo", ["--kl-coef", "inf"]),
    ("ppo", ["--eval-every", "0"]),
    ("pretrain", ["--max-steps", "0"]),
    ("pretrain", ["--batch-size", "0"]),
    ("pretrain", ["--lr", "0"]),
    ("pretrain", ["--threads", "0"]),
    ("rm", ["--seed", "-1"]),
]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("name", "argv"), BAD, ids=[f"{n} {' '.join(a)}" for n, a in BAD])
def test_a_bad_flag_stops_the_script_before_any_work(name, argv, monkeypatch, capsys):
    script = load(name)

    def no_work(*args, **kwargs):
        raise AssertionError("the script started working on a bad flag")

    monkeypatch.setattr(script, "start_run", no_work, raising=False)
    with pytest.raises(SystemExit) as stop:
        script.main(argv)
    assert stop.value.code == 2  # argparse's usage error
    err = capsys.readouterr().err
    assert "expected" in err or "invalid" in err
