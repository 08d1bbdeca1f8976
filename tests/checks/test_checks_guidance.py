"""The guidance exercise checks pass the reference solutions and name each planted mistake."""

import jax
import jax.numpy as jnp
import pytest

from qgf_lite import checks
from qgf_lite.checks import CheckFailed
from qgf_lite.guidance import best_of_n, guided_sample
from qgf_lite.samplers import sampler_cost


# ---------------------------------------------------------------- student solutions, right and wrong
# The signatures of qgf_lite.guidance: the state obs comes with the actions, velocity(obs, a, t), critic(obs, a).
def denoised(velocity, obs, a, t):
    v = jax.lax.stop_gradient(velocity(obs, a, t))
    return jnp.clip(a + (1.0 - t)[:, None] * v, -1.0, 1.0)


def denoised_no_factor(velocity, obs, a, t):
    return jnp.clip(a + jax.lax.stop_gradient(velocity(obs, a, t)), -1.0, 1.0)


def denoised_no_clip(velocity, obs, a, t):
    return a + (1.0 - t)[:, None] * jax.lax.stop_gradient(velocity(obs, a, t))


def denoised_no_stop_gradient(velocity, obs, a, t):
    return jnp.clip(a + (1.0 - t)[:, None] * velocity(obs, a, t), -1.0, 1.0)


def denoised_no_trailing_axis(velocity, obs, a, t):
    return jnp.clip(a + (1.0 - t) * velocity(obs, a, t), -1.0, 1.0)


def denoised_without_obs(velocity, obs, a, t):
    return denoised(velocity, None, a, t)


def qgf_velocity(velocity, critic, obs, a, t, weight):
    a_hat = denoised(velocity, obs, a, t)
    return velocity(obs, a, t) + weight * jax.grad(lambda x: jnp.sum(critic(obs, x)))(a_hat)


def qgf_velocity_noisy(velocity, critic, obs, a, t, weight):
    return velocity(obs, a, t) + weight * jax.grad(lambda x: jnp.sum(critic(obs, x)))(a)


def qgf_velocity_jacobian(velocity, critic, obs, a, t, weight):
    grad = jax.grad(lambda x: jnp.sum(critic(obs, denoised_no_stop_gradient(velocity, obs, x, t))))(a)
    return velocity(obs, a, t) + weight * grad


def qgf_velocity_mean(velocity, critic, obs, a, t, weight):
    a_hat = denoised(velocity, obs, a, t)
    return velocity(obs, a, t) + weight * jax.grad(lambda x: jnp.mean(critic(obs, x)))(a_hat)


def qgf_velocity_minus(velocity, critic, obs, a, t, weight):
    a_hat = denoised(velocity, obs, a, t)
    return velocity(obs, a, t) - weight * jax.grad(lambda x: jnp.sum(critic(obs, x)))(a_hat)


def qgf_velocity_critic_swapped(velocity, critic, obs, a, t, weight):
    a_hat = denoised(velocity, obs, a, t)
    return velocity(obs, a, t) + weight * jax.grad(lambda x: jnp.sum(critic(x, obs)))(a_hat)


def _scores(critic, obs, proposals, states):
    batch, n, dim = proposals.shape
    return critic(states, proposals.reshape(batch * n, dim)).reshape(batch, n)


def select_best(critic, obs, proposals):
    scores = _scores(critic, obs, proposals, jnp.repeat(obs, proposals.shape[1], axis=0))
    return proposals[jnp.arange(proposals.shape[0]), jnp.argmax(scores, axis=1)]


def select_best_by_columns(critic, obs, proposals):
    """Another right answer: score the j-th proposal of every row at once, in a loop over j."""
    scores = jnp.stack([critic(obs, proposals[:, j]) for j in range(proposals.shape[1])], axis=1)
    return proposals[jnp.arange(proposals.shape[0]), jnp.argmax(scores, axis=1)]


