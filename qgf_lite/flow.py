"""Flow-matching behavioural cloning (docs/algorithm.md §2): the loss and the plain Euler sampler.

Time runs from noise (t = 0) to data (t = 1): a_t = (1 - t) a0 + t a1 and the target velocity is a1 - a0.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from qgf_lite.validation import (
    as_float_array,
    require_callable,
    require_obs,
    require_positive_int,
    require_rank,
)

Velocity = Callable  # (obs | None, actions (B, D), t (B,)) -> (B, D)


def sample_flow_times(key, batch: int, time_grid: Optional[int] = 10) -> jnp.ndarray:
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
    time_grid: Optional[int] = 10,
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
    (steps + 1, batch, dim), the last one being the clipped output.
    """
    # Unguided sampling is guided sampling at weight 0; one implementation keeps the two identical.
    from qgf_lite.guidance import guided_sample

    return guided_sample(
        velocity, None, obs, noise, steps=steps, weight=0.0, mode="qgf", clip=clip, return_path=return_path
    )


__all__ = ["flow_matching_loss", "euler_sample", "interpolate", "sample_flow_times"]
