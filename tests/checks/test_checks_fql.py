"""The notebook-06 exercise checks (FQL's distillation loss, choosing w on held-out data) pass the reference
solutions, fail a blank exercise, and name each planted mistake."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qgf_lite import checks
from qgf_lite.checks import CheckFailed
from qgf_lite.checks.flow import toy_velocity
from qgf_lite.checks.fql import reference_fql_distillation_loss, toy_policy
from qgf_lite.fql import flow_targets


# ---------------------------------------------------------------- 6.1 FQL distillation loss
# The exercise has the signature of qgf_lite.fql.distillation_loss: (policy, obs, noise, targets).
def distill(policy, obs, noise, targets):
    return jnp.mean(jnp.square(policy(obs, noise) - jax.lax.stop_gradient(targets)))


def distill_no_stop_gradient(policy, obs, noise, targets):
    return jnp.mean(jnp.square(policy(obs, noise) - targets))


def distill_clipped_policy(policy, obs, noise, targets):
    return jnp.mean(jnp.square(jnp.clip(policy(obs, noise), -1, 1) - jax.lax.stop_gradient(targets)))


def distill_onto_noise(policy, obs, noise, targets):
    return jnp.mean(jnp.square(policy(obs, noise) - noise))


def distill_policy_at_targets(policy, obs, noise, targets):
    return jnp.mean(jnp.square(policy(obs, targets) - jax.lax.stop_gradient(targets)))


def distill_without_obs(policy, obs, noise, targets):
    return jnp.mean(jnp.square(policy(None, noise) - jax.lax.stop_gradient(targets)))


def distill_old_signature(policy, obs, noise, targets):
    return jnp.mean(jnp.square(policy(noise) - jax.lax.stop_gradient(targets)))


def distill_summed_coordinates(policy, obs, noise, targets):
    return jnp.mean(jnp.sum(jnp.square(policy(obs, noise) - jax.lax.stop_gradient(targets)), axis=-1))


def distill_per_sample(policy, obs, noise, targets):
    return jnp.mean(jnp.square(policy(obs, noise) - jax.lax.stop_gradient(targets)), axis=-1)


def distill_numpy(policy, obs, noise, targets):
    target = np.asarray(targets)
    return jnp.mean(jnp.square(policy(obs, noise) - target))  # fine as a value; np.asarray fails under jax.grad


# ---------------------------------------------------------------- 6.2 choosing w
def select(weights, heldout, test):
    weights = np.asarray(weights, float)
    means = np.mean(heldout, axis=1)
    tied = np.flatnonzero(means == means.max())
    best = tied[np.argmin(weights[tied])]
    return float(weights[best]), float(np.mean(test[best]))


def select_on_test(weights, heldout, test):
    best = int(np.argmax(np.mean(test, axis=1)))
    return float(weights[best]), float(np.mean(test[best]))


def select_reports_heldout(weights, heldout, test):
    best = int(np.argmax(np.mean(heldout, axis=1)))
    return float(weights[best]), float(np.mean(heldout[best]))


def select_returns_index(weights, heldout, test):
    best = int(np.argmax(np.mean(heldout, axis=1)))
    return best, float(np.mean(test[best]))


def select_best_single(weights, heldout, test):
    best = int(np.argmax(np.max(heldout, axis=1)))
    return float(weights[best]), float(np.mean(test[best]))


def select_first_on_tie(weights, heldout, test):
    best = int(np.argmax(np.mean(heldout, axis=1)))
    return float(weights[best]), float(np.mean(test[best]))


def select_best_test_overall(weights, heldout, test):
    best = int(np.argmax(np.mean(heldout, axis=1)))
    return float(weights[best]), float(np.max(np.mean(test, axis=1)))


def select_single_value(weights, heldout, test):
    return select(weights, heldout, test)[0]


def blank(*args):
    raise NotImplementedError


@pytest.mark.parametrize(
    "check, solution",
    [
        (checks.check_fql_distillation_loss, distill),
        (checks.check_select_weight, select),
    ],
)
def test_reference_solutions_pass(check, solution, capsys):
    check(solution)
    assert "[ok]" in capsys.readouterr().out


@pytest.mark.parametrize("check", [checks.check_fql_distillation_loss, checks.check_select_weight])
def test_a_blank_exercise_fails_with_not_implemented(check):
    with pytest.raises(CheckFailed, match="not implemented yet"):
        check(blank)


@pytest.mark.parametrize(
    "check, wrong, phrase",
    [
        (checks.check_fql_distillation_loss, distill_no_stop_gradient, "stop_gradient"),
        (checks.check_fql_distillation_loss, distill_clipped_policy, "policy's actions are clipped"),
        (checks.check_fql_distillation_loss, distill_onto_noise, "onto the noise"),
        (checks.check_fql_distillation_loss, distill_policy_at_targets, "evaluated at the targets"),
        (checks.check_fql_distillation_loss, distill_without_obs, "obs is None"),
        (checks.check_fql_distillation_loss, distill_old_signature, "missing 1 required positional argument"),
        (checks.check_fql_distillation_loss, distill_summed_coordinates, "summed over the action coordinates"),
        (checks.check_fql_distillation_loss, distill_per_sample, "single number"),
        (checks.check_fql_distillation_loss, distill_numpy, "jax.grad"),
        (checks.check_select_weight, select_on_test, "on the \\*test\\* scores"),
        (checks.check_select_weight, select_reports_heldout, "held-out score at the chosen w"),
        (checks.check_select_weight, select_returns_index, "index"),
        (checks.check_select_weight, select_best_single, "single\\* held-out repetition"),
        (checks.check_select_weight, select_first_on_tie, "smallest tied w"),
        (checks.check_select_weight, select_best_test_overall, "best mean test score over all weights"),
        (checks.check_select_weight, select_single_value, "pair"),
    ],
)
def test_mistakes_are_named(check, wrong, phrase):
    with pytest.raises(CheckFailed, match=phrase):
        check(wrong)


def test_reference_distillation_loss_matches_a_hand_computation():
    """The reference (qgf_lite.fql) against a plain numpy loss, with flow targets from a numpy Euler loop that
    leave [-1, 1] before the clip, and a policy that depends on the state."""
    velocity, policy = toy_velocity(3), toy_policy(3)
    generator = np.random.default_rng(0)
    obs = jnp.asarray(generator.normal(size=(5, 2)), jnp.float32)
    noise = jnp.asarray(generator.normal(scale=2.0, size=(5, 3)), jnp.float32)
    a = np.asarray(noise, np.float64)
    for k in range(4):
        a = a + np.asarray(velocity(obs, jnp.asarray(a, jnp.float32), jnp.full((5,), k / 4)), np.float64) / 4
    assert np.any(np.abs(a) > 1)  # the clip matters on this input
    targets = flow_targets(velocity, obs, noise, steps=4)
    np.testing.assert_allclose(np.asarray(targets), np.clip(a, -1, 1), rtol=1e-4, atol=1e-5)
    want = np.mean((np.asarray(policy(obs, noise), np.float64) - np.clip(a, -1, 1)) ** 2)
    np.testing.assert_allclose(float(reference_fql_distillation_loss(policy, obs, noise, targets)), want, rtol=1e-4)
    # The state matters: the same noise in other states gives other actions.
    assert not np.allclose(policy(obs, noise), policy(-obs, noise))
