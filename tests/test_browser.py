"""Real-browser smoke test: JupyterLab + headless Chromium + ipywidgets + plotly.

Starts JupyterLab on a free local port, opens a notebook, runs all cells from
the Run menu, drags the guidance-weight slider and checks that the plotted
samples change. Screenshots go to artifacts/browser/.

Needs Debian's chromium and the python playwright package
(scripts/install_browser.sh). Playwright's own browser download is never used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
TOKEN = "qgf-browser-test"

if CHROMIUM is None:
    pytest.skip("chromium is not installed; run scripts/install_browser.sh", allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="python playwright is not installed; run scripts/install_browser.sh"
)

# (notebook, slider label, seconds allowed for "Run All Cells")
TARGETS = [
    pytest.param("tests/fixtures/slider_plot.ipynb", "weight", 60, id="fixture"),
    # 03 trains a small flow and critic even in SMOKE mode; allow for a loaded CI machine.
    pytest.param("notebooks/03_guided_sampling.ipynb", "weight", 300, id="03_guided_sampling"),
]

# JupyterLab user settings for the test: never autosave (running all cells must
# not write outputs into committed notebooks), no news pop-up over the page, and
# no windowing (otherwise cells scrolled out of view are only placeholders).
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_server(url: str, process: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"JupyterLab did not answer within {timeout} s:\n{log_path.read_text()[-3000:]}")


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory):
    """A JupyterLab server rooted at the repository, isolated from user config."""
    home = tmp_path_factory.mktemp("lab")
    for name, settings in LAB_SETTINGS.items():
        path = home / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    port = free_port()
    env = dict(
        os.environ,
        QGF_SMOKE="1",
        MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"),
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
    )
    command = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser", "--allow-root",  # CI containers run as root
        "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={REPO}",
        f"--LabApp.user_settings_dir={home / 'settings'}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        # An absolute checkpoint dir keeps .ipynb_checkpoints/ out of the repository.
        f"--FileCheckpoints.checkpoint_dir={home / 'checkpoints'}",
    ]  # fmt: skip
    log_path = home / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_for_server(f"http://127.0.0.1:{port}/api/status?token={TOKEN}", process, log_path, timeout=60)
        yield {"url": f"http://127.0.0.1:{port}", "log": log_path}
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    """Headless system Chromium with a fresh profile."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()


# --- page helpers -----------------------------------------------------------

RUN_FINISHED_JS = """() => {
  const indicator = document.querySelector('.jp-Notebook-ExecutionIndicator');
  const prompts = Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt'))
    .map(p => p.textContent.trim());
  const busy = prompts.some(p => p.includes('*'));
  const started = prompts.some(p => /\\[\\d+\\]/.test(p));
  return started && !busy && (!indicator || indicator.dataset.status === 'idle');
}"""

UNEXECUTED_CELLS_JS = """() => Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell'))
  .filter(c => !/\\[\\d+\\]/.test(c.querySelector('.jp-InputPrompt').textContent))
  .map(c => c.querySelector('.jp-InputArea-editor').textContent.trim())
  .filter(text => text.length > 0).map(text => text.slice(0, 80))"""

ERROR_OUTPUTS_JS = """() => Array.from(document.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'))
  .map(e => e.textContent).filter(t => /Traceback \\(most recent call last\\)/.test(t)).map(t => t.slice(-1500))"""

# Every plotly graph inside `root` (or the page), as JSON of its trace data.
PLOT_DATA_JS = """(root) => Array.from((root || document).querySelectorAll('.js-plotly-plot'))
  .map(gd => JSON.stringify(gd.data || [], (k, v) => ArrayBuffer.isView(v) ? Array.from(v) : v))"""


def accept_dialogs(page) -> list[str]:
    """Accept any modal dialog (e.g. "Select Kernel"): it would block Run All. Returns their texts."""
    texts = []
    dialogs = page.locator(".jp-Dialog")
    for index in range(dialogs.count()):
        dialog = dialogs.nth(index)
        texts.append(dialog.inner_text()[:200])
        accept = dialog.locator(".jp-mod-accept")
        if accept.count():
            accept.first.click()
    return texts


