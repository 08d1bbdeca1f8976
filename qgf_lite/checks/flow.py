"""Checks for the flow-matching exercises of notebook 01 (docs/algorithm.md §2).

Student signatures (the check calls them exactly like this):

- ``interpolate(a0, a1, t) -> a_t``                 a0, a1: (batch, dim); t: (batch,)
- ``flow_matching_loss(velocity, obs, a0, a1, t) -> ()``  velocity(obs, a_t, t) -> (batch, dim); a scalar loss
- ``euler_step(velocity, obs, a, t, dt) -> a_next``       one Euler step of da/dt = v(s, a, t)
- ``euler_sample(velocity, obs, noise, steps) -> a1``     K Euler steps from t = 0 to 1, then clip to [-1, 1]

They take the state ``obs`` (None or (batch, obs_dim)) where qgf_lite's functions do (``qgf_lite.flow``): the
velocity is called ``velocity(obs, a, t)``, as qgf_lite's velocity networks are. The checks pass a velocity that
depends on the state and a real ``obs``, so a function that drops it or passes None fails with a clear message.

Each check runs the student's function on seeded random inputs, compares it with qgf_lite's reference, and
when they disagree says which common mistake the output matches.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from qgf_lite.checks._core import CheckFailed, call_student, compare_arrays, fail, passed, random_inputs, rng
from qgf_lite.checks.fields import velocity_field  # noqa: F401 - rebuilt in the sandbox
from qgf_lite.flow import euler_sample as _reference_euler_sample
from qgf_lite.flow import interpolate as _reference_interpolate

# batch != dim, so a t of shape (batch,) that is not given a trailing axis fails to broadcast instead of
# silently multiplying the wrong axis.
_BATCH, _DIM, _OBS_DIM = 7, 3, 2


def _times(seed: int, batch: int = _BATCH) -> jnp.ndarray:
    """Times in (0, 1), away from 0 and 1 so that t and 1 - t never coincide with 0/1 mistakes."""
    return jnp.asarray(rng(seed).uniform(0.1, 0.9, size=batch), jnp.float32)


def _column(t) -> jnp.ndarray:
    """t of shape (batch,) or () as something that broadcasts against (batch, dim)."""
    t = jnp.asarray(t, jnp.float32)
    return t[:, None] if t.ndim == 1 else t


def toy_velocity(seed: int = 0, dim: int = _DIM, obs_dim: int | None = _OBS_DIM):
    """A fixed, time-dependent, nonlinear velocity field v(s, a, t) for the checks.

    Accepts t as a number, shape () or shape (batch,), so any reasonable student convention works. It
    depends on t strongly enough that evaluating it at the wrong time is visible, and on the state s (obs of
    shape (batch, obs_dim)) unless ``obs_dim`` is None (then obs is ignored and may be None).
    """
    generator = rng(1000 + seed)
    matrix = generator.normal(scale=0.6, size=(dim, dim)).astype(np.float32)
    drift = generator.normal(size=dim).astype(np.float32)
    wiggle = generator.normal(size=dim).astype(np.float32)
    obs_matrix = None if obs_dim is None else generator.normal(size=(obs_dim, dim)).astype(np.float32)
    return velocity_field(matrix, drift, wiggle, obs_matrix)


def toy_obs(seed: int, batch: int = _BATCH, obs_dim: int = _OBS_DIM) -> jnp.ndarray:
    """States (batch, obs_dim) for the checks' state-dependent toy functions."""
    return jnp.asarray(random_inputs(seed, [(batch, obs_dim)])[0])


def _call_with_time_hint(name: str, fn, *args):
    """``call_student``, plus a hint when the crash is the classic (batch,) times (batch, dim) broadcast."""
    try:
        return call_student(name, fn, *args)
    except CheckFailed as err:
        text = str(err)
        if "broadcast" in text.lower() or "shapes" in text.lower():
            raise CheckFailed(
                text + "\n  Hint: t has shape (batch,) and the actions (batch, dim); "
                "give t a trailing axis (t[:, None]) so each row gets its own time."
            ) from None
        raise


