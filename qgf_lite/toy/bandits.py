"""Toy problems for teaching Q-guided flows.

Three kinds of problem live here:

* 2D-action bandits (``ring``, ``moons``, ``checkerboard``, ``spiral``): behaviour
  actions ``a`` in R^2 from a multimodal distribution scaled to lie inside
  ``[-1, 1]^2``, and a smooth reward whose best region holds only a small share of
  the behaviour data, so guidance has something to find.
* ``contextual_ring``: the same ring of behaviour actions, but a 2D context
  ``s = (cos phi, sin phi)`` decides where on the ring the reward peaks.
* ``point_goal``: a tiny offline multi-step task (a 2D point steering around a
  disc obstacle to a goal) with noisy, often suboptimal behaviour episodes, for
  training an IQL critic on action chunks.

It also computes the exact target of guidance on a grid,
``pi(a) proportional to pi_ref(a) * exp(w * Q(a))``, and draws reference samples from it.

Conventions: batches of actions have shape ``(batch, 2)``; rewards and critics
are pure ``jnp`` functions ``(obs, actions) -> (batch,)`` with ``obs`` either
``None`` (bandits) or ``(batch, obs_dim)``, so they plug into ``guided_sample``
as ``critic``. Every random draw takes a JAX PRNG key or an integer seed.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qgf_lite.validation import is_concrete, require_positive_int

__all__ = [
    "Array",
    "RewardFn",
    "LogDensityFn",
    "BANDIT_NAMES",
    "as_key",
    "ring_means",
    "sample_ring",
    "ring_log_density",
    "moons_curve_points",
    "sample_moons",
    "checkerboard_cells",
    "sample_checkerboard",
    "checkerboard_log_density",
    "spiral_curve_points",
    "sample_spiral",
    "bump_reward",
    "in_discs",
    "in_box",
    "context_ring_reward",
    "in_context_sector",
    "sample_ring_contexts",
    "BanditProblem",
    "ring_bandit",
    "moons_bandit",
    "checkerboard_bandit",
    "spiral_bandit",
    "contextual_ring_bandit",
    "make_bandit",
]


Array = jax.Array
RewardFn = Callable[[Array | None, Array], Array]
LogDensityFn = Callable[[Array], Array]

BANDIT_NAMES = ("ring", "moons", "checkerboard", "spiral", "contextual_ring")


# --------------------------------------------------------------------------- #
# Input checks shared by the public functions
# --------------------------------------------------------------------------- #
def as_key(key_or_seed) -> Array:
    """Return a JAX PRNG key from a key or a non-negative integer seed."""
    if isinstance(key_or_seed, (bool, np.bool_)):
        raise TypeError("key: expected a jax PRNG key or an int seed, got a bool")
    if isinstance(key_or_seed, (int, np.integer)):
        if key_or_seed < 0:
            raise ValueError(f"key: seed must be >= 0, got {key_or_seed}")
        return jax.random.PRNGKey(int(key_or_seed))
    if isinstance(key_or_seed, jax.Array):
        if jnp.issubdtype(key_or_seed.dtype, jax.dtypes.prng_key):
            return key_or_seed
        if key_or_seed.dtype == jnp.uint32 and key_or_seed.shape == (2,):
            return key_or_seed
    raise TypeError(
        "key: expected a jax PRNG key (jax.random.PRNGKey(seed) or jax.random.key(seed)) "
        f"or an int seed, got {type(key_or_seed).__name__}"
    )


def _check_actions(actions, name: str = "actions") -> Array:
    """Static shape check (safe under jit): actions must be (batch, 2)."""
    actions = jnp.asarray(actions)
    if actions.ndim != 2 or actions.shape[-1] != 2:
        raise ValueError(f"{name}: expected shape (batch, 2), got {tuple(actions.shape)}")
    return actions


def _check_finite(x: Array, name: str) -> None:
    """Reject NaN/inf when the values are concrete (skipped while tracing under jit)."""
    if not is_concrete(x):
        return
    if not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"{name}: contains NaN or inf; drop or fix those rows first")


# --------------------------------------------------------------------------- #
# Behaviour distributions (all scaled into [-1, 1]^2)
# --------------------------------------------------------------------------- #
def ring_means(num_modes: int = 8, radius: float = 0.7) -> Array:
    """Centres of the ring's Gaussian modes, mode k at angle 2*pi*k/num_modes.

    Returns: (num_modes, 2).
    """
    angles = 2.0 * jnp.pi * jnp.arange(num_modes) / num_modes
    return radius * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=-1)


def sample_ring(key, n: int, *, num_modes: int = 8, radius: float = 0.7, std: float = 0.08) -> Array:
    """Equal-weight mixture of isotropic Gaussians on a circle.

    Returns: actions (n, 2).
    """
    return _draw_ring(as_key(key), require_positive_int("n", n), num_modes, radius, std)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _draw_ring(key, n, num_modes, radius, std):
    mode_key, noise_key = jax.random.split(key)
    modes = jax.random.randint(mode_key, (n,), 0, num_modes)
    noise = jax.random.normal(noise_key, (n, 2))
    return ring_means(num_modes, radius)[modes] + std * noise


def ring_log_density(actions, *, num_modes: int = 8, radius: float = 0.7, std: float = 0.08) -> Array:
    """Exact log density of ``sample_ring``'s distribution.

    actions: (batch, 2). Returns: (batch,).
    """
    actions = _check_actions(actions)
    sq_dist = jnp.sum((actions[:, None, :] - ring_means(num_modes, radius)[None]) ** 2, axis=-1)
    log_components = -0.5 * sq_dist / std**2 - jnp.log(2.0 * jnp.pi * std**2)
    return jax.scipy.special.logsumexp(log_components, axis=-1) - jnp.log(num_modes)


# Two moons: the classic unit-radius half circles, then centred and scaled by
# 0.55 so that x is in about [-0.83, 0.83] and y in about [-0.41, 0.41].
_MOONS_SHIFT = (0.5, 0.25)
_MOONS_SCALE = 0.55


def moons_curve_points(t: Array, lower: Array) -> Array:
    """Noise-free points of the two moons at arc parameter ``t`` in [0, pi].

    t: (n,); lower: (n,) bool, True for the lower moon. Returns: (n, 2).
    """
    upper_xy = jnp.stack([jnp.cos(t), jnp.sin(t)], axis=-1)
    lower_xy = jnp.stack([1.0 - jnp.cos(t), 0.5 - jnp.sin(t)], axis=-1)
    raw = jnp.where(lower[:, None], lower_xy, upper_xy)
    return _MOONS_SCALE * (raw - jnp.asarray(_MOONS_SHIFT))


def sample_moons(key, n: int, *, noise: float = 0.04) -> Array:
    """Two interleaved half circles with Gaussian noise of std ``noise``.

    Returns: actions (n, 2).
    """
    return _draw_moons(as_key(key), require_positive_int("n", n), noise)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _draw_moons(key, n, noise):
    moon_key, t_key, noise_key = jax.random.split(key, 3)
    lower = jax.random.bernoulli(moon_key, 0.5, (n,))
    t = jax.random.uniform(t_key, (n,), minval=0.0, maxval=jnp.pi)
    return moons_curve_points(t, lower) + noise * jax.random.normal(noise_key, (n, 2))


def checkerboard_cells(cells: int = 4, extent: float = 0.9) -> Array:
    """Lower-left corners of the occupied ("black") squares, (i + j) even.

    Returns: (cells * cells // 2, 2) for even ``cells``.
    """
    side = 2.0 * extent / cells
    corners = [(-extent + i * side, -extent + j * side) for j in range(cells) for i in range(cells) if (i + j) % 2 == 0]
    return jnp.asarray(corners, dtype=jnp.float32)


def sample_checkerboard(key, n: int, *, cells: int = 4, extent: float = 0.9) -> Array:
    """Uniform on the black squares of a ``cells`` x ``cells`` board over [-extent, extent]^2.

    Returns: actions (n, 2).
    """
    n = require_positive_int("n", n)
    if cells < 2 or cells % 2:
        raise ValueError(f"cells: expected an even int >= 2, got {cells}")
    return _draw_checkerboard(as_key(key), n, cells, extent)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _draw_checkerboard(key, n, cells, extent):
    cell_key, offset_key = jax.random.split(key)
    corners = checkerboard_cells(cells, extent)
    chosen = jax.random.randint(cell_key, (n,), 0, corners.shape[0])
    side = 2.0 * extent / cells
    return corners[chosen] + side * jax.random.uniform(offset_key, (n, 2))


def checkerboard_log_density(actions, *, cells: int = 4, extent: float = 0.9) -> Array:
    """Exact log density of ``sample_checkerboard``: constant on black squares, -inf elsewhere.

    actions: (batch, 2). Returns: (batch,).
    """
    actions = _check_actions(actions)
    side = 2.0 * extent / cells
    index = jnp.floor((actions + extent) / side)
    inside = jnp.all((index >= 0) & (index < cells), axis=-1)
    black = jnp.sum(index, axis=-1) % 2 == 0
    log_uniform = -jnp.log(cells * cells / 2 * side**2)
    return jnp.where(inside & black, log_uniform, -jnp.inf)


def spiral_curve_points(t: Array, *, turns: float = 1.5) -> Array:
    """Noise-free spiral points; radius grows linearly from 0.15 (t=0) to 0.85 (t=1).

    t: (n,) in [0, 1]. Returns: (n, 2).
    """
    angle = 2.0 * jnp.pi * turns * t
    radius = 0.15 + 0.7 * t
    return radius[:, None] * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)


def sample_spiral(key, n: int, *, turns: float = 1.5, noise: float = 0.03) -> Array:
    """Points along an Archimedean spiral with Gaussian noise of std ``noise``.

    Returns: actions (n, 2).
    """
    return _draw_spiral(as_key(key), require_positive_int("n", n), turns, noise)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _draw_spiral(key, n, turns, noise):
    t_key, noise_key = jax.random.split(key)
    t = jax.random.uniform(t_key, (n,))
    return spiral_curve_points(t, turns=turns) + noise * jax.random.normal(noise_key, (n, 2))


# --------------------------------------------------------------------------- #
# Rewards and best regions (pure jnp, (obs, actions) -> (batch,))
# --------------------------------------------------------------------------- #
def bump_reward(obs, actions, *, centers: Sequence[Sequence[float]], width: float) -> Array:
    """Sum of Gaussian bumps ``exp(-|a - c|^2 / (2 width^2))``; ignores ``obs``.

    Bounded in [0, len(centers)], smooth, and with a non-vanishing gradient over
    a few ``width`` around each centre. actions: (batch, 2). Returns: (batch,).
    """
    del obs  # bandit rewards do not depend on a state
    actions = _check_actions(actions)
    sq_dist = jnp.sum((actions[:, None, :] - jnp.asarray(centers)[None]) ** 2, axis=-1)
    return jnp.sum(jnp.exp(-0.5 * sq_dist / width**2), axis=-1)


def in_discs(obs, actions, *, centers: Sequence[Sequence[float]], radius: float) -> Array:
    """True where an action lies within ``radius`` of any centre; ignores ``obs``.

    actions: (batch, 2). Returns: (batch,) bool.
    """
    del obs
    actions = _check_actions(actions)
    sq_dist = jnp.sum((actions[:, None, :] - jnp.asarray(centers)[None]) ** 2, axis=-1)
    return jnp.any(sq_dist < radius**2, axis=-1)


def in_box(obs, actions, *, low: Sequence[float], high: Sequence[float]) -> Array:
    """True where an action lies in the axis-aligned box [low, high]; ignores ``obs``.

    actions: (batch, 2). Returns: (batch,) bool.
    """
    del obs
    actions = _check_actions(actions)
    return jnp.all((actions >= jnp.asarray(low)) & (actions <= jnp.asarray(high)), axis=-1)


def _context_targets(obs, radius: float) -> Array:
    obs = jnp.asarray(obs)
    if obs.ndim != 2 or obs.shape[-1] != 2:
        raise ValueError(
            f"obs: contextual_ring expects contexts of shape (batch, 2) = (cos phi, sin phi), "
            f"got {None if obs is None else tuple(obs.shape)}"
        )
    return radius * obs


def context_ring_reward(obs, actions, *, radius: float = 0.7, width: float = 0.3) -> Array:
    """Bump reward peaking at ``radius * s`` on the ring, for context s = (cos phi, sin phi).

    obs: (batch, 2); actions: (batch, 2). Returns: (batch,).
    """
    if obs is None:
        raise ValueError("obs: contextual_ring needs contexts of shape (batch, 2), got None")
    actions = _check_actions(actions)
    sq_dist = jnp.sum((actions - _context_targets(obs, radius)) ** 2, axis=-1)
    return jnp.exp(-0.5 * sq_dist / width**2)


def in_context_sector(obs, actions, *, num_modes: int = 8, radius: float = 0.7, band: float = 0.2) -> Array:
    """True where an action lies in the ring sector centred on the context's angle.

    The sector spans one mode's share of the circle (2*pi/num_modes) and radii
    within ``band`` of the ring, so it holds about 1/num_modes of the behaviour
    data whatever the context. obs: (batch, 2); actions: (batch, 2). Returns: (batch,) bool.
    """
    if obs is None:
        raise ValueError("obs: contextual_ring needs contexts of shape (batch, 2), got None")
    actions = _check_actions(actions)
    targets = _context_targets(obs, radius)
    angle_gap = jnp.angle((actions[:, 0] + 1j * actions[:, 1]) * jnp.conj(targets[:, 0] + 1j * targets[:, 1]))
    near_ring = jnp.abs(jnp.linalg.norm(actions, axis=-1) - radius) < band
    return (jnp.abs(angle_gap) < jnp.pi / num_modes) & near_ring


def sample_ring_contexts(key, n: int) -> Array:
    """Contexts s = (cos phi, sin phi) with phi uniform on [0, 2 pi). Returns: (n, 2)."""
    n = require_positive_int("n", n)
    phi = jax.random.uniform(as_key(key), (n,), maxval=2.0 * jnp.pi)
    return jnp.stack([jnp.cos(phi), jnp.sin(phi)], axis=-1)


# --------------------------------------------------------------------------- #
# Bandit problems
# --------------------------------------------------------------------------- #
@dataclasses.dataclass(frozen=True)
class BanditProblem:
    """A behaviour distribution plus a reward, ready for BC training and guidance.

    Attributes:
        name: problem id.
        sample_actions: (key, n) -> behaviour actions (n, 2).
        reward: (obs, actions) -> (batch,); smooth, usable directly as ``critic``.
        in_best_region: (obs, actions) -> (batch,) bool; the rare high-reward region.
        log_density: actions (batch, 2) -> exact log pi_ref(a) (batch,), or None
            (use a KDE of samples instead, see ``kde_log_density``).
        best_points: reward peaks (k, 2) for plots; empty for contextual problems.
        sample_contexts: (key, n) -> contexts (n, obs_dim) for contextual problems, else None.
        obs_dim: 0 for plain bandits.
    """

    name: str
    sample_actions: Callable[..., Array]
    reward: RewardFn
    in_best_region: Callable[[Array | None, Array], Array]
    log_density: LogDensityFn | None
    best_points: tuple = ()
    sample_contexts: Callable[..., Array] | None = None
    obs_dim: int = 0

    @property
    def contextual(self) -> bool:
        return self.sample_contexts is not None

    def sample(self, key, n: int):
        """Behaviour data: (obs, actions) with obs (n, obs_dim) or None, actions (n, 2)."""
        context_key, action_key = jax.random.split(as_key(key))
        obs = self.sample_contexts(context_key, n) if self.contextual else None
        return obs, self.sample_actions(action_key, n)


def ring_bandit(
    *,
    target_modes: Sequence[int] = (0,),
    num_modes: int = 8,
    radius: float = 0.7,
    std: float = 0.08,
    reward_width: float = 0.3,
    region_radius: float = 0.2,
) -> BanditProblem:
    """Ring of ``num_modes`` Gaussians; the reward peaks on the ``target_modes``.

    With one target mode about 1/num_modes of the data lies in the best region
    (discs of ``region_radius`` = 2.5 std around the target means).
    """
    if not target_modes or any(not 0 <= int(k) < num_modes for k in target_modes):
        raise ValueError(f"target_modes: expected mode indices in [0, {num_modes}), got {target_modes}")
    means = np.asarray(ring_means(num_modes, radius))
    centers = tuple(tuple(float(c) for c in means[int(k)]) for k in target_modes)
    return BanditProblem(
        name="ring",
        sample_actions=functools.partial(sample_ring, num_modes=num_modes, radius=radius, std=std),
        reward=jax.jit(functools.partial(bump_reward, centers=centers, width=reward_width)),
        in_best_region=jax.jit(functools.partial(in_discs, centers=centers, radius=region_radius)),
        log_density=jax.jit(functools.partial(ring_log_density, num_modes=num_modes, radius=radius, std=std)),
        best_points=centers,
    )


def moons_bandit(*, noise: float = 0.04, reward_width: float = 0.3, region_radius: float = 0.2) -> BanditProblem:
    """Two moons; the reward peaks at the right tip of the lower moon (about 5% of the data)."""
    tip = tuple(float(c) for c in np.asarray(moons_curve_points(jnp.array([jnp.pi]), jnp.array([True])))[0])
    return BanditProblem(
        name="moons",
        sample_actions=functools.partial(sample_moons, noise=noise),
        reward=jax.jit(functools.partial(bump_reward, centers=(tip,), width=reward_width)),
        in_best_region=jax.jit(functools.partial(in_discs, centers=(tip,), radius=region_radius)),
        log_density=None,
        best_points=(tip,),
    )


def checkerboard_bandit(*, cells: int = 4, extent: float = 0.9, reward_width: float = 0.3) -> BanditProblem:
    """Checkerboard; the reward peaks in the centre of the top-right black square (1/8 of the data)."""
    if cells < 2 or cells % 2:
        raise ValueError(f"cells: expected an even int >= 2, got {cells}")
    side = 2.0 * extent / cells
    low = (extent - side, extent - side)  # top-right square is black because (cells-1)*2 is even
    high = (extent, extent)
    centre = (extent - side / 2, extent - side / 2)
    return BanditProblem(
        name="checkerboard",
        sample_actions=functools.partial(sample_checkerboard, cells=cells, extent=extent),
        reward=jax.jit(functools.partial(bump_reward, centers=(centre,), width=reward_width)),
        in_best_region=jax.jit(functools.partial(in_box, low=low, high=high)),
        log_density=jax.jit(functools.partial(checkerboard_log_density, cells=cells, extent=extent)),
        best_points=(centre,),
    )


def spiral_bandit(
    *, turns: float = 1.5, noise: float = 0.03, reward_width: float = 0.3, region_radius: float = 0.2
) -> BanditProblem:
    """Spiral; the reward peaks at its outer end (a few percent of the data)."""
    end = tuple(float(c) for c in np.asarray(spiral_curve_points(jnp.array([1.0]), turns=turns))[0])
    return BanditProblem(
        name="spiral",
        sample_actions=functools.partial(sample_spiral, turns=turns, noise=noise),
        reward=jax.jit(functools.partial(bump_reward, centers=(end,), width=reward_width)),
        in_best_region=jax.jit(functools.partial(in_discs, centers=(end,), radius=region_radius)),
        log_density=None,
        best_points=(end,),
    )


def contextual_ring_bandit(
    *, num_modes: int = 8, radius: float = 0.7, std: float = 0.08, reward_width: float = 0.3, band: float = 0.2
) -> BanditProblem:
    """Ring behaviour (independent of the context); the context's angle picks where the reward peaks.

    Contexts s = (cos phi, sin phi), phi ~ U[0, 2 pi): the reward is a bump at
    ``radius * s`` and the best region is the ring sector around angle phi.
    """
    return BanditProblem(
        name="contextual_ring",
        sample_actions=functools.partial(sample_ring, num_modes=num_modes, radius=radius, std=std),
        reward=jax.jit(functools.partial(context_ring_reward, radius=radius, width=reward_width)),
        in_best_region=jax.jit(functools.partial(in_context_sector, num_modes=num_modes, radius=radius, band=band)),
        log_density=jax.jit(functools.partial(ring_log_density, num_modes=num_modes, radius=radius, std=std)),
        sample_contexts=sample_ring_contexts,
        obs_dim=2,
    )


_BANDIT_BUILDERS = {
    "ring": ring_bandit,
    "moons": moons_bandit,
    "checkerboard": checkerboard_bandit,
    "spiral": spiral_bandit,
    "contextual_ring": contextual_ring_bandit,
}


def make_bandit(name: str, **kwargs) -> BanditProblem:
    """Build a bandit problem by id (one of ``BANDIT_NAMES``); kwargs go to its builder."""
    if name not in _BANDIT_BUILDERS:
        raise ValueError(f"name: unknown bandit {name!r}; choose one of {BANDIT_NAMES}")
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))
    try:
        return _cached_bandit(name, frozen)
    except TypeError:  # unhashable settings: build afresh (its jitted functions then compile anew)
        return _BANDIT_BUILDERS[name](**kwargs)


@functools.lru_cache(maxsize=32)
def _cached_bandit(name: str, frozen_kwargs: tuple) -> BanditProblem:
    # Reusing one problem object reuses its compiled reward/density functions.
    return _BANDIT_BUILDERS[name](**dict(frozen_kwargs))
