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
import math
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qgf_lite.validation import is_concrete, require_positive_int

Array = jax.Array
RewardFn = Callable[[Optional[Array], Array], Array]
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
    corners = [
        (-extent + i * side, -extent + j * side)
        for j in range(cells)
        for i in range(cells)
        if (i + j) % 2 == 0
    ]
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
    angle_gap = jnp.angle(
        (actions[:, 0] + 1j * actions[:, 1]) * jnp.conj(targets[:, 0] + 1j * targets[:, 1])
    )
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
    in_best_region: Callable[[Optional[Array], Array], Array]
    log_density: Optional[LogDensityFn]
    best_points: tuple = ()
    sample_contexts: Optional[Callable[..., Array]] = None
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


# --------------------------------------------------------------------------- #
# Densities on a grid: pi_ref and the tilted target pi_ref * exp(w Q)
# --------------------------------------------------------------------------- #
@dataclasses.dataclass(frozen=True)
class Grid2D:
    """Square grid of ``size`` x ``size`` cells over [lo, hi]^2, evaluated at cell centres.

    Grid arrays are indexed ``[row, col]`` with row = y index and col = x index
    (the layout image and heatmap plots expect).
    """

    lo: float = -1.0
    hi: float = 1.0
    size: int = 128

    def __post_init__(self):
        if not self.hi > self.lo:
            raise ValueError(f"Grid2D: need hi > lo, got lo={self.lo}, hi={self.hi}")
        require_positive_int("size", self.size)

    @property
    def cell_width(self) -> float:
        return (self.hi - self.lo) / self.size

    @property
    def cell_area(self) -> float:
        return self.cell_width**2

    @property
    def centers(self) -> Array:
        """Cell-centre coordinates along one axis, (size,)."""
        return self.lo + (jnp.arange(self.size) + 0.5) * self.cell_width

    @property
    def points(self) -> Array:
        """All cell centres as (size * size, 2), row-major (y outer, x inner)."""
        y, x = jnp.meshgrid(self.centers, self.centers, indexing="ij")
        return jnp.stack([x.ravel(), y.ravel()], axis=-1)


def scott_bandwidth(samples) -> float:
    """Scott's rule for a 2D Gaussian KDE: n^(-1/6) times the mean per-axis std."""
    samples = jnp.asarray(samples)
    return float(samples.shape[0] ** (-1.0 / 6.0) * jnp.mean(jnp.std(samples, axis=0)))


def loo_bandwidth(samples, candidates: Optional[Sequence[float]] = None, *, max_queries: int = 500) -> float:
    """Pick the KDE bandwidth with the best leave-one-out log-likelihood.

    Scott's rule assumes one Gaussian blob and badly over-smooths multimodal
    data such as the ring, so the default tries Scott's value times
    (1, 1/2, 1/4, 1/8). samples: (n, 2), n >= 2; the first ``max_queries`` samples
    are scored against all others (deterministic, O(max_queries * n) memory).
    """
    samples = _check_actions(samples, "samples")
    if candidates is None:
        scott = scott_bandwidth(samples)
        candidates = tuple(scott * f for f in (1.0, 0.5, 0.25, 0.125))
    queries = samples[:max_queries]
    sq_dist = jnp.sum((queries[:, None, :] - samples[None]) ** 2, axis=-1)
    is_self = jnp.arange(samples.shape[0])[None, :] == jnp.arange(queries.shape[0])[:, None]

    def loo_log_likelihood(h):
        log_kernel = jnp.where(is_self, -jnp.inf, -0.5 * sq_dist / h**2)
        log_norm = jnp.log((samples.shape[0] - 1) * 2.0 * jnp.pi * h**2)
        return jnp.mean(jax.scipy.special.logsumexp(log_kernel, axis=-1) - log_norm)

    scores = [float(loo_log_likelihood(float(h))) for h in candidates]
    return float(candidates[int(np.argmax(scores))])


def kde_log_density(samples, bandwidth: Optional[float] = None, *, chunk_size: int = 1024) -> LogDensityFn:
    """Gaussian KDE of 2D samples, the fallback when no analytic pi_ref exists.

    samples: (n, 2). bandwidth: kernel std (default: ``loo_bandwidth``). Returns a
    jitted function actions (batch, 2) -> log density (batch,); it evaluates
    ``chunk_size`` query points at a time so memory stays at chunk_size * n floats.
    """
    samples = _check_actions(samples, "samples")
    _check_finite(samples, "samples")
    if samples.shape[0] < 2:
        raise ValueError(f"samples: need at least 2 samples for a KDE, got {samples.shape[0]}")
    h = loo_bandwidth(samples) if bandwidth is None else float(bandwidth)
    if not h > 0:
        raise ValueError(f"bandwidth: expected > 0, got {h}")
    log_norm = jnp.log(samples.shape[0] * 2.0 * jnp.pi * h**2)

    def log_density(actions: Array) -> Array:
        actions = _check_actions(actions)

        def one(a):
            sq_dist = jnp.sum((samples - a) ** 2, axis=-1)
            return jax.scipy.special.logsumexp(-0.5 * sq_dist / h**2) - log_norm

        return jax.lax.map(one, actions, batch_size=chunk_size)

    return jax.jit(log_density)


def _reference_log_density(log_ref) -> LogDensityFn:
    if callable(log_ref):
        return log_ref
    return kde_log_density(log_ref)


def _broadcast_context(obs, batch: int):
    if obs is None:
        return None
    obs = jnp.asarray(obs)
    if obs.ndim != 1:
        raise ValueError(f"obs: expected a single context of shape (obs_dim,), got {tuple(obs.shape)}")
    return jnp.broadcast_to(obs, (batch, obs.shape[0]))


