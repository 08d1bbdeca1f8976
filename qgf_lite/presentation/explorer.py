"""A static HTML page of the guidance explorer: notebook 03's weight slider, with no kernel behind it.

``export_guidance_explorer`` trains the BC flow and the critic on a toy bandit (``toy.experiments.train_toy_bandit``),
draws QGF samples for every guidance weight in one vectorised call (``widgets.build_frames_view``) over the tilted
target pi_ref(a) exp(w Q(a)) (``toy.experiments.tilted_density_fn``), and writes one self-contained HTML file whose
plotly slider swaps between the precomputed frames. It opens from disk (``file://``), on GitHub Pages or in any
browser: no Jupyter server, no Python, and no network: plotly.js is embedded in the page by default (``--cdn`` writes
a smaller page that loads it from cdn.plot.ly instead, and so needs the network). If the plot cannot be drawn (no
JavaScript, plotly.js did not load, a script error), the page says so in a red box above the plot instead of
staying blank.

Regenerate the committed page::

    python -m qgf_lite.presentation.explorer --out docs/guidance_explorer.html
"""

from __future__ import annotations

import argparse
import base64
import html
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from qgf_lite import toy
from qgf_lite.fileio import atomic_write_bytes
from qgf_lite.presentation import widgets
from qgf_lite.samplers import SamplerSpec
from qgf_lite.toy import experiments as tx
from qgf_lite.training import CRITIC_CHOICES, check_critic
from qgf_lite.validation import require_positive_int

DEFAULT_OUT = "docs/guidance_explorer.html"
DEFAULT_WEIGHTS = tuple(float(w) for w in np.round(np.arange(0.0, 4.01, 0.25), 2))
SAMPLE_TRACE = "QGF samples"
# The sampler's noise is drawn from its own stream of the seed, so it is independent of the behaviour data's draw.
NOISE_STREAM = 2
EULER_STEPS = 10  # QGF's default, as in notebook 03


def _check_weights(weights) -> np.ndarray:
    arr = np.asarray(weights, dtype=np.float64).reshape(-1)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(np.diff(arr) <= 0):
        raise ValueError(
            f"`weights` must be a non-empty, strictly increasing list of finite numbers >= 0, got {weights!r}."
        )
    return arr


def _check_plotlyjs(include_plotlyjs):
    if include_plotlyjs is True or include_plotlyjs == "cdn":
        return include_plotlyjs
    raise ValueError(
        f"`include_plotlyjs` must be 'cdn' (load plotly.js from cdn.plot.ly, a small file) or True "
        f"(embed it, works offline), got {include_plotlyjs!r}."
    )


def _check_out(out) -> Path:
    path = Path(out)
    if path.is_dir():
        raise ValueError(f"`out` is a folder ({path}); give a file name such as {path / 'guidance_explorer.html'}.")
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"`out` must be an .html file, got {str(path)!r}.")
    return path


def _frame_title(problem: toy.BanditProblem):
    """title_fn for build_frames_view: the true reward and best-region share of one frame's samples."""

    def title(weight: float, points) -> str:
        a = jnp.asarray(points[SAMPLE_TRACE])
        reward = float(jnp.mean(problem.reward(None, a)))
        best = float(jnp.mean(problem.in_best_region(None, a)))
        return f"w = {weight:g}: mean reward {reward:.2f}, {best:.0%} in the best region"

    return title


def _region_trace(problem: toy.BanditProblem):
    """The best region's outline (dashed): it marks the reward peak without hiding the samples piled on it."""
    from qgf_lite.presentation import plots

    return plots.region_outline(problem.in_best_region, name="best region")


def _float32_spec(value):
    """A plotly typed-array spec {"dtype": "f8", "bdata": base64} re-encoded as float32; anything else unchanged."""
    if not (isinstance(value, dict) and value.get("dtype") == "f8" and "bdata" in value):
        return value
    arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype="<f8").astype("<f4")
    return {**value, "dtype": "f4", "bdata": base64.b64encode(arr.tobytes()).decode("ascii")}


def _float32_arrays(fig) -> dict:
    """The figure as a dict whose trace coordinates are float32: that halves the page.

    plotly writes numpy arrays into the page as base64 typed arrays, always float64 for floats (a Figure's
    validators upcast float32 input), so the narrowing has to happen on the serialised dict.
    """
    fig_dict = fig.to_dict()
    for traces in [fig_dict.get("data", []), *(frame.get("data", []) for frame in fig_dict.get("frames", []))]:
        for trace in traces:
            for name in ("x", "y", "z"):
                if name in trace:
                    trace[name] = _float32_spec(trace[name])
    return fig_dict


