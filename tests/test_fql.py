"""FQL, flow Q-learning's one-step policy (docs/algorithm.md §5; qgf_lite.fql).

The losses against numpy (with a hand-written Euler loop for the flow target), the trainer unchanged by the option,
FQL beating BC on the ring bandit and staying near BC at large alpha, checkpoints, the `fql` sampler and CLI flags,
and bad input.
"""

from __future__ import annotations

import argparse
import functools
import math

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from training_problem import (
    PRETRAINED,
    assert_bit_exact,
    assert_trees_close,
    leaves_with_paths,
    reference_train_step,
    training_problem,
)

from qgf_lite import toy
from qgf_lite.checkpoint import load_checkpoint, save_checkpoint
from qgf_lite.data import make_dataset, sample_chunk_batch
from qgf_lite.fql import distillation_loss, flow_targets, fql_loss, fql_q_loss, fql_sample
from qgf_lite.samplers import SAMPLERS, SamplerSpec, sampler_cost, specs_from_names
from qgf_lite.toy.experiments import ToySetup, bandit_data, draw_samples, toy_config
from qgf_lite.training import (
    FQL_KEY_TAG,
    QGFConfig,
    build_fql_network,
    build_networks,
    fit,
    fql_policy_fn,
    init_train_state,
    sampler_velocity_fn,
    sampler_velocity_params,
    train_step,
)

init_state = jax.jit(init_train_state, static_argnums=0)
jitted_train_step = jax.jit(train_step, static_argnums=0)
NON_FQL_FIELDS = (
    "step",
    "rng",
    "policy_params",
    "critic_params",
    "target_critic_params",
    "value_params",
    "policy_opt_state",
    "critic_opt_state",
    "value_opt_state",
    "cfgrl_params",
    "cfgrl_opt_state",
)


def with_fql(config, **kw):
    return QGFConfig(**{**config.to_dict(), "fql": True, **kw})


@pytest.fixture(scope="module")
def problem():
    return training_problem()


# ----------------------------------------------------------------- (a) the losses against numpy
B, D, S = 6, 3, 2


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    p = {
        "M": 0.4 * rng.normal(size=(D, D)),
        "b": rng.normal(size=D),
        "W": rng.normal(size=(S, D)),  # velocity
        "P": rng.normal(size=(D, D)),
        "U": rng.normal(size=(S, D)),
        "c": 0.1 * rng.normal(size=D),  # policy
        "Q": rng.normal(size=(2, D)),
        "R": rng.normal(size=(2, S)),
        "q0": np.array([0.5, 2.0]),
    }  # critic
    p = {k: v.astype(np.float32) for k, v in p.items()}
    obs = rng.normal(size=(B, S)).astype(np.float32)
    noise = (1.5 * rng.normal(size=(B, D))).astype(np.float32)  # large enough that some targets get clipped
    return p, obs, noise


def jax_fns(p):
    def velocity(obs, a, t):
        t = jnp.broadcast_to(jnp.asarray(t, a.dtype).reshape(-1), (a.shape[0],))
        return a @ p["M"] + t[:, None] * p["b"] + obs @ p["W"]

    def policy(obs, z):
        return z @ p["P"] + obs @ p["U"] + p["c"]

    def critic(obs, a):  # (2, batch): one linear-quadratic member per row
        return (a @ p["Q"].T + obs @ p["R"].T + p["q0"]).T - jnp.sum(a**2, 1)

    return velocity, policy, critic


def numpy_reference(p, obs, noise, alpha, steps, aggregate="mean", normalize=True):
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    obs, noise = np.asarray(obs, np.float64), np.asarray(noise, np.float64)
    a = noise.copy()
    for k in range(steps):  # forward Euler, dt = 1/K, then clip
        a = a + (a @ p["M"] + (k / steps) * p["b"] + obs @ p["W"]) / steps
    target = np.clip(a, -1, 1)
    mu = noise @ p["P"] + obs @ p["U"] + p["c"]
    distill = np.mean((mu - target) ** 2)
    mu_c = np.clip(mu, -1, 1)
    qs = mu_c @ p["Q"].T + obs @ p["R"].T + p["q0"] - np.sum(mu_c**2, 1)[:, None]  # (batch, 2)
    q = qs.mean(1) if aggregate == "mean" else qs.min(1)
    q_loss = -q.mean() / (np.abs(q).mean() + 1e-8) if normalize else -q.mean()
    return target, distill, q_loss, q_loss + alpha * distill


