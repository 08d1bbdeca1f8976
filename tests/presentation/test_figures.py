"""Figure builders: mass under the samples, fitted widths, clean log ticks, and progress bars that survive a reload."""

import io
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from qgf_lite import progress, toy
from qgf_lite.presentation import plots, widgets

RNG = np.random.default_rng(0)


def in_right_disc(obs, a):
    a = jnp.asarray(a)
    return jnp.sum((a - jnp.asarray([0.7, 0.0])) ** 2, axis=-1) < 0.2**2


def test_mass_trace_counts_every_sample_and_leaves_empty_cells_transparent():
    pile = np.tile([[0.7, 0.0]], (75, 1))
    ring = RNG.uniform(-1, 1, size=(25, 2))
    trace = plots.mass_trace(np.concatenate([pile, ring]), bins=10)
    share = np.asarray(trace.customdata)
    assert share.sum() == pytest.approx(100.0)
    assert share.max() >= 75.0  # the pile is one cell holding three quarters of the samples
    z = np.asarray(trace.z, dtype=float)  # empty cells are None (JSON null) -> NaN here
    assert np.all(np.isnan(z[share == 0])) and np.all(np.isfinite(z[share > 0]))
    assert trace.colorbar.title.text == "% of samples per cell"
    # Colour ticks are labelled in % although the colour grows with the square root of the share.
    assert trace.colorbar.ticktext[-1] == "75" or float(trace.colorbar.ticktext[-1]) <= share.max()
    np.testing.assert_allclose(np.asarray(trace.colorbar.tickvals) ** 2, [float(t) for t in trace.colorbar.ticktext])


def test_mass_panels_titles_give_the_plotted_share_and_draw_nothing_opaque_on_top():
    sets = {
        "pile": np.tile([[0.7, 0.0]], (10, 1)),
        "spread": np.array([[0.7, 0.0], [-0.7, 0.0], [0.0, 0.7], [0.0, -0.7]]),
    }
    fig = plots.mass_panels(sets, in_right_disc, targets=[[0.7, 0.0]])
    titles = [a.text for a in fig.layout.annotations]
    assert titles[0].endswith("100.0% in the best region</sup>") and "25.0% in the best region" in titles[1]
    assert fig.layout.width <= plots.FIT_WIDTH
    for i, trace in enumerate(fig.data):
        if trace.meta == "samples":
            assert trace.marker.opacity < 1
            later = [
                t for t in fig.data[i + 1 :] if t.type == "scatter" and t.xaxis == trace.xaxis and t.meta != "samples"
            ]
            assert all(t.marker.symbol.endswith("-open") for t in later)
    with pytest.raises(ValueError, match="empty"):
        plots.mass_panels({})


def test_wide_figures_fit_a_900_px_output_area_and_label_their_axes():
    heat = plots.density_heatmap(np.linspace(-1, 1, 4), np.linspace(-1, 1, 4), np.ones((4, 4)), colorbar_title="Q")
    fig = plots.panels([heat, heat, heat], ["a", "b", "c"], colorbars=True, colorbar_titles=["R", "Q", "gap"])
    assert fig.layout.width <= plots.FIT_WIDTH
    assert [t.colorbar.title.text for t in fig.data] == ["R", "Q", "gap"]
    assert all(t.showscale for t in fig.data)
    assert fig.layout.xaxis3.title.text == "a[0]" and fig.layout.yaxis.title.text == "a[1]"
    with pytest.raises(ValueError, match="colorbar_titles"):
        plots.panels([heat], colorbars=True, colorbar_titles=["a", "b"])


def test_log_ticks_are_clean_and_exact_weights_are_labelled_as_given():
    values, text = plots.log_ticks(0.01, 0.1)
    assert text == ["0.01", "0.02", "0.05", "0.1"]
    values, text = plots.log_ticks(1, 10_000)
    assert text == ["1", "10", "100", "1000", "10k"]
    import plotly.graph_objects as go

    fig = plots.log_axis(go.Figure(), [0.01, 0.03, 0.1], exact=True, title="w")
    assert list(fig.layout.xaxis.ticktext) == ["0.01", "0.03", "0.1"] and fig.layout.xaxis.type == "log"
    with pytest.raises(ValueError, match="positive"):
        plots.log_axis(go.Figure(), [0.0, -1.0])


