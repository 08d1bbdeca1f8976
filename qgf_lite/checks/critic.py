"""Checks for the critic exercises of notebook 02 (docs/algorithm.md §3: IQL with action chunks).

Student signatures (the check calls them exactly like this):

- ``expectile_loss(diff, expectile) -> loss``            elementwise |tau - 1[d < 0]| d^2, same shape as diff
- ``chunk_returns(rewards, terminals, discount) -> R``   (batch, H) -> (batch,): sum_i gamma^i r_i, stopping
                                                         after the first terminal step of the chunk
- ``td_target(returns, bootstrap_mask, next_value, discount, horizon) -> y``
                                                         y = R + gamma^H * mask * V(s_{t+H}), all (batch,)

Each check compares the student's function with qgf_lite.iql on seeded random inputs and names the common
mistake its output matches.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from qgf_lite.checks._core import (
    CheckFailed,
    call_student,
    compare_arrays,
    fail,
    passed,
    random_inputs,
    rng,
    student_vjp,
)
from qgf_lite.iql import chunk_returns as _reference_chunk_returns
from qgf_lite.iql import expectile_loss as _reference_expectile_loss
from qgf_lite.iql import q_target as _reference_q_target

# --------------------------------------------------------------------------- 2.1 expectile loss
# What Python says when an `if` (or `and`/`or`, `max(...)`) meets an array of many elements: numpy's and jax's
# eager message, and jax's message under jit (TracerBoolConversionError).
_ELEMENTWISE_IF = ("truth value of an array", "TracerBoolConversionError", "Attempted boolean conversion")


def _elementwise_if_guard(name: str, fn):
    """``fn``, whose "truth value ... is ambiguous" error becomes a failure that says what to write instead."""

    def guarded(*args):
        try:
            return fn(*args)
        except Exception as err:
            said = f"{type(err).__name__}: {err}"
            if any(marker in said for marker in _ELEMENTWISE_IF):
                fail(
                    name,
                    "a Python `if` (or `and`/`or`) met an array: it cannot decide per element, so numpy and "
                    "jax refuse ('the truth value of an array ... is ambiguous').",
                    "choose the weight elementwise with jnp.where(diff < 0, 1 - expectile, expectile).",
                )
            raise

    return guarded


def check_expectile_loss(fn) -> None:
    """Exercise 2.1: ``fn(diff, expectile)`` = |tau - 1[diff < 0]| * diff^2 elementwise (diff = Q - V)."""
    name = "expectile_loss"
    (diff,) = (jnp.asarray(x) for x in random_inputs(51, [(4, 9)], scale=2.0))
    for tau in (0.9, 0.7):
        got = call_student(name, _elementwise_if_guard(name, fn), diff, tau)
        if np.ndim(got) == 0:
            fail(
                name,
                "returned a single number; return the elementwise loss (same shape as `diff`).",
                "the caller (value_loss) takes the mean; keep one loss per element here.",
            )
        above = diff >= 0
        compare_arrays(
            name,
            got,
            _reference_expectile_loss(diff, tau),
            what=f"loss with expectile={tau}",
            known_mistakes=[
                (
                    "tau and 1 - tau are swapped: positive errors (Q above V) must weigh tau, so V is pushed "
                    "up towards the good actions",
                    jnp.where(above, 1 - tau, tau) * diff**2,
                ),
                (
                    "the error is not squared (|tau - 1[d<0]| * |d| is the quantile loss, not the expectile)",
                    jnp.where(above, tau, 1 - tau) * jnp.abs(diff),
                ),
                ("the error is not squared and the absolute value is missing", jnp.where(above, tau, 1 - tau) * diff),
                (
                    "the weight lacks its absolute value: (tau - 1[d<0]) is negative for d < 0, use |tau - 1[d<0]|",
                    jnp.where(above, tau, tau - 1) * diff**2,
                ),
                ("there is no asymmetric weight (plain squared error, the tau = 0.5 case up to a factor 2)", diff**2),
                ("both sides use the weight tau", tau * diff**2),
            ],
        )
    # Notebook 02 trains the value network through this function: jax must be able to differentiate it.
    try:
        got_grad = student_vjp(name, fn, (diff, 0.9), 0, jnp.ones_like(diff))
    except CheckFailed:
        raise
    except Exception as err:
        fail(
            name,
            f"the values are right, but jax.grad cannot differentiate your function ({type(err).__name__}).",
            "write it with jax.numpy (jnp.where, jnp.square), not numpy: the value network is trained through it.",
        )
    want_grad = jnp.where(diff < 0, 0.1, 0.9) * 2.0 * diff
    compare_arrays(name, got_grad, want_grad, what="gradient of the loss with respect to diff")
    passed(name, "for expectiles 0.9 and 0.7")


# --------------------------------------------------------------------------- 2.2 chunk returns
def _chunk_inputs(seed: int, batch: int = 12, horizon: int = 5):
    """Rewards and terminal flags with every pattern: no terminal, one mid-chunk, one at the end, two."""
    (rewards,) = random_inputs(seed, [(batch, horizon)])
    terminals = np.zeros((batch, horizon), np.float32)
    rows = rng(seed + 1).permutation(batch)
    terminals[rows[0], 1] = 1.0
    terminals[rows[1], horizon - 1] = 1.0
    terminals[rows[2], [0, 3]] = 1.0
    terminals[rows[3], 2] = 1.0
    terminals[rows[4], [2, 4]] = 1.0
    return jnp.asarray(rewards), jnp.asarray(terminals)


def check_chunk_returns(fn) -> None:
    """Exercise 2.2: ``fn(rewards, terminals, discount)`` = sum_i gamma^i r_i over the steps up to and
    including the first terminal of each chunk (later steps belong to the next episode)."""
    name = "chunk_returns"
    rewards, terminals = _chunk_inputs(61)
    gamma = 0.9
    horizon = rewards.shape[1]
    powers = gamma ** jnp.arange(horizon, dtype=jnp.float32)
    masks = jnp.ones_like(rewards)  # masks only matter for bootstrapping, not for the return itself
    want, valid, _ = _reference_chunk_returns(rewards, terminals, masks, gamma)
    strictly_before = (jnp.cumsum(terminals, axis=1) == 0).astype(jnp.float32)
    got = call_student(name, fn, rewards, terminals, gamma)
    compare_arrays(
        name,
        got,
        want,
        what="chunk returns",
        known_mistakes=[
            (
                "the return does not stop at the first terminal: steps after an episode end belong to the next "
                "episode and must be dropped",
                jnp.sum(powers * rewards, axis=1),
            ),
            (
                "the reward of the terminal step itself is dropped; keep steps up to and including the first terminal",
                jnp.sum(powers * rewards * strictly_before, axis=1),
            ),
            (
                "only the terminal steps are dropped (r * (1 - terminal)); drop every step after the first "
                "terminal and keep the terminal step",
                jnp.sum(powers * rewards * (1 - terminals), axis=1),
            ),
            ("the rewards are not discounted (gamma^i is missing)", jnp.sum(rewards * valid, axis=1)),
            (
                "the discounts start at gamma^1; the first step of the chunk is not discounted (gamma^0 = 1)",
                jnp.sum(gamma * powers * rewards * valid, axis=1),
            ),
            (
                "the discounts are reversed (gamma^(H-1-i)); step i gets gamma^i",
                jnp.sum(powers[::-1] * rewards * valid, axis=1),
            ),
            ("the rewards are averaged over the chunk instead of summed", jnp.mean(powers * rewards * valid, axis=1)),
        ],
    )
    passed(name)


# --------------------------------------------------------------------------- 2.3 TD target
def check_td_target(fn) -> None:
    """Exercise 2.3: ``fn(returns, bootstrap_mask, next_value, discount, horizon)`` = R + gamma^H * mask * V'."""
    name = "td_target"
    returns, next_value = (jnp.asarray(x) for x in random_inputs(71, [(10,), (10,)], scale=3.0))
    mask = jnp.asarray(rng(72).permutation([0.0] * 4 + [1.0] * 6), jnp.float32)
    gamma, horizon = 0.9, 5
    got = call_student(name, fn, returns, mask, next_value, gamma, horizon)
    compare_arrays(
        name,
        got,
        _reference_q_target(returns, mask, next_value, gamma, horizon),
        what="TD target",
        known_mistakes=[
            (
                "the bootstrap is discounted by gamma instead of gamma^H: V(s_{t+H}) is H steps away",
                returns + gamma * mask * next_value,
            ),
            (
                "the bootstrap is discounted by gamma^(H-1); the next state is H steps after s_t",
                returns + gamma ** (horizon - 1) * mask * next_value,
            ),
            (
                "the bootstrap mask is missing: after a terminal/success there is no future value",
                returns + gamma**horizon * next_value,
            ),
            (
                "the mask is inverted (1 - mask); mask = 1 means 'bootstrap'",
                returns + gamma**horizon * (1 - mask) * next_value,
            ),
            (
                "the mask also zeroes the chunk's own return; it multiplies only the bootstrap term",
                mask * (returns + gamma**horizon * next_value),
            ),
            ("the bootstrap value has the wrong sign", returns - gamma**horizon * mask * next_value),
        ],
    )
    passed(name)


__all__ = ["check_expectile_loss", "check_chunk_returns", "check_td_target"]
