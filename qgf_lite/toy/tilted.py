"""The exact target of guidance on a 2D grid, ``pi(a) proportional to pi_ref(a) * exp(w * Q(a))``.

Used as ground truth in the toy notebooks: densities on cell centres of a :class:`Grid2D`, a kernel density
estimate for behaviour data without an analytic density, and exact samples from the gridded target.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qgf_lite.toy.bandits import Array, LogDensityFn, RewardFn, _check_actions, _check_finite, as_key
from qgf_lite.validation import require_positive_int

__all__ = [
    "Grid2D",
    "scott_bandwidth",
    "loo_bandwidth",
    "kde_log_density",
    "tilted_log_density_grid",
    "tilted_density_grid",
    "grid_mass",
    "sample_grid_density",
]


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


def loo_bandwidth(samples, candidates: Sequence[float] | None = None, *, max_queries: int = 500) -> float:
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


def kde_log_density(samples, bandwidth: float | None = None, *, chunk_size: int = 1024) -> LogDensityFn:
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
    log_p = _tilted_logits(
        _reference_log_density(log_ref), reward_fn, weight, points, _broadcast_context(obs, points.shape[0])
    )
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
