"""The interactive views: live sliders update the FigureWidget; the frames fallback has one frame per value."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from traitlets import TraitError

from qgf_lite import toy
from qgf_lite.presentation import widgets

BASE = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (50, 2))) * 0.3
DIRECTION = np.array([0.2, -0.1])
GRID = toy.Grid2D(size=8)


def shifted(weight, scale=1.0):
    """Points that move with the weight (times a static scale): easy to predict independently."""
    return {"samples": jnp.asarray(BASE) + weight * scale * jnp.asarray(DIRECTION), "origin": jnp.zeros((3, 2))}


def background(weight):
    return jnp.full((GRID.size, GRID.size), 1.0) + weight


def test_live_slider_updates_the_figure_data():
    view = widgets.build_live_view(
        shifted,
        [0.0, 0.5, 1.0, 1.5, 2.0],
        background_fn=background,
        grid=GRID,
        static_sliders={"scale": {"values": [1.0, 3.0], "description": "scale"}},
        title_fn=lambda w, pts: f"w = {w:g}",
    )
    assert view.sliders["weight"].description == "guidance weight w"
    assert view.trace_names == ("origin", "samples")  # jax returns dict outputs in sorted key order
    index = view.sample_trace_indices[view.trace_names.index("samples")]
    samples = view.figure.data[index]
    assert samples.name == "samples"
    np.testing.assert_allclose(samples.x, BASE[:, 0], atol=1e-6)

    view.sliders["weight"].value = 1.5
    samples = view.figure.data[index]
    np.testing.assert_allclose(samples.x, BASE[:, 0] + 1.5 * DIRECTION[0], atol=1e-6)
    np.testing.assert_allclose(samples.y, BASE[:, 1] + 1.5 * DIRECTION[1], atol=1e-6)
    np.testing.assert_allclose(np.asarray(view.figure.data[0].z), 2.5)  # the background follows the weight
    assert view.figure.layout.title.text == "w = 1.5"

    view.sliders["scale"].value = 3.0
    samples = view.figure.data[index]
    np.testing.assert_allclose(samples.x, BASE[:, 0] + 4.5 * DIRECTION[0], atol=1e-6)


def test_frames_view_has_one_frame_and_step_per_value():
    values = [0.0, 0.25, 1.0, 4.0]
    fig = widgets.build_frames_view(shifted, values, background_fn=background, grid=GRID)
    assert len(fig.frames) == len(values)
    assert len(fig.layout.sliders) == 1 and len(fig.layout.sliders[0].steps) == len(values)
    assert [s.args[0][0] for s in fig.layout.sliders[0].steps] == [f.name for f in fig.frames]
    for value, frame in zip(values, fig.frames):
        heatmap, origin, samples = frame.data
        assert samples.name == "samples"
        np.testing.assert_allclose(samples.x, BASE[:, 0] + value * DIRECTION[0], atol=1e-5)
        np.testing.assert_allclose(samples.y, BASE[:, 1] + value * DIRECTION[1], atol=1e-5)
        np.testing.assert_allclose(np.asarray(heatmap.z), 1.0 + value, atol=1e-6)
        np.testing.assert_allclose(origin.x, 0.0)


def test_frames_view_calls_the_sampler_once_vectorised():
    calls = []

    def counting(weight):
        calls.append(weight)
        return jnp.asarray(BASE) * weight

    widgets.build_frames_view(counting, [0.0, 1.0, 2.0])
    assert len(calls) == 1 and isinstance(calls[0], jax.core.Tracer)


def test_mode_choice(monkeypatch):
    monkeypatch.delenv(widgets.ENV_VAR, raising=False)
    monkeypatch.setattr(widgets, "_in_kernel", lambda: True)
    assert widgets.choose_view_mode()[0] == "live"
    monkeypatch.setitem(sys.modules, "google.colab", object())
    assert widgets.choose_view_mode() == ("frames", "Colab does not load plotly's anywidget-based FigureWidget")
    monkeypatch.setenv(widgets.ENV_VAR, "live")
    assert widgets.choose_view_mode()[0] == "live"
    monkeypatch.setenv(widgets.ENV_VAR, "sometimes")
    with pytest.raises(ValueError, match="QGF_WIDGETS"):
        widgets.choose_view_mode()
    with pytest.raises(ValueError, match="mode"):
        widgets.choose_view_mode("static")


def test_auto_view_in_a_kernel_is_live(monkeypatch, capsys):
    monkeypatch.delenv(widgets.ENV_VAR, raising=False)
    monkeypatch.setattr(widgets, "_in_kernel", lambda: True)
    view = widgets.interactive_view(shifted, [0.0, 1.0])
    assert isinstance(view, widgets.LiveView)
    assert "interactive view: live" in capsys.readouterr().out


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="increasing"):
        widgets.build_frames_view(shifted, [1.0, 0.0])
    with pytest.raises(ValueError, match="grid"):
        widgets.build_frames_view(shifted, [0.0, 1.0], background_fn=background)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        widgets.build_frames_view(lambda w: jnp.zeros((4, 3)) + w, [0.0, 1.0])


BLOCK_ANYWIDGET = textwrap.dedent("""
    import importlib.abc, sys

    class BlockAnywidget(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "anywidget" or name.startswith("anywidget."):
                raise ImportError("anywidget blocked for this test")
            return None

    sys.meta_path.insert(0, BlockAnywidget())
    import jax.numpy as jnp
    import plotly.graph_objects as go
    from qgf_lite.presentation import widgets
    widgets._in_kernel = lambda: True  # pretend to be a Jupyter kernel: only the missing anywidget can decide

    mode, reason = widgets.choose_view_mode()
    assert (mode, reason) == ("frames", "anywidget is not installed"), (mode, reason)
    fig = widgets.interactive_view(lambda w: jnp.ones((5, 2)) * w, [0.0, 0.5, 1.0])
    assert type(fig) is go.Figure and len(fig.frames) == 3, type(fig)
    try:
        widgets.interactive_view(lambda w: jnp.ones((5, 2)) * w, [0.0, 1.0], mode="live")
    except ValueError as err:
        assert "anywidget" in str(err)
    else:
        raise AssertionError("mode='live' without anywidget should fail")
    print("FALLBACK-OK")
""")


def test_without_anywidget_the_frames_fallback_is_chosen_and_built():
    env = {k: v for k, v in __import__("os").environ.items() if k != widgets.ENV_VAR}
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_ANYWIDGET], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FALLBACK-OK" in result.stdout
    assert "interactive view: frames (anywidget is not installed)" in result.stdout


def tilted(weight):
    """A density whose peak height changes with the weight: exp(w q) on the grid, q a ramp (peak exp(w))."""
    q = jnp.linspace(0.0, 1.0, GRID.size)[None, :] * jnp.ones((GRID.size, 1))
    return jnp.exp(weight * q)


def contour_levels_at(weight):
    """What the figure must draw: lines at 10%, 40% and 70% of the density's peak at ``weight`` (here e^w)."""
    peak = float(np.exp(weight))
    return [0.1 * peak, 0.4 * peak, 0.7 * peak]


def drawn_levels(contours):
    return [contours.start, contours.start + contours.size, contours.start + 2 * contours.size]


@pytest.mark.parametrize("came_from", [0.0, 3.0])
def test_live_contours_follow_the_new_weight_from_either_side(came_from):
    # The old update read fig.data[0].z back inside fig.batch_update(), where plotly still returns the previous
    # z: the levels were those of the position the slider came from (at w = 1: e^0 or e^3 instead of e^1).
    view = widgets.build_live_view(
        shifted, [0.0, 1.0, 2.0, 3.0], background_fn=tilted, grid=GRID, background_style="contour", initial=came_from
    )
    np.testing.assert_allclose(drawn_levels(view.figure.data[0].contours), contour_levels_at(came_from), rtol=1e-5)
    view.sliders["weight"].value = 1.0
    np.testing.assert_allclose(np.max(view.figure.data[0].z), np.exp(1.0), rtol=1e-5)
    np.testing.assert_allclose(drawn_levels(view.figure.data[0].contours), contour_levels_at(1.0), rtol=1e-5)
    assert view.figure.data[0].contours.end == pytest.approx(contour_levels_at(1.0)[-1], rel=1e-5)


def test_main_slider_stops_only_at_the_listed_values():
    import ipywidgets

    steps = [1, 2, 3, 4, 6, 8, 16, 32]
    view = widgets.build_live_view(
        lambda k: jnp.asarray(BASE) * k, steps, name="steps", description="Euler steps K", initial=32
    )
    slider = view.sliders["steps"]
    # Uneven values: a selection slider over exactly these values, read out as "7", not "7.00", and no 5 or 7.
    assert isinstance(slider, ipywidgets.SelectionSlider)
    assert [value for _, value in slider.options] == [float(k) for k in steps]
    assert [label for label, _ in slider.options] == [str(k) for k in steps]
    assert slider.value == 32.0
    with pytest.raises(TraitError):  # 7 is not one of the offered step counts
        slider.value = 7.0
    slider.value = 4.0
    np.testing.assert_allclose(view.figure.data[0].x, BASE[:, 0] * 4, atol=1e-5)
    # Even values keep a FloatSlider whose step is their spacing and whose readout prints them exactly.
    even = widgets.build_live_view(shifted, [0.0, 0.25, 0.5, 0.75], initial=0.5).sliders["weight"]
    assert isinstance(even, ipywidgets.FloatSlider)
    assert (even.step, even.readout_format, even.value) == (0.25, ".2f", 0.5)
    whole = widgets.build_live_view(shifted, [1.0, 2.0, 3.0]).sliders["weight"]
    assert whole.readout_format == ".0f"
