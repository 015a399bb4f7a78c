"""The README's chapter table is made from the notebooks, and one repository URL is used."""

import json
import re
from pathlib import Path

import readme_table

ROOT = Path(__file__).resolve().parent.parent


def test_the_chapter_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text("utf-8")
    expected = readme_table.readme_with_table(readme, readme_table.table())
    assert readme == expected, (
        "the chapter table is stale: run `python tests/tools/readme_table.py --write`"
    )


def test_every_notebook_clones_the_repository_of_pyproject():
    url = readme_table.repository_url()
    notebooks = sorted((ROOT / "notebooks").glob("**/[0-9][0-9]_*.ipynb"))
    assert notebooks
    for nb in notebooks:
        first = "".join(json.loads(nb.read_text("utf-8"))["cells"][0]["source"])
        assert re.findall(r'REPO = "([^"]+)"', first) == [url], nb.name


def test_headlines_come_from_outputs(tmp_path):
    nb = tmp_path / "01_x.ipynb"
    cell = {
        "cell_type": "code",
        "source": "",
        "outputs": [{"output_type": "stream", "text": ["a 5 b\n"]}],
    }
    nb.write_text(json.dumps({"cells": [cell]}))
    assert readme_table.headline(nb, r"a (\d) b") == "5"
    try:
        readme_table.headline(nb, r"zzz")
    except ValueError as e:
        assert "01_x.ipynb" in str(e)
    else:
        raise AssertionError("a missing headline must raise")
