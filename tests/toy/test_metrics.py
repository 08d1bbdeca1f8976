"""Tests for qgf_lite.toy.metrics against independent numpy computations and closed forms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qgf_lite import toy
from qgf_lite.toy import metrics


def _gaussian(seed, n, dim=2, shift=0.0, scale=0.3):
    rng = np.random.default_rng(seed)
    x = scale * rng.normal(size=(n, dim))
    x[:, 0] += shift
    return jnp.asarray(x, dtype=jnp.float32)


def _mmd2_numpy(x, y, bandwidths, unbiased):
    """Direct pairwise-difference MMD^2, written independently of the library."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def gram(a, b):
        sq = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.mean([np.exp(-sq / (2 * h * h)) for h in bandwidths], axis=0)

    kxx, kyy, kxy = gram(x, x), gram(y, y), gram(x, y)
    n, m = len(x), len(y)
    if unbiased:
        return (
            (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
        )
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()


def _w1_via_cdfs(x, y):
    """W1 = integral |F(t) - G(t)| dt, from the empirical CDFs on the merged support."""
    support = np.sort(np.concatenate([x, y]))
    f = np.searchsorted(np.sort(x), support[:-1], side="right") / len(x)
    g = np.searchsorted(np.sort(y), support[:-1], side="right") / len(y)
    return np.sum(np.abs(f - g) * np.diff(support))


# ----------------------------------------------------------------- reward / region
def test_mean_reward_and_fraction_in_region_match_numpy():
    problem = toy.make_bandit("ring")
    _, actions = problem.sample(0, 500)
    a = np.asarray(actions)
    expected_reward = np.exp(-((a - [0.7, 0.0]) ** 2).sum(1) / (2 * 0.3**2)).mean()
    expected_fraction = (np.linalg.norm(a - [0.7, 0.0], axis=1) < 0.2).mean()
    assert abs(float(metrics.mean_reward(problem.reward, actions)) - expected_reward) < 1e-5
    assert abs(float(metrics.fraction_in_region(problem.in_best_region, actions)) - expected_fraction) < 1e-6


def test_contextual_metrics_broadcast_a_single_context():
    problem = toy.make_bandit("contextual_ring")
    _, actions = problem.sample(1, 400)
    context = jnp.asarray([0.0, 1.0])
    per_sample = jnp.broadcast_to(context, (400, 2))
    assert float(metrics.mean_reward(problem.reward, actions, context)) == pytest.approx(
        float(metrics.mean_reward(problem.reward, actions, per_sample))
    )
    a = np.asarray(actions)
    in_sector = (np.abs(np.arctan2(a[:, 1], a[:, 0]) - np.pi / 2) < np.pi / 8) & (
        np.abs(np.linalg.norm(a, axis=1) - 0.7) < 0.2
    )
    assert float(metrics.fraction_in_region(problem.in_best_region, actions, context)) == pytest.approx(
        in_sector.mean()
    )


# ----------------------------------------------------------------- MMD
@pytest.mark.parametrize("unbiased", [True, False])
def test_mmd_matches_independent_computation(unbiased):
    x, y = _gaussian(0, 40), _gaussian(1, 55, shift=0.2)
    expected = _mmd2_numpy(x, y, metrics.DEFAULT_BANDWIDTHS, unbiased)
    got = float(metrics.mmd_rbf(x, y, unbiased=unbiased))
    assert got == pytest.approx(expected, rel=1e-3, abs=1e-6)
    single = float(metrics.mmd_rbf(x, y, bandwidths=0.5, unbiased=unbiased))
    assert single == pytest.approx(_mmd2_numpy(x, y, (0.5,), unbiased), rel=1e-3, abs=1e-6)


def test_mmd_is_near_zero_for_same_distribution_and_grows_with_shift():
    x, y = _gaussian(0, 800), _gaussian(1, 800)
    same = float(metrics.mmd_rbf(x, y))
    small_shift = float(metrics.mmd_rbf(x, _gaussian(2, 800, shift=0.2)))
    large_shift = float(metrics.mmd_rbf(x, _gaussian(3, 800, shift=0.8)))
    assert abs(same) < 2e-3
    assert small_shift > 10 * abs(same) + 5e-3
    assert large_shift > small_shift
    assert float(metrics.mmd_rbf(x, y, unbiased=False)) >= 0.0
    assert float(metrics.mmd_rbf(y, x)) == pytest.approx(same, abs=1e-6)


# ----------------------------------------------------------------- Wasserstein
def test_wasserstein_1d_is_exact_for_unequal_sample_sizes():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=7), rng.normal(1.0, 2.0, size=11)
    assert float(metrics.wasserstein_1d(x, y, p=1)) == pytest.approx(_w1_via_cdfs(x, y), rel=1e-4)
    a, b = rng.normal(size=50), rng.normal(size=50)
    w2_sorted = math.sqrt(np.mean((np.sort(a) - np.sort(b)) ** 2))
    assert float(metrics.wasserstein_1d(a, b, p=2)) == pytest.approx(w2_sorted, rel=1e-4)