def test_loss_curve_names_losses_in_words_and_starts_at_zero():
    history = [
        {"step": 10, "policy_loss": 2.0, "critic_loss": 0.5},
        {"step": 20, "policy_loss": 1.5, "critic_loss": 0.2},
    ]
    fig = plots.loss_curve(history, ["policy_loss"])
    assert fig.layout.yaxis.title.text == "flow-matching loss (policy)" and fig.layout.yaxis.rangemode == "tozero"
    assert fig.layout.xaxis.title.text == "training step"
    fig = plots.loss_curve(history, log_y=True)
    assert [t.name for t in fig.data] == ["flow-matching loss (policy)", "critic loss (TD regression)"]
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis.title.text == "loss"


def test_live_view_draws_mass_under_the_samples_and_keeps_its_saved_state_in_step():
    pytest.importorskip("ipywidgets")
    pytest.importorskip("anywidget")
    base = jnp.asarray(RNG.normal(size=(40, 2)) * 0.05)
    grid = toy.Grid2D(size=8)
    view = widgets.build_live_view(
        lambda w: {"samples": base + w},
        [0.0, 0.5],
        background_fn=lambda w: jnp.ones((8, 8)) + w,
        grid=grid,
        background_style="contour",
        mass_of="samples",
        title_fn=lambda w, pts: f"w = {w:g}",
    )
    fig = view.figure
    assert [t.type for t in fig.data] == ["contour", "heatmap", "scatter"]
    assert view.sample_trace_indices == (2,) and fig.data[2].meta == "samples"
    # Widget messages must be valid JSON (no NaN), or the kernel prints a serialization warning under the cell.
    import json

    from ipywidgets.widgets.widget import _remove_buffers

    json.dumps(_remove_buffers(fig.get_state())[0], allow_nan=False)
    before = np.asarray(fig.data[1].customdata).copy()
    view.sliders["weight"].value = 0.5
    assert not np.array_equal(np.asarray(fig.data[1].customdata), before)  # the mass follows the samples
    # What a notebook saved with widget state re-renders from: the current title and size, not the initial ones.
    assert fig._widget_layout["title"]["text"] == "w = 0.5" and fig._widget_layout["width"] == fig.layout.width
    with pytest.raises(ValueError, match="mass_of"):
        widgets.build_live_view(lambda w: {"samples": base + w}, [0.0, 0.5], mass_of="nope")
    with pytest.raises(ValueError, match="background_style"):
        widgets.build_frames_view(lambda w: base + w, [0.0, 0.5], background_style="fill")


def test_progress_bar_is_plain_text_on_stdout_inside_a_kernel(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(progress, "_in_kernel", lambda: True)
    monkeypatch.setattr(sys, "stdout", out)
    bar = progress.progress_bar(total=3, desc="train")
    assert type(bar).__module__ == "tqdm.std"  # not the ipywidgets bar: nothing to lose when the kernel is gone
    bar.update(3)
    bar.close()
    assert "train" in out.getvalue() and "3/3" in out.getvalue()
    monkeypatch.setattr(progress, "_in_kernel", lambda: False)
    bar = progress.progress_bar(total=1, leave=False)  # a terminal: tqdm's usual bar on stderr
    assert bar.fp == sys.stderr  # tqdm wraps the file; the wrapper compares equal to it
    bar.close()


def test_one_colour_per_method_whatever_the_label():
    from qgf_lite.presentation.plots import METHOD_COLORS, method_color

    same = {
        "QGF": ["QGF", "qgf", "QGF w=0.03", "QGF, w set at test time", "guided"],
        "BC": ["BC", "bc", "BC, one marker per seed"],
        "best-of-N": ["best-of-N", "best-of-16", "best_of_n", "BFN"],
        "QGF + best-of-N": ["QGF w=1 + best-of-4", "QGF (w=1) + best-of-N", "qgf_best_of_n"],
        "FQL": ["FQL", "FQL (alpha=10)", "FQL alpha=1", "FQL, your loss"],
        "QAM": ["QAM", "qam", "QAM (tau=1)"],
        "noisy": ["noisy", "noisy (labels: w)", "noisy-gradient w=1"],
        "gradient steps": ["gradient-step a=0.05 x3", "gradient steps (alpha=0.05)"],
        "behaviour data": ["behaviour data"],
    }
    for method, labels in same.items():
        assert {method_color(label) for label in labels} == {METHOD_COLORS[method]}, method
    assert len(set(METHOD_COLORS.values())) == len(METHOD_COLORS)  # no two methods share a colour
    with pytest.raises(ValueError, match="no colour"):
        method_color("mystery sampler")
