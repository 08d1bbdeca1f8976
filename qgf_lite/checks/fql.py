"""Checks for the exercises of notebook 06: FQL's distillation loss and choosing w on held-out data.

Student signatures (the check calls them exactly like this):

- ``fql_distillation_loss(policy, obs, noise, targets) -> ()``, the signature of ``qgf_lite.fql.distillation_loss``
      policy(obs, noise) -> actions (batch, dim), the one-step policy; obs: None or (batch, obs_dim); noise z
      (batch, dim); targets (batch, dim), the frozen BC flow's clipped Euler sample from the same z
      (``qgf_lite.fql.flow_targets``). The loss is mean over batch and coordinates of
      (policy(obs, z) - stop_grad(targets))^2.
- ``select_weight(weights, heldout_scores, test_scores) -> (w, score)``
      weights (W,); scores (W, R). w: the weight with the highest mean held-out score (the smallest w on a tie);
      score: the mean *test* score at that w.

Each check runs the student's function on seeded inputs, compares it with qgf_lite's reference
(``qgf_lite.fql.distillation_loss`` + ``flow_targets``; ``qgf_lite.toy.comparison.select_weight``) and, when they
disagree, says which common mistake the output matches.
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
    student_vjp,
)
from qgf_lite.checks._core import (
    rng as _seeded_rng,
)
from qgf_lite.checks.fields import policy_field  # noqa: F401 - rebuilt in the sandbox
from qgf_lite.checks.flow import toy_velocity
from qgf_lite.fql import distillation_loss as _reference_distillation_loss
from qgf_lite.fql import flow_targets as _reference_flow_targets
from qgf_lite.toy.comparison import select_weight as _reference_select_weight

_BATCH, _DIM, _OBS_DIM = 9, 3, 2  # three different sizes: a swapped axis is a shape error


def toy_policy(seed: int = 0, dim: int = _DIM, scale: float = 1.0, obs_dim: int | None = _OBS_DIM):
    """A fixed nonlinear one-step policy mu(s, z) for the checks, times ``scale``. Its outputs reach beyond
    [-1, 1], so clipping them shows; it depends on the state (obs_dim > 0) unless ``obs_dim`` is None."""
    generator = _seeded_rng(2000 + seed)
    matrix, shift = generator.normal(scale=0.8, size=(dim, dim)), generator.normal(scale=0.5, size=dim)
    obs_matrix = None if obs_dim is None else generator.normal(size=(obs_dim, dim))
    return policy_field(matrix, shift, scale, obs_matrix)


def reference_fql_distillation_loss(policy, obs, noise, targets) -> jnp.ndarray:
    """``qgf_lite.fql.distillation_loss``, the exercise's signature."""
    return _reference_distillation_loss(policy, obs, noise, targets)


def _inputs(seed: int = 61):
    """A state-dependent flow, policy and inputs; the targets are the flow's clipped 4-step Euler sample."""
    velocity = toy_velocity(6)
    policy = toy_policy(6)
    obs, noise = (jnp.asarray(x) for x in random_inputs(seed, [(_BATCH, _OBS_DIM), (_BATCH, _DIM)], scale=1.5))
    targets = _reference_flow_targets(velocity, obs, noise, steps=4)
    return policy, obs, noise, targets


def check_fql_distillation_loss(fn) -> None:
    """Exercise 6.1: ``fn(policy, obs, noise, targets)`` = mean over batch and coordinates of
    (policy(obs, noise) - stop_gradient(targets))^2, as ``qgf_lite.fql.distillation_loss``."""
    name = "fql_distillation_loss"
    policy, obs, noise, targets = _inputs()
    mu = policy(obs, noise)
    if np.allclose(jnp.clip(mu, -1, 1), mu):
        raise AssertionError("internal: the check's policy never leaves [-1, 1]")  # guards the check itself

    def msq(pred, tgt):
        return jnp.mean(jnp.square(pred - tgt))

    got = call_student(name, fn, policy, obs, noise, targets)
    if np.ndim(got) != 0:
        fail(
            name,
            f"the loss must be a single number, got an array of shape {np.shape(got)}.",
            "take the mean over the batch and the action coordinates.",
        )
    compare_arrays(
        name,
        got,
        reference_fql_distillation_loss(policy, obs, noise, targets),
        what="loss",
        known_mistakes=[
            (
                "the policy's actions are clipped; FQL clips only the flow's target (the policy's raw output is "
                "regressed, so its gradient does not vanish outside [-1, 1])",
                msq(jnp.clip(mu, -1, 1), targets),
            ),
            (
                "the policy is regressed onto the noise z itself; the target is the flow's sample from z (`targets`)",
                msq(mu, noise),
            ),
            (
                "the policy is evaluated at the targets; it maps the noise to an action: policy(obs, noise)",
                msq(policy(obs, targets), targets),
            ),
            (
                "the squared error is summed over the action coordinates; FQL takes the mean over batch *and* "
                "coordinates",
                jnp.mean(jnp.sum(jnp.square(mu - targets), axis=-1)),
            ),
            (
                "the squared error is summed over the batch; take the mean",
                jnp.sum(jnp.mean(jnp.square(mu - targets), axis=-1)),
            ),
            ("the error is not squared (an absolute error)", jnp.mean(jnp.abs(mu - targets))),
            (
                "the norm is not squared (|| . || per sample instead of the squared error)",
                jnp.mean(jnp.linalg.norm(mu - targets, axis=-1)),
            ),
        ],
    )

    # Gradients must reach only the policy: with respect to the targets the loss is flat (stop_gradient, the flow
    # is frozen); with respect to the noise they flow through policy(obs, z) alone.
    def vjp(argnum):
        try:
            return student_vjp(name, fn, (policy, obs, noise, targets), argnum, jnp.float32(1.0))
        except CheckFailed:
            raise
        except Exception as err:  # numpy calls on traced values, Python control flow on arrays, ...
            fail(
                name,
                f"your loss cannot be differentiated with jax.grad ({type(err).__name__}: {err}).",
                "use jax.numpy (jnp) operations only, no numpy or float() on the arrays.",
            )

    compare_arrays(
        name,
        vjp(3),
        jnp.zeros_like(targets),
        what="the loss's gradient with respect to the targets",
        known_mistakes=[
            (
                "gradients flow into the BC flow's targets: wrap them in jax.lax.stop_gradient, the flow "
                "is frozen and only the one-step policy learns",
                jax.grad(lambda x: msq(mu, x))(targets),
            )
        ],
    )
    want_grad = jax.grad(lambda z: reference_fql_distillation_loss(policy, obs, z, targets))(noise)
    compare_arrays(name, vjp(2), want_grad, what="the loss's gradient with respect to the noise z")
    passed(name, "gradients included")


