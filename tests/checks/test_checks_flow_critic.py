"""The notebook 01/02 exercise checks accept correct solutions and explain plausible wrong ones.

Correct solutions here are written independently of qgf_lite (plain numpy), so a check that passes them
agrees with an independent computation, and each wrong variant is a mistake a student could make.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qgf_lite import checks
from qgf_lite.checks import CheckFailed


def _fails_with(check, fn, *fragments):
    with pytest.raises(CheckFailed) as info:
        check(fn)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in message:\n{message}"
    return message


def _not_implemented(*args):
    raise NotImplementedError


# ----------------------------------------------------------------------------- solutions (numpy)
def interp_ok(a0, a1, t):
    t = np.asarray(t)[:, None]
    return (1 - t) * np.asarray(a0) + t * np.asarray(a1)


def fm_loss_ok(velocity, obs, a0, a1, t):
    a_t = interp_ok(a0, a1, t)
    err = np.asarray(velocity(obs, a_t, t)) - (np.asarray(a1) - np.asarray(a0))
    return np.mean(np.sum(err**2, axis=1))


def euler_step_ok(velocity, obs, a, t, dt):
    return np.asarray(a) + dt * np.asarray(velocity(obs, a, t))


def euler_sample_ok(velocity, obs, noise, steps):
    a = np.asarray(noise)
    for k in range(steps):
        a = a + np.asarray(velocity(obs, a, np.full(a.shape[0], k / steps))) / steps
    return np.clip(a, -1, 1)


def expectile_ok(diff, expectile):
    # jax.numpy, not numpy: notebook 02 trains the value network through it, so the check differentiates it.
    return jnp.abs(expectile - (diff < 0)) * diff**2


def chunk_returns_ok(rewards, terminals, discount):
    rewards, terminals = np.asarray(rewards), np.asarray(terminals)
    out = np.zeros(rewards.shape[0])
    for b in range(rewards.shape[0]):
        for i in range(rewards.shape[1]):
            out[b] += discount**i * rewards[b, i]
            if terminals[b, i]:
                break
    return out


def td_target_ok(returns, bootstrap_mask, next_value, discount, horizon):
    return np.asarray(returns) + discount**horizon * np.asarray(bootstrap_mask) * np.asarray(next_value)


# ----------------------------------------------------------------------------- correct solutions pass
@pytest.mark.parametrize(
    "check, solution",
    [
        (checks.check_interpolation, interp_ok),
        (checks.check_flow_matching_loss, fm_loss_ok),
        (checks.check_euler_step, euler_step_ok),
        (checks.check_euler_sample, euler_sample_ok),
        (checks.check_expectile_loss, expectile_ok),
        (checks.check_chunk_returns, chunk_returns_ok),
        (checks.check_td_target, td_target_ok),
    ],
)
def test_correct_solution_passes(check, solution, capsys):
    check(solution)
    assert "[ok]" in capsys.readouterr().out


@pytest.mark.parametrize(
    "check",
    [
        checks.check_interpolation,
        checks.check_flow_matching_loss,
        checks.check_euler_step,
        checks.check_euler_sample,
        checks.check_expectile_loss,
        checks.check_chunk_returns,
        checks.check_td_target,
    ],
)
def test_unimplemented_says_so(check):
    _fails_with(check, _not_implemented, "not implemented yet")


def test_a_crash_is_reported_not_raised():
    _fails_with(checks.check_td_target, lambda *a: 1 / 0, "ZeroDivisionError")


# ----------------------------------------------------------------------------- 1.1 interpolation
def test_interpolation_mistakes():
    _fails_with(checks.check_interpolation, lambda a0, a1, t: t[:, None] * a0 + (1 - t[:, None]) * a1, "swapped")
    _fails_with(checks.check_interpolation, lambda a0, a1, t: a0 + t[:, None] * a1, "(1 - t) factor")
    # t without a trailing axis cannot broadcast against (batch, dim): the hint says how to fix it.
    _fails_with(checks.check_interpolation, lambda a0, a1, t: (1 - t) * a0 + t * a1, "t[:, None]")


# ----------------------------------------------------------------------------- 1.2 flow-matching loss
def test_flow_matching_loss_mistakes():
    def wrong_sign(velocity, obs, a0, a1, t):
        a_t = interp_ok(a0, a1, t)
        return np.mean(np.sum((np.asarray(velocity(obs, a_t, t)) - (np.asarray(a0) - np.asarray(a1))) ** 2, axis=1))

    def at_data(velocity, obs, a0, a1, t):
        return np.mean(np.sum((np.asarray(velocity(obs, a1, t)) - (np.asarray(a1) - np.asarray(a0))) ** 2, axis=1))

    def mean_over_dims(velocity, obs, a0, a1, t):
        err = np.asarray(velocity(obs, interp_ok(a0, a1, t), t)) - (np.asarray(a1) - np.asarray(a0))
        return np.mean(err**2)

    def per_sample(velocity, obs, a0, a1, t):
        err = np.asarray(velocity(obs, interp_ok(a0, a1, t), t)) - (np.asarray(a1) - np.asarray(a0))
        return np.sum(err**2, axis=1)

    _fails_with(checks.check_flow_matching_loss, wrong_sign, "wrong sign", "a1 - a0")
    _fails_with(checks.check_flow_matching_loss, at_data, "evaluated at the data a1")
    _fails_with(checks.check_flow_matching_loss, mean_over_dims, "averaged over the action dimensions")
    _fails_with(checks.check_flow_matching_loss, per_sample, "single number")


# ----------------------------------------------------------------------------- 1.3 / 1.4 Euler
def test_euler_step_mistakes():
    _fails_with(checks.check_euler_step, lambda v, s, a, t, dt: a + v(s, a, t), "forgets dt")
    _fails_with(checks.check_euler_step, lambda v, s, a, t, dt: a - v(s, a, t) * dt, "wrong way")
    _fails_with(checks.check_euler_step, lambda v, s, a, t, dt: a + v(s, a, t + dt) * dt, "t + dt")
    # The state is part of the signature, as in qgf_lite.flow: dropping it or passing None is named.
    _fails_with(checks.check_euler_step, lambda v, s, a, t, dt: a + v(None, a, t) * dt, "obs is None")
    _fails_with(checks.check_euler_step, lambda v, s, a, t, dt: a + v(a, s, t) * dt, "swapped")
    _fails_with(
        checks.check_euler_step,
        lambda v, a, t, dt: a + v(a, t) * dt,
        "takes 4 positional arguments",
        "velocity(obs, a, t)",
    )


def test_euler_sample_mistakes():
    def no_clip(velocity, obs, noise, steps):
        a = np.asarray(noise)
        for k in range(steps):
            a = a + np.asarray(velocity(obs, a, k / steps)) / steps
        return a

    def backwards(velocity, obs, noise, steps):
        a = np.asarray(noise)
        for k in range(steps):
            a = a + np.asarray(velocity(obs, a, 1 - k / steps)) / steps
        return np.clip(a, -1, 1)

    def clip_every_step(velocity, obs, noise, steps):
        a = np.asarray(noise)
        for k in range(steps):
            a = np.clip(a + np.asarray(velocity(obs, a, k / steps)) / steps, -1, 1)
        return a

    _fails_with(checks.check_euler_sample, no_clip, "not clipped")
    _fails_with(checks.check_euler_sample, backwards, "time runs backwards")
    _fails_with(checks.check_euler_sample, clip_every_step, "clipped after every step")


def test_toy_velocity_accepts_scalar_and_batched_time():
    velocity = checks.toy_velocity(0)
    a, obs = jnp.ones((4, 3)), jnp.ones((4, 2))
    batched = velocity(obs, a, jnp.full((4,), 0.3))
    np.testing.assert_allclose(velocity(obs, a, 0.3), batched, rtol=1e-6)
    assert not np.allclose(velocity(obs, a, 0.0), batched)  # the field depends on t
    assert not np.allclose(velocity(-obs, a, 0.3), batched)  # and on the state


def test_toy_velocity_without_state_ignores_obs():
    velocity = checks.toy_velocity(0, obs_dim=None)
    a = jnp.ones((4, 3))
    np.testing.assert_allclose(velocity(None, a, 0.3), velocity(jnp.ones((4, 2)), a, 0.3))


# ----------------------------------------------------------------------------- 2.x critic
def test_expectile_mistakes():
    _fails_with(
        checks.check_expectile_loss, lambda d, tau: np.abs(tau - (np.asarray(d) > 0)) * np.asarray(d) ** 2, "swapped"
    )
    _fails_with(
        checks.check_expectile_loss, lambda d, tau: np.abs(tau - (np.asarray(d) < 0)) * np.abs(d), "not squared"
    )
    _fails_with(checks.check_expectile_loss, lambda d, tau: np.mean(expectile_ok(d, tau)), "single number")


def test_expectile_in_numpy_is_told_it_must_be_differentiable():
    def in_numpy(diff, expectile):
        diff = np.asarray(diff)
        return np.abs(expectile - (diff < 0)) * diff**2

    _fails_with(
        checks.check_expectile_loss, in_numpy, "the values are right", "jax.grad cannot differentiate", "jax.numpy"
    )


def test_expectile_with_a_python_if_is_told_to_use_jnp_where():
    def with_if(diff, expectile):
        if diff < 0:  # a student's first try: one decision for the whole array
            return (1 - expectile) * diff**2
        return expectile * diff**2

    def with_if_on_numpy(diff, expectile):
        return (1 - expectile) * diff**2 if np.asarray(diff) < 0 else expectile * diff**2

    for fn in (with_if, with_if_on_numpy, jax.jit(with_if)):
        message = _fails_with(
            checks.check_expectile_loss, fn, "Python `if`", "cannot decide per element", "jnp.where(diff < 0"
        )
        assert "Traceback" not in message


def test_chunk_returns_mistakes():
    def no_stop(rewards, terminals, discount):
        return np.sum(discount ** np.arange(rewards.shape[1]) * np.asarray(rewards), axis=1)

    def drops_terminal_reward(rewards, terminals, discount):
        alive = np.cumsum(np.asarray(terminals), axis=1) == 0
        return np.sum(discount ** np.arange(rewards.shape[1]) * np.asarray(rewards) * alive, axis=1)

    _fails_with(checks.check_chunk_returns, no_stop, "does not stop at the first terminal")
    _fails_with(checks.check_chunk_returns, drops_terminal_reward, "terminal step itself is dropped")
    _fails_with(checks.check_chunk_returns, lambda r, term, g: chunk_returns_ok(r, term, 1.0), "not discounted")


def test_td_target_mistakes():
    _fails_with(
        checks.check_td_target, lambda r, m, v, g, h: np.asarray(r) + g * np.asarray(m) * np.asarray(v), "gamma^H"
    )
    _fails_with(checks.check_td_target, lambda r, m, v, g, h: np.asarray(r) + g**h * np.asarray(v), "mask is missing")


# ----------------------------------------------------------------------------- plots.py (shared figure builders)
def test_arrow_tips_land_at_point_plus_scaled_vector():
    from qgf_lite.presentation import plots

    points = np.array([[0.0, 0.0], [0.5, -0.5]])
    vectors = np.array([[1.0, 0.0], [0.0, 2.0]])
    trace = plots.arrow_trace(points, vectors, scale=0.1)
    xs, ys = np.array(trace.x, dtype=float), np.array(trace.y, dtype=float)
    # Each arrow is tail, tip, gap, left barb, tip, right barb, gap.
    tips = np.stack([xs[1::7], ys[1::7]], axis=1)
    np.testing.assert_allclose(tips, points + 0.1 * vectors)
    capped = plots.arrow_trace(points, vectors, scale=1.0, max_length=0.5)
    capped_tips = np.stack([np.array(capped.x, dtype=float)[1::7], np.array(capped.y, dtype=float)[1::7]], axis=1)
    np.testing.assert_allclose(np.linalg.norm(capped_tips - points, axis=1), [0.5, 0.5])


def test_trajectories_draw_one_polyline_per_particle():
    from qgf_lite.presentation import plots

    path = np.random.default_rng(0).normal(size=(4, 6, 2))
    fig = plots.trajectories(path, max_particles=5)
    lines = fig.data[0]
    assert sum(v is None for v in lines.x) == 5  # one gap after each of the 5 drawn particles
    np.testing.assert_allclose(np.array(lines.x[:4], dtype=float), path[:, 0, 0])
    np.testing.assert_allclose(np.array(fig.data[2].x), path[-1, :5, 0])  # end markers = last positions


def test_plot_builders_reject_bad_shapes():
    from qgf_lite.presentation import plots

    with pytest.raises(ValueError, match="shape"):
        plots.scatter_samples(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="len\\(grid_y\\)"):
        plots.density_heatmap(np.arange(4), np.arange(3), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="same number of traces"):
        plots.frames_figure([[plots.scatter_trace(np.zeros((2, 2)))], []], [0, 1])
    with pytest.raises(ValueError, match="not in the history"):
        plots.loss_curve([{"step": 1, "policy_loss": 1.0}], ["critic_loss"])


def test_frames_figure_has_one_slider_step_per_frame():
    from qgf_lite.presentation import plots

    frames = [[plots.scatter_trace(np.full((3, 2), float(i)))] for i in range(4)]
    fig = plots.frames_figure(frames, [1, 2, 4, 8], active=2)
    assert [f.name for f in fig.frames] == ["1", "2", "4", "8"]
    assert len(fig.layout.sliders[0].steps) == 4
    np.testing.assert_allclose(fig.data[0].x, 2.0)  # the active frame is what is shown first
