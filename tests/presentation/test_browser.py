"""Real-browser tests: JupyterLab + headless Chromium + ipywidgets + plotly.

Starts JupyterLab on a free local port. ``test_slider_changes_plotted_samples`` opens a small fixture notebook,
runs all cells from the Run menu, drags the slider and checks that the plotted samples change.
``test_notebook_figures`` opens each course notebook (SMOKE mode) the same way and looks at every figure as a
student would, in an output area about 900 px wide with the file browser open: each figure lies fully inside its
output area and has axis titles; notebook 03's sample plots show the printed share of samples in the best region
and draw no opaque marker over the samples; its slider re-samples when dragged; notebook 01, saved with its widget
state and reopened after the kernel is gone, shows no "model not found" and a titled live view. In every figure no
text label (annotation, text of a text trace) is clipped or overlaps another; 03's w slider, dragged to w = 1 from
w = 0 and from w = 3, draws the tilted target with contour levels at 10/40/70% of its peak at the new w.
Screenshots: artifacts/browser/ and one per figure in artifacts/figures/ (CI keeps them for a person to look at).

Needs Debian's chromium and the python playwright package
(scripts/install_browser.sh). Playwright's own browser download is never used.
"""

from __future__ import annotations

import contextlib
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

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "browser"
FIGURES = REPO / "artifacts" / "figures"
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
]
# Course notebooks and the seconds allowed for "Run All Cells" in SMOKE mode on a loaded 2-core CI machine
# (03's slider is dragged by test_notebook_figures).
COURSE = [
    "01_flow_matching",
    "02_critic_learning",
    "03_guided_sampling",
    "04_test_time_compute",
    "05_ogbench_manipulation",
]
RUN_TIMEOUT = 300
# The viewport that gives a notebook output area of about 900 px with JupyterLab's file browser open.
VIEWPORT = {"width": 1332, "height": 1000}

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
    # Saved notebooks keep their widget state, so a reopened notebook re-renders its live views from it.
    "@jupyter-widgets/jupyterlab-manager/plugin.jupyterlab-settings": {"saveState": True},
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
            viewport=VIEWPORT,
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


def open_notebook(page, base_url: str, notebook: str, *, reset: bool = True) -> None:
    # `reset` starts from an empty workspace: no tabs restored from an earlier page.
    page.goto(f"{base_url}/lab/tree/{notebook}?token={TOKEN}{'&reset' if reset else ''}", wait_until="domcontentloaded")
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


@contextlib.contextmanager
def browser_page(browser_context, lab_server, failure_png: Path):
    """A fresh page; if the test fails in it, a full-page screenshot goes to ``failure_png`` and the end of the
    JupyterLab server's log is printed before the error propagates. The page is closed either way."""
    page = browser_context.new_page()
    try:
        yield page
    except Exception:
        page.screenshot(path=str(failure_png), full_page=True)
        print(lab_server["log"].read_text()[-4000:])
        raise
    finally:
        page.close()


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
    with browser_page(browser_context, lab_server, ARTIFACTS / f"{stem}-failure.png") as page:
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


# --- every figure of the course notebooks -------------------------------------------------------

# One entry per plotly figure in the notebook's outputs: where it sits against its output area, and its axes.
FIGURES_JS = """() => Array.from(document.querySelectorAll('.jp-Notebook .js-plotly-plot'))
  .map((gd, index) => {
    const out = gd.closest('.jp-OutputArea-output');
    const box = gd.getBoundingClientRect(), area = out.getBoundingClientRect();
    // A static figure's output element is itself the plot (class js-plotly-plot); a FigureWidget sits inside one.
    const svg = gd.querySelector('.svg-container');
    const full = gd._fullLayout || {};
    const axes = Object.keys(full).filter(k => /^[xy]axis\\d*$/.test(k) && full[k].visible !== false)
      .map(k => {
        const title = (gd.layout[k] || {}).title;
        return {name: k, title: (typeof title === 'string' ? title : (title && title.text)) || ''};
      });
    const text = (gd.layout.title && (gd.layout.title.text || gd.layout.title)) || '';
    return {index, text: String(text).slice(0, 80), left: box.left, right: box.right, areaLeft: area.left,
            areaRight: area.right, areaWidth: out.clientWidth, overflow: out.scrollWidth - out.clientWidth,
            svgWidth: svg ? svg.getBoundingClientRect().width : 0, axes};
  })"""

