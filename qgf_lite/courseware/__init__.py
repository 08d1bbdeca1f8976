"""Courseware: student versions, solutions and an autograder from one notebook.

Each teaching notebook is the single source of truth. It contains the
solutions, fenced like this inside an exercise cell::

    # EXERCISE 1.1: Interpolate between noise and data [2 points]
    def interpolate(a0, a1, t):
        ### BEGIN SOLUTION
        return (1 - t) * a0 + t * a1
        ### END SOLUTION

and the next code cell (tagged ``check:1.1``) calls a check that raises an
``AssertionError`` explaining the mismatch. From that we derive

* a student version: solution blocks become a TODO plus
  ``raise NotImplementedError``, outputs cleared, ``solution-only`` cells dropped;
* a solutions version: marker lines removed, outputs cleared;
* an autograder: a notebook holding only the cells grading needs (setup,
  exercises with solutions, checks) plus a secret grading seed.

Grading (:mod:`qgf_lite.courseware.grading`) never trusts the submission's kernel: the submission is read in a
limited child (:mod:`qgf_lite.courseware.reading`); its exercise cells and cheap helper cells run in a sandbox
(:mod:`qgf_lite.courseware.sandbox`: bubblewrap, unshare or a dedicated uid) where qgf_lite is not importable and
the setup cells' results arrive as data; the sandbox only returns the outputs of the student's functions on
inputs the grader chooses (:mod:`qgf_lite.courseware.wire`); the reference's check cells run in the grader on
inputs drawn from the grading seed, followed by hidden checks (:mod:`qgf_lite.courseware.questions`).

Which cells the sandbox runs: the submission's exercise cells and its cheap helper cells (only imports,
function/class definitions and assignments of constant-like expressions, see :func:`is_setup_code`). The
reference's setup cells (tagged ``setup`` or recognised as cheap) run in the grader. Everything else (training
loops, plots, data generation) is skipped, which keeps grading fast; an exercise therefore has to work given
the setup cells alone.

Command line::

    python -m qgf_lite.courseware build --out dist [--selftest] [--gradescope]
    python -m qgf_lite.courseware grade SUBMISSIONS... --autograder-dir dist/autograder --out grades.csv --jobs 2
"""

from qgf_lite._optional import require_extra

require_extra("qgf_lite.courseware", "course")

from qgf_lite.courseware.assignments import *  # noqa: E402,F401,F403
from qgf_lite.courseware.batch import grade_batch  # noqa: E402,F401
from qgf_lite.courseware.build import build, find_reference, has_exercises, selftest, write_notebook  # noqa: E402,F401,E501
from qgf_lite.courseware.cli import main  # noqa: E402,F401
from qgf_lite.courseware.grading import Limits, find_reference_uses, grade_notebook, grade_submission  # noqa: E402,F401,E501
from qgf_lite.courseware.questions import QUESTIONS, Hidden, Question  # noqa: E402,F401

__all__ = [
    "ASSIGNMENTS",
    "BEGIN_SOLUTION",
    "build",
    "cell_tags",
    "check_id",
    "CHECK_TAG_PREFIX",
    "clear_outputs",
    "END_SOLUTION",
    "Exercise",
    "exercise_header",
    "EXERCISE_HEADER",
    "find_exercises",
    "find_reference",
    "find_reference_uses",
    "grade_batch",
    "grade_notebook",
    "grade_submission",
    "graded_cell_indices",
    "has_exercises",
    "Hidden",
    "is_setup_cell",
    "is_setup_code",
    "Limits",
    "main",
    "make_autograder_notebook",
    "make_solution_notebook",
    "make_student_notebook",
    "METADATA_KEY",
    "NBFORMAT_VERSION",
    "Question",
    "QUESTIONS",
    "read_notebook",
    "selftest",
    "SETUP_TAG",
    "SOLUTION_ONLY_TAG",
    "strip_solution_markers",
    "stub_solution",
    "submitted_exercises",
    "to_python",
    "write_notebook",
]
