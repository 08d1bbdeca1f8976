"""Helpers for the tests that install qgf_lite the way users do: build the wheel, make virtual environments
outside the repository, and run notebooks in them with a kernel of that environment's own Python.

Nothing here imports qgf_lite: these tests must see the built wheel, never the checkout.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIP_ENV = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


def cache_root() -> Path:
    """Where environments are kept between runs (``QGF_TEST_CACHE`` overrides; default ~/.cache/qgf_lite-tests)."""
    root = Path(os.environ.get("QGF_TEST_CACHE", Path.home() / ".cache" / "qgf_lite-tests"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive lock, so two test workers never build the same cached environment at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(cmd, *, timeout=900, **kwargs) -> subprocess.CompletedProcess:
    """Run a command; on failure raise with its output, so a test failure says what went wrong."""
    env = {**os.environ, **PIP_ENV, **kwargs.pop("env", {})}
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env, **kwargs)
    if done.returncode:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return done


def python_of(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def make_venv(env_dir: Path, requirements=()) -> Path:
    """A fresh virtual environment at ``env_dir`` (pip included) holding only ``requirements``."""
    if env_dir.exists():
        shutil.rmtree(env_dir)
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    if requirements:
        run([python_of(env_dir), "-m", "pip", "install", "-q", *requirements])
    return env_dir


def build_distributions(out_dir: Path) -> tuple[Path, Path]:
    """Build the sdist and, from it, the wheel (``python -m build``, as a release would); returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "build", "--outdir", out_dir, ROOT])
    return next(out_dir.glob("qgf_lite-*.tar.gz")), next(out_dir.glob("qgf_lite-*.whl"))


def freeze_names(python: Path) -> set[str]:
    """The normalised names of the distributions installed in the environment of ``python``."""
    out = run([python, "-m", "pip", "list", "--format=json"]).stdout
    return {re.sub(r"[-_.]+", "-", item["name"]).lower() for item in json.loads(out)}


def cached_env(name: str, requirements: list[str]) -> Path:
    """A virtual environment holding exactly ``requirements``, kept in the cache between runs.

    It is built once per requirement list; on later calls anything installed into it since (qgf_lite, the
    OGBench extra) is uninstalled again, so each run starts from the same packages.
    """
    digest = hashlib.sha256(json.dumps([sys.version, requirements]).encode()).hexdigest()[:12]
    env_dir = cache_root() / f"{name}-{digest}"
    baseline = env_dir / "baseline-packages.json"
    with file_lock(cache_root() / f"{name}.lock"):
        if not baseline.is_file():
            make_venv(env_dir, requirements)
            baseline.write_text(json.dumps(sorted(freeze_names(python_of(env_dir)))))
        else:
            extra = freeze_names(python_of(env_dir)) - set(json.loads(baseline.read_text()))
            if extra:
                run([python_of(env_dir), "-m", "pip", "uninstall", "-y", "-q", *sorted(extra)])
    return env_dir


def write_kernelspec(jupyter_dir: Path, name: str, python: Path, *, pythonpath=(), exec_lines=()) -> None:
    """A Jupyter kernel named ``name`` that runs ``python`` (its own ipykernel) with extra paths and start-up code."""
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    if exec_lines:
        argv.append("--IPKernelApp.exec_lines=" + json.dumps(list(exec_lines)))
    spec = {
        "argv": argv,
        "display_name": name,
        "language": "python",
        "env": {"PYTHONPATH": os.pathsep.join(map(str, pythonpath))},
    }
    kernel_dir = jupyter_dir / "kernels" / name
    kernel_dir.mkdir(parents=True, exist_ok=True)
    (kernel_dir / "kernel.json").write_text(json.dumps(spec))


def execute_notebook(path: Path, kernel_name: str, *, timeout=900) -> tuple[object, float]:
    """Run every cell of the notebook at ``path`` in its own folder; returns (executed notebook, seconds)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(
        nb,
        kernel_name=kernel_name,
        timeout=timeout,
        resources={"metadata": {"path": str(path.parent)}},
        allow_errors=False,
    ).execute()
    return nb, time.perf_counter() - start


def cell_text(nb) -> str:
    """Everything the notebook's cells printed (stream and text/plain outputs)."""
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", "") or output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)
