"""guided_sample, best_of_n and gradient_step against hand-written numpy loops (docs/algorithm.md §4).

The velocity and critic are analytic, with their derivatives written out by hand in numpy, so the
reference loop shares no code (and no autodiff) with qgf_lite. The velocity is non-linear in the action
and its Jacobian is not a multiple of the identity, so the "jacobian" and "bptt" modes really differ from
"qgf"; the critic is non-quadratic and state dependent.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qgf_lite.flow import euler_sample
from qgf_lite.guidance import MODES, best_of_n, gradient_step, guided_sample

DIM = 3
BATCH = 12
STEPS = 6
WEIGHT = 0.6
CLIP = (-1.0, 1.0)

_rng = np.random.default_rng(0)
M0 = -0.8 * np.eye(DIM) + 0.3 * _rng.normal(size=(DIM, DIM))  # non-symmetric linear part
M1 = 0.4 * _rng.normal(size=(DIM, DIM))  # the linear part changes with t
CURVE = 0.3  # strength of the tanh term that makes the velocity non-linear in a
Q_SCALE = np.array([1.0, 2.0, 0.5])
COUPLING = 0.8  # couples the action coordinates, so where one is clipped changes the others' gradient


# ----------------------------------------------------------------- analytic fields (jax versions)
def velocity_jax(obs, a, t):
    t = jnp.broadcast_to(jnp.asarray(t, a.dtype).reshape(-1), (a.shape[0],))[:, None]
    mu = 0.6 * jnp.tanh(obs)
    return mu + a @ jnp.asarray(M0).T + t * (a @ jnp.asarray(M1).T) + CURVE * (1.0 - t) * jnp.tanh(a)


def critic_jax(obs, a):
    centre = 0.5 * jnp.sin(obs)
    separable = -jnp.sum(jnp.asarray(Q_SCALE) * (a - centre) ** 2, axis=-1) + 0.5 * jnp.sum(jnp.sin(2.0 * a), axis=-1)
    return separable + COUPLING * a[:, 0] * a[:, 1]


# ----------------------------------------------------------------- the same fields in numpy, with derivatives
def velocity_np(obs, a, t):
    mu = 0.6 * np.tanh(obs)
    return mu + a @ (M0 + t * M1).T + CURVE * (1.0 - t) * np.tanh(a)


def velocity_jacobian_np(a, t):
    """d v_i / d a_j for each particle: (batch, dim, dim)."""
    linear = np.broadcast_to(M0 + t * M1, (a.shape[0], DIM, DIM))
    return linear + CURVE * (1.0 - t) * np.einsum("bi,ij->bij", 1.0 - np.tanh(a) ** 2, np.eye(DIM))


def critic_np(obs, a):
    centre = 0.5 * np.sin(obs)
    separable = -np.sum(Q_SCALE * (a - centre) ** 2, axis=-1) + 0.5 * np.sum(np.sin(2.0 * a), axis=-1)
    return separable + COUPLING * a[:, 0] * a[:, 1]


def critic_grad_np(obs, a):
    centre = 0.5 * np.sin(obs)
    grad = -2.0 * Q_SCALE * (a - centre) + np.cos(2.0 * a)
    grad[:, 0] += COUPLING * a[:, 1]
    grad[:, 1] += COUPLING * a[:, 0]
    return grad


def clip_np(a, clip):
    return a if clip is None else np.clip(a, clip[0], clip[1])


def inside_np(a, clip):
    """Derivative of the clip: 1 where it passes the value through, 0 where it saturates."""
    if clip is None:
        return np.ones_like(a)
    return ((a > clip[0]) & (a < clip[1])).astype(a.dtype)


def bptt_gradient_np(obs, a, k, clip):
    """d Q(s, clip(Euler_{k..K-1}(a))) / d a by a hand-written forward and backward pass."""
    dt = 1.0 / STEPS
    states, jacobians = [], []
    x = a.copy()
    for j in range(k, STEPS):
        t = j * dt
        states.append(x)
        jacobians.append(np.eye(DIM)[None] + dt * velocity_jacobian_np(x, t))
        x = x + dt * velocity_np(obs, x, t)
    cotangent = inside_np(x, clip) * critic_grad_np(obs, clip_np(x, clip))
    for jac in reversed(jacobians):
        cotangent = np.einsum("bi,bij->bj", cotangent, jac)
    return cotangent


def guided_sample_np(obs, noise, weight, mode, clip, steps=STEPS):
    """docs/algorithm.md §4, written as a plain loop; returns (actions, path)."""
    dt = 1.0 / steps
    a = noise.astype(np.float64).copy()
    path = [a.copy()]
    for k in range(steps):
        t = k * dt
        v = velocity_np(obs, a, t)
        pre_clip = a + (1.0 - t) * v
        a_hat = clip_np(pre_clip, clip)
        if mode == "qgf":
            g = critic_grad_np(obs, a_hat)
        elif mode == "jacobian":
            jac = inside_np(pre_clip, clip)[:, :, None] * (np.eye(DIM)[None] + (1.0 - t) * velocity_jacobian_np(a, t))
            g = np.einsum("bi,bij->bj", critic_grad_np(obs, a_hat), jac)
        elif mode == "noisy":
            g = critic_grad_np(obs, a)
        elif mode == "bptt":
            g = bptt_gradient_np(obs, a, k, clip)
        else:
            raise AssertionError(mode)
        a = a + (v + weight * g) * dt
        path.append(a.copy())
    a = clip_np(a, clip)
    path[-1] = a
    return a, np.stack(path)


@pytest.fixture(scope="module")
def inputs():
    key_obs, key_noise = jax.random.split(jax.random.PRNGKey(3))
    obs = jax.random.normal(key_obs, (BATCH, DIM))
    noise = 1.2 * jax.random.normal(key_noise, (BATCH, DIM))
    return obs, noise


@functools.cache
def jitted_sampler(mode="qgf", clip=CLIP, steps=STEPS, return_path=False):
    """One compiled sampler per setting, the weight traced, shared by the tests (compiling dominates their cost)."""
    return jax.jit(
        lambda obs, noise, weight: guided_sample(
            velocity_jax,
            critic_jax,
            obs,
            noise,
            steps=steps,
            weight=weight,
            mode=mode,
            clip=clip,
            return_path=return_path,
        )
    )


@functools.cache
def jitted_best_of_n(return_all):
    return jax.jit(
        lambda obs, noise, weight: best_of_n(
            velocity_jax, critic_jax, obs, noise, steps=STEPS, weight=weight, return_all=return_all
        )
    )


def _close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=2e-5, atol=2e-5)


# ----------------------------------------------------------------- guided_sample
@pytest.mark.parametrize("clip", [CLIP, None], ids=["clip", "noclip"])
@pytest.mark.parametrize("mode", MODES)
def test_guided_sample_matches_hand_loop(inputs, mode, clip):
    obs, noise = inputs
    actions, path = jitted_sampler(mode, clip, return_path=True)(obs, noise, WEIGHT)
    expected_actions, expected_path = guided_sample_np(
        np.asarray(obs, np.float64), np.asarray(noise), WEIGHT, mode, clip
    )
    assert actions.shape == (BATCH, DIM)
    assert path.shape == (STEPS + 1, BATCH, DIM)
    np.testing.assert_array_equal(np.asarray(path[0]), np.asarray(noise))
    np.testing.assert_array_equal(np.asarray(path[-1]), np.asarray(actions))
    _close(path, expected_path)
    _close(actions, expected_actions)
    if clip is not None:
        assert np.all(np.abs(np.asarray(actions)) <= 1.0)


@pytest.mark.parametrize("mode", MODES)
def test_guided_sample_without_path_equals_path_output(inputs, mode):
    obs, noise = inputs
    plain = jitted_sampler(mode)(obs, noise, WEIGHT)
    with_path, _ = jitted_sampler(mode, return_path=True)(obs, noise, WEIGHT)
    np.testing.assert_allclose(np.asarray(plain), np.asarray(with_path), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("clip", [CLIP, None], ids=["clip", "noclip"])
def test_modes_differ_measurably(inputs, clip):
    """Each variant's gradient changes the samples here (else matching the loop would prove little)."""
    obs, noise = inputs
    reference = np.asarray(jitted_sampler("qgf", clip)(obs, noise, WEIGHT))
    unguided = np.asarray(jitted_sampler("qgf", clip)(obs, noise, 0.0))
    assert np.max(np.abs(reference - unguided)) > 0.05
    for mode in ("jacobian", "noisy", "bptt"):
        other = np.asarray(jitted_sampler(mode, clip)(obs, noise, WEIGHT))
        assert np.max(np.abs(other - reference)) > 1e-2, mode