STDERR_JS = """() => Array.from(document.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')).map(e => e.textContent.slice(0, 300))"""

# Trace data and layout of one figure (typed arrays as lists), found by its index among the notebook's plots.
FIGURE_DATA_JS = """(index) => {
  const gd = document.querySelectorAll('.jp-Notebook .js-plotly-plot')[index];
  const plain = (k, v) => ArrayBuffer.isView(v) ? Array.from(v) : v;
  return JSON.parse(JSON.stringify({data: gd.data, layout: gd.layout}, plain));
}"""

# The ring bandit's best region (qgf_lite.toy.ring_bandit: a disc of radius 0.2 around the first mode at
# radius 0.7), restated here so the test checks the plotted points independently of the package.
BEST_CENTER, BEST_RADIUS = (0.7, 0.0), 0.2


def _array(value):
    """A trace's coordinate array: a plain list, or plotly's base64 form {"dtype": "f8", "bdata": ...}."""
    import base64

    import numpy as np

    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).astype(float)
    return np.asarray(value, dtype=float)


def _share_in_best_region(trace) -> tuple:
    """(share of the trace's points inside the best region, number of points)."""
    import numpy as np

    x, y = _array(trace["x"]), _array(trace["y"])
    return float(np.mean((x - BEST_CENTER[0]) ** 2 + (y - BEST_CENTER[1]) ** 2 < BEST_RADIUS**2)), len(x)


def _axis_of(trace) -> str:
    return trace.get("xaxis", "x")


def _check_mass_is_visible(figure: dict, what: str) -> list:
    """Per subplot: the sample traces (meta "samples"), a mass heatmap drawn under them, translucent sample markers
    and no opaque marker drawn above them. Returns [(subplot axis, plotted share in the best region)]."""
    data = figure["data"]
    shares = []
    for i, trace in enumerate(data):
        if trace.get("meta") != "samples":
            continue
        axis = _axis_of(trace)
        same = [(j, t) for j, t in enumerate(data) if _axis_of(t) == axis]
        assert any(t.get("type") == "heatmap" and j < i for j, t in same), (
            f"{what}: no heatmap of the sample mass under the samples in subplot {axis}"
        )
        assert (trace.get("marker") or {}).get("opacity", 1) < 1, (
            f"{what}: sample markers are opaque in subplot {axis}, so piled-up samples do not accumulate"
        )
        for j, other in same:
            if j <= i or "markers" not in (other.get("mode") or "") or other.get("meta") == "samples":
                continue
            marker = other.get("marker") or {}
            hollow = str(marker.get("symbol", "")).endswith("-open")
            assert hollow or marker.get("opacity", 1) <= 0.5, (
                f"{what}: the opaque marker trace {other.get('name')!r} is drawn above the samples in subplot {axis}"
            )
        shares.append((axis, _share_in_best_region(trace)))
    assert shares, f"{what}: no sample traces (meta 'samples') found"
    return shares


def _printed_table(text: str) -> dict:
    """{label: {column: value}} from a tx.format_table printout (columns separated by two or more spaces)."""
    lines = [line for line in text.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.startswith("label"))
    header = re.split(r"\s{2,}", lines[start].strip())
    rows = {}
    for line in lines[start + 2 :]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) == len(header):
            rows[cells[0]] = dict(zip(header, cells))
    return rows


