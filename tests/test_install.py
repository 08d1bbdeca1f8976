"""The user's road, not the developer's: qgf_lite from its built wheel, in environments outside the repository.

1. The wheel and the sdist ship every module and data file of the package.
2. A fresh virtual environment with only the wheel (no extras): every core module imports, the optional parts
   name the extra they need, and notebook 01 runs from a folder outside the repository. With the extras
   installed, every module imports.
(The Colab stand-in is tests/test_colab_standin.py: a file of its own, so the two run on different test workers.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import zipfile

import pytest
from install_envs import (
    ROOT,
    build_distributions,
    cell_text,
    execute_notebook,
    make_venv,
    python_of,
    run,
    write_kernelspec,
)

CORE_MODULES = [
    "qgf_lite",
    "qgf_lite.networks",
    "qgf_lite.flow",
    "qgf_lite.guidance",
    "qgf_lite.samplers",
    "qgf_lite.cfgrl",
    "qgf_lite.fql",
    "qgf_lite.iql",
    "qgf_lite.data",
    "qgf_lite.training",
    "qgf_lite.checkpoint",
    "qgf_lite.checks",
    "qgf_lite.presentation.plots",
    "qgf_lite.presentation.widgets",
    "qgf_lite.presentation.explorer",
    "qgf_lite.presentation.notebook_tools",
    "qgf_lite.toy",
    "qgf_lite.toy.metrics",
    "qgf_lite.toy.experiments",
    "qgf_lite.toy.comparison",
    "qgf_lite.progress",
]
OPTIONAL_MODULES = {"qgf_lite.ogbench.evaluation": "ogbench", "qgf_lite.courseware": "course"}
ARTIFACTS = ROOT / "artifacts"


def _tracked_package_files() -> set[str]:
    out = subprocess.run(["git", "ls-files", "qgf_lite"], cwd=ROOT, capture_output=True, text=True, check=True)
    files = {line for line in out.stdout.splitlines() if line}
    untracked = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard", "qgf_lite"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return files | {line for line in untracked.stdout.splitlines() if line}


@pytest.fixture(scope="module")
def distributions(tmp_path_factory):
    return build_distributions(tmp_path_factory.mktemp("dist"))


def _record(name: str, payload: dict) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_text(json.dumps(payload, indent=2))


def test_wheel_and_sdist_ship_every_module_and_data_file(distributions):
    sdist, wheel = distributions
    package_files = _tracked_package_files()
    assert any(f.endswith(".msgpack") for f in package_files)  # the shipped checkpoint is among them
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert package_files - in_wheel == set(), f"the wheel lacks {sorted(package_files - in_wheel)}"
    with tarfile.open(sdist) as tar:
        prefix = tar.getnames()[0].split("/")[0]
        in_sdist = {name.removeprefix(prefix + "/") for name in tar.getnames()}
    assert package_files - in_sdist == set(), f"the sdist lacks {sorted(package_files - in_sdist)}"
    assert {"pyproject.toml", "README.md"} <= in_sdist
    _record("wheel_contents.json", {"wheel": wheel.name, "files": len(in_wheel), "bytes": wheel.stat().st_size})


def test_core_install_from_the_wheel_runs_notebook_01_outside_the_repository(distributions, tmp_path, monkeypatch):
    _, wheel = distributions
    env_dir = make_venv(tmp_path / "env", [str(wheel), "ipykernel"])  # ipykernel: what any Jupyter front end has
    python = python_of(env_dir)
    code = (
        "import importlib, json\n"
        f"for name in {CORE_MODULES!r}:\n"
        "    module = importlib.import_module(name)\n"
        "    assert 'site-packages' in module.__file__, module.__file__\n"
        "errors = {}\n"
        f"for name in {sorted(OPTIONAL_MODULES)!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as error:\n"
        "        errors[name] = [type(error).__name__, str(error)]\n"
        "print(json.dumps(errors))\n"
    )
    errors = json.loads(run([python, "-c", code], cwd=tmp_path).stdout)
    for module, extra in OPTIONAL_MODULES.items():
        kind, message = errors[module]
        assert kind == "MissingExtraError" and f"qgf_lite[{extra}]" in message, (module, message)

    folder = tmp_path / "course"
    folder.mkdir()
    shutil.copy(ROOT / "notebooks" / "01_flow_matching.ipynb", folder)
    jupyter_dir = tmp_path / "jupyter"
    write_kernelspec(jupyter_dir, "wheel-core", python)
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_dir))
    monkeypatch.setenv("QGF_SMOKE", "1")
    monkeypatch.delenv("QGF_LITE_SOURCE", raising=False)
    nb, seconds = execute_notebook(folder / "01_flow_matching.ipynb", "wheel-core")
    assert "SMOKE mode" in cell_text(nb)

    # With the extras, every module imports (and the shipped checkpoint is found inside the install).
    run([python, "-m", "pip", "install", "-q", f"qgf_lite[ogbench,course] @ {wheel.as_uri()}"])
    code = (
        "import importlib, pkgutil, warnings, qgf_lite\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "names = [m.name for m in pkgutil.walk_packages(qgf_lite.__path__, 'qgf_lite.') if not m.name.endswith('__main__')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "from qgf_lite.ogbench import pretrained_checkpoint\n"
        "assert 'site-packages' in str(pretrained_checkpoint())\n"
        "print(len(names))\n"
    )
    count = int(run([python, "-c", code], cwd=tmp_path, env={"MUJOCO_GL": "egl"}).stdout.split()[-1])
    assert count >= 30

    # The student's road in README: the installed package builds the student notebooks from a clone's
    # notebooks/ (a copy here), and notebook 01's first exercise is left to the student.
    readme = (ROOT / "README.md").read_text()
    assert "python -m qgf_lite.courseware build --out dist" in readme
    assert "python -m jupyter lab dist/course" in readme
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "notebooks", clone / "notebooks")
    run([python, "-m", "qgf_lite.courseware", "build", "--out", "dist"], cwd=clone)
    course = sorted(p.name for p in (clone / "dist" / "course").glob("*.ipynb"))
    assert [name[:2] for name in course] == ["01", "02", "03", "04", "05", "06"]
    assert (clone / "dist" / "course" / "README.md").is_file()
    student = json.loads((clone / "dist" / "course" / "01_flow_matching.ipynb").read_text())
    first = next("".join(c["source"]) for c in student["cells"] if "".join(c["source"]).startswith("# EXERCISE"))
    assert first.startswith("# EXERCISE 1.1") and "NotImplementedError" in first and "BEGIN SOLUTION" not in first
    _record("wheel_core_notebook01.json", {"notebook_01_seconds": round(seconds, 1), "modules_imported": count})
