"""The README's chapter table, made from the committed notebooks: ``python tests/tools/readme_table.py``.

Each row's headline figure is read from the notebook's committed outputs (a pattern over
its printed text), its CI time from ``bench/notebooks.json`` (written by ``make bench``,
executed at the CI scale), and the Colab badge from the repository URL in
``pyproject.toml`` (``[project.urls] Repository``), the one place that URL lives: the first
cell of every notebook clones the same address (checked by ``tests/test_readme.py``).

``--write`` replaces the table between the README's ``chapters:begin`` and ``chapters:end``
markers; without it the table is printed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TIMES = ROOT / "bench" / "notebooks.json"
BEGIN, END = "<!-- chapters:begin -->", "<!-- chapters:end -->"

# What each chapter builds (prose); a pattern over the committed printed output; and the
# headline made from the pattern's groups.
CHAPTERS = {
    "01": (
        "words vs sub-words, byte-level BPE from scratch, a `tiktoken.Encoding` of our own, "
        "sliding windows, token and position embeddings",
        r"from-scratch ids == tiktoken ids on all ([\d,]+) tokens",
        "our BPE's ids equal tiktoken's on {0} tokens",
    ),
    "02": (
        "self-attention, scaled dot-product, causal mask, dropout, multi-head",
        r"multi-head: notebook module == F.scaled_dot_product_attention\s+([\d.e+-]+)",
        "multi-head attention equals PyTorch's SDPA to {0}",
    ),
    "03": (
        "LayerNorm, GELU, blocks, `GPTModel`, parameter counts, training memory, GPT-2 checkpoints",
        r"GPT-2 small: ([\d,]+) param",
        "GPT-2 small rebuilt: {0} parameters",
    ),
    "04": (
        "data mixtures, loss and perplexity, a bigram baseline, the training loop, AdamW, "
        "warmup + cosine, checkpoints, data-parallel training, the released base model",
        r"base model val loss [\d.]+, perplexity ([\d.]+)\n\s*bigram\s+val loss [\d.]+, "
        r"perplexity ([\d.]+)",
        "val perplexity {0} (bigram {1})",
    ),
    "05": (
        "greedy, temperature, top-k, top-p, a KV cache, an ipywidgets playground",
        r"(\d+)x less work, ([\d.]+)x faster",
        "KV cache: {0}x less work, {1}x faster",
    ),
    "06": (
        "instruction data, a classification head, Alpaca and Phi-3 templates, collate with "
        "-100 and prompt masking, fine-tuning, exact match per task kind",
        r"released SFT on \d+ test prompts: exact ([\d.]+)%[^\n]*\n[^\n]*held-out people: "
        r"exact ([\d.]+)%",
        "exact match {0}% (held-out people {1}%)",
    ),
    "07": (
        "hooks, the residual stream, the logit lens, activation patching, an activation "
        "edit, gradient norms per layer",
        r"edit turns (\d+)% of dogs and (\d+)% of other pets into cats; a random edit of the "
        r"same length (\d+)%",
        "a leave-one-out edit turns {0}% of dogs into cats (a random one {2}%)",
    ),
    "08": (
        "a new domain (CPython's docs), catastrophic forgetting, replay, re-warmed "
        "schedules, the union from scratch",
        r"without replay: tiny-world loss \+[\d.]+, facts -(\d+)%\n[^\n]*with 30% replay: "
        r"\+[\d.]+ and -(\d+)%",
        "facts forgotten: {0}% without replay, {1}% with 30% replay",
    ),
    "09": (
        "preference pairs with a known better side, a scalar head, the Bradley-Terry loss, "
        "a RewardBench-style table, length bias",
        r"released reward model: ([\d.]+)% of \d+ held-out pairs ranked right",
        "{0}% of held-out pairs ranked right",
    ),
    "10": (
        "the policy gradient to PPO step by step, GAE, per-token KL rewards, a live PPO "
        "with TRL's metric names, reward over-optimisation against the gold rule",
        r"a rise of ([\d.]+) SFT standard deviations[^\n]*\n[^\n]*KL to SFT ([\d.]+) nats",
        "reward up {0} SFT std at KL {1} nats",
    ),
    "11": (
        "DPO from the RLHF objective, ln 2 at the start, IPO, SimPO, R-DPO, ORPO, the beta "
        "sweep, iterative DPO, SFT vs best-of-n vs PPO vs DPO",
        r"released DPO: held-out pairs ranked right ([\d.]+)%; preferred style ([\d.]+)% -> "
        r"([\d.]+)%",
        "implicit-reward accuracy {0}%; preferred style {1}% -> {2}%",
    ),
    "12": (
        "an Ollama-compatible judge server, the lecture's rubric and 0-100 prompts, "
        "pairwise judging both ways, kappa against gold, an arena, multiple choice",
        r"held-out items: kappa ([\d.-]+)",
        "judge vs gold: kappa {0}",
    ),
}


def repository_url() -> str:
    """``[project.urls] Repository`` of pyproject.toml (read without tomllib, for Python 3.10)."""
    text = (ROOT / "pyproject.toml").read_text("utf-8")
    match = re.search(r'^\[project\.urls\]\s*\n(?:.*\n)*?Repository\s*=\s*"([^"]+)"', text, re.M)
    if match is None:
        raise ValueError("pyproject.toml has no Repository under [project.urls]")
    return match.group(1)


def colab_badge(notebook: str) -> str:
    repo = repository_url().removeprefix("https://github.com/")
    url = f"https://colab.research.google.com/github/{repo}/blob/main/{notebook}"
    badge = "https://colab.research.google.com/assets/colab-badge.svg"
    return f"[![Open In Colab]({badge})]({url})"


def printed_text(path: Path) -> str:
    """Everything a notebook's committed outputs print (stdout and plain-text results)."""
    cells = json.loads(path.read_text("utf-8"))["cells"]
    parts = []
    for cell in cells:
        for out in cell.get("outputs", []):
            text = out.get("text") or out.get("data", {}).get("text/plain", "")
            parts.append("".join(text) if isinstance(text, list) else text)
    return "\n".join(parts)


