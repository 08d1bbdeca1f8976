"""Plotly figure builders shared by the notebooks: particles, paths, densities, vector fields, losses.

Every builder takes numpy/jax arrays, returns a ``plotly.graph_objects.Figure`` and never shows it, so a
notebook cell ends with the figure (or ``fig.show()``) and a widget can reuse the traces. Builders that
draw into an existing figure take ``fig=`` and return that same figure.

2D action plots share one look (``action_layout``): square axes over the action box [-1, 1]^2 (with a
small margin), equal aspect ratio, white template.

- ``scatter_samples(samples, title)``           points, or several labelled point sets from a dict
- ``trajectories(path, title)``                 particle paths (steps + 1, batch, 2) with start/end markers
- ``fitted_range(points)``                      an axis range fitted to the data (instead of a fixed +-3)
- ``interpolation_lines(a0, a1, t)``            straight noise -> data segments and the points a_t on them
- ``density_heatmap(grid_x, grid_y, density)``  a density (rows = y, columns = x) as a heatmap
- ``gradient_field(points, vectors)``           arrows (a quiver plot) for velocities or critic gradients
  (``arrow_trace`` gives the bare trace, e.g. for slider frames)
- ``loss_curve(history, keys)``                 training curves from ``qgf_lite.fit``'s history
- ``add_points(fig, points)``                   mark a few points (reward peaks, targets) with hollow stars
- ``mass_trace(points)``                        where samples pile up: the share of samples per cell (a 2D
  histogram drawn under the points, so a pile on one spot reads as mass, not as one dot)
- ``region_outline(region_fn)``                 the outline of a region (e.g. a bandit's best region)
- ``mass_panels(samples, region_fn)``           sample sets side by side, each with its mass, the region and
  the share of samples inside it in the panel title
- ``panels(figures, titles)``                   several 2D plots side by side in one figure
- ``frames_figure(frames, labels)``             one figure with a slider over precomputed trace lists
- ``log_axis(fig, values)``                     a log axis with clean ticks (1-2-5, no stray minor labels)
- ``place_labels(fig, labels)``                 point labels that neither overlap nor leave the plot area
- ``method_color(name)``                        the one colour of a method (BC, QGF, best-of-N, FQL, ...) in
  every figure (``METHOD_COLORS``)

Every figure is at most ``FIT_WIDTH`` pixels wide, so it fits a 900-px JupyterLab output area with the file
browser open.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

ACTION_RANGE = (-1.1, 1.1)
FIGURE_SIZE = 460
FIT_WIDTH = 860  # widest figure: fits a 900-px notebook output area (JupyterLab with the file browser open)
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
# One colour per method in every figure of every notebook: BC, QGF, FQL, best-of-N, ... keep their colour whatever
# else a figure shows. ``method_color`` maps a label ("QGF w=0.03 + best-of-4", "FQL (alpha=10)") to its method.
METHOD_COLORS = {
    "behaviour data": "#7f7f7f",
    "BC": "#000000",
    "QGF": "#1f77b4",
    "QGF + best-of-N": "#d62728",
    "noisy": "#9467bd",
    "Jacobian": "#17becf",
    "BPTT": "#bcbd22",
    "best-of-N": "#2ca02c",
    "gradient steps": "#8c564b",
    "FQL": "#ff7f0e",
    "CFG-RL": "#e377c2",
    "QAM": "#6a3d9a",
}
# Label patterns, tried in order (the first that matches names the method).
_METHOD_PATTERNS = (
    (r"^(behaviour|behavior|data)", "behaviour data"),
    (r"^fql", "FQL"),
    (r"^cfg", "CFG-RL"),
    (r"^qam", "QAM"),
    (r"^(gradient[ _-]step|grad)", "gradient steps"),
    (r"^(bc|bfn|best[ _-]of)", None),  # BC or best-of-N: decided below
    (r"noisy", "noisy"),
    (r"jacobian", "Jacobian"),
    (r"bptt", "BPTT"),
    (r"best[ _-]of|bfn", "QGF + best-of-N"),
    (r"^(qgf|guided)", "QGF"),
)
# Sample mass: light (few samples) to dark orange (many); empty cells stay transparent.
MASS_COLORSCALE = [[0.0, "#fee6ce"], [0.35, "#fdae6b"], [0.7, "#e6550d"], [1.0, "#7f2704"]]
# Human-readable names of fit()'s history keys, for legends and axis titles.
METRIC_NAMES = {
    "policy_loss": "flow-matching loss (policy)",
    "critic_loss": "critic loss (TD regression)",
    "value_loss": "value loss (expectile)",
}


def _points_2d(name: str, points) -> np.ndarray:
    """``points`` as a float (n, 2) numpy array, or a ValueError naming the argument."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"`{name}` must have shape (n, 2) (2D points), got shape {arr.shape}.")
    return arr


def action_layout(
    fig: go.Figure,
    title: str | None = None,
    *,
    axis_range=ACTION_RANGE,
    size: int = FIGURE_SIZE,
    x_title: str = "a[0]",
    y_title: str = "a[1]",
) -> go.Figure:
    """Square, equal-aspect axes over ``axis_range`` for 2D actions; returns ``fig``.

    ``title=None`` keeps the figure's current title (so drawing more traces onto a figure does not erase it).
    When the figure holds a heatmap, the legend goes below the plot so it does not cover the colour bar.
    """
    has_colorbar = any(isinstance(trace, go.Heatmap) and trace.showscale is not False for trace in fig.data)
    legend = dict(itemsizing="constant")
    if has_colorbar:
        # Colour bar at the top right, legend under it: nothing below the plot (a slider may live there).
        legend.update(x=1.02, xanchor="left", y=0.0, yanchor="bottom")
        for trace in fig.data:
            if isinstance(trace, go.Heatmap) and trace.showscale is not False:
                trace.colorbar.update(len=0.5, y=1.0, yanchor="top")
    if title is not None:
        fig.update_layout(title=title)
    has_title = bool(fig.layout.title.text)
    fig.update_layout(
        template="plotly_white",
        width=size + (230 if has_colorbar else 120),
        height=size,
        margin=dict(l=50, r=20, t=50 if has_title else 20, b=40),
        legend=legend,
    )
    fig.update_xaxes(range=list(axis_range), title=x_title, constrain="domain")
    fig.update_yaxes(range=list(axis_range), title=y_title, scaleanchor="x", scaleratio=1, constrain="domain")
    return fig


