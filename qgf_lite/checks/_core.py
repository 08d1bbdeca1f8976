"""What every exercise check shares: calling the student's code safely and explaining a mismatch.

A check raises ``CheckFailed`` (an AssertionError, so pytest/nbmake and the autograder see a failure) with a
message that says what is wrong and how to fix it, and prints one line when everything matches. In a notebook the
failure shows as that message alone: ``CheckFailed`` tells IPython how to render it (``_render_traceback_``), so
students see no traceback into the package and none of the reference code.

Seeds: every check draws its inputs from fixed seeds, so what students see is reproducible. The autograder runs
the same checks under :func:`grading_seed` with a seed students never see, so an answer hard-coded for the
public inputs fails there.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Sequence

import numpy as np


class CheckFailed(AssertionError):
    """The student's function disagrees with the reference; the message explains how."""

    def _render_traceback_(self):
        # IPython calls this instead of formatting a traceback: show the explanation only.
        lines = str(self).splitlines() or [""]
        return [f"\x1b[0;31mCheck failed\x1b[0m: {lines[0]}", *lines[1:]]


_SEED_OFFSET: contextvars.ContextVar[int] = contextvars.ContextVar("qgf_checks_seed_offset", default=0)


@contextlib.contextmanager
def grading_seed(seed: int):
    """Within this block every check draws its inputs from ``seed`` instead of the public seeds (0)."""
    token = _SEED_OFFSET.set(int(seed))
    try:
        yield
    finally:
        _SEED_OFFSET.reset(token)


def seeded(base: int) -> int:
    """The seed a check uses where it would use ``base``: ``base`` itself, or one derived from the grading seed."""
    offset = _SEED_OFFSET.get()
    if offset == 0:
        return base
    return int(np.random.SeedSequence([base, offset]).generate_state(1)[0])


def rng(base: int) -> np.random.Generator:
    return np.random.default_rng(seeded(base))


_OUTPUT: contextvars.ContextVar = contextvars.ContextVar("qgf_checks_output", default=None)


def emit(line: str) -> None:
    """Print a check's line, or hand it to the autograder collecting it (see :func:`collect_output`)."""
    sink = _OUTPUT.get()
    if sink is None:
        print(line)
    else:
        sink.append(line)


@contextlib.contextmanager
def collect_output(lines: list):
    token = _OUTPUT.set(lines)
    try:
        yield lines
    finally:
        _OUTPUT.reset(token)


def passed(exercise: str, detail: str = "") -> None:
    emit(f"[ok] {exercise}: matches the reference{(' ' + detail) if detail else ''}.")


def fail(exercise: str, problem: str, hint: str | None = None):
    message = f"{exercise}: {problem}"
    if hint:
        message += f"\n  Hint: {hint}"
    raise CheckFailed(message)


def call_student(exercise: str, fn: Callable, *args, **kwargs):
    """Run the student's function, turning 'not written yet' and crashes into readable failures."""
    if not callable(fn):
        fail(exercise, f"expected a function, got {type(fn).__name__}.")
    try:
        result = fn(*args, **kwargs)
    except NotImplementedError:
        fail(exercise, "not implemented yet.", "replace the `raise NotImplementedError` line with your code.")
    except CheckFailed:
        raise
    except TypeError as err:
        # A wrong argument count: most often an argument list without the state obs (the exercises take it where
        # qgf_lite's functions do, and so do the velocity, critic and policy they are given).
        hint = (
            "compare your def line with the exercise's and your calls with its docstring; where the state obs "
            "is an argument it comes first: velocity(obs, a, t), critic(obs, a), policy(obs, noise)."
            if "positional argument" in str(err)
            else None
        )
        fail(exercise, f"your function raised TypeError: {err}", hint)
    except Exception as err:  # the student's bug, reported as such
        fail(exercise, f"your function raised {type(err).__name__}: {err}")
    if result is None:
        fail(
            exercise,
            "your function returned None.",
            "is it finished? Every path through it must end in `return <the result>`.",
        )
    return result


def student_vjp(exercise: str, fn: Callable, args: Sequence, argnum: int, cotangent):
    """Gradient of sum(fn(*args) * cotangent) with respect to ``args[argnum]``.

    The autograder's stand-in for a student's function (which runs in another process) computes it there;
    a plain function is differentiated here with ``jax.vjp``.
    """
    remote = getattr(fn, "qgf_vjp", None)
    if remote is not None:
        return remote(args, argnum, cotangent)
    import jax
    import jax.numpy as jnp

    def partial(x):
        full = list(args)
        full[argnum] = x
        return jnp.asarray(fn(*full))

    _, pullback = jax.vjp(partial, args[argnum])
    return pullback(jnp.asarray(cotangent))[0]


def _describe_non_array(got) -> str | None:
    if got is None:
        return "returned None"
    if isinstance(got, (str, bytes, dict, set)) or callable(got) or got is Ellipsis:
        return f"returned a {type(got).__name__}, not an array"
    return None


def compare_arrays(
    exercise: str,
    got,
    want,
    *,
    what: str = "output",
    rtol: float = 1e-4,
    atol: float = 1e-5,
    known_mistakes: Iterable[tuple[str, object]] = (),
) -> None:
    """Fail unless ``got`` matches ``want``; name the mistake when ``got`` matches one of ``known_mistakes``.

    ``known_mistakes`` are (explanation, array the mistake would produce) pairs, e.g.
    ("the (1 - t) factor is missing", wrong_reference_output).
    """
    odd = _describe_non_array(got)
    if odd is not None:
        fail(
            exercise,
            f"your function {odd}.",
            "is the function finished? Every path through it must end in `return <the result>`.",
        )
    try:
        got = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        fail(exercise, f"your function returned a {type(got).__name__} that is not an array of numbers.")
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        fail(
            exercise,
            f"{what} has shape {got.shape}, expected {want.shape}.",
            "check which axis you reduce over and whether you keep the batch axis.",
        )
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
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    scale = scale or 1.0
    if np.allclose(got, 0.0, atol=atol):
        fail(
            exercise,
            f"{what} is all zeros (reference scale {scale:.3g}).",
            "is a placeholder such as `return 0` or `jnp.zeros(...)` still in place?",
        )
    # A constant factor explains the mismatch only if one factor fits every element (at least two of them).
    nonzero = np.abs(want) > atol
    if np.count_nonzero(nonzero) >= 2:
        ratio = got[nonzero] / want[nonzero]
        factor = float(ratio.flat[0])
        fits = np.allclose(got, factor * want, rtol=1e-3, atol=atol)
        if fits and not np.isclose(factor, 1.0):
            fail(
                exercise,
                f"{what} is the reference times {factor:.4g} for every input: a constant factor is "
                "wrong (a mean where a sum is needed, or a missing/extra scale?).",
            )
    err = float(np.max(np.abs(got - want)))
    fail(exercise, f"{what} differs from the reference by up to {err:.3g} (reference scale {scale:.3g}).")


def random_inputs(seed: int, shapes: Sequence[tuple[int, ...]], scale: float = 1.0):
    """Reproducible float32 test inputs for a check (the seed is replaced under :func:`grading_seed`)."""
    generator = rng(seed)
    return [(scale * generator.standard_normal(s)).astype(np.float32) for s in shapes]
