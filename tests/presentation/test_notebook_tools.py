"""Badges and install cells come from one place (pyproject.toml), pin a release, and fail clearly."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qgf_lite.presentation import notebook_tools as nt

ROOT = Path(__file__).resolve().parents[2]


def _install_cell(nb: dict) -> str:
    return "".join(next(c for c in nb["cells"] if nt.INSTALL_TAG in c["metadata"].get("tags", []))["source"])


def test_every_notebook_is_in_step_with_pyproject():
    out_of_step = nt.sync(ROOT, check_only=True, log=lambda _: None)
    assert out_of_step == {}, f"run `python -m qgf_lite.presentation.notebook_tools sync`: {out_of_step}"
    source = nt.read_project_source(ROOT)
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        cell = _install_cell(nb)
        assert nb["cells"].index(next(c for c in nb["cells"] if c["cell_type"] == "code")) == 1  # first code cell
        assert f"RELEASE = {source.requirement!r}" in cell
        assert re.search(r"@v\d+\.\d+\.\d+$", source.requirement)  # a release tag, never a moving branch
        assert f"blob/{source.tag}/notebooks/{path.name}" in "".join(nb["cells"][0]["source"])
        assert "arxiv.org/abs/2606.11087" in "".join(nb["cells"][0]["source"])  # every header cites the paper


def test_sync_rewrites_every_notebook_when_the_release_changes(tmp_path):
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    pyproject = (ROOT / "pyproject.toml").read_text()
    version = nt.read_project_source(ROOT).version
    (tmp_path / "pyproject.toml").write_text(pyproject.replace(f'version = "{version}"', 'version = "9.9.9"', 1))
    assert nt.main(["check", "--root", str(tmp_path)]) == 1
    stale = nt.sync(tmp_path, check_only=True, log=lambda _: None)
    assert sorted(stale) == sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    nt.sync(tmp_path, log=lambda _: None)
    assert nt.sync(tmp_path, check_only=True, log=lambda _: None) == {}
    nb = json.loads((tmp_path / "notebooks" / "03_guided_sampling.ipynb").read_text())
    assert "@v9.9.9'" in _install_cell(nb) and "blob/v9.9.9/" in "".join(nb["cells"][0]["source"])
    # Only the generated parts changed: every other cell is as it was.
    before = json.loads((ROOT / "notebooks" / "03_guided_sampling.ipynb").read_text())
    assert [c["source"] for c in nb["cells"][2:]] == [c["source"] for c in before["cells"][2:]]


def test_only_notebook_05_installs_the_ogbench_extra():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cell = _install_cell(json.loads(path.read_text()))
        assert ("qgf_lite[ogbench]" in cell) == path.name.startswith("05_"), path.name


class _Done:
    returncode = 0
    stderr = ""


@pytest.mark.parametrize(
    "source, expected",
    [
        ("0.2.0", "qgf_lite==0.2.0"),  # a bare version means the package index
        ("/wheels/qgf_lite-0.2.0-py3-none-any.whl", "/wheels/qgf_lite-0.2.0-py3-none-any.whl"),
        ("qgf_lite @ git+https://example.org/q.git@v0.2.0", "qgf_lite @ git+https://example.org/q.git@v0.2.0"),
    ],
)
def test_install_cell_honours_qgf_lite_source(monkeypatch, source, expected):
    cell = nt.install_cell_source("qgf_lite @ git+https://example.org/q.git@v0.1.0")
    calls = []
    monkeypatch.setattr("subprocess.run", lambda args, **k: calls.append(args) or _Done())
    monkeypatch.setenv(nt.SOURCE_ENV_VAR, source)
    exec(cell, {})
    assert [args[-1] for args in calls] == [expected]
    assert calls[0][:4] == [sys.executable, "-m", "pip", "install"]


def test_install_cell_fails_in_one_short_message_naming_the_source(tmp_path):
    cell = nt.install_cell_source("qgf_lite @ git+https://example.org/q.git@v0.1.0")
    missing = tmp_path / "qgf_lite-9.9.9-py3-none-any.whl"
    env = {**os.environ, nt.SOURCE_ENV_VAR: str(missing), "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run(
        [sys.executable, "-c", cell], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) <= 3, done.stderr  # no pip or Python traceback
    assert lines[0].startswith(f"Could not install '{missing}'") and "QGF_LITE_SOURCE" in done.stderr


def test_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="one pip requirement"):
        nt.install_cell_source("a\nb")
    with pytest.raises(ValueError, match="unknown extras"):
        nt.install_cell_source("qgf_lite==0.2.0", ["ogbenhc"])
    with pytest.raises(FileNotFoundError, match="pyproject.toml"):
        nt.read_project_source(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1.0"\n')
    with pytest.raises(ValueError, match="Repository"):
        nt.read_project_source(tmp_path)
    bad = nt.ProjectSource(repository="https://gitlab.com/o/r", version="1.0")
    with pytest.raises(ValueError, match="github.com"):
        bad.colab_url("01.ipynb")