def _logits_fn(log_ref: LogDensityFn, reward_fn: RewardFn):
    def logits(weight, points, obs):
        log_p = log_ref(points)
        # w = 0 must give pi_ref exactly, even where the critic is not finite.
        return jnp.where(weight > 0, log_p + weight * reward_fn(obs, points), log_p)

    return logits


@functools.lru_cache(maxsize=8)
def _compiled_logits_fn(log_ref: LogDensityFn, reward_fn: RewardFn):
    return jax.jit(_logits_fn(log_ref, reward_fn))


def _tilted_logits(log_ref: LogDensityFn, reward_fn: RewardFn, weight: float, points: Array, obs) -> Array:
    """log pi_ref + w Q at the points; compiled once per (log_ref, reward_fn) when both are hashable."""
    try:
        logits = _compiled_logits_fn(log_ref, reward_fn)
    except TypeError:  # unhashable callables: run eagerly
        logits = _logits_fn(log_ref, reward_fn)
    return logits(weight, points, obs)


def tilted_log_density_grid(log_ref, reward_fn: RewardFn, weight: float, grid: Grid2D = Grid2D(), *, obs=None) -> Array:
    """Normalised log of pi_ref(a) exp(w Q(obs, a)) at the grid's cell centres.

    log_ref: a function actions (batch, 2) -> log pi_ref (batch,), or behaviour
        samples (n, 2) from which a KDE is built.
    reward_fn: (obs, actions) -> (batch,), e.g. a problem's reward or a learned critic.
    weight: guidance weight w = 1/beta (>= 0).
    obs: one context (obs_dim,) for contextual problems, else None.
    Returns: (size, size) log densities with logsumexp + log(cell_area) = 0
    (mass outside the grid is ignored).
    """
    weight = float(weight)
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"weight: expected a finite value >= 0, got {weight}")
    points = grid.points
    log_p = _tilted_logits(_reference_log_density(log_ref), reward_fn, weight,
                           points, _broadcast_context(obs, points.shape[0]))
    if not bool(jnp.any(jnp.isfinite(log_p))):
        raise ValueError("log_ref: the reference density is zero (or NaN) on the whole grid; check the grid range")
    if bool(jnp.any(jnp.isnan(log_p))):
        raise ValueError("reward_fn/log_ref: produced NaN on the grid")
    log_p = log_p - jax.scipy.special.logsumexp(log_p) - jnp.log(grid.cell_area)
    return log_p.reshape(grid.size, grid.size)


def tilted_density_grid(log_ref, reward_fn: RewardFn, weight: float, grid: Grid2D = Grid2D(), *, obs=None) -> Array:
    """pi(a) proportional to pi_ref(a) exp(w Q(obs, a)), normalised on the grid.

    Same arguments as ``tilted_log_density_grid``. Returns: (size, size) densities
    with sum * grid.cell_area == 1; weight = 0 gives pi_ref itself.
    """
    return jnp.exp(tilted_log_density_grid(log_ref, reward_fn, weight, grid, obs=obs))


def grid_mass(density, grid: Grid2D, region_fn, *, obs=None) -> float:
    """Probability mass a grid density puts on a region (evaluated at cell centres).

    density: (size, size); region_fn: (obs, actions) -> (batch,) bool, e.g.
    ``problem.in_best_region``; obs: one context (obs_dim,) or None.
    """
    density = jnp.asarray(density)
    if density.shape != (grid.size, grid.size):
        raise ValueError(f"density: expected shape {(grid.size, grid.size)} for this grid, got {tuple(density.shape)}")
    points = grid.points
    inside = region_fn(_broadcast_context(obs, points.shape[0]), points)
    return float(jnp.sum(density.ravel() * inside) * grid.cell_area)


def sample_grid_density(key, density, grid: Grid2D, n: int) -> Array:
    """Draw reference samples from a grid density: pick a cell, then a uniform point in it.

    density: (size, size), non-negative (need not be normalised). Returns: (n, 2).
    """
    n = require_positive_int("n", n)
    density = jnp.asarray(density)
    if density.shape != (grid.size, grid.size):
        raise ValueError(f"density: expected shape {(grid.size, grid.size)} for this grid, got {tuple(density.shape)}")
    if not bool(jnp.all(jnp.isfinite(density) & (density >= 0))) or not bool(jnp.sum(density) > 0):
        raise ValueError("density: must be finite, non-negative and not all zero")
    cell_key, jitter_key = jax.random.split(as_key(key))
    # Inverse-CDF draw: memory O(n + cells), unlike Gumbel-max categorical's O(n * cells).
    cdf = jnp.cumsum(density.ravel()) / jnp.sum(density)
    cells = jnp.searchsorted(cdf, jax.random.uniform(cell_key, (n,)), side="right")
    cells = jnp.minimum(cells, cdf.shape[0] - 1)
    corners = grid.points[cells] - 0.5 * grid.cell_width
    return corners + grid.cell_width * jax.random.uniform(jitter_key, (n, 2))


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


def _behaviour_directions(config: PointGoalConfig, positions: np.ndarray, side: np.ndarray,
                          detouring: np.ndarray) -> np.ndarray:
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
        next_positions, rewards, reached = (np.asarray(x) for x in _point_goal_step_compiled(config, positions, actions))
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


def evaluate_point_goal(policy_fn, key, *, num_episodes: int = 64, chunk_len: int = 5,
                        config: PointGoalConfig = PointGoalConfig()) -> dict:
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
