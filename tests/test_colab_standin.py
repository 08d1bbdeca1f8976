"""A stand-in for Google Colab: an environment holding only what Colab preinstalls (no anywidget, jupyterlab,
mujoco, ogbench or qgf_lite; ipywidgets 7.7.1, plotly 5), ``google.colab`` imported at kernel start, the five
notebooks copied alone into an empty folder and run in SMOKE mode, each installing what it needs with its own first
cell (qgf_lite from the freshly built wheel through ``QGF_LITE_SOURCE``; the OGBench extra from the package index
for 05). The environment is kept between runs (see ``install_envs.cached_env``).
"""

from __future__ import annotations

import json
import shutil

import pytest
from install_envs import (
    ROOT,
    build_distributions,
    cached_env,
    cell_text,
    execute_notebook,
    python_of,
    run,
    write_kernelspec,
)

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ARTIFACTS = ROOT / "artifacts"
# What Colab preinstalls, as far as these notebooks care (versions as Colab shipped them in 2025-2026).
# ipywidgets 7's widgetsnbextension pulls in `notebook`; Colab has the classic notebook 6.5 (notebook 7 would bring
# jupyterlab, which Colab lacks).
COLAB_PREINSTALLED = [
    "jax",
    "flax",
    "optax",
    "numpy",
    "plotly>=5.15,<6",
    "ipywidgets==7.7.1",
    "notebook==6.5.7",
    "tqdm",
    "ipykernel",
]


@pytest.fixture(scope="module")
def distributions(tmp_path_factory):
    return build_distributions(tmp_path_factory.mktemp("dist"))


def test_colab_stand_in_runs_every_notebook_with_its_own_install_cell(distributions, tmp_path, monkeypatch):
    _, wheel = distributions
    env_dir = cached_env("colab-standin", COLAB_PREINSTALLED)
    python = python_of(env_dir)
    absent = run(
        [
            python,
            "-c",
            "import importlib.util as u; print([m for m in ('anywidget', 'jupyterlab', "
            "'mujoco', 'ogbench', 'qgf_lite') if u.find_spec(m)])",
        ],
        cwd=tmp_path,
    ).stdout.strip()
    assert absent == "[]", f"the stand-in must start without these: {absent}"

    colab_stub = tmp_path / "colab_stub"
    (colab_stub / "google" / "colab").mkdir(parents=True)  # google/ stays a namespace package (protobuf shares it)
    (colab_stub / "google" / "colab" / "__init__.py").write_text(
        '"""Stand-in for Colab\'s google.colab module."""\n\n'
        "class output:\n    @staticmethod\n    def enable_custom_widget_manager():\n        pass\n"
    )
    jupyter_dir = tmp_path / "jupyter"
    write_kernelspec(jupyter_dir, "colab-standin", python, pythonpath=[colab_stub], exec_lines=["import google.colab"])

    folder = tmp_path / "content"  # Colab's working folder: the notebooks alone, no repository beside them
    folder.mkdir()
    for path in NOTEBOOKS:
        shutil.copy(path, folder)
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_dir))
    monkeypatch.setenv("QGF_SMOKE", "1")
    monkeypatch.setenv("QGF_LITE_SOURCE", str(wheel))
    monkeypatch.delenv("QGF_WIDGETS", raising=False)

    seconds = {}
    for path in NOTEBOOKS:
        nb, seconds[path.name] = execute_notebook(folder / path.name, "colab-standin")
        text = cell_text(nb)
        assert "SMOKE mode" in text
        if "interactive_view" in "".join(c.source for c in nb.cells):
            assert "interactive view: frames (Colab does not load" in text, (
                f"{path.name}: sliders must pick frames, say why"
            )
    installed = run([python, "-c", "import qgf_lite; print(qgf_lite.__file__)"], cwd=tmp_path).stdout
    assert str(env_dir) in installed  # the wheel, installed by the notebooks' own cells
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "colab_standin_times.json").write_text(
        json.dumps({"seconds_per_notebook": {k: round(v, 1) for k, v in seconds.items()}}, indent=2)
    )
