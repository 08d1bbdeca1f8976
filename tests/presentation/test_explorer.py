"""The static guidance explorer page: its frames hold the right samples, it needs no kernel, its slider works.

A tiny export (few training steps, three weights, plotly.js inlined so the page works offline) is parsed back
from the HTML and compared with samples and densities computed here one weight at a time; a headless Chromium
opens it from ``file://`` and a real mouse click on the slider must swap the plotted samples.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import qgf_lite
from qgf_lite import toy
from qgf_lite.presentation import explorer
from qgf_lite.toy import experiments as tx

WEIGHTS = (0.0, 1.0, 3.0)
TRAIN_STEPS = 150
NUM_SAMPLES = 64
SEED = 3
GRID = toy.Grid2D(size=64)  # the explorer's grid


def decode(value) -> np.ndarray:
    """A plotly trace coordinate from the page: a base64 typed-array spec or a plain list."""
    if isinstance(value, dict):
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]).newbyteorder("<"))
        if "shape" in value:
            arr = arr.reshape([int(n) for n in value["shape"].split(",")])
        return arr.astype(np.float64)
    return np.asarray(value, dtype=np.float64)


def _json_after(text: str, pattern: str):
    match = re.search(pattern, text)
    assert match, f"no {pattern!r} in the page"
    return json.JSONDecoder().raw_decode(text, match.end())


def figure_from_page(text: str) -> dict:
    """The data, layout and frames that the page's script hands to plotly.js."""
    data, end = _json_after(text, r"Plotly\.newPlot\(\s*\"[^\"]+\"\s*,\s*")
    layout, _ = json.JSONDecoder().raw_decode(text, re.compile(r"\s*,\s*").match(text, end).end())
    frames, _ = _json_after(text, r"Plotly\.addFrames\(\s*['\"][^'\"]+['\"]\s*,\s*")
    return {"data": data, "layout": layout, "frames": frames}


def trace_named(traces, name: str) -> dict:
    matches = [t for t in traces if t.get("name") == name]
    assert len(matches) == 1, [t.get("name") for t in traces]
    return matches[0]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    out = tmp_path_factory.mktemp("explorer") / "explorer.html"
    path = explorer.export_guidance_explorer(
        out,
        weights=WEIGHTS,
        train_steps=TRAIN_STEPS,
        num_samples=NUM_SAMPLES,
        seed=SEED,
        include_plotlyjs=True,
        progress=False,
    )
    text = Path(path).read_text(encoding="utf-8")
    # The same call as the export's, so it returns the networks the page was drawn with (cached in memory).
    setup = tx.train_toy_bandit("ring", num_steps=TRAIN_STEPS, seed=SEED, progress=False)
    return {"path": Path(path), "text": text, "figure": figure_from_page(text), "setup": setup}


def test_one_frame_and_one_slider_step_per_weight(export):
    fig = export["figure"]
    assert len(fig["frames"]) == len(WEIGHTS)
    (slider,) = fig["layout"]["sliders"]
    assert len(slider["steps"]) == len(WEIGHTS)
    assert [step["label"] for step in slider["steps"]] == [f"{w:g}" for w in WEIGHTS]
    # Each step animates to the frame of its own weight.
    assert [step["args"][0] for step in slider["steps"]] == [[frame["name"]] for frame in fig["frames"]]
    assert slider["active"] == 0
    assert "Plotly.animate" not in export["text"]  # no autoplay: the page opens at w = 0, not at the last frame


def test_frames_hold_guided_samples_and_tilted_target_of_their_weight(export):
    setup = export["setup"]
    noise = explorer.explorer_noise(SEED, NUM_SAMPLES)
    samples = []
    for weight, frame in zip(WEIGHTS, export["figure"]["frames"]):
        # One weight at a time, eagerly: the page's frames come from a single vmapped, jitted call.
        expected = np.asarray(
            qgf_lite.guided_sample(setup.velocity, setup.critic, None, noise, steps=10, weight=weight)
        )
        points = trace_named(frame["data"], "QGF samples")
        got = np.stack([decode(points["x"]), decode(points["y"])], axis=-1)
        np.testing.assert_allclose(got, expected, atol=2e-4)
        samples.append(got)

        density = np.asarray(toy.tilted_density_grid(setup.log_ref, setup.critic, weight, GRID))
        heatmap = trace_named(frame["data"], "target density")
        np.testing.assert_allclose(decode(heatmap["z"]), density, rtol=1e-3, atol=1e-6 * density.max())

        reward = float(jnp.mean(setup.problem.reward(None, jnp.asarray(expected))))
        share = float(jnp.mean(setup.problem.in_best_region(None, jnp.asarray(expected))))
        assert frame["layout"]["title"]["text"] == (
            f"w = {weight:g}: mean reward {reward:.2f}, {share:.0%} in the best region"
        )
    for a, b in zip(samples, samples[1:]):
        assert np.max(np.abs(a - b)) > 1e-2  # guidance moves the samples: frames are not copies of one another