def scatter_trace(
    points,
    *,
    name: str | None = None,
    color: str | None = None,
    size: float = 4,
    opacity: float = 0.6,
    symbol: str = "circle",
) -> go.Scatter:
    """One marker trace for (n, 2) points (SVG: fine up to a few thousand points, and safe in slider frames)."""
    pts = _points_2d("points", points)
    return go.Scatter(
        x=pts[:, 0],
        y=pts[:, 1],
        mode="markers",
        name=name,
        showlegend=name is not None,
        marker=dict(size=size, color=color, opacity=opacity, symbol=symbol),
    )


def scatter_samples(
    samples,
    title: str | None = None,
    *,
    size: float = 4,
    opacity: float = 0.6,
    fig: go.Figure | None = None,
    axis_range=ACTION_RANGE,
) -> go.Figure:
    """Scatter plot of 2D samples.

    ``samples`` is an (n, 2) array or a mapping {label: (n_i, 2) array} to overlay several sets
    (e.g. {"data": a1, "flow samples": a}) in distinct colours with a legend.
    """
    fig = go.Figure() if fig is None else fig
    sets = samples.items() if isinstance(samples, Mapping) else [(None, samples)]
    for i, (label, pts) in enumerate(sets):
        fig.add_trace(scatter_trace(pts, name=label, color=COLORS[i % len(COLORS)], size=size, opacity=opacity))
    return action_layout(fig, title, axis_range=axis_range)


