"""Execute notebooks in place, in chapter order, and strip volatile metadata.

This is what ``make run`` (and ``make notebooks``) call: it is the only way the committed
outputs are produced, never by hand. Each notebook runs in its own folder as the working
directory with a fresh kernel, at the scale given by ``LLMS_SCALE`` (default ``tiny``, the
scale CI checks). The chapters run first, then the exercise solutions
(``notebooks/solutions/NN_<name>_solutions.ipynb``).

    python tests/tools/run_notebooks.py                      # every notebook, in order
    python tests/tools/run_notebooks.py notebooks/02_*.ipynb # some of them
    python tests/tools/run_notebooks.py --clean-only ...     # only clean, do not execute

So that running twice gives the same file except for what really changed (timings, trained
numbers), cleaning also

- merges consecutive stream outputs of the same kind (how a kernel splits stdout into
  messages depends on timing), and
- replaces widget outputs, whose ids are random and whose state is not committed, by plain
  text: a tqdm progress bar by its final line (read from the widget state the run left),
  any other widget by a one-line note.
"""

from __future__ import annotations

import argparse
import html
import os
import sys
import time
from pathlib import Path

import nbformat

from shared.files import atomic_open

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
SOLUTIONS = NOTEBOOKS / "solutions"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# Cell metadata that changes on every run (timings) or is editor state, not content.
VOLATILE_CELL_KEYS = (
    "execution",
    "collapsed",
    "scrolled",
    "ExecuteTime",
    "jp-MarkdownHeadingCollapsed",
)
VOLATILE_NOTEBOOK_KEYS = ("widgets", "toc", "varInspector", "vscode")


def all_notebooks() -> list[Path]:
    """The chapters in order, then their solutions in order."""
    chapters = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    return chapters + sorted(SOLUTIONS.glob("[0-9][0-9]_*_solutions.ipynb"))


def widget_text(model_id: str, state: dict, fallback: str) -> str:
    """A widget as one line of text: a finished tqdm bar, or a short note."""
    model = state.get(model_id)
    if model is None:
        return fallback if "%|" in fallback else f"[interactive widget: {fallback[:60]}]"
    children = [c.removeprefix("IPY_MODEL_") for c in model["state"].get("children", [])]
    kinds = [state.get(c, {}).get("model_name") for c in children]
    if kinds == ["HTMLModel", "FloatProgressModel", "HTMLModel"]:  # tqdm.notebook's bar
        left, bar, right = (state[c]["state"] for c in children)
        done = bar.get("value", 0) / bar["max"] if bar.get("max") else 1.0
        filled = max(0, min(10, int(10 * done)))
        text = (
            f"{left.get('value', '')}|{'█' * filled}{' ' * (10 - filled)}|{right.get('value', '')}"
        )
        return html.unescape(text).replace("\u2007", " ")
    name = model.get("model_name", "widget").removesuffix("Model")
    return f"[interactive {name} widget: run the notebook in Jupyter to use it]"


def coalesce_streams(outputs: list) -> list:
    """Merge consecutive stream outputs of the same name into one."""
    merged: list = []
    for out in outputs:
        previous = merged[-1] if merged else None
        if (
            previous is not None
            and out.get("output_type") == previous.get("output_type") == "stream"
            and out.get("name") == previous.get("name")
        ):
            previous["text"] = "".join(previous["text"]) + "".join(out["text"])
        else:
            merged.append(out)
    return merged


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop volatile metadata and widget ids, merge streams; keep outputs and counts."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(WIDGET_VIEW)
            if view is not None:
                fallback = "".join(out["data"].get("text/plain", ""))
                out["data"] = {"text/plain": widget_text(view.get("model_id", ""), state, fallback)}
        if cell.cell_type == "code":
            cell.outputs = coalesce_streams(cell.outputs)
    for key in VOLATILE_NOTEBOOK_KEYS:
        nb.metadata.pop(key, None)
    # The exact Python version of the machine that ran it is noise in diffs.
    nb.metadata.get("language_info", {}).pop("version", None)
    for cell in nb.cells:
        for key in VOLATILE_CELL_KEYS:
            cell.metadata.pop(key, None)
    return nb


def execute(path: Path, timeout: int) -> float:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    elapsed = time.perf_counter() - start
    write(path, clean(nb))
    return elapsed


def write(path: Path, nb: nbformat.NotebookNode) -> None:
    """Atomic write, so an interrupted run never leaves half a notebook behind."""
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as f:
        nbformat.write(nb, f)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--clean-only", action="store_true")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args(argv)
    paths = args.notebooks or all_notebooks()
    os.environ.setdefault("LLMS_SCALE", "tiny")
    total, times = 0.0, []
    for path in paths:
        path = path.resolve()
        if args.clean_only:
            write(path, clean(nbformat.read(path, as_version=4)))
            continue
        shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        print(f"running {shown} (LLMS_SCALE={os.environ['LLMS_SCALE']}) ...", flush=True)
        try:
            seconds = execute(path, args.timeout)
        except Exception as err:  # the cell's traceback is in the message
            print(f"FAILED {path.name}:\n{err}", file=sys.stderr)
            return 1
        total += seconds
        times.append((path.name, seconds))
        print(f"  done in {seconds:.0f} s", flush=True)
    if not args.clean_only:
        for name, seconds in times:
            print(f"{seconds:6.0f} s  {name}")
        print(f"{len(paths)} notebook(s) in {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
