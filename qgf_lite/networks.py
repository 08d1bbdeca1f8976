"""The three networks of QGF (docs/algorithm.md §2-§3), in flax linen.

- ``VelocityField``  v(s, a_t, t): the flow-matching BC policy.
- ``ConditionedVelocityField`` v(s, a_t, t, o): the same network with an optimality label o as extra
  input, for the CFG-RL baseline (docs/algorithm.md §5, ``qgf_lite.cfgrl``).
- ``CriticEnsemble`` Q_i(s, a): an ensemble whose members are vectorised with ``nn.vmap``.
- ``ValueNet``       V(s): the IQL value.

Observations may be absent (a bandit has no state): pass ``obs=None`` or an array of width 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from qgf_lite.validation import is_concrete


def as_obs(obs, batch: int, dtype=jnp.float32) -> jnp.ndarray:
    """Return ``obs`` as a (batch, obs_dim) array; ``None`` becomes a (batch, 0) array."""
    if obs is None:
        return jnp.zeros((batch, 0), dtype)
    return jnp.asarray(obs, dtype)


class SinusoidalTimeEmbedding(nn.Module):
    """Features sin(f t), cos(f t) on geometric frequencies, so the MLP can resolve small changes of t."""

    dim: int = 32
    max_frequency: float = 1000.0

    @nn.compact
    def __call__(self, t: jnp.ndarray) -> jnp.ndarray:
        half = self.dim // 2
        freqs = jnp.exp(-math.log(self.max_frequency) * jnp.arange(half) / max(half - 1, 1))
        angles = t[..., None] * freqs * 2.0 * jnp.pi
        return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class MLP(nn.Module):
    """Dense -> GELU -> LayerNorm hidden blocks, then a linear output layer."""

    hidden_dims: Sequence[int]
    out_dim: int
    layer_norm: bool = True

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for width in self.hidden_dims:
            x = nn.Dense(width)(x)
            x = nn.gelu(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
        return nn.Dense(self.out_dim)(x)


class VelocityField(nn.Module):
    """v_theta(s, a_t, t) -> velocity of shape (batch, action_dim)."""

    action_dim: int
    hidden_dims: Sequence[int] = (512, 512, 512, 512)
    time_emb_dim: int = 32
    layer_norm: bool = True

    @nn.compact
    def __call__(self, obs: jnp.ndarray | None, actions: jnp.ndarray, t) -> jnp.ndarray:
        batch = actions.shape[0]
        # A scalar t (all particles at the same time, as in the sampler) is broadcast to the batch.
        t = jnp.broadcast_to(jnp.asarray(t, actions.dtype).reshape(-1), (batch,))
        emb = SinusoidalTimeEmbedding(self.time_emb_dim)(t)
        x = jnp.concatenate([as_obs(obs, batch, actions.dtype), actions, emb], axis=-1)
        return MLP(tuple(self.hidden_dims), self.action_dim, self.layer_norm)(x)


class ConditionedVelocityField(nn.Module):
    """v_theta(s, a_t, t, o) -> (batch, action_dim), a velocity conditioned on an optimality label o.

    The label is one of ``num_labels`` integers, in CFG-RL 0 = unconditional and 1 = positive ("this action
    is better than the value", see ``qgf_lite.cfgrl``). It enters as a one-hot vector next to the inputs of
    ``VelocityField``: the MLP sees [s, a_t, phi(t), onehot(o)], which is the same as a learned label embedding
    added to the first layer. Shapes as ``VelocityField``; ``label`` is a scalar (every particle alike, as in
    the sampler) or (batch,) integers; observations may be absent (None or width 0).
    """

    action_dim: int
    hidden_dims: Sequence[int] = (512, 512, 512, 512)
    time_emb_dim: int = 32
    layer_norm: bool = True
    num_labels: int = 2

    @nn.compact
    def __call__(self, obs: jnp.ndarray | None, actions: jnp.ndarray, t, label) -> jnp.ndarray:
        batch = actions.shape[0]
        t = jnp.broadcast_to(jnp.asarray(t, actions.dtype).reshape(-1), (batch,))
        if is_concrete(label):
            values = np.asarray(label)
            if not np.issubdtype(values.dtype, np.integer) or np.any((values < 0) | (values >= self.num_labels)):
                # one_hot would turn an out-of-range label into an all-zero input silently.
                raise ValueError(f"`label` must be an integer in [0, {self.num_labels}), got {label!r}.")
        label = jnp.broadcast_to(jnp.asarray(label, jnp.int32).reshape(-1), (batch,))
        emb = SinusoidalTimeEmbedding(self.time_emb_dim)(t)
        onehot = jax.nn.one_hot(label, self.num_labels, dtype=actions.dtype)
        x = jnp.concatenate([as_obs(obs, batch, actions.dtype), actions, emb, onehot], axis=-1)
        return MLP(tuple(self.hidden_dims), self.action_dim, self.layer_norm)(x)


class _QHead(nn.Module):
    hidden_dims: Sequence[int]
    layer_norm: bool = True

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return MLP(tuple(self.hidden_dims), 1, self.layer_norm)(x)[..., 0]


class CriticEnsemble(nn.Module):
    """Q_i(s, a) for i < num_members, computed in one vectorised call; returns (num_members, batch)."""

    hidden_dims: Sequence[int] = (512, 512, 512, 512)
    num_members: int = 2
    layer_norm: bool = True

    @nn.compact
    def __call__(self, obs: jnp.ndarray | None, actions: jnp.ndarray) -> jnp.ndarray:
        x = jnp.concatenate([as_obs(obs, actions.shape[0], actions.dtype), actions], axis=-1)
        ensemble = nn.vmap(
            _QHead,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_members,
        )
        return ensemble(tuple(self.hidden_dims), self.layer_norm)(x)


class ValueNet(nn.Module):
    """V(s) -> (batch,). With no observation (width 0) it learns a single constant."""

    hidden_dims: Sequence[int] = (512, 512, 512, 512)
    layer_norm: bool = True

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        if obs.shape[-1] == 0:
            # No state: V is one number, the value of the behaviour policy's action distribution.
            return jnp.broadcast_to(self.param("constant", nn.initializers.zeros, ()), obs.shape[:-1])
        return MLP(tuple(self.hidden_dims), 1, self.layer_norm)(obs)[..., 0]


__all__ = [
    "as_obs",
    "ConditionedVelocityField",
    "CriticEnsemble",
    "MLP",
    "SinusoidalTimeEmbedding",
    "ValueNet",
    "VelocityField",
]