def explorer_noise(seed: int, num_samples: int) -> jnp.ndarray:
    """The (num_samples, 2) starting noise shared by every frame, so frames differ by the weight alone."""
    return jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), NOISE_STREAM), (num_samples, 2))


def guidance_explorer_figure(
    setup: tx.ToySetup,
    weights=DEFAULT_WEIGHTS,
    *,
    num_samples: int = 1000,
    seed: int = 0,
    euler_steps: int = EULER_STEPS,
    grid: toy.Grid2D = toy.Grid2D(size=64),
    critic: str = "target",
):
    """The frames figure of notebook 03, section 4: one frame of QGF samples over pi_ref exp(w Q) per weight.

    ``critic``: guide with (and tilt the background by) the "target" critic, as the paper does, or the "online" one.
    """
    weights = _check_weights(weights)
    num_samples = require_positive_int("num_samples", num_samples)
    euler_steps = require_positive_int("euler_steps", euler_steps)
    velocity, q = setup.velocity, setup.guidance_critic(critic)
    noise = explorer_noise(require_positive_int("seed", seed, minimum=0), num_samples)

    qgf = SamplerSpec("guided", mode="qgf", steps=euler_steps)

    def sample(weight):
        return {SAMPLE_TRACE: qgf.sample(velocity, q, None, noise, weight=weight)}

    fig = widgets.build_frames_view(
        sample,
        weights,
        description="guidance weight w",
        background_fn=tx.tilted_density_fn(setup.log_ref, q, grid),
        grid=grid,
        title_fn=_frame_title(setup.problem),
        extra_traces=[_region_trace(setup.problem)],
        # As in notebook 03: the samples' own mass under translucent points, so a pile on the peak reads as mass.
        mass_of=SAMPLE_TRACE,
        marker_size=3,
        opacity=0.3,
        background_style="contour",
    )
    return fig


def _page_intro(bandit: str, num_samples: int, train_steps: int, euler_steps: int) -> str:
    return (
        f"<p>A flow-matching BC policy and an IQL critic were trained separately on the <b>{html.escape(bandit)}</b> "
        f"toy bandit ({train_steps} gradient steps). Each slider position shows {num_samples} actions sampled by "
        f"Q-Guided Flow with {euler_steps} Euler steps from the <i>same</i> noise, with the critic's action gradient "
        f"(taken at the one-step estimate &acirc; = a + (1 &minus; t) v) added to the velocity with weight <i>w</i>. "
        f"The blue contour lines are the tilted target &pi;<sub>ref</sub>(a) exp(w Q(a)) with the learned critic (at "
        f"10%, 40% and 70% of its peak); the orange cells show where the samples are (the share of samples per cell, darker where they pile up); the "
        f"dashed red circle is the best region around the reward peak; the title gives the true mean reward and the "
        f"share of samples in that circle. "
        f"At w = 0 the samples are plain behavioural cloning; a large w can overshoot the peak (watch the reward in "
        f"the title rise and then fall again).</p>"
        f"<p>Every frame was computed in advance (notebook <code>03_guided_sampling.ipynb</code>, section 4, has the "
        f"live version); regenerate this page with "
        f"<code>python -m qgf_lite.presentation.explorer --out docs/guidance_explorer.html</code>.</p>"
    )


# Shown when the plot cannot be drawn. Registered before plotly.js, so a failed CDN load is caught too.
_STATUS_HTML = """<div id="explorer-status" role="alert" style="display:none;border:2px solid #c00;background:#fee;\
padding:.6em 1em;margin:1em 0"></div>
<noscript><div style="border:2px solid #c00;background:#fee;padding:.6em 1em;margin:1em 0">This page needs
JavaScript to draw the plot: allow scripts for this file and reload it.</div></noscript>
<script>
(function () {
  var hint = %s;
  function fail(why) {
    var box = document.getElementById("explorer-status");
    if (!box || box.getAttribute("data-failed")) return;
    box.setAttribute("data-failed", "1");
    box.textContent = "The plot could not be drawn: " + why + " " + hint;
    box.style.display = "block";
  }
  window.addEventListener("error", function (event) {
    var source = event.target && event.target.src;
    fail(source ? "a script did not load (" + source + ")." : (event.message || "a script failed."));
  }, true);
  window.addEventListener("load", function () {
    if (typeof window.Plotly === "undefined") { fail("plotly.js did not load."); return; }
    setTimeout(function () {
      var plot = document.getElementById("guidance-explorer");
      if (!plot || !plot.querySelector("svg.main-svg")) fail("plotly.js loaded but drew nothing.");
    }, 4000);
  });
})();
</script>"""
_CDN_HINT = (
    "This copy loads plotly.js from cdn.plot.ly, which needs the network; for a copy that works offline run "
    "python -m qgf_lite.presentation.explorer (plotly.js embedded)."
)
_INLINE_HINT = "Open the page in a current browser with JavaScript enabled, or regenerate it: python -m qgf_lite.presentation.explorer."