def test_guidance_raises_the_critic_value(inputs):
    obs, noise = inputs
    q_bc = critic_jax(obs, jitted_sampler()(obs, noise, 0.0))
    q_guided = critic_jax(obs, jitted_sampler()(obs, noise, WEIGHT))
    assert float(jnp.mean(q_guided)) > float(jnp.mean(q_bc)) + 0.05


@pytest.mark.parametrize("mode", MODES)
def test_weight_zero_is_euler_sample(inputs, mode):
    obs, noise = inputs
    guided, path = guided_sample(
        velocity_jax, critic_jax, obs, noise, steps=STEPS, weight=0.0, mode=mode, return_path=True
    )
    plain, plain_path = euler_sample(velocity_jax, obs, noise, steps=STEPS, return_path=True)
    np.testing.assert_array_equal(np.asarray(guided), np.asarray(plain))
    np.testing.assert_array_equal(np.asarray(path), np.asarray(plain_path))
    _close(plain, guided_sample_np(np.asarray(obs, np.float64), np.asarray(noise), 0.0, "qgf", CLIP)[0])


def test_euler_sample_matches_hand_euler(inputs):
    obs, noise = inputs
    a = np.asarray(noise, np.float64)
    obs64 = np.asarray(obs, np.float64)
    for k in range(STEPS):
        a = a + velocity_np(obs64, a, k / STEPS) / STEPS
    _close(euler_sample(velocity_jax, obs, noise, steps=STEPS, clip=None), a)
    _close(euler_sample(velocity_jax, obs, noise, steps=STEPS), np.clip(a, -1, 1))