def headline(path: Path, pattern: str, template: str = "{0}") -> str:
    """``template`` filled with the groups of ``pattern``'s first match in the printed text."""
    match = re.search(pattern, printed_text(path))
    if match is None:
        raise ValueError(f"{path.name}: no committed output matches {pattern!r}")
    return template.format(*(match.groups() or [match.group(0)]))


def table() -> str:
    times = json.loads(TIMES.read_text("utf-8")) if TIMES.is_file() else {}
    rows = [
        "| # | notebook | what it builds | headline (from its outputs) | CI s | Colab |",
        "|---|---|---|---|---|---|",
    ]
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        number = nb.name[:2]
        if number not in CHAPTERS:
            raise ValueError(f"{nb.name}: add its row to CHAPTERS in {Path(__file__).name}")
        what, pattern, template = CHAPTERS[number]
        rel = nb.relative_to(ROOT).as_posix()
        seconds = times.get(rel, {}).get("seconds")
        rows.append(
            f"| {int(number)} | [{nb.stem}]({rel}) | {what} | {headline(nb, pattern, template)} | "
            f"{'-' if seconds is None else round(seconds)} | {colab_badge(rel)} |"
        )
    return "\n".join(rows)


def readme_with_table(readme: str, new_table: str) -> str:
    if BEGIN not in readme or END not in readme:
        raise ValueError(f"README.md has no {BEGIN} ... {END} markers around the table")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{new_table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="update README.md in place")
    args = parser.parse_args(argv)
    new_table = table()
    if args.write:
        README.write_text(readme_with_table(README.read_text("utf-8"), new_table), "utf-8")
        print(f"wrote the chapter table into {README.name}")
    else:
        print(new_table)


if __name__ == "__main__":
    sys.exit(main())
