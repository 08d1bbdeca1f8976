"""CFG-RL, classifier-free guidance on an optimality label (docs/algorithm.md §5; qgf_lite.cfgrl).

The loss and the labels against numpy, the sampler against plain Euler at w = 0, CFG-RL finding the good region of
a 2D ring bandit, the trainer unchanged by the option, checkpoints with and without the network, and bad input.
"""

from __future__ import annotations

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

import qgf_lite
from qgf_lite import toy
from qgf_lite.cfgrl import (
    POSITIVE,
    UNCONDITIONAL,
    advantages,
    cfg_velocity,
    cfgrl_loss,
    cfgrl_sample,
    optimality_weights,
)
from qgf_lite.checkpoint import load_checkpoint, save_checkpoint
from qgf_lite.data import make_dataset, sample_chunk_batch
from qgf_lite.flow import euler_sample
from qgf_lite.networks import ConditionedVelocityField
from qgf_lite.toy.experiments import bandit_data, toy_config
from qgf_lite.training import (
    CFGRL_KEY_TAG,
    QGFConfig,
    build_cfgrl_network,
    build_networks,
    cfgrl_velocity_fn,
    fit,
    init_train_state,
    init_train_states,
    train_step,
)

init_state = jax.jit(init_train_state, static_argnums=0)
jitted_train_step = jax.jit(train_step, static_argnums=0)
NON_CFGRL_FIELDS = (
    "step",
    "rng",
    "policy_params",
    "critic_params",
    "target_critic_params",
    "value_params",
    "policy_opt_state",
    "critic_opt_state",
    "value_opt_state",
)


@pytest.fixture(scope="module")
def problem():
    return training_problem()


def with_cfgrl(config, **kw):
    return QGFConfig(**{**config.to_dict(), "cfgrl": True, **kw})


# ----------------------------------------------------------------- (a) labels and loss against numpy
def linear_velocity(params):
    """An analytic conditioned velocity: a @ M + t b + s @ W + c[label]; its numpy twin is ``linear_velocity_np``."""

    def v(obs, actions, t, label):
        t = jnp.broadcast_to(jnp.asarray(t, actions.dtype).reshape(-1), (actions.shape[0],))
        return actions @ params["M"] + t[:, None] * params["b"] + obs @ params["W"] + params["c"][label]

    return v


def linear_velocity_np(params, obs, actions, t, label):
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    return actions @ p["M"] + t[:, None] * p["b"] + obs @ p["W"] + p["c"][label]


def flow_draws(key, shape, time_grid):
    """The noise and flow times flow_matching_loss draws from ``key`` (its documented key use)."""
    noise_key, time_key = jax.random.split(key)
    noise = np.asarray(jax.random.normal(noise_key, shape), np.float64)
    t = np.asarray(jax.random.randint(time_key, (shape[0],), 0, time_grid + 1), np.float64) / time_grid
    return noise, t


def test_advantages_and_optimality_weights_match_numpy():
    q = np.array([[1.0, 0.5, -2.0, 3.0, 0.25, 1.0], [0.5, 0.75, -1.0, 2.0, 0.5, 4.0]], np.float32)
    v = np.array([0.0, 0.25, -1.5, 2.5, 0.0, 1.0], np.float32)
    valid = np.array([1.0, 1.0, 1.0, 0.0, 1.0, 1.0], np.float32)
    adv = np.min(q, axis=0) - v  # [0.5, 0.25, 0.5, -0.5, 0.25, 0.0]
    np.testing.assert_array_equal(np.asarray(advantages(q, v)), adv)
    np.testing.assert_array_equal(np.asarray(advantages(q.min(0), v)), adv)  # already reduced
    for threshold in (0.0, 0.25, -1.0, 0.5):
        expected = (adv > threshold).astype(np.float32) * valid  # strict: A == threshold is not positive
        np.testing.assert_array_equal(np.asarray(optimality_weights(adv, threshold, valid)), expected)
        np.testing.assert_array_equal(np.asarray(optimality_weights(adv, threshold)), (adv > threshold) * 1.0)
    # Q and V are labels, not targets: no gradient flows back into them.
    grads = jax.grad(lambda q_, v_: jnp.sum(advantages(q_, v_)), argnums=(0, 1))(jnp.asarray(q), jnp.asarray(v))
    assert not np.any(np.asarray(grads[0])) and not np.any(np.asarray(grads[1]))