def test_steps_one_is_a_single_guided_step(inputs):
    obs, noise = inputs
    out = guided_sample(velocity_jax, critic_jax, obs, noise, steps=1, weight=WEIGHT, clip=None)
    obs64, a0 = np.asarray(obs, np.float64), np.asarray(noise, np.float64)
    v = velocity_np(obs64, a0, 0.0)
    expected = a0 + v + WEIGHT * critic_grad_np(obs64, a0 + v)
    _close(out, expected)


def test_no_observation_bandit(inputs):
    _, noise = inputs
    velocity = lambda obs, a, t: velocity_jax(jnp.zeros_like(a), a, t)  # noqa: E731
    critic = lambda obs, a: critic_jax(jnp.zeros_like(a), a)  # noqa: E731
    out = guided_sample(velocity, critic, None, noise, steps=STEPS, weight=WEIGHT)
    expected, _ = guided_sample_np(np.zeros((BATCH, DIM)), np.asarray(noise), WEIGHT, "qgf", CLIP)
    _close(out, expected)


# ----------------------------------------------------------------- jit / vmap
@pytest.mark.parametrize("mode", MODES)
def test_jit_and_vmap_over_weights_equal_eager(inputs, mode):
    obs, noise = inputs
    weights = jnp.array([0.0, 0.7])

    def sample(w):
        return guided_sample(velocity_jax, critic_jax, obs, noise, steps=STEPS, weight=w, mode=mode)

    batched = jax.jit(jax.vmap(sample))(weights)
    jitted = jax.jit(sample)
    for i, w in enumerate([0.0, 0.7]):
        eager = np.asarray(sample(w))
        np.testing.assert_allclose(np.asarray(batched[i]), eager, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(jitted(jnp.float32(w))), eager, rtol=1e-5, atol=1e-5)


def test_vmap_over_noise_sets_equals_eager(inputs):
    obs, _ = inputs
    noise_sets = jax.random.normal(jax.random.PRNGKey(9), (4, BATCH, DIM))

    def sample(noise):
        return guided_sample(velocity_jax, critic_jax, obs, noise, steps=STEPS, weight=WEIGHT, mode="jacobian")

    batched = jax.vmap(sample)(noise_sets)
    one_by_one = np.stack(
        [guided_sample_np(np.asarray(obs, np.float64), np.asarray(n), WEIGHT, "jacobian", CLIP)[0] for n in noise_sets]
    )
    _close(batched, one_by_one)


def test_traced_weight_does_not_recompile(inputs):
    obs, noise = inputs
    traces = []

    def counting_velocity(o, a, t):
        traces.append(1)
        return velocity_jax(o, a, t)

    sampler = jax.jit(lambda w: guided_sample(counting_velocity, critic_jax, obs, noise, steps=STEPS, weight=w))
    outs = [np.asarray(sampler(jnp.float32(w))) for w in (0.1, 0.2, 0.4)]
    traced_once = len(traces)
    assert traced_once > 0
    assert not np.allclose(outs[0], outs[2])
    sampler(jnp.float32(0.8))
    assert len(traces) == traced_once


