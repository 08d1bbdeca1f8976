"""Flow matching (docs/algorithm.md §2): the loss against a hand computation, the time grid, and learning a 2D mixture."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from qgf_lite.flow import euler_sample, flow_matching_loss, interpolate, sample_flow_times
from qgf_lite.networks import VelocityField

# ----------------------------------------------------------------- the loss, by hand
W_OBS = np.array([[0.5, -1.0, 0.2], [0.3, 0.1, -0.7]], np.float32)  # obs_dim 2 -> action_dim 3


def velocity_jax(obs, a, t):
    return jnp.sin(a) * (1.0 + t[:, None]) + obs @ jnp.asarray(W_OBS) - 0.3 * t[:, None] ** 2


def velocity_np(obs, a, t):
    return np.sin(a) * (1.0 + t[:, None]) + obs @ W_OBS - 0.3 * t[:, None] ** 2


@pytest.fixture(scope="module")
def loss_inputs():
    k1, k2 = jax.random.split(jax.random.PRNGKey(5))
    return jax.random.normal(k1, (64, 2)), jnp.tanh(jax.random.normal(k2, (64, 3)))


@pytest.mark.parametrize("time_grid", [10, None])
def test_flow_matching_loss_equals_hand_computation(loss_inputs, time_grid):
    obs, actions = loss_inputs
    key = jax.random.PRNGKey(17)
    loss = flow_matching_loss(velocity_jax, obs, actions, key, time_grid=time_grid)

    # The documented draws: split the key into (noise, time); a0 ~ N(0, I); t on {k/K} or U[0, 1].
    noise_key, time_key = jax.random.split(key)
    a0 = np.asarray(jax.random.normal(noise_key, actions.shape), np.float64)
    if time_grid is None:
        t = np.asarray(jax.random.uniform(time_key, (64,)), np.float64)
    else:
        t = np.asarray(jax.random.randint(time_key, (64,), 0, time_grid + 1), np.float64) / time_grid
    a1 = np.asarray(actions, np.float64)
    a_t = (1.0 - t[:, None]) * a0 + t[:, None] * a1
    residual = velocity_np(np.asarray(obs, np.float64), a_t, t) - (a1 - a0)
    expected = np.mean(np.sum(residual**2, axis=1))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)

    weights = np.linspace(0.0, 2.0, 64)
    weighted = flow_matching_loss(velocity_jax, obs, actions, key, time_grid=time_grid, weights=jnp.asarray(weights))
    np.testing.assert_allclose(float(weighted), np.sum(np.sum(residual**2, 1) * weights) / weights.sum(), rtol=1e-5)


def test_flow_matching_loss_depends_on_key_and_is_deterministic(loss_inputs):
    obs, actions = loss_inputs
    a = flow_matching_loss(velocity_jax, obs, actions, jax.random.PRNGKey(0))
    b = flow_matching_loss(velocity_jax, obs, actions, jax.random.PRNGKey(0))
    c = flow_matching_loss(velocity_jax, obs, actions, jax.random.PRNGKey(1))
    assert float(a) == float(b)
    assert float(a) != float(c)


def test_time_grid_takes_only_grid_values():
    t = np.asarray(sample_flow_times(jax.random.PRNGKey(0), 20_000, time_grid=10), np.float64)
    k = np.round(t * 10)
    np.testing.assert_allclose(t, k / 10, atol=1e-7)
    # Every grid point 0, 1/10, ..., 1 (both ends included) is drawn, about equally often.
    counts = np.bincount(k.astype(int), minlength=11)
    assert len(counts) == 11
    assert np.all(np.abs(counts / 20_000 - 1 / 11) < 0.01)


def test_continuous_times_are_uniform():
    t = np.asarray(sample_flow_times(jax.random.PRNGKey(1), 20_000, time_grid=None))
    assert t.min() >= 0.0 and t.max() <= 1.0
    assert len(np.unique(t)) > 19_000  # not on a grid
    np.testing.assert_allclose(np.histogram(t, bins=10, range=(0, 1))[0] / 20_000, 0.1, atol=0.01)


def test_interpolate_is_the_straight_path():
    a0 = np.array([[1.0, -2.0], [0.5, 0.5]], np.float32)
    a1 = np.array([[3.0, 2.0], [-0.5, 1.5]], np.float32)
    t = np.array([0.25, 1.0], np.float32)
    out = np.asarray(interpolate(jnp.asarray(a0), jnp.asarray(a1), jnp.asarray(t)))
    np.testing.assert_allclose(out, [[1.5, -1.0], [-0.5, 1.5]], rtol=1e-6)


def test_euler_sample_of_exact_gaussian_velocity_reproduces_the_data():
    """For data N(mu, s^2) the marginal velocity E[a1 - a0 | a_t] is known in closed form; integrating it
    from t = 0 (noise) to t = 1 must give the data moments, which checks the sampler's time direction."""
    mu, s = 0.4, 0.2

    def exact(obs, a, t):
        t = t[:, None]
        return mu + (t * s**2 - (1.0 - t)) / ((1.0 - t) ** 2 + t**2 * s**2) * (a - t * mu)

    samples = np.asarray(
        euler_sample(exact, None, jax.random.normal(jax.random.PRNGKey(4), (4000, 1)), steps=200, clip=None)
    )
    assert abs(samples.mean() - mu) < 0.01
    assert abs(samples.std() - s) < 0.01


