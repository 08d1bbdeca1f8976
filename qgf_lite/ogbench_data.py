"""Moved to :mod:`qgf_lite.ogbench.datasets` (names, loading) and :mod:`qgf_lite.ogbench.generate` (generation).

This alias, which offers the public names of both, goes in qgf_lite 0.3.
"""

import warnings

from qgf_lite.ogbench.datasets import *  # noqa: F401,F403
from qgf_lite.ogbench.generate import *  # noqa: F401,F403

warnings.warn(
    "qgf_lite.ogbench_data moved to qgf_lite.ogbench.datasets and qgf_lite.ogbench.generate; the old name goes "
    "in qgf_lite 0.3.",
    DeprecationWarning,
    stacklevel=2,
)
