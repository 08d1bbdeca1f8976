"""Transitions held in device memory, and action-chunk minibatches sampled on the device (docs/algorithm.md §3).

The reference implementation draws every minibatch with numpy on the host and copies it over; here the
whole dataset is put on the device once and ``sample_chunk_batch`` is a pure jax function, so it can run
inside the ``lax.scan`` of the trainer with no host round trip.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from qgf_lite.iql import chunk_returns
from qgf_lite.validation import require_finite_arrays


@flax.struct.dataclass
class TransitionDataset:
    """Flat transitions in time order; episode ends are marked by ``terminals``.

    observations (N, obs_dim), actions (N, action_dim), rewards (N,), terminals (N,), masks (N,),
    next_observations (N, obs_dim). ``obs_dim`` may be 0 (bandits).
    """

    observations: jnp.ndarray
    actions: jnp.ndarray
    rewards: jnp.ndarray
    terminals: jnp.ndarray
    masks: jnp.ndarray
    next_observations: jnp.ndarray

    @property
    def size(self) -> int:
        return self.actions.shape[0]

    @property
    def obs_dim(self) -> int:
        return self.observations.shape[-1]

    @property
    def action_dim(self) -> int:
        return self.actions.shape[-1]


def make_dataset(
    actions,
    rewards,
    observations=None,
    terminals=None,
    masks=None,
    next_observations=None,
    *,
    device=None,
) -> TransitionDataset:
    """Validate transitions on the host and put them on the device once.

    Defaults suit a bandit (no state, one-step episodes): ``observations=None`` gives width-0 observations,
    ``terminals`` defaults to 1 and ``masks`` to 0 when there are no observations (nothing to bootstrap),
    else to a single episode ending at the last transition with masks of 1.
    """
    actions = np.asarray(actions, np.float32)
    if actions.ndim != 2:
        raise ValueError(f"`actions` must have shape (N, action_dim), got {actions.shape}.")
    n = actions.shape[0]
    if n == 0:
        raise ValueError("The dataset is empty: `actions` has 0 rows.")
    rewards = np.asarray(rewards, np.float32)
    if rewards.shape != (n,):
        raise ValueError(f"`rewards` must have shape ({n},) to match `actions`, got {rewards.shape}.")
    stateless = observations is None
    if stateless:
        observations = np.zeros((n, 0), np.float32)
        if next_observations is not None:
            raise ValueError("`next_observations` given without `observations`; pass both or neither.")
    observations = np.asarray(observations, np.float32)
    if observations.ndim != 2 or observations.shape[0] != n:
        raise ValueError(f"`observations` must have shape ({n}, obs_dim) to match `actions`, got {observations.shape}.")
    if next_observations is None:
        if not stateless:
            raise ValueError(
                "`next_observations` is required when `observations` is given (the state after each action)."
            )
        next_observations = observations
    next_observations = np.asarray(next_observations, np.float32)
    if next_observations.shape != observations.shape:
        raise ValueError(
            f"`next_observations` must have the shape of `observations` {observations.shape}, got {next_observations.shape}."
        )
    if terminals is None:
        terminals = np.ones(n, np.float32) if stateless else np.eye(1, n, n - 1, dtype=np.float32)[0]
    if masks is None:
        masks = np.zeros(n, np.float32) if stateless else np.ones(n, np.float32)
    terminals = np.asarray(terminals, np.float32)
    masks = np.asarray(masks, np.float32)
    for name, arr in (("terminals", terminals), ("masks", masks)):
        if arr.shape != (n,):
            raise ValueError(f"`{name}` must have shape ({n},) to match `actions`, got {arr.shape}.")
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError(f"`{name}` must contain only 0 and 1.")
    arrays = dict(
        observations=observations,
        actions=actions,
        rewards=rewards,
        terminals=terminals,
        masks=masks,
        next_observations=next_observations,
    )
    require_finite_arrays(arrays, "make_dataset")
    arrays = {k: jax.device_put(v, device) for k, v in arrays.items()}
    return TransitionDataset(**arrays)


def sample_chunk_batch(dataset: TransitionDataset, key, batch_size: int, horizon: int, discount: float) -> dict:
    """Draw ``batch_size`` chunks of ``horizon`` consecutive steps uniformly from the dataset.

    Returns a dict of device arrays: observations (B, obs_dim), actions (B, H * action_dim) (the flattened
    chunk), returns (B,), valid (B, H), bootstrap_mask (B,), next_observations (B, obs_dim) = s_{t+H}.
    """
    if dataset.size < horizon:
        raise ValueError(f"The dataset has {dataset.size} transitions, fewer than one chunk of horizon {horizon}.")
    start = jax.random.randint(key, (batch_size,), 0, dataset.size - horizon + 1)
    window = start[:, None] + jnp.arange(horizon)
    returns, valid, bootstrap_mask = chunk_returns(
        dataset.rewards[window], dataset.terminals[window], dataset.masks[window], discount
    )
    return {
        "observations": dataset.observations[start],
        "actions": dataset.actions[window].reshape(batch_size, horizon * dataset.action_dim),
        "returns": returns,
        "valid": valid,
        "bootstrap_mask": bootstrap_mask,
        "next_observations": dataset.next_observations[start + horizon - 1],
    }


def dataset_from_dict(data: dict, device=None) -> TransitionDataset:
    """Build a dataset from an OGBench-style dict (observations, actions, rewards, terminals, masks, next_observations)."""
    missing = [k for k in ("observations", "actions", "rewards", "terminals", "next_observations") if k not in data]
    if missing:
        raise ValueError(f"The dataset dict lacks key(s) {missing}; found {sorted(data)}.")
    return make_dataset(
        actions=data["actions"],
        rewards=data["rewards"],
        observations=data["observations"],
        terminals=data["terminals"],
        masks=data.get("masks"),
        next_observations=data["next_observations"],
        device=device,
    )


__all__ = [
    "dataset_from_dict",
    "make_dataset",
    "sample_chunk_batch",
    "TransitionDataset",
]
