"""The notebooks' interactive cells in a Jupyter kernel where anywidget is NOT installed.

plotly's FigureWidget is an anywidget, so without it the live sliders cannot exist; ``widgets.interactive_view``
must then fall back to the precomputed frames view by itself. This test runs notebooks 01 and 03 top to bottom
(SMOKE mode) with nbclient in a fresh ipykernel whose Python cannot import anywidget: a ``sitecustomize.py`` on
the kernel's PYTHONPATH puts an import hook first on ``sys.meta_path`` that refuses ``anywidget``. An extra first
cell proves the hook is active inside the kernel; an extra last cell prints the notebook's slider values.

It asserts that every cell runs, that the interactive cell printed that the frames view was chosen because
anywidget is missing, and that its output is a plotly figure (application/vnd.plotly.v1+json) with exactly one
frame and one slider step per slider value. (tests/presentation/test_widgets.py covers the same choice in a plain process;
this one covers the notebooks themselves, in a real kernel, where the live view would otherwise be chosen.)
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from qgf_lite.presentation import widgets  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"

BLOCKER = textwrap.dedent('''
    """Test-only: make ``anywidget`` impossible to import in this interpreter (see tests/presentation/test_no_anywidget.py)."""
    import importlib.abc
    import sys


    class _NoAnywidget(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "anywidget" or name.startswith("anywidget."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked for this test)", name=name)
            return None


    sys.meta_path.insert(0, _NoAnywidget())
''')

PROBE = textwrap.dedent("""
    import sys
    try:
        import anywidget
    except ImportError as err:
        print("ANYWIDGET-BLOCKED:", err)
    else:
        raise AssertionError(f"anywidget imported from {anywidget.__file__}: the blocker is not active")
    print("KERNEL-PYTHON:", sys.executable)
""")

# (notebook, name of its slider-values variable)
TARGETS = [
    pytest.param("01_flow_matching.ipynb", "EULER_STEPS", id="01_flow_matching"),
    pytest.param("03_guided_sampling.ipynb", "WEIGHTS", id="03_guided_sampling"),
]


def kernel_env(blocker_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != widgets.ENV_VAR}  # no forced view: "auto" must decide
    env["PYTHONPATH"] = os.pathsep.join([str(blocker_dir), *filter(None, [env.get("PYTHONPATH")])])
    env["QGF_SMOKE"] = "1"
    env.setdefault("MUJOCO_GL", "egl")
    # Figures as the plain plotly mimetype: deterministic across front ends, and no plotly.js copied into outputs.
    env["PLOTLY_RENDERER"] = "plotly_mimetype"
    return env


def stream_text(cell) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", []) if out.get("output_type") == "stream")


def plotly_outputs(cell) -> list:
    return [
        out["data"]["application/vnd.plotly.v1+json"]
        for out in cell.get("outputs", [])
        if "application/vnd.plotly.v1+json" in out.get("data", {})
    ]


@pytest.mark.parametrize("notebook, values_name", TARGETS)
def test_notebook_falls_back_to_frames_without_anywidget(tmp_path, notebook, values_name):
    blocker_dir = tmp_path / "no_anywidget"
    blocker_dir.mkdir()
    (blocker_dir / "sitecustomize.py").write_text(BLOCKER)

    nb = nbformat.read(NOTEBOOKS / notebook, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(PROBE))
    nb.cells.append(
        nbformat.v4.new_code_cell(
            f"import json; print('SLIDER-VALUES:', json.dumps([float(v) for v in {values_name}]))"
        )
    )
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=600, allow_errors=False, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute(env=kernel_env(blocker_dir))  # raises CellExecutionError, naming the cell, if any cell fails

    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(out.get("output_type") != "error" for c in code_cells for out in c.get("outputs", []))
    assert "ANYWIDGET-BLOCKED:" in stream_text(code_cells[0])

    view_cells = [c for c in code_cells if "widgets.interactive_view(" in c.source]
    assert view_cells, f"{notebook} has no widgets.interactive_view cell"
    values = json.loads(stream_text(code_cells[-1]).split("SLIDER-VALUES:", 1)[1])
    for cell in view_cells:
        printed = stream_text(cell)
        assert "interactive view: frames (anywidget is not installed)" in printed, printed
        assert "interactive view: live" not in printed
        figures = plotly_outputs(cell)
        assert len(figures) == 1, f"expected one plotly figure from the interactive cell, got {len(figures)}"
        figure = figures[0]
        (slider,) = figure["layout"]["sliders"]
        assert len(figure["frames"]) == len(slider["steps"]) == len(values)
        assert [step["label"] for step in slider["steps"]] == [f"{v:g}" for v in values]
        assert [step["args"][0] for step in slider["steps"]] == [[frame["name"]] for frame in figure["frames"]]
        # The frames really differ: the slider changes what is drawn.
        first, last = (
            json.dumps(frame["data"], sort_keys=True) for frame in (figure["frames"][0], figure["frames"][-1])
        )
        assert first != last
