"""Exercise checks: compare a student's function with qgf_lite's reference on random inputs and say what is wrong.

Each ``check_*`` raises ``CheckFailed`` (an AssertionError) with an explanation, or prints a pass line.
"""

from qgf_lite.checks._core import CheckFailed, compare_arrays, call_student
from qgf_lite.checks.flow import *  # noqa: F401,F403
from qgf_lite.checks.critic import *  # noqa: F401,F403
from qgf_lite.checks.guidance import *  # noqa: F401,F403
from qgf_lite.checks.fql import *  # noqa: F401,F403
from qgf_lite.checks.evaluation import *  # noqa: F401,F403
