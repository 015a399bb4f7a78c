"""Fixtures shared by the unit tests, and the folders of the scripts they import.

The benchmarks (``bench/``), the tools (``tests/tools/``) and the data scripts
(``data/scripts/``) run as scripts, not as a package: the tests import them by their module
names (``import bench_all``, ``import readme_table``, ``common``), from these folders.
"""

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
for folder in (REPO / "bench", REPO / "tests" / "tools", REPO / "data" / "scripts"):
    if str(folder) not in sys.path:
        sys.path.append(str(folder))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and a busy machine makes two much slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
