"""Specific messages for the two exercises of notebook 04 (best-of-N and the compute budget).

``check_select_best`` and ``check_matched_best_of_n`` first look for two mistakes that the general comparison of
``qgf_lite.checks.guidance`` can only report as "differs by up to ...":

- 4.1: the critic's scores reshaped to (n, batch) (the proposals were flattened row by row, so score k belongs to
  row k // n, proposal k % n: the scores reshape to (batch, n));
- 4.2: N computed with ``round()`` (which rounds 2.7 up to 3, so best-of-N goes over the budget), or as a float.

and then run that general check (same inputs, same reference), so there is one reference of each formula.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from qgf_lite.checks import guidance as _guidance
from qgf_lite.checks._core import call_student, fail, random_inputs

_DIM = 3


def check_select_best(fn) -> None:
    """Exercise 4.1: ``fn(critic, proposals)`` keeps, per row, the proposal with the highest Q."""
    name = "select_best"
    critic = _guidance.toy_critic(5)
    batch, n = 6, 5  # the inputs of the general check
    proposals = jnp.asarray(random_inputs(51, [(batch, n, _DIM)], scale=0.6)[0])
    flat_scores = critic(proposals.reshape(batch * n, _DIM))
    try:
        got = np.asarray(fn(critic, proposals), np.float64)
    except Exception:  # noqa: BLE001 - the general check reports the crash with its message
        got = None
    if got is not None and got.shape == (batch, _DIM):
        # Scores read as (n, batch): the j-th proposal of row i gets score flat[j * batch + i].
        wrong = flat_scores.reshape(n, batch)
        for best in (jnp.argmax(wrong, axis=0), jnp.argmax(wrong.T, axis=1)):
            picked = np.asarray(proposals[jnp.arange(batch), best], np.float64)
            if not np.allclose(picked, _guidance.reference_select_best(critic, proposals), atol=1e-6) \
                    and np.allclose(got, picked, rtol=1e-4, atol=1e-5):
                fail(name, "the selected actions are off: you reshaped the critic's scores to (n, batch). The "
                           "proposals were flattened row by row (batch * n, dim), so score k belongs to row k // n: "
                           "reshape the critic's output to (batch, n) and take the argmax over axis 1.")
    _guidance.check_select_best(fn)


def check_matched_best_of_n(fn) -> None:
    """Exercise 4.2: ``fn(budget, steps)`` = the largest N whose best-of-N with ``steps`` Euler steps fits ``budget``."""
    name = "matched_best_of_n"
    cases = _guidance._budget_cases()
    got = []
    for budget, steps in cases:
        value = call_student(name, fn, budget, steps)
        if isinstance(value, (float, np.floating)):
            fail(name, f"for budget={budget}, steps={steps} it returned the float {value!r}; N counts samples.",
                 "use floor division, budget // (steps + 1), which gives an int.")
        got.append(value)
    want = [_guidance.reference_matched_best_of_n(b, k) for b, k in cases]
    rounded = [round(b / (k + 1)) for b, k in cases]
    if all(isinstance(v, (int, np.integer)) for v in got) and [int(v) for v in got] != want \
            and [int(v) for v in got] == rounded:
        over = next((b, k, r) for (b, k), r, w in zip(cases, rounded, want) if r != w)
        fail(name, f"N is computed with round(): for budget={over[0]}, steps={over[1]} round() rounds "
                   f"{over[0] / (over[1] + 1):.3g} up to {over[2]}, and best-of-{over[2]} costs "
                   f"{over[2] * (over[1] + 1)} > {over[0]} evaluations.",
             "N must not exceed the budget: use floor division, budget // (steps + 1).")
    _guidance.check_matched_best_of_n(fn)


__all__ = ["check_matched_best_of_n", "check_select_best"]
