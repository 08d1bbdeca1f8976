"""How close QGF's cheap guidance gradient is to the exact one, step by step along the sampling path.

QGF differentiates the critic at the one-step denoised estimate a_hat = clip(a + (1 - t) v(s, a, t)) and drops
the Jacobian of a -> a_hat (docs/algorithm.md §4):

    g_qgf = grad_{a_hat} Q(s, a_hat)                      (what ``mode="qgf"`` adds to the velocity)
    g_jac = (d a_hat / d a)^T grad_{a_hat} Q(s, a_hat)    (``mode="jacobian"``, the exact chain rule)

With v well trained near t = 1 the Jacobian is close to the identity and the two agree; for an undertrained flow
(or early in the path, t near 0) they may not. ``gradient_agreement`` measures, at every Euler step k (t = k/K)
of one guided sampling run, the cosine between the two per particle and the norm ratio |g_qgf| / |g_jac|.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qgf_lite.guidance import critic_action_gradient, denoised_estimate, guided_sample


def gradient_agreement(
    velocity, critic, obs, noise, *, steps: int = 10, weight=0.0, clip=(-1.0, 1.0), eps: float = 1e-12
) -> dict:
    """Cosine and norm ratio of g_qgf against g_jac at every step of a QGF sampling run.

    Args:
      velocity: (obs, a, t) -> v; critic: (obs, a) -> Q of shape (batch,).
      obs: None or (batch, obs_dim); noise: a0, shape (batch, action_dim).
      steps: Euler steps K; weight: the guidance weight of the run whose path is measured (0: the plain flow's
        path); clip: as in ``guided_sample``.
      eps: particles where either gradient's norm is at most ``eps`` (e.g. a clipped a_hat) count as undefined.

    Returns a dict of arrays: ``t`` (K,); ``cosine`` and ``norm_ratio`` (K, batch), NaN where undefined;
    ``mean_cosine`` and ``median_norm_ratio`` (K,) over the defined particles.
    """
    _, path = guided_sample(
        velocity, critic, obs, noise, steps=steps, weight=weight, mode="qgf", clip=clip, return_path=True
    )
    batch = noise.shape[0]

    def at_step(a, k):
        t = jnp.full((batch,), k / steps, noise.dtype)
        a_hat, pullback = jax.vjp(lambda a_: denoised_estimate(velocity, obs, a_, t, clip, stop_gradient=False), a)
        g_qgf = critic_action_gradient(critic, obs, a_hat)
        g_jac = pullback(g_qgf)[0]
        n_qgf, n_jac = jnp.linalg.norm(g_qgf, axis=-1), jnp.linalg.norm(g_jac, axis=-1)
        defined = (n_qgf > eps) & (n_jac > eps)
        safe = jnp.where(defined, n_qgf * n_jac, 1.0)
        cosine = jnp.where(defined, jnp.sum(g_qgf * g_jac, axis=-1) / safe, jnp.nan)
        ratio = jnp.where(defined, n_qgf / jnp.where(defined, n_jac, 1.0), jnp.nan)
        return cosine, ratio

    cosine, ratio = jax.vmap(at_step)(path[:-1], jnp.arange(steps))
    return {
        "t": jnp.arange(steps) / steps,
        "cosine": cosine,
        "norm_ratio": ratio,
        "mean_cosine": jnp.nanmean(cosine, axis=1),
        "median_norm_ratio": jnp.nanmedian(ratio, axis=1),
    }


__all__ = ["gradient_agreement"]
