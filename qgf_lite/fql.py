"""FQL, flow Q-learning (Park, Li & Levine 2025), as a baseline for QGF (docs/algorithm.md §5).

Instead of steering the behaviour-cloned flow at test time (§4), FQL trains a *one-step policy*

    mu_omega(s, z) -> a,     z ~ N(0, I) of the action chunk's size,

that maps noise to an action chunk in one network call. It is trained against the critic while being distilled
from the BC flow: for a batch of B states s_b and noises z_b, with D = chunk size,

    a_flow_b = clip(ODE_flow(s_b, z_b))                      (Euler sample of the BC flow from the same z_b,
                                                               ``qgf_lite.flow.euler_sample``; a constant)
    L_distill = 1/(B D) sum_b || mu(s_b, z_b) - stop_grad(a_flow_b) ||^2
    Q_b       = agg_i Q_i(s_b, clip(mu(s_b, z_b)))           (agg = mean over the ensemble, as the reference)
    L_Q       = -(1/B) sum_b Q_b / stop_grad((1/B) sum_b |Q_b|)
    L         = L_Q + alpha L_distill.

L_distill is the mean over batch *and* coordinates (``jnp.mean`` of the squared difference, as the reference
implementation writes it), i.e. the per-sample squared norm divided by D; alpha absorbs that constant. The Q term is
normalised by the batch's mean |Q| (a stop-gradient constant, the reference's ``normalize_q_loss``), so alpha sets
the trade-off independently of the reward scale. alpha -> infinity gives pure distillation (mu reproduces the
BC flow's noise-to-action map); alpha = 0 maximises Q alone.

Sampling is one call: a = clip(mu(s, z)), cost 1 network evaluation per action.

In a train state the policy is ``state.fql_params`` (``QGFConfig(fql=True)``), wrapped by
``qgf_lite.training.fql_policy_fn``. The reference's actor loss also contains the BC flow-matching loss of its own
flow (trained jointly there); here the BC flow is the package's policy, trained by its own loss in the same step,
and the FQL update reads it as a constant.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Callable, Sequence
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from qgf_lite.flow import euler_sample
from qgf_lite.learners import CRITIC_CHOICES, Learner, LearnerContext, check_bool, check_choice, learner_field
from qgf_lite.networks import MLP, as_obs
from qgf_lite.validation import (
    as_float_array,
    is_concrete,
    require_callable,
    require_clip,
    require_obs,
    require_positive_int,
    require_rank,
    require_scalar,
)

Policy = Callable  # (obs | None, noise (B, D)) -> actions (B, D)
Critic = Callable  # (obs | None, actions (B, D)) -> Q (members, B) or (B,)

Q_AGGREGATES = ("mean", "min")  # how the actor loss reduces the critic ensemble; "mean" is the reference's

__all__ = [
    "FQLConfig",
    "LEARNER",
    "OneStepPolicy",
    "Q_AGGREGATES",
    "distillation_loss",
    "flow_targets",
    "fql_loss",
    "fql_q_loss",
    "fql_sample",
]


class OneStepPolicy(nn.Module):
    """mu(s, z) -> a: an MLP on concat[obs, noise], shape (batch, chunk_dim); unbounded output (clip when used)."""

    chunk_dim: int
    hidden_dims: Sequence[int] = (512, 512, 512, 512)
    layer_norm: bool = True

    @nn.compact
    def __call__(self, obs: jnp.ndarray | None, noise: jnp.ndarray) -> jnp.ndarray:
        batch = noise.shape[0]
        x = jnp.concatenate([as_obs(obs, batch, noise.dtype), noise], axis=-1)
        return MLP(tuple(self.hidden_dims), self.chunk_dim, self.layer_norm)(x)


def require_alpha(alpha) -> float:
    """alpha: a finite number >= 0 (traced values pass)."""
    require_scalar("alpha", alpha, "pass one number")
    if alpha is None or isinstance(alpha, bool):
        raise TypeError(f"`alpha` must be a number >= 0, got {alpha!r}.")
    if is_concrete(alpha):
        value = np.asarray(alpha, dtype=float)
        if not np.isfinite(value):
            raise ValueError(f"`alpha` must be a finite number >= 0 (the distillation weight), got {alpha!r}.")
        if value < 0:
            raise ValueError(f"`alpha` must be >= 0 (the distillation weight), got {alpha!r}.")
    return alpha


def _policy_actions(policy: Policy, obs, noise) -> jnp.ndarray:
    require_callable("policy", policy, "(obs, noise) -> actions")
    actions = policy(obs, noise)
    if jnp.shape(actions) != noise.shape:
        raise ValueError(
            f"`policy` must return an array of the noise's shape {noise.shape}, got shape {jnp.shape(actions)}."
        )
    return actions


def _check_noise(obs, noise):
    noise = as_float_array("noise", noise)
    require_rank("noise", noise, 2, "(batch, action_dim)")
    require_obs(obs, noise.shape[0])
    return noise


def flow_targets(velocity, obs, noise, *, steps: int = 10, clip=(-1.0, 1.0)) -> jnp.ndarray:
    """stop_grad(clip(ODE_flow(s, z))): the BC flow's Euler sample from ``noise``, (batch, action_dim).

    ``qgf_lite.flow.euler_sample`` with ``steps`` steps, as a constant (gradients do not reach the flow).
    """
    return jax.lax.stop_gradient(euler_sample(velocity, obs, noise, steps=steps, clip=clip))


def distillation_loss(policy: Policy, obs, noise, targets) -> jnp.ndarray:
    """mean over batch and coordinates of (mu(s, z) - targets)^2, i.e. (1/(B D)) sum_b ||mu(s_b, z_b) - t_b||^2.

    Args:
      policy: (obs, noise) -> actions (batch, D), the one-step policy.
      obs: None or (batch, obs_dim).
      noise: z, (batch, D).
      targets: (batch, D), e.g. ``flow_targets`` from the same noise; treated as constants.
    """
    noise = _check_noise(obs, noise)
    targets = as_float_array("targets", targets)
    if targets.shape != noise.shape:
        raise ValueError(f"`targets` must have the noise's shape {noise.shape}, got {targets.shape}.")
    actions = _policy_actions(policy, obs, noise)
    return jnp.mean(jnp.square(actions - jax.lax.stop_gradient(targets)))


def fql_q_loss(
    critic: Critic,
    obs,
    actions,
    *,
    aggregate: str = "mean",
    normalize: bool = True,
    clip=(-1.0, 1.0),
    return_q: bool = False,
):
    """-mean_b Q_b / stop_grad(mean_b |Q_b|) with Q_b = agg_i Q_i(s_b, clip(a_b)).

    Args:
      critic: (obs, actions) -> (members, batch) ensemble outputs, or (batch,) already reduced.
      obs: None or (batch, obs_dim).
      actions: (batch, D), the one-step policy's (unclipped) actions; gradients flow through them.
      aggregate: "mean" (the reference) or "min" over the ensemble members.
      normalize: divide by the batch's mean |Q| (a constant; 1e-8 is added against a zero batch).
      clip: (low, high) applied to the actions before the critic, or None.
      return_q: also return Q_b, (batch,).
    """
    require_callable("critic", critic, "(obs, actions) -> Q")
    actions = as_float_array("actions", actions)
    require_rank("actions", actions, 2, "(batch, action_dim)")
    require_obs(obs, actions.shape[0])
    if aggregate not in Q_AGGREGATES:
        raise ValueError(f"`aggregate` must be one of {', '.join(map(repr, Q_AGGREGATES))}, got {aggregate!r}.")
    clip = require_clip(clip)
    if clip is not None:
        actions = jnp.clip(actions, *clip)
    q = critic(obs, actions)
    if jnp.ndim(q) == 2:
        q = jnp.mean(q, axis=0) if aggregate == "mean" else jnp.min(q, axis=0)
    if jnp.shape(q) != (actions.shape[0],):
        raise ValueError(
            f"`critic` must return (members, {actions.shape[0]}) or ({actions.shape[0]},), got shape {jnp.shape(q)}."
        )
    loss = -jnp.mean(q)
    if normalize:
        loss = loss / jax.lax.stop_gradient(jnp.mean(jnp.abs(q)) + 1e-8)
    return (loss, q) if return_q else loss


def fql_loss(
    policy: Policy,
    critic: Critic,
    velocity,
    obs,
    noise,
    *,
    alpha,
    flow_steps: int = 10,
    aggregate: str = "mean",
    normalize: bool = True,
    clip=(-1.0, 1.0),
    return_parts: bool = False,
):
    """L = fql_q_loss + alpha * distillation_loss, both at mu(s, z) for the same noise z (see the module doc).

    Args:
      policy: (obs, noise) -> actions, the one-step policy (the only thing differentiated).
      critic: (obs, actions) -> (members, batch) or (batch,); a constant.
      velocity: (obs, a, t) -> v, the BC flow whose Euler sample from z is the distillation target; a constant.
      obs: None or (batch, obs_dim).
      noise: z, (batch, D).
      alpha: the distillation weight, a finite number >= 0.
      flow_steps: Euler steps K of the target.
      aggregate, normalize, clip: as ``fql_q_loss`` (``clip`` also clips the flow target, as its sampler does).
      return_parts: also return {"q_loss", "distill_loss", "q_mean"}.
    """
    require_alpha(alpha)
    noise = _check_noise(obs, noise)
    flow_steps = require_positive_int("flow_steps", flow_steps)
    targets = flow_targets(velocity, obs, noise, steps=flow_steps, clip=clip)
    actions = _policy_actions(policy, obs, noise)
    distill = jnp.mean(jnp.square(actions - targets))
    q_loss, q = fql_q_loss(critic, obs, actions, aggregate=aggregate, normalize=normalize, clip=clip, return_q=True)
    loss = q_loss + alpha * distill
    if return_parts:
        return loss, {"q_loss": q_loss, "distill_loss": distill, "q_mean": jnp.mean(q)}
    return loss


def fql_sample(policy: Policy, obs, noise, *, clip=(-1.0, 1.0)) -> jnp.ndarray:
    """a = clip(mu(s, z)): one policy call per action chunk, (batch, D) like ``noise``."""
    noise = _check_noise(obs, noise)
    clip = require_clip(clip)
    actions = _policy_actions(policy, obs, noise)
    return actions if clip is None else jnp.clip(actions, *clip)


# ----------------------------------------------------------------------------------------------- the learner
# FQL as a training-time learner (qgf_lite.learners): the one-step policy trained from the core's batches against
# the core BC flow and critic (constants). `qgf-lite train --fql` enables it.


@dataclasses.dataclass(frozen=True)
class FQLConfig:
    """FQL's options (``QGFConfig(learners=(FQLConfig(...),))``, or ``fql=True`` and ``fql_*``)."""

    learner: ClassVar[str] = "fql"

    alpha: float = learner_field(10.0, "FQL: weight (>= 0) of the distillation loss against the normalised Q loss")
    hidden: tuple[int, ...] = learner_field(
        (), "FQL: hidden layer widths of the one-step policy; empty: the velocity network's (actor_hidden)"
    )
    critic: str = learner_field(
        "online",
        "FQL: the critic the one-step policy maximises, online (as the FQL reference) or target (the Polyak copy)",
    )
    q_aggregate: str = learner_field(
        "mean", "FQL: how the actor loss reduces the Q ensemble, mean (as the FQL reference) or min"
    )
    normalize_q: bool = learner_field(
        True, "FQL: divide the Q loss by the batch's mean |Q| (stop-gradient), as the FQL reference's normalize_q_loss"
    )

    def __post_init__(self):
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, numbers.Real):
            raise TypeError(f"`fql_alpha` must be a number, got {self.alpha!r} ({type(self.alpha).__name__}).")
        if not math.isfinite(self.alpha) or self.alpha < 0:
            raise ValueError(f"`fql_alpha` must be a finite number >= 0 (the distillation weight), got {self.alpha!r}.")
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "hidden", tuple(require_positive_int("fql_hidden", w) for w in self.hidden))
        check_choice("fql_critic", self.critic, CRITIC_CHOICES)
        check_choice("fql_q_aggregate", self.q_aggregate, Q_AGGREGATES)
        object.__setattr__(self, "normalize_q", check_bool("fql_normalize_q", self.normalize_q))