def explorer_page_html(fig, intro_html: str, *, include_plotlyjs=True) -> str:
    """A complete HTML document: heading, explanation, a failure notice (hidden unless the plot cannot be drawn) and
    the figure (its frames play only when the slider moves). ``include_plotlyjs``: True (embedded, the default:
    works offline) or "cdn"."""
    import json

    import plotly.io as pio

    include_plotlyjs = _check_plotlyjs(include_plotlyjs)
    # auto_play=False: plotly would otherwise run through every frame on load and stop at the last weight.
    figure_html = pio.to_html(
        _float32_arrays(fig),
        validate=False,
        full_html=False,
        auto_play=False,
        include_plotlyjs=include_plotlyjs,
        div_id="guidance-explorer",
        config={"displaylogo": False},
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<title>QGF guidance explorer</title>\n"
        "<style>body{font-family:system-ui,sans-serif;max-width:820px;margin:2em auto;padding:0 1em;"
        "line-height:1.45;color:#222}</style>\n</head>\n<body>\n"
        "<h1>QGF guidance explorer: drag the guidance weight <i>w</i></h1>\n"
        f"{intro_html}\n{_STATUS_HTML % json.dumps(_CDN_HINT if include_plotlyjs == 'cdn' else _INLINE_HINT)}\n"
        f"{figure_html}\n</body>\n</html>\n"
    )


def export_guidance_explorer(
    out=DEFAULT_OUT,
    *,
    bandit: str = "ring",
    weights=DEFAULT_WEIGHTS,
    train_steps: int = 3000,
    num_samples: int = 1000,
    seed: int = 0,
    include_plotlyjs=True,
    critic: str = "target",
    progress: bool = True,
) -> Path:
    """Train on ``bandit``, build the guidance explorer and write it to ``out`` atomically; returns the path.

    ``include_plotlyjs``: True (embedded, the default: the page works offline) or "cdn" (a smaller page that loads
    plotly.js from cdn.plot.ly, so it needs the network).
    ``critic``: "target" (the paper's choice) or "online", the critic that guides the samples.
    """
    path = _check_out(out)
    check_critic(critic)  # a bad value is named before the training, not after it
    _check_plotlyjs(include_plotlyjs)
    weights = _check_weights(weights)
    num_samples = require_positive_int("num_samples", num_samples)
    setup = tx.train_toy_bandit(bandit, num_steps=train_steps, seed=seed, progress=progress)
    fig = guidance_explorer_figure(setup, weights, num_samples=num_samples, seed=seed, critic=critic)
    intro = _page_intro(bandit, num_samples, train_steps, EULER_STEPS)
    page = explorer_page_html(fig, intro, include_plotlyjs=include_plotlyjs)
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m qgf_lite.presentation.explorer", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"HTML file to write (default {DEFAULT_OUT})")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--inline",
        action="store_true",
        help="embed plotly.js so the page works offline (the default; kept for old scripts)",
    )
    where.add_argument(
        "--cdn",
        action="store_true",
        help="load plotly.js from cdn.plot.ly instead (about 4.8 MB smaller, needs the network)",
    )
    parser.add_argument("--bandit", default="ring", help="stateless toy bandit: ring, moons, checkerboard or spiral")
    parser.add_argument("--steps", type=int, default=3000, help="training steps for the flow and critic (default 3000)")
    parser.add_argument("--samples", type=int, default=1000, help="particles per frame (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the training and the noise (default 0)")
    parser.add_argument(
        "--critic",
        choices=CRITIC_CHOICES,
        default="target",
        help="critic that guides the samples: the Polyak target (default, as in the paper) or online",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        path = export_guidance_explorer(
            args.out,
            bandit=args.bandit,
            train_steps=args.steps,
            num_samples=args.samples,
            seed=args.seed,
            critic=args.critic,
            include_plotlyjs="cdn" if args.cdn else True,
            progress=not args.quiet,
        )
    except (ValueError, TypeError) as err:
        build_parser().error(str(err))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


__all__ = ["explorer_noise", "explorer_page_html", "export_guidance_explorer", "guidance_explorer_figure", "main"]


if __name__ == "__main__":
    raise SystemExit(main())
