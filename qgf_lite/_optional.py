"""Optional parts of qgf_lite and the pip extra that brings each one's dependencies.

The kernels and the toy notebooks need only the core install. The OGBench track, the courseware and the live
JupyterLab sliders need more; importing one of them without its extra fails here, at the door, with the command
that fixes it, instead of deep inside a function.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

# The import names behind each pip extra of pyproject.toml that code checks for (the install cells too).
EXTRA_MODULES = {
    "ogbench": ("ogbench", "mujoco", "imageio", "imageio_ffmpeg"),
    "lab": ("jupyterlab", "anywidget"),
    "course": ("nbformat", "nbclient"),
}


class MissingExtraError(ImportError):
    """An optional part of qgf_lite was imported without the pip extra that provides its dependencies."""


def missing_modules(modules: Sequence[str]) -> list[str]:
    """The names in ``modules`` that cannot be imported here (checked without importing them)."""
    return [module for module in modules if importlib.util.find_spec(module) is None]


def require_extra(part: str, extra: str) -> None:
    """Raise :class:`MissingExtraError` naming ``extra`` if any of its modules is not installed."""
    missing = missing_modules(EXTRA_MODULES[extra])
    if missing:
        raise MissingExtraError(
            f"{part} needs {', '.join(missing)}, which the core install of qgf_lite does not include. "
            f"Install the '{extra}' extra: python -m pip install 'qgf_lite[{extra}]' "
            f"(from a checkout: python -m pip install '.[{extra}]').",
            name=missing[0],
        )
