"""Sliders that re-sample a 2D sampler, live where widgets work and precomputed everywhere else.

``interactive_view(sample_fn, slider_values, ...)`` shows samples of ``sample_fn(value, **static)`` (a jax
function returning (n, 2) points, or a dict {trace name: (n, 2) points}) as a plotly scatter, optionally over a
background density ``background_fn(value)`` on a ``toy.Grid2D``, with a slider over ``value`` (e.g. the guidance
weight w). It builds one of two views:

- **live** (``build_live_view``): ipywidgets sliders driving a ``plotly.graph_objects.FigureWidget``. The sampler
  is jitted once with ``value`` as a traced argument, so dragging the slider re-samples in milliseconds with no
  recompilation; extra ``static_sliders`` (e.g. the number of Euler steps, which fixes the loop length) are
  static arguments, compiled once per value (up front with ``precompile=True``).
- **frames** (``build_frames_view``): a plain ``plotly.graph_objects.Figure`` whose built-in slider swaps between
  frames computed in ONE vectorised call (``jax.vmap`` over the slider values). It needs no kernel, so it works
  in Colab, nbviewer and exported HTML. Static sliders are fixed at their initial values there.

How ``mode="auto"`` decides (``choose_view_mode``), first match wins:

1. ``QGF_WIDGETS=live`` or ``QGF_WIDGETS=frames`` in the environment forces that view;
2. ``google.colab`` in ``sys.modules`` -> frames (Colab does not load the anywidget front end FigureWidget needs);
3. ``ipywidgets`` or ``anywidget`` not importable -> frames (plotly's FigureWidget is an anywidget);
4. not running inside an IPython kernel (a script, a terminal IPython) -> frames (nothing could render a widget);
5. otherwise -> live (JupyterLab, Jupyter Notebook 7, VS Code).

The choice and its reason are printed, so a reader knows which view they got and how to switch.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import itertools
import os
import sys
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

ENV_VAR = "QGF_WIDGETS"
VIEW_MODES = ("auto", "live", "frames")


# --------------------------------------------------------------------------- #
# Which view
# --------------------------------------------------------------------------- #
def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (ipykernel), where widget messages reach a front end."""
    ipython_module = sys.modules.get("IPython")
    if ipython_module is None:
        return False
    shell = ipython_module.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def choose_view_mode(mode: str = "auto") -> tuple[str, str]:
    """("live" | "frames", reason) following the rules in the module docstring."""
    if mode not in VIEW_MODES:
        raise ValueError(f"`mode` must be one of {VIEW_MODES}, got {mode!r}.")
    if mode != "auto":
        return mode, "requested by the caller"
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced:
        if forced not in ("live", "frames"):
            raise ValueError(f"${ENV_VAR} must be 'live' or 'frames', got {forced!r}.")
        return forced, f"forced by ${ENV_VAR}"
    if "google.colab" in sys.modules:
        return "frames", "Colab does not load plotly's anywidget-based FigureWidget"
    for module in ("ipywidgets", "anywidget"):
        if not _importable(module):
            return "frames", f"{module} is not installed"
    if not _in_kernel():
        return "frames", "not running in a Jupyter kernel"
    return "live", "Jupyter kernel with ipywidgets and anywidget"


