"""Bad input fails at the API boundary with a ValueError/TypeError that names the argument.

``boundary_error`` also checks the exception is raised by qgf_lite's own code (the last traceback frame
is in the package), so a TypeError that leaked out of jax.numpy would not pass for a clear message.
"""

import contextlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qgf_lite
from qgf_lite.data import make_dataset, sample_chunk_batch
from qgf_lite.flow import euler_sample, flow_matching_loss
from qgf_lite.guidance import best_of_n, gradient_step, guided_sample
from qgf_lite.training import QGFConfig, fit, init_train_state

PACKAGE_DIR = Path(qgf_lite.__file__).resolve().parent


@contextlib.contextmanager
def boundary_error(exc_type, match):
    with pytest.raises((ValueError, TypeError), match=match) as info:
        yield info
    assert type(info.value) is exc_type, f"expected {exc_type.__name__}, got {type(info.value).__name__}: {info.value}"
    raised_in = Path(str(info.traceback[-1].path)).resolve()
    assert PACKAGE_DIR in raised_in.parents, f"raised in {raised_in}, not at qgf_lite's boundary"


def velocity(obs, a, t):
    return -a


def critic(obs, a):
    return -jnp.sum(a**2, axis=-1)


NOISE = jnp.zeros((4, 2))
OBS = jnp.zeros((4, 3))


# ----------------------------------------------------------------- samplers
GUIDED_CASES = {
    "noise_rank_1": (dict(noise=jnp.zeros(4)), ValueError, "`noise`"),
    "noise_rank_3": (dict(noise=jnp.zeros((4, 2, 1))), ValueError, "`noise`"),
    "obs_rank_1": (dict(obs=jnp.zeros(4)), ValueError, "`obs`"),
    "obs_batch_mismatch": (dict(obs=jnp.zeros((5, 3))), ValueError, r"`obs`.*batch size 5.*batch size 4"),
    "unknown_mode": (dict(mode="qfg"), ValueError, r"`mode`.*'qfg'.*qgf, jacobian, noisy, bptt"),
    "steps_zero": (dict(steps=0), ValueError, "`steps`"),
    "steps_negative": (dict(steps=-3), ValueError, "`steps`"),
    "steps_float": (dict(steps=2.5), TypeError, "`steps`"),
    "steps_bool": (dict(steps=True), TypeError, "`steps`"),
    "steps_string": (dict(steps="10"), TypeError, "`steps`"),
    "negative_weight": (dict(weight=-0.1), ValueError, "`weight`"),
    "nan_weight": (dict(weight=float("nan")), ValueError, "`weight`"),
    "inf_weight": (dict(weight=float("inf")), ValueError, "`weight`"),
    "none_weight": (dict(weight=None), TypeError, "`weight`"),
    "vector_weight": (dict(weight=jnp.array([0.0, 0.5])), ValueError, r"`weight` must be a single number.*vmap"),
    "critic_none_with_weight": (dict(critic=None, weight=0.5), ValueError, "`critic`"),
    "critic_not_callable": (dict(critic=3.0, weight=0.5), TypeError, "`critic`"),
    "velocity_not_callable": (dict(velocity="v"), TypeError, "`velocity`"),
    "clip_reversed": (dict(clip=(1.0, -1.0)), ValueError, "`clip`"),
    "clip_empty_interval": (dict(clip=(0.5, 0.5)), ValueError, "`clip`"),
    "clip_scalar": (dict(clip=1.0), TypeError, "`clip`"),
    "clip_three_numbers": (dict(clip=(-1.0, 0.0, 1.0)), TypeError, "`clip`"),
    "clip_strings": (dict(clip=("a", "b")), TypeError, "`clip`"),
    "clip_nan": (dict(clip=(float("nan"), 1.0)), ValueError, "`clip`"),
}


@pytest.mark.parametrize("case", GUIDED_CASES, ids=list(GUIDED_CASES))
def test_guided_sample_rejects(case):
    overrides, exc_type, match = GUIDED_CASES[case]
    kwargs = dict(
        velocity=velocity, critic=critic, obs=OBS, noise=NOISE, steps=3, weight=0.1, mode="qgf", clip=(-1.0, 1.0)
    )
    kwargs.update(overrides)
    with boundary_error(exc_type, match):
        guided_sample(kwargs.pop("velocity"), kwargs.pop("critic"), kwargs.pop("obs"), kwargs.pop("noise"), **kwargs)


