"""CFG-RL: classifier-free guidance on an optimality label (docs/algorithm.md §5), a baseline for QGF.

Instead of steering a behaviour-cloned flow with the critic's gradient at test time (§4), CFG-RL trains one
velocity network ``v(s, a_t, t, o)`` conditioned on a label o and mixes two of its outputs when sampling:

- o = 0 (``UNCONDITIONAL``): flow matching on every dataset action, i.e. behaviour cloning;
- o = 1 (``POSITIVE``): flow matching only on actions the critic calls better than the value,

      e_b = 1[A_b > threshold] c_b,    A_b = min_i Q_i(s_b, a_b) - V(s_b),

  with c_b the chunk validity weight of §3 (0 for chunks that cross an episode end).

Training loss, for one batch with noise a0 ~ N(0, I) and flow times t as in §2 (``qgf_lite.flow``),
u_b = a1_b - a0_b and the positive and unconditional branches drawn independently:

    L = L_pos + lambda L_uncond,
    L_pos    = sum_b e_b || v(s_b, a_t_b, t_b, 1) - u_b ||^2 / sum_b e_b,
    L_uncond = sum_b c_b || v(s_b, a_t_b, t_b, 0) - u_b ||^2 / sum_b c_b,

(lambda = ``uncond_weight``; a normalising sum of 0 counts as 1e-8, so a batch with no positive sample adds 0).
The critic and value only label the data (their values enter through ``stop_gradient``); gradients reach
the conditioned network alone. In expectation this is label-dropout training: v(., 0) learns the behaviour
velocity and v(., 1) the velocity of the behaviour restricted to A > threshold.

Sampling is forward Euler with the classifier-free-guidance velocity

    v = v(s, a, t, 0) + w (v(s, a, t, 1) - v(s, a, t, 0)),

then a final clip: w = 0 is behaviour cloning, w = 1 samples the positive-conditioned flow, w > 1 extrapolates
past it (roughly pi_ref(a|s) p(o=1|s,a)^w). Each step costs two velocity evaluations: 2K per action chunk.

In a train state the network is ``state.cfgrl_params`` (``QGFConfig(cfgrl=True)``), wrapped by
``qgf_lite.training.cfgrl_velocity_fn``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from qgf_lite.flow import flow_matching_loss
from qgf_lite.learners import CRITIC_CHOICES, Learner, LearnerContext, check_choice, check_number, learner_field
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

UNCONDITIONAL = 0  # the label of the behaviour-cloning branch, trained on all data
POSITIVE = 1  # the label of the branch trained on actions with advantage above the threshold
LABELS = (UNCONDITIONAL, POSITIVE)

ConditionedVelocity = Callable  # (obs | None, actions (B, D), t (B,) or scalar, label int or (B,)) -> (B, D)

__all__ = [
    "CFGRLConfig",
    "LEARNER",
    "UNCONDITIONAL",
    "POSITIVE",
    "LABELS",
    "advantages",
    "optimality_weights",
    "cfgrl_loss",
    "cfg_velocity",
    "cfgrl_sample",
]


def _require_finite_number(name: str, value, why: str = "") -> None:
    """A concrete single number that is not NaN/inf (traced values pass)."""
    require_scalar(name, value, "pass one number")
    if value is None:
        raise TypeError(f"`{name}` must be a number, got None.")
    if is_concrete(value) and not np.all(np.isfinite(np.asarray(value, dtype=float))):
        raise ValueError(f"`{name}` must be a finite number{why}, got {value!r}.")


def advantages(q_values, values) -> jnp.ndarray:
    """A = min_i Q_i(s, a) - V(s) per sample, with both treated as constants (``stop_gradient``).

    Args:
      q_values: (members, batch) ensemble outputs, minimised over members, or (batch,) already reduced.
      values: (batch,) V(s).

    Returns:
      (batch,) advantages.
    """
    q_values = as_float_array("q_values", q_values)
    values = as_float_array("values", values)
    if q_values.ndim == 2:
        q_values = jnp.min(q_values, axis=0)
    if q_values.ndim != 1 or values.shape != q_values.shape:
        raise ValueError(
            f"`q_values` must be (members, batch) or (batch,) and `values` (batch,) for the same batch, got shapes "
            f"{tuple(jnp.shape(q_values))} (after the ensemble minimum) and {tuple(values.shape)}."
        )
    return jax.lax.stop_gradient(q_values - values)


def optimality_weights(advantage, threshold=0.0, valid=None) -> jnp.ndarray:
    """e_b = 1[A_b > threshold] * c_b: the per-sample weight of the positive branch.

    Args:
      advantage: (batch,) A = Q - V (see ``advantages``).
      threshold: scalar; only samples with A strictly above it count as positive.
      valid: optional (batch,) weights c_b (chunk validity); None means all 1.

    Returns:
      (batch,) floats, 0 or c_b.
    """
    advantage = as_float_array("advantage", advantage)
    require_rank("advantage", advantage, 1, "(batch,)")
    _require_finite_number("threshold", threshold)
    weights = (advantage > threshold).astype(advantage.dtype)
    if valid is None:
        return weights
    valid = jnp.asarray(valid, advantage.dtype)
    if valid.shape != advantage.shape:
        raise ValueError(f"`valid` must have shape {tuple(advantage.shape)}, one per sample, got {tuple(valid.shape)}.")
    return weights * valid


def cfgrl_loss(
    velocity_cond: ConditionedVelocity,
    obs,
    actions,
    key,
    positive_weights,
    *,
    uncond_weight=1.0,
    valid=None,
    time_grid: int | None = 10,
    return_parts: bool = False,
):
    """L = L_pos + uncond_weight * L_uncond, two weighted flow-matching losses (see the module doc).

    Args:
      velocity_cond: (obs, a, t, label) -> v, e.g. ``cfgrl_velocity_fn(config, params)``.
      obs: None or (batch, obs_dim).
      actions: (batch, action_dim) dataset actions a1.
      key: PRNG key, split into (positive, unconditional) keys; each is the ``key`` of one
        ``qgf_lite.flow.flow_matching_loss`` call, so the branches draw independent noise and times.
      positive_weights: (batch,) e_b from ``optimality_weights``.
      uncond_weight: lambda >= 0, the unconditional branch's loss weight.
      valid: optional (batch,) weights c_b of the unconditional branch (None: all 1).
      time_grid: as ``flow_matching_loss``.
      return_parts: also return {"positive_loss": L_pos, "unconditional_loss": L_uncond}.

    Returns:
      the scalar loss, or (loss, parts) with ``return_parts``.
    """
    require_callable("velocity_cond", velocity_cond, "(obs, actions, t, label) -> velocity")
    require_scalar("uncond_weight", uncond_weight, "pass one number")
    require_nonnegative("uncond_weight", uncond_weight, "it weighs the unconditional branch's loss")
    positive_key, uncond_key = jax.random.split(key)
    positive = flow_matching_loss(
        functools.partial(velocity_cond, label=POSITIVE),
        obs,
        actions,
        positive_key,
        time_grid,
        weights=positive_weights,
    )
    uncond = flow_matching_loss(
        functools.partial(velocity_cond, label=UNCONDITIONAL), obs, actions, uncond_key, time_grid, weights=valid
    )
    loss = positive + uncond_weight * uncond
    if return_parts:
        return loss, {"positive_loss": positive, "unconditional_loss": uncond}
    return loss


def cfg_velocity(velocity_cond: ConditionedVelocity, obs, actions, t, weight) -> jnp.ndarray:
    """v = v(s, a, t, 0) + w (v(s, a, t, 1) - v(s, a, t, 0)), shape (batch, action_dim) like ``actions``.

    Two velocity evaluations; at w = 0 the result is the unconditional velocity exactly.
    """
    v_uncond = velocity_cond(obs, actions, t, UNCONDITIONAL)
    v_positive = velocity_cond(obs, actions, t, POSITIVE)
    for name, v in (("unconditional", v_uncond), ("positive", v_positive)):
        if jnp.shape(v) != actions.shape:
            raise ValueError(
                f"`velocity_cond` must return an array of the actions' shape {actions.shape}, got shape "
                f"{jnp.shape(v)} for the {name} label."
            )
    return v_uncond + weight * (v_positive - v_uncond)


def cfgrl_sample(
    velocity_cond: ConditionedVelocity,
    obs,
    noise,
    *,
    steps: int = 10,
    weight,
    clip=(-1.0, 1.0),
    return_path: bool = False,
):
    """Euler integration of the CFG velocity from t = 0 to 1, then clip (docs/algorithm.md §5).

    With dt = 1/K: a <- a0; for k = 0..K-1, a <- a + dt * cfg_velocity(s, a, k/K, w); return clip(a).
    The same loop as ``qgf_lite.flow.euler_sample`` (which it equals at w = 0 when given the unconditional
    branch), at 2 velocity evaluations per step.

    Args:
      velocity_cond: (obs, a, t, label) -> v with label 0 (unconditional) or 1 (positive).
      obs: None or (batch, obs_dim).
      noise: a0, shape (batch, action_dim).
      steps: number of Euler steps K >= 1.
      weight: guidance weight w >= 0 (a Python number or a traced scalar: a jitted sampler can sweep it).
      clip: (low, high) applied to the output, or None.
      return_path: also return the particles after every step, (steps + 1, batch, action_dim), the last
        one clipped.
    """
    require_callable("velocity_cond", velocity_cond, "(obs, actions, t, label) -> velocity")
    noise = as_float_array("noise", noise)
    require_rank("noise", noise, 2, "(batch, action_dim)")
    require_obs(obs, noise.shape[0])
    steps = require_positive_int("steps", steps)
    require_scalar("weight", weight, "to compare several weights, jax.vmap the sampler over them")
    require_nonnegative("weight", weight, "0 is behaviour cloning, 1 the positive-conditioned flow, > 1 extrapolates")
    clip = require_clip(clip)
    batch = noise.shape[0]
    dt = 1.0 / steps
    weight = jnp.asarray(weight, noise.dtype)

    def step(a, k):
        t = jnp.full((batch,), k * dt, noise.dtype)
        a_next = a + cfg_velocity(velocity_cond, obs, a, t, weight) * dt
        return a_next, a_next

    a_final, path = jax.lax.scan(step, noise, jnp.arange(steps))
    if clip is not None:
        a_final = jnp.clip(a_final, *clip)
    if not return_path:
        return a_final
    return a_final, jnp.concatenate([noise[None], path[:-1], a_final[None]], axis=0)


# ----------------------------------------------------------------------------------------------- the learner
# CFG-RL as a training-time learner (qgf_lite.learners): a label-conditioned velocity network trained from the
# core's batches, labelled by the core critic and value (constants). `qgf-lite train --cfgrl` enables it.


@dataclasses.dataclass(frozen=True)
class CFGRLConfig:
    """CFG-RL's options (``QGFConfig(learners=(CFGRLConfig(...),))``, or ``cfgrl=True`` and ``cfgrl_*``)."""

    learner: ClassVar[str] = "cfgrl"

    threshold: float = learner_field(0.0, "CFG-RL: an action is labelled positive when Q(s, a) - V(s) exceeds this")
    uncond_weight: float = learner_field(1.0, "CFG-RL: loss weight (>= 0) of the unconditional (all data) branch")
    critic: str = learner_field(
        "target", "CFG-RL: the critic whose ensemble minimum labels the data, target (the Polyak copy) or online"
    )

    def __post_init__(self):
        object.__setattr__(self, "threshold", check_number("cfgrl_threshold", self.threshold))
        object.__setattr__(
            self,
            "uncond_weight",
            check_number(
                "cfgrl_uncond_weight", self.uncond_weight, minimum=0, why="it weighs the unconditional branch's loss"
            ),
        )
        check_choice("cfgrl_critic", self.critic, CRITIC_CHOICES)


