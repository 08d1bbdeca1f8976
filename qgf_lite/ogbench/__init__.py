"""The OGBench manipulation track: environment names and datasets, offline data generation, training runs,
evaluation under every sampler, and the ``qgf-lite`` command line.

Needs the ``ogbench`` extra (``pip install 'qgf_lite[ogbench]'``: ogbench, mujoco, imageio, imageio-ffmpeg).

Modules: :mod:`~qgf_lite.ogbench.datasets` (names and loading), :mod:`~qgf_lite.ogbench.generate` (datasets
from OGBench's scripted oracles), :mod:`~qgf_lite.ogbench.train` (resumable training runs),
:mod:`~qgf_lite.ogbench.evaluation` (success rates with intervals, videos), :mod:`~qgf_lite.ogbench.cli`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from qgf_lite._optional import require_extra

require_extra("qgf_lite.ogbench", "ogbench")

PRETRAINED_DIR = "pretrained"


def pretrained_names() -> list[str]:
    """Names of the checkpoints shipped inside the package (see the repository's data/README.md)."""
    folder = resources.files(__name__) / PRETRAINED_DIR
    return sorted(entry.name.removesuffix(".msgpack") for entry in folder.iterdir() if entry.name.endswith(".msgpack"))


def pretrained_checkpoint(name: str = "cube-single-task2-2x256") -> Path:
    """Path of a checkpoint shipped inside the package, e.g. ``"cube-single-task2-2x256"``.

    Load it with :func:`qgf_lite.load_checkpoint` or pass it as ``init_from`` to a training run.
    """
    path = resources.files(__name__) / PRETRAINED_DIR / f"{name}.msgpack"
    if not path.is_file():
        raise FileNotFoundError(f"no pretrained checkpoint named {name!r}; the package ships {pretrained_names()}")
    return Path(str(path))


__all__ = [
    "pretrained_checkpoint",
    "PRETRAINED_DIR",
    "pretrained_names",
    "require_extra",
]