@pytest.mark.parametrize(
    "alpha, steps, aggregate, normalize", [(10.0, 10, "mean", True), (0.0, 4, "min", True), (3.0, 1, "mean", False)]
)
def test_losses_match_numpy(tiny, alpha, steps, aggregate, normalize):
    p, obs, noise = tiny
    velocity, policy, critic = jax_fns(p)
    target, distill, q_loss, total = numpy_reference(p, obs, noise, alpha, steps, aggregate, normalize)
    assert 0 < np.mean(np.abs(target) == 1) < 1 or steps == 1  # the clip is exercised
    np.testing.assert_allclose(
        np.asarray(flow_targets(velocity, obs, noise, steps=steps)), target, rtol=1e-5, atol=1e-5
    )
    loss, parts = fql_loss(
        policy,
        critic,
        velocity,
        obs,
        noise,
        alpha=alpha,
        flow_steps=steps,
        aggregate=aggregate,
        normalize=normalize,
        return_parts=True,
    )
    np.testing.assert_allclose(float(parts["distill_loss"]), distill, rtol=1e-5)
    np.testing.assert_allclose(float(parts["q_loss"]), q_loss, rtol=1e-5)
    np.testing.assert_allclose(float(loss), total, rtol=1e-5)
    np.testing.assert_allclose(float(distillation_loss(policy, obs, noise, target)), distill, rtol=1e-5)
    np.testing.assert_allclose(
        float(fql_q_loss(critic, obs, policy(obs, noise), aggregate=aggregate, normalize=normalize)), q_loss, rtol=1e-5
    )


