"""QAM, Q-learning with adjoint matching (Li et al.), as a training-time learner beside QGF (docs/algorithm.md §5).

QAM fine-tunes a copy f of the flow policy towards the KL-regularised optimum pi*(a|s) ∝ pi_BC(a|s) exp(tau Q(s, a))
with the adjoint-matching objective, which uses the critic's action gradient at the end of a sampled trajectory
and propagates it backwards through the *base* (BC) flow b, never through the trained one (no BPTT). With K flow
steps, h = 1/K, t_k = k h and sigma_k = sqrt(2 (1 - t_k + h) / (t_k + h)):

    x_0 ~ N(0, I);  x_{k+1} = x_k + h (2 f(s, x_k, t_k) - x_k / (t_k + h)) + sqrt(h) sigma_k eps_k   (k < K - 1)
                    x_K     = x_{K-1} + h b(s, x_{K-1}, t_{K-1})          (the last step: the base flow's ODE)
    adj_K = -tau grad_a Qbar(s, clip(x_K))                                 (Qbar: the ensemble mean)
    adj_k = adj_{k+1} + h J_k^T adj_{k+1},  J_k = d/dx [2 b(s, x, t_k + h) - x / (t_k + h)] at x_k   (k = K-1..0)
    L     = mean_batch sum_k || 2 (f(s, x_k, t_k) - b(s, x_k, t_k)) / sigma_k + sigma_k adj_k ||^2

The trajectory and the adjoints are constants (stop-gradient); the gradient reaches f's parameters only through
f(s, x_k, t_k) in L. At test time f is sampled like the BC flow: Euler integration of da/dt = f(s, a, t), then the
clip (``qam_sample``), K network calls per action.

In this package b is the core BC flow at the step's parameters (the official code can use a Polyak copy of its
BC flow), the critic is the core IQL critic (the official code also offers a TD critic on its own actions), and
f starts from its own random initialisation. ``QGFConfig(qam=True)`` / ``qgf-lite train --qam`` trains it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp

from qgf_lite.flow import euler_sample
from qgf_lite.learners import (
    CRITIC_CHOICES,
    Learner,
    LearnerContext,
    check_bool,
    check_choice,
    check_number,
    learner_field,
)
from qgf_lite.validation import require_positive_int

Velocity = Callable  # (obs | None, x (B, D), t (B,)) -> (B, D)


def noise_scales(steps: int) -> jnp.ndarray:
    """sigma_k = sqrt(2 (1 - t_k + h) / (t_k + h)) for t_k = k / steps, k = 0..steps-1 (the memoryless schedule)."""
    h = 1.0 / steps
    t = jnp.arange(steps) * h
    return jnp.sqrt(2.0 * (1.0 - t + h) / (t + h))


def _times(x, t):
    return jnp.full((x.shape[0],), t, x.dtype)


def memoryless_trajectory(fine: Velocity, base: Velocity, obs, x0, noises) -> tuple:
    """The states x_0..x_{K-1} (K, B, D) and x_K (B, D) of the memoryless SDE of ``fine``, ending with one ODE step of
    ``base``. ``noises`` (K - 1, B, D) are the eps_k; K = len(noises) + 1."""
    steps = noises.shape[0] + 1
    h = 1.0 / steps
    sigmas = noise_scales(steps)
    xs, x = [], x0
    for k in range(steps):
        t = k * h
        xs.append(x)
        if k < steps - 1:
            x = x + h * (2.0 * fine(obs, x, _times(x, t)) - x / (t + h)) + jnp.sqrt(h) * sigmas[k] * noises[k]
        else:
            x = x + h * base(obs, x, _times(x, t))
    return jnp.stack(xs), x


def lean_adjoints(base: Velocity, obs, xs, adjoint_end) -> jnp.ndarray:
    """adj_k (K, B, D) from adj_K = ``adjoint_end``: adj_k = adj_{k+1} + h J_k^T adj_{k+1} with J_k the Jacobian of
    x -> 2 b(s, x, t_k + h) - x / (t_k + h) at x_k."""
    steps = xs.shape[0]
    h = 1.0 / steps
    adjoint, out = adjoint_end, [None] * steps
    for k in reversed(range(steps)):
        t = k * h

        def drift(x, t=t):
            return 2.0 * base(obs, x, _times(x, t + h)) - x / (t + h)

        adjoint = adjoint + h * jax.vjp(drift, xs[k])[1](adjoint)[0]
        out[k] = adjoint
    return jnp.stack(out)


def qam_loss(
    fine: Velocity,
    base: Velocity,
    critic: Callable,
    obs,
    x0,
    noises,
    *,
    inv_temp: float,
    clip=(-1.0, 1.0),
    return_parts: bool = False,
):
    """The adjoint-matching loss L of the module docstring for one batch.

    fine: the trained velocity f (obs, x, t) -> (B, D); base: the BC flow b (a constant); critic: (obs, a) -> Q of
    shape (members, B) or (B,), averaged over members; x0 (B, D) and noises (K - 1, B, D): the trajectory's noise;
    inv_temp: tau; clip: the action box the critic's gradient is taken in (None: no clip).
    """
    # Constants of the gradient: the trajectory (sampled with f) and the adjoints (through b, whose Jacobian they
    # need, so b's outputs are stopped only where the loss reads them).
    xs, x_end = memoryless_trajectory(_constant(fine), base, obs, x0, noises)
    xs, x_end = jax.lax.stop_gradient(xs), jax.lax.stop_gradient(x_end)

    def q_total(actions):
        a = actions if clip is None else jnp.clip(actions, *clip)
        q = critic(obs, a)
        return jnp.sum(jnp.mean(q, axis=0) if q.ndim == 2 else q)

    adjoint_end = -inv_temp * jax.grad(q_total)(x_end)
    adjoints = jax.lax.stop_gradient(lean_adjoints(base, obs, xs, adjoint_end))
    steps = xs.shape[0]
    sigmas = noise_scales(steps)[:, None, None]
    ts = jnp.arange(steps) / steps
    f = jax.vmap(lambda x, t: fine(obs, x, _times(x, t)))(xs, ts)
    b = jax.lax.stop_gradient(jax.vmap(lambda x, t: base(obs, x, _times(x, t)))(xs, ts))
    residual = 2.0 * (f - b) / sigmas + sigmas * adjoints
    loss = jnp.mean(jnp.sum(jnp.square(residual), axis=(0, 2)))
    if return_parts:
        return loss, {
            "adjoint_norm": jnp.mean(jnp.linalg.norm(adjoint_end, axis=-1)),
            "velocity_gap": jnp.mean(jnp.square(f - b)),
        }
    return loss


def _constant(fn: Velocity) -> Velocity:
    """``fn`` with its outputs' gradient stopped (its parameters are constants of the loss)."""
    return lambda *args: jax.lax.stop_gradient(fn(*args))


