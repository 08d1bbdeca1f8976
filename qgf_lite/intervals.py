"""Confidence intervals for evaluation results (no OGBench needed: plain numbers in, plain numbers out).

- ``wilson_interval(successes, trials, z)``: the Wilson score interval of a success rate. Unlike the normal
  approximation p +- z sqrt(p (1 - p) / n), it stays inside [0, 1], is not a single point at 0/n or n/n, and keeps
  close to its nominal coverage with the few episodes an evaluation can afford.

``qgf_lite.ogbench.evaluation`` reports every success rate with it; exercise 5.1 of notebook 05 asks for it.
"""

from __future__ import annotations

import math
import numbers

Z_95 = 1.959963984540054  # the two-sided 95% quantile of the standard normal

__all__ = ["Z_95", "wilson_interval"]


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple:
    """(low, high): the Wilson score interval of the success rate ``successes / trials``.

    With p = successes / trials and n = trials:

        centre = (p + z^2 / (2n)) / (1 + z^2 / n)
        half   = z sqrt(p (1 - p) / n + z^2 / (4 n^2)) / (1 + z^2 / n)
        (low, high) = (max(0, centre - half), min(1, centre + half))

    ``trials = 0`` (no episodes) gives (0.0, 1.0): nothing is known, and it is the limit of the formula as n -> 0.
    """
    counts = []
    for name, value in (("successes", successes), ("trials", trials)):
        whole = isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and float(value).is_integer())
        if isinstance(value, bool) or not whole:
            raise TypeError(f"`{name}` must be a whole number (a count of episodes), got {value!r}.")
        counts.append(int(value))
    successes, trials = counts
    if trials < 0 or not 0 <= successes <= max(trials, 0):
        raise ValueError(f"need 0 <= successes <= trials, got successes={successes}, trials={trials}.")
    if isinstance(z, bool) or not isinstance(z, numbers.Real) or not math.isfinite(z) or z <= 0:
        raise ValueError(f"`z` must be a finite number > 0 (1.96 for a 95% interval), got {z!r}.")
    if trials == 0:
        return 0.0, 1.0
    n = float(trials)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