def select_worst(critic, obs, proposals):
    scores = _scores(critic, obs, proposals, jnp.repeat(obs, proposals.shape[1], axis=0))
    return proposals[jnp.arange(proposals.shape[0]), jnp.argmin(scores, axis=1)]


def select_tiled_states(critic, obs, proposals):
    scores = _scores(critic, obs, proposals, jnp.tile(obs, (proposals.shape[1], 1)))
    return proposals[jnp.arange(proposals.shape[0]), jnp.argmax(scores, axis=1)]


def select_without_obs(critic, obs, proposals):
    batch, n, dim = proposals.shape
    scores = critic(None, proposals.reshape(batch * n, dim)).reshape(batch, n)
    return proposals[jnp.arange(batch), jnp.argmax(scores, axis=1)]


def select_first(critic, obs, proposals):
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
@pytest.mark.parametrize(
    "check, solution",
    [
        (checks.check_denoised_estimate, denoised),
        (checks.check_qgf_velocity, qgf_velocity),
        (checks.check_select_best, select_best),
        (checks.check_select_best, select_best_by_columns),
        (checks.check_matched_best_of_n, matched),
    ],
)
def test_reference_solutions_pass(check, solution, capsys):
    check(solution)
    assert "[ok]" in capsys.readouterr().out


@pytest.mark.parametrize(
    "check, wrong, phrase",
    [
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
        (checks.check_select_best, select_tiled_states, "jnp.repeat(obs, n, axis=0)"),
        (checks.check_select_best, select_without_obs, "obs is None"),
        (checks.check_denoised_estimate, denoised_without_obs, "obs is None"),
        (checks.check_qgf_velocity, qgf_velocity_critic_swapped, "swapped"),
        (checks.check_matched_best_of_n, matched_no_scoring, "not counted"),
        (checks.check_matched_best_of_n, matched_round_up, "rounded up"),
        (checks.check_matched_best_of_n, matched_float, "int"),
        (checks.check_qgf_velocity, not_written, "not implemented"),
    ],
)
def test_mistakes_are_named(check, wrong, phrase):
    with pytest.raises(CheckFailed, match=None) as info:
        check(wrong)
    assert phrase in str(info.value), str(info.value)


def test_reference_guided_velocity_agrees_with_the_sampler():
    """One guided Euler step of qgf_lite.guided_sample (K = 1, t = 0) equals a0 + reference velocity * 1."""
    velocity, critic = checks.toy_velocity(9), checks.toy_critic(9)
    a0 = 0.5 * jax.random.normal(jax.random.PRNGKey(0), (5, 3))
    obs = jax.random.normal(jax.random.PRNGKey(1), (5, 2))
    sampled = guided_sample(velocity, critic, obs, a0, steps=1, weight=0.3)
    expected = jnp.clip(a0 + checks.reference_qgf_velocity(velocity, critic, obs, a0, jnp.zeros(5), 0.3), -1, 1)
    assert jnp.allclose(sampled, expected, atol=1e-5)


def test_reference_select_best_agrees_with_best_of_n():
    """The 4.1 reference picks what qgf_lite.best_of_n picks from the same proposals (its return_all)."""
    velocity, critic = checks.toy_velocity(8), checks.toy_critic(8)
    obs = jax.random.normal(jax.random.PRNGKey(2), (4, 2))
    best, proposals, _ = best_of_n(
        velocity, critic, obs, jax.random.normal(jax.random.PRNGKey(3), (4, 6, 3)), steps=3, return_all=True
    )
    assert jnp.allclose(checks.reference_select_best(critic, obs, proposals), best)


def test_reference_matched_n_fits_the_budget_and_the_next_does_not():
    for budget, steps in [(30, 10), (124, 10), (55, 4)]:
        n = checks.reference_matched_best_of_n(budget, steps)
        assert sampler_cost("best_of_n", steps=steps, n=n)["total"] <= budget
        assert sampler_cost("best_of_n", steps=steps, n=n + 1)["total"] > budget