def _fql_hidden_dims(config, options: FQLConfig) -> tuple[int, ...]:
    return options.hidden or config.actor_hidden


def _build_fql_network(config, options: FQLConfig) -> OneStepPolicy:
    return OneStepPolicy(config.chunk_dim, _fql_hidden_dims(config, options), config.layer_norm)


def _fql_init_inputs(config, options: FQLConfig):
    return jnp.zeros((1, config.obs_dim)), jnp.zeros((1, config.chunk_dim))


def _fql_learner_loss(network, params, ctx: LearnerContext):
    """``fql_loss`` on the batch's observations with noise z ~ N(0, I) from the learner's key, the BC flow's Euler
    sample (``flow_steps`` steps, the policy before this step's update) as distillation target, and Q from the online
    or target critic (``critic``, before the update) reduced by ``q_aggregate``."""
    options = ctx.options
    velocity = functools.partial(ctx.actor.apply, jax.lax.stop_gradient(ctx.policy_params))
    critic = functools.partial(ctx.critic.apply, jax.lax.stop_gradient(ctx.critic_params_for(options.critic)))
    noise = jax.random.normal(ctx.key, (jnp.shape(ctx.obs)[0], ctx.config.chunk_dim))
    loss, parts = fql_loss(
        functools.partial(network.apply, params),
        critic,
        velocity,
        ctx.obs,
        noise,
        alpha=options.alpha,
        flow_steps=ctx.config.flow_steps,
        aggregate=options.q_aggregate,
        normalize=options.normalize_q,
        return_parts=True,
    )
    return loss, {"q_loss": parts["q_loss"], "distill_loss": parts["distill_loss"], "q_mean": parts["q_mean"]}


LEARNER = Learner(
    name="fql",
    options=FQLConfig,
    build=_build_fql_network,
    init_inputs=_fql_init_inputs,
    loss=_fql_learner_loss,
    key_tag=0x46514C31,
    samplers={
        "fql": dict(
            # `velocity` is FQL's one-step policy (obs, noise) -> actions (``qgf_lite.training.sampler_velocity_fn``):
            # one call, then the clip. Neither the critic nor `steps` is used at test time.
            run=lambda s, velocity, critic, obs, noise, w, clip: fql_sample(velocity, obs, noise, clip=clip),
            counts=lambda steps, n, ascent_steps, mode: (1, 0, 0, 0),
            label=lambda s, w: "FQL",
            summary="flow Q-learning: one call of a one-step policy trained to maximise Q while distilling the flow",
        )
    },
    architecture=lambda config, options: {"fql_hidden": _fql_hidden_dims(config, options)},
    label="FQL",
    noun="one-step policy",
    summary="also train the FQL baseline (docs/algorithm.md §5): a one-step policy mu(s, z) that maximises Q while "
    "distilling the BC flow, from the same batches",
)
