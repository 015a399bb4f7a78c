"""A fresh ``build_corpora`` reproduces the committed data/ files byte for byte."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared import DATA_DIR
from shared.python_corpus import build_info

MANIFEST = DATA_DIR / "MANIFEST.json"


def _build_in_fresh_interpreter(out: Path) -> None:
    """Run ``build_corpora`` in a new Python process, as ``make data`` does.

    Not in this process: pytest patches a few standard-library functions
    (``pdb.set_trace``, ``threading.excepthook``) whose docstrings are part of python_docs.
    """
    code = (
        "import importlib.util, sys; from pathlib import Path\n"
        "sys.path.insert(0, str(Path(sys.argv[1]).parent))  # its `common`, as when run\n"
        "spec = importlib.util.spec_from_file_location('make_data', sys.argv[1])\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "module.build_corpora(Path(sys.argv[2]))\n"
    )
    args = [sys.executable, "-c", code, str(DATA_DIR / "scripts" / "make_data.py"), str(out)]
    subprocess.run(args, check=True, timeout=120)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def manifest() -> dict:
    if not MANIFEST.exists():
        pytest.skip(f"{MANIFEST} is missing: run `make data` first")
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data")
    _build_in_fresh_interpreter(out)
    return out


def _corpus_files(manifest: dict, folder: str) -> list[str]:
    files = [name for name in manifest["files"] if name.startswith(folder + "/")]
    assert files, f"MANIFEST.json lists no {folder}/ files"
    return files


def _check(manifest: dict, fresh: Path, folder: str) -> None:
    files = _corpus_files(manifest, folder)
    built = sorted(p.relative_to(fresh).as_posix() for p in (fresh / folder).rglob("*"))
    assert built == sorted(files), "build_corpora writes other files than MANIFEST.json lists"
    for name in files:
        expected = manifest["files"][name]["sha256"]
        assert _sha256(DATA_DIR / name) == expected, f"committed {name} differs from MANIFEST"
        assert _sha256(fresh / name) == expected, f"a fresh build of {name} differs"


def test_tiny_world_is_reproduced(manifest, fresh):
    _check(manifest, fresh, "tiny_world")


def test_python_docs_are_reproduced(manifest, fresh):
    made, here = manifest["python_docs"], build_info()
    if made["python"] != here["python"]:
        pytest.skip(
            f"python_docs was made with Python {made['python']} and docstrings differ "
            f"between minor versions; this is Python {here['python']}"
        )
    if made != here:
        pytest.skip(
            f"python_docs was made on {made} and this is {here}: pydoc topics can change in "
            "patch releases and the os module documents other functions on other platforms"
        )
    _check(manifest, fresh, "python_docs")


def test_tokenizer_is_reproduced(manifest, tmp_path):
    """Training on the committed corpora gives the committed tokenizer, on any Python."""
    from shared import bpe

    name = f"tokenizer/{bpe.TOKENIZER_PATH.name}"
    saved = bpe.train_project_tokenizer(DATA_DIR).save(tmp_path / "tokenizer.json")
    assert _sha256(DATA_DIR / name) == manifest["files"][name]["sha256"]
    assert _sha256(saved) == manifest["files"][name]["sha256"], "a fresh tokenizer differs"


def test_instructions_are_reproduced(manifest, fresh):
    _check(manifest, fresh, "instructions")


def test_preferences_are_reproduced(manifest, fresh):
    _check(manifest, fresh, "preferences")
