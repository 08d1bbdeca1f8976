"""Checks at the API boundary, so bad input fails with a sentence instead of an XLA traceback.

Every check looks only at static information (shapes, dtypes, Python values) or at values that are
concrete, so the public kernels still trace under ``jax.jit`` and ``jax.vmap``.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` has a value now (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def as_float_array(name: str, x):
    """``x`` (array, nested list or tracer) as a jax array of a floating dtype.

    Integer input is promoted to float32: the samplers and losses add fractional steps to it, which an
    integer carry would truncate (or which makes ``lax.scan`` fail deep inside jax).
    """
    try:
        arr = jnp.asarray(x)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be an array of numbers, got {type(x).__name__}.") from None
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.float32)
    return arr


def require_rank(name: str, x, rank: int, what: str) -> None:
    ndim = np.ndim(x)
    if ndim != rank:
        raise ValueError(f"`{name}` must have rank {rank} {what}, got shape {tuple(np.shape(x))}.")


def require_obs(obs, batch: int, name: str = "obs") -> None:
    """``obs`` is None (no state) or a (batch, obs_dim) array matching the action batch."""
    if obs is None:
        return
    if np.ndim(obs) != 2:
        raise ValueError(
            f"`{name}` must be None or have shape (batch, obs_dim), got shape {tuple(np.shape(obs))}; "
            "for a problem with no state pass obs=None."
        )
    if np.shape(obs)[0] != batch:
        raise ValueError(
            f"`{name}` has batch size {np.shape(obs)[0]} but the actions/noise have batch size {batch}; "
            "give one observation per particle."
        )


def require_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer >= {minimum}, got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return int(value)


def require_known(what: str, given, valid) -> None:
    """Every name of ``given`` is in ``valid``, else a ValueError naming the unknown ones, the close matches (a typo
    is the usual cause) and the valid names."""
    import difflib

    valid = list(valid)
    unknown = sorted(set(given) - set(valid))
    if not unknown:
        return
    hints = [f"{close[0]!r} for {name!r}" for name in unknown if (close := difflib.get_close_matches(name, valid, n=1))]
    hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
    raise ValueError(f"unknown {what} {unknown}{hint}; valid: {', '.join(valid)}.")


def require_scalar(name: str, value, hint: str) -> None:
    """A single number: an array here would broadcast against the actions, one entry per coordinate."""
    if value is not None and np.ndim(value) != 0:
        raise ValueError(f"`{name}` must be a single number, got shape {tuple(np.shape(value))}; {hint}.")


def require_nonnegative(name: str, value, why: str) -> None:
    """Reject a concrete negative number; traced values pass (they are checked by whoever made them)."""
    if value is None:
        raise TypeError(f"`{name}` must be a number >= 0, got None.")
    if is_concrete(value):
        arr = np.asarray(value)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"`{name}` must be finite, got {value!r}.")
        if np.any(arr < 0):
            raise ValueError(f"`{name}` must be >= 0 ({why}), got {value!r}.")


def require_clip(clip):
    """``clip`` is None or a (low, high) pair with low < high."""
    if clip is None:
        return None
    try:
        low, high = clip
        low, high = float(low), float(high)
    except (TypeError, ValueError):
        raise TypeError(f"`clip` must be None or a (low, high) pair of numbers, got {clip!r}.") from None
    if not low < high:
        raise ValueError(f"`clip` must satisfy low < high, got {clip!r}.")
    return low, high


def require_callable(name: str, fn, signature: str) -> None:
    if not callable(fn):
        raise TypeError(f"`{name}` must be a function {signature}, got {type(fn).__name__}.")


def require_finite_arrays(arrays: dict, where: str) -> None:
    """Host-side NaN/inf check for a dataset (one pass, before anything reaches the device)."""
    for key, value in arrays.items():
        arr = np.asarray(value)
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(arr))
            first = tuple(int(i) for i in bad[0])
            raise ValueError(
                f"{where}: `{key}` contains {len(bad)} NaN/inf value(s), first at index {first}; "
                "clean or drop those transitions before training."
            )


__all__ = [
    "as_float_array",
    "is_concrete",
    "require_callable",
    "require_clip",
    "require_finite_arrays",
    "require_known",
    "require_nonnegative",
    "require_obs",
    "require_positive_int",
    "require_rank",
    "require_scalar",
]