def test_gradients_reach_only_the_policy_and_the_normaliser_is_a_constant(tiny):
    p, obs, noise = tiny

    def loss(params):
        velocity, policy, critic = jax_fns(params)
        return fql_loss(policy, critic, velocity, obs, noise, alpha=2.0)

    grads = jax.grad(loss)({k: jnp.asarray(v) for k, v in p.items()})
    for name in ("M", "b", "W"):  # the flow is a distillation target only
        assert np.all(np.asarray(grads[name]) == 0), name
    assert np.any(np.asarray(grads["P"]) != 0)
    # d/dc of -mean(Q)/stop_grad(mean|Q|): the normaliser does not contribute (finite differences see it).
    velocity, policy, critic = jax_fns(p)
    q = np.asarray(jnp.mean(critic(obs, jnp.clip(policy(obs, noise), -1, 1)), 0))
    g_q = jax.grad(lambda c: fql_q_loss(critic, obs, policy(obs, noise) + c))(jnp.zeros(D))
    g_raw = jax.grad(lambda c: -jnp.mean(jnp.mean(critic(obs, jnp.clip(policy(obs, noise) + c, -1, 1)), 0)))(
        jnp.zeros(D)
    )
    np.testing.assert_allclose(np.asarray(g_q), np.asarray(g_raw) / np.abs(q).mean(), rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------- (b) the trainer
@pytest.fixture(scope="module")
def paired_runs(problem):
    """{fql: (state, history)} after 40 scanned steps from seed 0, with and without FQL."""
    config, dataset = problem
    return {
        cfg.fql: fit(cfg, init_state(cfg, jax.random.PRNGKey(0)), dataset, 40, chunk_size=40, progress=False)
        for cfg in (config, with_fql(config))
    }


def test_disabled_fql_changes_nothing(problem, paired_runs):
    """Off: no arrays, no metrics; on: every other field of the state, and every other metric, bit-identical."""

    config, dataset = problem
    assert config.fql is False
    state = init_state(config, jax.random.PRNGKey(0))
    assert state.fql_params == {} and state.fql_opt_state == {}
    reference = state
    for i in range(3):
        batch = sample_chunk_batch(
            dataset, jax.random.PRNGKey(10 + i), config.batch_size, config.horizon, config.discount
        )
        state, metrics = jitted_train_step(config, state, batch)
        reference = jax.jit(reference_train_step, static_argnums=0)(config, reference, batch)
        assert_bit_exact(state, reference)
        assert not any(name.startswith("fql") for name in metrics)
    on = with_fql(config)
    off_init, on_init = init_state(config, jax.random.PRNGKey(0)), init_state(on, jax.random.PRNGKey(0))
    (off_state, off_hist), (on_state, on_hist) = paired_runs[False], paired_runs[True]
    for name in NON_FQL_FIELDS:
        assert_bit_exact(getattr(on_init, name), getattr(off_init, name))
        assert_bit_exact(getattr(on_state, name), getattr(off_state, name))
    for name in ("policy_loss", "critic_loss", "value_loss", "q_mean", "v_mean"):
        assert on_hist[0][name] == off_hist[0][name], name
    assert {"fql_loss", "fql_q_loss", "fql_distill_loss", "fql_q_mean"} <= set(on_hist[0])
    assert int(on_state.fql_opt_state[0].count) == 40
    assert all(
        not np.allclose(a, b)
        for (_, a), (_, b) in zip(leaves_with_paths(on_state.fql_params), leaves_with_paths(on_init.fql_params))
    )


@pytest.mark.parametrize("which", ["online", "target"])
def test_train_step_takes_one_adam_step_of_the_documented_loss(problem, paired_runs, which):
    config, dataset = problem
    cfg = with_fql(config, fql_critic=which, fql_alpha=3.0)
    state = paired_runs[True][0]
    batch = sample_chunk_batch(dataset, jax.random.PRNGKey(99), cfg.batch_size, cfg.horizon, cfg.discount)
    new, metrics = jitted_train_step(cfg, state, batch)

    actor, critic, _ = build_networks(cfg)
    obs = batch["observations"]
    noise = jax.random.normal(
        jax.random.fold_in(jax.random.split(state.rng)[1], FQL_KEY_TAG), (obs.shape[0], cfg.chunk_dim)
    )
    critic_params = state.critic_params if which == "online" else state.target_critic_params
    network = build_fql_network(cfg)
    loss, grads = jax.value_and_grad(
        lambda p: fql_loss(
            functools.partial(network.apply, p),
            functools.partial(critic.apply, critic_params),
            functools.partial(actor.apply, state.policy_params),
            obs,
            noise,
            alpha=3.0,
            flow_steps=cfg.flow_steps,
        )
    )(state.fql_params)
    np.testing.assert_allclose(float(metrics["fql_loss"]), float(loss), rtol=1e-5)
    np.testing.assert_allclose(
        float(metrics["fql_loss"]), float(metrics["fql_q_loss"]) + 3.0 * float(metrics["fql_distill_loss"]), rtol=1e-5
    )
    updates, _ = optax.adam(cfg.learning_rate).update(grads, state.fql_opt_state, state.fql_params)
    assert_trees_close(new.fql_params, optax.apply_updates(state.fql_params, updates), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- (c) the ring bandit
RING_STEPS, RING_CHUNK, NUM = 900, 300, 2000


@pytest.fixture(scope="module")
def ring_runs():
    """The ring bandit trained with FQL at a small and a large alpha (same BC flow and critic: FQL is uncoupled)."""
    problem = toy.make_bandit("ring")
    actions, rewards = bandit_data(problem, 4000, 0)
    dataset = make_dataset(np.asarray(actions), np.asarray(rewards))
    setups = {}
    for alpha in (1.0, 1000.0):
        config = toy_config(
            fql=True,
            fql_alpha=alpha,
            actor_hidden=(64, 64),
            critic_hidden=(32, 32),
            value_hidden=(8,),
            fql_hidden=(64, 64),
        )
        state, history = fit(
            config,
            init_train_state(config, jax.random.PRNGKey(0)),
            dataset,
            RING_STEPS,
            chunk_size=RING_CHUNK,
            progress=False,
        )
        setups[alpha] = ToySetup(problem, config, state, actions, tuple(history))
    return setups


def test_fql_beats_bc_on_the_ring_and_stays_near_it_at_large_alpha(ring_runs):
    small, large = ring_runs[1.0], ring_runs[1000.0]
    problem = small.problem
    reward = {}
    for seed in range(3):
        key = jax.random.PRNGKey(seed)
        bc = draw_samples(small, SamplerSpec("bc"), key, NUM)
        fql = draw_samples(small, SamplerSpec("fql"), key, NUM)
        fql_large = draw_samples(large, SamplerSpec("fql"), key, NUM)
        for name, a in (("bc", bc), ("fql", fql), ("fql_large", fql_large)):
            reward.setdefault(name, []).append(float(jnp.mean(problem.reward(None, a))))
        # Same noise: at large alpha the one-step policy reproduces the flow's noise-to-action map closely.
        distance_large = float(
            jnp.mean(jnp.linalg.norm(fql_large - draw_samples(large, SamplerSpec("bc"), key, NUM), axis=-1))
        )
        distance_small = float(jnp.mean(jnp.linalg.norm(fql - bc, axis=-1)))
        reward.setdefault("distance_large", []).append(distance_large)
        reward.setdefault("distance_small", []).append(distance_small)
    reward = {k: np.array(v) for k, v in reward.items()}
    print({k: v.round(3).tolist() for k, v in reward.items()})  # shown with -s
    assert np.all(reward["fql"] > reward["bc"] + 0.2)  # every sampling seed, by a margin
    assert np.all(np.abs(reward["fql_large"] - reward["bc"]) < 0.1)
    assert np.all(reward["distance_large"] < 0.15) and np.all(reward["distance_small"] > 3 * reward["distance_large"])
    # Both BC flows are the same network trained on the same batches (FQL does not touch it).
    assert_bit_exact(small.state.policy_params, large.state.policy_params)


# ----------------------------------------------------------------- (d) checkpoints
def test_checkpoint_round_trip_with_fql(tmp_path, problem, paired_runs):
    config, _ = problem
    on = with_fql(config, fql_alpha=3.0, fql_critic="target")
    state = paired_runs[True][0]
    path = tmp_path / "fql.msgpack"
    save_checkpoint(path, on, state)
    loaded_config, loaded, _ = load_checkpoint(path)
    assert loaded_config == on
    assert_bit_exact(loaded, state)
    assert_bit_exact(load_checkpoint(path, on)[1], state)
    noise = jax.random.normal(jax.random.PRNGKey(0), (8, on.chunk_dim))
    obs = jnp.ones((8, on.obs_dim))
    np.testing.assert_array_equal(
        np.asarray(fql_sample(fql_policy_fn(on, loaded.fql_params), obs, noise)),
        np.asarray(fql_sample(fql_policy_fn(on, state.fql_params), obs, noise)),
    )
    with pytest.raises(ValueError, match=r"fql: checkpoint True vs requested False"):
        load_checkpoint(path, config)
    with pytest.raises(ValueError, match=r"fql_hidden: checkpoint \(32,\) vs requested \(16,\)"):
        load_checkpoint(path, with_fql(config, fql_hidden=(16,)))


def test_checkpoints_written_before_fql_still_load(tmp_path, problem, paired_runs):
    config, _ = problem
    state = paired_runs[False][0]
    plain = {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.to_dict().items()}
    payload = {
        "format": "qgf_lite.checkpoint",
        "version": 1,
        "config": {k: v for k, v in plain.items() if not k.startswith("fql")},
        "state": {
            k: v
            for k, v in jax.tree_util.tree_map(np.asarray, flax.serialization.to_state_dict(state)).items()
            if not k.startswith("fql")
        },
        "extra": {},
    }
    path = tmp_path / "old.msgpack"
    path.write_bytes(flax.serialization.msgpack_serialize(payload))
    loaded_config, loaded, _ = load_checkpoint(path)
    assert loaded_config == config and loaded_config.fql is False
    assert_bit_exact(loaded, state)


def test_the_shipped_pretrained_checkpoint_still_loads():
    raw = flax.serialization.msgpack_restore(PRETRAINED.read_bytes())
    assert not any(k.startswith("fql") for k in [*raw["state"], *raw["config"]])  # written before FQL
    config, state, _ = load_checkpoint(PRETRAINED)
    assert config.fql is False and state.fql_params == {} and state.fql_opt_state == {}
    np.testing.assert_array_equal(np.asarray(state.step), np.asarray(raw["state"]["step"]))


# ----------------------------------------------------------------- (e) the sampler and the CLI
def test_fql_sampler_spec(problem, paired_runs):
    config, _ = problem
    on = with_fql(config)
    spec = SamplerSpec("fql")
    assert spec.label == spec.family == "FQL" and spec.cost == 1 and spec.network == "fql"
    assert not spec.takes_weight and SAMPLERS["fql"].uses == frozenset()
    assert sampler_cost("fql", steps=25)["total"] == 1
    assert specs_from_names(["fql"], weights=[0.5]) == [spec]
    with pytest.raises(ValueError, match=r"takes no guidance weight"):
        SamplerSpec("fql", weight=1.0)
    state = paired_runs[True][0]
    policy = sampler_velocity_fn(on, sampler_velocity_params(state, "fql"), "fql")
    obs = jax.random.normal(jax.random.PRNGKey(1), (16, on.obs_dim))
    noise = spec.draw_noise(jax.random.PRNGKey(2), 16, on.chunk_dim)
    direct = jnp.clip(build_fql_network(on).apply(state.fql_params, obs, noise), -1, 1)
    np.testing.assert_array_equal(np.asarray(spec.sample(policy, None, obs, noise)), np.asarray(direct))
    np.testing.assert_array_equal(
        np.asarray(spec.sample(policy, None, obs, jax.random.PRNGKey(2), action_dim=on.chunk_dim)), np.asarray(direct)
    )
    with pytest.raises(ValueError, match=r"needs an FQL one-step policy.*--fql"):
        sampler_velocity_params(paired_runs[False][0], "fql")


def test_fql_options_are_train_flags():
    cli = pytest.importorskip("qgf_lite.ogbench.cli")
    from qgf_lite.ogbench.train import make_config

    parser = argparse.ArgumentParser()
    cli.add_train_arguments(parser)
    args = parser.parse_args(
        [
            "cube-single-play-singletask-task2-v0",
            "--out",
            "run",
            "--fql",
            "--fql-alpha",
            "300",
            "--fql-hidden",
            "64",
            "64",
            "--fql-critic",
            "target",
            "--fql-q-aggregate",
            "min",
            "--no-fql-normalize-q",
        ]
    )
    config = make_config(28, 5, **cli.config_overrides(args))
    assert (
        config.fql,
        config.fql_alpha,
        config.fql_hidden,
        config.fql_critic,
        config.fql_q_aggregate,
        config.fql_normalize_q,
    ) == (True, 300.0, (64, 64), "target", "min", False)
    defaults = make_config(28, 5)
    assert (
        defaults.fql,
        defaults.fql_alpha,
        defaults.fql_hidden,
        defaults.fql_critic,
        defaults.fql_q_aggregate,
        defaults.fql_normalize_q,
    ) == (False, 10.0, (), "online", "mean", True)
    assert defaults.fql_hidden_dims == defaults.actor_hidden
    eval_parser = argparse.ArgumentParser()
    cli.add_eval_arguments(eval_parser)
    assert eval_parser.parse_args(["run/checkpoint.msgpack", "--methods", "bc", "fql"]).methods == ["bc", "fql"]


# ----------------------------------------------------------------- (f) bad input
@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (dict(fql_alpha=-1.0), ValueError, r"`fql_alpha` must be a finite number >= 0 .*got -1.0"),
        (dict(fql_alpha=math.nan), ValueError, r"`fql_alpha` must be a finite number >= 0 .*got nan"),
        (dict(fql_alpha="1"), TypeError, r"`fql_alpha` must be a number, got '1'"),
        (dict(fql_critic="best"), ValueError, r"`fql_critic` must be one of 'target', 'online', got 'best'"),
        (dict(fql_q_aggregate="max"), ValueError, r"`fql_q_aggregate` must be one of 'mean', 'min', got 'max'"),
        (dict(fql="yes"), TypeError, r"`fql` must be True or False, got 'yes'"),
        (dict(fql_hidden=(0,)), ValueError, r"`fql_hidden` must be >= 1"),
    ],
)
def test_bad_config_values_are_named(overrides, error, message):
    with pytest.raises(error, match=message):
        QGFConfig(obs_dim=2, action_dim=2, **overrides)


