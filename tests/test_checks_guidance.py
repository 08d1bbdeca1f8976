"""The guidance exercise checks pass the reference solutions and name each planted mistake."""

import jax
import jax.numpy as jnp
import pytest

from qgf_lite import checks
from qgf_lite.checks import CheckFailed
from qgf_lite.guidance import guided_sample
from qgf_lite.samplers import sampler_cost


# ---------------------------------------------------------------- student solutions, right and wrong
def denoised(velocity, a, t):
    v = jax.lax.stop_gradient(velocity(a, t))
    return jnp.clip(a + (1.0 - t)[:, None] * v, -1.0, 1.0)


def denoised_no_factor(velocity, a, t):
    return jnp.clip(a + jax.lax.stop_gradient(velocity(a, t)), -1.0, 1.0)


def denoised_no_clip(velocity, a, t):
    return a + (1.0 - t)[:, None] * jax.lax.stop_gradient(velocity(a, t))


def denoised_no_stop_gradient(velocity, a, t):
    return jnp.clip(a + (1.0 - t)[:, None] * velocity(a, t), -1.0, 1.0)


def denoised_no_trailing_axis(velocity, a, t):
    return jnp.clip(a + (1.0 - t) * velocity(a, t), -1.0, 1.0)


def qgf_velocity(velocity, critic, a, t, weight):
    a_hat = denoised(velocity, a, t)
    return velocity(a, t) + weight * jax.grad(lambda x: jnp.sum(critic(x)))(a_hat)


def qgf_velocity_noisy(velocity, critic, a, t, weight):
    return velocity(a, t) + weight * jax.grad(lambda x: jnp.sum(critic(x)))(a)


def qgf_velocity_jacobian(velocity, critic, a, t, weight):
    grad = jax.grad(lambda x: jnp.sum(critic(denoised_no_stop_gradient(velocity, x, t))))(a)
    return velocity(a, t) + weight * grad


def qgf_velocity_mean(velocity, critic, a, t, weight):
    a_hat = denoised(velocity, a, t)
    return velocity(a, t) + weight * jax.grad(lambda x: jnp.mean(critic(x)))(a_hat)


def qgf_velocity_minus(velocity, critic, a, t, weight):
    a_hat = denoised(velocity, a, t)
    return velocity(a, t) - weight * jax.grad(lambda x: jnp.sum(critic(x)))(a_hat)


def select_best(critic, proposals):
    batch, n, dim = proposals.shape
    scores = critic(proposals.reshape(batch * n, dim)).reshape(batch, n)
    return proposals[jnp.arange(batch), jnp.argmax(scores, axis=1)]


def select_worst(critic, proposals):
    batch, n, dim = proposals.shape
    scores = critic(proposals.reshape(batch * n, dim)).reshape(batch, n)
    return proposals[jnp.arange(batch), jnp.argmin(scores, axis=1)]


def select_first(critic, proposals):
    return proposals[:, 0]


def matched(budget, steps):
    return budget // (steps + 1)


def matched_no_scoring(budget, steps):
    return budget // steps


def matched_round_up(budget, steps):
    return -(-budget // (steps + 1))


def matched_float(budget, steps):
    return budget / (steps + 1)


def not_written(*args):
    raise NotImplementedError


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("check, solution", [
    (checks.check_denoised_estimate, denoised),
    (checks.check_qgf_velocity, qgf_velocity),
    (checks.check_select_best, select_best),
    (checks.check_matched_best_of_n, matched),
])
def test_reference_solutions_pass(check, solution, capsys):
    check(solution)
    assert "[ok]" in capsys.readouterr().out


@pytest.mark.parametrize("check, wrong, phrase", [
    (checks.check_denoised_estimate, denoised_no_factor, "(1 - t) factor is missing"),
    (checks.check_denoised_estimate, denoised_no_clip, "clip"),
    (checks.check_denoised_estimate, denoised_no_stop_gradient, "stop_gradient"),
    (checks.check_denoised_estimate, denoised_no_trailing_axis, "t[:, None]"),
    (checks.check_qgf_velocity, qgf_velocity_noisy, "noisy"),
    (checks.check_qgf_velocity, qgf_velocity_jacobian, "Jacobian"),
    (checks.check_qgf_velocity, qgf_velocity_mean, "batch mean"),
    (checks.check_qgf_velocity, qgf_velocity_minus, "subtracted"),
    (checks.check_select_best, select_worst, "argmin"),
    (checks.check_select_best, select_first, "first proposal"),
    (checks.check_matched_best_of_n, matched_no_scoring, "not counted"),
    (checks.check_matched_best_of_n, matched_round_up, "rounded up"),
    (checks.check_matched_best_of_n, matched_float, "int"),
    (checks.check_qgf_velocity, not_written, "not implemented"),
])
def test_mistakes_are_named(check, wrong, phrase):
    with pytest.raises(CheckFailed, match=None) as info:
        check(wrong)
    assert phrase in str(info.value), str(info.value)


def test_reference_guided_velocity_agrees_with_the_sampler():
    """One guided Euler step of qgf_lite.guided_sample (K = 1, t = 0) equals a0 + reference velocity * 1."""
    velocity, critic = checks.toy_velocity(9), checks.toy_critic(9)
    a0 = 0.5 * jax.random.normal(jax.random.PRNGKey(0), (5, 3))
    sampled = guided_sample(lambda obs, a, t: velocity(a, t), lambda obs, a: critic(a), None, a0,
                            steps=1, weight=0.3)
    expected = jnp.clip(a0 + checks.reference_qgf_velocity(velocity, critic, a0, jnp.zeros(5), 0.3), -1, 1)
    assert jnp.allclose(sampled, expected, atol=1e-5)


def test_reference_matched_n_fits_the_budget_and_the_next_does_not():
    for budget, steps in [(30, 10), (124, 10), (55, 4)]:
        n = checks.reference_matched_best_of_n(budget, steps)
        assert sampler_cost("best_of_n", steps=steps, n=n)["total"] <= budget
        assert sampler_cost("best_of_n", steps=steps, n=n + 1)["total"] > budget