# --------------------------------------------------------------------------- 1.1 interpolation
def check_interpolation(fn) -> None:
    """Exercise 1.1: ``fn(a0, a1, t)`` must return a_t = (1 - t) a0 + t a1 for t of shape (batch,)."""
    name = "interpolation"
    a0, a1 = (jnp.asarray(x) for x in random_inputs(11, [(_BATCH, _DIM), (_BATCH, _DIM)]))
    t = _times(12)
    tc = t[:, None]
    got = _call_with_time_hint(name, fn, a0, a1, t)
    compare_arrays(
        name,
        got,
        _reference_interpolate(a0, a1, t),
        what="a_t",
        known_mistakes=[
            ("a0 and a1 are swapped: t = 0 must give the noise a0 and t = 1 the data a1", tc * a0 + (1 - tc) * a1),
            ("the (1 - t) factor on a0 is missing", a0 + tc * a1),
            ("the noise term (1 - t) a0 is missing", tc * a1),
            ("the t factor on a1 is missing", (1 - tc) * a0 + a1),
        ],
    )
    endpoints = _call_with_time_hint(name, fn, a0, a1, jnp.concatenate([jnp.zeros(3), jnp.ones(_BATCH - 3)]))
    endpoints = np.asarray(endpoints)
    compare_arrays(
        name,
        endpoints,
        np.concatenate([a0[:3], a1[3:]]),
        what="a_t at t = 0 and t = 1",
        known_mistakes=[
            ("t = 0 gives a1 and t = 1 gives a0: the endpoints are swapped", np.concatenate([a1[:3], a0[3:]]))
        ],
    )
    passed(name)


# --------------------------------------------------------------------------- 1.2 flow-matching loss
def reference_flow_matching_loss(velocity, obs, a0, a1, t) -> jnp.ndarray:
    """mean over the batch of || v(s, a_t, t) - (a1 - a0) ||^2, the loss of ``qgf_lite.flow_matching_loss``
    once its noise a0 and times t are fixed."""
    a_t = _reference_interpolate(a0, a1, t)
    return jnp.mean(jnp.sum(jnp.square(velocity(obs, a_t, t) - (a1 - a0)), axis=-1))


def check_flow_matching_loss(fn) -> None:
    """Exercise 1.2: ``fn(velocity, obs, a0, a1, t)`` = mean_b || velocity(obs, a_t, t) - (a1 - a0) ||^2.

    Runs on two input sets, so a diagnosis such as "a constant factor" is only made when it fits both.
    """
    name = "flow_matching_loss"
    velocity = toy_velocity(2)
    got, want, mistakes = [], [], {}
    for case, batch in enumerate((_BATCH, _BATCH + 4)):
        a0, a1 = (jnp.asarray(x) for x in random_inputs(21 + 10 * case, [(batch, _DIM), (batch, _DIM)]))
        t = _times(22 + 10 * case, batch)
        obs = toy_obs(23 + 10 * case, batch)
        tc = t[:, None]
        a_t = _reference_interpolate(a0, a1, t)
        v = velocity(obs, a_t, t)
        target = a1 - a0

        def mean_sq(pred, tgt):
            return jnp.mean(jnp.sum(jnp.square(pred - tgt), axis=-1))

        value = _call_with_time_hint(name, fn, velocity, obs, a0, a1, t)
        if np.ndim(value) != 0:
            fail(
                name,
                f"the loss must be a single number, got an array of shape {np.shape(value)}.",
                "take the mean over the batch of the per-sample squared norms.",
            )
        got.append(value)
        want.append(reference_flow_matching_loss(velocity, obs, a0, a1, t))
        for explanation, wrong in [
            ("the target velocity has the wrong sign: it is a1 - a0 (noise -> data), not a0 - a1", mean_sq(v, a0 - a1)),
            ("the target is the data a1 itself; the flow-matching target is the velocity a1 - a0", mean_sq(v, a1)),
            (
                "the velocity is evaluated at the data a1 instead of the interpolated a_t",
                mean_sq(velocity(obs, a1, t), target),
            ),
            (
                "the velocity is evaluated at the noise a0 instead of the interpolated a_t",
                mean_sq(velocity(obs, a0, t), target),
            ),
            (
                "a_t uses swapped endpoints (t * a0 + (1 - t) * a1)",
                mean_sq(velocity(obs, tc * a0 + (1 - tc) * a1, t), target),
            ),
            (
                "the squared error is averaged over the action dimensions too: sum over the last axis, "
                "then take the mean over the batch",
                jnp.mean(jnp.square(v - target)),
            ),
            ("the loss is summed over the batch; take the mean over the batch", jnp.sum(jnp.square(v - target))),
            ("the error is not squared (an L1 / absolute error)", jnp.mean(jnp.sum(jnp.abs(v - target), axis=-1))),
            ("the norm is not squared (|| . || instead of || . ||^2)", jnp.mean(jnp.linalg.norm(v - target, axis=-1))),
        ]:
            mistakes.setdefault(explanation, []).append(wrong)
    compare_arrays(
        name,
        np.stack([np.asarray(g) for g in got]),
        np.stack(want),
        what="loss",
        known_mistakes=[(explanation, np.stack(values)) for explanation, values in mistakes.items()],
    )
    passed(name)