def fitted_range(points, *, quantile: float = 0.99, pad: float = 0.1, minimum: float = 1.1) -> tuple:
    """A symmetric axis range (-r, r) holding the ``quantile`` of the absolute coordinates of ``points`` (any shape
    ending in 2), plus ``pad``, and at least ``minimum``: fits a plot to its data instead of a fixed +-3."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0 or arr.shape[-1] != 2:
        raise ValueError(f"`points` must be non-empty with a last axis of 2 (x, y), got shape {arr.shape}.")
    r = max(float(np.quantile(np.abs(arr[np.isfinite(arr)]), quantile)) + pad, minimum)
    r = float(np.ceil(r * 10) / 10)
    return (-r, r)


def _polyline_xy(paths: np.ndarray):
    """(steps, n, 2) paths -> x, y lists with None between particles, so one trace draws all lines."""
    steps, n, _ = paths.shape
    gap = np.full((1, n, 2), np.nan)
    joined = np.concatenate([paths, gap], axis=0).transpose(1, 0, 2).reshape(-1, 2)
    xs = [None if np.isnan(v) else float(v) for v in joined[:, 0]]
    ys = [None if np.isnan(v) else float(v) for v in joined[:, 1]]
    return xs, ys


def trajectories(
    path,
    title: str | None = None,
    *,
    max_particles: int = 200,
    line_color: str = "rgba(80,80,80,0.35)",
    show_ends: bool = True,
    fig: go.Figure | None = None,
    axis_range=ACTION_RANGE,
) -> go.Figure:
    """Particle paths from a sampler: ``path`` (steps + 1, batch, 2), e.g. ``euler_sample(..., return_path=True)[1]``.

    Draws the first ``max_particles`` paths as grey polylines, their starts (noise, blue) and ends (samples, orange).
    """
    arr = np.asarray(path, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[2] != 2 or arr.shape[0] < 2:
        raise ValueError(f"`path` must have shape (steps + 1, batch, 2) with at least 2 time points, got {arr.shape}.")
    arr = arr[:, :max_particles]
    fig = go.Figure() if fig is None else fig
    xs, ys = _polyline_xy(arr)
    fig.add_trace(
        go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=line_color, width=1), name="paths", hoverinfo="skip")
    )
    if show_ends:
        fig.add_trace(scatter_trace(arr[0], name="start (noise)", color=COLORS[0], size=4))
        fig.add_trace(scatter_trace(arr[-1], name="end (sample)", color=COLORS[1], size=4))
    return action_layout(fig, title, axis_range=axis_range)


def interpolation_lines(
    a0,
    a1,
    t=None,
    title: str | None = None,
    *,
    max_lines: int = 100,
    fig: go.Figure | None = None,
    axis_range=(-3.0, 3.0),
) -> go.Figure:
    """Straight segments from noise ``a0`` to data ``a1`` (both (n, 2)); with ``t`` also the points a_t on them.

    ``t`` is a scalar or an (n,) array of times; the points are a_t = (1 - t) a0 + t a1.
    """
    a0 = _points_2d("a0", a0)[:max_lines]
    a1 = _points_2d("a1", a1)[:max_lines]
    if a0.shape != a1.shape:
        raise ValueError(f"`a0` and `a1` must have the same shape, got {a0.shape} and {a1.shape}.")
    fig = trajectories(np.stack([a0, a1]), title, max_particles=max_lines, fig=fig, axis_range=axis_range)
    fig.data[-2].name, fig.data[-1].name = "a0 (noise)", "a1 (data)"
    if t is not None:
        t = np.asarray(t, dtype=np.float64)
        t = np.full(len(a0), float(t)) if t.ndim == 0 else t.reshape(-1)[: len(a0)]
        if t.shape != (len(a0),):
            raise ValueError(f"`t` must be a scalar or have one time per point ({len(a0)}), got shape {t.shape}.")
        at = (1.0 - t)[:, None] * a0 + t[:, None] * a1
        fig.add_trace(scatter_trace(at, name="a_t", color=COLORS[3], size=6, opacity=0.9))
    return fig


def density_heatmap(
    grid_x,
    grid_y,
    density,
    title: str | None = None,
    *,
    colorscale: str = "Viridis",
    log: bool = False,
    colorbar_title: str | None = None,
    zmin: float | None = None,
    zmax: float | None = None,
    fig: go.Figure | None = None,
    axis_range=None,
) -> go.Figure:
    """Heatmap of ``density`` (len(grid_y), len(grid_x)): rows are y, columns are x (``toy.Grid2D`` layout).

    ``grid_x``/``grid_y`` are the cell-centre coordinates (e.g. ``grid.centers`` for both). With ``log`` the
    colour shows log10 of the density (floored at 1e-6 of its maximum), which reveals low-mass modes.
    Works for any scalar field on the grid (a critic's Q landscape, a reward) too; ``zmin``/``zmax`` fix the
    colour range (e.g. to compare a learned critic with the true reward on one scale).
    """
    gx = np.asarray(grid_x, dtype=np.float64).reshape(-1)
    gy = np.asarray(grid_y, dtype=np.float64).reshape(-1)
    z = np.asarray(density, dtype=np.float64)
    if z.shape != (gy.size, gx.size):
        raise ValueError(f"`density` must have shape (len(grid_y), len(grid_x)) = {(gy.size, gx.size)}, got {z.shape}.")
    if log:
        z = np.log10(np.maximum(z, 1e-6 * max(float(np.max(z)), 1e-30)))
    fig = go.Figure() if fig is None else fig
    fig.add_trace(
        go.Heatmap(x=gx, y=gy, z=z, colorscale=colorscale, zmin=zmin, zmax=zmax, colorbar=dict(title=colorbar_title))
    )
    if axis_range is None:
        half = 0.5 * (gx[1] - gx[0]) if gx.size > 1 else 0.0
        axis_range = (min(gx[0], gy[0]) - half, max(gx[-1], gy[-1]) + half)
    return action_layout(fig, title, axis_range=axis_range)


def _arrow_segments(points: np.ndarray, vectors: np.ndarray, head: float):
    """Shaft and two head strokes per arrow, as polylines separated by None."""
    tips = points + vectors
    length = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.maximum(length, 1e-12)
    normal = np.stack([-unit[:, 1], unit[:, 0]], axis=1)
    head_len = head * length
    left = tips - head_len * (unit - 0.5 * normal)
    right = tips - head_len * (unit + 0.5 * normal)
    # Each arrow: tail -> tip, gap, left -> tip -> right, gap.
    polylines = np.stack(
        [points, tips, np.full_like(points, np.nan), left, tips, right, np.full_like(points, np.nan)], axis=1
    ).reshape(-1, 2)
    xs = [None if np.isnan(v) else float(v) for v in polylines[:, 0]]
    ys = [None if np.isnan(v) else float(v) for v in polylines[:, 1]]
    return xs, ys


def arrow_trace(
    points,
    vectors,
    *,
    scale: float = 1.0,
    max_length: float | None = None,
    color: str = "black",
    head: float = 0.3,
    name: str = "field",
) -> go.Scatter:
    """One line trace drawing an arrow ``scale * vectors[i]`` from each ``points[i]`` (both (n, 2)).

    Arrows longer than ``max_length`` (after scaling) are shortened to it, keeping their direction, so a few huge
    vectors do not hide the rest. Use a fixed ``scale`` across slider frames to keep lengths comparable.
    """
    pts = _points_2d("points", points)
    vec = _points_2d("vectors", vectors)
    if pts.shape != vec.shape:
        raise ValueError(f"`points` and `vectors` must have the same shape, got {pts.shape} and {vec.shape}.")
    if not np.all(np.isfinite(vec)):
        raise ValueError("`vectors` contains NaN or inf; check the field you evaluated.")
    arrows = scale * vec
    if max_length is not None:
        length = np.linalg.norm(arrows, axis=1, keepdims=True)
        arrows = arrows * np.minimum(1.0, max_length / np.maximum(length, 1e-12))
    xs, ys = _arrow_segments(pts, arrows, head)
    return go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=color, width=1.2), name=name, hoverinfo="skip")


def lattice_spacing(num_points: int, axis_range=ACTION_RANGE) -> float:
    """Distance between neighbours of a square lattice of ``num_points`` points over ``axis_range``."""
    return (axis_range[1] - axis_range[0]) / max(np.sqrt(num_points), 1.0)


def auto_arrow_scale(vectors, num_points: int | None = None, axis_range=ACTION_RANGE, quantile: float = 0.9) -> float:
    """A scale making a typical long arrow (the ``quantile`` of lengths) about one lattice spacing long.

    A quantile rather than the maximum, so one spike in a learned field does not shrink every other arrow.
    """
    vec = _points_2d("vectors", vectors)
    spacing = lattice_spacing(len(vec) if num_points is None else num_points, axis_range)
    lengths = np.linalg.norm(vec, axis=1)
    typical = float(np.quantile(lengths, quantile)) if len(vec) else 0.0
    return 0.9 * spacing / typical if typical > 0 else 1.0


def gradient_field(
    points,
    vectors,
    title: str | None = None,
    *,
    scale: float | None = None,
    color: str = "black",
    head: float = 0.3,
    name: str = "field",
    fig: go.Figure | None = None,
    axis_range=ACTION_RANGE,
) -> go.Figure:
    """Quiver plot: an arrow ``scale * vectors[i]`` starting at ``points[i]`` (both (n, 2)).

    ``scale=None`` picks a scale so typical long arrows are about one lattice spacing long (``grid_points``
    layout assumed) and caps every arrow at 1.5 spacings. Draw on top of a heatmap with
    ``fig=density_heatmap(...)`` to show a critic's gradient over its landscape.
    """
    max_length = None
    if scale is None:
        scale = auto_arrow_scale(vectors, axis_range=axis_range)
        max_length = 1.5 * lattice_spacing(len(np.asarray(vectors)), axis_range)
    fig = go.Figure() if fig is None else fig
    fig.add_trace(arrow_trace(points, vectors, scale=scale, max_length=max_length, color=color, head=head, name=name))
    return action_layout(fig, title, axis_range=axis_range)


def grid_points(low: float = -1.0, high: float = 1.0, n: int = 15) -> np.ndarray:
    """An n x n lattice over [low, high]^2 as (n * n, 2) points (x varies fastest): arrow tails for ``gradient_field``."""
    axis = np.linspace(low, high, n)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([x.ravel(), y.ravel()], axis=1).astype(np.float32)


def log_ticks(low: float, high: float, max_ticks: int = 8):
    """Tick values and labels for a log axis from ``low`` to ``high``: 1-2-5 steps, fewer when those are too many."""
    if not (np.isfinite(low) and np.isfinite(high)) or low <= 0 or high < low:
        raise ValueError(f"a log axis needs 0 < low <= high, got low={low}, high={high}.")
    decades = range(int(np.floor(np.log10(low))) - 1, int(np.ceil(np.log10(high))) + 1)
    values = []
    for mantissas in ((1, 2, 5), (1, 3), (1,)):
        values = [m * 10.0**e for e in decades for m in mantissas if low / 1.001 <= m * 10.0**e <= high * 1.001]
        if len(values) <= max_ticks:
            break
    if len(values) < 2:  # less than a decade: label the ends too
        values = sorted(set(values) | {low, high})
    return values, [_tick_text(v) for v in values]


def _tick_text(value: float) -> str:
    """1000 -> "1000", 20000 -> "20k", 0.05 -> "0.05": no exponents on a student's axis."""
    if value >= 10_000 and float(value).is_integer():
        return f"{value / 1000:g}k"
    return f"{value:.3g}" if value < 1000 else f"{value:.0f}"


def log_axis(fig: go.Figure, values, *, axis: str = "x", exact: bool = False, **axis_kwargs) -> go.Figure:
    """Make ``axis`` ("x" or "y") of ``fig`` logarithmic with clean tick labels for data ``values``.

    ``exact=True`` labels exactly the given values (e.g. the guidance weights of a sweep: 0.01, 0.03, 0.1);
    otherwise 1-2-5 ticks spanning them. Plotly's own log ticks label minor ticks with bare digits ("2", "5"),
    which read as values.
    """
    vals = np.asarray([v for v in np.asarray(values, dtype=np.float64).ravel() if v > 0])
    if vals.size == 0:
        raise ValueError("`values` needs at least one positive number for a log axis.")
    if exact:
        tickvals = sorted(set(float(v) for v in vals))
        ticktext = [_tick_text(v) for v in tickvals]
    else:
        tickvals, ticktext = log_ticks(float(vals.min()), float(vals.max()))
    update = dict(type="log", tickvals=tickvals, ticktext=ticktext, **axis_kwargs)
    (fig.update_xaxes if axis == "x" else fig.update_yaxes)(**update)
    return fig


def loss_curve(
    history: Sequence[Mapping],
    keys: Iterable[str] | None = None,
    title: str | None = None,
    *,
    x: str = "step",
    log_y: bool = False,
    y_title: str | None = None,
) -> go.Figure:
    """Line plot of metrics over training from a list of dicts (``qgf_lite.fit``'s history).

    ``keys`` defaults to every key ending in "loss". Multi-seed entries (lists) are averaged over seeds. Curves
    are named in words (``METRIC_NAMES``); a linear y axis starts at 0, so "how far from zero" can be read off.
    """
    if not history:
        raise ValueError("`history` is empty: train for at least one chunk before plotting.")
    keys = [k for k in history[0] if k.endswith("loss")] if keys is None else list(keys)
    missing = [k for k in keys if k not in history[0]]
    if missing:
        raise ValueError(f"`keys` {missing} are not in the history; available: {sorted(history[0])}.")
    xs = [rec.get(x, i) for i, rec in enumerate(history)]
    fig = go.Figure()
    all_ys = []
    for i, key in enumerate(keys):
        ys = [float(np.mean(rec[key])) for rec in history]
        all_ys += ys
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines+markers",
                name=METRIC_NAMES.get(key, key.replace("_", " ")),
                marker=dict(size=4),
                line=dict(color=COLORS[i % len(COLORS)]),
            )
        )
    several = len(keys) > 1
    fig.update_layout(
        title=title,
        template="plotly_white",
        width=640,
        height=400 if several else 360,
        margin=dict(l=60, r=20, t=50 if title else 20, b=90 if several else 40),
        legend=dict(orientation="h", yanchor="top", y=-0.25, x=0.0) if several else None,
        showlegend=several,
    )
    fig.update_xaxes(title="training step" if x == "step" else x.replace("_", " "), tickformat=",d")
    if y_title is None:
        y_title = METRIC_NAMES.get(keys[0], keys[0].replace("_", " ")) if len(keys) == 1 else "loss"
    if log_y:
        log_axis(fig, [v for v in all_ys if v > 0], axis="y", title=y_title)
    else:
        fig.update_yaxes(title=y_title, rangemode="tozero")
    return fig