def test_page_is_self_contained(export):
    text = export["text"]
    assert re.findall(r"<script[^>]*\bsrc\s*=", text) == []  # plotly.js is inline
    assert re.findall(r"<link\b", text) == []
    assert "Plotly.newPlot" in text and len(text) > 3_000_000  # the inlined plotly.js library itself

    fig = explorer.guidance_explorer_figure(export["setup"], WEIGHTS, num_samples=NUM_SAMPLES, seed=SEED)
    cdn_page = explorer.explorer_page_html(fig, "<p>intro</p>", include_plotlyjs="cdn")
    sources = re.findall(r"<script[^>]*\bsrc\s*=\s*\"([^\"]+)\"", cdn_page)
    assert len(sources) == 1 and sources[0].startswith("https://cdn.plot.ly/plotly-"), sources
    assert len(cdn_page) < len(text) / 5


def test_cli_writes_the_default_weights(tmp_path, capsys):
    out = tmp_path / "sub" / "page.html"
    # Same training settings as the fixture: the trained networks come from the in-memory cache.
    assert (
        explorer.main(
            [
                "--out",
                str(out),
                "--inline",
                "--steps",
                str(TRAIN_STEPS),
                "--samples",
                "32",
                "--seed",
                str(SEED),
                "--quiet",
            ]
        )
        == 0
    )
    assert f"wrote {out}" in capsys.readouterr().out
    fig = figure_from_page(out.read_text(encoding="utf-8"))
    labels = [step["label"] for step in fig["layout"]["sliders"][0]["steps"]]
    assert labels == [f"{w:g}" for w in np.round(np.arange(0.0, 4.01, 0.25), 2)]
    assert len(fig["frames"]) == len(labels)
    assert decode(trace_named(fig["frames"][0]["data"], "QGF samples")["x"]).shape == (32,)
    assert [p.name for p in out.parent.iterdir()] == ["page.html"]  # no temporary file left behind


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(weights=[1.0, 0.5]), "weights"),
        (dict(weights=[-1.0, 0.0]), "weights"),
        (dict(weights=[]), "weights"),
        (dict(include_plotlyjs="inline"), "include_plotlyjs"),
        (dict(bandit="contextual_ring"), "stateless"),
        (dict(bandit="rings"), "unknown bandit"),
        (dict(num_samples=0), "num_samples"),
        (dict(critic="both"), "'target', 'online'"),
    ],
)
def test_bad_input_is_named_before_any_file_is_written(tmp_path, kwargs, match):
    out = tmp_path / "page.html"
    with pytest.raises(ValueError, match=match):
        explorer.export_guidance_explorer(out, train_steps=1, progress=False, **kwargs)
    assert not out.exists()


def test_critic_flag_defaults_to_the_target_critic(capsys):
    assert explorer.build_parser().parse_args([]).critic == "target"
    assert explorer.build_parser().parse_args(["--critic", "online"]).critic == "online"
    with pytest.raises(SystemExit):
        explorer.build_parser().parse_args(["--critic", "ema"])
    assert "invalid choice: 'ema'" in capsys.readouterr().err


def test_bad_output_paths_are_named(tmp_path):
    with pytest.raises(ValueError, match="folder"):
        explorer.export_guidance_explorer(tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"\.html"):
        explorer.export_guidance_explorer(tmp_path / "page.png", progress=False)
    with pytest.raises(SystemExit):
        explorer.main(["--out", str(tmp_path / "page.txt"), "--quiet"])


# --------------------------------------------------------------------------- #
# In a real browser, from disk, with no Jupyter server
# --------------------------------------------------------------------------- #
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

# The trace list handed to plotly (what changes when a frame is shown) and the decoded sample coordinates.
PLOT_STATE_JS = """() => {
  const gd = document.querySelector('.js-plotly-plot');
  const samples = gd._fullData.find(t => t.name === 'QGF samples');
  return {data: JSON.stringify(gd.data), x: Array.from(samples.x), y: Array.from(samples.y),
          title: gd.layout.title.text, active: gd._fullLayout.sliders[0].active};
}"""


