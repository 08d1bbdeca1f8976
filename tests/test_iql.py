"""IQL with action chunks (docs/algorithm.md §3): expectiles, chunk returns, losses, Polyak averaging, and chunk sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qgf_lite.data import make_dataset, sample_chunk_batch
from qgf_lite.iql import (
    chunk_discount,
    chunk_returns,
    critic_loss,
    expectile_loss,
    polyak_update,
    q_target,
    value_loss,
)


# ----------------------------------------------------------------- expectile
def analytic_expectile(values, probs, tau):
    """Root of tau * E[(q - v)+] = (1 - tau) * E[(v - q)+] by bisection (left minus right decreases in v)."""
    lo, hi = values.min(), values.max()
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        above = np.sum(probs * np.maximum(values - mid, 0.0))
        below = np.sum(probs * np.maximum(mid - values, 0.0))
        if tau * above - (1.0 - tau) * below > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def test_expectile_loss_elementwise():
    diff = np.array([-2.0, -0.5, 0.0, 0.5, 3.0], np.float32)
    out = np.asarray(expectile_loss(jnp.asarray(diff), 0.8))
    np.testing.assert_allclose(out, [0.2 * 4.0, 0.2 * 0.25, 0.0, 0.8 * 0.25, 0.8 * 9.0], rtol=1e-6)


@pytest.mark.parametrize("tau", [0.5, 0.7, 0.9])
def test_expectile_regression_converges_to_analytic_expectile(tau):
    """A tabular V (one entry per state) fitted by gradient descent on the expectile loss of q - V(s)."""
    q_values = np.array([[-1.0, 0.0, 2.0, 5.0], [0.3, 0.3, 0.4, 3.0], [-4.0, -2.0, -1.0, 0.0]], np.float32)
    probs = np.array([[0.1, 0.4, 0.3, 0.2], [0.25, 0.25, 0.25, 0.25], [0.5, 0.2, 0.2, 0.1]], np.float32)

    def objective(v):
        return jnp.sum(jnp.asarray(probs) * expectile_loss(jnp.asarray(q_values) - v[:, None], tau))

    @jax.jit
    def descend(v):
        return jax.lax.fori_loop(0, 3000, lambda _, x: x - 0.5 * jax.grad(objective)(x), v)

    v = np.asarray(descend(jnp.zeros(3)))
    expected = [analytic_expectile(q.astype(np.float64), p.astype(np.float64), tau) for q, p in zip(q_values, probs)]
    np.testing.assert_allclose(v, expected, atol=1e-4)
    if tau == 0.5:  # the 0.5-expectile is the mean
        np.testing.assert_allclose(v, np.sum(q_values * probs, axis=1), atol=1e-4)
    else:  # tau > 0.5 is optimistic: above the mean, below the max
        assert np.all(v > np.sum(q_values * probs, axis=1)) and np.all(v < q_values.max(axis=1))


# ----------------------------------------------------------------- chunk returns
def chunk_returns_loop(rewards, terminals, masks, gamma):
    """docs/algorithm.md §3 by hand: sum rewards until (and including) the first terminal; bootstrap only if the chunk
    stays in one episode up to its last step and no step in it is a task end (mask 0)."""
    batch, horizon = rewards.shape
    returns, valid, boot = np.zeros(batch), np.zeros((batch, horizon)), np.zeros(batch)
    for b in range(batch):
        ended, can_bootstrap = False, True
        for i in range(horizon):
            if ended:
                break
            valid[b, i] = 1.0
            returns[b] += gamma**i * rewards[b, i]
            if masks[b, i] == 0:
                can_bootstrap = False
            if terminals[b, i] == 1:
                ended = True
                if i < horizon - 1:
                    can_bootstrap = False
        boot[b] = float(can_bootstrap)
    return returns, valid, boot


HAND_CHUNKS = {
    # name: (rewards, terminals, masks, expected valid, expected bootstrap)
    "inside_episode": ([1.0, 2.0, 3.0], [0, 0, 0], [1, 1, 1], [1, 1, 1], 1.0),
    "terminal_in_middle": ([1.0, 2.0, 3.0], [0, 1, 0], [1, 1, 1], [1, 1, 0], 0.0),
    "terminal_at_first_step": ([5.0, 7.0, 9.0], [1, 0, 0], [1, 1, 1], [1, 0, 0], 0.0),
    "terminal_at_last_step": ([1.0, 2.0, 3.0], [0, 0, 1], [1, 1, 1], [1, 1, 1], 1.0),
    "success_inside": ([-1.0, 0.0, 0.0], [0, 0, 0], [1, 0, 0], [1, 1, 1], 0.0),
    "success_after_terminal_is_ignored": ([-1.0, -1.0, 0.0], [1, 0, 0], [1, 1, 0], [1, 0, 0], 0.0),
    "two_terminals": ([1.0, 1.0, 1.0], [0, 1, 1], [1, 1, 1], [1, 1, 0], 0.0),
}


def test_chunk_returns_on_hand_made_episodes():
    gamma = 0.9
    rewards = np.array([c[0] for c in HAND_CHUNKS.values()], np.float32)
    terminals = np.array([c[1] for c in HAND_CHUNKS.values()], np.float32)
    masks = np.array([c[2] for c in HAND_CHUNKS.values()], np.float32)
    returns, valid, boot = (np.asarray(x) for x in chunk_returns(rewards, terminals, masks, gamma))
    np.testing.assert_array_equal(valid, np.array([c[3] for c in HAND_CHUNKS.values()], np.float32))
    np.testing.assert_array_equal(boot, np.array([c[4] for c in HAND_CHUNKS.values()], np.float32))
    expected_returns = {
        "inside_episode": 1 + 0.9 * 2 + 0.81 * 3,
        "terminal_in_middle": 1 + 0.9 * 2,
        "terminal_at_first_step": 5.0,
        "terminal_at_last_step": 1 + 0.9 * 2 + 0.81 * 3,
        "success_inside": -1.0,
        "success_after_terminal_is_ignored": -1.0,
        "two_terminals": 1 + 0.9,
    }
    np.testing.assert_allclose(returns, list(expected_returns.values()), rtol=1e-6)


def test_chunk_returns_match_loop_on_random_chunks():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(200, 5)).astype(np.float32)
    terminals = (rng.random((200, 5)) < 0.15).astype(np.float32)
    masks = (rng.random((200, 5)) > 0.1).astype(np.float32)
    got = [np.asarray(x) for x in chunk_returns(rewards, terminals, masks, 0.95)]
    for actual, expected in zip(got, chunk_returns_loop(rewards, terminals, masks, 0.95)):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_chunk_discount_and_q_target():
    assert chunk_discount(0.9, 3) == pytest.approx(0.729)
    returns = jnp.array([1.0, 2.0, 3.0])
    mask = jnp.array([1.0, 0.0, 1.0])
    next_v = jnp.array([10.0, 10.0, -4.0])
    y = np.asarray(q_target(returns, mask, next_v, 0.99, 5))
    np.testing.assert_allclose(y, [1.0 + 0.99**5 * 10.0, 2.0, 3.0 - 0.99**5 * 4.0], rtol=1e-6)


# ----------------------------------------------------------------- losses and Polyak
def test_critic_loss_hand_formula_and_no_gradient_into_target():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(2, 6)).astype(np.float32)
    y = rng.normal(size=6).astype(np.float32)
    w = np.array([1, 0, 1, 1, 0, 1], np.float32)
    np.testing.assert_allclose(float(critic_loss(jnp.asarray(q), jnp.asarray(y))), np.mean((q - y) ** 2), rtol=1e-6)
    weighted = float(critic_loss(jnp.asarray(q), jnp.asarray(y), jnp.asarray(w)))
    np.testing.assert_allclose(weighted, np.sum((q - y) ** 2 * w) / q.size, rtol=1e-6)
    grad_q, grad_y = jax.grad(critic_loss, argnums=(0, 1))(jnp.asarray(q), jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(grad_q), 2 * (q - y) / q.size, rtol=1e-5)
    assert np.all(np.asarray(grad_y) == 0.0)  # a TD target is a constant


def test_value_loss_hand_formula_and_no_gradient_into_target():
    rng = np.random.default_rng(2)
    target_q = rng.normal(size=(3, 8)).astype(np.float32)
    v = rng.normal(size=8).astype(np.float32)
    d = target_q.min(axis=0) - v
    expected = np.mean(np.where(d < 0, 0.3, 0.7) * d**2)
    np.testing.assert_allclose(float(value_loss(jnp.asarray(target_q), jnp.asarray(v), 0.7)), expected, rtol=1e-6)
    grad_q, grad_v = jax.grad(value_loss, argnums=(0, 1))(jnp.asarray(target_q), jnp.asarray(v), 0.7)
    assert np.all(np.asarray(grad_q) == 0.0)
    np.testing.assert_allclose(np.asarray(grad_v), -2 * np.where(d < 0, 0.3, 0.7) * d / 8, rtol=1e-5)


def test_polyak_update_leafwise():
    target = {"a": jnp.array([1.0, 2.0]), "b": {"c": jnp.array(-4.0)}}
    online = {"a": jnp.array([3.0, 0.0]), "b": {"c": jnp.array(6.0)}}
    out = polyak_update(target, online, 0.1)
    np.testing.assert_allclose(np.asarray(out["a"]), [1.2, 1.8], rtol=1e-6)
    np.testing.assert_allclose(float(out["b"]["c"]), -3.0, rtol=1e-6)
    same = polyak_update(target, online, 1.0)
    np.testing.assert_allclose(np.asarray(same["a"]), [3.0, 0.0])


# ----------------------------------------------------------------- chunk sampling from a dataset
N, H = 40, 4


@pytest.fixture(scope="module")
def indexed_dataset():
    """Observation i stores i itself, so every sampled window can be traced back to its rows."""
    rng = np.random.default_rng(3)
    index = np.arange(N, dtype=np.float32)
    observations = np.stack([index, -2.0 * index], axis=1)
    next_observations = observations + 0.5
    actions = np.stack([index, index + 1000.0, -index], axis=1)
    rewards = rng.normal(size=N).astype(np.float32)
    terminals = np.zeros(N, np.float32)
    terminals[[9, 10, 25, N - 1]] = 1.0  # episodes of length 10, 1, 15, 14
    masks = np.ones(N, np.float32)
    masks[[5, 30]] = 0.0
    arrays = dict(
        observations=observations,
        next_observations=next_observations,
        actions=actions,
        rewards=rewards,
        terminals=terminals,
        masks=masks,
    )
    return arrays, make_dataset(**arrays)


def test_sample_chunk_batch_windows_are_consecutive(indexed_dataset):
    arrays, dataset = indexed_dataset
    gamma = 0.9
    batch = sample_chunk_batch(dataset, jax.random.PRNGKey(0), 3000, H, gamma)
    batch = {k: np.asarray(v) for k, v in batch.items()}
    idx = batch["observations"][:, 0].astype(int)
    np.testing.assert_array_equal(batch["observations"], arrays["observations"][idx])
    assert idx.min() == 0 and idx.max() == N - H  # every window fits, and both ends are reachable
    assert len(np.unique(idx)) == N - H + 1
    windows = idx[:, None] + np.arange(H)
    np.testing.assert_array_equal(batch["actions"], arrays["actions"][windows].reshape(-1, H * 3))
    np.testing.assert_array_equal(batch["next_observations"], arrays["next_observations"][idx + H - 1])
    expected = chunk_returns_loop(
        arrays["rewards"][windows], arrays["terminals"][windows], arrays["masks"][windows], gamma
    )
    np.testing.assert_allclose(batch["returns"], expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(batch["valid"], expected[1])
    np.testing.assert_array_equal(batch["bootstrap_mask"], expected[2])
    # The start index is uniform: each of the N - H + 1 starts is drawn about 3000 / 37 = 81 times.
    counts = np.bincount(idx, minlength=N - H + 1)
    assert counts.min() > 40 and counts.max() < 130


def test_sample_chunk_batch_is_deterministic_in_key(indexed_dataset):
    _, dataset = indexed_dataset
    a = sample_chunk_batch(dataset, jax.random.PRNGKey(1), 64, H, 0.9)
    b = sample_chunk_batch(dataset, jax.random.PRNGKey(1), 64, H, 0.9)
    c = sample_chunk_batch(dataset, jax.random.PRNGKey(2), 64, H, 0.9)
    np.testing.assert_array_equal(np.asarray(a["actions"]), np.asarray(b["actions"]))
    assert not np.array_equal(np.asarray(a["actions"]), np.asarray(c["actions"]))