def marker_trace(
    points, *, name: str = "best", color: str = "red", size: float = 14, symbol: str = "star-open", **scatter_kwargs
) -> go.Scatter:
    """A few marked points (reward peaks, goals) as one trace. Hollow symbols (the default, "star-open") only draw
    an outline, so samples under the marker stay visible; pass a filled symbol for markers on empty ground."""
    pts = _points_2d("points", points)
    line = dict(width=2, color=color) if symbol.endswith("-open") else dict(width=1, color="white")
    return go.Scatter(
        x=pts[:, 0],
        y=pts[:, 1],
        mode="markers",
        name=name,
        marker=dict(size=size, color=color, symbol=symbol, line=line),
        **scatter_kwargs,
    )


def add_points(
    fig: go.Figure,
    points,
    *,
    name: str = "best",
    color: str = "red",
    size: float = 14,
    symbol: str = "star-open",
    **trace_kwargs,
) -> go.Figure:
    """Mark a few points (reward peaks, goals) on an existing figure; returns ``fig``.

    The default hollow star does not hide the samples under it (``marker_trace``).
    """
    fig.add_trace(marker_trace(points, name=name, color=color, size=size, symbol=symbol), **trace_kwargs)
    return fig


def mass_counts(points, *, axis_range=ACTION_RANGE, bins: int = 24) -> np.ndarray:
    """The percentage of ``points`` (n, 2) in each of bins x bins cells over ``axis_range``^2 (rows = y)."""
    pts = _points_2d("points", points)
    if len(pts) == 0:
        raise ValueError("`points` is empty: nothing to histogram.")
    edges = np.linspace(axis_range[0], axis_range[1], bins + 1)
    counts, _, _ = np.histogram2d(pts[:, 1], pts[:, 0], bins=[edges, edges])
    return 100.0 * counts / len(pts)