def test_clicking_the_slider_in_a_browser_swaps_the_samples(export, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed; run scripts/install_browser.sh")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="python playwright is not installed; run scripts/install_browser.sh"
    )
    frames = export["figure"]["frames"]
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1000, "height": 1100},
        )
        try:
            page = context.new_page()
            errors = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(export["path"].resolve().as_uri())
            page.wait_for_function(
                "() => { const gd = document.querySelector('.js-plotly-plot');"
                " return gd && gd._fullLayout && gd._fullLayout.sliders.length > 0; }",
                timeout=30_000,
            )
            before = page.evaluate(PLOT_STATE_JS)

            # A real click on the rail, at the x of the last step's tick mark.
            rail = page.locator(".slider-rail-touch-rect").first.bounding_box()
            tick = page.locator(".slider-tick-rect").last.bounding_box()
            page.mouse.click(tick["x"] + tick["width"] / 2, rail["y"] + rail["height"] / 2)
            page.wait_for_function(
                "(old) => document.querySelector('.js-plotly-plot').layout.title.text !== old",
                arg=before["title"],
                timeout=10_000,
            )
            after = page.evaluate(PLOT_STATE_JS)
        finally:
            context.close()

    assert errors == []
    assert before["active"] == 0 and after["active"] == len(WEIGHTS) - 1
    assert after["data"] != before["data"]
    for state, frame in ((before, frames[0]), (after, frames[-1])):
        points = trace_named(frame["data"], "QGF samples")
        np.testing.assert_allclose(state["x"], decode(points["x"]), atol=1e-6)
        np.testing.assert_allclose(state["y"], decode(points["y"]), atol=1e-6)
        assert state["title"] == frame["layout"]["title"]["text"]


# --------------------------------------------------------------------------- #
# Offline: the network blocked, nothing may leave the machine
# --------------------------------------------------------------------------- #
DOCS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "guidance_explorer.html"


def _open_offline(path: Path, tmp_path: Path, wait_ms: int = 0) -> dict:
    """Open ``path`` from disk in Chromium with every non-file request aborted; what the page drew and requested."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed; run scripts/install_browser.sh")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="python playwright is not installed; run scripts/install_browser.sh"
    )
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1000, "height": 1100},
        )
        try:
            page = context.new_page()
            outside = []

            def block(route):
                outside.append(route.request.url)
                route.abort()

            context.route(re.compile(r"^(?!file:|data:|about:|blob:).*"), block)
            page.goto(path.resolve().as_uri())
            page.wait_for_load_state("load")
            page.wait_for_timeout(wait_ms)
            state = page.evaluate("""() => {
              const plot = document.getElementById('guidance-explorer');
              const status = document.getElementById('explorer-status');
              return {svg: !!(plot && plot.querySelector('svg.main-svg')),
                      traces: plot && plot._fullData ? plot._fullData.length : 0,
                      points: plot ? plot.querySelectorAll('.scatterlayer .point').length : 0,
                      status_visible: !!status && getComputedStyle(status).display !== 'none',
                      status_text: status ? status.textContent : null};
            }""")
            shot = tmp_path / f"{path.stem}_offline.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            context.close()
    return {**state, "outside": outside, "screenshot": shot}


def test_embedded_page_draws_offline_with_no_request(export, tmp_path):
    state = _open_offline(export["path"], tmp_path)
    assert state["outside"] == [], state["outside"]
    assert state["svg"] and state["traces"] >= 3 and state["points"] >= NUM_SAMPLES, state
    assert not state["status_visible"], state["status_text"]


def test_cdn_page_offline_says_why_it_is_blank(export, tmp_path):
    figure = explorer.guidance_explorer_figure(export["setup"], WEIGHTS, num_samples=NUM_SAMPLES, seed=SEED)
    page = tmp_path / "cdn.html"
    page.write_text(explorer.explorer_page_html(figure, "<p>intro</p>", include_plotlyjs="cdn"))
    state = _open_offline(page, tmp_path)
    assert any("cdn.plot.ly" in url for url in state["outside"])  # it tried, and was blocked
    assert state["status_visible"] and "could not be drawn" in state["status_text"]
    assert "python -m qgf_lite.presentation.explorer" in state["status_text"]


def test_committed_page_embeds_plotly_and_draws_offline(tmp_path):
    """docs/guidance_explorer.html: no script from the network, a reasonable size, and it draws with no network."""
    text = DOCS_PAGE.read_text(encoding="utf-8")
    assert re.findall(r"<script[^>]*\bsrc\s*=", text) == []
    assert 3_000_000 < DOCS_PAGE.stat().st_size < 8_000_000, DOCS_PAGE.stat().st_size
    assert 'id="explorer-status"' in text
    state = _open_offline(DOCS_PAGE, tmp_path)
    assert state["outside"] == [] and state["svg"] and state["traces"] >= 3 and state["points"] >= 100, state
    assert not state["status_visible"], state["status_text"]