def wait_until(page, js: str, timeout_s: float, what: str) -> None:
    """Poll `js` until true, accepting dialogs on the way; fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        seen += accept_dialogs(page)
        if page.evaluate(js):
            return
        page.wait_for_timeout(250)
    raise TimeoutError(f"{what} did not happen within {timeout_s} s; dialogs accepted on the way: {seen}")


def click_menu(page, menu: str, item: str) -> None:
    # Exact labels: "Run All Cells" must not match "Restart Kernel and Run All Cells…".
    page.locator(".lm-MenuBar-itemLabel").filter(has_text=re.compile(f"^{re.escape(menu)}$")).first.click()
    entry = page.locator(".lm-Menu-itemLabel").filter(has_text=re.compile(f"^{re.escape(item)}$")).first
    entry.wait_for(state="visible", timeout=10_000)
    entry.click()


KERNEL_READY_JS = """() => {
  const status = document.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status || '';
  const name = document.querySelector('.jp-NotebookPanel .jp-KernelName')?.textContent || '';
  return /idle/i.test(status) && name.length > 0 && !/No Kernel|Starting/i.test(name);
}"""


def open_notebook(page, base_url: str, notebook: str) -> None:
    # `reset` starts from an empty workspace: no tabs restored from an earlier page.
    page.goto(f"{base_url}/lab/tree/{notebook}?token={TOKEN}&reset", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=60_000)
    wait_until(page, KERNEL_READY_JS, 60, "kernel start")


def run_all_cells(page, timeout_s: float) -> None:
    click_menu(page, "Run", "Run All Cells")
    wait_until(page, RUN_FINISHED_JS, timeout_s, "Run All Cells")
    errors = page.evaluate(ERROR_OUTPUTS_JS)
    unexecuted = page.evaluate(UNEXECUTED_CELLS_JS)
    assert not errors and not unexecuted, (
        f"code cells that did not run: {unexecuted}\ntracebacks shown:\n" + "\n---\n".join(errors)
    )


def find_slider(page, label: str):
    sliders = page.locator(".widget-slider").filter(has=page.locator(".widget-label", has_text=label))
    try:
        sliders.first.wait_for(state="visible", timeout=30_000)
    except sync_api.TimeoutError:
        labels = page.locator(".widget-slider .widget-label").all_text_contents()
        raise AssertionError(f"no slider labelled {label!r}; sliders on the page: {labels}") from None
    slider = sliders.first
    slider.scroll_into_view_if_needed()
    return slider


def drag_slider(page, slider) -> None:
    """Drag the noUiSlider handle across the track with real mouse events."""
    handle = slider.locator(".noUi-handle").first
    track = slider.locator(".noUi-target").first
    hbox, tbox = handle.bounding_box(), track.bounding_box()
    start_x = hbox["x"] + hbox["width"] / 2
    y = hbox["y"] + hbox["height"] / 2
    # Move towards whichever end is further away so the value surely changes.
    goes_right = start_x < tbox["x"] + tbox["width"] / 2
    end_x = tbox["x"] + tbox["width"] * (0.8 if goes_right else 0.2)
    page.mouse.move(start_x, y)
    page.mouse.down()
    page.mouse.move(end_x, y, steps=12)
    page.mouse.up()


def wait_for_settled_plots(page, root, timeout_s: float, quiet_s: float = 1.0) -> list[str]:
    """Plot data once the kernel is idle and the data has stopped changing for quiet_s."""
    deadline = time.monotonic() + timeout_s
    last = page.evaluate(PLOT_DATA_JS, root)
    while time.monotonic() < deadline:
        page.wait_for_timeout(quiet_s * 1000)
        current = page.evaluate(PLOT_DATA_JS, root)
        idle = page.evaluate(
            "() => document.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status === 'idle'"
        )
        if idle and current == last:
            return current
        last = current
    raise TimeoutError(f"plots kept changing (or the kernel stayed busy) for {timeout_s} s after the drag")


def _ancestor(locator, css_class: str):
    return locator.locator(
        f"xpath=ancestor::div[contains(concat(' ', normalize-space(@class), ' '), ' {css_class} ')][1]"
    )


def output_of(slider):
    """The cell holding the slider: the plot it drives is usually displayed there too."""
    return _ancestor(slider, "jp-Cell")


def snapshot(page, slider, path: Path) -> None:
    """Screenshot of the slider's output area (slider and plot), else the page."""
    outputs = _ancestor(slider, "jp-OutputArea")
    if outputs.count():
        outputs.first.scroll_into_view_if_needed()
        outputs.first.screenshot(path=str(path))
    else:
        page.screenshot(path=str(path))


@pytest.mark.parametrize("notebook, label, run_timeout", TARGETS)
def test_slider_changes_plotted_samples(lab_server, browser_context, notebook, label, run_timeout):
    if not (REPO / notebook).is_file():
        pytest.skip(f"{notebook} does not exist yet")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stem = Path(notebook).stem
    page = browser_context.new_page()
    try:
        open_notebook(page, lab_server["url"], notebook)
        run_all_cells(page, run_timeout)

        slider = find_slider(page, label)
        cell = output_of(slider).element_handle()
        if cell.query_selector(".js-plotly-plot") is None:
            cell = None  # the figure is displayed by another cell: watch every plot
        page.wait_for_function(
            "(root) => Array.from((root || document).querySelectorAll('.js-plotly-plot'))"
            ".some(gd => (gd.data || []).length > 0)",
            arg=cell,
            timeout=30_000,
        )
        before = page.evaluate(PLOT_DATA_JS, cell)
        # aria-valuenow works even when the readout is hidden (readout=False).
        handle = slider.locator(".noUi-handle").first
        value_before = handle.get_attribute("aria-valuenow")
        snapshot(page, slider, ARTIFACTS / f"{stem}-1-before-drag.png")

        drag_slider(page, slider)

        page.wait_for_function(
            "([el, old]) => el.getAttribute('aria-valuenow') !== old",
            arg=[handle.element_handle(), value_before],
            timeout=10_000,
        )
        # The kernel recomputes and pushes new trace data over the widget comm.
        page.wait_for_function(
            f"([root, old]) => JSON.stringify(({PLOT_DATA_JS})(root)) !== JSON.stringify(old)",
            arg=[cell, before],
            timeout=60_000,
            polling=250,
        )
        # Dragging sends intermediate values too; compare against the settled plot.
        after = wait_for_settled_plots(page, cell, timeout_s=60)
        snapshot(page, slider, ARTIFACTS / f"{stem}-2-after-drag.png")

        assert len(after) == len(before)
        assert after != before
        if notebook.startswith("tests/fixtures"):
            # Independent check of what the fixture's kernel should have drawn.
            import numpy as np

            weight = float(handle.get_attribute("aria-valuenow"))
            assert weight != float(value_before)
            rng = np.random.default_rng(0)
            base = rng.normal(size=(300, 2)) * 0.3
            expected = base + (1.0 - np.exp(-weight)) * np.array([0.8, 0.5])
            trace = json.loads(after[0])[0]
            np.testing.assert_allclose(trace["x"], expected[:, 0], atol=1e-6)
            np.testing.assert_allclose(trace["y"], expected[:, 1], atol=1e-6)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / f"{stem}-failure.png"), full_page=True)
        print(lab_server["log"].read_text()[-4000:])
        raise
    finally:
        page.close()