def mass_trace(
    points,
    *,
    axis_range=ACTION_RANGE,
    bins: int = 24,
    zmax: float | None = None,
    name: str = "sample mass",
    showscale: bool = True,
    colorbar_len: float = 0.55,
) -> go.Heatmap:
    """Where the samples pile up: a heatmap of the share of ``points`` per cell (%), drawn under the points.

    A scatter plot shows a thousand samples on one spot as one dot; this trace shows them as the darkest cell.
    The colour grows with the square root of the share, up to ``zmax`` % (default: the fullest cell), so a pile
    holding half of the samples is dark while a thin ring of single samples stays visible; the colour bar is
    labelled in %. Empty cells are transparent, so a background stays visible.
    """
    pts = _points_2d("points", points)
    share = mass_counts(pts, axis_range=axis_range, bins=bins)
    edges = np.linspace(axis_range[0], axis_range[1], bins + 1)
    centers = 0.5 * (edges[1:] + edges[:-1])
    high = float(np.max(share)) if zmax is None else float(zmax)
    high = max(high, 1e-9)
    # Empty cells are None (JSON null, drawn transparent), not NaN: widget messages must be valid JSON.
    z = [[float(np.sqrt(v)) if v > 0 else None for v in row] for row in share]
    ticks = [v for v in (0, 1, 5, 10, 25, 50, 100) if v <= high]
    colorbar = dict(
        title=dict(text="% of samples per cell", side="right"),
        thickness=12,
        len=colorbar_len,
        y=1.0,
        yanchor="top",
        tickvals=[float(np.sqrt(v)) for v in ticks],
        ticktext=[f"{v:g}" for v in ticks],
    )
    return go.Heatmap(
        x=centers,
        y=centers,
        z=z,
        customdata=share,
        colorscale=MASS_COLORSCALE,
        zmin=0.0,
        zmax=float(np.sqrt(high)),
        name=name,
        showscale=showscale,
        colorbar=colorbar,
        hovertemplate="a = (%{x:.2f}, %{y:.2f})<br>%{customdata:.1f}% of samples<extra></extra>",
    )


def region_outline(
    region_fn,
    *,
    obs=None,
    axis_range=ACTION_RANGE,
    resolution: int = 111,
    name: str = "best region",
    color: str = "#d62728",
) -> go.Contour:
    """The boundary of a region as a dashed line: ``region_fn(obs, actions) -> (batch,) bool``, e.g. a bandit's
    ``in_best_region``. Works for any shape (discs, boxes, sectors): it contours the indicator on a fine grid."""
    axis = np.linspace(axis_range[0], axis_range[1], resolution)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    grid = np.stack([x.ravel(), y.ravel()], axis=1).astype(np.float32)
    # uint8: a figure (and every slider frame that repeats this trace) carries one byte per grid point.
    inside = np.asarray(region_fn(obs, grid), dtype=np.uint8).reshape(resolution, resolution)
    return go.Contour(
        x=axis,
        y=axis,
        z=inside,
        name=name,
        showlegend=True,
        showscale=False,
        hoverinfo="skip",
        contours=dict(start=0.5, end=0.5, size=1.0, coloring="lines"),
        line=dict(color=color, width=1.5, dash="dash"),
        colorscale=[[0, color], [1, color]],
    )


def share_in_region(points, region_fn, obs=None) -> float:
    """The fraction of ``points`` (n, 2) for which ``region_fn(obs, points)`` is true."""
    pts = _points_2d("points", points)
    return float(np.mean(np.asarray(region_fn(obs, pts.astype(np.float32)), dtype=np.float64)))