# --------------------------------------------------------------------------- #
# Shared pieces
# --------------------------------------------------------------------------- #
def _as_point_sets(output) -> dict[str, np.ndarray]:
    """A sampler's output as {trace name: (n, 2) numpy array}."""
    sets = dict(output) if isinstance(output, Mapping) else {"samples": output}
    result = {}
    for name, points in sets.items():
        arr = np.asarray(points, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(
                f"`sample_fn` must return (n, 2) points (or a dict of them); `{name}` has shape {arr.shape}."
            )
        result[name] = arr
    return result


def _check_values(name: str, values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"`{name}` must list at least one slider value.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` must be finite numbers, got {values!r}.")
    if np.any(np.diff(arr) <= 0):
        raise ValueError(f"`{name}` must be strictly increasing, got {values!r}.")
    return arr


def _check_static(static_sliders) -> dict[str, dict]:
    """{name: {"values": [...], "description": str, "value": initial}} from a {name: values or dict} mapping."""
    result = {}
    for name, spec in dict(static_sliders or {}).items():
        spec = dict(spec) if isinstance(spec, Mapping) else {"values": spec}
        values = list(spec.get("values", ()))
        if not values:
            raise ValueError(f"static slider `{name}` needs a non-empty list of values.")
        value = spec.get("value", values[0])
        if value not in values:
            raise ValueError(f"static slider `{name}`: initial value {value!r} is not one of {values}.")
        result[name] = {"values": values, "description": spec.get("description", name), "value": value}
    return result


BACKGROUND_STYLES = ("heatmap", "contour")
# Contour lines of the background density at these fractions of its peak (one set per slider position).
CONTOUR_FRACTIONS = (0.1, 0.4, 0.7)


def _background_z(density) -> np.ndarray:
    return np.asarray(density, dtype=np.float64)


def _contour_levels(z: np.ndarray) -> dict:
    peak = max(float(np.max(z)), 1e-30)
    low, high = CONTOUR_FRACTIONS[0], CONTOUR_FRACTIONS[-1]
    return dict(
        coloring="lines", start=low * peak, end=high * peak, size=(high - low) * peak / (len(CONTOUR_FRACTIONS) - 1)
    )


def _background_trace(
    grid, density, colorscale: str, background_style: str = "heatmap", background_name: str = "target density"
):
    import plotly.graph_objects as go

    centers = np.asarray(grid.centers, dtype=np.float64)
    z = _background_z(density)
    if background_style == "contour":
        # Lines, not a fill: the fill under the samples is their own mass (``mass_of``).
        return go.Contour(
            x=centers,
            y=centers,
            z=z,
            contours=_contour_levels(z),
            colorscale=[[0, "#9ecae1"], [1, "#08306b"]],
            line=dict(width=1.5),
            showscale=False,
            hoverinfo="skip",
            name=background_name,
            showlegend=True,
        )
    return go.Heatmap(
        x=centers, y=centers, z=z, colorscale=colorscale, showscale=False, hoverinfo="skip", name=background_name
    )


def _scatter_traces(point_sets: dict[str, np.ndarray], marker_size: float, opacity: float, mass_of=None):
    from qgf_lite.presentation.plots import COLORS, scatter_trace

    # Over a mass heatmap the points are dark and translucent: where they pile up the colour accumulates.
    traces = [
        scatter_trace(
            points,
            name=name,
            color="#3a3a3a" if name == mass_of else COLORS[i % len(COLORS)],
            size=marker_size,
            opacity=opacity,
        )
        for i, (name, points) in enumerate(point_sets.items())
    ]
    for trace in traces:
        trace.meta = "samples"  # lets a test (or a reader of the figure JSON) find the sample traces
    return traces


def _mass_trace(point_sets, style):
    from qgf_lite.presentation.plots import mass_trace

    name = style["mass_of"]
    if name not in point_sets:
        raise ValueError(
            f"`mass_of` names a point set the sampler does not return: {name!r}; it returns {sorted(point_sets)}."
        )
    return mass_trace(point_sets[name], zmax=style["mass_zmax"], name=f"{name}: mass")


def _traces(point_sets, density, grid, extra_traces, style):
    traces = (
        []
        if density is None
        else [
            _background_trace(grid, density, style["colorscale"], style["background_style"], style["background_name"])
        ]
    )
    if style["mass_of"] is not None:
        traces.append(_mass_trace(point_sets, style))
    traces += _scatter_traces(point_sets, style["marker_size"], style["opacity"], style["mass_of"])
    return traces + list(extra_traces)


def _style(marker_size, opacity, colorscale, background_style, background_name, mass_of, mass_zmax):
    if background_style not in BACKGROUND_STYLES:
        raise ValueError(f"`background_style` must be one of {BACKGROUND_STYLES}, got {background_style!r}.")
    return dict(
        marker_size=marker_size,
        opacity=opacity,
        colorscale=colorscale,
        background_style=background_style,
        background_name=background_name,
        mass_of=mass_of,
        mass_zmax=mass_zmax,
    )


def _format_value(value) -> str:
    return f"{float(value):g}"


# --------------------------------------------------------------------------- #
# Live view: ipywidgets + FigureWidget
# --------------------------------------------------------------------------- #
@dataclasses.dataclass
class LiveView:
    """A FigureWidget and the sliders that drive it; display it with ``display(view)`` or as a cell's last line.

    ``sliders[name].value = x`` re-samples and updates ``figure.data`` in place (also without a front end).
    ``sample_trace_indices`` says which of ``figure.data`` hold the samples (after an optional background and mass trace),
    in the order of ``trace_names`` (sorted, as jax orders dict outputs).
    """

    figure: object
    sliders: dict[str, object]
    widget: object
    sample_trace_indices: tuple[int, ...]
    trace_names: tuple[str, ...]
    update: Callable[[], None]

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def _decimals(values: np.ndarray) -> int:
    """The fewest decimals (up to 6) that print every slider value exactly."""
    for decimals in range(7):
        if np.allclose(np.round(values, decimals), values, rtol=0, atol=1e-9):
            return decimals
    return 6


def _main_slider(values: np.ndarray, value: float, description: str):
    """A slider that can stop only at ``values`` and reads out exactly those numbers.

    Evenly spaced values get a FloatSlider whose step is their spacing and whose readout has just the decimals
    the values need (a d3 ".3g" readout showed "7.00" for 7). Unevenly spaced values (e.g. Euler steps
    1, 2, 3, 4, 6, 8, 16, 32) get a SelectionSlider over exactly those values: a FloatSlider with the smallest
    spacing as its step would also stop at 5, 7, 9, ... which are not in the list.
    """
    import ipywidgets as widgets

    common = dict(
        description=description,
        continuous_update=True,
        style={"description_width": "initial"},
        layout=widgets.Layout(width="460px"),
    )
    if value not in values:
        value = float(values[int(np.argmin(np.abs(values - value)))])
    spacing = np.diff(values)
    if values.size > 1 and not np.allclose(spacing, spacing[0], rtol=1e-6, atol=1e-9):
        options = [(_format_value(v), float(v)) for v in values]
        return widgets.SelectionSlider(options=options, value=float(value), **common)
    step = float(spacing[0]) if values.size > 1 else 1.0
    return widgets.FloatSlider(
        value=float(value),
        min=float(values[0]),
        max=float(values[-1]),
        step=step,
        readout_format=f".{_decimals(values)}f",
        **common,
    )


def build_live_view(
    sample_fn: Callable,
    slider_values,
    *,
    name: str = "weight",
    description: str = "guidance weight w",
    initial=None,
    static_sliders=None,
    background_fn: Callable | None = None,
    grid=None,
    title_fn: Callable | None = None,
    extra_traces: Sequence = (),
    precompile: bool = True,
    marker_size: float = 4,
    opacity: float = 0.6,
    colorscale: str = "Blues",
    title: str | None = None,
    background_style: str = "heatmap",
    background_name: str = "target density",
    mass_of: str | None = None,
    mass_zmax: float | None = 100.0,
) -> LiveView:
    """The live view (see module docstring). Arguments as for ``interactive_view``."""
    import ipywidgets as widgets
    import plotly.graph_objects as go

    from qgf_lite.presentation.plots import action_layout

    values = _check_values("slider_values", slider_values)
    static = _check_static(static_sliders)
    if name in static:
        raise ValueError(f"static slider name `{name}` clashes with the main slider's `name`; rename one.")
    if background_fn is not None and grid is None:
        raise ValueError("`background_fn` needs the `grid` (a toy.Grid2D) its densities live on.")
    style = _style(marker_size, opacity, colorscale, background_style, background_name, mass_of, mass_zmax)
    sampler = jax.jit(sample_fn, static_argnames=tuple(static)) if static else jax.jit(sample_fn)
    background = None if background_fn is None else jax.jit(background_fn)
    value0 = float(values[0] if initial is None else initial)

    if precompile:
        # One compilation per static combination now, so the first drag of any slider is already fast.
        for combo in itertools.product(*(s["values"] for s in static.values())):
            jax.block_until_ready(sampler(jnp.float32(value0), **dict(zip(static, combo))))

    def compute(value, static_values):
        points = _as_point_sets(sampler(jnp.float32(value), **static_values))
        density = None if background is None else background(jnp.float32(value))
        return points, density

    static_values = {name: s["value"] for name, s in static.items()}
    points, density = compute(value0, static_values)
    fig = go.FigureWidget(data=_traces(points, density, grid, extra_traces, style))
    action_layout(fig, title if title_fn is None else title_fn(value0, points))
    offset = (0 if density is None else 1) + (0 if mass_of is None else 1)
    sample_idx = tuple(range(offset, offset + len(points)))

    main_slider = _main_slider(values, value0, description)
    sliders = {name: main_slider}
    for name, s in static.items():
        sliders[name] = widgets.SelectionSlider(
            options=s["values"],
            value=s["value"],
            description=s["description"],
            continuous_update=True,
            style={"description_width": "initial"},
            layout=widgets.Layout(width="460px"),
        )

    def update(*_):
        current = {name: sliders[name].value for name in static}
        new_points, new_density = compute(main_slider.value, current)
        with fig.batch_update():
            if new_density is not None:
                z = _background_z(new_density)
                fig.data[0].z = z
                if background_style == "contour":
                    # Levels from the new z itself: inside batch_update, fig.data[0].z still returns the previous
                    # position's z, so reading it back drew the levels of wherever the slider came from.
                    fig.data[0].contours = _contour_levels(z)
            if mass_of is not None:
                mass = _mass_trace(new_points, style)
                fig.data[offset - 1].z = mass.z
                fig.data[offset - 1].customdata = mass.customdata
            for i, pts in zip(sample_idx, new_points.values()):
                fig.data[i].x = pts[:, 0]
                fig.data[i].y = pts[:, 1]
            if title_fn is not None:
                fig.layout.title = title_fn(float(main_slider.value), new_points)

    def keep_saved_state():
        # The FigureWidget's synced state (_widget_layout/_widget_data) is what a notebook saved with its widget
        # state re-renders from when reopened. Plotly sets it only at construction and in _repr_mimebundle_,
        # which never runs here (the figure is shown inside a VBox), so without this a reopened notebook draws
        # the view with no title and default (squashed) size.
        fig._widget_layout = copy.deepcopy(fig._layout_obj._props)
        fig._widget_data = copy.deepcopy(fig._data)

    def update_and_keep(*args):
        update(*args)
        keep_saved_state()

    keep_saved_state()
    for slider in sliders.values():
        slider.observe(update_and_keep, names="value")
    box = widgets.VBox([*sliders.values(), fig])
    return LiveView(
        figure=fig,
        sliders=sliders,
        widget=box,
        sample_trace_indices=sample_idx,
        trace_names=tuple(points),
        update=update,
    )


# --------------------------------------------------------------------------- #
# Frames view: one vectorised call, a plain plotly Figure
# --------------------------------------------------------------------------- #
def build_frames_view(
    sample_fn: Callable,
    slider_values,
    *,
    description: str = "guidance weight w",
    initial=None,
    static_sliders=None,
    background_fn: Callable | None = None,
    grid=None,
    title_fn: Callable | None = None,
    extra_traces: Sequence = (),
    marker_size: float = 4,
    opacity: float = 0.6,
    colorscale: str = "Blues",
    title: str | None = None,
    background_style: str = "heatmap",
    background_name: str = "target density",
    mass_of: str | None = None,
    mass_zmax: float | None = 100.0,
    **_ignored,
):
    """A ``go.Figure`` with one frame and one slider step per slider value, all sampled by one ``jax.vmap`` call."""
    from qgf_lite.presentation.plots import frames_figure

    values = _check_values("slider_values", slider_values)
    static = _check_static(static_sliders)
    if background_fn is not None and grid is None:
        raise ValueError("`background_fn` needs the `grid` (a toy.Grid2D) its densities live on.")
    static_values = {name: s["value"] for name, s in static.items()}
    style = _style(marker_size, opacity, colorscale, background_style, background_name, mass_of, mass_zmax)
    batch = jnp.asarray(values, jnp.float32)
    all_points = jax.jit(jax.vmap(lambda v: sample_fn(v, **static_values)))(batch)
    all_density = None if background_fn is None else jax.jit(jax.vmap(background_fn))(batch)
    all_points = jax.tree_util.tree_map(np.asarray, all_points)

    frames, labels, titles = [], [], []
    for i, value in enumerate(values):
        points = _as_point_sets(jax.tree_util.tree_map(lambda x: x[i], all_points))
        density = None if all_density is None else np.asarray(all_density[i])
        frames.append(_traces(points, density, grid, extra_traces, style))
        labels.append(_format_value(value))
        titles.append(title if title_fn is None else title_fn(float(value), points))
    active = 0 if initial is None else int(np.argmin(np.abs(values - float(initial))))
    fig = frames_figure(frames, labels, titles[active], slider_prefix=f"{description} = ", active=active)
    if title_fn is not None:
        for frame, frame_title in zip(fig.frames, titles):
            frame.layout = {"title": {"text": frame_title}}
    if static:
        fixed = ", ".join(f"{s['description']} = {s['value']}" for s in static.values())
        fig.add_annotation(
            text=f"fixed: {fixed}",
            xref="paper",
            yref="paper",
            x=0,
            y=1.0,
            yanchor="bottom",
            showarrow=False,
            font=dict(size=11, color="gray"),
        )
    return fig


def interactive_view(sample_fn: Callable, slider_values, *, mode: str = "auto", quiet: bool = False, **kwargs):
    """A slider over ``slider_values`` re-sampling ``sample_fn(value, **static)``: live or precomputed frames.

    Args:
      sample_fn: jax-traceable (value, **static) -> (n, 2) points or {trace name: (n, 2) points}; ``value`` is
        a float32 scalar (traced), static slider values arrive as Python keyword arguments. Traces of a dict
        are drawn in sorted name order (jax sorts dict outputs).
      slider_values: increasing slider positions (the frames view draws exactly these).
      mode: "auto" (see module docstring), "live" or "frames".
      name: the main slider's key in ``LiveView.sliders`` (default "weight").
      description: the main slider's label (default "guidance weight w").
      initial: the main slider's starting value (default the first value).
      static_sliders: {name: values or {"values", "description", "value"}} extra sliders passed to sample_fn
        as static keyword arguments (live view only; fixed at their initial values in the frames view).
      background_fn / grid: value -> (size, size) density on ``grid`` (a toy.Grid2D), drawn behind the samples.
      background_style: "heatmap" (a filled background, default) or "contour" (lines at 10%, 40% and 70% of
        the density's peak at each slider position, so a fill underneath can show the samples' own mass);
        background_name: its legend entry.
      mass_of: the name of a point set whose mass (share of samples per cell, ``plots.mass_trace``) is drawn
        under the points, so that samples piling up on one spot read as mass; its points turn dark and
        translucent. ``mass_zmax`` is the top of its colour range in % (default 100, the same at every slider
        position; None: the fullest cell of each position).
      title_fn: (value, {trace name: points}) -> title text, e.g. a metric of the samples.
      extra_traces: fixed plotly traces drawn on top (e.g. ``plots.region_outline`` of the best region, a hollow
        ``plots.marker_trace`` at the reward peaks; a filled marker there would hide the samples under it).
      precompile: live view only, compile every static combination up front.

    Returns a ``LiveView`` (display it, or make it the cell's last line) or a ``plotly.graph_objects.Figure``.
    """
    chosen, reason = choose_view_mode(mode)
    if chosen == "live":
        missing = [m for m in ("ipywidgets", "anywidget") if not _importable(m)]
        if missing:
            raise ValueError(
                f"The live view needs {' and '.join(missing)}: install the 'lab' extra "
                f"(python -m pip install 'qgf_lite[lab]'), or use mode='frames' (or unset ${ENV_VAR}) "
                "for the precomputed view."
            )
    if not quiet:
        other = "frames" if chosen == "live" else "live"
        print(f"interactive view: {chosen} ({reason}); set {ENV_VAR}={other} to switch.")
    if chosen == "live":
        return build_live_view(sample_fn, slider_values, **kwargs)
    return build_frames_view(sample_fn, slider_values, **kwargs)


__all__ = [
    "BACKGROUND_STYLES",
    "CONTOUR_FRACTIONS",
    "ENV_VAR",
    "LiveView",
    "build_frames_view",
    "build_live_view",
    "choose_view_mode",
    "interactive_view",
]