@pytest.mark.parametrize("uncond_weight", [1.0, 0.5, 0.0])
def test_cfgrl_loss_matches_numpy(uncond_weight):
    batch, obs_dim, dim, grid = 6, 2, 3, 10
    rng = np.random.default_rng(0)
    params = {
        "M": rng.normal(size=(dim, dim)),
        "b": rng.normal(size=dim),
        "W": rng.normal(size=(obs_dim, dim)),
        "c": rng.normal(size=(2, dim)),
    }
    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    obs = rng.normal(size=(batch, obs_dim)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(batch, dim)).astype(np.float32)
    positive = np.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0], np.float32)
    valid = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 1.0], np.float32)
    key = jax.random.PRNGKey(7)
    loss, parts = cfgrl_loss(
        linear_velocity(params),
        obs,
        actions,
        key,
        positive,
        uncond_weight=uncond_weight,
        valid=valid,
        time_grid=grid,
        return_parts=True,
    )

    # Independent computation: the branches' keys are split from `key` in the order (positive, unconditional).
    positive_key, uncond_key = jax.random.split(key)
    a1 = actions.astype(np.float64)

    def branch(branch_key, label, weights):
        noise, t = flow_draws(branch_key, a1.shape, grid)
        a_t = (1 - t[:, None]) * noise + t[:, None] * a1
        err = np.sum((linear_velocity_np(params, obs, a_t, t, label) - (a1 - noise)) ** 2, axis=1)
        return np.sum(weights * err) / max(np.sum(weights), 1e-8)

    pos_np = branch(positive_key, POSITIVE, positive)
    unc_np = branch(uncond_key, UNCONDITIONAL, valid)
    np.testing.assert_allclose(float(parts["positive_loss"]), pos_np, rtol=1e-5)
    np.testing.assert_allclose(float(parts["unconditional_loss"]), unc_np, rtol=1e-5)
    np.testing.assert_allclose(float(loss), pos_np + uncond_weight * unc_np, rtol=1e-5)
    # The scalar form is the same number; valid=None weighs every sample alike.
    loss_only = cfgrl_loss(
        linear_velocity(params), obs, actions, key, positive, uncond_weight=uncond_weight, valid=valid, time_grid=grid
    )
    assert float(loss_only) == float(loss)
    unweighted = cfgrl_loss(linear_velocity(params), obs, actions, key, positive, time_grid=grid, return_parts=True)
    np.testing.assert_allclose(
        float(unweighted[1]["unconditional_loss"]), branch(uncond_key, UNCONDITIONAL, np.ones(batch)), rtol=1e-5
    )


def test_batch_without_positive_samples_trains_only_the_unconditional_branch():
    params = {"M": jnp.eye(2), "b": jnp.ones(2), "W": jnp.zeros((0, 2)), "c": jnp.zeros((2, 2))}
    actions = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (5, 2)), jnp.float32)
    loss, parts = cfgrl_loss(
        linear_velocity(params), jnp.zeros((5, 0)), actions, jax.random.PRNGKey(0), jnp.zeros(5), return_parts=True
    )
    assert float(parts["positive_loss"]) == 0.0 and float(loss) == float(parts["unconditional_loss"]) > 0


