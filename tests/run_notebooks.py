"""Execute notebooks in place, in chapter order, and strip volatile metadata.

This is what ``make run`` (and ``make notebooks``) call: it is the only way the committed
outputs are produced, never by hand. Each notebook runs in ``notebooks/`` as its working
directory with a fresh kernel, at the scale given by ``LLMS_SCALE`` (default ``tiny``, the
scale CI checks).

    python tests/run_notebooks.py                      # every notebook, in order
    python tests/run_notebooks.py notebooks/02_*.ipynb # some of them
    python tests/run_notebooks.py --clean-only ...     # only strip metadata
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat

from shared.files import atomic_open

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
# Cell metadata that changes on every run (timings) or is editor state, not content.
VOLATILE_CELL_KEYS = (
    "execution",
    "collapsed",
    "scrolled",
    "ExecuteTime",
    "jp-MarkdownHeadingCollapsed",
)
VOLATILE_NOTEBOOK_KEYS = ("widgets", "toc", "varInspector", "vscode")


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop volatile metadata; keep outputs and execution counts."""
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
        resources={"metadata": {"path": str(NOTEBOOKS)}},
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
    paths = args.notebooks or sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    os.environ.setdefault("LLMS_SCALE", "tiny")
    total = 0.0
    for path in paths:
        path = path.resolve()
        if args.clean_only:
            write(path, clean(nbformat.read(path, as_version=4)))
            continue
        print(
            f"running {path.relative_to(REPO)} (LLMS_SCALE={os.environ['LLMS_SCALE']}) ...",
            flush=True,
        )
        try:
            seconds = execute(path, args.timeout)
        except Exception as err:  # the cell's traceback is in the message
            print(f"FAILED {path.name}:\n{err}", file=sys.stderr)
            return 1
        total += seconds
        print(f"  done in {seconds:.0f} s", flush=True)
    if not args.clean_only:
        print(f"{len(paths)} notebook(s) in {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
