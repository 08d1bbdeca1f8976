"""Check for the exercise of notebook 05: the Wilson interval of a success rate.

Student signature (the check calls it exactly like this):

- ``wilson_interval(successes, trials, z=1.96) -> (low, high)``
      successes, trials: Python ints, 0 <= successes <= trials; z: the normal quantile (1.96 for 95%).
      Two Python floats in [0, 1]; trials = 0 gives (0.0, 1.0) (nothing is known).

The check runs plain numbers (no OGBench, no simulator), compares with ``qgf_lite.intervals.wilson_interval`` and
names the common mistakes: the normal approximation, a missing z^2 term, no clipping, z ignored, trials = 0.
"""

from __future__ import annotations

import math

import numpy as np

from qgf_lite.checks._core import call_student, fail, passed, rng, seeded
from qgf_lite.intervals import wilson_interval as _reference_wilson_interval

_CASES = ((7, 20, 1.96), (0, 10, 1.96), (10, 10, 1.96), (1, 3, 1.96), (45, 50, 1.96), (13, 40, 1.0))


def reference_wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple:
    """``qgf_lite.intervals.wilson_interval`` in the exercise's conventions (z = 1.96 by default)."""
    return _reference_wilson_interval(successes, trials, z)


def _cases():
    """The public cases, or under a grading seed cases drawn from it (the 0/n, n/n and z = 1 cases stay)."""
    if seeded(95) == 95:
        return _CASES
    generator = rng(95)
    n1, n2, n3 = (int(generator.integers(3, 60)) for _ in range(3))
    return (
        (int(generator.integers(1, n1)), n1, 1.96),
        (0, n2, 1.96),
        (n3, n3, 1.96),
        (1, 3, 1.96),
        (int(generator.integers(1, 30)), 30, 1.96),
        (int(generator.integers(1, 40)), 40, 1.0),
    )


def _normal(s, n, z, clip=True):
    p = s / n
    half = z * math.sqrt(p * (1 - p) / n)
    lo, hi = p - half, p + half
    return (max(0.0, lo), min(1.0, hi)) if clip else (lo, hi)


def _wilson_parts(s, n, z, *, z2_in_sqrt=True, denominator=True, centre_shift=True):
    p = s / n
    denom = 1 + z * z / n if denominator else 1.0
    centre = (p + (z * z / (2 * n) if centre_shift else 0.0)) / denom
    half = z * math.sqrt(p * (1 - p) / n + (z * z / (4 * n * n) if z2_in_sqrt else 0.0)) / denom
    return centre, half


def _mistakes(cases):
    """(explanation, [(low, high) per case]) for every known mistake."""

    def table(fn):
        return [fn(s, n, z) for s, n, z in cases]

    def wilson(**kw):
        def fn(s, n, z):
            c, h = _wilson_parts(s, n, z, **kw)
            return max(0.0, c - h), min(1.0, c + h)

        return fn

    return [
        (
            "the normal approximation p +- z sqrt(p (1 - p) / n) (the Wald interval); Wilson's centre is pulled towards "
            "1/2 and its width has the extra z^2 / (4 n^2) term, so it is not a point at 0/n or n/n",
            table(_normal),
        ),
        (
            "the z^2 / (4 n^2) term under the square root is missing: half = z sqrt(p (1 - p) / n + z^2 / (4 n^2)) / "
            "(1 + z^2 / n)",
            table(wilson(z2_in_sqrt=False)),
        ),
        (
            "the denominator 1 + z^2 / n is missing (divide both the centre and the half-width by it)",
            table(wilson(denominator=False)),
        ),
        (
            "the centre is p / (1 + z^2 / n); Wilson's centre is (p + z^2 / (2 n)) / (1 + z^2 / n)",
            table(wilson(centre_shift=False)),
        ),
        ("z is always 1.96: use the `z` argument", [wilson()(s, n, 1.96) for s, n, _ in cases]),
        (
            "it returns (centre, half-width); return (low, high) = (centre - half, centre + half)",
            [_wilson_parts(s, n, z) for s, n, z in cases],
        ),
        (
            "it returns percentages; return fractions in [0, 1]",
            [tuple(100 * v for v in _reference_wilson_interval(s, n, z)) for s, n, z in cases],
        ),
    ]


