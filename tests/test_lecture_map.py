"""The slide-by-slide map of deck 003 in notebooks/README.md stays true to the notebooks.

Every row names a notebook and one of its markdown headings; both must exist, so renaming a
section without updating the map fails here. The slides that are not fully covered are
listed below: covering one means moving it out of this list and marking its row `covered`.
"""

import json
import re
from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
MAP_HEADING = "## The lecture, slide by slide (deck 003)"

# Slide number -> coverage, for every row that is not `covered`.
NOT_COVERED = {
    "18": "partial",
    "33": "partial",
}


def map_rows():
    """The table under MAP_HEADING: one dict per row (slides, notebook, section, coverage)."""
    text = (NOTEBOOK_DIR / "README.md").read_text("utf-8")
    assert MAP_HEADING in text, f"notebooks/README.md has no {MAP_HEADING!r}"
    lines = text.split(MAP_HEADING, 1)[1].splitlines()
    table = [line for line in lines if line.startswith("|")]
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert header == ["#", "slide topic", "notebook", "section", "coverage"], header
    rows = []
    for line in table[2:]:  # after the header and the |---| line
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 5, line
        number, _, notebook, section, coverage = cells
        link = re.fullmatch(r"\[[^\]]+\]\(([^)]+\.ipynb)\)", notebook)
        assert link, f"slide {number}: the notebook cell is not a link to a notebook: {notebook}"
        rows.append(
            {"slides": number, "notebook": link[1], "section": section, "coverage": coverage}
        )
    return rows


def headings(path):
    nb = json.loads(path.read_text("utf-8"))
    return {
        line.strip()
        for cell in nb["cells"]
        if cell["cell_type"] == "markdown"
        for line in "".join(cell["source"]).splitlines()
        if line.startswith("#")
    }


def test_slides_are_numbered_in_order_without_gaps():
    numbers = []
    for row in map_rows():
        first, _, last = row["slides"].partition("–")  # a group of slides: "30–31"
        numbers += range(int(first), int(last or first) + 1)
    assert numbers == list(range(1, len(numbers) + 1)), numbers


def test_every_section_is_a_heading_of_its_notebook():
    cache = {}
    for row in map_rows():
        path = NOTEBOOK_DIR / row["notebook"]
        assert path.is_file(), f"slide {row['slides']}: no notebook {row['notebook']}"
        if path not in cache:
            cache[path] = headings(path)
        assert row["section"] in cache[path], (
            f"slide {row['slides']}: {row['notebook']} has no heading {row['section']!r}"
        )


def test_the_slides_not_fully_covered_are_the_listed_ones():
    found = {}
    for row in map_rows():
        coverage = row["coverage"]
        assert coverage in ("covered", "missing") or re.fullmatch(r"partial: \S.*", coverage), (
            f"slide {row['slides']}: coverage must be covered, partial: ..., or missing"
        )
        if coverage != "covered":
            found[row["slides"]] = coverage.split(":")[0]
    assert found == NOT_COVERED
