"""Tests for qgf_lite.toy: bandit data, rewards, tilted grid densities and the point_goal task."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qgf_lite import toy

PLAIN_BANDITS = ("ring", "moons", "checkerboard", "spiral")


def _distance_to_curve(points: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """Distance of each point to a densely sampled polyline (nearest vertex)."""
    return np.sqrt(((points[:, None, :] - curve[None]) ** 2).sum(-1)).min(1)


# ----------------------------------------------------------------- sampling
@pytest.mark.parametrize("name", toy.BANDIT_NAMES)
def test_bandit_sampling_is_deterministic_given_seed(name):
    problem = toy.make_bandit(name)
    obs_a, actions_a = problem.sample(7, 300)
    obs_b, actions_b = problem.sample(jax.random.PRNGKey(7), 300)
    _, actions_c = problem.sample(8, 300)
    np.testing.assert_array_equal(np.asarray(actions_a), np.asarray(actions_b))
    assert not np.allclose(np.asarray(actions_a), np.asarray(actions_c))
    assert actions_a.shape == (300, 2)
    if problem.contextual:
        np.testing.assert_array_equal(np.asarray(obs_a), np.asarray(obs_b))
        assert obs_a.shape == (300, problem.obs_dim)
    else:
        assert obs_a is None


@pytest.mark.parametrize("name", PLAIN_BANDITS)
def test_bandit_data_lies_roughly_inside_unit_box(name):
    _, actions = toy.make_bandit(name).sample(0, 4000)
    inside = np.all(np.abs(np.asarray(actions)) <= 1.0, axis=1)
    assert inside.mean() > 0.995


def test_ring_samples_cluster_on_eight_modes():
    actions = np.asarray(toy.sample_ring(0, 4000))
    angles = 2 * np.pi * np.arange(8) / 8
    means = 0.7 * np.stack([np.cos(angles), np.sin(angles)], 1)
    dist = np.sqrt(((actions[:, None] - means[None]) ** 2).sum(-1))
    nearest = dist.argmin(1)
    assert np.mean(dist.min(1) < 4 * 0.08) > 0.998
    np.testing.assert_allclose(np.bincount(nearest, minlength=8) / 4000, 1 / 8, atol=0.025)
    # multimodal, not a blob: almost nothing near the centre of the ring
    assert np.mean(np.linalg.norm(actions, axis=1) < 0.35) < 0.001


def test_moons_samples_lie_on_two_half_circles():
    actions = np.asarray(toy.sample_moons(1, 3000, noise=0.04))
    t = np.linspace(0, np.pi, 2000)
    upper = 0.55 * (np.stack([np.cos(t), np.sin(t)], 1) - [0.5, 0.25])
    lower = 0.55 * (np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1) - [0.5, 0.25])
    d_upper, d_lower = _distance_to_curve(actions, upper), _distance_to_curve(actions, lower)
    assert np.mean(np.minimum(d_upper, d_lower) < 4 * 0.04) > 0.998
    assert abs(np.mean(d_lower < d_upper) - 0.5) < 0.04


def test_checkerboard_samples_fill_black_squares_only():
    actions = np.asarray(toy.sample_checkerboard(2, 4000, cells=4, extent=0.9))
    index = np.floor((actions + 0.9) / 0.45).astype(int)
    assert np.all((index >= 0) & (index < 4))
    assert np.all(index.sum(1) % 2 == 0)
    counts = np.bincount(index[:, 1] * 4 + index[:, 0], minlength=16)
    occupied = counts[counts > 0] / 4000
    assert occupied.size == 8
    np.testing.assert_allclose(occupied, 1 / 8, atol=0.025)


def test_spiral_samples_follow_the_curve_and_wind_around():
    actions = np.asarray(toy.sample_spiral(3, 3000, turns=1.5, noise=0.03))
    t = np.linspace(0, 1, 4000)
    curve = (0.15 + 0.7 * t)[:, None] * np.stack([np.cos(3 * np.pi * t), np.sin(3 * np.pi * t)], 1)
    assert np.mean(_distance_to_curve(actions, curve) < 4 * 0.03) > 0.998
    angle_bins = np.histogram(np.arctan2(actions[:, 1], actions[:, 0]), bins=8, range=(-np.pi, np.pi))[0]
    assert np.all(angle_bins > 100)


# ----------------------------------------------------------------- rewards
@pytest.mark.parametrize("name", toy.BANDIT_NAMES)
def test_best_region_is_rare_but_present_in_behaviour_data(name):
    problem = toy.make_bandit(name)
    obs, actions = problem.sample(0, 8000)
    fraction = float(jnp.mean(problem.in_best_region(obs, actions)))
    assert 0.01 < fraction < 0.25


@pytest.mark.parametrize("name", toy.BANDIT_NAMES)
def test_reward_is_smooth_and_higher_inside_best_region(name):
    problem = toy.make_bandit(name)
    obs, actions = problem.sample(4, 4000)
    rewards = problem.reward(obs, actions)
    assert rewards.shape == (4000,)
    inside = np.asarray(problem.in_best_region(obs, actions))
    assert rewards[inside].mean() > 2 * rewards[~inside].mean()
    grads = jax.grad(lambda a: jnp.sum(problem.reward(obs, a)))(actions)
    assert grads.shape == actions.shape and bool(jnp.all(jnp.isfinite(grads)))
    # gradient ascent on the reward moves actions towards the best region
    moved = actions + 0.05 * grads / (jnp.linalg.norm(grads, axis=1, keepdims=True) + 1e-8)
    assert float(jnp.mean(problem.reward(obs, moved))) > float(jnp.mean(rewards))


def test_ring_reward_can_target_two_modes():
    problem = toy.ring_bandit(target_modes=(0, 4))
    np.testing.assert_allclose(np.asarray(problem.best_points), [[0.7, 0.0], [-0.7, 0.0]], atol=1e-6)
    peaks = problem.reward(None, jnp.asarray(problem.best_points))
    np.testing.assert_allclose(np.asarray(peaks), 1.0, atol=1e-4)
    _, actions = problem.sample(0, 8000)
    assert 0.18 < float(jnp.mean(problem.in_best_region(None, actions))) < 0.32


def test_contextual_reward_peak_follows_the_context():
    problem = toy.make_bandit("contextual_ring")
    obs, _ = problem.sample(0, 100)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(obs), axis=1), 1.0, atol=1e-5)
    phis = np.array([0.3, 2.0, 4.0])
    contexts = jnp.asarray(np.stack([np.cos(phis), np.sin(phis)], 1))
    at_target = problem.reward(contexts, 0.7 * contexts)
    opposite = problem.reward(contexts, -0.7 * contexts)
    np.testing.assert_allclose(np.asarray(at_target), 1.0, atol=1e-5)
    assert np.all(np.asarray(opposite) < 0.01)
    assert np.all(np.asarray(problem.in_best_region(contexts, 0.7 * contexts)))
    assert not np.any(np.asarray(problem.in_best_region(contexts, -0.7 * contexts)))


# ----------------------------------------------------------------- densities
def test_ring_log_density_matches_mixture_formula():
    points = np.random.default_rng(0).uniform(-1, 1, size=(50, 2))
    angles = 2 * np.pi * np.arange(8) / 8
    means = 0.7 * np.stack([np.cos(angles), np.sin(angles)], 1)
    sq = ((points[:, None] - means[None]) ** 2).sum(-1)
    expected = np.log(np.mean(np.exp(-sq / (2 * 0.08**2)) / (2 * np.pi * 0.08**2), axis=1) + 1e-300)
    got = np.asarray(toy.ring_log_density(jnp.asarray(points)))
    finite = expected > -80
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-4, atol=1e-4)


def test_ring_density_integrates_to_one_and_matches_histogram():
    grid = toy.Grid2D(-1.0, 1.0, 128)
    density = np.exp(np.asarray(toy.ring_log_density(grid.points))).reshape(128, 128)
    assert abs(density.sum() * grid.cell_area - 1.0) < 2e-3
    # coarse 16 x 16 bins: analytic mass per bin versus a histogram of samples
    bin_mass = density.reshape(16, 8, 16, 8).sum(axis=(1, 3)) * grid.cell_area
    actions = np.asarray(toy.sample_ring(5, 40000))
    hist, _, _ = np.histogram2d(actions[:, 1], actions[:, 0], bins=16, range=[[-1, 1], [-1, 1]])
    total_variation = 0.5 * np.abs(hist / 40000 - bin_mass).sum()
    assert total_variation < 0.03


def test_checkerboard_log_density_integrates_to_one():
    grid = toy.Grid2D(-1.0, 1.0, 160)
    density = np.exp(np.asarray(toy.checkerboard_log_density(grid.points)))
    assert abs(density.sum() * grid.cell_area - 1.0) < 1e-3


def test_tilted_density_with_zero_weight_is_the_reference():
    problem = toy.make_bandit("ring")
    grid = toy.Grid2D(-1.0, 1.0, 64)
    tilted = np.asarray(toy.tilted_density_grid(problem.log_density, problem.reward, 0.0, grid))
    reference = np.exp(np.asarray(toy.ring_log_density(grid.points))).reshape(64, 64)
    reference /= reference.sum() * grid.cell_area
    np.testing.assert_allclose(tilted, reference, rtol=1e-4, atol=1e-6)


def test_tilted_density_grid_layout_is_row_y_column_x():
    problem = toy.make_bandit("ring")  # reward peaks at the mode (0.7, 0)
    grid = toy.Grid2D(-1.0, 1.0, 64)
    tilted = np.asarray(toy.tilted_density_grid(problem.log_density, problem.reward, 10.0, grid))
    row, col = np.unravel_index(np.argmax(tilted), tilted.shape)
    centers = np.asarray(grid.centers)
    assert abs(centers[col] - 0.7) < 0.05 and abs(centers[row]) < 0.05


def test_tilted_best_region_mass_grows_with_weight():
    problem = toy.make_bandit("ring")
    grid = toy.Grid2D(-1.0, 1.0, 96)
    weights = [0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0]
    masses = [
        toy.grid_mass(
            toy.tilted_density_grid(problem.log_density, problem.reward, w, grid), grid, problem.in_best_region
        )
        for w in weights
    ]
    assert np.all(np.diff(masses) > 0)
    assert abs(masses[0] - 0.12) < 0.02
    assert masses[-2] > 0.9


def test_tilted_mean_reward_matches_importance_weighting_of_behaviour_samples():
    problem = toy.make_bandit("ring")
    grid = toy.Grid2D(-1.0, 1.0, 128)
    _, actions = problem.sample(11, 40000)
    rewards = np.asarray(problem.reward(None, actions), dtype=np.float64)
    for w in (2.0, 6.0):
        density = np.asarray(toy.tilted_density_grid(problem.log_density, problem.reward, w, grid)).ravel()
        grid_mean = np.sum(density * np.asarray(problem.reward(None, grid.points))) * grid.cell_area
        weights = np.exp(w * (rewards - rewards.max()))
        assert abs(grid_mean - np.sum(weights * rewards) / weights.sum()) < 0.02


def test_samples_from_grid_density_reproduce_its_masses():
    problem = toy.make_bandit("ring")
    grid = toy.Grid2D(-1.0, 1.0, 64)
    density = toy.tilted_density_grid(problem.log_density, problem.reward, 3.0, grid)
    samples = toy.sample_grid_density(0, density, grid, 20000)
    again = toy.sample_grid_density(0, density, grid, 20000)
    np.testing.assert_array_equal(np.asarray(samples), np.asarray(again))
    assert samples.shape == (20000, 2) and float(jnp.max(jnp.abs(samples))) <= 1.0
    expected = toy.grid_mass(density, grid, problem.in_best_region)
    assert abs(float(jnp.mean(problem.in_best_region(None, samples))) - expected) < 0.03
    hist, _, _ = np.histogram2d(np.asarray(samples[:, 1]), np.asarray(samples[:, 0]), bins=8, range=[[-1, 1], [-1, 1]])
    bin_mass = np.asarray(density).reshape(8, 8, 8, 8).sum(axis=(1, 3)) * grid.cell_area
    assert 0.5 * np.abs(hist / 20000 - bin_mass).sum() < 0.03


def test_kde_fallback_approximates_the_analytic_ring_density():
    grid = toy.Grid2D(-1.0, 1.0, 48)
    problem = toy.make_bandit("ring")
    _, actions = problem.sample(3, 3000)
    from_kde = np.asarray(toy.tilted_density_grid(actions, problem.reward, 0.0, grid))
    exact = np.asarray(toy.tilted_density_grid(problem.log_density, problem.reward, 0.0, grid))
    assert 0.5 * np.abs(from_kde - exact).sum() * grid.cell_area < 0.2
    log_kde = toy.kde_log_density(actions, bandwidth=0.05)(jnp.asarray([[0.7, 0.0], [0.0, 0.0]]))
    assert float(log_kde[0]) > float(log_kde[1]) + 5  # a mode versus the empty centre


def test_contextual_tilted_density_moves_mass_to_the_context_sector():
    problem = toy.make_bandit("contextual_ring")
    grid = toy.Grid2D(-1.0, 1.0, 64)
    for phi in (0.0, math.pi / 8, 2.5):
        context = jnp.asarray([math.cos(phi), math.sin(phi)])
        masses = [
            toy.grid_mass(
                toy.tilted_density_grid(problem.log_density, problem.reward, w, grid, obs=context),
                grid,
                problem.in_best_region,
                obs=context,
            )
            for w in (0.0, 2.0, 5.0, 10.0)
        ]
        assert masses[0] < 0.2 and np.all(np.diff(masses) > 0) and masses[-1] > 0.8


# ----------------------------------------------------------------- point_goal
def test_point_goal_dataset_is_deterministic_and_consistent():
    config = toy.PointGoalConfig()
    data = toy.make_point_goal_dataset(0, num_episodes=60, config=config)
    again = toy.make_point_goal_dataset(0, num_episodes=60, config=config)
    other = toy.make_point_goal_dataset(1, num_episodes=60, config=config)
    for key in ("observations", "actions", "rewards", "terminals", "masks", "next_observations"):
        np.testing.assert_array_equal(data[key], again[key])
    assert data["actions"].shape != other["actions"].shape or not np.allclose(data["actions"], other["actions"])

    obs, act, nxt = data["observations"], data["actions"], data["next_observations"]
    n = obs.shape[0]
    assert act.shape == (n, 2) and nxt.shape == (n, 2)
    assert data["rewards"].shape == data["terminals"].shape == data["masks"].shape == (n,)
    assert data["terminals"].sum() == 60 and data["terminals"][-1] == 1
    continuing = data["terminals"][:-1] == 0
    np.testing.assert_allclose(nxt[:-1][continuing], obs[1:][continuing])
    # episode lengths never exceed the time limit
    ends = np.flatnonzero(data["terminals"])
    lengths = np.diff(np.concatenate([[-1], ends]))
    assert lengths.max() <= config.max_steps
    # goal reached <=> reward 0 <=> mask 0, checked against the positions themselves
    reached = np.linalg.norm(nxt - np.asarray(config.goal), axis=1) < config.goal_radius
    np.testing.assert_array_equal(data["masks"] == 0, reached)
    np.testing.assert_array_equal(data["rewards"], np.where(reached, 0.0, -1.0))
    assert np.all(data["terminals"][reached] == 1)
    # free moves follow x' = x + 0.1 * a; nothing ever ends inside the obstacle
    free = np.linalg.norm(obs + 0.1 * act, axis=1) > config.obstacle_radius + 1e-3
    np.testing.assert_allclose(nxt[free], np.clip(obs + 0.1 * act, -1, 1)[free], atol=1e-5)
    assert np.all(np.linalg.norm(nxt, axis=1) >= config.obstacle_radius - 1e-5)


def test_point_goal_behaviour_is_mixed_quality():
    data = toy.make_point_goal_dataset(3, num_episodes=150)
    success_rate = np.sum(data["masks"] == 0) / data["terminals"].sum()
    assert 0.25 < success_rate < 0.85
    ends = np.flatnonzero(data["terminals"])
    lengths = np.diff(np.concatenate([[-1], ends]))
    assert lengths.min() <= 20 and lengths.max() == toy.PointGoalConfig().max_steps


def _waypoint_chunk_policy(chunk_len):
    """A clean scripted policy: go over the obstacle, then to the goal (open loop per chunk)."""

    @jax.jit
    def policy(obs, key):
        del key
        positions, actions = obs, []
        for _ in range(chunk_len):
            target = jnp.where(positions[:, :1] > -0.05, jnp.array([0.7, 0.0]), jnp.array([0.0, 0.55]))
            delta = target - positions
            step = delta / jnp.maximum(jnp.linalg.norm(delta, axis=1, keepdims=True), 1e-6)
            actions.append(step)
            positions = positions + 0.1 * step
        return jnp.concatenate(actions, axis=1)

    return policy


def test_evaluate_point_goal_separates_good_and_bad_policies():
    good = toy.evaluate_point_goal(_waypoint_chunk_policy(5), 0, num_episodes=16, chunk_len=5)
    straight = toy.evaluate_point_goal(
        jax.jit(lambda obs, key: jnp.tile(jnp.array([1.0, 0.0]), (obs.shape[0], 5))), 0, num_episodes=16, chunk_len=5
    )
    assert good["success_rate"] == 1.0 and good["mean_return"] > -25
    assert straight["success_rate"] == 0.0 and straight["mean_return"] == -25
    assert good["trajectories"].shape == (16, 26, 2)
    with pytest.raises(ValueError, match="policy_fn"):
        toy.evaluate_point_goal(lambda obs, key: jnp.zeros((obs.shape[0], 3)), 0, num_episodes=4, chunk_len=5)
    with pytest.raises(ValueError, match="NaN"):
        toy.evaluate_point_goal(lambda obs, key: jnp.full((obs.shape[0], 10), jnp.nan), 0, num_episodes=4, chunk_len=5)


# ----------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors():
    ring = toy.make_bandit("ring")
    with pytest.raises(ValueError, match="unknown bandit"):
        toy.make_bandit("donut")
    with pytest.raises(ValueError, match="`n`"):
        ring.sample(0, 0)
    with pytest.raises(TypeError, match="key"):
        toy.sample_ring("seed", 10)
    with pytest.raises(ValueError, match="seed"):
        toy.sample_ring(-1, 10)
    with pytest.raises(ValueError, match="target_modes"):
        toy.ring_bandit(target_modes=(9,))
    with pytest.raises(ValueError, match="actions"):
        ring.reward(None, jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="obs"):
        toy.make_bandit("contextual_ring").reward(None, jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="weight"):
        toy.tilted_density_grid(ring.log_density, ring.reward, -1.0)
    with pytest.raises(ValueError, match="samples"):
        toy.tilted_density_grid(jnp.full((10, 2), jnp.nan), ring.reward, 1.0)
    with pytest.raises(ValueError, match="grid range"):
        toy.tilted_density_grid(toy.checkerboard_log_density, ring.reward, 1.0, toy.Grid2D(2.0, 3.0, 8))
    with pytest.raises(ValueError, match="Grid2D"):
        toy.Grid2D(1.0, -1.0)
    with pytest.raises(ValueError, match="density"):
        toy.sample_grid_density(0, jnp.ones((5, 5)), toy.Grid2D(size=4), 10)
    with pytest.raises(ValueError, match="seed"):
        toy.make_point_goal_dataset(-3)
