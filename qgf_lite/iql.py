"""Implicit Q-learning with action chunks (docs/algorithm.md §3), as small pure functions.

A training sample is a chunk of H consecutive steps starting at s_t. Per step i < H we have the reward
r_{t+i}, ``terminals`` (1 on the last step of an episode) and ``masks`` (0 where the task is done, so the
value of what follows must not be bootstrapped).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def expectile_loss(diff: jnp.ndarray, expectile: float = 0.9) -> jnp.ndarray:
    """Elementwise |tau - 1[d < 0]| d^2: above-zero errors weigh tau, below-zero ones 1 - tau.

    Minimising its mean over d = q - v gives the tau-expectile of q, an optimistic (tau > 0.5)
    estimate of the best in-distribution value, without ever querying out-of-distribution actions.
    """
    weight = jnp.where(diff < 0, 1.0 - expectile, expectile)
    return weight * jnp.square(diff)


def chunk_discount(discount: float, horizon: int) -> float:
    """gamma^H: the discount applied to the bootstrap value after a chunk of H steps."""
    return discount**horizon


def chunk_returns(rewards, terminals, masks, discount: float):
    """Discounted return of each chunk, stopping at the first episode end inside it.

    Args:
      rewards, terminals, masks: (batch, H) per-step values for steps t..t+H-1.
      discount: gamma.

    Returns:
      returns: (batch,) R = sum_{i<H} gamma^i r_{t+i} valid_i.
      valid: (batch, H) 1 for steps up to and including the first terminal, 0 after it (those steps
        belong to the next episode).
      bootstrap_mask: (batch,) 1 if V(s_{t+H}) may be bootstrapped: no step of the chunk has mask 0 and
        no episode ended before the chunk's last step.
    """
    rewards = jnp.asarray(rewards)
    terminals = jnp.asarray(terminals, rewards.dtype)
    masks = jnp.asarray(masks, rewards.dtype)
    horizon = rewards.shape[-1]
    # valid_i = 1 - [a terminal among steps 0..i-1]: an exclusive running max of the terminal flags.
    ended_before = jnp.concatenate(
        [jnp.zeros_like(terminals[..., :1]), jax.lax.cummax(terminals, axis=terminals.ndim - 1)[..., :-1]], axis=-1
    )
    valid = 1.0 - ended_before
    discounts = discount ** jnp.arange(horizon, dtype=rewards.dtype)
    returns = jnp.sum(rewards * valid * discounts, axis=-1)
    # A terminal before the last step means the chunk crossed into another episode: nothing to bootstrap.
    bootstrap_mask = jnp.min(jnp.where(valid > 0, masks, 0.0), axis=-1) * valid[..., -1]
    return returns, valid, bootstrap_mask


def q_target(returns, bootstrap_mask, next_value, discount: float, horizon: int):
    """y = R + gamma^H * mask * V(s_{t+H})."""
    return returns + chunk_discount(discount, horizon) * bootstrap_mask * next_value


def critic_loss(q_values, target, weights=None):
    """Mean over ensemble members and samples of (Q_i - y)^2, each sample weighted (e.g. by chunk validity).

    ``q_values`` is (members, batch); ``target`` and ``weights`` are (batch,).
    """
    sq = jnp.square(q_values - jax.lax.stop_gradient(target)[None])
    if weights is None:
        return jnp.mean(sq)
    return jnp.mean(sq * weights[None])


def value_loss(target_q_values, value, expectile: float = 0.9):
    """Expectile regression of V(s) towards min_i Qbar_i(s, a): (members, batch) and (batch,) -> scalar."""
    q_min = jax.lax.stop_gradient(jnp.min(target_q_values, axis=0))
    return jnp.mean(expectile_loss(q_min - value, expectile))


def polyak_update(target_params, params, rate: float = 0.005):
    """Qbar <- (1 - rate) Qbar + rate Q, leaf by leaf."""
    return jax.tree_util.tree_map(lambda tp, p: (1.0 - rate) * tp + rate * p, target_params, params)


__all__ = [
    "chunk_discount",
    "chunk_returns",
    "critic_loss",
    "expectile_loss",
    "polyak_update",
    "q_target",
    "value_loss",
]