def test_errors_are_raised_at_trace_time_under_jit():
    with boundary_error(ValueError, "`noise`"):
        jax.jit(lambda n: guided_sample(velocity, critic, None, n, steps=3, weight=0.1))(jnp.zeros(4))
    with boundary_error(ValueError, "`obs`"):
        jax.jit(lambda o: euler_sample(velocity, o, NOISE, steps=3))(jnp.zeros((2, 3)))


def test_critic_none_with_traced_weight_is_rejected():
    with boundary_error(ValueError, "`critic`"):
        jax.jit(lambda w: guided_sample(velocity, None, None, NOISE, steps=3, weight=w))(0.0)


@pytest.mark.parametrize(
    "kwargs, exc_type, match",
    [
        (dict(noise=jnp.zeros(4)), ValueError, "`noise`"),
        (dict(obs=jnp.zeros((3, 3))), ValueError, "`obs`"),
        (dict(steps=0), ValueError, "`steps`"),
        (dict(steps=1.0), TypeError, "`steps`"),
        (dict(clip=(2.0, 1.0)), ValueError, "`clip`"),
    ],
)
def test_euler_sample_rejects(kwargs, exc_type, match):
    args = dict(obs=OBS, noise=NOISE, steps=3)
    args.update(kwargs)
    with boundary_error(exc_type, match):
        euler_sample(velocity, args.pop("obs"), args.pop("noise"), **args)


@pytest.mark.parametrize(
    "kwargs, exc_type, match",
    [
        (dict(noise=jnp.zeros((4, 2))), ValueError, r"`noise`.*\(batch, n, action_dim\)"),
        (dict(obs=jnp.zeros((3, 3))), ValueError, "`obs`"),
        (dict(critic=None), TypeError, "`critic`"),
        (dict(mode="best"), ValueError, "`mode`"),
        (dict(weight=-1.0), ValueError, "`weight`"),
    ],
)
def test_best_of_n_rejects(kwargs, exc_type, match):
    args = dict(critic=critic, obs=OBS, noise=jnp.zeros((4, 5, 2)))
    args.update(kwargs)
    with boundary_error(exc_type, match):
        best_of_n(velocity, args.pop("critic"), args.pop("obs"), args.pop("noise"), steps=3, **args)


@pytest.mark.parametrize(
    "kwargs, exc_type, match",
    [
        (dict(step_size=-0.01), ValueError, "`step_size`"),
        (dict(step_size=float("nan")), ValueError, "`step_size`"),
        (dict(step_size=np.array([0.01, 0.02])), ValueError, "`step_size` must be a single number"),
        (dict(ascent_steps=-1), ValueError, "`ascent_steps`"),
        (dict(ascent_steps=1.5), TypeError, "`ascent_steps`"),
        (dict(critic=None), TypeError, "`critic`"),
        (dict(noise=jnp.zeros((4, 5, 2))), ValueError, "`noise`"),
    ],
)
def test_gradient_step_rejects(kwargs, exc_type, match):
    args = dict(critic=critic, noise=NOISE)
    args.update(kwargs)
    with boundary_error(exc_type, match):
        gradient_step(velocity, args.pop("critic"), OBS, args.pop("noise"), steps=3, **args)


# ----------------------------------------------------------------- flow-matching loss
@pytest.mark.parametrize(
    "kwargs, exc_type, match",
    [
        (dict(actions=jnp.zeros(4)), ValueError, "`actions`"),
        (dict(obs=jnp.zeros((5, 3))), ValueError, "`obs`"),
        (dict(time_grid=0), ValueError, "`time_grid`"),
        (dict(time_grid=2.5), TypeError, "`time_grid`"),
        (dict(velocity=None), TypeError, "`velocity`"),
        (dict(weights=jnp.ones((4, 1))), ValueError, r"`weights` must have shape \(4,\)"),
        (dict(weights=jnp.ones(5)), ValueError, "`weights`"),
    ],
)
def test_flow_matching_loss_rejects(kwargs, exc_type, match):
    args = dict(velocity=velocity, obs=OBS, actions=NOISE, time_grid=10)
    args.update(kwargs)
    with boundary_error(exc_type, match):
        flow_matching_loss(args.pop("velocity"), args.pop("obs"), args.pop("actions"), jax.random.PRNGKey(0), **args)