def check_guidance_figures(page, figures: list) -> None:
    """Notebook 03: the modes figure and the slider view show the share of samples that the text prints."""
    modes = [f for f in figures if "Where each sampler puts" in f["text"]]
    assert len(modes) == 1, f"03's modes figure not found among {[f['text'] for f in figures]}"
    figure = page.evaluate(FIGURE_DATA_JS, modes[0]["index"])
    shares = dict(_check_mass_is_visible(figure, "03 modes figure"))
    # Subplot titles: "<label><br><sup>73.1% in the best region</sup>", in the order of the subplots.
    titles = [a["text"] for a in figure["layout"].get("annotations", []) if "in the best region" in a.get("text", "")]
    assert len(titles) == len(shares), f"{len(titles)} panel titles with a share for {len(shares)} panels"
    outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
    table_text = next(t for t in outputs if "frac_best_region" in t and "label" in t)
    table = _printed_table(table_text)
    for title, (_axis, (plotted, n)) in zip(titles, shares.items()):
        label = title.split("<br>")[0]
        printed_title = float(re.search(r"([\d.]+)% in the best region", title).group(1)) / 100
        printed_table = float(table[label]["frac_best_region"])
        # Rounding of the printout, plus one sample that float32 (the package) and float64 (here) may place on
        # different sides of the region's edge.
        slack = 0.0006 + 1.0 / n
        assert abs(plotted - printed_title) <= slack, f"{label}: title says {printed_title}, plotted {plotted}"
        assert abs(plotted - printed_table) <= slack, f"{label}: table says {printed_table}, plotted {plotted}"


def check_slider_view(page, what: str) -> None:
    """The live slider view: mass visible, and the share in its title is the share of its plotted samples."""
    slider = find_slider(page, "weight")
    cell = output_of(slider)
    gd_index = page.evaluate(
        """(cell) => { const all = Array.from(document.querySelectorAll(
              '.jp-Notebook .js-plotly-plot'));
            return all.indexOf(cell.querySelector('.js-plotly-plot')); }""",
        cell.element_handle(),
    )
    assert gd_index >= 0, "the slider's cell shows no plot"
    figure = page.evaluate(FIGURE_DATA_JS, gd_index)
    [(_, (plotted, n))] = _check_mass_is_visible(figure, what)
    title = figure["layout"]["title"]
    title = title.get("text", "") if isinstance(title, dict) else title
    printed = float(re.search(r"(\d+)% in the best region", title).group(1)) / 100
    assert abs(plotted - printed) <= 0.005 + 1.0 / n, f"{what}: the title says {title!r}, plotted share {plotted:.3f}"


def drag_and_check_slider(page, stem: str) -> None:
    slider = find_slider(page, "weight")
    cell = output_of(slider).element_handle()
    handle = slider.locator(".noUi-handle").first
    value_before = handle.get_attribute("aria-valuenow")
    before = page.evaluate(PLOT_DATA_JS, cell)
    drag_slider(page, slider)
    page.wait_for_function(
        "([el, old]) => el.getAttribute('aria-valuenow') !== old",
        arg=[handle.element_handle(), value_before],
        timeout=10_000,
    )
    page.wait_for_function(
        f"([root, old]) => JSON.stringify(({PLOT_DATA_JS})(root)) !== JSON.stringify(old)",
        arg=[cell, before],
        timeout=60_000,
        polling=250,
    )
    after = wait_for_settled_plots(page, cell, timeout_s=60)
    assert after != before
    snapshot(page, slider, FIGURES / f"{stem}-slider-after-drag.png")
    check_slider_view(page, f"{stem} slider view after the drag to w = {handle.get_attribute('aria-valuenow')}")


# Every text label of one figure (annotations, and the text of text traces), as page boxes, with the boxes it must
# stay inside: annotations inside the figure's SVG, a text trace's labels inside its subplot's plot area (plotly
# clips them there, so "N=32" at the edge showed as "N=3").
LABELS_JS = """(index) => {
  const gd = document.querySelectorAll('.jp-Notebook .js-plotly-plot')[index];
  const svg = gd.querySelector('.main-svg');
  if (!svg || !gd._fullLayout) return {labels: [], figure: null};
  const box = (e) => { const b = e.getBoundingClientRect();
                       return {left: b.left, right: b.right, top: b.top, bottom: b.bottom}; };
  const figure = box(svg), full = gd._fullLayout, labels = [];
  gd.querySelectorAll('.annotation').forEach(a => {
    const t = a.querySelector('.annotation-text') || a;
    if (t.textContent.trim() && a.getAttribute('visibility') !== 'hidden')
      labels.push({kind: 'annotation', text: t.textContent.trim(), box: box(t), inside: figure});
  });
  gd.querySelectorAll('.scatterlayer .trace').forEach(g => {
    const trace = (g.__data__ && g.__data__[0] && g.__data__[0].trace) || {};
    const xa = full[(trace.xaxis || 'x').replace('x', 'xaxis')], ya = full[(trace.yaxis || 'y').replace('y', 'yaxis')];
    if (!xa || !ya) return;
    const area = {left: figure.left + xa._offset, right: figure.left + xa._offset + xa._length,
                  top: figure.top + ya._offset, bottom: figure.top + ya._offset + ya._length};
    g.querySelectorAll('.textpoint text').forEach(t => {
      if (t.textContent.trim()) labels.push({kind: 'text trace', text: t.textContent.trim(), box: box(t), inside: area});
    });
  });
  return {labels, figure};
}"""


