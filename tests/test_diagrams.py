"""The diagram helpers draw without error and highlight what they are asked to."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from shared import diagrams  # noqa: E402


def texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_roadmap_covers_twelve_chapters_and_highlights_one():
    chapters = [n for _, steps in diagrams.STAGES for n, _ in steps]
    assert chapters == list(range(1, 13))
    for chapter in (1, 7, 12):
        fig = diagrams.roadmap(chapter)
        assert isinstance(fig, Figure)
        bold = [t.get_text() for t in fig.axes[0].texts if t.get_fontweight() == "bold"]
        assert any(t.startswith(f"{chapter}\n") for t in bold), bold
        assert f"chapter {chapter}" in fig.axes[0].get_title()
        plt.close(fig)


@pytest.mark.parametrize("chapter", [0, 13])
def test_roadmap_rejects_unknown_chapters(chapter):
    with pytest.raises(ValueError, match="between 1 and 12"):
        diagrams.roadmap(chapter)


def test_other_diagrams_draw():
    figures = [
        diagrams.architectures(),
        diagrams.pipeline(["Nabo", " lives"], [2748, 340]),
        diagrams.sliding_window(list("abcdefghij"), context_length=4, stride=2),
        diagrams.gpt_model(4),
        diagrams.multi_head(3),
    ]
    assert "transformer block x 4" in texts(figures[3])
    assert sum(t.startswith("head ") for t in texts(figures[4])) == 3
    for fig in figures:
        assert fig.get_dpi() <= 100
        plt.close(fig)
    with pytest.raises(ValueError, match="need at least"):
        diagrams.sliding_window(list("abc"), context_length=4, stride=2)
