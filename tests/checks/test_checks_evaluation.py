"""Exercise 5.1 (Wilson interval) and the specific 4.1/4.2 messages: typical wrong answers get named."""

from __future__ import annotations

import math

import jax.numpy as jnp
import pytest

from qgf_lite import checks
from qgf_lite.checks import CheckFailed
from qgf_lite.intervals import wilson_interval


def _wilson(s, n, z=1.96, *, z2=True, clip=True, zero=True, centre_shift=True, fixed_z=False):
    z = 1.96 if fixed_z else z
    if n == 0 and zero:
        return 0.0, 1.0
    p = s / n
    d = 1 + z * z / n
    c = (p + (z * z / (2 * n) if centre_shift else 0)) / d
    h = z * math.sqrt(p * (1 - p) / n + (z * z / (4 * n * n) if z2 else 0)) / d
    return (max(0.0, c - h), min(1.0, c + h)) if clip else (c - h, c + h)


def _wald(s, n, z=1.96):
    p = s / n
    h = z * math.sqrt(p * (1 - p) / n)
    return max(0.0, p - h), min(1.0, p + h)


def test_reference_values():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.27753, abs=1e-5)
    lo, hi = wilson_interval(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(1 - 0.27753, abs=1e-5)
    with pytest.raises(ValueError, match="successes <= trials"):
        wilson_interval(3, 2)
    with pytest.raises(TypeError, match="whole number"):
        wilson_interval(1.5, 4)


def test_correct_wilson_passes(capsys):
    checks.check_wilson_interval(_wilson)
    assert "[ok] wilson_interval" in capsys.readouterr().out


@pytest.mark.parametrize(
    "fn, phrase",
    [
        (_wald, "normal approximation"),
        (lambda s, n, z=1.96: _wilson(s, n, z, z2=False), "z^2 / (4 n^2) term"),
        (lambda s, n, z=1.96: _wilson(s, n, z, clip=False), "leaves [0, 1]"),
        (lambda s, n, z=1.96: _wilson(s, n, z, zero=False), "trials = 0"),
        (lambda s, n, z=1.96: _wilson(s, n, z, fixed_z=True), "use the `z` argument"),
        (lambda s, n, z=1.96: _wilson(s, n, z, centre_shift=False), "Wilson's centre is (p + z^2 / (2 n))"),
        (lambda s, n, z=1.96: tuple(100 * v for v in _wilson(s, n, z)), "percentages"),
        (lambda s, n, z=1.96: _wilson(s, n, z)[0], "return a pair"),
    ],
)
def test_wilson_mistakes_are_named(fn, phrase):
    with pytest.raises(CheckFailed) as info:
        checks.check_wilson_interval(fn)
    assert phrase in str(info.value)


def test_select_best_reshape_order_is_named():
    def transposed(critic, obs, proposals):
        b, n, d = proposals.shape
        scores = critic(jnp.repeat(obs, n, axis=0), proposals.reshape(b * n, d)).reshape(n, b)
        return proposals[jnp.arange(b), jnp.argmax(scores, axis=0)]

    with pytest.raises(CheckFailed, match=r"reshaped the critic's scores to \(n, batch\).*\(batch, n\)"):
        checks.check_select_best(transposed)


def test_matched_best_of_n_round_is_named():
    with pytest.raises(CheckFailed, match=r"(?s)round\(\).*floor division"):
        checks.check_matched_best_of_n(lambda budget, steps: round(budget / (steps + 1)))
    with pytest.raises(CheckFailed, match="float"):
        checks.check_matched_best_of_n(lambda budget, steps: budget / (steps + 1))


def test_05_question_is_registered():
    from qgf_lite.courseware.assignments import ASSIGNMENTS
    from qgf_lite.courseware.questions import QUESTIONS

    assert "05_ogbench_manipulation.ipynb" in ASSIGNMENTS
    question = QUESTIONS["05_ogbench_manipulation"]["5.1"]
    assert question.check == "check_wilson_interval" and question.function == "wilson_interval"
    import numpy as np

    for hidden in question.hidden:
        hidden.run(_wilson, np.random.default_rng(0))  # the reference passes every hidden check
        with pytest.raises(CheckFailed):
            hidden.run(lambda s, n, z=1.96: _wald(s, max(n, 1), z), np.random.default_rng(0))