def _build_cfgrl_network(config, options: CFGRLConfig):
    from qgf_lite.networks import ConditionedVelocityField

    return ConditionedVelocityField(config.chunk_dim, config.actor_hidden, config.time_emb_dim, config.layer_norm)


def _cfgrl_init_inputs(config, options: CFGRLConfig):
    return (
        jnp.zeros((1, config.obs_dim)),
        jnp.zeros((1, config.chunk_dim)),
        jnp.zeros((1,)),
        jnp.zeros((1,), jnp.int32),
    )


def _cfgrl_learner_loss(network, params, ctx: LearnerContext):
    """``cfgrl_loss`` with the positive branch weighted by 1[min_i Q_i - V > threshold] times the chunk validity
    (Q from the target or online critic per ``critic``, Q and V before this step's update)."""
    options = ctx.options
    q_values = ctx.target_q if options.critic == "target" else ctx.q
    positive = optimality_weights(advantages(q_values, ctx.v), options.threshold, ctx.valid)
    loss, parts = cfgrl_loss(
        functools.partial(network.apply, params),
        ctx.obs,
        ctx.actions,
        ctx.key,
        positive,
        uncond_weight=options.uncond_weight,
        valid=ctx.valid,
        time_grid=ctx.config.time_grid,
        return_parts=True,
    )
    return loss, {
        "positive_loss": parts["positive_loss"],
        "unconditional_loss": parts["unconditional_loss"],
        # share of the batch's valid chunks labelled positive
        "positive_fraction": jnp.sum(positive) / jnp.maximum(jnp.sum(ctx.valid), 1e-8),
    }


LEARNER = Learner(
    name="cfgrl",
    options=CFGRLConfig,
    build=_build_cfgrl_network,
    init_inputs=_cfgrl_init_inputs,
    loss=_cfgrl_learner_loss,
    key_tag=0x43464752,
    samplers={
        "cfgrl": dict(
            # The critic is not used at test time: it shaped the positive branch during training.
            run=lambda s, velocity, critic, obs, noise, w, clip: cfgrl_sample(
                velocity, obs, noise, steps=s.steps, weight=w, clip=clip
            ),
            counts=lambda steps, n, ascent_steps, mode: (2 * steps, 0, 0, 0),
            label=lambda s, w: f"CFG-RL{w}",
            uses=frozenset({"weight"}),
            summary="classifier-free guidance on an optimality label: v_uncond + w (v_pos - v_uncond)",
        )
    },
    label="CFG-RL",
    noun="network",
    summary="also train the CFG-RL baseline (docs/algorithm.md §5): a second velocity network, conditioned on the "
    "optimality label 1[Q - V > threshold], from the same batches",
)
