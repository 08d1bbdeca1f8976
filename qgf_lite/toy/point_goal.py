"""``point_goal``: a tiny offline multi-step task for IQL with action chunks.

A 2D point steers around a disc obstacle to a goal; the behaviour episodes are noisy and often suboptimal, so
an IQL critic trained on action chunks has something to learn.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from qgf_lite.toy.bandits import Array, _check_actions, _check_finite, as_key
from qgf_lite.validation import require_positive_int

__all__ = [
    "PointGoalConfig",
    "point_goal_step",
    "point_goal_reset",
    "make_point_goal_dataset",
    "evaluate_point_goal",
]


# --------------------------------------------------------------------------- #
# point_goal: a tiny offline multi-step task for IQL with action chunks
# --------------------------------------------------------------------------- #
@dataclasses.dataclass(frozen=True)
class PointGoalConfig:
    """A point in [-1, 1]^2 moves by ``step_size * clip(a, -1, 1)`` per step.

    A disc obstacle of ``obstacle_radius`` at the origin sits between the start
    and the goal, so the straight line (and the average of the detours above and
    below it) fails. Reward is -1 per step and 0 on the step that reaches the goal;
    reaching the goal ends the episode with mask 0 (nothing to bootstrap), and
    ``max_steps`` ends it by time-out with mask 1.
    """

    max_steps: int = 25
    step_size: float = 0.1
    start: tuple = (-0.7, 0.0)
    start_noise: float = 0.05
    goal: tuple = (0.7, 0.0)
    goal_radius: float = 0.12
    obstacle_radius: float = 0.3


def point_goal_step(config: PointGoalConfig, positions, actions):
    """One environment step for a batch.

    positions, actions: (batch, 2). Returns (next_positions (batch, 2),
    rewards (batch,), reached_goal (batch,) bool). Actions are clipped to [-1, 1];
    a move that ends inside the obstacle is pushed radially onto its boundary.
    """
    positions = _check_actions(positions, "positions")
    actions = _check_actions(actions)
    moved = jnp.clip(positions + config.step_size * jnp.clip(actions, -1.0, 1.0), -1.0, 1.0)
    norm = jnp.linalg.norm(moved, axis=-1, keepdims=True)
    pushed_out = moved * config.obstacle_radius / jnp.maximum(norm, 1e-6)
    next_positions = jnp.where(norm < config.obstacle_radius, pushed_out, moved)
    reached = jnp.linalg.norm(next_positions - jnp.asarray(config.goal), axis=-1) < config.goal_radius
    rewards = jnp.where(reached, 0.0, -1.0)
    return next_positions, rewards, reached


def point_goal_reset(config: PointGoalConfig, key, num_episodes: int) -> Array:
    """Start positions: ``config.start`` plus uniform jitter of +-start_noise. Returns (num_episodes, 2)."""
    num_episodes = require_positive_int("num_episodes", num_episodes)
    jitter = jax.random.uniform(as_key(key), (num_episodes, 2), minval=-1.0, maxval=1.0)
    return jnp.asarray(config.start) + config.start_noise * jitter


_point_goal_step_compiled = jax.jit(point_goal_step, static_argnums=0)


def _behaviour_directions(
    config: PointGoalConfig, positions: np.ndarray, side: np.ndarray, detouring: np.ndarray
) -> np.ndarray:
    """Unit directions of the scripted behaviour: via a waypoint above/below the obstacle, or to a decoy."""
    waypoint = np.stack([np.zeros_like(side), 0.55 * side], axis=-1)
    past_obstacle = positions[:, 0] > -0.05
    target = np.where(past_obstacle[:, None], np.asarray(config.goal)[None], waypoint)
    decoy = np.stack([np.full_like(side, -0.8), 0.85 * side], axis=-1)
    target = np.where(detouring[:, None], decoy, target)
    delta = target - positions
    return delta / np.maximum(np.linalg.norm(delta, axis=-1, keepdims=True), 1e-6)


def make_point_goal_dataset(seed: int, num_episodes: int = 200, config: PointGoalConfig = PointGoalConfig()) -> dict:
    """Noisy, often suboptimal behaviour episodes, flattened episode after episode.

    Each episode picks a side (above/below the obstacle), a noise level in
    [0.1, 0.9] and, with probability 0.4, a detour of 5-20 steps towards a decoy
    corner first; so the average behaviour is much worse than the best, which is
    what an upper expectile (tau = 0.9) value picks out.

    Returns a dict of float32 numpy arrays with N transitions:
    observations (N, 2), actions (N, 2), rewards (N,), terminals (N,) = 1 at
    each episode's last step, masks (N,) = 0 where the goal was reached,
    next_observations (N, 2).
    """
    num_episodes = require_positive_int("num_episodes", num_episodes)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    rng = np.random.default_rng(seed)
    side = rng.choice([-1.0, 1.0], size=num_episodes)
    noise_std = rng.uniform(0.1, 0.9, size=num_episodes)
    detour_steps = np.where(rng.uniform(size=num_episodes) < 0.4, rng.integers(5, 21, size=num_episodes), 0)
    positions = np.asarray(point_goal_reset(config, int(rng.integers(2**31)), num_episodes))

    steps = config.max_steps
    record = {name: [] for name in ("observations", "actions", "rewards", "next_observations", "reached")}
    for t in range(steps):
        directions = _behaviour_directions(config, positions, side, t < detour_steps)
        actions = np.clip(directions + noise_std[:, None] * rng.normal(size=(num_episodes, 2)), -1.0, 1.0)
        next_positions, rewards, reached = (
            np.asarray(x) for x in _point_goal_step_compiled(config, positions, actions)
        )
        for name, value in zip(record, (positions, actions, rewards, next_positions, reached)):
            record[name].append(value)
        positions = next_positions

    # (steps, episodes, ...) -> keep each episode up to and including its first success.
    stacked = {name: np.stack(values, axis=1) for name, values in record.items()}  # (episodes, steps, ...)
    reached = stacked.pop("reached")
    ever_reached_before = np.cumsum(reached, axis=1) - reached > 0
    alive = ~ever_reached_before
    last_step = np.zeros_like(alive)
    first_success = np.argmax(reached, axis=1)
    ends = np.where(reached.any(axis=1), first_success, steps - 1)
    last_step[np.arange(num_episodes), ends] = True

    data = {name: value[alive].astype(np.float32) for name, value in stacked.items()}
    data["terminals"] = last_step[alive].astype(np.float32)
    data["masks"] = 1.0 - reached[alive].astype(np.float32)
    return data


def evaluate_point_goal(
    policy_fn, key, *, num_episodes: int = 64, chunk_len: int = 5, config: PointGoalConfig = PointGoalConfig()
) -> dict:
    """Roll out a chunked policy open-loop within each chunk.

    policy_fn: (observations (E, 2), key) -> flattened action chunks (E, chunk_len * 2),
        e.g. a guided flow sampler with noise drawn from ``key``.
    Returns {"success_rate": float, "mean_return": float, "mean_steps": float,
    "trajectories": (E, max_steps + 1, 2) positions (frozen after success)}.
    """
    num_episodes = require_positive_int("num_episodes", num_episodes)
    chunk_len = require_positive_int("chunk_len", chunk_len)
    reset_key, policy_key = jax.random.split(as_key(key))
    positions = point_goal_reset(config, reset_key, num_episodes)
    done = jnp.zeros(num_episodes, bool)
    returns = jnp.zeros(num_episodes)
    steps_taken = jnp.zeros(num_episodes)
    path = [positions]
    for t0 in range(0, config.max_steps, chunk_len):
        policy_key, call_key = jax.random.split(policy_key)
        chunk = jnp.asarray(policy_fn(positions, call_key))
        if chunk.shape != (num_episodes, chunk_len * 2):
            raise ValueError(
                f"policy_fn: expected action chunks of shape {(num_episodes, chunk_len * 2)}, got {tuple(chunk.shape)}"
            )
        _check_finite(chunk, "policy_fn output")
        chunk = chunk.reshape(num_episodes, chunk_len, 2)
        for i in range(min(chunk_len, config.max_steps - t0)):
            next_positions, rewards, reached = _point_goal_step_compiled(config, positions, chunk[:, i])
            positions = jnp.where(done[:, None], positions, next_positions)
            returns = returns + jnp.where(done, 0.0, rewards)
            steps_taken = steps_taken + (~done)
            done = done | reached
            path.append(positions)
    return {
        "success_rate": float(jnp.mean(done)),
        "mean_return": float(jnp.mean(returns)),
        "mean_steps": float(jnp.mean(steps_taken)),
        "trajectories": jnp.stack(path, axis=1),
    }
