"""Run make targets one after another and print how long each took: ``make test`` uses it.

    python3 tests/timed_make.py setup lint unit nbval test-browser

Stops at the first target that fails (with its exit code), after printing the times so far.
Standard library only: it runs before the virtual environment exists, to time the install.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def main(targets: list[str]) -> int:
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
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["setup", "lint", "unit", "nbval"]))
