"""What the notebooks show: figures (``plots``), live sliders with a static fallback (``widgets``), the offline
guidance explorer page (``explorer``) and the generated parts of the notebooks (``notebook_tools``).

The kernels never import this subpackage; it builds on them.
"""

__all__ = ["explorer", "notebook_tools", "plots", "widgets"]
