"""Wall time and peak memory of every notebook at the CI scale: ``python bench/bench_notebooks.py``.

Each chapter and solution notebook is executed (``LLMS_SCALE=tiny``, as ``make test`` runs
them) from a temporary copy, so the committed notebooks are not touched. Peak memory is the
kernel process's resident-set high-water mark (``VmHWM`` in ``/proc/<pid>/status``, Linux),
read just before the kernel shuts down; processes a notebook starts itself (chapter 4's
data-parallel workers) are not included. Writes ``bench/notebooks.json``, which the README's
chapter table reads for its CI seconds, and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "notebooks.json"


def peak_rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def run(path: Path, workdir: Path, timeout: int) -> dict:
    """Execute a copy of ``path``; its wall time and the kernel's peak memory."""
    copy = workdir / path.name
    shutil.copy(path, copy)
    nb = nbformat.read(copy, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={})
    client.resources = {"metadata": {"path": str(path.parent)}}
    start = time.perf_counter()
    peak = None
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        peak = peak_rss_mb(client.km.provisioner.process.pid)
    return {"seconds": time.perf_counter() - start, "peak_mb": peak}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args(argv)
    os.environ["LLMS_SCALE"] = "tiny"
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) + sorted(
        (ROOT / "notebooks" / "solutions").glob("[0-9][0-9]_*_solutions.ipynb")
    )
    results = json.loads(OUT.read_text("utf-8")) if OUT.is_file() and args.notebooks else {}
    results.pop("_machine", None)
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            key = path.resolve().relative_to(ROOT).as_posix()
            results[key] = run(path.resolve(), Path(tmp), args.timeout)
            print(
                f"{results[key]['seconds']:7.1f} s {results[key]['peak_mb'] or 0:8.0f} MB  {key}",
                flush=True,
            )
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    OUT.parent.mkdir(exist_ok=True)
    data = {"_machine": machine, **dict(sorted(results.items()))}
    OUT.write_text(json.dumps(data, indent=1) + "\n", "utf-8")
    print("\n| notebook | seconds | peak MB |\n|---|---|---|")
    for key, r in sorted(results.items()):
        print(f"| {key} | {r['seconds']:.0f} | {r['peak_mb'] or 0:.0f} |")
    print(f"\nmachine: {machine}; wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