# ----------------------------------------------------------------- best_of_n and gradient_step
def test_best_of_n_picks_argmax_q_proposal():
    batch, n = 5, 7
    key_obs, key_noise = jax.random.split(jax.random.PRNGKey(11))
    obs = jax.random.normal(key_obs, (batch, DIM))
    noise = jax.random.normal(key_noise, (batch, n, DIM))
    for weight in (0.0, WEIGHT):
        best, proposals, scores = jitted_best_of_n(True)(obs, noise, weight)
        assert best.shape == (batch, DIM) and proposals.shape == (batch, n, DIM) and scores.shape == (batch, n)
        obs64 = np.asarray(obs, np.float64)
        for b in range(batch):
            cand, _ = guided_sample_np(np.repeat(obs64[b : b + 1], n, 0), np.asarray(noise[b]), weight, "qgf", CLIP)
            q = critic_np(np.repeat(obs64[b : b + 1], n, 0), cand)
            _close(proposals[b], cand)
            _close(scores[b], q)
            order = np.sort(q)
            assert order[-1] - order[-2] > 1e-3  # a clear winner, so float32 vs float64 cannot swap it
            _close(best[b], cand[np.argmax(q)])


def test_best_of_n_beats_a_single_sample_on_average():
    batch, n = 64, 8
    noise = jax.random.normal(jax.random.PRNGKey(12), (batch, n, DIM))
    obs = jnp.zeros((batch, DIM))
    best = jitted_best_of_n(False)(obs, noise, 0.0)
    single = jitted_sampler()(obs, noise[:, 0], 0.0)
    assert float(jnp.mean(critic_jax(obs, best))) > float(jnp.mean(critic_jax(obs, single)))


@pytest.mark.parametrize("ascent_steps", [0, 4])
def test_gradient_step_matches_hand_loop(inputs, ascent_steps):
    obs, noise = inputs
    step_size = 0.05
    out = gradient_step(
        velocity_jax, critic_jax, obs, noise, steps=STEPS, step_size=step_size, ascent_steps=ascent_steps
    )
    obs64 = np.asarray(obs, np.float64)
    a, _ = guided_sample_np(obs64, np.asarray(noise), 0.0, "qgf", CLIP)
    for _ in range(ascent_steps):
        a = np.clip(a + step_size * critic_grad_np(obs64, a), -1.0, 1.0)
    _close(out, a)


# ----------------------------------------------------------------- denoised_estimate: the one a_hat
@pytest.mark.parametrize("clip", [CLIP, None], ids=["clip", "noclip"])
def test_denoised_estimate_is_one_step_to_t1_with_identity_jacobian(inputs, clip):
    from qgf_lite.guidance import denoised_estimate

    obs, noise = inputs
    t = jnp.linspace(0.0, 0.9, BATCH)
    v = np.stack([velocity_np(np.asarray(obs[i]), np.asarray(noise[i]), float(t[i])) for i in range(BATCH)])
    want = clip_np(np.asarray(noise) + (1.0 - np.asarray(t))[:, None] * v, clip)
    _close(denoised_estimate(velocity_jax, obs, noise, t, clip), want)
    # stop_gradient: d a_hat / d a is the identity where the clip is inactive, 0 where it clips.
    grad = jax.grad(lambda a: jnp.sum(denoised_estimate(velocity_jax, obs, a, t, clip)))(noise)
    _close(grad, inside_np(want, clip).astype(float) if clip else np.ones_like(want))
    # Without it, the Jacobian of the velocity comes in (the "jacobian" variant).
    full = jax.grad(lambda a: jnp.sum(denoised_estimate(velocity_jax, obs, a, t, clip, stop_gradient=False)))(noise)
    assert not np.allclose(full, grad)


def test_checks_and_toy_code_use_the_package_estimate(inputs):
    """The exercise check's reference and the toy experiments' estimates are qgf_lite.denoised_estimate itself."""
    from qgf_lite.checks.guidance import reference_denoised_estimate
    from qgf_lite.guidance import denoised_estimate
    from qgf_lite.toy.experiments import one_step_estimates

    _, noise = inputs
    t = jnp.linspace(0.0, 0.9, BATCH)
    bandit_velocity = lambda obs, a, s: velocity_jax(jnp.zeros_like(a), a, s)  # noqa: E731
    want = denoised_estimate(bandit_velocity, None, noise, t)
    _close(reference_denoised_estimate(bandit_velocity, None, noise, t), np.asarray(want))
    path = jnp.stack([noise, 0.5 * noise, 0.25 * noise])
    estimates = one_step_estimates(bandit_velocity, path)
    for k in range(2):
        _close(estimates[k], np.asarray(denoised_estimate(bandit_velocity, None, path[k], jnp.full((BATCH,), k / 2))))
