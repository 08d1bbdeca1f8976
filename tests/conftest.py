"""Shared test setup: SMOKE mode for notebooks and headless MuJoCo, set before anything imports them."""

import os

# Notebooks run by nbmake inherit this environment, so they take their short SMOKE paths.
os.environ.setdefault("QGF_SMOKE", "1")
# MuJoCo picks its GL backend at import; headless machines need EGL.
os.environ.setdefault("MUJOCO_GL", "egl")

# Notebooks under tests/fixtures are inputs of tests (adversarial submissions that loop forever, crash or cheat),
# not course notebooks: nbmake must not run them on its own.
collect_ignore_glob = ["fixtures/*"]
