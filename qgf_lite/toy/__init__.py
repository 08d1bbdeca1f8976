"""Toy problems for teaching Q-guided flows, where every sample can be drawn.

* :mod:`~qgf_lite.toy.bandits`: 2D-action bandits (``ring``, ``moons``, ``checkerboard``, ``spiral``,
  ``contextual_ring``) whose best region holds only a small share of the behaviour data;
* :mod:`~qgf_lite.toy.tilted`: the exact guidance target ``pi_ref(a) exp(w Q(a))`` on a grid, and samples from it;
* :mod:`~qgf_lite.toy.point_goal`: a tiny offline multi-step task for IQL with action chunks;
* :mod:`~qgf_lite.toy.metrics`: distances between sample sets (MMD, sliced Wasserstein) and rewards;
* :mod:`~qgf_lite.toy.experiments`: train a BC flow + critic on a bandit and compare samplers (the notebooks'
  driver).

The names of the first three are available as ``qgf_lite.toy.<name>``; import ``metrics`` and ``experiments``
as submodules.
"""

from qgf_lite.toy.bandits import *  # noqa: F401,F403
from qgf_lite.toy.bandits import __all__ as _bandit_names
from qgf_lite.toy.point_goal import *  # noqa: F401,F403
from qgf_lite.toy.point_goal import __all__ as _point_goal_names
from qgf_lite.toy.tilted import *  # noqa: F401,F403
from qgf_lite.toy.tilted import __all__ as _tilted_names

__all__ = [*_bandit_names, *_tilted_names, *_point_goal_names]