# ----------------------------------------------------------------- datasets
def clean_arrays(n=10):
    rng = np.random.default_rng(0)
    return dict(
        actions=rng.normal(size=(n, 2)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        observations=rng.normal(size=(n, 3)).astype(np.float32),
        terminals=np.eye(1, n, n - 1, dtype=np.float32)[0],
        masks=np.ones(n, np.float32),
        next_observations=rng.normal(size=(n, 3)).astype(np.float32),
    )


@pytest.mark.parametrize("field", ["actions", "rewards", "observations", "next_observations"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_make_dataset_rejects_non_finite(field, bad):
    arrays = clean_arrays()
    arrays[field].reshape(-1)[7] = bad
    with boundary_error(ValueError, f"`{field}` contains 1 NaN/inf"):
        make_dataset(**arrays)


DATASET_CASES = {
    "actions_rank_1": (dict(actions=np.zeros(10)), "`actions`"),
    "empty": (
        dict(
            actions=np.zeros((0, 2)),
            rewards=np.zeros(0),
            observations=np.zeros((0, 3)),
            terminals=np.zeros(0),
            masks=np.zeros(0),
            next_observations=np.zeros((0, 3)),
        ),
        "empty",
    ),
    "rewards_length": (dict(rewards=np.zeros(9)), "`rewards`"),
    "rewards_2d": (dict(rewards=np.zeros((10, 1))), "`rewards`"),
    "observations_rows": (dict(observations=np.zeros((9, 3))), "`observations`"),
    "next_observations_shape": (dict(next_observations=np.zeros((10, 4))), "`next_observations`"),
    "next_observations_missing": (dict(next_observations=None), "`next_observations`"),
    "next_without_observations": (dict(observations=None), "`next_observations`"),
    "terminals_length": (dict(terminals=np.zeros(11)), "`terminals`"),
    "terminals_not_binary": (dict(terminals=np.full(10, 0.5)), "`terminals`"),
    "masks_not_binary": (dict(masks=np.arange(10.0)), "`masks`"),
}


@pytest.mark.parametrize("case", DATASET_CASES, ids=list(DATASET_CASES))
def test_make_dataset_rejects_bad_shapes(case):
    overrides, match = DATASET_CASES[case]
    arrays = clean_arrays()
    arrays.update(overrides)
    with boundary_error(ValueError, match):
        make_dataset(**arrays)


def test_chunk_longer_than_dataset():
    dataset = make_dataset(**clean_arrays(3))
    with boundary_error(ValueError, "horizon 5"):
        sample_chunk_batch(dataset, jax.random.PRNGKey(0), 4, 5, 0.99)


# ----------------------------------------------------------------- config and trainer
@pytest.mark.parametrize(
    "overrides, exc_type, match",
    [
        (dict(obs_dim=-1), ValueError, "`obs_dim`"),
        (dict(action_dim=0), ValueError, "`action_dim`"),
        (dict(horizon=2.0), TypeError, "`horizon`"),
        (dict(batch_size=0), ValueError, "`batch_size`"),
        (dict(discount=1.5), ValueError, "`discount`"),
        (dict(expectile=1.0), ValueError, "`expectile`"),
        (dict(target_update_rate=0.0), ValueError, "`target_update_rate`"),
        (dict(learning_rate=-1e-3), ValueError, "`learning_rate`"),
        (dict(time_grid=0), ValueError, "`time_grid`"),
        (dict(flow_steps=0), ValueError, "`flow_steps`"),
    ],
)
def test_config_rejects(overrides, exc_type, match):
    with boundary_error(exc_type, match):
        QGFConfig(**{"obs_dim": 3, "action_dim": 2, **overrides})


def test_config_from_dict_rejects_unknown_field():
    with boundary_error(ValueError, "hidden_size"):
        QGFConfig.from_dict({"obs_dim": 3, "action_dim": 2, "hidden_size": 64})


@pytest.fixture(scope="module")
def tiny_setup():
    config = QGFConfig(
        obs_dim=3,
        action_dim=2,
        horizon=2,
        actor_hidden=(4,),
        critic_hidden=(4,),
        value_hidden=(4,),
        time_emb_dim=4,
        batch_size=4,
    )
    # Shape-only state: fit validates its arguments before touching any array.
    state = jax.eval_shape(lambda: init_train_state(config, jax.random.PRNGKey(0)))
    return config, state, make_dataset(**clean_arrays())


@pytest.mark.parametrize(
    "kwargs, exc_type, match",
    [
        (dict(num_steps=0), ValueError, "`num_steps`"),
        (dict(num_steps=10.0), TypeError, "`num_steps`"),
        (dict(chunk_size=0), ValueError, "`chunk_size`"),
        (dict(dataset={"actions": np.zeros((10, 2))}), TypeError, "`dataset`"),
    ],
)
def test_fit_rejects(tiny_setup, kwargs, exc_type, match):
    config, state, dataset = tiny_setup
    args = dict(dataset=dataset, num_steps=10)
    args.update(kwargs)
    with boundary_error(exc_type, match):
        fit(config, state, args.pop("dataset"), args.pop("num_steps"), progress=False, **args)


def test_fit_rejects_dataset_of_other_dimensions(tiny_setup):
    config, state, _ = tiny_setup
    arrays = clean_arrays()
    arrays["observations"] = arrays["next_observations"] = np.zeros((10, 5), np.float32)
    with boundary_error(ValueError, r"obs_dim=5.*obs_dim=3"):
        fit(config, state, make_dataset(**arrays), 10, progress=False)


def test_fit_rejects_dataset_shorter_than_a_chunk(tiny_setup):
    config, state, _ = tiny_setup
    with boundary_error(ValueError, "horizon 2"):
        fit(config, state, make_dataset(**clean_arrays(1)), 10, progress=False)


# ----------------------------------------------------------------- user functions of the wrong shape
def ensemble_critic(obs, a):
    """A raw ensemble output (members, batch): summing it would give a wrong gradient, so it must be refused."""
    return jnp.stack([critic(obs, a), 2.0 * critic(obs, a)])


@pytest.mark.parametrize("mode", ["qgf", "jacobian", "noisy", "bptt"])
def test_critic_with_ensemble_shaped_output_is_rejected(mode):
    with boundary_error(ValueError, r"`critic` must return one Q per particle, shape \(4,\), got shape \(2, 4\)"):
        guided_sample(velocity, ensemble_critic, OBS, NOISE, steps=3, weight=0.1, mode=mode)


def test_best_of_n_and_gradient_step_check_the_critic_shape():
    with boundary_error(ValueError, "`critic`"):
        best_of_n(velocity, ensemble_critic, OBS, jnp.zeros((4, 3, 2)), steps=3)
    with boundary_error(ValueError, "`critic`"):
        gradient_step(velocity, ensemble_critic, OBS, NOISE, steps=3)


@pytest.mark.parametrize(
    "bad_velocity", [lambda o, a, t: a[:, :1], lambda o, a, t: jnp.sum(a, axis=1)], ids=["column", "flat"]
)
def test_velocity_of_wrong_shape_is_rejected(bad_velocity):
    with boundary_error(ValueError, r"`velocity` must return .* shape \(4, 2\)"):
        euler_sample(bad_velocity, OBS, NOISE, steps=3)
    with boundary_error(ValueError, r"`velocity` must return .* shape \(4, 2\)"):
        flow_matching_loss(bad_velocity, OBS, NOISE, jax.random.PRNGKey(0))


# ----------------------------------------------------------------- array-likes that are fine
def test_lists_and_integer_arrays_are_converted_not_truncated():
    as_float = guided_sample(
        velocity, critic, None, jnp.array([[1.0, -1.0], [0.0, 2.0]]), steps=4, weight=0.2, clip=None
    )
    as_list = guided_sample(velocity, critic, None, [[1, -1], [0, 2]], steps=4, weight=0.2, clip=None)
    as_int = guided_sample(velocity, critic, None, np.array([[1, -1], [0, 2]]), steps=4, weight=0.2, clip=None)
    np.testing.assert_array_equal(np.asarray(as_list), np.asarray(as_float))
    np.testing.assert_array_equal(np.asarray(as_int), np.asarray(as_float))
    assert as_int.dtype == jnp.float32
    # Integer actions in the loss equal the same values as floats.
    key = jax.random.PRNGKey(0)
    np.testing.assert_allclose(
        float(flow_matching_loss(velocity, None, [[1, 0], [0, 1]], key)),
        float(flow_matching_loss(velocity, None, jnp.eye(2), key)),
    )


@pytest.mark.parametrize("noise", ["abc", None, {"a": 1}, [[1.0, 2.0], [3.0]]], ids=["str", "none", "dict", "ragged"])
def test_non_numeric_noise_is_a_type_error(noise):
    with boundary_error(TypeError, "`noise` must be an array of numbers"):
        guided_sample(velocity, critic, None, noise, steps=3)