def test_bad_kernel_input_is_named(tiny, problem):
    p, obs, noise = tiny
    velocity, policy, critic = jax_fns(p)
    for alpha, message in (
        (-1.0, r"`alpha` must be >= 0"),
        (math.nan, r"`alpha` must be a finite number"),
        (jnp.ones(2), r"`alpha` must be a single number"),
    ):
        with pytest.raises(ValueError, match=message):
            fql_loss(policy, critic, velocity, obs, noise, alpha=alpha)
    with pytest.raises(ValueError, match=r"`aggregate` must be one of 'mean', 'min', got 'max'"):
        fql_loss(policy, critic, velocity, obs, noise, alpha=1.0, aggregate="max")
    with pytest.raises(ValueError, match=r"`obs` has batch size 3"):
        fql_loss(policy, critic, velocity, obs[:3], noise, alpha=1.0)
    with pytest.raises(ValueError, match=r"`targets` must have the noise's shape"):
        distillation_loss(policy, obs, noise, noise[:, :1])
    with pytest.raises(ValueError, match=r"`policy` must return an array of the noise's shape"):
        fql_sample(lambda o, z: z[:, :1], obs, noise)
    with pytest.raises(TypeError, match=r"`policy` must be a function"):
        fql_sample("mu", obs, noise)
    with pytest.raises(ValueError, match=r"`critic` must return"):
        fql_q_loss(lambda o, a: jnp.zeros((2, 3, 1)), obs, noise)
    config, dataset = problem
    state = init_state(config, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"`fql_params` is empty.*QGFConfig\(fql=True\)"):
        fql_policy_fn(config, state.fql_params)
    batch = sample_chunk_batch(dataset, jax.random.PRNGKey(0), config.batch_size, config.horizon, config.discount)
    with pytest.raises(ValueError, match=r"config.fql is True but the state has no FQL one-step policy"):
        train_step(with_fql(config), state, batch)
