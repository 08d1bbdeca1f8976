"""Sample-quality metrics for the toy problems.

* ``mean_reward`` and ``fraction_in_region``: how good the samples are.
* ``mmd_rbf``: squared maximum mean discrepancy with a sum of RBF kernels.
* ``sliced_wasserstein``: Wasserstein distance averaged over random 1D projections,
  computed exactly per projection (``wasserstein_1d``), so unequal sample sizes work.
* ``compare_samples``: all of the above against a reference target and the behaviour data.

The distance functions are pure ``jnp`` and jit-friendly; shape checks are static,
and NaN/inf checks run whenever the inputs are concrete (they are skipped while
tracing under ``jax.jit``). Random projections come only from the key passed in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qgf_lite.toy import as_key
from qgf_lite.validation import is_concrete, require_positive_int

Array = jax.Array

DEFAULT_BANDWIDTHS = (0.1, 0.3, 1.0)


def check_samples(x, name: str = "samples", *, min_count: int = 1) -> Array:
    """Validate a sample set: shape (n, d) with n >= min_count and no NaN/inf.

    Returns ``x`` as a jnp array; raises ValueError naming ``name`` otherwise.
    """
    if x is None:
        raise ValueError(f"{name}: expected an array of shape (n, d), got None")
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected shape (n, d), got {tuple(x.shape)}; reshape 1D data to (n, 1)")
    if x.shape[0] < min_count:
        raise ValueError(f"{name}: need at least {min_count} samples, got {x.shape[0]}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    if is_concrete(x) and not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"{name}: contains NaN or inf (diverged sampler?); drop or fix those rows first")
    return x


def _check_pair(x, y, x_name: str, y_name: str, min_count: int):
    x = check_samples(x, x_name, min_count=min_count)
    y = check_samples(y, y_name, min_count=min_count)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{x_name} has dimension {x.shape[1]} but {y_name} has {y.shape[1]}; they must match")
    return x, y


def _contexts_for(obs, batch: int):
    """None, a single context (obs_dim,) broadcast to the batch, or per-sample (batch, obs_dim)."""
    if obs is None:
        return None
    obs = jnp.asarray(obs)
    if obs.ndim == 1:
        return jnp.broadcast_to(obs, (batch, obs.shape[0]))
    if obs.ndim != 2 or obs.shape[0] != batch:
        raise ValueError(f"obs: expected shape (obs_dim,) or ({batch}, obs_dim), got {tuple(obs.shape)}")
    return obs


def mean_reward(reward_fn: Callable, actions, obs=None) -> Array:
    """Average of ``reward_fn(obs, actions)``.

    actions: (n, d); obs: None, (obs_dim,) or (n, obs_dim). Returns a scalar.
    """
    actions = check_samples(actions, "actions")
    rewards = reward_fn(_contexts_for(obs, actions.shape[0]), actions)
    if rewards.shape != (actions.shape[0],):
        raise ValueError(f"reward_fn: expected rewards of shape ({actions.shape[0]},), got {tuple(rewards.shape)}")
    return jnp.mean(rewards)


def fraction_in_region(region_fn: Callable, actions, obs=None) -> Array:
    """Share of actions for which ``region_fn(obs, actions)`` is True.

    actions: (n, d); obs: None, (obs_dim,) or (n, obs_dim). Returns a scalar in [0, 1].
    """
    actions = check_samples(actions, "actions")
    inside = region_fn(_contexts_for(obs, actions.shape[0]), actions)
    if inside.shape != (actions.shape[0],):
        raise ValueError(f"region_fn: expected a mask of shape ({actions.shape[0]},), got {tuple(inside.shape)}")
    return jnp.mean(inside.astype(jnp.float32))


def _rbf_kernel(x: Array, y: Array, bandwidths: Sequence[float]) -> Array:
    """Mean over bandwidths h of exp(-|x - y|^2 / (2 h^2)); (n, d), (m, d) -> (n, m)."""
    sq_dist = jnp.sum(x**2, -1)[:, None] + jnp.sum(y**2, -1)[None, :] - 2.0 * x @ y.T
    sq_dist = jnp.maximum(sq_dist, 0.0)  # the expansion can dip below 0 by rounding
    return sum(jnp.exp(-0.5 * sq_dist / h**2) for h in bandwidths) / len(bandwidths)


def _normalise_bandwidths(bandwidths) -> tuple:
    if isinstance(bandwidths, (int, float, np.floating, np.integer)):
        bandwidths = (bandwidths,)
    bandwidths = tuple(float(h) for h in bandwidths)
    if not bandwidths or any(not h > 0 for h in bandwidths):
        raise ValueError(f"bandwidths: expected positive kernel widths, got {bandwidths}")
    return bandwidths


def mmd_rbf(x, y, *, bandwidths: float | Sequence[float] = DEFAULT_BANDWIDTHS, unbiased: bool = True) -> Array:
    """Squared MMD between two sample sets with the kernel mean_h exp(-|x-y|^2 / (2 h^2)).

    x: (n, d), y: (m, d), n, m >= 2. The default widths (0.1, 0.3, 1.0) suit data
    in [-1, 1]^d: the small one resolves single modes, the large one global shifts.
    They are fixed (not a median heuristic) so that values for different sample
    pairs are comparable. ``unbiased=True`` drops the diagonal terms (the U-statistic):
    its mean over draws is exactly MMD^2, so it hovers around 0 (and may dip
    slightly below) for equal distributions. ``unbiased=False`` is the V-statistic,
    always >= 0 but biased upwards by about 1/n. Returns a scalar.
    """
    x, y = _check_pair(x, y, "x", "y", min_count=2)
    return _mmd2(x, y, _normalise_bandwidths(bandwidths), bool(unbiased))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _mmd2(x: Array, y: Array, bandwidths: tuple, unbiased: bool) -> Array:
    n, m = x.shape[0], y.shape[0]
    k_xx = _rbf_kernel(x, x, bandwidths)
    k_yy = _rbf_kernel(y, y, bandwidths)
    k_xy = _rbf_kernel(x, y, bandwidths)
    if unbiased:
        term_xx = (jnp.sum(k_xx) - jnp.trace(k_xx)) / (n * (n - 1))
        term_yy = (jnp.sum(k_yy) - jnp.trace(k_yy)) / (m * (m - 1))
    else:
        term_xx, term_yy = jnp.mean(k_xx), jnp.mean(k_yy)
    return term_xx + term_yy - 2.0 * jnp.mean(k_xy)


def _sorted_wasserstein_pp(x_sorted: Array, y_sorted: Array, p: float) -> Array:
    """W_p^p between 1D empirical measures given sorted samples on the last axis.

    Both quantile functions are step functions; on each interval between the
    merged breakpoints {i/n} U {j/m} they are constant, so the integral of
    |F^-1(u) - G^-1(u)|^p du is an exact finite sum.
    """
    n, m = x_sorted.shape[-1], y_sorted.shape[-1]
    levels = jnp.sort(jnp.concatenate([jnp.arange(1, n + 1) / n, jnp.arange(1, m + 1) / m]))
    previous = jnp.concatenate([jnp.zeros(1), levels[:-1]])
    widths = levels - previous
    middle = 0.5 * (levels + previous)
    ix = jnp.clip(jnp.floor(middle * n).astype(jnp.int32), 0, n - 1)
    iy = jnp.clip(jnp.floor(middle * m).astype(jnp.int32), 0, m - 1)
    gaps = jnp.abs(x_sorted[..., ix] - y_sorted[..., iy])
    return jnp.sum(widths * gaps**p, axis=-1)


def _check_p(p) -> float:
    p = float(p)
    if not p >= 1:
        raise ValueError(f"p: expected p >= 1, got {p}")
    return p


def wasserstein_1d(x, y, *, p: float = 2.0) -> Array:
    """Exact W_p between two 1D empirical distributions (sizes may differ).

    x: (n,) or (n, 1); y: (m,) or (m, 1). Returns a scalar.
    """
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    x = x[:, None] if x.ndim == 1 else x
    y = y[:, None] if y.ndim == 1 else y
    x, y = _check_pair(x, y, "x", "y", min_count=1)
    if x.shape[1] != 1:
        raise ValueError(f"x: expected 1D samples of shape (n,) or (n, 1), got {tuple(x.shape)}")
    return _wasserstein_1d(x[:, 0], y[:, 0], _check_p(p))


@functools.partial(jax.jit, static_argnums=2)
def _wasserstein_1d(x: Array, y: Array, p: float) -> Array:
    return _sorted_wasserstein_pp(jnp.sort(x), jnp.sort(y), p) ** (1.0 / p)


def random_directions(key, num_projections: int, dim: int) -> Array:
    """Unit vectors uniform on the sphere S^(dim-1). Returns: (num_projections, dim)."""
    directions = jax.random.normal(as_key(key), (num_projections, dim))
    return directions / jnp.linalg.norm(directions, axis=-1, keepdims=True)


def sliced_wasserstein(x, y, key, *, num_projections: int = 256, p: float = 2.0) -> Array:
    """Sliced W_p: (mean over random unit directions theta of W_p^p(theta.x, theta.y))^(1/p).

    x: (n, d), y: (m, d); key: a JAX PRNG key (the same key gives the same
    directions, so comparisons across sample sets are paired). For a pure shift
    delta in d dimensions, SW_2 = |delta| / sqrt(d); in 1D it is W_p itself.
    Returns a scalar.
    """
    x, y = _check_pair(x, y, "x", "y", min_count=1)
    p = _check_p(p)
    num_projections = require_positive_int("num_projections", num_projections)
    return _sliced_wasserstein(x, y, as_key(key), num_projections, p)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _sliced_wasserstein(x: Array, y: Array, key: Array, num_projections: int, p: float) -> Array:
    directions = random_directions(key, num_projections, x.shape[1])
    x_proj = jnp.sort(directions @ x.T, axis=-1)  # (projections, n)
    y_proj = jnp.sort(directions @ y.T, axis=-1)
    return jnp.mean(_sorted_wasserstein_pp(x_proj, y_proj, p)) ** (1.0 / p)


def compare_samples(
    samples,
    key,
    *,
    target=None,
    behaviour=None,
    reward_fn: Callable | None = None,
    region_fn: Callable | None = None,
    obs=None,
    num_projections: int = 256,
) -> dict:
    """Score samples against the tilted target and the behaviour data.

    samples: (n, d) e.g. guided flow samples. target: (m, d) reference samples of
    pi_ref * exp(w Q) (e.g. from ``toy.sample_grid_density``). behaviour: (k, d)
    behaviour actions. reward_fn / region_fn: (obs, actions) -> (batch,).
    obs: None, (obs_dim,) or (n, obs_dim), the contexts of ``samples``.
    Returns a dict of floats with whichever of these apply: mean_reward,
    frac_best_region, mmd_to_target, sw_to_target, mmd_to_behaviour, sw_to_behaviour.
    The same projection directions are used for both SW values.
    """
    samples = check_samples(samples, "samples", min_count=2)
    results = {}
    if reward_fn is not None:
        results["mean_reward"] = float(mean_reward(reward_fn, samples, obs))
    if region_fn is not None:
        results["frac_best_region"] = float(fraction_in_region(region_fn, samples, obs))
    for label, reference in (("target", target), ("behaviour", behaviour)):
        if reference is None:
            continue
        reference = check_samples(reference, label, min_count=2)
        if reference.shape[1] != samples.shape[1]:
            raise ValueError(f"{label} has dimension {reference.shape[1]} but samples have {samples.shape[1]}")
        results[f"mmd_to_{label}"] = float(mmd_rbf(samples, reference))
        results[f"sw_to_{label}"] = float(sliced_wasserstein(samples, reference, key, num_projections=num_projections))
    return results


__all__ = [
    "Array",
    "check_samples",
    "compare_samples",
    "DEFAULT_BANDWIDTHS",
    "fraction_in_region",
    "mean_reward",
    "mmd_rbf",
    "random_directions",
    "sliced_wasserstein",
    "wasserstein_1d",
]
