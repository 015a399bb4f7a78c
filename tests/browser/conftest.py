"""Keeps the browser test out of ``pytest tests`` (``make unit``).

It runs only when this folder or a file in it is named on the command line, as
``make test-browser`` does: it needs Chromium and takes a minute or two.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent


def _named_here(config) -> bool:
    start = Path(config.invocation_params.dir)
    for arg in config.args:
        path = (start / arg.split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path, config):
    if collection_path.parent == HERE and collection_path.suffix == ".py":
        return None if _named_here(config) else True
    return None
