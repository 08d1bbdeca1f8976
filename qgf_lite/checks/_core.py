"""What every exercise check shares: calling the student's code safely and explaining a mismatch.

A check raises ``CheckFailed`` (an AssertionError, so pytest/nbmake and the autograder see a failure) with a
message that says what is wrong and how to fix it, and prints one line when everything matches.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence, Tuple

import numpy as np


class CheckFailed(AssertionError):
    """The student's function disagrees with the reference; the message explains how."""


def passed(exercise: str, detail: str = "") -> None:
    print(f"[ok] {exercise}: matches the reference{(' ' + detail) if detail else ''}.")


def fail(exercise: str, problem: str, hint: Optional[str] = None):
    message = f"{exercise}: {problem}"
    if hint:
        message += f"\n  Hint: {hint}"
    raise CheckFailed(message)


def call_student(exercise: str, fn: Callable, *args, **kwargs):
    """Run the student's function, turning 'not written yet' and crashes into readable failures."""
    if not callable(fn):
        fail(exercise, f"expected a function, got {type(fn).__name__}.")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        fail(exercise, "not implemented yet.", "replace the `raise NotImplementedError` line with your code.")
    except CheckFailed:
        raise
    except Exception as err:  # the student's bug, reported as such
        fail(exercise, f"your function raised {type(err).__name__}: {err}")


def compare_arrays(
    exercise: str,
    got,
    want,
    *,
    what: str = "output",
    rtol: float = 1e-4,
    atol: float = 1e-5,
    known_mistakes: Iterable[Tuple[str, object]] = (),
) -> None:
    """Fail unless ``got`` matches ``want``; name the mistake when ``got`` matches one of ``known_mistakes``.

    ``known_mistakes`` are (explanation, array the mistake would produce) pairs, e.g.
    ("the (1 - t) factor is missing", wrong_reference_output).
    """
    got = np.asarray(got)
    want = np.asarray(want)
    if got.shape != want.shape:
        fail(exercise, f"{what} has shape {got.shape}, expected {want.shape}.",
             "check which axis you reduce over and whether you keep the batch axis.")
    if not np.all(np.isfinite(got)):
        fail(exercise, f"{what} contains NaN or inf.")
    if np.allclose(got, want, rtol=rtol, atol=atol):
        return
    for explanation, wrong in known_mistakes:
        wrong = np.asarray(wrong)
        if wrong.shape == got.shape and np.allclose(got, wrong, rtol=rtol, atol=atol):
            fail(exercise, f"{what} is off: it looks like {explanation}.")
    if np.allclose(got, -want, rtol=rtol, atol=atol):
        fail(exercise, f"{what} has the wrong sign.")
    scale = float(np.max(np.abs(want))) or 1.0
    ratio = got / np.where(want == 0, np.nan, want)
    finite = ratio[np.isfinite(ratio)]
    if finite.size and np.allclose(finite, finite.flat[0], rtol=1e-3) and not np.isclose(finite.flat[0], 1.0):
        fail(exercise, f"{what} is the reference times {finite.flat[0]:.4g}: a constant factor is wrong "
                       "(a mean where a sum is needed, or a missing/extra scale?).")
    err = float(np.max(np.abs(got - want)))
    fail(exercise, f"{what} differs from the reference by up to {err:.3g} (reference scale {scale:.3g}).")


def random_inputs(seed: int, shapes: Sequence[Tuple[int, ...]], scale: float = 1.0):
    """Reproducible float32 test inputs for a check."""
    rng = np.random.default_rng(seed)
    return [(scale * rng.standard_normal(s)).astype(np.float32) for s in shapes]