def test_conditioned_velocity_field_is_the_velocity_mlp_with_a_one_hot_label():
    """[s, a_t, phi(t), onehot(o)] -> Dense/GELU/LayerNorm -> linear, as VelocityField with one more input."""
    obs = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
    actions = jax.random.normal(jax.random.PRNGKey(1), (4, 2))
    t = jnp.array([0.0, 0.3, 0.7, 1.0])
    net = ConditionedVelocityField(2, (16, 8), 6)
    params = net.init(jax.random.PRNGKey(2), obs, actions, t, 0)
    kernel0 = params["params"]["MLP_0"]["Dense_0"]["kernel"]
    assert kernel0.shape == (3 + 2 + 6 + 2, 16)
    emb = qgf_lite.SinusoidalTimeEmbedding(6).apply({}, t)
    for label in (0, 1):
        x = jnp.concatenate([obs, actions, emb, jnp.tile(jnp.eye(2)[label], (4, 1))], axis=-1)
        expected = qgf_lite.MLP((16, 8), 2).apply({"params": params["params"]["MLP_0"]}, x)
        out = net.apply(params, obs, actions, t, label)
        np.testing.assert_allclose(np.asarray(out), np.asarray(expected), rtol=1e-6, atol=1e-6)
        # A per-particle label and a scalar time broadcast like VelocityField's.
        np.testing.assert_array_equal(
            np.asarray(net.apply(params, obs, actions, t, jnp.full((4,), label))), np.asarray(out)
        )
    mixed = net.apply(params, obs, actions, t, jnp.array([0, 1, 0, 1]))
    assert not np.allclose(np.asarray(mixed[1]), np.asarray(net.apply(params, obs, actions, t, 0)[1]))
    # No observations: None and width 0 agree.
    p0 = net.init(jax.random.PRNGKey(2), None, actions, 0.5, 1)
    np.testing.assert_array_equal(
        np.asarray(net.apply(p0, None, actions, 0.5, 1)), np.asarray(net.apply(p0, jnp.zeros((4, 0)), actions, 0.5, 1))
    )


# ----------------------------------------------------------------- (b) the sampler
@pytest.fixture(scope="module")
def conditioned():
    """A random conditioned network on (obs_dim 3, action 4) and matching obs/noise."""
    net = ConditionedVelocityField(4, (32, 32), 8)
    obs = jax.random.normal(jax.random.PRNGKey(3), (64, 3))
    noise = jax.random.normal(jax.random.PRNGKey(4), (64, 4))
    params = net.init(jax.random.PRNGKey(5), obs, noise, jnp.zeros(64), 0)
    return functools.partial(net.apply, params), obs, noise


@pytest.mark.parametrize("steps", [1, 4, 10])
def test_weight_zero_is_euler_sampling_of_the_unconditional_branch_exactly(conditioned, steps):
    velocity_cond, obs, noise = conditioned
    uncond = functools.partial(velocity_cond, label=UNCONDITIONAL)
    expected, expected_path = euler_sample(uncond, obs, noise, steps=steps, return_path=True)
    got, path = cfgrl_sample(velocity_cond, obs, noise, steps=steps, weight=0.0, return_path=True)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    np.testing.assert_array_equal(np.asarray(path), np.asarray(expected_path))
    # Also with w traced (a jitted sweep) and without clipping, against Euler compiled the same way.
    jitted = jax.jit(lambda w: cfgrl_sample(velocity_cond, obs, noise, steps=steps, weight=w, clip=None))
    jitted_euler = jax.jit(lambda: euler_sample(uncond, obs, noise, steps=steps, clip=None))
    np.testing.assert_array_equal(np.asarray(jitted(0.0)), np.asarray(jitted_euler()))
    # w = 1 samples the positive branch (up to rounding in v_u + (v_p - v_u)).
    positive = euler_sample(functools.partial(velocity_cond, label=POSITIVE), obs, noise, steps=steps, clip=None)
    np.testing.assert_allclose(np.asarray(jitted(1.0)), np.asarray(positive), rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.asarray(jitted(1.0)), np.asarray(jitted(0.0)), atol=1e-3)