def mass_panels(
    samples: Mapping[str, np.ndarray],
    region_fn=None,
    *,
    targets=None,
    obs=None,
    axis_range=ACTION_RANGE,
    bins: int = 24,
    title: str | None = None,
    target_name: str = "reward peak",
    region_name: str = "best region",
) -> go.Figure:
    """Sample sets side by side ({panel title: (n, 2) points}), drawn so that mass is visible.

    Each panel shows the share of samples per cell (``mass_trace``, one colour scale for all panels) under the
    points (small and translucent, so piles accumulate), the outline of ``region_fn`` (``region_outline``) and
    hollow star ``targets``. With ``region_fn`` each panel title ends with the share of its samples in the region
    (computed from the plotted points). Fits ``FIT_WIDTH``: up to 4 panels per row, more rows below.
    """
    from plotly.subplots import make_subplots

    if not samples:
        raise ValueError("`samples` is empty: pass at least one {title: points} entry.")
    sets = {name: _points_2d(f"samples[{name!r}]", pts) for name, pts in samples.items()}
    titles = []
    for name, pts in sets.items():
        titles.append(
            name
            if region_fn is None
            else f"{name}<br><sup>{share_in_region(pts, region_fn, obs):.1%} in the {region_name}</sup>"
        )
    rows = -(-len(sets) // 4)  # at most 4 panels per row, rows as even as possible
    cols = -(-len(sets) // rows)
    panel = min(210, (FIT_WIDTH - 150) // cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=titles,
        horizontal_spacing=0.06,
        vertical_spacing=0.3 / rows if rows > 1 else 0.0,
    )
    zmax = max(float(np.max(mass_counts(p, axis_range=axis_range, bins=bins))) for p in sets.values())
    outline = None if region_fn is None else region_outline(region_fn, obs=obs, axis_range=axis_range, name=region_name)
    for i, pts in enumerate(sets.values()):
        row, col = i // cols + 1, i % cols + 1
        first = i == 0
        fig.add_trace(mass_trace(pts, axis_range=axis_range, bins=bins, zmax=zmax, showscale=first), row=row, col=col)
        samples_trace = scatter_trace(pts, name="samples" if first else None, color="#3a3a3a", size=2.5, opacity=0.3)
        samples_trace.meta = "samples"  # lets a test (or a reader of the figure JSON) find the sample traces
        fig.add_trace(samples_trace, row=row, col=col)
        if outline is not None:
            trace = copy.deepcopy(outline)
            trace.showlegend = first
            fig.add_trace(trace, row=row, col=col)
        if targets is not None:
            fig.add_trace(marker_trace(targets, name=target_name, size=12, showlegend=first), row=row, col=col)
        fig.update_xaxes(range=list(axis_range), constrain="domain", title="a[0]", row=row, col=col, title_standoff=2)
        fig.update_yaxes(
            range=list(axis_range),
            scaleanchor=f"x{'' if i == 0 else i + 1}",
            scaleratio=1,
            constrain="domain",
            title="a[1]" if col == 1 else None,
            row=row,
            col=col,
            title_standoff=2,
        )
    fig.update_layout(
        template="plotly_white",
        title=title,
        width=min(FIT_WIDTH, panel * cols + 170),
        height=rows * (panel + 95) + (100 if title else 60),
        margin=dict(l=45, r=10, t=(100 if title else 60), b=20),
        legend=dict(x=1.02, y=0.0, yanchor="bottom", xanchor="left", itemsizing="constant"),
    )
    return fig


def panels(
    figures: Sequence[go.Figure],
    titles: Sequence[str] | None = None,
    *,
    axis_range=ACTION_RANGE,
    panel_size: int | None = None,
    colorbars: bool = False,
    colorbar_titles: Sequence | None = None,
    x_title: str = "a[0]",
    y_title: str = "a[1]",
    axis_ranges: Sequence | None = None,
) -> go.Figure:
    """Put the traces of several single-plot figures side by side (one row), each panel square over ``axis_range``.

    Legends are kept for the first panel only, so repeated trace names ("paths", "data") appear once, below the
    panels. ``panel_size=None`` fits the row into ``FIT_WIDTH``. With ``colorbars`` every heatmap panel keeps its
    own colour bar beside it, titled by ``colorbar_titles`` (one entry per figure, None for no title).
    ``axis_ranges`` gives each panel its own range (e.g. a zoom next to the whole picture).
    """
    from plotly.subplots import make_subplots

    if len(figures) == 0:
        raise ValueError("`figures` is empty: pass at least one figure.")
    if titles is not None and len(titles) != len(figures):
        raise ValueError(f"`titles` has {len(titles)} entries for {len(figures)} figures.")
    if axis_ranges is not None and len(axis_ranges) != len(figures):
        raise ValueError(f"`axis_ranges` has {len(axis_ranges)} entries for {len(figures)} figures.")
    if colorbar_titles is not None and len(colorbar_titles) != len(figures):
        raise ValueError(f"`colorbar_titles` has {len(colorbar_titles)} entries for {len(figures)} figures.")
    n = len(figures)
    spacing = 0.06 if colorbars else 0.04
    if panel_size is None:
        panel_size = int(min(330, (FIT_WIDTH - 70 - (30 * n if colorbars else 0)) / n))
    fig = make_subplots(rows=1, cols=n, subplot_titles=list(titles) if titles else None, horizontal_spacing=spacing)
    for col, panel in enumerate(figures, start=1):
        for trace in panel.data:
            trace = copy.deepcopy(trace)
            if col > 1:
                trace.showlegend = False
            if isinstance(trace, go.Heatmap):
                trace.showscale = bool(colorbars)
                if colorbars:  # horizontal, under its own panel, so no bar or title crowds the next panel
                    domain = fig.layout[f"xaxis{'' if col == 1 else col}"].domain
                    title = None if colorbar_titles is None else colorbar_titles[col - 1]
                    trace.colorbar = dict(
                        orientation="h",
                        x=0.5 * (domain[0] + domain[1]),
                        xanchor="center",
                        y=-0.32,
                        yanchor="top",
                        len=0.8 * (domain[1] - domain[0]),
                        thickness=10,
                        title=dict(text=title, side="bottom"),
                    )
            fig.add_trace(trace, row=1, col=col)
        suffix = "" if col == 1 else str(col)
        panel_range = list(axis_range if axis_ranges is None else axis_ranges[col - 1])
        fig.update_xaxes(range=panel_range, constrain="domain", title=x_title, title_standoff=2, row=1, col=col)
        fig.update_yaxes(
            range=panel_range,
            scaleanchor=f"x{suffix}",
            scaleratio=1,
            constrain="domain",
            title=y_title if col == 1 or axis_ranges is not None else None,
            title_standoff=2,
            row=1,
            col=col,
        )
    has_legend = any(t.showlegend is not False and t.name for t in fig.data)
    fig.update_layout(
        template="plotly_white",
        width=min(FIT_WIDTH, panel_size * n + 70 + (30 * n if colorbars else 0)),
        height=panel_size + (130 if has_legend else 100) + (90 if colorbars else 0),
        margin=dict(l=45, r=20, t=50, b=(40 if not has_legend else 70) + (90 if colorbars else 0)),
        legend=dict(itemsizing="constant", orientation="h", yanchor="top", y=-0.16, x=0.0),
    )
    return fig


def frames_figure(
    frames: Sequence[Sequence[go.BaseTraceType]],
    labels: Sequence,
    title: str | None = None,
    *,
    slider_prefix: str = "",
    axis_range=ACTION_RANGE,
    active: int = 0,
) -> go.Figure:
    """One figure with a slider that swaps between precomputed trace lists (works without a live kernel).

    ``frames[i]`` is the list of traces shown at slider position ``labels[i]``; every frame must have the same
    number of traces (so plotly can update them in place).
    """
    if len(frames) == 0 or len(frames) != len(labels):
        raise ValueError(
            f"`frames` and `labels` must be non-empty and equally long, got {len(frames)} and {len(labels)}."
        )
    counts = {len(f) for f in frames}
    if len(counts) != 1:
        raise ValueError(f"every frame must have the same number of traces, got counts {sorted(counts)}.")
    if not 0 <= active < len(frames):
        raise ValueError(f"`active` must index a frame (0..{len(frames) - 1}), got {active}.")
    fig = go.Figure(
        data=list(frames[active]), frames=[go.Frame(data=list(f), name=str(lab)) for f, lab in zip(frames, labels)]
    )
    steps = [
        dict(
            method="animate",
            label=str(lab),
            args=[[str(lab)], dict(mode="immediate", frame=dict(duration=0, redraw=True), transition=dict(duration=0))],
        )
        for lab in labels
    ]
    action_layout(fig, title, axis_range=axis_range)
    fig.update_layout(
        sliders=[dict(active=active, steps=steps, currentvalue=dict(prefix=slider_prefix), pad=dict(t=40))],
        height=FIGURE_SIZE + 80,
    )
    return fig


def method_color(name: str) -> str:
    """The colour of a method in every figure (``METHOD_COLORS``), from its name or a sampler label: "BC", "QGF w=1",
    "noisy (labels: w)", "best-of-16", "QGF w=1 + best-of-4", "gradient-step a=0.05 x3", "FQL (alpha=10)", ...

    Raises ValueError for a name that is no known method (so a new method gets a colour here, once)."""
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"`name` must be a method name or label (a non-empty string), got {name!r}.")
    if name in METHOD_COLORS:
        return METHOD_COLORS[name]
    text = name.strip().lower()
    for pattern, method in _METHOD_PATTERNS:
        if re.search(pattern, text):
            if method is None:
                method = "best-of-N" if re.search(r"best[ _-]of|bfn", text) else "BC"
            return METHOD_COLORS[method]
    raise ValueError(
        f"no colour for method {name!r}: known methods are {', '.join(METHOD_COLORS)} (add a new one to "
        "qgf_lite.presentation.plots.METHOD_COLORS)."
    )


# --------------------------------------------------------------------------- point labels that never collide
_LABEL_SPOTS = (  # (x shift px, y shift px, xanchor, yanchor): above, below, right, left, then the diagonals
    (0, 7, "center", "bottom"),
    (0, -7, "center", "top"),
    (7, 0, "left", "middle"),
    (-7, 0, "right", "middle"),
    (5, 5, "left", "bottom"),
    (-5, 5, "right", "bottom"),
    (5, -5, "left", "top"),
    (-5, -5, "right", "top"),
    (0, 20, "center", "bottom"),
    (0, -20, "center", "top"),
    (16, 12, "left", "bottom"),
    (-16, -12, "right", "top"),
)


def _label_box(px, py, spot, width, height):
    dx, dy, xanchor, yanchor = spot
    x0 = px + dx - {"left": 0.0, "center": width / 2, "right": width}[xanchor]
    y0 = py + dy - {"bottom": 0.0, "middle": height / 2, "top": height}[yanchor]  # y grows upwards here
    return (x0, y0, x0 + width, y0 + height)


def _overlap(a, b) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def place_labels(fig: go.Figure, labels: Sequence[Mapping], *, font_size: int = 12, pad: float = 0.04) -> go.Figure:
    """Label points of a 2D plot so that no label overlaps another label or a labelled point, and none is clipped.

    ``labels``: dicts with ``x``, ``y``, ``text`` and optionally ``color``. Each label goes to the first free spot
    around its point (above, below, right, left, diagonals), judged in pixels from the figure's size and margins;
    the axis ranges are then widened so every label lies inside the plot area. Set the layout (width, height,
    margins) before calling; the axes must be linear. Returns ``fig`` with one annotation per label.
    """
    labels = [dict(item) for item in labels]
    if not labels:
        return fig
    layout = fig.layout
    width, height = layout.width or 700, layout.height or 450
    margin = layout.margin
    left = 80 if margin.l is None else margin.l
    right = 80 if margin.r is None else margin.r
    top = 100 if margin.t is None else margin.t
    bottom = 80 if margin.b is None else margin.b
    legend = layout.legend
    if layout.showlegend is not False and legend.orientation == "h" and legend.y is not None and legend.y < 0:
        bottom += 40  # a horizontal legend under the plot takes room from the plot area
    elif layout.showlegend is not False and (legend.x is None or legend.x > 1):
        right += 150  # a legend at the right
    plot_w, plot_h = max(width - left - right, 50), max(height - top - bottom, 50)

    def values(trace, axis):
        data = getattr(trace, axis, None)
        if data is None:
            return []
        try:
            arr = np.asarray(data, dtype=float).ravel()
        except (TypeError, ValueError):  # categorical axes: nothing to place against
            return []
        return [float(v) for v in arr if np.isfinite(v)]

    xs = [v for trace in fig.data for v in values(trace, "x")]
    ys = [v for trace in fig.data for v in values(trace, "y")]
    xs += [float(item["x"]) for item in labels]
    ys += [float(item["y"]) for item in labels]
    x_lo, x_hi = list(layout.xaxis.range) if layout.xaxis.range else [min(xs), max(xs)]
    y_lo, y_hi = list(layout.yaxis.range) if layout.yaxis.range else [min(ys), max(ys)]
    x_span, y_span = (x_hi - x_lo) or 1.0, (y_hi - y_lo) or 1.0
    x_lo, x_hi, y_lo, y_hi = x_lo - pad * x_span, x_hi + pad * x_span, y_lo - pad * y_span, y_hi + pad * y_span

    def to_px(x, y):
        return (x - x_lo) / (x_hi - x_lo) * plot_w, (y - y_lo) / (y_hi - y_lo) * plot_h

    points = [to_px(float(item["x"]), float(item["y"])) for item in labels]
    taken = [(px - 5, py - 5, px + 5, py + 5) for px, py in points]  # the markers themselves
    lines = []  # the drawn lines, as small boxes every few pixels: a label may cross one, but better not
    for trace in fig.data:
        tx, ty = values(trace, "x"), values(trace, "y")
        error = getattr(trace, "error_y", None)
        bars = None if error is None or error.array is None else np.asarray(error.array, dtype=float).ravel()
        if bars is not None and bars.size == len(ty):  # error bars: vertical segments a label should not cover
            for a, b, e in zip(tx, ty, bars):
                (bx, lo), (_, hi) = to_px(a, b - e), to_px(a, b + e)
                lines.append((bx - 4, lo, bx + 4, hi))
        if "lines" not in (getattr(trace, "mode", None) or ""):
            continue
        path = [to_px(a, b) for a, b in zip(tx, ty)]
        for (ax, ay), (bx, by) in zip(path[:-1], path[1:]):
            count = int(max(abs(bx - ax), abs(by - ay)) // 4) + 1
            for k in range(count + 1):
                cx, cy = ax + (bx - ax) * k / count, ay + (by - ay) * k / count
                lines.append((cx - 1.5, cy - 1.5, cx + 1.5, cy + 1.5))
    boxes = []
    for item, (px, py) in zip(labels, points):
        text = str(item["text"])
        box_w, box_h = 0.62 * font_size * len(text) + 4, 1.25 * font_size + 2
        best, best_cost = None, None
        for order, spot in enumerate(_LABEL_SPOTS):
            box = _label_box(px, py, spot, box_w, box_h)
            outside = max(0.0, -box[0]) + max(0.0, box[2] - plot_w) + max(0.0, -box[1]) + max(0.0, box[3] - plot_h)
            cost = (
                sum(_overlap(box, other) for other in taken) * 100
                + outside * 5
                + order
                + sum(_overlap(box, other) for other in lines) * 3
            )
            if best_cost is None or cost < best_cost:
                best, best_cost = (spot, box), cost
        spot, box = best
        taken.append(box)
        boxes.append(box)
        fig.add_annotation(
            x=item["x"],
            y=item["y"],
            text=text,
            showarrow=False,
            xshift=spot[0],
            yshift=spot[1],
            xanchor=spot[2],
            yanchor=spot[3],
            font=dict(size=font_size, color=item.get("color")),
        )
    # Widen the axes so every label box lies inside the plot area (a label is never clipped).
    bx0, by0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    bx1, by1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    ux, uy = (x_hi - x_lo) / plot_w, (y_hi - y_lo) / plot_h
    new_x = [x_lo + min(0.0, bx0 - 4) * ux, x_hi + max(0.0, bx1 + 4 - plot_w) * ux]
    new_y = [y_lo + min(0.0, by0 - 4) * uy, y_hi + max(0.0, by1 + 4 - plot_h) * uy]
    fig.update_xaxes(range=new_x)
    fig.update_yaxes(range=new_y)
    return fig


__all__ = [
    "ACTION_RANGE",
    "COLORS",
    "METHOD_COLORS",
    "FIT_WIDTH",
    "METRIC_NAMES",
    "action_layout",
    "add_points",
    "arrow_trace",
    "auto_arrow_scale",
    "density_heatmap",
    "fitted_range",
    "frames_figure",
    "gradient_field",
    "grid_points",
    "interpolation_lines",
    "lattice_spacing",
    "log_axis",
    "log_ticks",
    "loss_curve",
    "marker_trace",
    "mass_counts",
    "mass_panels",
    "mass_trace",
    "method_color",
    "panels",
    "place_labels",
    "region_outline",
    "share_in_region",
    "scatter_samples",
    "scatter_trace",
    "trajectories",
]