# --------------------------------------------------------------------------- 1.3 Euler step
def check_euler_step(fn) -> None:
    """Exercise 1.3: ``fn(velocity, obs, a, t, dt)`` = a + velocity(obs, a, t) * dt."""
    name = "euler_step"
    velocity = toy_velocity(3)
    (a,) = (jnp.asarray(x) for x in random_inputs(31, [(_BATCH, _DIM)]))
    t = _times(32)
    obs = toy_obs(33)
    dt = 0.25
    v = velocity(obs, a, t)
    got = _call_with_time_hint(name, fn, velocity, obs, a, t, dt)
    compare_arrays(
        name,
        got,
        a + v * dt,
        what="next particles",
        known_mistakes=[
            ("the step forgets dt: a + v moves a whole time unit instead of dt", a + v),
            ("the step goes the wrong way (a - v dt); time runs from noise (t = 0) to data (t = 1)", a - v * dt),
            ("the velocity is divided by dt instead of multiplied", a + v / dt),
            ("the current position a is missing: return a + v * dt, not the increment v * dt", v * dt),
            (
                "the velocity is evaluated at t + dt; Euler uses the velocity at the start of the step",
                a + velocity(obs, a, t + dt) * dt,
            ),
            ("the velocity is evaluated at t = 0 every time; pass the current t", a + velocity(obs, a, 0.0 * t) * dt),
        ],
    )
    passed(name)


# --------------------------------------------------------------------------- 1.4 Euler sampler
def _euler_variant(
    velocity, obs, noise, steps, *, times=None, dt=None, num_steps=None, clip_each=False, clip_final=True
):
    """The Euler sampler with one ingredient changed, to recognise a student's mistake."""
    dt = 1.0 / steps if dt is None else dt
    times = (lambda k: k / steps) if times is None else times
    a = noise
    for k in range(steps if num_steps is None else num_steps):
        a = a + velocity(obs, a, jnp.full((a.shape[0],), times(k), jnp.float32)) * dt
        if clip_each:
            a = jnp.clip(a, -1.0, 1.0)
    return jnp.clip(a, -1.0, 1.0) if clip_final else a


def check_euler_sample(fn) -> None:
    """Exercise 1.4: ``fn(velocity, obs, noise, steps)`` integrates da/dt = v(s, a, t) from t = 0 to 1 with ``steps``
    Euler steps (t = k / steps, dt = 1 / steps) and clips the result to [-1, 1]."""
    name = "euler_sample"
    velocity = toy_velocity(4)
    (noise,) = (jnp.asarray(x) for x in random_inputs(41, [(_BATCH * 3, _DIM)]))
    obs = toy_obs(42, _BATCH * 3)
    for steps in (4, 7):
        want = _reference_euler_sample(velocity, obs, noise, steps=steps)
        got = call_student(name, fn, velocity, obs, noise, steps)
        compare_arrays(
            name,
            got,
            want,
            what=f"samples with steps={steps}",
            known_mistakes=[
                (
                    "the output is not clipped to [-1, 1] (clip once, after the last step)",
                    _euler_variant(velocity, obs, noise, steps, clip_final=False),
                ),
                (
                    "the particles are clipped after every step; clip only the final output",
                    _euler_variant(velocity, obs, noise, steps, clip_each=True),
                ),
                (
                    "time runs backwards (t = 1 - k/K); it starts at t = 0 (noise)",
                    _euler_variant(velocity, obs, noise, steps, times=lambda k: 1.0 - k / steps),
                ),
                (
                    "the time is off by one step (t = (k + 1)/K); the k-th step starts at t = k/K",
                    _euler_variant(velocity, obs, noise, steps, times=lambda k: (k + 1) / steps),
                ),
                (
                    "the velocity gets the step index k as its time; pass t = k / steps",
                    _euler_variant(velocity, obs, noise, steps, times=lambda k: float(k)),
                ),
                ("the step size is 1 instead of dt = 1/steps", _euler_variant(velocity, obs, noise, steps, dt=1.0)),
                (
                    "one step too many (steps + 1 Euler steps)",
                    _euler_variant(velocity, obs, noise, steps, num_steps=steps + 1),
                ),
                (
                    "one step too few (steps - 1 Euler steps)",
                    _euler_variant(velocity, obs, noise, steps, num_steps=steps - 1),
                ),
            ],
        )
    passed(name, "for 4 and 7 steps")


__all__ = [
    "check_interpolation",
    "check_flow_matching_loss",
    "check_euler_step",
    "check_euler_sample",
    "toy_obs",
    "toy_velocity",
    "reference_flow_matching_loss",
]
