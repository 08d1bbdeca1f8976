"""What the trainer tests share (training, checkpoint, CFG-RL, FQL): a small problem, tree comparisons that name
the leaf that differs, and the train step restated from the kernels."""

import functools
from pathlib import Path

import jax
import numpy as np
import optax

import qgf_lite
from qgf_lite import QGFConfig, make_dataset
from qgf_lite.flow import flow_matching_loss
from qgf_lite.iql import critic_loss, polyak_update, q_target, value_loss
from qgf_lite.training import build_networks

PRETRAINED = Path(qgf_lite.__file__).parent / "ogbench" / "pretrained" / "cube-single-task2-2x256.msgpack"

TINY = dict(actor_hidden=(32,), critic_hidden=(32,), value_hidden=(32,), time_emb_dim=8)


def training_problem(**config_overrides):
    """(config, dataset): 20-step episodes, the behaviour action a noisy function of the state, the reward
    preferring a = 0.3; tiny networks, so a few hundred steps train in seconds."""
    rng = np.random.default_rng(0)
    n = 512
    obs = rng.normal(size=(n + 1, 2)).astype(np.float32)
    actions = (0.5 * np.tanh(obs[:n]) + 0.1 * rng.normal(size=(n, 2))).astype(np.float32)
    rewards = -np.sum((actions - 0.3) ** 2, axis=1)
    terminals = np.zeros(n, np.float32)
    terminals[19::20] = 1.0
    terminals[-1] = 1.0
    dataset = make_dataset(actions, rewards, obs[:n], terminals, None, obs[1:])
    config = QGFConfig(
        obs_dim=2,
        action_dim=2,
        horizon=2,
        batch_size=32,
        discount=0.9,
        target_update_rate=0.05,
        learning_rate=1e-3,
        **{**TINY, **config_overrides},
    )
    return config, dataset


def leaves_with_paths(tree):
    return [(jax.tree_util.keystr(p), np.asarray(x)) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _same_structure(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    la, lb = leaves_with_paths(a), leaves_with_paths(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    return zip(la, lb)


def assert_bit_exact(a, b):
    """Same tree, same dtypes, identical values; a mismatch names the leaf."""
    for (path, x), (_, y) in _same_structure(a, b):
        assert x.dtype == y.dtype, path
        np.testing.assert_array_equal(x, y, err_msg=path)


def assert_trees_close(a, b, rtol, atol):
    """Same tree, values within tolerance; a mismatch names the leaf."""
    for (path, x), (_, y) in _same_structure(a, b):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=path)


def reference_train_step(config, state, batch):
    """docs/algorithm.md §2-§3 restated from the kernels: the update train_step made before CFG-RL existed."""
    actor, critic, value = build_networks(config)
    opt = optax.adam(config.learning_rate)
    rng, flow_key = jax.random.split(state.rng)
    obs, actions, ok = batch["observations"], batch["actions"], batch["valid"][:, -1]
    policy_grads = jax.grad(
        lambda p: flow_matching_loss(
            functools.partial(actor.apply, p), obs, actions, flow_key, config.time_grid, weights=ok
        )
    )(state.policy_params)
    target = q_target(
        batch["returns"],
        batch["bootstrap_mask"],
        value.apply(state.value_params, batch["next_observations"]),
        config.discount,
        config.horizon,
    )
    critic_grads = jax.grad(lambda p: critic_loss(critic.apply(p, obs, actions), target, ok))(state.critic_params)
    target_q = critic.apply(state.target_critic_params, obs, actions)
    value_grads = jax.grad(lambda p: value_loss(target_q, value.apply(p, obs), config.expectile))(state.value_params)

    def apply(grads, opt_state, params):
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    policy_params, policy_opt = apply(policy_grads, state.policy_opt_state, state.policy_params)
    critic_params, critic_opt = apply(critic_grads, state.critic_opt_state, state.critic_params)
    value_params, value_opt = apply(value_grads, state.value_opt_state, state.value_params)
    return state.replace(
        step=state.step + 1,
        rng=rng,
        policy_params=policy_params,
        critic_params=critic_params,
        target_critic_params=polyak_update(state.target_critic_params, critic_params, config.target_update_rate),
        value_params=value_params,
        policy_opt_state=policy_opt,
        critic_opt_state=critic_opt,
        value_opt_state=value_opt,
    )