def label_problems(labels: list, what: str, slack: float = 1.0) -> list:
    """Labels that stick out of the box they must stay inside, and pairs of labels that overlap."""
    problems = []
    for label in labels:
        b, inside = label["box"], label["inside"]
        if (
            b["left"] < inside["left"] - slack
            or b["right"] > inside["right"] + slack
            or b["top"] < inside["top"] - slack
            or b["bottom"] > inside["bottom"] + slack
        ):
            where = "the figure" if label["kind"] == "annotation" else "its plot area"
            problems.append(
                f"{what}: {label['kind']} {label['text']!r} is clipped by {where} (label {b}, allowed {inside})"
            )
    for i, first in enumerate(labels):
        for second in labels[i + 1 :]:
            a, b = first["box"], second["box"]
            width = min(a["right"], b["right"]) - max(a["left"], b["left"])
            height = min(a["bottom"], b["bottom"]) - max(a["top"], b["top"])
            if width > slack and height > slack:
                problems.append(
                    f"{what}: labels {first['text']!r} and {second['text']!r} overlap ({width:.0f} x {height:.0f} px)"
                )
    return problems


def _contour(figure: dict) -> dict:
    contours = [t for t in figure["data"] if t.get("type") == "contour" and t.get("name") == "tilted target"]
    assert len(contours) == 1, f"expected one contour trace named 'tilted target', found {len(contours)}"
    return contours[0]


def _z_peak(trace) -> float:
    import numpy as np

    z = trace["z"]
    rows = [_array(row) for row in z] if isinstance(z, list) else [_array(z)]
    return float(max(np.max(row) for row in rows))


def slider_figure(page, slider) -> dict:
    cell = output_of(slider)
    index = page.evaluate(
        """(cell) => Array.from(document.querySelectorAll('.jp-Notebook .js-plotly-plot'))
              .indexOf(cell.querySelector('.js-plotly-plot'))""",
        cell.element_handle(),
    )
    assert index >= 0, "the slider's cell shows no plot"
    return page.evaluate(FIGURE_DATA_JS, index)


