"""Flow-matching behavioural cloning (docs/algorithm.md §2): the loss, the Euler integrator and the plain sampler.

Time runs from noise (t = 0) to data (t = 1): a_t = (1 - t) a0 + t a1 and the target velocity is a1 - a0.
``euler_integrate`` is the one Euler loop of the package: the plain sampler here and every guided sampler of
``qgf_lite.guidance`` (which adds the critic's gradient to the drift) run through it.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from qgf_lite.validation import (
    as_float_array,
    require_callable,
    require_clip,
    require_obs,
    require_positive_int,
    require_rank,
)

Velocity = Callable  # (obs | None, actions (B, D), t (B,)) -> (B, D)


def sample_flow_times(key, batch: int, time_grid: int | None = 10) -> jnp.ndarray:
    """t on the grid {0, 1/K, ..., 1} (the reference's choice, K = time_grid) or t ~ U[0, 1] when None."""
    if time_grid is None:
        return jax.random.uniform(key, (batch,))
    return jax.random.randint(key, (batch,), 0, time_grid + 1) / time_grid


def interpolate(noise: jnp.ndarray, actions: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
    """The straight path between noise and data: a_t = (1 - t) a0 + t a1, with t of shape (batch,)."""
    t = t[:, None]
    return (1.0 - t) * noise + t * actions


def flow_matching_loss(
    velocity: Velocity,
    obs,
    actions,
    key,
    time_grid: int | None = 10,
    weights=None,
) -> jnp.ndarray:
    """mean_b || v(s_b, a_t, t) - (a1 - a0) ||^2 with a0 ~ N(0, I) and t from ``sample_flow_times``.

    ``weights`` (batch,) optionally weights each sample (normalised by their sum), e.g. to drop
    action chunks that cross an episode boundary.
    """
    require_callable("velocity", velocity, "(obs, actions, t) -> velocity")
    actions = as_float_array("actions", actions)
    require_rank("actions", actions, 2, "(batch, action_dim)")
    batch = actions.shape[0]
    require_obs(obs, batch)
    if time_grid is not None:
        time_grid = require_positive_int("time_grid", time_grid)
    noise_key, time_key = jax.random.split(key)
    noise = jax.random.normal(noise_key, actions.shape, actions.dtype)
    t = sample_flow_times(time_key, batch, time_grid).astype(actions.dtype)
    target = actions - noise
    pred = velocity(obs, interpolate(noise, actions, t), t)
    if jnp.shape(pred) != actions.shape:
        # A (batch, 1) or (batch,) output would broadcast against the target and give a wrong loss silently.
        raise ValueError(
            f"`velocity` must return an array of the actions' shape {actions.shape}, got shape {jnp.shape(pred)}."
        )
    per_sample = jnp.sum(jnp.square(pred - target), axis=-1)
    if weights is None:
        return jnp.mean(per_sample)
    weights = jnp.asarray(weights, per_sample.dtype)
    if weights.shape != (batch,):
        # A (batch, 1) column would broadcast to (batch, batch) and weight the wrong terms silently.
        raise ValueError(f"`weights` must have shape ({batch},), one per sample, got shape {weights.shape}.")
    return jnp.sum(per_sample * weights) / jnp.maximum(jnp.sum(weights), 1e-8)


def clipper(clip) -> Callable:
    """a -> clip(a, low, high) for ``clip`` = (low, high), or the identity for None."""
    if clip is None:
        return lambda a: a
    low, high = clip
    return lambda a: jnp.clip(a, low, high)


def checked_velocity(velocity: Velocity) -> Velocity:
    """``velocity`` whose output is checked to have the actions' shape (a static check, free under jit)."""

    def checked(obs, actions, t):
        v = velocity(obs, actions, t)
        if jnp.shape(v) != actions.shape:
            raise ValueError(
                f"`velocity` must return an array of the actions' shape {actions.shape}, got shape {jnp.shape(v)}."
            )
        return v

    return checked


def euler_integrate(drift: Callable, noise: jnp.ndarray, steps: int, clip=(-1.0, 1.0), return_path: bool = False):
    """a_{k+1} = a_k + drift(a_k, k) / K for k = 0..K-1 from a_0 = ``noise``, then clip (unchecked inputs).

    ``drift(a, k)`` gets the particles (batch, dim) and the step index k (a traced integer; t = k / K) and
    returns da/dt, shape (batch, dim). Returns the clipped a_K, and with ``return_path`` also every particle
    set (K + 1, batch, dim), the last one being the clipped output.
    """
    dt = 1.0 / steps

    def step(a, k):
        a_next = a + drift(a, k) * dt
        return a_next, a_next

    a_final, path = jax.lax.scan(step, noise, jnp.arange(steps))
    a_final = clipper(clip)(a_final)
    if not return_path:
        return a_final
    return a_final, jnp.concatenate([noise[None], path[:-1], a_final[None]], axis=0)


def euler_sample(
    velocity: Velocity,
    obs,
    noise,
    steps: int = 10,
    clip=(-1.0, 1.0),
    return_path: bool = False,
):
    """Integrate da/dt = v(s, a, t) from t = 0 to 1 in ``steps`` Euler steps, then clip.

    Returns the actions (batch, dim), and with ``return_path`` also every particle set
    (steps + 1, batch, dim), the last one being the clipped output. Guided sampling at weight 0
    (``qgf_lite.guided_sample``) gives the same particles: both run ``euler_integrate``.
    """
    require_callable("velocity", velocity, "(obs, actions, t) -> velocity")
    noise = as_float_array("noise", noise)
    require_rank("noise", noise, 2, "(batch, action_dim)")
    require_obs(obs, noise.shape[0])
    steps = require_positive_int("steps", steps)
    clip = require_clip(clip)
    velocity = checked_velocity(velocity)
    batch = noise.shape[0]

    def drift(a, k):
        return velocity(obs, a, jnp.full((batch,), k * (1.0 / steps), noise.dtype))

    return euler_integrate(drift, noise, steps, clip, return_path)


__all__ = [
    "checked_velocity",
    "clipper",
    "euler_integrate",
    "euler_sample",
    "flow_matching_loss",
    "interpolate",
    "sample_flow_times",
]
