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
* an autograder: a notebook holding only the cells needed for grading, which
  :func:`grade_notebook` combines with the exercise cells of a submission and
  runs in a fresh kernel. A question earns its points iff its check cell runs
  without error.

Which cells the grader runs: the exercise and check cells, plus *setup* cells.
A setup cell is either tagged ``setup`` or is recognised as cheap by reading
its code: only imports, function/class definitions and assignments of
constant-like expressions (see :func:`is_setup_code`). Everything else
(training loops, plots, data generation) is skipped, which keeps grading fast;
an exercise therefore has to work given the setup cells alone.

Command line::

    python -m qgf_lite.courseware build --out dist
    python -m qgf_lite.courseware grade submission.ipynb [--reference REF.ipynb]
"""


from qgf_lite._optional import require_extra

require_extra("qgf_lite.courseware", "course")

from qgf_lite.courseware.assignments import *  # noqa: E402,F401,F403
from qgf_lite.courseware.build import build, find_reference, has_exercises, selftest, write_notebook  # noqa: E402,F401,E501
from qgf_lite.courseware.cli import main  # noqa: E402,F401
from qgf_lite.courseware.grading import grade_notebook  # noqa: E402,F401
