"""The trainer (docs/algorithm.md §3): losses fall, the policy never sees the critic, multi-seed vmap and chunked scans
equal plain single runs, and a stateless bandit trains."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from training_problem import TINY, assert_trees_close, training_problem

from qgf_lite.data import make_dataset, sample_chunk_batch
from qgf_lite.flow import euler_sample
from qgf_lite.training import (
    QGFConfig,
    critic_fn,
    fit,
    init_train_state,
    init_train_states,
    train_step,
    velocity_fn,
)

# Compiling dominates these tests: one jitted init and one jitted step are shared by all of them, and every
# fit of the main problem uses chunks of 20 or 40 steps so only those two scans are compiled.
init_state = jax.jit(init_train_state, static_argnums=0)
jitted_train_step = jax.jit(train_step, static_argnums=0)


def state_of_seed(states, i):
    return jax.tree_util.tree_map(lambda leaf: leaf[i], states)


@pytest.fixture(scope="module")
def problem():
    return training_problem()


@pytest.fixture(scope="module")
def single_runs(problem):
    """Three separately trained seeds, 40 steps each, in one compiled chunk."""
    config, dataset = problem
    runs = [
        fit(config, init_state(config, jax.random.PRNGKey(s)), dataset, 40, chunk_size=40, progress=False)
        for s in range(3)
    ]
    return runs


@pytest.fixture(scope="module")
def multi_seed_states(problem):
    # Jitted only to spare the eager op-by-op compiles; the values are those of the plain call.
    return jax.jit(init_train_states, static_argnums=(0, 1))(problem[0], (0, 1, 2))


# ----------------------------------------------------------------- learning
def test_train_step_decreases_the_three_losses(problem):
    config, dataset = problem
    state = init_state(config, jax.random.PRNGKey(0))
    state, history = fit(config, state, dataset, 400, chunk_size=20, progress=False)
    assert [h["step"] for h in history] == list(range(20, 401, 20))
    assert int(state.step) == 400
    first, last = history[0], history[-1]
    for name in ("policy_loss", "critic_loss", "value_loss"):
        assert np.isfinite(last[name])
        assert last[name] < 0.6 * first[name], (name, first[name], last[name])


def test_policy_update_ignores_critic_and_critic_update_ignores_policy(problem):
    config, dataset = problem
    state = init_state(config, jax.random.PRNGKey(1))
    batch = sample_chunk_batch(dataset, jax.random.PRNGKey(2), config.batch_size, config.horizon, config.discount)
    step = jitted_train_step

    def perturb(tree, seed):
        rng = np.random.default_rng(seed)
        return jax.tree_util.tree_map(lambda x: x + 0.5 * rng.normal(size=x.shape).astype(np.float32), tree)

    base, _ = step(config, state, batch)
    other_critic, _ = step(
        config,
        state.replace(
            critic_params=perturb(state.critic_params, 3),
            target_critic_params=perturb(state.target_critic_params, 4),
            value_params=perturb(state.value_params, 5),
        ),
        batch,
    )
    other_policy, _ = step(config, state.replace(policy_params=perturb(state.policy_params, 6)), batch)

    # The policy update is a function of the policy and the batch only...
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves(base.policy_params), leaves(other_critic.policy_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # ...and the critic/value updates never look at the policy.
    for field in ("critic_params", "value_params", "target_critic_params"):
        for a, b in zip(
            jax.tree_util.tree_leaves(getattr(base, field)), jax.tree_util.tree_leaves(getattr(other_policy, field))
        ):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The perturbation is visible where it should be (otherwise the test above proves nothing).
    moved = [
        np.abs(np.asarray(a) - np.asarray(b)).max()
        for a, b in zip(
            jax.tree_util.tree_leaves(base.critic_params), jax.tree_util.tree_leaves(other_critic.critic_params)
        )
    ]
    assert max(moved) > 0.1


def test_target_critic_is_polyak_average(problem):
    config, dataset = problem
    state = init_state(config, jax.random.PRNGKey(1))
    state = state.replace(target_critic_params=jax.tree_util.tree_map(lambda x: x + 1.0, state.target_critic_params))
    batch = sample_chunk_batch(dataset, jax.random.PRNGKey(2), config.batch_size, config.horizon, config.discount)
    new, _ = jitted_train_step(config, state, batch)
    rate = config.target_update_rate
    expected = jax.tree_util.tree_map(
        lambda t, p: (1 - rate) * t + rate * p, state.target_critic_params, new.critic_params
    )
    assert_trees_close(new.target_critic_params, expected, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------- multi-seed, chunking
def test_init_train_states_equal_single_inits(problem, multi_seed_states):
    config, _ = problem
    states = multi_seed_states
    for s in range(3):
        single = init_state(config, jax.random.PRNGKey(s))
        for a, b in zip(jax.tree_util.tree_leaves(state_of_seed(states, s)), jax.tree_util.tree_leaves(single)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_vmapped_multi_seed_fit_equals_separate_runs(problem, single_runs, multi_seed_states):
    config, dataset = problem
    states, history = fit(config, multi_seed_states, dataset, 40, chunk_size=40, progress=False)
    assert len(history[0]["critic_loss"]) == 3  # one value per seed
    for s, (single_state, single_history) in enumerate(single_runs):
        assert_trees_close(state_of_seed(states, s), single_state, rtol=1e-5, atol=1e-6)
        for name in ("policy_loss", "critic_loss", "value_loss"):
            np.testing.assert_allclose(history[0][name][s], single_history[0][name], rtol=1e-5)
    # Different seeds really are different runs.
    assert abs(history[0]["policy_loss"][0] - history[0]["policy_loss"][1]) > 1e-4


def test_fit_in_chunks_equals_one_chunk(problem, single_runs):
    config, dataset = problem
    chunked, history = fit(
        config, init_state(config, jax.random.PRNGKey(0)), dataset, 40, chunk_size=20, progress=False
    )
    assert [h["step"] for h in history] == [20, 40]
    one_chunk, one_history = single_runs[0]
    # The PRNG key travels in the state, so splitting the scan changes nothing (bit-exact on CPU).
    assert_trees_close(chunked, one_chunk, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.mean([h["critic_loss"] for h in history]), one_history[0]["critic_loss"], rtol=1e-5)


def test_fit_callback_can_stop_early(problem):
    config, dataset = problem
    seen = []

    def stop_after_first(state, record):
        seen.append(record["step"])
        return True

    state, history = fit(
        config,
        init_state(config, jax.random.PRNGKey(0)),
        dataset,
        60,
        chunk_size=20,
        progress=False,
        callback=stop_after_first,
    )
    assert seen == [20] and len(history) == 1 and int(state.step) == 20


# ----------------------------------------------------------------- bandit (no state)
BANDIT_BEST = np.array([0.5, -0.5], np.float32)


@pytest.fixture(scope="module")
def bandit():
    rng = np.random.default_rng(1)
    actions = rng.uniform(-1, 1, size=(1024, 2)).astype(np.float32)
    rewards = -np.sum((actions - BANDIT_BEST) ** 2, axis=1)
    config = QGFConfig(obs_dim=0, action_dim=2, horizon=1, batch_size=64, learning_rate=3e-3, **TINY)
    return config, actions, rewards


def test_bandit_without_observations_trains(bandit):
    config, actions, rewards = bandit
    dataset = make_dataset(actions, rewards)
    assert dataset.obs_dim == 0
    state, history = fit(
        config, init_state(config, jax.random.PRNGKey(0)), dataset, 300, chunk_size=150, progress=False
    )
    assert history[-1]["critic_loss"] < 0.5 * history[0]["critic_loss"]
    critic = critic_fn(config, state.critic_params)
    q = np.asarray(critic(None, jnp.asarray([BANDIT_BEST, [-0.9, 0.9], [0.9, 0.9]])))
    assert q[0] > q[1] + 0.5 and q[0] > q[2] + 0.2  # the critic ranks actions like the reward does
    samples = euler_sample(
        velocity_fn(config, state.policy_params), None, jax.random.normal(jax.random.PRNGKey(1), (256, 2))
    )
    assert samples.shape == (256, 2) and np.all(np.isfinite(np.asarray(samples)))

    # Width-0 observations with the same episode flags are the same problem, step for step.
    empty = np.zeros((len(actions), 0), np.float32)
    width_zero = make_dataset(actions, rewards, empty, np.ones(len(actions)), np.zeros(len(actions)), empty)
    state_zero, _ = fit(
        config, init_state(config, jax.random.PRNGKey(0)), width_zero, 300, chunk_size=150, progress=False
    )
    assert_trees_close(state_zero, state, rtol=1e-6, atol=1e-6)
