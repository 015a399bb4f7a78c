"""Run make targets one after another and print how long each took: ``make test`` uses it.

    python3 tests/tools/timed_make.py [--json bench/make_test.json] setup lint unit nbval test-browser

Stops at the first target that fails (with its exit code), after printing the times so far.
With ``--json`` the times are also written to that file (``make bench`` reports them).
Standard library only: it runs before the virtual environment exists, to time the install.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time


def main(targets: list[str], record: str | None = None) -> int:
    make = os.environ.get("MAKE", "make")
    times: list[tuple[str, float]] = []
    code = 0
    for target in targets:
        start = time.perf_counter()
        code = subprocess.call([make, "--no-print-directory", target])
        times.append((target, time.perf_counter() - start))
        if code:
            break
    total = sum(seconds for _, seconds in times)
    print("\nmake test, time per step:")
    for target, seconds in times:
        print(f"  {target:<14}{seconds:8.1f} s")
    print(f"  {'total':<14}{total:8.1f} s ({total / 60:.1f} min)")
    if code:
        print(f"make {times[-1][0]} failed with exit code {code}")
    if record:
        figures = {
            "_machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "_date": time.strftime("%Y-%m-%d"),
            "passed": code == 0,
            "seconds": dict(times),
            "total": total,
        }
        with open(record, "w", encoding="utf-8") as f:
            f.write(json.dumps(figures, indent=1) + "\n")
    return code


if __name__ == "__main__":
    args = sys.argv[1:]
    record = None
    if args[:1] == ["--json"]:
        record, args = args[1], args[2:]
    sys.exit(main(args or ["setup", "lint", "unit", "nbval"], record))
