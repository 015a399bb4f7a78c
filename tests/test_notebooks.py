"""Conventions every committed notebook follows (nbval checks that their outputs still hold).

Chapters are ``notebooks/NN_<name>.ipynb``; the solutions of a chapter's exercises are
``notebooks/solutions/NN_<name>_solutions.ipynb``, with lighter conventions (the Colab cell,
a "# Chapter N ..." title, ``shared.setup()``, at least one assert). Both are committed
executed and cleaned by ``tests/tools/run_notebooks.py``.
"""

import json
import re
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = sorted((NOTEBOOK_DIR / "solutions").glob("*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def code_sources(nb):
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_notebooks_are_numbered_in_order():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(numbers) + 1)), [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_conventions(path):
    nb = load(path)
    sources = code_sources(nb)
    assert "google.colab" in sources[0], "the first cell installs the package in Colab only"
    assert nb["cells"][1]["cell_type"] == "markdown"
    assert nb["cells"][1]["source"][0].startswith("# Chapter "), "second cell: the title"
    assert any("shared.setup(" in s for s in sources), "every notebook calls shared.setup()"
    checked = sum("# NBVAL_CHECK_OUTPUT" in s for s in sources)
    asserts = sum(len(re.findall(r"^\s*assert\b", s, re.M)) for s in sources)
    assert checked >= 3, f"only {checked} cells are compared by nbval"
    assert asserts >= 3, f"only {asserts} asserts: what in this notebook can fail?"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_solution_conventions(path):
    match = re.fullmatch(r"(\d\d)_(\w+)_solutions\.ipynb", path.name)
    assert match, "solutions are named NN_<chapter name>_solutions.ipynb"
    chapter = NOTEBOOK_DIR / f"{match[1]}_{match[2]}.ipynb"
    assert chapter.exists(), f"no chapter notebook {chapter.name} for these solutions"
    nb = load(path)
    sources = code_sources(nb)
    assert "google.colab" in sources[0], "the first cell installs the package in Colab only"
    assert nb["cells"][1]["cell_type"] == "markdown"
    title = "".join(nb["cells"][1]["source"])
    assert title.startswith(f"# Chapter {int(match[1])}"), "second cell: the title"
    assert any("shared.setup(" in s for s in sources), "every notebook calls shared.setup()"
    assert any(re.search(r"^\s*assert\b", s, re.M) for s in sources), "no assert at all"


@pytest.mark.parametrize("path", NOTEBOOKS + SOLUTIONS, ids=lambda p: p.name)
def test_notebook_is_committed_executed_and_clean(path):
    nb = load(path)
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    unrun = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    assert not unrun, f"code cells {unrun} have no execution count: run `make run`"
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(counts) + 1)), "executed top to bottom in one kernel"
    assert "widgets" not in nb["metadata"], "volatile widget state: run `make run`"
    for c in code:
        assert "execution" not in c.get("metadata", {}), "timing metadata: run `make run`"
        outputs = c.get("outputs", [])
        for out in outputs:
            assert out.get("output_type") != "error", "a committed error output"
            assert WIDGET_VIEW not in out.get("data", {}), "a widget id: run `make run`"
        for a, b in zip(outputs, outputs[1:]):
            same_stream = a.get("output_type") == b.get("output_type") == "stream"
            assert not (same_stream and a.get("name") == b.get("name")), "split stream: `make run`"
