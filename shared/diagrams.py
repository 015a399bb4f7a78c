"""Small matplotlib diagrams that the chapters draw instead of ASCII art.

Each function draws one figure with boxes and arrows and returns the matplotlib ``Figure``
(call ``plt.show()`` after it in a notebook). Nothing is read from disk.

- ``roadmap(chapter)``: the three stages of building an LLM, the chapter's box highlighted.
- ``architectures()``: encoder-decoder, encoder-only and decoder-only transformers.
- ``pipeline(words)``: text -> token ids -> token + position embeddings -> model.
- ``sliding_window(tokens, context_length, stride)``: inputs and targets shifted by one.
- ``gpt_model(n_layers)``: the GPT model and the inside of one transformer block.
- ``multi_head(num_heads)``: queries split into heads, attention per head, concatenated.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

__all__ = [
    "STAGES",
    "architectures",
    "gpt_model",
    "multi_head",
    "pipeline",
    "roadmap",
    "sliding_window",
]

# The three stages of building an LLM and the chapters that teach each step.
STAGES: list[tuple[str, list[tuple[int, str]]]] = [
    (
        "1. Building an LLM",
        [
            (1, "data and\ntokenizing"),
            (2, "attention"),
            (3, "architecture"),
            (4, "pretraining"),
            (5, "decoding"),
        ],
    ),
    (
        "2. Fine-tuning",
        [(6, "instruction\nSFT"), (7, "hooks and\nlogit lens"), (8, "continued\npretraining")],
    ),
    (
        "3. Alignment and evaluation",
        [(9, "reward\nmodel"), (10, "PPO"), (11, "DPO"), (12, "LLM as\njudge")],
    ),
]

BLUE, ORANGE, GREEN, RED, GREY, PURPLE = (
    "#cfe2f3",
    "#fde9c9",
    "#d9ead3",
    "#f4cccc",
    "#eeeeee",
    "#e1d5e7",
)
HIGHLIGHT = "#f6b26b"


def _canvas(width: float, height: float, xlim, ylim) -> tuple[Figure, plt.Axes]:
    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.axis("off")
    return fig, ax


def _box(ax, x, y, w, h, text, color=BLUE, size=9, bold=False, lw=0.8, ec="black"):
    """A rounded box centred at (x, y) with centred text."""
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            fc=color,
            ec=ec,
            lw=lw,
        )
    )
    weight = "bold" if bold else "normal"
    ax.text(x, y, text, ha="center", va="center", fontsize=size, fontweight=weight)


def _arrow(ax, start, end, color="black", lw=1.0):
    ax.annotate(
        "", xy=end, xytext=start, arrowprops={"arrowstyle": "-|>", "lw": lw, "color": color}
    )


def roadmap(chapter: int) -> Figure:
    """The three stages (pretraining -> fine-tuning -> alignment and evaluation).

    The stage that contains ``chapter`` (1-12) is outlined and its box filled in orange.
    """
    if not 1 <= chapter <= 12:
        raise ValueError(f"chapter must be between 1 and 12, got {chapter}")
    total = sum(1.1 * len(steps) + 0.1 for _, steps in STAGES) + 0.3 * len(STAGES) + 0.1
    fig, ax = _canvas(12, 2.3, (0, total), (0, 2.4))
    x = 0.2
    for s, (title, steps) in enumerate(STAGES):
        width = 1.1 * len(steps) + 0.1
        current = any(n == chapter for n, _ in steps)
        ax.add_patch(
            FancyBboxPatch(
                (x, 0.15),
                width,
                2.0,
                boxstyle="round,pad=0.02,rounding_size=0.1",
                fc="#fff8ee" if current else "white",
                ec=HIGHLIGHT if current else "grey",
                lw=2.0 if current else 0.8,
            )
        )
        ax.text(x + width / 2, 1.9, title, ha="center", fontsize=10, fontweight="bold")
        for i, (n, label) in enumerate(steps):
            cx = x + 0.1 + 1.1 * i + 0.5
            here = n == chapter
            _box(
                ax,
                cx,
                0.95,
                0.95,
                1.1,
                f"{n}\n{label}",
                HIGHLIGHT if here else (BLUE, GREEN, PURPLE)[s],
                size=8,
                bold=here,
                lw=2.0 if here else 0.6,
            )
        if s < len(STAGES) - 1:
            _arrow(ax, (x + width + 0.02, 1.2), (x + width + 0.28, 1.2), lw=1.5)
        x += width + 0.3
    ax.set_title(f"Building an LLM in three stages: chapter {chapter}", fontsize=11)
    fig.tight_layout()
    return fig


def architectures() -> Figure:
    """Encoder-decoder (translation), encoder-only (classification), decoder-only (GPT)."""
    fig, ax = _canvas(11, 3.2, (0, 11), (-0.4, 3.3))
    panels = [
        (
            1.9,
            "encoder-decoder\n(the 2017 Transformer)",
            "translation",
            "Nabo has a goat",
            "Nabo a une chèvre",
        ),
        (5.5, "encoder-only\n(BERT)", "text classification", "Nabo has a goat", "label: animals"),
        (9.1, "decoder-only\n(GPT)", "text completion", "Nabo has a", "goat"),
    ]
    for cx, title, task, source, result in panels:
        ax.text(cx, 3.1, title, ha="center", va="top", fontsize=10, fontweight="bold")
        ax.text(cx, -0.2, f"task: {task}", ha="center", fontsize=9, style="italic")
        ax.text(cx, 0.15, f"in: {source!r}", ha="center", fontsize=8)
        if "decoder" in title and "encoder" in title:
            _box(ax, cx - 0.8, 1.35, 1.3, 0.9, "encoder\nreads all\n(both ways)", BLUE, 8)
            _box(ax, cx + 0.8, 1.35, 1.3, 0.9, "decoder\nwrites one\ntoken at a time", ORANGE, 8)
            _arrow(ax, (cx - 0.15, 1.35), (cx + 0.15, 1.35), lw=1.5)
            _arrow(ax, (cx - 0.8, 0.35), (cx - 0.8, 0.88))
            _arrow(ax, (cx + 0.8, 1.82), (cx + 0.8, 2.3))
            ax.text(cx + 0.8, 2.32, f"out: {result!r}", ha="center", fontsize=8)
        else:
            encoder = "encoder" in title
            label = "encoder\nreads all\n(both ways)" if encoder else "decoder\nsees only\nthe past"
            _box(ax, cx, 1.35, 1.8, 0.9, label, BLUE if encoder else ORANGE, 8)
            _arrow(ax, (cx, 0.35), (cx, 0.88))
            _arrow(ax, (cx, 1.82), (cx, 2.3))
            ax.text(cx, 2.32, f"out: {result!r}", ha="center", fontsize=8)
    fig.tight_layout()
    return fig


def pipeline(words: list[str], ids: list[int]) -> Figure:
    """Text -> tokens -> token ids -> token embedding + position embedding -> GPT."""
    n = len(words)
    fig, ax = _canvas(1.5 + 1.3 * n, 4.6, (-1.6, 1.3 * n), (-0.2, 5.4))
    rows = [(4.9, "text"), (4.1, "tokens"), (3.3, "token ids"), (2.4, "token emb."),
            (1.6, "+ position emb."), (0.8, "model input")]  # fmt: skip
    for y, label in rows:
        ax.text(-1.5, y, label, ha="left", va="center", fontsize=9, style="italic")
    ax.text(0.65 * n - 0.1, 4.9, "".join(words), ha="center", va="center", fontsize=10)
    for i, (word, idx) in enumerate(zip(words, ids)):
        x = 1.3 * i + 0.4
        _box(ax, x, 4.1, 1.1, 0.45, repr(word)[1:-1].replace(" ", "·"), GREY, 9)
        _box(ax, x, 3.3, 1.1, 0.45, str(idx), BLUE, 9)
        _box(ax, x, 2.4, 1.1, 0.45, f"row {idx}", GREEN, 8)
        _box(ax, x, 1.6, 1.1, 0.45, f"position {i}", ORANGE, 8)
        _box(ax, x, 0.8, 1.1, 0.45, "vector (d)", PURPLE, 8)
        for y0, y1 in [(3.85, 3.55), (3.05, 2.65), (2.15, 1.85), (1.35, 1.05)]:
            _arrow(ax, (x, y0), (x, y1))
    ax.text(0.65 * n - 0.1, 0.05, "-> the GPT model (chapters 2-3)", ha="center", fontsize=9)
    ax.set_title("From text to the vectors the model computes with", fontsize=11)
    fig.tight_layout()
    return fig


def sliding_window(
    tokens: list[str], context_length: int, stride: int, n_windows: int = 3
) -> Figure:
    """Windows of ``context_length`` inputs; the targets are the same tokens shifted by one."""
    needed = (n_windows - 1) * stride + context_length + 1
    if len(tokens) < needed:
        raise ValueError(
            f"need at least {needed} tokens for {n_windows} windows, got {len(tokens)}"
        )
    tokens = tokens[:needed]
    fig, ax = _canvas(
        1.0 + 0.9 * needed,
        1.4 + 1.1 * n_windows,
        (-1.5, 0.9 * needed),
        (-1.1 * n_windows - 0.3, 1.0),
    )
    for i, tok in enumerate(tokens):
        _box(ax, 0.9 * i + 0.4, 0.4, 0.82, 0.45, repr(tok)[1:-1].replace(" ", "·"), GREY, 8)
    ax.text(-1.4, 0.4, "token stream", fontsize=9, va="center", style="italic")
    for w in range(n_windows):
        start, y = w * stride, -1.1 * w - 0.5
        ax.text(-1.4, y - 0.15, f"window {w}\n(start {start})", fontsize=8, va="center")
        for j in range(context_length):
            x = 0.9 * (start + j) + 0.4
            _box(ax, x, y, 0.82, 0.32, "input", BLUE, 7)
            _box(ax, x + 0.9, y - 0.38, 0.82, 0.32, "target", ORANGE, 7)
    ax.set_title(
        f"context_length = {context_length}, stride = {stride}: "
        "targets are the inputs shifted one token to the left",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def gpt_model(n_layers: int = 12) -> Figure:
    """The GPT model (left) and one pre-LayerNorm transformer block (right)."""
    fig, ax = _canvas(10, 6.4, (0, 10), (0, 10.6))
    left = [
        (0.6, "token ids (batch, T)", GREY),
        (1.7, "token embedding + position embedding", GREEN),
        (2.8, "dropout", GREY),
        (5.0, f"transformer block x {n_layers}", ORANGE),
        (7.2, "final LayerNorm", BLUE),
        (8.3, "out_head: linear d -> vocab", GREEN),
        (9.4, "logits (batch, T, vocab)", GREY),
    ]
    for (y, text, color), nxt in zip(left, left[1:] + [None]):
        _box(ax, 2.3, y, 3.8, 0.9 if "block" in text else 0.6, text, color, 9, bold="block" in text)
        if nxt:
            _arrow(
                ax,
                (2.3, y + (0.45 if "block" in text else 0.3)),
                (2.3, nxt[0] - (0.45 if "block" in nxt[1] else 0.3)),
            )
    # One block, expanded: two residual branches.
    right = [
        (0.6, "x (batch, T, d)", GREY),
        (1.6, "LayerNorm", BLUE),
        (2.6, "masked multi-head attention", ORANGE),
        (3.6, "dropout", GREY),
        (4.6, "+", "white"),
        (5.6, "LayerNorm", BLUE),
        (6.6, "feed-forward: d -> 4d, GELU, 4d -> d", ORANGE),
        (7.6, "dropout", GREY),
        (8.6, "+", "white"),
        (9.6, "x (batch, T, d)", GREY),
    ]
    for (y, text, color), nxt in zip(right, right[1:] + [None]):
        w = 0.5 if text == "+" else 3.6
        _box(ax, 7.4, y, w, 0.55, text, color, 10 if text == "+" else 9)
        if nxt:
            _arrow(ax, (7.4, y + 0.28), (7.4, nxt[0] - 0.28))
    for y0, y1 in [(1.1, 4.6), (5.1, 8.6)]:  # the shortcuts around each branch
        ax.plot([7.4, 9.6, 9.6], [y0, y0, y1], color="firebrick", lw=1.2)
        _arrow(ax, (9.6, y1), (7.65, y1), color="firebrick", lw=1.2)
    ax.text(9.7, 2.85, "shortcut", color="firebrick", fontsize=8, rotation=90, va="center")
    ax.text(9.7, 6.85, "shortcut", color="firebrick", fontsize=8, rotation=90, va="center")
    ax.plot([4.2, 5.6], [5.45, 10.0], color="grey", ls=":", lw=1)
    ax.plot([4.2, 5.6], [4.55, 0.2], color="grey", ls=":", lw=1)
    ax.set_title("GPT: the model (left) and one transformer block (right)", fontsize=11)
    fig.tight_layout()
    return fig


def multi_head(num_heads: int = 3, T: int = 4, head_dim: int = 2) -> Figure:
    """x -> Q, K, V (one matrix each) -> split into heads -> attention per head -> concat."""
    d = num_heads * head_dim
    colors = [BLUE, ORANGE, GREEN, PURPLE, RED, GREY]
    fig, ax = _canvas(11, 3.8, (0, 11.2), (0, 4.2))
    _box(ax, 0.7, 2.0, 1.0, 1.4, f"x\n(T={T}, d_in)", GREY, 9)
    _box(ax, 2.4, 2.0, 1.3, 1.4, f"Q, K, V\n= x W_q, x W_k,\nx W_v\n(T, d={d})", GREY, 8)
    _arrow(ax, (1.25, 2.0), (1.7, 2.0))
    ys = [
        3.6 - i * (2.6 / max(1, num_heads - 1)) if num_heads > 1 else 2.0 for i in range(num_heads)
    ]
    for h, y in enumerate(ys):
        color = colors[h % len(colors)]
        _box(
            ax,
            4.6,
            y,
            1.5,
            0.55,
            f"head {h}: cols\n{h * head_dim}..{(h + 1) * head_dim - 1}",
            color,
            8,
        )
        _box(
            ax,
            6.7,
            y,
            1.9,
            0.55,
            f"softmax(q kᵀ/√{head_dim}) v\n(T, head_dim={head_dim})",
            color,
            8,
        )
        _arrow(ax, (3.1, 2.0), (3.83, y))
        _arrow(ax, (5.37, y), (5.73, y))
        _arrow(ax, (7.67, y), (8.3, 2.0))
    ax.text(4.6, 0.2, "split: view + transpose", ha="center", fontsize=8, style="italic")
    ax.text(
        6.7, 0.2, "causal attention, each head on its own", ha="center", fontsize=8, style="italic"
    )
    for h in range(num_heads):  # the concatenated output, one coloured slice per head
        ax.add_patch(
            FancyBboxPatch(
                (8.35 + h * 1.2 / num_heads, 1.3),
                1.2 / num_heads,
                1.4,
                boxstyle="square,pad=0",
                fc=colors[h % len(colors)],
                ec="black",
                lw=0.6,
            )
        )
    ax.text(8.95, 3.0, f"concat\n(T, d={d})", ha="center", fontsize=8)
    _box(ax, 10.5, 2.0, 1.1, 1.0, "out_proj\n(T, d)", GREY, 8)
    _arrow(ax, (9.57, 2.0), (9.93, 2.0))
    ax.set_title(
        f"Multi-head attention with {num_heads} heads of {head_dim} dimensions", fontsize=11
    )
    fig.tight_layout()
    return fig