def drag_slider_to(page, slider, value: float, low: float, high: float) -> None:
    """Drag the handle with real mouse events to the track position of ``value`` (the slider snaps to its step)."""
    handle = slider.locator(".noUi-handle").first
    track = slider.locator(".noUi-target").first
    hbox, tbox = handle.bounding_box(), track.bounding_box()
    y = hbox["y"] + hbox["height"] / 2
    page.mouse.move(hbox["x"] + hbox["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(tbox["x"] + tbox["width"] * (value - low) / (high - low), y, steps=12)
    page.mouse.up()


def settle_at(page, slider, value: float) -> dict:
    """Wait until the slider reads ``value`` and the kernel has redrawn; the settled figure."""
    handle = slider.locator(".noUi-handle").first
    page.wait_for_function(
        "([el, want]) => Math.abs(parseFloat(el.getAttribute('aria-valuenow')) - want) < 1e-6",
        arg=[handle.element_handle(), value],
        timeout=10_000,
    )
    wait_for_settled_plots(page, output_of(slider).element_handle(), timeout_s=60)
    return slider_figure(page, slider)


def check_contours_at(figure: dict, weight: float, what: str) -> dict:
    """The tilted target's contour levels are 10%, 40% and 70% of the peak of the density drawn, and the title
    names the slider's weight. Returns {"peak", "levels"}."""
    trace = _contour(figure)
    peak = _z_peak(trace)
    c = trace["contours"]
    drawn = [c["start"], c["start"] + c["size"], c["start"] + 2 * c["size"]]
    want = [0.1 * peak, 0.4 * peak, 0.7 * peak]
    assert all(abs(d - w) <= 1e-6 * peak for d, w in zip(drawn, want)) and abs(c["end"] - want[-1]) <= 1e-6 * peak, (
        f"{what}: contour levels {drawn} (end {c['end']}) are not 10/40/70% of the drawn target's peak {peak} ({want})"
    )
    title = figure["layout"]["title"]
    title = title.get("text", "") if isinstance(title, dict) else title
    assert title.startswith(f"w = {weight:g}:"), f"{what}: the title {title!r} is not for w = {weight:g}"
    return {"peak": peak, "levels": drawn}


def check_contours_from_both_sides(page) -> None:
    """03's w slider: w = 1 reached from w = 0 and from w = 3 draws the same target with levels at 10/40/70% of its
    peak (the old code kept the levels of the position the drag came from). Screenshots in artifacts/browser/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    slider = find_slider(page, "weight")
    handle = slider.locator(".noUi-handle").first
    low, high = float(handle.get_attribute("aria-valuemin")), float(handle.get_attribute("aria-valuemax"))
    start = check_contours_at(settle_at(page, slider, 0.0), 0.0, "03 at w = 0")
    drag_slider_to(page, slider, 1.0, low, high)
    from_below = check_contours_at(settle_at(page, slider, 1.0), 1.0, "03 dragged from w = 0 to w = 1")
    snapshot(page, slider, ARTIFACTS / "03-w1-from-below.png")
    drag_slider_to(page, slider, 3.0, low, high)
    at_three = check_contours_at(settle_at(page, slider, 3.0), 3.0, "03 dragged to w = 3")
    snapshot(page, slider, ARTIFACTS / "03-w3.png")
    drag_slider_to(page, slider, 1.0, low, high)
    from_above = check_contours_at(settle_at(page, slider, 1.0), 1.0, "03 dragged from w = 3 to w = 1")
    snapshot(page, slider, ARTIFACTS / "03-w1-from-above.png")
    assert len({round(p["peak"], 6) for p in (start, from_below, at_three)}) == 3, "the target did not change with w"
    assert from_above["levels"] == from_below["levels"], (
        f"w = 1 drawn with levels {from_below['levels']} coming from w = 0 but {from_above['levels']} from w = 3"
    )


# A live view (slider + FigureWidget) drawn with its traces: what a reopened notebook restores from saved state.
LIVE_VIEW_RENDERED_JS = """() => Array.from(document.querySelectorAll('.jp-Notebook .widget-slider'))
  .some(s => { const gd = s.closest('.jp-OutputArea-output').querySelector('.js-plotly-plot');
               return gd && gd._fullLayout && (gd.data || []).length > 0; })"""


def save_and_reopen(page, base_url: str, notebook: str) -> None:
    """Save (with widget state), shut the kernel down, reload: what a student sees opening the file next day."""
    page.keyboard.press("Control+s")
    page.wait_for_function("() => !document.querySelector('.jp-NotebookPanel .jp-mod-dirty')", timeout=30_000)
    # End every session (and its kernel) through the REST API, so no widget model survives on the server side.
    request = page.request
    for session in request.get(f"{base_url}/api/sessions?token={TOKEN}").json():
        request.delete(f"{base_url}/api/sessions/{session['id']}?token={TOKEN}")
    page.goto(f"{base_url}/lab/tree/{notebook}?token={TOKEN}&reset", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=60_000)
    wait_until(page, KERNEL_READY_JS, 60, "kernel start after reopening")
    try:  # the widget manager restores the saved widget state once the new kernel is connected
        page.wait_for_function(LIVE_VIEW_RENDERED_JS, timeout=90_000, polling=500)
    except sync_api.TimeoutError:
        pass  # reported by the caller's assertion, with what the page shows


@pytest.mark.parametrize("name", COURSE)
def test_notebook_figures(lab_server, browser_context, name):
    source = REPO / "notebooks" / f"{name}.ipynb"
    if not source.is_file():
        pytest.skip(f"{source.name} does not exist yet")
    FIGURES.mkdir(parents=True, exist_ok=True)
    for old in FIGURES.glob(f"{name[:2]}-*.png"):
        old.unlink()
    # Run a copy: the reload check saves the notebook, which must never write outputs into the committed file.
    workdir = FIGURES / "notebooks"
    workdir.mkdir(exist_ok=True)
    shutil.copy(source, workdir / source.name)
    notebook = (workdir / source.name).relative_to(REPO).as_posix()
    with browser_page(browser_context, lab_server, FIGURES / f"{name[:2]}-failure.png") as page:
        open_notebook(page, lab_server["url"], notebook)
        run_all_cells(page, RUN_TIMEOUT)
        page.wait_for_timeout(1000)  # plotly finishes laying out figures after the kernel goes idle
        figures = page.evaluate(FIGURES_JS)
        assert figures, f"{name}: no plotly figure in the outputs"
        problems, shots = [], []
        for figure in figures:
            what = f"{name} figure {figure['index']} ({figure['text']!r})"
            if (
                figure["right"] > figure["areaRight"] + 1
                or figure["overflow"] > 1
                or figure["svgWidth"] > figure["areaWidth"] + 1
            ):
                problems.append(
                    f"{what}: {figure['svgWidth']:.0f} px wide, does not fit its {figure['areaWidth']} px output area"
                )
            titled = {a["name"][0] for a in figure["axes"] if a["title"].strip()}
            untitled_x = [a["name"] for a in figure["axes"] if a["name"].startswith("x") and not a["title"].strip()]
            if figure["axes"] and (untitled_x or titled != {"x", "y"}):
                problems.append(f"{what}: axes without titles: x axes {untitled_x}, titled kinds {sorted(titled)}")
            plot = page.locator(".jp-Notebook .js-plotly-plot").nth(figure["index"])
            plot.scroll_into_view_if_needed()
            path = FIGURES / f"{name[:2]}-{figure['index']:02d}.png"
            output = plot.locator("xpath=ancestor-or-self::div[contains(@class, 'jp-OutputArea-output')][1]")
            output.screenshot(path=str(path))
            shots.append(path)
        print(f"{name}: {len(shots)} figure screenshots in {FIGURES} (output area {figures[0]['areaWidth']} px wide)")
        assert not problems, "\n".join(problems)
        stderr = [t for t in page.evaluate(STDERR_JS) if t.strip()]
        assert not stderr, f"{name}: stray stderr output (shown as a pink box): {stderr}"
        assert "model not found" not in page.locator(".jp-Notebook").inner_text()

        labels = []
        for figure in figures:
            found = page.evaluate(LABELS_JS, figure["index"])
            labels += label_problems(found["labels"], f"{name} figure {figure['index']} ({figure['text']!r})")
        assert not labels, "\n".join(labels)

        if name.startswith("03"):
            check_guidance_figures(page, figures)
            check_slider_view(page, "03 slider view")
            check_contours_from_both_sides(page)
            drag_and_check_slider(page, name[:2])
        if name.startswith("01"):
            save_and_reopen(page, lab_server["url"], notebook)
            text = page.locator(".jp-Notebook").inner_text()
            assert "model not found" not in text, f"{name} reopened: a widget output says 'model not found'"
            live = page.evaluate("""() => Array.from(document.querySelectorAll('.jp-Notebook .widget-slider'))
                .map(s => s.closest('.jp-OutputArea-output').querySelector('.js-plotly-plot'))
                .filter(gd => gd).map(gd => ({title: (gd._fullLayout.title || {}).text || '',
                                              width: gd.getBoundingClientRect().width}))""")
            assert live, f"{name} reopened: the live view did not re-render from the saved widget state"
            assert all(v["title"] and v["width"] >= 400 for v in live), f"{name} reopened: live view {live}"
            slider = page.locator(".jp-Notebook .widget-slider").first
            slider.scroll_into_view_if_needed()
            _ancestor(slider, "jp-OutputArea").first.screenshot(
                path=str(FIGURES / f"{name[:2]}-reopened-live-view.png")
            )
