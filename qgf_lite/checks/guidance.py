"""Checks for the guidance exercises of notebooks 03 and 04 (docs/algorithm.md §4).

Student signatures (the check calls them exactly like this):

- ``denoised_estimate(velocity, obs, a, t) -> a_hat``           3.2: clip(a + (1 - t) stop_grad(v(s, a, t)), -1, 1)
- ``qgf_velocity(velocity, critic, obs, a, t, weight) -> v_g``  3.1: v(s, a, t) + w grad_a Q(s, a_hat)
- ``select_best(critic, obs, proposals) -> best``               4.1: proposals (batch, n, dim) -> the highest-Q one
- ``matched_best_of_n(budget, steps) -> int``                   4.2: the largest N whose best-of-N fits the budget

They take the state ``obs`` (None or (batch, obs_dim)) as qgf_lite's own functions do (``qgf_lite.guidance``):
velocity(obs, a, t) -> (batch, dim) with t of shape (batch,); critic(obs, a) -> (batch,). The checks pass
functions that depend on the state, so dropping ``obs`` or pairing it with the wrong rows shows. Each check runs
the student's function on seeded inputs, compares it with qgf_lite's reference, and names the common mistake it
matches (for 4.1 and 4.2 also the two that a comparison alone could only report as "differs by up to ...": the
critic's scores reshaped to (n, batch), and N computed with ``round()``).
"""

from __future__ import annotations

import jax
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
    seeded,
    student_vjp,
)
from qgf_lite.checks.fields import critic_field  # noqa: F401 - rebuilt in the sandbox
from qgf_lite.checks.flow import _call_with_time_hint, _times, toy_obs, toy_velocity
from qgf_lite.guidance import critic_action_gradient, denoised_estimate, select_highest
from qgf_lite.samplers import matched_best_of_n

_BATCH, _DIM, _OBS_DIM = 7, 3, 2


def toy_critic(seed: int = 0, dim: int = _DIM, obs_dim: int | None = _OBS_DIM):
    """A smooth, non-quadratic Q(s, a) -> (batch,) whose gradient differs from point to point and whose peak
    moves with the state s (obs of shape (batch, obs_dim)); with ``obs_dim`` None it ignores obs."""
    generator = rng(2000 + seed)
    center = generator.uniform(-0.5, 0.5, size=dim).astype(np.float32)
    direction = generator.normal(size=dim).astype(np.float32)
    obs_matrix = None if obs_dim is None else generator.normal(size=(obs_dim, dim)).astype(np.float32)
    return critic_field(center, direction, obs_matrix)


def _actions(seed: int) -> jnp.ndarray:
    # Scale 0.7 with a velocity of order 1 puts some a + (1 - t) v outside [-1, 1], so a missing clip shows.
    return jnp.asarray(random_inputs(seed, [(_BATCH, _DIM)], scale=0.7)[0])


def reference_denoised_estimate(velocity, obs, a, t) -> jnp.ndarray:
    """a_hat = clip(a + (1 - t) stop_grad(v(s, a, t)), -1, 1): ``qgf_lite.denoised_estimate``."""
    return denoised_estimate(velocity, obs, a, t)


def reference_qgf_velocity(velocity, critic, obs, a, t, weight) -> jnp.ndarray:
    """v(s, a, t) + w grad_a Q(s, a_hat), the QGF guided velocity of ``qgf_lite.guided_sample``."""
    a_hat = reference_denoised_estimate(velocity, obs, a, t)
    return velocity(obs, a, t) + weight * critic_action_gradient(critic, obs, a_hat)


# --------------------------------------------------------------------------- 3.2 denoised estimate
def check_denoised_estimate(fn) -> None:
    """Exercise 3.2: ``fn(velocity, obs, a, t)`` = clip(a + (1 - t) stop_grad(v(s, a, t)), -1, 1)."""
    name = "denoised_estimate"
    velocity = toy_velocity(3)
    a = _actions(31)
    t = _times(32)
    obs = toy_obs(34)
    tc = t[:, None]
    v = velocity(obs, a, t)
    want = reference_denoised_estimate(velocity, obs, a, t)
    if np.allclose(want, a + (1 - tc) * v):
        raise AssertionError("internal: the check's inputs never hit the clip")  # guards the check itself
    got = _call_with_time_hint(name, fn, velocity, obs, a, t)
    compare_arrays(
        name,
        got,
        want,
        what="a_hat",
        known_mistakes=[
            (
                "the (1 - t) factor is missing: a + v jumps a full unit of time, not the time left to t = 1",
                jnp.clip(a + v, -1, 1),
            ),
            ("t is used where the time left, 1 - t, belongs", jnp.clip(a + tc * v, -1, 1)),
            ("the clip to [-1, 1] is missing: the critic was trained on actions inside the box", a + (1 - tc) * v),
            (
                "it is one small Euler step (dt) instead of one step over the remaining time (1 - t)",
                jnp.clip(a + 0.1 * v, -1, 1),
            ),
            ("it returns a itself (the noisy action) instead of the one-step estimate", a),
        ],
    )
    # The gradient of Q(a_hat) must not flow through v: with stop_gradient, d a_hat / d a is the identity where
    # the clip is inactive (and 0 where it clips).
    weights = jnp.asarray(random_inputs(33, [(_BATCH, _DIM)])[0])
    try:
        got_grad = student_vjp(name, fn, (velocity, obs, a, t), 2, weights)
    except CheckFailed:
        raise
    except Exception as err:
        fail(
            name,
            f"jax.grad could not differentiate your function ({type(err).__name__}: {err}).",
            "write it with jax.numpy (jnp) only, no numpy or float() conversions, so guidance can differentiate it.",
        )
    want_grad = jax.grad(lambda x: jnp.sum(reference_denoised_estimate(velocity, obs, x, t) * weights))(a)
    if not np.allclose(got_grad, want_grad, rtol=1e-4, atol=1e-5):
        fail(
            name,
            "the values are right but the gradient flows through the velocity network.",
            "wrap v in jax.lax.stop_gradient: QGF treats d a_hat / d a as the identity (docs/algorithm.md §4).",
        )
    passed(name)


