"""Progress bars that still read correctly after a notebook is saved and reopened.

``tqdm.auto`` draws an ipywidgets bar inside Jupyter. Its output is a reference to a widget model that lives only
as long as the kernel, so a saved notebook, reopened, shows "Error displaying widget: model not found" in place
of every bar. ``progress_bar`` is ``tqdm`` with a plain-text bar instead: in a Jupyter kernel it writes to
stdout (not stderr, which JupyterLab shows as a pink warning box) and redraws in place, so a saved notebook keeps
the last state of the bar as ordinary text. Outside a kernel it is ``tqdm``'s usual terminal bar on stderr.
"""

from __future__ import annotations

import sys


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (ipykernel)."""
    ipython = sys.modules.get("IPython")
    shell = None if ipython is None else ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def progress_bar(*args, **kwargs):
    """``tqdm.tqdm(*args, **kwargs)`` as a text bar; in a Jupyter kernel on stdout, 100 columns, redrawn at most
    twice a second. Arguments given explicitly win."""
    from tqdm.std import tqdm

    if _in_kernel():
        kwargs.setdefault("file", sys.stdout)
        kwargs.setdefault("ncols", 100)
        kwargs.setdefault("mininterval", 0.5)
    return tqdm(*args, **kwargs)


__all__ = ["progress_bar"]
