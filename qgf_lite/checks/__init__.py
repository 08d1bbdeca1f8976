"""Exercise checks: compare a student's function with qgf_lite's reference on random inputs and say what is wrong.

Each ``check_*`` raises ``CheckFailed`` (an AssertionError) with an explanation, or prints a pass line.
"""

from qgf_lite.checks._core import CheckFailed, call_student, compare_arrays
from qgf_lite.checks.critic import *  # noqa: F401,F403
from qgf_lite.checks.evaluation import *  # noqa: F401,F403
from qgf_lite.checks.flow import *  # noqa: F401,F403
from qgf_lite.checks.fql import *  # noqa: F401,F403
from qgf_lite.checks.guidance import *  # noqa: F401,F403

__all__ = [
    "call_student",
    "check_chunk_returns",
    "check_denoised_estimate",
    "check_euler_sample",
    "check_euler_step",
    "check_expectile_loss",
    "check_flow_matching_loss",
    "check_fql_distillation_loss",
    "check_interpolation",
    "check_matched_best_of_n",
    "check_qgf_velocity",
    "check_select_best",
    "check_select_weight",
    "check_td_target",
    "check_wilson_interval",
    "CheckFailed",
    "compare_arrays",
    "reference_denoised_estimate",
    "reference_flow_matching_loss",
    "reference_fql_distillation_loss",
    "reference_matched_best_of_n",
    "reference_qgf_velocity",
    "reference_select_best",
    "reference_wilson_interval",
    "toy_critic",
    "toy_obs",
    "toy_policy",
    "toy_velocity",
]
