"""The notebooks in a real browser: JupyterLab driven by headless Chromium through Playwright.

``make test-browser`` (part of ``make test``) installs Debian's Chromium if there is none
(``tests/browser/install_chromium.sh``), then runs this file. It

1. copies the chapters it runs, without their outputs, to a temporary folder and serves
   that with JupyterLab on a free loopback port with a random token (the repository's
   notebooks are never modified; ``shared`` finds ``data/`` by its own location);
2. opens chapter 5, runs all cells from the Run menu, waits for the kernel, then uses the
   decoding playground: types a prompt, moves the temperature slider with the keyboard,
   presses Generate and checks the output shows the prompt and a continuation,
   and that no cell of the chapter shows a traceback or error output;
3. opens chapter 12 (if it is there), runs it and checks that the cell starting the local
   judge server printed its URL and models, with no error up to it (errors further on
   are printed: the rest of that chapter is nbval's to check).

Screenshots go to ``tests/browser/screenshots/`` (git-ignored). The kernel runs at
``LLMS_SCALE=tiny``, as in CI. Playwright drives the system Chromium (``executable_path``):
its own browser download needs internet beyond the package registries. Set ``CHROMIUM`` to
choose a browser binary.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
CHAPTER_5 = "05_decoding.ipynb"
CHAPTER_12 = "12_llm_judge.ipynb"
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = (
    "install Debian's Chromium with `tests/browser/install_chromium.sh` "
    "(apt-get update && apt-get install -y chromium), or set CHROMIUM=/path/to/chromium"
)

LAB_START_TIMEOUT = 90  # s, JupyterLab answering /api/status
KERNEL_TIMEOUT = 60  # s, the kernel started and idle
RUN_ALL_TIMEOUT = 240  # s, per notebook (chapter 5 takes about 40 s on 2 busy cores)
UI_TIMEOUT_MS = 30_000  # Playwright's default for one action or expectation
GENERATE_TIMEOUT_MS = 60_000

# User settings for this JupyterLab only: every cell in the DOM (the default windowing
# leaves cells out of view unattached), no news or update checks, no toasts.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
}

VISIBLE_NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"

# Read in the page: the prompts of the code cells and the errors they show.
NOTEBOOK_STATE_JS = """
() => {
  const notebook = document.querySelector(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
  if (!notebook) return null;
  const cells = [...notebook.querySelectorAll('.jp-CodeCell')];
  const prompts = cells.map(c => {
    const p = c.querySelector('.jp-InputArea-prompt');
    return p ? p.textContent.trim() : '';
  });
  const errors = [];
  cells.forEach((c, i) => {
    c.querySelectorAll('.jp-OutputArea-output').forEach(o => {
      const mime = o.getAttribute('data-mime-type') || '';
      const text = o.textContent || '';
      const isError = o.classList.contains('jp-OutputArea-executeResult') ? false
        : (mime === 'application/vnd.jupyter.stderr'
           && (/Traceback/.test(text) || /\\b\\w*(Error|Exception)\\b/.test(text)));
      if (isError) errors.push({cell: i, text: text.slice(0, 2000)});
    });
  });
  return {prompts, errors};
}
"""


class Phases:
    """Prints how long each phase took, as it ends and as a summary."""

    def __init__(self) -> None:
        self.times: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.monotonic()
        print(f"[browser] {name} ...", flush=True)
        try:
            yield
        finally:
            took = time.monotonic() - start
            self.times.append((name, took))
            print(f"[browser] {name}: {took:.1f} s", flush=True)

    def summary(self) -> str:
        lines = [f"  {took:6.1f} s  {name}" for name, took in self.times]
        total = sum(t for _, t in self.times)
        return "\n".join([*lines, f"  {total:6.1f} s  total"])


@pytest.fixture(scope="module")
def phases():
    p = Phases()
    yield p
    print("\n[browser] phases:\n" + p.summary(), flush=True)


def find_chromium() -> str | None:
    chosen = os.environ.get("CHROMIUM", "").strip()
    if chosen:
        return shutil.which(chosen) or (chosen if Path(chosen).is_file() else None)
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def missing(what: str) -> None:
    """Fail in CI (``CI`` set); elsewhere skip, saying why."""
    if os.environ.get("CI"):
        pytest.fail(what, pytrace=False)
    print(f"[browser] skipped: {what}", flush=True)
    pytest.skip(what)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        missing(f"no Chromium found: {INSTALL_HINT}")
    return path


def copy_without_outputs(src: Path, dst: Path) -> None:
    nb = nbformat.read(src, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, dst)


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM its process group, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(timeout=10)


def api(base: str, token: str, path: str, method: str = "GET", timeout: float = 5):
    request = urllib.request.Request(
        f"{base}{path}", method=method, headers={"Authorization": f"token {token}"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else None


@pytest.fixture(scope="module")
def lab(phases):
    """JupyterLab on 127.0.0.1, serving copies of the chapters; stopped at the end."""
    with tempfile.TemporaryDirectory(prefix="llms-browser-") as tmp:
        tmp = Path(tmp)
        root = tmp / "notebooks"
        root.mkdir()
        names = [CHAPTER_5] + ([CHAPTER_12] if (NOTEBOOKS / CHAPTER_12).exists() else [])
        for name in names:
            copy_without_outputs(NOTEBOOKS / name, root / name)
        settings = tmp / "lab-settings"
        for rel, values in LAB_SETTINGS.items():
            (settings / rel).parent.mkdir(parents=True, exist_ok=True)
            (settings / rel).write_text(json.dumps(values), "utf-8")

        port, token = free_port(), secrets.token_hex(24)
        base = f"http://127.0.0.1:{port}"
        env = os.environ | {
            "LLMS_SCALE": "tiny",  # the CI scale, as `make nbval` uses
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "lab-workspaces"),
            "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
            "JUPYTER_CONFIG_DIR": str(tmp / "config"),
            "JUPYTER_DATA_DIR": str(tmp / "data"),
            "IPYTHONDIR": str(tmp / "ipython"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        log_path = tmp / "lab.log"
        command = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={root}",
            f"--IdentityProvider.token={token}",
            "--ServerApp.allow_remote_access=False",
            "--LabApp.news_url=None",  # no announcements fetched
            "--LabApp.extension_manager=readonly",  # no queries to PyPI
            "--ServerApp.terminals_enabled=False",
        ]
        if os.geteuid() == 0:  # CI runs as root
            command.append("--allow-root")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                command,
                cwd=root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            with phases("start JupyterLab"):
                deadline = time.monotonic() + LAB_START_TIMEOUT
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"JupyterLab exited with {proc.returncode}:\n{log_path.read_text()}"
                        )
                    try:
                        api(base, token, "/api/status", timeout=2)
                        break
                    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"JupyterLab not up after {LAB_START_TIMEOUT} s:\n"
                            + log_path.read_text()[-3000:]
                        )
                    time.sleep(0.5)
            yield {"base": base, "token": token, "root": root, "log": log_path}
        finally:
            with phases("stop JupyterLab"):
                # Shut the kernels down through the server, then the server itself.
                with contextlib.suppress(Exception):
                    api(base, token, "/api/shutdown", method="POST", timeout=10)
                    proc.wait(timeout=15)
                stop_process(proc)


@pytest.fixture(scope="module")
def browser(chromium, phases):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -r requirements-dev.txt")
    SCREENSHOTS.mkdir(exist_ok=True)
    for stale in SCREENSHOTS.glob("*.png"):  # the folder shows the last run only
        stale.unlink()
    with phases("start Chromium"):
        manager = sync_playwright().start()
        try:
            instance = manager.chromium.launch(
                executable_path=chromium,
                headless=True,
                timeout=60_000,
                args=["--disable-dev-shm-usage", "--disable-gpu"],
            )
        except Exception:
            manager.stop()
            raise
    try:
        yield instance
    finally:
        with phases("stop Chromium"):
            try:
                instance.close()
            finally:
                manager.stop()


@contextlib.contextmanager
def lab_page(browser, lab, phases, notebook: str):
    """A fresh browser page showing ``notebook`` in JupyterLab, its kernel idle."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    try:
        with phases(f"{notebook}: open, kernel idle"):
            # A workspace of its own, reset: only this notebook open.
            workspace = re.sub(r"\W", "-", Path(notebook).stem)
            page.goto(
                f"{lab['base']}/lab/workspaces/{workspace}/tree/{notebook}"
                f"?reset&token={lab['token']}"
            )
            page.locator(f"{VISIBLE_NOTEBOOK} .jp-Cell").first.wait_for()
            wait_for_kernel_idle(page, lab, notebook, KERNEL_TIMEOUT)
        yield page
    finally:
        for problem in problems:
            print(f"[browser] {notebook}: {problem}", flush=True)
        context.close()
        shut_down_kernel(lab, notebook)


def notebook_state(page) -> dict:
    state = page.evaluate(NOTEBOOK_STATE_JS)
    assert state is not None, "no notebook panel in the page"
    return state


def shut_down_kernel(lab, notebook: str) -> None:
    """End the notebook's session and kernel (which would outlive the page)."""
    with contextlib.suppress(Exception):
        for session in api(lab["base"], lab["token"], "/api/sessions"):
            if session.get("path", "").endswith(notebook):
                api(lab["base"], lab["token"], f"/api/sessions/{session['id']}", "DELETE", 15)


def kernel_state(lab, notebook: str) -> str | None:
    """The server's view of the notebook's kernel: "starting", "idle", "busy", ... or None."""
    for session in api(lab["base"], lab["token"], "/api/sessions"):
        if session.get("path", "").endswith(notebook) and session.get("kernel"):
            return session["kernel"].get("execution_state")
    return None


def wait_for_kernel_idle(page, lab, notebook: str, timeout: float) -> None:
    """Wait for the notebook's kernel; accept JupyterLab's kernel choice if it asks."""
    deadline = time.monotonic() + timeout
    select = page.locator(".jp-Dialog", has_text="Select Kernel").locator(".jp-mod-accept")
    while True:
        if select.count() and select.first.is_visible():
            print(f"[browser] {notebook}: JupyterLab asked for a kernel; choosing its default")
            select.first.click()
        if kernel_state(lab, notebook) == "idle":
            return
        if time.monotonic() > deadline:
            page.screenshot(path=SCREENSHOTS / "timeout.png")
            raise TimeoutError(f"kernel of {notebook} not idle after {timeout} s")
        time.sleep(0.5)


def run_all_cells(page, lab, notebook: str) -> dict:
    """Run menu -> Run All Cells; wait until every cell ran, or one failed; the final state."""
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.locator('.lm-Menu-item[data-command="runmenu:run-all"]', has_text="Run All Cells").click()
    deadline = time.monotonic() + RUN_ALL_TIMEOUT
    settled_since = None
    while True:
        state = notebook_state(page)
        running = any("*" in p for p in state["prompts"])
        all_ran = all(re.fullmatch(r"\[\d+\]:", p) for p in state["prompts"])
        idle = kernel_state(lab, notebook) == "idle"
        if not running and idle and (all_ran or state["errors"]):
            settled_since = settled_since or time.monotonic()
            if time.monotonic() - settled_since > 1.5:  # still so after a moment: done
                return state
        else:
            settled_since = None
        if time.monotonic() > deadline:
            page.screenshot(path=SCREENSHOTS / "timeout.png")
            raise TimeoutError(f"notebook still running after {RUN_ALL_TIMEOUT} s: {state}")
        time.sleep(0.5)


def describe_errors(errors: list[dict]) -> str:
    return "\n\n".join(f"code cell {e['cell']}:\n{e['text']}" for e in errors)


def test_chapter_5_run_all_and_playground(browser, lab, phases):
    with lab_page(browser, lab, phases, CHAPTER_5) as page:
        with phases("chapter 5: run all cells"):
            state = run_all_cells(page, lab, CHAPTER_5)
        page.screenshot(path=SCREENSHOTS / "05_after_run_all.png")
        assert not state["errors"], describe_errors(state["errors"])
        assert all(re.fullmatch(r"\[\d+\]:", p) for p in state["prompts"]), state["prompts"]

        with phases("chapter 5: decoding playground"):
            # (Locators given to `has` are relative: built from `page`, matched inside.)
            prompt_label = page.locator(".widget-label", has_text="prompt")
            text_boxes = page.locator(".widget-text", has=prompt_label)
            playground = page.locator(VISIBLE_NOTEBOOK).locator(".widget-vbox", has=text_boxes).last
            text_box = playground.locator(".widget-text", has=prompt_label)
            slider = playground.locator(
                ".widget-hslider", has=page.locator(".widget-label", has_text="temperature")
            )
            output = playground.locator(".widget-output")
            generate = playground.get_by_role("button", name="Generate")
            playground.scroll_into_view_if_needed()
            before = output.inner_text().strip()

            prompt = "Once upon a time, Nabo"
            text_box.locator("input").fill(prompt)
            text_box.locator("input").press("Tab")
            readout = slider.locator(".widget-readout")
            start_value = readout.inner_text().strip()
            handle = slider.locator(".noUi-handle")
            handle.focus()
            for _ in range(4):  # 4 steps of 0.05
                handle.press("ArrowRight")
            page.wait_for_function(
                "([el, v]) => el.textContent.trim() !== v",
                arg=[readout.element_handle(), start_value],
            )
            new_value = readout.inner_text().strip()
            assert float(new_value) == pytest.approx(float(start_value) + 0.2), (
                start_value,
                new_value,
            )

            generate.click()
            page.wait_for_function(
                "([el, before]) => { const t = el.innerText.trim(); "
                "return t !== before && t.length > 0; }",
                arg=[output.element_handle(), before],
                timeout=GENERATE_TIMEOUT_MS,
            )
            time.sleep(0.5)  # let the output settle before reading it
            after = output.inner_text().strip()
            print(f"[browser] temperature {start_value} -> {new_value}; generated: {after!r}")
            page.screenshot(path=SCREENSHOTS / "05_playground.png")
            assert after != before
            assert after.startswith(prompt), after
            assert len(after) > len(prompt) + 5, after
            assert not after.startswith("ValueError"), after

        state = notebook_state(page)
        assert not state["errors"], describe_errors(state["errors"])


def server_cell_index(notebook: Path) -> int:
    """The code cell (counted among code cells) that starts the judge server."""
    nb = nbformat.read(notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(code):
        if re.search(r"\bserve_in_background\(", cell.source):
            return i
    raise AssertionError(f"no cell calling serve_in_background in {notebook.name}")


def test_chapter_12_judge_server(browser, lab, phases):
    if not (NOTEBOOKS / CHAPTER_12).exists():
        print(f"[browser] skipped: {CHAPTER_12} is not in notebooks/", flush=True)
        pytest.skip(f"{CHAPTER_12} is not in notebooks/")
    index = server_cell_index(lab["root"] / CHAPTER_12)
    with lab_page(browser, lab, phases, CHAPTER_12) as page:
        with phases("chapter 12: run all cells"):
            state = run_all_cells(page, lab, CHAPTER_12)
        cell = page.locator(f"{VISIBLE_NOTEBOOK} .jp-CodeCell").nth(index)
        cell.scroll_into_view_if_needed()
        page.screenshot(path=SCREENSHOTS / "12_judge_server.png")

        assert not state["errors"], describe_errors(state["errors"])
        assert re.fullmatch(r"\[\d+\]:", state["prompts"][index]), state["prompts"][index]
        text = cell.locator(".jp-OutputArea").inner_text()
        print(f"[browser] judge server cell: {text.strip().splitlines()[-1]!r}")
        assert re.search(r"serving at http://127\.0\.0\.1:\d+ models: \[.+\]", text), text
        assert all(re.fullmatch(r"\[\d+\]:", p) for p in state["prompts"]), state["prompts"]