def _pair(name, out, case):
    s, n, z = case
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        shape = f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""
        fail(
            name, f"for successes={s}, trials={n} it returned a {type(out).__name__}{shape}; return a pair (low, high)."
        )
    values = []
    for part, value in zip(("low", "high"), out):
        if np.ndim(value) != 0:
            fail(name, f"the {part} end must be a single number, got shape {np.shape(value)}.")
        values.append(float(value))
    if not all(math.isfinite(v) for v in values):
        fail(name, f"for successes={s}, trials={n} it returned {tuple(values)}, which is not finite.")
    return tuple(values)


def check_wilson_interval(fn) -> None:
    """Exercise 5.1: ``fn(successes, trials, z)`` -> the Wilson score interval (low, high), clipped to [0, 1]."""
    name = "wilson_interval"
    cases = _cases()
    got = [_pair(name, call_student(name, fn, s, n, z), (s, n, z)) for s, n, z in cases]
    want = [_reference_wilson_interval(s, n, z) for s, n, z in cases]
    for (s, n, _z), (lo, hi) in zip(cases, got):
        if lo > hi + 1e-12:
            fail(
                name,
                f"for {s}/{n} the interval is ({lo:.4g}, {hi:.4g}): low is above high.",
                "return (centre - half, centre + half).",
            )
    close = lambda a, b: np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-4, atol=1e-6)
    if not close(got, want):
        for explanation, wrong in _mistakes(cases):
            if close(got, wrong):
                fail(name, f"the intervals are off: it looks like {explanation}.")
        for (s, n, z), (lo, hi), (wlo, whi) in zip(cases, got, want):
            unclipped = _wilson_parts(s, n, z)
            if (lo < 0 or hi > 1) and close((max(lo, 0.0), min(hi, 1.0)), (wlo, whi)):
                fail(
                    name,
                    f"for {s}/{n} the interval ({lo:.4g}, {hi:.4g}) leaves [0, 1].",
                    "a success rate lies in [0, 1]: clip with max(0, low) and min(1, high).",
                )
            if not close((lo, hi), (wlo, whi)):
                fail(
                    name,
                    f"for successes={s}, trials={n}, z={z:g} it returned ({lo:.4g}, {hi:.4g}), expected "
                    f"({wlo:.4g}, {whi:.4g}).",
                    f"the centre is (p + z^2/(2n)) / (1 + z^2/n) = {unclipped[0]:.4g} here and the half-width "
                    f"z sqrt(p(1-p)/n + z^2/(4n^2)) / (1 + z^2/n) = {unclipped[1]:.4g}.",
                )
    for (s, n, _), (lo, hi) in zip(cases, got):
        if lo < 0 or hi > 1:
            fail(
                name,
                f"for {s}/{n} the interval ({lo!r}, {hi!r}) leaves [0, 1] (by rounding).",
                "clip with max(0.0, low) and min(1.0, high).",
            )
    # No episodes: nothing is known. A division by zero here would stop a whole evaluation table.
    try:
        empty = fn(0, 0, 1.96)
    except ZeroDivisionError:
        fail(
            name,
            "with trials = 0 it divides by zero.",
            "no episodes means nothing is known: return (0.0, 1.0) when trials == 0 (the formula's limit).",
        )
    except Exception as err:  # noqa: BLE001 - the student's bug, reported as such
        fail(
            name,
            f"with trials = 0 it raised {type(err).__name__}: {err}",
            "return (0.0, 1.0) when trials == 0: nothing is known.",
        )
    empty = _pair(name, empty, (0, 0, 1.96))
    if not close(empty, (0.0, 1.0)):
        fail(name, f"with trials = 0 it returned {empty}; return (0.0, 1.0): no episodes, nothing is known.")
    passed(name, f"on {len(cases)} success counts (0/n and n/n included), z = 1.96 and 1, and trials = 0")


__all__ = ["check_wilson_interval", "reference_wilson_interval"]
