"""Old import paths kept for notebooks already handed out; each warns once and goes in 0.3 (see CHANGELOG.md)."""

from __future__ import annotations

import importlib
import sys
import warnings


def alias_module(old_name: str, new_name: str) -> None:
    """Make ``import old_name`` give the module ``new_name`` itself (so attribute access and patching agree)."""
    warnings.warn(
        f"{old_name} moved to {new_name}; the old name goes in qgf_lite 0.3. Import {new_name} instead.",
        DeprecationWarning,
        stacklevel=3,
    )
    sys.modules[old_name] = importlib.import_module(new_name)
