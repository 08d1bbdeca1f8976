"""The three networks (docs/algorithm.md §2-§3) against a hand-written numpy forward pass of the documented architecture."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qgf_lite.networks import CriticEnsemble, SinusoidalTimeEmbedding, ValueNet, VelocityField

OBS_DIM, ACT_DIM, BATCH = 3, 2, 5
HIDDEN = (16, 8)
EMB = 6


def gelu_np(x):
    # flax's default GELU is the tanh approximation.
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def layer_norm_np(x, scale, bias, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def mlp_np(params, x, num_hidden):
    """Dense -> GELU -> LayerNorm per hidden layer, then a linear output."""
    p = {k: {n: np.asarray(v, np.float64) for n, v in layer.items()} for k, layer in params.items()}
    for i in range(num_hidden):
        x = gelu_np(x @ p[f"Dense_{i}"]["kernel"] + p[f"Dense_{i}"]["bias"])
        x = layer_norm_np(x, p[f"LayerNorm_{i}"]["scale"], p[f"LayerNorm_{i}"]["bias"])
    return x @ p[f"Dense_{num_hidden}"]["kernel"] + p[f"Dense_{num_hidden}"]["bias"]


def time_embedding_np(t, dim, max_frequency=1000.0):
    half = dim // 2
    freqs = np.exp(-np.log(max_frequency) * np.arange(half) / (half - 1))
    angles = 2.0 * np.pi * t[:, None] * freqs
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)


@pytest.fixture(scope="module")
def data():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    obs = jax.random.normal(k1, (BATCH, OBS_DIM))
    actions = jax.random.normal(k2, (BATCH, ACT_DIM))
    t = jax.random.uniform(k3, (BATCH,))
    return obs, actions, t


def test_time_embedding_formula():
    t = np.array([0.0, 0.1, 0.5, 1.0], np.float32)
    emb = SinusoidalTimeEmbedding(8).apply({}, jnp.asarray(t))
    np.testing.assert_allclose(np.asarray(emb), time_embedding_np(t.astype(np.float64), 8), atol=2e-5)
    # Distinct times get distinct features, including close ones (the point of the high frequencies).
    assert np.abs(np.asarray(emb[1] - emb[0])).max() > 0.1


def test_velocity_field_matches_numpy_forward(data):
    obs, actions, t = data
    net = VelocityField(ACT_DIM, HIDDEN, EMB)
    params = net.init(jax.random.PRNGKey(1), obs, actions, t)
    out = net.apply(params, obs, actions, t)
    assert out.shape == (BATCH, ACT_DIM)
    x = np.concatenate([np.asarray(obs), np.asarray(actions), time_embedding_np(np.asarray(t, np.float64), EMB)], -1)
    expected = mlp_np(params["params"]["MLP_0"], x, len(HIDDEN))
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-4)


def test_velocity_field_scalar_time_broadcasts(data):
    obs, actions, _ = data
    net = VelocityField(ACT_DIM, HIDDEN, EMB)
    params = net.init(jax.random.PRNGKey(1), obs, actions, jnp.zeros((BATCH,)))
    scalar = net.apply(params, obs, actions, 0.3)
    vector = net.apply(params, obs, actions, jnp.full((BATCH,), 0.3))
    np.testing.assert_allclose(np.asarray(scalar), np.asarray(vector), rtol=1e-6, atol=1e-6)


def test_velocity_field_without_observations(data):
    _, actions, t = data
    net = VelocityField(ACT_DIM, HIDDEN, EMB)
    params = net.init(jax.random.PRNGKey(1), None, actions, t)
    none_obs = net.apply(params, None, actions, t)
    empty_obs = net.apply(params, jnp.zeros((BATCH, 0)), actions, t)
    np.testing.assert_array_equal(np.asarray(none_obs), np.asarray(empty_obs))
    x = np.concatenate([np.asarray(actions), time_embedding_np(np.asarray(t, np.float64), EMB)], -1)
    np.testing.assert_allclose(np.asarray(none_obs), mlp_np(params["params"]["MLP_0"], x, len(HIDDEN)), atol=1e-4)


def test_particles_are_independent(data):
    """Changing one particle must not change another's output: the samplers differentiate sum_b Q_b."""
    obs, actions, t = data
    vnet, qnet = VelocityField(ACT_DIM, HIDDEN, EMB), CriticEnsemble(HIDDEN, 2)
    vparams = vnet.init(jax.random.PRNGKey(1), obs, actions, t)
    qparams = qnet.init(jax.random.PRNGKey(2), obs, actions)
    moved = actions.at[0].add(3.0)
    for before, after in (
        (vnet.apply(vparams, obs, actions, t), vnet.apply(vparams, obs, moved, t)),
        (qnet.apply(qparams, obs, actions).T, qnet.apply(qparams, obs, moved).T),
    ):
        np.testing.assert_allclose(np.asarray(after[1:]), np.asarray(before[1:]), rtol=1e-6, atol=1e-6)
        assert np.abs(np.asarray(after[0] - before[0])).max() > 1e-3


@pytest.mark.parametrize("members", [1, 3])
def test_critic_ensemble_members_are_independent_mlps(data, members):
    obs, actions, _ = data
    net = CriticEnsemble(HIDDEN, members)
    params = net.init(jax.random.PRNGKey(3), obs, actions)
    q = np.asarray(net.apply(params, obs, actions))
    assert q.shape == (members, BATCH)
    stacked = params["params"]["Vmap_QHead_0"]["MLP_0"]
    x = np.concatenate([np.asarray(obs), np.asarray(actions)], -1)
    for i in range(members):
        member = jax.tree_util.tree_map(lambda leaf: leaf[i], stacked)
        np.testing.assert_allclose(q[i], mlp_np(member, x, len(HIDDEN))[:, 0], rtol=1e-4, atol=1e-4)
    if members > 1:
        # Each member has its own initialisation, so the ensemble's minimum is a real pessimistic estimate.
        assert np.abs(q[0] - q[1]).max() > 1e-3


def test_critic_ensemble_accepts_no_observation(data):
    _, actions, _ = data
    net = CriticEnsemble(HIDDEN, 2)
    params = net.init(jax.random.PRNGKey(3), None, actions)
    np.testing.assert_array_equal(
        np.asarray(net.apply(params, None, actions)), np.asarray(net.apply(params, jnp.zeros((BATCH, 0)), actions))
    )


def test_value_net_matches_numpy_forward(data):
    obs, _, _ = data
    net = ValueNet(HIDDEN)
    params = net.init(jax.random.PRNGKey(4), obs)
    v = np.asarray(net.apply(params, obs))
    assert v.shape == (BATCH,)
    np.testing.assert_allclose(
        v, mlp_np(params["params"]["MLP_0"], np.asarray(obs, np.float64), len(HIDDEN))[:, 0], rtol=1e-4, atol=1e-4
    )


def test_value_net_without_state_is_one_learnable_constant():
    net = ValueNet(HIDDEN)
    obs = jnp.zeros((BATCH, 0))
    params = net.init(jax.random.PRNGKey(4), obs)
    assert jax.tree_util.tree_leaves(params) and all(leaf.shape == () for leaf in jax.tree_util.tree_leaves(params))
    shifted = jax.tree_util.tree_map(lambda leaf: leaf + 1.25, params)
    np.testing.assert_allclose(np.asarray(net.apply(shifted, obs)), np.full(BATCH, 1.25))
    grads = jax.grad(lambda p: jnp.sum(net.apply(p, obs)))(params)
    np.testing.assert_allclose(np.asarray(jax.tree_util.tree_leaves(grads)[0]), float(BATCH))