def test_sampler_is_the_documented_euler_loop(conditioned):
    velocity_cond, obs, noise = conditioned
    weight, steps = 2.5, 5
    a = np.asarray(noise, np.float64)
    for k in range(steps):
        t = jnp.full((a.shape[0],), k / steps)
        v_u = np.asarray(velocity_cond(obs, jnp.asarray(a, jnp.float32), t, 0), np.float64)
        v_p = np.asarray(velocity_cond(obs, jnp.asarray(a, jnp.float32), t, 1), np.float64)
        a = a + (v_u + weight * (v_p - v_u)) / steps
    expected = np.clip(a, -1.0, 1.0)
    got = cfgrl_sample(velocity_cond, obs, noise, steps=steps, weight=weight)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-4)
    v = cfg_velocity(velocity_cond, obs, noise, 0.3, weight)
    v_u, v_p = velocity_cond(obs, noise, 0.3, 0), velocity_cond(obs, noise, 0.3, 1)
    np.testing.assert_allclose(np.asarray(v), np.asarray(v_u + weight * (v_p - v_u)), rtol=1e-6)


# ----------------------------------------------------------------- (c) a bandit with a known good region
RING_STEPS, RING_CHUNK = 900, 300
SAMPLING_SEEDS = range(4)


@pytest.fixture(scope="module")
def ring_run():
    """The ring bandit (its best region holds 1/8 of the data), BC + IQL + CFG-RL trained together."""
    problem = toy.make_bandit("ring")
    actions, rewards = bandit_data(problem, 4000, 0)
    config = toy_config(cfgrl=True, actor_hidden=(64, 64), critic_hidden=(32, 32), value_hidden=(8,))
    state, history = fit(
        config,
        init_train_state(config, jax.random.PRNGKey(0)),
        make_dataset(np.asarray(actions), np.asarray(rewards)),
        RING_STEPS,
        chunk_size=RING_CHUNK,
        progress=False,
    )
    return problem, config, state, history, actions


def test_cfgrl_puts_more_mass_in_the_good_region_than_behaviour_cloning(ring_run):
    problem, config, state, history, actions = ring_run
    velocity_cond = cfgrl_velocity_fn(config, state.cfgrl_params)

    @jax.jit
    def mass_in_good_region(key, weight):
        samples = cfgrl_sample(velocity_cond, None, jax.random.normal(key, (2000, 2)), steps=10, weight=weight)
        return jnp.mean(problem.in_best_region(None, samples))

    mass = {
        w: np.array([float(mass_in_good_region(jax.random.PRNGKey(s), w)) for s in SAMPLING_SEEDS])
        for w in (0.0, 1.0, 2.0)
    }
    print(
        {w: m.round(3).tolist() for w, m in mass.items()},  # shown with -s; measured 0.04 / 0.94 / 1.0
        "behaviour:",
        float(jnp.mean(problem.in_best_region(None, actions))),
    )
    assert mass[0.0].mean() < 0.25  # w = 0 clones the ring: the good mode is about 1/8 of it
    assert np.all(mass[1.0] > mass[0.0] + 0.4)  # every sampling seed, by a wide margin
    assert np.all(mass[2.0] >= mass[1.0] - 0.02) and mass[2.0].mean() > 0.8
    # The training loss falls, and about the top tenth of the data (expectile 0.9) is labelled positive.
    losses = [h["cfgrl_loss"] for h in history]
    assert len(losses) == RING_STEPS // RING_CHUNK and losses[-1] < 0.85 * losses[0]
    assert 0.02 < history[-1]["cfgrl_positive_fraction"] < 0.4


# ----------------------------------------------------------------- (d) the trainer