# ----------------------------------------------------------------- learning a 2D Gaussian mixture
MEANS = np.array([[-0.5, -0.4], [0.5, -0.3], [0.0, 0.55]], np.float32)
STDS = np.array([0.08, 0.06, 0.1], np.float32)
PROBS = np.array([0.5, 0.3, 0.2])
TRAIN_STEPS = 3000


def sample_mixture(key, n):
    k_comp, k_noise = jax.random.split(key)
    comp = jax.random.choice(k_comp, len(PROBS), (n,), p=jnp.asarray(PROBS))
    return jnp.asarray(MEANS)[comp] + jnp.asarray(STDS)[comp][:, None] * jax.random.normal(k_noise, (n, 2))


@pytest.fixture(scope="module")
def trained_mixture_flow():
    net = VelocityField(2, hidden_dims=(128, 128), time_emb_dim=16)
    params = net.init(jax.random.PRNGKey(0), None, jnp.zeros((1, 2)), jnp.zeros((1,)))
    opt = optax.adam(optax.cosine_decay_schedule(3e-3, TRAIN_STEPS, alpha=0.05))

    @jax.jit
    def train(params, key):
        def step(carry, k):
            p, opt_state = carry
            k_data, k_loss = jax.random.split(k)
            batch = sample_mixture(k_data, 256)
            loss, grads = jax.value_and_grad(
                lambda q: flow_matching_loss(functools.partial(net.apply, q), None, batch, k_loss, time_grid=None)
            )(p)
            updates, opt_state = opt.update(grads, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state), loss

        (p, _), losses = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, TRAIN_STEPS))
        return p, losses

    params, losses = train(params, jax.random.PRNGKey(1))
    return functools.partial(net.apply, params), np.asarray(losses)


def test_flow_matching_learns_gaussian_mixture(trained_mixture_flow):
    velocity, losses = trained_mixture_flow
    assert losses[-200:].mean() < 0.5 * losses[:20].mean()
    samples = np.asarray(euler_sample(velocity, None, jax.random.normal(jax.random.PRNGKey(2), (2000, 2)), steps=40))
    dist = np.linalg.norm(samples[:, None] - MEANS[None], axis=-1)
    nearest = dist.argmin(axis=1)
    assert np.mean(dist.min(axis=1) > 4 * STDS.max()) < 0.03  # few samples between the modes
    for k in range(len(PROBS)):
        members = samples[nearest == k]
        assert abs(len(members) / len(samples) - PROBS[k]) < 0.04, k
        np.testing.assert_allclose(members.mean(axis=0), MEANS[k], atol=0.05)
        ratio = members.std(axis=0) / STDS[k]
        assert np.all((ratio > 0.7) & (ratio < 1.45)), (k, ratio)


def test_euler_sample_is_deterministic_in_noise(trained_mixture_flow):
    velocity, _ = trained_mixture_flow
    noise = jax.random.normal(jax.random.PRNGKey(3), (16, 2))
    a = euler_sample(velocity, None, noise, steps=10)
    b = euler_sample(velocity, None, noise, steps=10)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.all(np.abs(np.asarray(a)) <= 1.0)