def test_sliced_wasserstein_equals_closed_form_for_1d_shifted_gaussians():
    # Between N(0, 1) and N(delta, 1), W_1 = W_2 = delta; in 1D every projection is +-1.
    delta = 0.5
    x, y = _gaussian(0, 4000, dim=1, scale=1.0), _gaussian(1, 3000, dim=1, scale=1.0, shift=delta)
    key = jax.random.PRNGKey(0)
    assert float(metrics.sliced_wasserstein(x, y, key, p=2)) == pytest.approx(delta, abs=0.06)
    assert float(metrics.sliced_wasserstein(x, y, key, p=1)) == pytest.approx(delta, abs=0.06)


def test_sliced_wasserstein_for_2d_shift_matches_projection_average():
    # Shift delta along x: the projection on theta is shifted by delta cos(theta), so SW_2 = delta / sqrt(2).
    delta = 0.8
    x, y = _gaussian(0, 2000), _gaussian(1, 2000, shift=delta)
    sw = float(metrics.sliced_wasserstein(x, y, 3, num_projections=500))
    assert sw == pytest.approx(delta / math.sqrt(2), abs=0.04)
    same = float(metrics.sliced_wasserstein(x, _gaussian(2, 2000), 3, num_projections=500))
    assert same < 0.05 < sw


def test_sliced_wasserstein_is_deterministic_given_key():
    x, y = _gaussian(0, 200), _gaussian(1, 150, shift=0.3)
    a = float(metrics.sliced_wasserstein(x, y, jax.random.PRNGKey(5), num_projections=8))
    b = float(metrics.sliced_wasserstein(x, y, jax.random.PRNGKey(5), num_projections=8))
    c = float(metrics.sliced_wasserstein(x, y, jax.random.PRNGKey(6), num_projections=8))
    assert a == b and a != c


def test_metrics_work_under_jit():
    x, y = _gaussian(0, 100), _gaussian(1, 120, shift=0.3)
    key = jax.random.PRNGKey(1)
    jitted_mmd = jax.jit(lambda a, b: metrics.mmd_rbf(a, b))
    jitted_sw = jax.jit(lambda a, b, k: metrics.sliced_wasserstein(a, b, k, num_projections=16))
    assert float(jitted_mmd(x, y)) == pytest.approx(float(metrics.mmd_rbf(x, y)), rel=1e-5)
    assert float(jitted_sw(x, y, key)) == pytest.approx(
        float(metrics.sliced_wasserstein(x, y, key, num_projections=16)), rel=1e-5
    )


# ----------------------------------------------------------------- comparison helper
def test_compare_samples_prefers_the_matching_distribution():
    problem = toy.make_bandit("ring")
    grid = toy.Grid2D(-1.0, 1.0, 64)
    density = toy.tilted_density_grid(problem.log_density, problem.reward, 5.0, grid)
    target = toy.sample_grid_density(0, density, grid, 600)
    guided_like = toy.sample_grid_density(1, density, grid, 600)
    _, behaviour = problem.sample(2, 600)
    scores = metrics.compare_samples(
        guided_like,
        0,
        target=target,
        behaviour=behaviour,
        reward_fn=problem.reward,
        region_fn=problem.in_best_region,
        num_projections=64,
    )
    assert set(scores) == {
        "mean_reward",
        "frac_best_region",
        "mmd_to_target",
        "sw_to_target",
        "mmd_to_behaviour",
        "sw_to_behaviour",
    }
    assert scores["mmd_to_target"] < scores["mmd_to_behaviour"] / 5
    assert scores["sw_to_target"] < scores["sw_to_behaviour"] / 2
    assert scores["frac_best_region"] == pytest.approx(toy.grid_mass(density, grid, problem.in_best_region), abs=0.06)
    assert metrics.compare_samples(guided_like, 0) == {}


# ----------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors():
    good = _gaussian(0, 10)
    nan = good.at[3, 1].set(jnp.nan)
    with pytest.raises(ValueError, match="NaN"):
        metrics.mmd_rbf(good, nan)
    with pytest.raises(ValueError, match="NaN"):
        metrics.sliced_wasserstein(nan, good, 0)
    with pytest.raises(ValueError, match="shape"):
        metrics.mmd_rbf(jnp.zeros(10), good)
    with pytest.raises(ValueError, match="dimension"):
        metrics.sliced_wasserstein(good, jnp.zeros((10, 3)), 0)
    with pytest.raises(ValueError, match="at least 2"):
        metrics.mmd_rbf(good[:1], good)
    with pytest.raises(ValueError, match="bandwidths"):
        metrics.mmd_rbf(good, good, bandwidths=(0.1, -1.0))
    with pytest.raises(ValueError, match="p"):
        metrics.wasserstein_1d(good[:, 0], good[:, 1], p=0.5)
    with pytest.raises(ValueError, match="num_projections"):
        metrics.sliced_wasserstein(good, good, 0, num_projections=0)
    with pytest.raises(TypeError, match="key"):
        metrics.sliced_wasserstein(good, good, "key")
    with pytest.raises(ValueError, match="obs"):
        metrics.mean_reward(toy.make_bandit("ring").reward, good, jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="target"):
        metrics.compare_samples(good, 0, target=jnp.zeros((5, 3)))