def test_disabled_cfgrl_changes_nothing(problem):
    config, dataset = problem
    assert config.cfgrl is False
    state = init_state(config, jax.random.PRNGKey(0))
    assert state.cfgrl_params == {} and state.cfgrl_opt_state == {}  # no arrays, no optimiser
    reference = state
    for i in range(3):
        batch = sample_chunk_batch(
            dataset, jax.random.PRNGKey(10 + i), config.batch_size, config.horizon, config.discount
        )
        state, metrics = jitted_train_step(config, state, batch)
        reference = jax.jit(reference_train_step, static_argnums=0)(config, reference, batch)
        assert_bit_exact(state, reference)
        assert not any(name.startswith("cfgrl") for name in metrics)


@pytest.fixture(scope="module")
def paired_runs(problem):
    """{cfgrl: (state, history)} after 40 scanned steps from seed 0, with and without CFG-RL."""
    config, dataset = problem
    return {
        cfg.cfgrl: fit(cfg, init_state(cfg, jax.random.PRNGKey(0)), dataset, 40, chunk_size=40, progress=False)
        for cfg in (config, with_cfgrl(config))
    }


def test_enabling_cfgrl_leaves_policy_critic_and_value_training_unchanged(problem, paired_runs):
    config, _ = problem
    on = with_cfgrl(config)
    off_init, on_init = init_state(config, jax.random.PRNGKey(0)), init_state(on, jax.random.PRNGKey(0))
    (off_state, off_hist), (on_state, on_hist) = paired_runs[False], paired_runs[True]
    for name in NON_CFGRL_FIELDS:
        assert_bit_exact(getattr(on_init, name), getattr(off_init, name))
        assert_bit_exact(getattr(on_state, name), getattr(off_state, name))
    for name in ("policy_loss", "critic_loss", "value_loss", "q_mean", "v_mean"):
        assert on_hist[0][name] == off_hist[0][name], name
    assert "cfgrl_loss" in on_hist[0] and "cfgrl_loss" not in off_hist[0]
    # The CFG-RL network did train.
    on_single = on_state
    assert int(on_single.cfgrl_opt_state[0].count) == 40
    moved = [
        not np.allclose(a, b)
        for (_, a), (_, b) in zip(leaves_with_paths(on_single.cfgrl_params), leaves_with_paths(on_init.cfgrl_params))
    ]
    assert all(moved)


@pytest.fixture(scope="module")
def multi_seed_run(problem):
    """Seeds 0 and 1 with CFG-RL, trained together (vmap) for 40 scanned steps."""
    config, dataset = problem
    on = with_cfgrl(config)
    return fit(
        on, jax.jit(init_train_states, static_argnums=(0, 1))(on, (0, 1)), dataset, 40, chunk_size=40, progress=False
    )


def test_multi_seed_cfgrl_equals_separate_runs(problem, paired_runs, multi_seed_run):
    config, dataset = problem
    on = with_cfgrl(config)
    multi_state, multi_hist = multi_seed_run
    assert len(multi_hist[0]["cfgrl_loss"]) == 2  # one value per seed
    single1, _ = fit(on, init_state(on, jax.random.PRNGKey(1)), dataset, 40, chunk_size=40, progress=False)
    for seed, single in ((0, paired_runs[True][0]), (1, single1)):
        assert_trees_close(jax.tree_util.tree_map(lambda leaf: leaf[seed], multi_state), single, rtol=1e-5, atol=1e-6)
    assert abs(multi_hist[0]["cfgrl_loss"][0] - multi_hist[0]["cfgrl_loss"][1]) > 1e-4  # really two runs