# --------------------------------------------------------------------------- 3.1 guided velocity
def check_qgf_velocity(fn) -> None:
    """Exercise 3.1: ``fn(velocity, critic, obs, a, t, weight)`` = v(s, a, t) + w grad_a Q(s, a_hat)."""
    name = "qgf_velocity"
    velocity = toy_velocity(4)
    critic = toy_critic(4)
    a = _actions(41)
    t = _times(42)
    obs = toy_obs(43)
    tc = t[:, None]
    weight = 0.7
    v = velocity(obs, a, t)

    def grad_at(x):
        return critic_action_gradient(critic, obs, x)

    a_hat = reference_denoised_estimate(velocity, obs, a, t)
    g = grad_at(a_hat)

    def through_jacobian(x):
        return jnp.sum(critic(obs, jnp.clip(x + (1 - tc) * velocity(obs, x, t), -1, 1)))

    want = reference_qgf_velocity(velocity, critic, obs, a, t, weight)
    got = _call_with_time_hint(name, fn, velocity, critic, obs, a, t, weight)
    compare_arrays(
        name,
        got,
        want,
        what="guided velocity",
        known_mistakes=[
            (
                "the critic is differentiated at the noisy a_t (the noisy-gradient baseline), not at a_hat",
                v + weight * grad_at(a),
            ),
            ("a_hat misses the (1 - t) factor", v + weight * grad_at(jnp.clip(a + v, -1, 1))),
            ("a_hat uses t instead of 1 - t", v + weight * grad_at(jnp.clip(a + tc * v, -1, 1))),
            ("a_hat is not clipped to [-1, 1]", v + weight * grad_at(a + (1 - tc) * v)),
            (
                "the gradient is taken with respect to a through the velocity (no stop_gradient): that is the "
                "Jacobian variant, not QGF",
                v + weight * jax.grad(through_jacobian)(a),
            ),
            ("the gradient is subtracted: guidance climbs Q", v - weight * g),
            ("the weight w is missing", v + g),
            ("the velocity v is missing: only the guidance term is returned", weight * g),
            ("the gradient is of the batch mean of Q, which divides it by the batch size", v + weight * g / _BATCH),
        ],
    )
    zero = _call_with_time_hint(name, fn, velocity, critic, obs, a, t, 0.0)
    compare_arrays(name, zero, v, what="guided velocity at weight 0 (should be v itself)")
    passed(name)


# --------------------------------------------------------------------------- 4.1 best-of-N selection
def _flat_states(obs, n: int):
    """obs (batch, obs_dim) -> (batch * n, obs_dim), row i repeated n times: the state of each flattened proposal."""
    return None if obs is None else jnp.repeat(obs, n, axis=0)


def reference_select_best(critic, obs, proposals) -> jnp.ndarray:
    """For each row, the proposal with the highest Q(s, a): (batch, n, dim) -> (batch, dim), as
    ``qgf_lite.best_of_n`` scores and selects its proposals."""
    batch, n, dim = proposals.shape
    scores = critic(_flat_states(obs, n), proposals.reshape(batch * n, dim)).reshape(batch, n)
    return select_highest(proposals, scores)