def qam_sample(velocity: Velocity, obs, noise, *, steps: int = 10, clip=(-1.0, 1.0)) -> jnp.ndarray:
    """Euler sampling of QAM's fine-tuned velocity, then the clip: the BC sampler run on QAM's network."""
    return euler_sample(velocity, obs, noise, steps=require_positive_int("steps", steps), clip=clip)


# ----------------------------------------------------------------------------------------------- the learner


@dataclasses.dataclass(frozen=True)
class QAMConfig:
    """QAM's options (``QGFConfig(learners=(QAMConfig(...),))``, or ``qam=True`` and ``qam_*``)."""

    learner: ClassVar[str] = "qam"

    inv_temp: float = learner_field(
        0.3, "QAM: inverse temperature tau (>= 0) of the target pi_BC exp(tau Q); 0 reproduces the BC flow"
    )
    critic: str = learner_field(
        "target",
        "QAM: the critic whose action gradient starts the adjoint, target "
        "(the Polyak copy, as the official code) or online",
    )
    clip_actions: bool = learner_field(True, "QAM: take the critic's gradient at the clipped final action")

    def __post_init__(self):
        object.__setattr__(
            self,
            "inv_temp",
            check_number("qam_inv_temp", self.inv_temp, minimum=0, why="the weight of Q in the target policy"),
        )
        check_choice("qam_critic", self.critic, CRITIC_CHOICES)
        object.__setattr__(self, "clip_actions", check_bool("qam_clip_actions", self.clip_actions))


def _build(config, options: QAMConfig):
    from qgf_lite.networks import VelocityField

    return VelocityField(config.chunk_dim, config.actor_hidden, config.time_emb_dim, config.layer_norm)


def _init_inputs(config, options: QAMConfig):
    return jnp.zeros((1, config.obs_dim)), jnp.zeros((1, config.chunk_dim)), jnp.zeros((1,))


def _learner_loss(network, params, ctx: LearnerContext):
    options, steps = ctx.options, ctx.config.flow_steps
    x_key, noise_key = jax.random.split(ctx.key)
    shape = (jnp.shape(ctx.obs)[0], ctx.config.chunk_dim)
    base = functools.partial(ctx.actor.apply, ctx.policy_params)
    critic = functools.partial(ctx.critic.apply, ctx.critic_params_for(options.critic))
    return qam_loss(
        functools.partial(network.apply, params),
        base,
        critic,
        ctx.obs,
        jax.random.normal(x_key, shape),
        jax.random.normal(noise_key, (steps - 1, *shape)),
        inv_temp=options.inv_temp,
        clip=(-1.0, 1.0) if options.clip_actions else None,
        return_parts=True,
    )


LEARNER = Learner(
    name="qam",
    options=QAMConfig,
    build=_build,
    init_inputs=_init_inputs,
    loss=_learner_loss,
    key_tag=0x51414D31,
    samplers={
        "qam": dict(
            run=lambda s, velocity, critic, obs, noise, w, clip: qam_sample(
                velocity, obs, noise, steps=s.steps, clip=clip
            ),
            counts=lambda steps, n, ascent_steps, mode: (steps, 0, 0, 0),
            label=lambda s, w: "QAM",
            summary="Q-learning with adjoint matching: Euler sampling of a flow fine-tuned towards pi_BC exp(tau Q)",
        )
    },
    label="QAM",
    noun="policy",
    summary="also train the QAM baseline (docs/algorithm.md §5): a flow policy fine-tuned by adjoint matching "
    "towards pi_BC(a|s) exp(tau Q(s, a)), from the same batches",
)

__all__ = ["LEARNER", "QAMConfig", "lean_adjoints", "memoryless_trajectory", "noise_scales", "qam_loss", "qam_sample"]
