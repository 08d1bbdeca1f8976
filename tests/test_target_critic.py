"""Guided samplers differentiate the Polyak target critic by default, the online one only when asked.

The train state here has a target critic from another random initialisation than its online critic, so the two
give clearly different guidance; each sampler's output is compared with a guided sampler called directly with the
parameters it should have used. No training: the networks are tiny and freshly initialised.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from qgf_lite import SamplerSpec, toy
from qgf_lite.guidance import guided_sample
from qgf_lite.toy import experiments as tx
from qgf_lite.training import critic_fn, guidance_critic_params, init_train_state, velocity_fn

WEIGHT = 3.0
NUM = 64


@pytest.fixture(scope="module")
def setup():
    config = tx.toy_config(actor_hidden=(16, 16), critic_hidden=(16, 16), value_hidden=(8,))
    state = init_train_state(config, jax.random.PRNGKey(0))
    other = init_train_state(config, jax.random.PRNGKey(1))
    state = state.replace(target_critic_params=other.critic_params)
    problem = toy.make_bandit("ring")
    return tx.ToySetup(
        problem=problem, config=config, state=state, behaviour=problem.sample_actions(jax.random.PRNGKey(0), 256)
    )


def direct_guided(setup, critic_params, noise, weight=WEIGHT, steps=10):
    """QGF samples from the sampler itself, handed the critic parameters explicitly."""
    return np.asarray(
        guided_sample(
            velocity_fn(setup.config, setup.state.policy_params),
            critic_fn(setup.config, critic_params),
            None,
            noise,
            steps=steps,
            weight=weight,
        )
    )


def assert_matches_only(got, target_samples, online_samples, which):
    want, other = (target_samples, online_samples) if which == "target" else (online_samples, target_samples)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(got - other).max() > 1e-2  # the two critics really guide differently


def test_guidance_critic_params_picks_target_by_default(setup):
    state = setup.state
    assert guidance_critic_params(state) is state.target_critic_params
    assert guidance_critic_params(state, "target") is state.target_critic_params
    assert guidance_critic_params(state, "online") is state.critic_params
    with pytest.raises(ValueError, match="`critic` must be one of 'target', 'online', got 'ema'"):
        guidance_critic_params(state, "ema")


@pytest.mark.parametrize("which", ["target", "online"])
def test_draw_samples_guides_with_the_chosen_critic(setup, which):
    spec = SamplerSpec("guided", weight=WEIGHT)
    key = jax.random.PRNGKey(5)
    noise = jax.random.normal(key, (NUM, 2))  # the noise draw_samples makes from `key`
    target = direct_guided(setup, setup.state.target_critic_params, noise)
    online = direct_guided(setup, setup.state.critic_params, noise)
    kwargs = {} if which == "target" else {"critic": "online"}
    got = np.asarray(tx.draw_samples(setup, spec, key, NUM, **kwargs))
    assert_matches_only(got, target, online, which)


@pytest.mark.parametrize("which", ["target", "online"])
def test_weight_sweep_samples_guide_with_the_chosen_critic(setup, which):
    key = jax.random.PRNGKey(6)
    noise = jax.random.normal(key, (NUM, 2))
    target = direct_guided(setup, setup.state.target_critic_params, noise)
    online = direct_guided(setup, setup.state.critic_params, noise)
    kwargs = {} if which == "target" else {"critic": "online"}
    got = np.asarray(tx.guided_samples_for_weights(setup, [0.0, WEIGHT], key, NUM, **kwargs))
    assert_matches_only(got[1], target, online, which)
    np.testing.assert_allclose(got[0], direct_guided(setup, setup.state.critic_params, noise, weight=0.0), atol=1e-5)


def test_setup_critic_and_tilted_target_use_the_target_critic(setup):
    points = toy.Grid2D(size=8).points
    q_target = critic_fn(setup.config, setup.state.target_critic_params)(None, points)
    q_online = critic_fn(setup.config, setup.state.critic_params)(None, points)
    np.testing.assert_allclose(setup.critic(None, points), q_target, rtol=1e-6)
    np.testing.assert_allclose(setup.guidance_critic("online")(None, points), q_online, rtol=1e-6)
    grid = toy.Grid2D(size=16)
    by_default = tx.tilted_target_samples(setup, WEIGHT, 0, 200, grid)
    density = toy.tilted_density_grid(
        setup.log_ref, critic_fn(setup.config, setup.state.target_critic_params), WEIGHT, grid
    )
    np.testing.assert_array_equal(by_default, toy.sample_grid_density(0, density, grid, 200))
    assert not np.array_equal(by_default, tx.tilted_target_samples(setup, WEIGHT, 0, 200, grid, critic="online"))


def test_explorer_figure_follows_the_critic_option(setup):
    from qgf_lite.presentation import explorer

    noise = explorer.explorer_noise(0, 16)
    for which, params in [("target", setup.state.target_critic_params), ("online", setup.state.critic_params)]:
        fig = explorer.guidance_explorer_figure(setup, [WEIGHT], num_samples=16, critic=which, grid=toy.Grid2D(size=8))
        samples = next(t for t in fig.frames[0].data if t.name == explorer.SAMPLE_TRACE)
        want = direct_guided(setup, params, noise)
        np.testing.assert_allclose(np.stack([samples.x, samples.y], 1), want, atol=1e-5)


def test_bad_critic_choice_is_named(setup):
    with pytest.raises(ValueError, match="'target', 'online'"):
        tx.draw_samples(setup, SamplerSpec("bc"), 0, 4, critic="Target")
    with pytest.raises(ValueError, match="'target', 'online'"):
        tx.weight_sweep(setup, [0.0], 0, num=4, critic="both")
