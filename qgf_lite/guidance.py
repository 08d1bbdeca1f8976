"""Test-time guidance of a flow policy by a critic (docs/algorithm.md §4), and its baselines.

For k = 0..K-1, t = k/K, dt = 1/K:

    v     = v(s, a, t)
    a_hat = clip(a + (1 - t) * stop_grad(v))        # one Euler step to a clean-looking action
    g     = grad_{a_hat} Q(s, a_hat)
    a     = a + (v + w * g) * dt

then a = clip(a). ``mode`` changes only how g is computed:

- ``"qgf"``      as above (the Jacobian of a -> a_hat is dropped, i.e. treated as identity);
- ``"jacobian"`` g = d Q(s, a_hat(a)) / d a, chained through the velocity (a vector-Jacobian product);
- ``"noisy"``    g = grad_a Q(s, a): the critic is queried at the noisy, out-of-distribution a_t;
- ``"bptt"``     g = d Q(s, ODE(a)) / d a through the remaining unguided Euler steps.

``velocity`` is any function (obs, a, t) -> v, with t of shape (batch,), and ``critic`` any function
(obs, a) -> Q of shape (batch,) (for an ensemble, its minimum). Both may be trained networks
(``functools.partial(module.apply, params)``) or analytic fields; everything traces under jit and vmap.

These are the kernels; ``qgf_lite.samplers`` names the methods built from them (``SamplerSpec``), counts their
compute (``sampler_cost``) and dispatches to them.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from qgf_lite.flow import checked_velocity, clipper, euler_integrate
from qgf_lite.validation import (
    as_float_array,
    is_concrete,
    require_callable,
    require_clip,
    require_nonnegative,
    require_obs,
    require_positive_int,
    require_rank,
    require_scalar,
)

MODES = ("qgf", "jacobian", "noisy", "bptt")

Critic = Callable  # (obs | None, actions (B, D)) -> (B,)


def _q_values(critic: Critic, obs, actions) -> jnp.ndarray:
    """critic(obs, actions), checked to hold one Q per particle.

    An ensemble's raw (members, batch) output would otherwise be summed over members by
    ``critic_action_gradient``: a silently wrong gradient instead of the gradient of the minimum.
    """
    q = critic(obs, actions)
    if jnp.shape(q) != (actions.shape[0],):
        raise ValueError(
            f"`critic` must return one Q per particle, shape ({actions.shape[0]},), got shape {jnp.shape(q)}; "
            "for an ensemble pass the minimum over its members (see qgf_lite.critic_fn)."
        )
    return q


def _is_zero_weight(weight) -> bool:
    """True only for a weight known now to be 0 (numpy, not jnp: inside jit even jnp.asarray(0.0) is traced)."""
    return is_concrete(weight) and bool(np.all(np.asarray(weight) == 0.0))


def critic_action_gradient(critic: Critic, obs, actions) -> jnp.ndarray:
    """grad_a Q(s, a) for every particle at once.

    Summing over the batch before differentiating is exact because particle b's Q depends only on
    particle b's action, and it costs one backward pass instead of one per particle.
    """
    return jax.grad(lambda a: jnp.sum(_q_values(critic, obs, a)))(actions)


def denoised_estimate(velocity, obs, actions, t, clip=(-1.0, 1.0), *, stop_gradient: bool = True) -> jnp.ndarray:
    """QGF's one-step estimate a_hat = clip(a + (1 - t) v(s, a, t)): one Euler step straight to t = 1.

    ``t`` has shape (batch,). With ``stop_gradient`` (QGF) the velocity is held fixed, so d a_hat / d a is the
    identity where the clip is inactive; without it the gradient chains through the velocity network (the
    ``"jacobian"`` variant). ``clip`` is (low, high) or None. This is the one implementation of the formula: the
    sampler, the exercise checks and the toy experiments all call it.
    """
    v = velocity(obs, actions, t)
    if stop_gradient:
        v = jax.lax.stop_gradient(v)
    return clipper(clip)(actions + (1.0 - t)[:, None] * v)


def _check_sampler_args(velocity, critic, obs, noise, steps, weight, mode, clip):
    require_callable("velocity", velocity, "(obs, actions, t) -> velocity")
    if mode not in MODES:
        raise ValueError(f"Unknown guidance `mode` {mode!r}; choose one of {', '.join(MODES)}.")
    require_rank("noise", noise, 2, "(batch, action_dim)")
    require_obs(obs, noise.shape[0])
    steps = require_positive_int("steps", steps)
    require_scalar("weight", weight, "to compare several weights, jax.vmap the sampler over them")
    require_nonnegative(
        "weight", weight, "guidance pushes samples up the critic; w = 1/beta of the KL-regularised target"
    )
    if critic is None:
        if not _is_zero_weight(weight):
            raise ValueError("`critic` is None but `weight` is not 0: pass a critic (obs, actions) -> Q to guide.")
    else:
        require_callable("critic", critic, "(obs, actions) -> Q of shape (batch,)")
    return steps, require_clip(clip)


def guided_sample(
    velocity,
    critic: Critic | None,
    obs,
    noise,
    *,
    steps: int = 10,
    weight=0.0,
    mode: str = "qgf",
    clip=(-1.0, 1.0),
    return_path: bool = False,
):
    """Sample from the flow with the critic's action gradient added to the velocity (see module doc).

    Args:
      velocity: (obs, a, t) -> v.
      critic: (obs, a) -> Q of shape (batch,); may be None when ``weight`` is 0.
      obs: None or (batch, obs_dim).
      noise: a0, shape (batch, action_dim).
      steps: number of Euler steps K >= 1.
      weight: guidance weight w >= 0 (a Python number or a traced scalar, so a jitted sampler can
        sweep it without recompiling).
      mode: "qgf", "jacobian", "noisy" or "bptt".
      clip: (low, high) applied to a_hat and to the output, or None for no clipping.
      return_path: also return the particles after every step, shape (steps + 1, batch, action_dim).
    """
    noise = as_float_array("noise", noise)
    steps, clip = _check_sampler_args(velocity, critic, obs, noise, steps, weight, mode, clip)
    velocity = checked_velocity(velocity)
    clip_fn = clipper(clip)
    batch = noise.shape[0]
    dt = 1.0 / steps
    unguided = critic is None or _is_zero_weight(weight)
    weight = jnp.asarray(weight, noise.dtype)

    def times(k):
        return jnp.full((batch,), k * dt, noise.dtype)

    def unguided_flow(a, k_start):
        # Remaining Euler steps k_start..K-1; earlier steps are masked out so the loop has a static length
        # (reverse-mode differentiation needs one), at the price of K velocity calls per outer step.
        def body(a_i, j):
            stepped = a_i + velocity(obs, a_i, times(j)) * dt
            return jnp.where(j >= k_start, stepped, a_i), None

        return jax.lax.scan(body, a, jnp.arange(steps))[0]

    def velocity_and_gradient(a, k):
        t = times(k)
        if unguided:
            return velocity(obs, a, t), jnp.zeros_like(a)
        if mode == "jacobian":
            a_hat, pullback = jax.vjp(lambda a_: denoised_estimate(velocity, obs, a_, t, clip, stop_gradient=False), a)
            v = velocity(obs, a, t)
            return v, pullback(critic_action_gradient(critic, obs, a_hat))[0]
        v = velocity(obs, a, t)
        if mode == "qgf":
            return v, critic_action_gradient(critic, obs, denoised_estimate(velocity, obs, a, t, clip))
        if mode == "noisy":
            return v, critic_action_gradient(critic, obs, a)
        # bptt
        return v, jax.grad(lambda a_: jnp.sum(_q_values(critic, obs, clip_fn(unguided_flow(a_, k)))))(a)

    def drift(a, k):
        v, g = velocity_and_gradient(a, k)
        return v + weight * g

    return euler_integrate(drift, noise, steps, clip, return_path)


def select_highest(proposals, scores) -> jnp.ndarray:
    """Per row, the proposal with the highest score: proposals (batch, n, dim), scores (batch, n) -> (batch, dim).
    Ties go to the first."""
    return jnp.take_along_axis(proposals, jnp.argmax(scores, axis=1)[:, None, None], axis=1)[:, 0]


def best_of_n(
    velocity,
    critic: Critic,
    obs,
    noise,
    *,
    steps: int = 10,
    weight=0.0,
    mode: str = "qgf",
    clip=(-1.0, 1.0),
    return_all: bool = False,
):
    """Best-of-N (BFN): draw N proposals per state (guided when ``weight`` > 0), keep the highest-Q one.

    ``noise`` has shape (batch, n, action_dim); ``obs`` is None or (batch, obs_dim). Returns (batch, action_dim),
    and with ``return_all`` also the proposals (batch, n, action_dim) and their Q values (batch, n).
    """
    require_callable("critic", critic, "(obs, actions) -> Q of shape (batch,)")
    noise = as_float_array("noise", noise)
    require_rank("noise", noise, 3, "(batch, n, action_dim)")
    batch, n, dim = noise.shape
    require_obs(obs, batch)
    flat_obs = None if obs is None else jnp.repeat(jnp.asarray(obs), n, axis=0)
    proposals = guided_sample(
        velocity, critic, flat_obs, noise.reshape(batch * n, dim), steps=steps, weight=weight, mode=mode, clip=clip
    )
    scores = _q_values(critic, flat_obs, proposals).reshape(batch, n)
    proposals = proposals.reshape(batch, n, dim)
    best = select_highest(proposals, scores)
    if return_all:
        return best, proposals, scores
    return best


def gradient_step(
    velocity,
    critic: Critic,
    obs,
    noise,
    *,
    steps: int = 10,
    step_size=0.01,
    ascent_steps: int = 3,
    clip=(-1.0, 1.0),
):
    """Sample with w = 0, then take ``ascent_steps`` steps a <- clip(a + step_size * grad_a Q(s, a))."""
    require_callable("critic", critic, "(obs, actions) -> Q of shape (batch,)")
    ascent_steps = require_positive_int("ascent_steps", ascent_steps, minimum=0)
    require_scalar("step_size", step_size, "one step size is shared by every particle")
    require_nonnegative("step_size", step_size, "a negative step descends the critic")
    actions = guided_sample(velocity, None, obs, noise, steps=steps, weight=0.0, clip=clip)
    clip_fn = clipper(require_clip(clip))

    def ascend(a, _):
        return clip_fn(a + step_size * critic_action_gradient(critic, obs, a)), None

    return jax.lax.scan(ascend, actions, None, length=ascent_steps)[0]


__all__ = [
    "MODES",
    "Critic",
    "best_of_n",
    "critic_action_gradient",
    "denoised_estimate",
    "gradient_step",
    "guided_sample",
    "select_highest",
]