@pytest.mark.parametrize("which", ["target", "online"])
def test_train_step_labels_with_the_chosen_critic_and_takes_one_adam_step(problem, paired_runs, which):
    """The CFG-RL update recomputed by hand from the state: labels from Q (target or online) and V before the
    update, the documented key, cfgrl_loss, one Adam step."""
    config, dataset = problem
    cfg = with_cfgrl(config, cfgrl_critic=which, cfgrl_threshold=-0.05, cfgrl_uncond_weight=0.5)
    state = paired_runs[True][0]  # 40 steps in: the target critic lags the online one
    batch = sample_chunk_batch(dataset, jax.random.PRNGKey(99), cfg.batch_size, cfg.horizon, cfg.discount)
    new, metrics = jitted_train_step(cfg, state, batch)

    _, critic, value = build_networks(cfg)
    obs, actions, ok = batch["observations"], batch["actions"], np.asarray(batch["valid"][:, -1])
    labels = {}
    for name, params in (("target", state.target_critic_params), ("online", state.critic_params)):
        q = np.asarray(critic.apply(params, obs, actions)).min(axis=0)
        labels[name] = ((q - np.asarray(value.apply(state.value_params, obs))) > -0.05) * ok
    assert not np.array_equal(labels["target"], labels["online"])  # so the choice is really tested
    positive = labels[which].astype(np.float32)
    np.testing.assert_allclose(float(metrics["cfgrl_positive_fraction"]), positive.sum() / ok.sum(), rtol=1e-6)

    key = jax.random.fold_in(jax.random.split(state.rng)[1], CFGRL_KEY_TAG)
    network = build_cfgrl_network(cfg)
    loss, grads = jax.value_and_grad(
        lambda p: cfgrl_loss(
            functools.partial(network.apply, p),
            obs,
            actions,
            key,
            positive,
            uncond_weight=0.5,
            valid=ok,
            time_grid=cfg.time_grid,
        )
    )(state.cfgrl_params)
    updates, _ = optax.adam(cfg.learning_rate).update(grads, state.cfgrl_opt_state, state.cfgrl_params)
    np.testing.assert_allclose(float(metrics["cfgrl_loss"]), float(loss), rtol=1e-5)
    np.testing.assert_allclose(
        float(metrics["cfgrl_loss"]),
        float(metrics["cfgrl_positive_loss"]) + 0.5 * float(metrics["cfgrl_unconditional_loss"]),
        rtol=1e-5,
    )
    assert_trees_close(new.cfgrl_params, optax.apply_updates(state.cfgrl_params, updates), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- (e) checkpoints
def test_checkpoint_round_trip_with_cfgrl(tmp_path, problem, paired_runs, multi_seed_run):
    config, _ = problem
    on = with_cfgrl(config, cfgrl_threshold=0.1, cfgrl_critic="online")
    single, multi = paired_runs[True][0], multi_seed_run[0]
    for name, state in (("single", single), ("multi", multi)):
        path = tmp_path / f"{name}.msgpack"
        save_checkpoint(path, on, state)
        loaded_config, loaded, _ = load_checkpoint(path)
        assert loaded_config == on
        assert_bit_exact(loaded, state)
        assert_bit_exact(load_checkpoint(path, on)[1], state)
    # The loaded network samples as the original does.
    loaded = load_checkpoint(tmp_path / "single.msgpack")[1]
    noise = jax.random.normal(jax.random.PRNGKey(0), (8, on.chunk_dim))
    obs = jnp.ones((8, on.obs_dim))
    np.testing.assert_array_equal(
        np.asarray(cfgrl_sample(cfgrl_velocity_fn(on, loaded.cfgrl_params), obs, noise, weight=1.5)),
        np.asarray(cfgrl_sample(cfgrl_velocity_fn(on, single.cfgrl_params), obs, noise, weight=1.5)),
    )
    # With and without the network are different architectures, and the error says so.
    with pytest.raises(ValueError, match=r"cfgrl: checkpoint True vs requested False"):
        load_checkpoint(tmp_path / "single.msgpack", config)
    save_checkpoint(tmp_path / "off.msgpack", config, paired_runs[False][0])
    with pytest.raises(ValueError, match=r"cfgrl: checkpoint False vs requested True"):
        load_checkpoint(tmp_path / "off.msgpack", on)


def plain_config(config):
    """The config as a checkpoint stores it (msgpack has lists, not tuples)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.to_dict().items()}


def test_checkpoints_written_before_cfgrl_still_load(tmp_path, problem, paired_runs):
    config, _ = problem
    state = paired_runs[False][0]
    # The format without the new fields: no cfgrl* config entries, no cfgrl_* state entries.
    payload = {
        "format": "qgf_lite.checkpoint",
        "version": 1,
        "config": {k: v for k, v in plain_config(config).items() if not k.startswith("cfgrl")},
        "state": {
            k: v
            for k, v in jax.tree_util.tree_map(np.asarray, flax.serialization.to_state_dict(state)).items()
            if not k.startswith("cfgrl")
        },
        "extra": {},
    }
    path = tmp_path / "old.msgpack"
    path.write_bytes(flax.serialization.msgpack_serialize(payload))
    loaded_config, loaded, _ = load_checkpoint(path)
    assert loaded_config == config and loaded_config.cfgrl is False
    assert_bit_exact(loaded, state)
    assert_bit_exact(load_checkpoint(path, config)[1], state)
    # A CFG-RL state whose network went missing is still an error, naming the network.
    on = with_cfgrl(config)
    broken = flax.serialization.to_state_dict(paired_runs[True][0])
    broken = jax.tree_util.tree_map(np.asarray, broken)
    broken["learners"] = {"cfgrl": {"opt_state": broken["learners"]["cfgrl"]["opt_state"]}}  # no "params"
    path.write_bytes(flax.serialization.msgpack_serialize({**payload, "config": plain_config(on), "state": broken}))
    with pytest.raises(ValueError, match=r"lacks `learners/cfgrl/params/params/MLP_0/"):
        load_checkpoint(path)


def test_the_shipped_pretrained_checkpoint_still_loads():
    assert PRETRAINED.is_file()
    raw = flax.serialization.msgpack_restore(PRETRAINED.read_bytes())
    assert not any(k.startswith("cfgrl") for k in [*raw["state"], *raw["config"]])  # written before CFG-RL
    config, state, extra = load_checkpoint(PRETRAINED)
    assert config.cfgrl is False and state.cfgrl_params == {} and state.cfgrl_opt_state == {}
    np.testing.assert_array_equal(np.asarray(state.step), np.asarray(raw["state"]["step"]))
    kernel = state.policy_params["params"]["MLP_0"]["Dense_0"]["kernel"]
    np.testing.assert_array_equal(
        np.asarray(kernel), np.asarray(raw["state"]["policy_params"]["params"]["MLP_0"]["Dense_0"]["kernel"])
    )


# ----------------------------------------------------------------- (f) bad input
@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (dict(cfgrl_threshold=math.nan), ValueError, r"`cfgrl_threshold` must be a finite number, got nan"),
        (dict(cfgrl_threshold=math.inf), ValueError, r"`cfgrl_threshold` must be a finite number, got inf"),
        (dict(cfgrl_threshold="0.1"), TypeError, r"`cfgrl_threshold` must be a number, got '0.1'"),
        (dict(cfgrl_uncond_weight=-0.5), ValueError, r"`cfgrl_uncond_weight` must be >= 0 .*got -0.5"),
        (dict(cfgrl_uncond_weight=math.nan), ValueError, r"`cfgrl_uncond_weight` must be a finite number"),
        (dict(cfgrl_critic="best"), ValueError, r"`cfgrl_critic` must be one of 'target', 'online', got 'best'"),
        (dict(cfgrl="yes"), TypeError, r"`cfgrl` must be True or False, got 'yes'"),
    ],
)
def test_bad_config_values_are_named(overrides, error, message):
    with pytest.raises(error, match=message):
        QGFConfig(obs_dim=2, action_dim=2, **overrides)


def test_bad_kernel_input_is_named(conditioned):
    velocity_cond, obs, noise = conditioned
    adv = jnp.zeros(4)
    with pytest.raises(ValueError, match=r"`threshold` must be a finite number, got nan"):
        optimality_weights(adv, math.nan)
    with pytest.raises(ValueError, match=r"`valid` must have shape \(4,\)"):
        optimality_weights(adv, 0.0, jnp.ones((4, 1)))
    with pytest.raises(ValueError, match=r"`advantage` must have rank 1"):
        optimality_weights(jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"`q_values` must be \(members, batch\) or \(batch,\)"):
        advantages(jnp.zeros((2, 4)), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"`uncond_weight` must be >= 0"):
        cfgrl_loss(velocity_cond, obs, noise, jax.random.PRNGKey(0), jnp.ones(64), uncond_weight=-1.0)
    with pytest.raises(ValueError, match=r"`weights` must have shape \(64,\)"):
        cfgrl_loss(velocity_cond, obs, noise, jax.random.PRNGKey(0), jnp.ones((64, 1)))
    with pytest.raises(TypeError, match=r"`velocity_cond` must be a function"):
        cfgrl_sample("v", obs, noise, weight=1.0)
    with pytest.raises(ValueError, match=r"`weight` must be >= 0"):
        cfgrl_sample(velocity_cond, obs, noise, weight=-1.0)
    with pytest.raises(ValueError, match=r"`weight` must be finite"):
        cfgrl_sample(velocity_cond, obs, noise, weight=math.nan)
    with pytest.raises(ValueError, match=r"`weight` must be a single number"):
        cfgrl_sample(velocity_cond, obs, noise, weight=jnp.ones(2))
    with pytest.raises(ValueError, match=r"`obs` has batch size 3"):
        cfgrl_sample(velocity_cond, obs[:3], noise, weight=1.0)
    with pytest.raises(ValueError, match=r"`noise` must have rank 2"):
        cfgrl_sample(velocity_cond, None, noise[0], weight=1.0)
    with pytest.raises(ValueError, match=r"`clip` must satisfy low < high"):
        cfgrl_sample(velocity_cond, obs, noise, weight=1.0, clip=(1.0, -1.0))
    with pytest.raises(ValueError, match=r"must return an array of the actions' shape \(64, 4\).*positive"):
        cfgrl_sample(
            lambda o, a, t, label: velocity_cond(o, a, t, 0) if label == 0 else a[:, :1], obs, noise, weight=1.0
        )
    with pytest.raises(ValueError, match=r"`label` must be an integer in \[0, 2\), got 2"):
        velocity_cond(obs, noise, 0.0, 2)


def test_a_state_without_the_network_is_named(problem):
    config, dataset = problem
    state = init_state(config, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"`cfgrl_params` is empty.*QGFConfig\(cfgrl=True\)"):
        cfgrl_velocity_fn(config, state.cfgrl_params)
    batch = sample_chunk_batch(dataset, jax.random.PRNGKey(0), config.batch_size, config.horizon, config.discount)
    with pytest.raises(ValueError, match=r"config.cfgrl is True but the state has no CFG-RL network"):
        train_step(with_cfgrl(config), state, batch)


def test_cfgrl_options_are_train_flags():
    cli = pytest.importorskip("qgf_lite.ogbench.cli")
    import argparse

    from qgf_lite.ogbench.train import make_config

    parser = argparse.ArgumentParser()
    cli.add_train_arguments(parser)
    args = parser.parse_args(
        [
            "cube-single-play-singletask-task2-v0",
            "--out",
            "run",
            "--cfgrl",
            "--cfgrl-threshold",
            "0.1",
            "--cfgrl-uncond-weight",
            "0.5",
            "--cfgrl-critic",
            "online",
        ]
    )
    config = make_config(28, 5, **cli.config_overrides(args))
    assert (config.cfgrl, config.cfgrl_threshold, config.cfgrl_uncond_weight, config.cfgrl_critic) == (
        True,
        0.1,
        0.5,
        "online",
    )
    defaults = make_config(28, 5)
    assert (defaults.cfgrl, defaults.cfgrl_threshold, defaults.cfgrl_uncond_weight, defaults.cfgrl_critic) == (
        False,
        0.0,
        1.0,
        "target",
    )