def check_select_weight(fn) -> None:
    """Exercise 6.2: ``fn(weights, heldout_scores, test_scores)`` -> (the weight with the best mean held-out score,
    smallest on a tie; the mean test score at that weight)."""
    name = "select_weight"
    rng = _seeded_rng(62)
    weights = np.array([0.0, 0.25, 0.5, 1.0, 2.0, 4.0])
    # Held-out and test disagree on the best weight; the best single held-out repetition is a third weight, and
    # the held-out score at the chosen w differs from its test score, so every mistake below gives a distinct answer.
    heldout = 0.2 + 0.05 * rng.standard_normal((weights.size, 5))
    heldout[2] += 0.6  # best mean held-out score: w = 0.5 (index 2, not a weight's value)
    heldout[5, 0] = 1.0  # best single held-out score: w = 4
    test = 0.2 + 0.05 * rng.standard_normal((weights.size, 5))
    test[2] += 0.15  # test at the chosen w
    test[3] += 0.4  # best mean test score: w = 1 (choosing on test would pick it)
    want_w, want_score = _reference_select_weight(weights, heldout, test)

    def run(w, h, t):
        out = call_student(name, fn, w, h, t)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            fail(
                name,
                f"return a pair (weight, score), got {type(out).__name__}"
                f"{'' if not isinstance(out, (tuple, list)) else f' of length {len(out)}'}.",
            )
        for part, value in zip(("weight", "score"), out):
            if np.ndim(value) != 0:
                fail(name, f"the {part} must be a single number, got shape {np.shape(value)}.")
        return float(out[0]), float(out[1])

    got_w, got_score = run(weights, heldout, test)
    if not np.isclose(got_w, want_w):
        if np.isclose(got_w, 4.0):
            fail(
                name,
                f"you chose w = {got_w:g}, the weight of the best *single* held-out repetition; choose on the "
                "mean over repetitions (one lucky seed is noise).",
            )
        if np.isclose(got_w, 1.0):
            fail(
                name,
                f"you chose w = {got_w:g} on the *test* scores. Choose on the held-out scores only: a w picked "
                "on the test set makes its reported score the maximum of noisy estimates, biased upwards.",
            )
        if np.isclose(got_w, float(np.argmax(heldout.mean(axis=1)))):
            fail(
                name,
                f"you returned {got_w:g}, which looks like the index of the best weight; return the weight "
                "itself, weights[index].",
            )
        fail(name, f"you chose w = {got_w:g}, expected {want_w:g} (the highest mean held-out score).")
    if not np.isclose(got_score, want_score, rtol=1e-5, atol=1e-6):
        if np.isclose(got_score, heldout[2].mean()):
            fail(
                name,
                "the reported score is the held-out score at the chosen w; report its *test* score (the "
                "held-out score was used to choose, so it is biased upwards).",
            )
        if np.isclose(got_score, test.mean(axis=1).max()):
            fail(
                name,
                "the reported score is the best mean test score over all weights; report the test score of "
                "the weight chosen on held-out data.",
            )
        if np.isclose(got_score, test[2].max()):
            fail(
                name,
                "the reported score is the best test repetition at the chosen w; report the mean over repetitions.",
            )
        fail(
            name,
            f"the reported score is {got_score:.4g}, expected {want_score:.4g} (the mean test score at the chosen w).",
        )

    # A tie between two weights: prefer the smaller w (less departure from the behaviour policy); weights unsorted.
    tie_weights = np.array([2.0, 0.5, 1.0])
    tie_heldout = np.array([[0.75, 0.25], [0.5, 0.5], [0.125, 0.25]])  # exact tie of the means (0.5)
    tie_test = np.array([[0.3, 0.3], [0.5, 0.4], [0.0, 0.0]])
    got_w, got_score = run(tie_weights, tie_heldout, tie_test)
    want_w, want_score = _reference_select_weight(tie_weights, tie_heldout, tie_test)
    if not np.isclose(got_w, want_w):
        fail(
            name,
            f"on a tie of mean held-out scores (w = 2 and w = 0.5) you chose w = {got_w:g}; choose the "
            "smallest tied w, the one that moves the policy least from the behaviour data (the weights are "
            "not necessarily sorted).",
        )
    if not np.isclose(got_score, want_score):
        fail(name, f"with the tie the reported score is {got_score:.4g}, expected {want_score:.4g}.")
    passed(name, "including a tie")


__all__ = [
    "check_fql_distillation_loss",
    "check_select_weight",
    "reference_fql_distillation_loss",
    "toy_policy",
]
