"""QGF on the ring bandit, measured with the true reward; plus the toy-experiment helpers it relies on.

One small BC flow + critic is trained once for the module (qgf_lite.toy.experiments, about 1500 steps).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qgf_lite import SamplerSpec, guided_sample, sampler_cost, toy
from qgf_lite.toy import experiments as tx

WEIGHT = 1.0
NUM = 1000


@pytest.fixture(scope="module")
def setup():
    return tx.train_toy_bandit("ring", num_steps=1500, num_samples=10_000, seed=0, progress=False)


def true_reward(setup, actions):
    """Mean of the bandit's true reward, computed here from the problem definition (not via metrics)."""
    centers = jnp.asarray(setup.problem.best_points)
    sq = jnp.sum((actions[:, None, :] - centers[None]) ** 2, axis=-1)
    return float(jnp.mean(jnp.sum(jnp.exp(-0.5 * sq / 0.3**2), axis=-1)))


def test_qgf_raises_mean_reward_over_bc_on_every_sampling_seed(setup):
    bc_spec, qgf_spec = SamplerSpec("bc"), SamplerSpec("guided", weight=WEIGHT)
    gains = []
    for seed in range(4):
        bc = tx.draw_samples(setup, bc_spec, seed, NUM)
        qgf = tx.draw_samples(setup, qgf_spec, seed, NUM)
        gains.append(true_reward(setup, qgf) - true_reward(setup, bc))
        in_best_bc = float(jnp.mean(setup.problem.in_best_region(None, bc)))
        in_best_qgf = float(jnp.mean(setup.problem.in_best_region(None, qgf)))
        assert in_best_qgf > 3 * in_best_bc, (seed, in_best_bc, in_best_qgf)
    # The behaviour's mean reward is about 0.17 and the peak is 1: a gain of 0.25 is a clear improvement.
    assert min(gains) > 0.25, gains


def test_qgf_beats_noisy_gradient_and_best_of_n_at_equal_compute(setup):
    qgf = SamplerSpec("guided", weight=WEIGHT)
    noisy = SamplerSpec("guided", weight=WEIGHT, mode="noisy")
    bfn = SamplerSpec("best_of_n", n=tx.matched_best_of_n(qgf.cost))
    assert qgf.cost == noisy.cost
    assert bfn.cost <= qgf.cost < sampler_cost("best_of_n", steps=10, n=bfn.n + 1)["total"]
    rewards = {
        spec: np.mean([true_reward(setup, tx.draw_samples(setup, spec, seed, NUM)) for seed in range(3)])
        for spec in (qgf, noisy, bfn)
    }
    assert rewards[qgf] > rewards[noisy] + 0.1, rewards
    assert rewards[qgf] > rewards[bfn] + 0.1, rewards


def test_guidance_moves_samples_towards_the_tilted_target(setup):
    """Against pi_ref exp(w Q): a mildly guided QGF sampler gets closer than BC (the w = 0 sampler) does.

    QGF's weight is not calibrated to the target's w (on this toy it acts roughly 10x stronger), so the
    sampler's weight is scanned over a small grid, with shared noise and paired projections.
    """
    target = tx.tilted_target_samples(setup, WEIGHT, jax.random.PRNGKey(3), NUM)
    key = jax.random.PRNGKey(5)
    weights = [0.0, 0.05, 0.1, 0.2, 0.3]
    samples = tx.guided_samples_for_weights(setup, weights, jax.random.PRNGKey(4), NUM)
    sws = [tx.score_samples(setup, s, key, target=target)["sw_to_target"] for s in samples]
    assert min(sws[1:]) < 0.9 * sws[0], dict(zip(weights, sws))


# ---------------------------------------------------------------- helpers, against independent computations
def test_training_is_cached_per_setting(setup):
    again = tx.train_toy_bandit("ring", num_steps=1500, num_samples=10_000, seed=0, progress=False)
    assert again is setup


def test_tilted_density_fn_matches_the_grid_density_of_toy(setup):
    grid = toy.Grid2D(size=24)
    density = tx.tilted_density_fn(setup.log_ref, setup.critic, grid)
    for w in (0.0, 1.5):
        want = toy.tilted_density_grid(setup.log_ref, setup.critic, w, grid)
        np.testing.assert_allclose(density(jnp.float32(w)), want, rtol=2e-3, atol=1e-6)
    batched = jax.vmap(density)(jnp.array([0.0, 1.5]))
    np.testing.assert_allclose(float(jnp.sum(batched[1]) * grid.cell_area), 1.0, rtol=1e-4)


def test_one_step_estimates_follow_the_formula(setup):
    noise = jax.random.normal(jax.random.PRNGKey(0), (16, 2))
    _, path = guided_sample(setup.velocity, None, None, noise, steps=4, return_path=True)
    estimates = tx.one_step_estimates(setup.velocity, path)
    assert estimates.shape == (4, 16, 2)
    for k in range(4):
        t = jnp.full((16,), k / 4)
        manual = np.clip(np.asarray(path[k] + (1 - k / 4) * setup.velocity(None, path[k], t)), -1, 1)
        np.testing.assert_allclose(estimates[k], manual, atol=1e-5)
    # The last estimate is one Euler step of size 1/K, i.e. exactly the sampler's final (clipped) output.
    np.testing.assert_allclose(estimates[-1], path[-1], atol=1e-5)


def test_weight_sweep_uses_shared_noise(setup):
    samples = tx.guided_samples_for_weights(setup, [0.0, 0.5], jax.random.PRNGKey(1), 32)
    noise = jax.random.normal(jax.random.PRNGKey(1), (32, 2))
    for w, got in zip([0.0, 0.5], samples):
        want = guided_sample(setup.velocity, setup.critic, None, noise, steps=10, weight=w)
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_matched_best_of_n_and_bad_inputs():
    assert tx.matched_best_of_n(30, 10) == 2 and tx.matched_best_of_n(124, 10) == 11
    with pytest.raises(ValueError, match="budget"):
        tx.matched_best_of_n(5, 10)
    with pytest.raises(ValueError, match="method"):
        SamplerSpec("beam_search")
    with pytest.raises(ValueError, match="mode"):
        SamplerSpec("guided", mode="fast")
    with pytest.raises(ValueError, match="contextual"):
        tx.train_toy_bandit("contextual_ring", num_steps=1)
    with pytest.raises(ValueError, match="obs_dim=0"):
        tx.train_toy_bandit("ring", num_steps=1, config=tx.toy_config(horizon=2))
    with pytest.raises(ValueError, match="weights"):
        tx.guided_samples_for_weights(None, [-1.0], 0, 4)