def check_select_best(fn) -> None:
    """Exercise 4.1: ``fn(critic, obs, proposals)`` keeps, per row, the proposal with the highest Q(s, a)."""
    name = "select_best"
    critic = toy_critic(5)
    batch, n = 6, 5  # batch != n != dim != obs_dim, so a wrong axis shows as a shape error or wrong rows
    proposals = jnp.asarray(random_inputs(51, [(batch, n, _DIM)], scale=0.6)[0])
    obs = toy_obs(52, batch)
    flat = proposals.reshape(batch * n, _DIM)
    scores = critic(_flat_states(obs, n), flat).reshape(batch, n)
    want = reference_select_best(critic, obs, proposals)
    got = call_student(name, fn, critic, obs, proposals)

    def pick(index):
        return proposals[jnp.arange(batch), index]

    # Scores read as (n, batch): the j-th proposal of row i gets score flat[j * batch + i] (with the states
    # repeated as they should be, or tiled to match that wrong order).
    transposed = [
        pick(jnp.argmax(critic(states, flat).reshape(n, batch), axis=0))
        for states in (_flat_states(obs, n), jnp.tile(obs, (n, 1)))
    ]
    tiled = pick(jnp.argmax(critic(jnp.tile(obs, (n, 1)), flat).reshape(batch, n), axis=1))
    compare_arrays(
        name,
        got,
        want,
        what="selected actions",
        known_mistakes=[
            (
                "you reshaped the critic's scores to (n, batch). The proposals were flattened row by row "
                "(batch * n, dim), so score k belongs to row k // n: reshape the critic's output to (batch, n) and take "
                "the argmax over axis 1",
                transposed[0],
            ),
            (
                "you reshaped the critic's scores to (n, batch), and tiled the states to match. The proposals were "
                "flattened row by row (batch * n, dim), so score k belongs to row k // n: repeat each state n times "
                "(jnp.repeat(obs, n, axis=0)), reshape the scores to (batch, n) and take the argmax over axis 1",
                transposed[1],
            ),
            (
                "the states are paired with the wrong proposals: jnp.tile(obs, (n, 1)) gives flattened proposal k the "
                "state of row k % batch, but it belongs to row k // n; repeat each state n times instead, "
                "jnp.repeat(obs, n, axis=0)",
                tiled,
            ),
            ("it keeps the lowest-Q proposal (argmin instead of argmax)", pick(jnp.argmin(scores, axis=1))),
            ("it always keeps the first proposal", proposals[:, 0]),
            ("it averages the proposals instead of choosing one", jnp.mean(proposals, axis=1)),
        ],
    )
    passed(name)


# --------------------------------------------------------------------------- 4.2 compute-matched N
def reference_matched_best_of_n(budget: int, steps: int) -> int:
    """The largest N with sampler_cost('best_of_n', steps, N)['total'] <= budget (at least 1 for these inputs)."""
    return matched_best_of_n(budget, steps)


_BUDGET_CASES = ((30, 10), (124, 10), (100, 4), (33, 10), (40, 3), (200, 16), (21, 20))


def _budget_cases():
    """The public (budget, steps) cases, or under a grading seed seven cases drawn from it."""
    if seeded(91) == 91:
        return _BUDGET_CASES
    generator = rng(91)
    cases = []
    for _ in range(len(_BUDGET_CASES)):
        steps = int(generator.integers(2, 21))
        cases.append((int(generator.integers(steps + 1, 12 * (steps + 1))), steps))
    return tuple(cases)


def check_matched_best_of_n(fn) -> None:
    """Exercise 4.2: ``fn(budget, steps)`` = the largest N whose best-of-N with ``steps`` Euler steps fits ``budget``."""
    name = "matched_best_of_n"
    cases = _budget_cases()
    got = []
    for budget, steps in cases:
        value = call_student(name, fn, budget, steps)
        if isinstance(value, (float, np.floating)):
            fail(
                name,
                f"for budget={budget}, steps={steps} it returned the float {value!r}; N counts samples.",
                "use floor division, budget // (steps + 1), which gives an int.",
            )
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            fail(
                name,
                f"for budget={budget}, steps={steps} it returned {value!r}; return a Python int.",
                "N counts samples: use integer division (//), not /.",
            )
        got.append(int(value))
    want = [reference_matched_best_of_n(b, k) for b, k in cases]
    rounded = [round(b / (k + 1)) for b, k in cases]
    if got != want and got == rounded:
        # round() rounds up as often as down; only a case where it rounds up shows, and the message names it.
        budget, steps, n = next((b, k, r) for (b, k), r, w in zip(cases, rounded, want) if r != w)
        fail(
            name,
            f"N is computed with round(): for budget={budget}, steps={steps} round() rounds "
            f"{budget / (steps + 1):.3g} up to {n}, and best-of-{n} costs {n * (steps + 1)} > {budget} "
            "evaluations.",
            "N must not exceed the budget: use floor division, budget // (steps + 1).",
        )
    compare_arrays(
        name,
        np.asarray(got),
        np.asarray(want),
        what="N",
        known_mistakes=[
            (
                "the critic call that scores each proposal is not counted (N = budget // steps), so best-of-N "
                "goes over the budget",
                [b // k for b, k in cases],
            ),
            ("N is rounded up, so best-of-N goes over the budget", [-(-b // (k + 1)) for b, k in cases]),
            (
                "it divides by the cost of one guided sample (3 evaluations per step) instead of one BC sample "
                "plus its scoring",
                [b // (3 * k) for b, k in cases],
            ),
        ],
    )
    passed(name)


__all__ = [
    "check_denoised_estimate",
    "check_matched_best_of_n",
    "check_qgf_velocity",
    "check_select_best",
    "reference_denoised_estimate",
    "reference_matched_best_of_n",
    "reference_qgf_velocity",
    "reference_select_best",
    "toy_critic",
]
