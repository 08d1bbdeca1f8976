"""The one door to the OGBench library (and MuJoCo through it): headless rendering set before the first import
and the quiet construction of its environments (``qgf_lite.ogbench.datasets`` builds them by name).

MuJoCo picks its rendering backend from ``MUJOCO_GL`` when it is first imported, so the variable is set here, right
before qgf_lite's imports of ogbench; every module that needs the library or an environment comes through here
(``tests/test_imports.py`` checks that no other module sets it). OGBench builds its spaces from float64 bounds and
gymnasium warns about the float32 cast at each construction: ``quiet_spaces`` silences that warning where an
environment is built or stepped, never for the whole process.
"""

from __future__ import annotations

import contextlib
import os
import warnings


def headless_mujoco(force: bool = False) -> None:
    """``MUJOCO_GL=egl`` (headless rendering) unless the user chose a backend (``force``: even then, for worker
    processes that must render off-screen). Takes effect only before mujoco's first import."""
    if force:
        os.environ["MUJOCO_GL"] = "egl"
    else:
        os.environ.setdefault("MUJOCO_GL", "egl")


def import_ogbench():
    """The ``ogbench`` module, imported with headless rendering."""
    headless_mujoco()
    import ogbench

    return ogbench


@contextlib.contextmanager
def quiet_spaces():
    """Silence gymnasium's 'precision lowered by casting to float32' warning for OGBench's spaces, here only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*precision lowered.*", category=UserWarning)
        yield


def quiet_env(env):
    """``env`` wrapped so that its reset, step, render and spaces run inside ``quiet_spaces``: OGBench rebuilds its
    spaces on every access, reset and step included, and each rebuild would print gymnasium's cast warning."""
    import gymnasium

    class QuietSpaces(gymnasium.Wrapper):
        def reset(self, **kwargs):
            with quiet_spaces():
                return self.env.reset(**kwargs)

        def step(self, action):
            with quiet_spaces():
                return self.env.step(action)

        def render(self):
            with quiet_spaces():
                return self.env.render()

        @property
        def observation_space(self):
            with quiet_spaces():
                return self.env.observation_space

        @property
        def action_space(self):
            with quiet_spaces():
                return self.env.action_space

    with quiet_spaces():
        return QuietSpaces(env)


__all__ = ["headless_mujoco", "import_ogbench", "quiet_env", "quiet_spaces"]
