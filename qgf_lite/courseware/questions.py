"""What the autograder knows about each course question beyond its notebook: hidden checks and forbidden imports.

A question's public check is its check cell (students run it in the notebook); the grader runs the same cell on
inputs drawn from the grading seed. Here each question adds

* ``hidden``: checks students never see run, on other shapes and edge cases, with inputs drawn at grade time from
  the grading seed. Each is a function ``run(fn, rng)`` that calls ``fn`` (the student's function) and raises
  ``CheckFailed`` on a mismatch; feedback names a failed hidden check but never its inputs.
* ``references``: the package's own implementation(s) of the exercise, as ``"module:attribute"``. A submission
  that calls one of them (directly, through an alias or through ``qgf_lite.checks``) scores 0 for the question.
  ``allow`` lists the ones an instructor permits after all.

Points: a question's points (from its ``[n points]`` header) are split between the public check
(``public_share``, default one half) and the hidden checks (the rest, in proportion to their ``weight``). A
question without hidden checks gives all its points to the public check.

To add a question (e.g. for a new notebook): write its hidden checks below, add an entry
``"<id>": Question(references=(...), hidden=(Hidden(...), ...))`` under the assignment's notebook stem in
:data:`QUESTIONS`, and add the notebook to ``ASSIGNMENTS``. Questions without an entry are graded by their public
check alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Hidden:
    """One hidden check: ``run(fn, rng)`` raises ``CheckFailed`` when ``fn`` is wrong."""

    name: str
    run: Callable
    weight: float = 1.0


@dataclass(frozen=True)
class Question:
    """``function``: the name the exercise cell defines; ``check``: the ``qgf_lite.checks`` function its check
    cell calls. The definition is ignored (public check only) for a notebook whose exercise or check differs."""

    function: str = ""
    check: str = ""
    references: tuple = ()
    hidden: tuple = ()
    public_share: float = 0.5
    allow: tuple = ()

    def forbidden(self) -> tuple:
        return tuple(r for r in self.references if r not in self.allow)

    def split_points(self, points: float) -> tuple[float, list[float]]:
        """(public points, points of each hidden check) for a question worth ``points``."""
        if not self.hidden:
            return points, []
        public = points * self.public_share
        total_weight = sum(h.weight for h in self.hidden)
        return public, [(points - public) * h.weight / total_weight for h in self.hidden]


# ---------------------------------------------------------------------------
# Hidden checks. Each draws its inputs from `rng` (seeded by the grading seed).
# ---------------------------------------------------------------------------


def _sizes(rng, low=2, high=24):
    batch = int(rng.integers(low, high))
    dim = int(rng.integers(1, 7))
    if dim == batch:
        dim += 1
    return batch, dim


def _normal(rng, *shape, scale=1.0):
    import jax.numpy as jnp

    return jnp.asarray((scale * rng.standard_normal(shape)).astype(np.float32))


def _velocity(rng, dim, obs_dim):
    """A velocity v(s, a, t) that depends on the state s (obs of shape (batch, obs_dim))."""
    from qgf_lite.checks.flow import velocity_field

    return velocity_field(
        rng.normal(scale=0.6, size=(dim, dim)),
        rng.normal(size=dim),
        rng.normal(size=dim),
        rng.normal(size=(obs_dim, dim)),
    )


def _critic(rng, dim, obs_dim):
    """A critic Q(s, a) whose peak moves with the state s."""
    from qgf_lite.checks.guidance import critic_field

    return critic_field(rng.uniform(-0.5, 0.5, size=dim), rng.normal(size=dim), rng.normal(size=(obs_dim, dim)))


def _obs(rng, batch):
    """(obs, obs_dim): states for the state-dependent fields above, of a size drawn at grade time."""
    obs_dim = int(rng.integers(1, 5))
    return _normal(rng, batch, obs_dim), obs_dim


def _times(rng, batch, low=0.0, high=1.0):
    import jax.numpy as jnp

    return jnp.asarray(rng.uniform(low, high, size=batch).astype(np.float32))


def _compare(name, fn, args, want, what="output"):
    from qgf_lite.checks._core import call_student, compare_arrays

    compare_arrays(name, call_student(name, fn, *args), want, what=what)


# 01 flow matching ----------------------------------------------------------


def interpolate_other_sizes(fn, rng):
    from qgf_lite.flow import interpolate

    batch, dim = _sizes(rng)
    a0, a1, t = _normal(rng, batch, dim), _normal(rng, batch, dim), _times(rng, batch)
    _compare("interpolation", fn, (a0, a1, t), interpolate(a0, a1, t))


def interpolate_single_row(fn, rng):
    from qgf_lite.flow import interpolate

    dim = int(rng.integers(2, 6))
    a0, a1, t = _normal(rng, 1, dim), _normal(rng, 1, dim), _times(rng, 1)
    _compare("interpolation", fn, (a0, a1, t), interpolate(a0, a1, t))


def loss_other_sizes(fn, rng):
    from qgf_lite.checks.flow import reference_flow_matching_loss

    batch, dim = _sizes(rng)
    obs, obs_dim = _obs(rng, batch)
    velocity = _velocity(rng, dim, obs_dim)
    a0, a1, t = _normal(rng, batch, dim), _normal(rng, batch, dim), _times(rng, batch)
    _compare(
        "flow_matching_loss", fn, (velocity, obs, a0, a1, t), reference_flow_matching_loss(velocity, obs, a0, a1, t)
    )


def loss_end_times(fn, rng):
    import jax.numpy as jnp

    from qgf_lite.checks.flow import reference_flow_matching_loss

    batch, dim = _sizes(rng, 4, 12)
    obs, obs_dim = _obs(rng, batch)
    velocity = _velocity(rng, dim, obs_dim)
    a0, a1 = _normal(rng, batch, dim), _normal(rng, batch, dim)
    t = jnp.asarray(rng.permutation(np.arange(batch) % 2).astype(np.float32))  # only t = 0 and t = 1
    _compare(
        "flow_matching_loss", fn, (velocity, obs, a0, a1, t), reference_flow_matching_loss(velocity, obs, a0, a1, t)
    )


def euler_step_other_sizes(fn, rng):
    batch, dim = _sizes(rng)
    obs, obs_dim = _obs(rng, batch)
    velocity = _velocity(rng, dim, obs_dim)
    a, t = _normal(rng, batch, dim), _times(rng, batch)
    dt = float(rng.uniform(0.01, 0.5))
    _compare("euler_step", fn, (velocity, obs, a, t, dt), a + velocity(obs, a, t) * dt)


def euler_step_last_step(fn, rng):
    import jax.numpy as jnp

    batch, dim = _sizes(rng)
    obs, obs_dim = _obs(rng, batch)
    velocity = _velocity(rng, dim, obs_dim)
    steps = int(rng.integers(2, 9))
    a, t = _normal(rng, batch, dim), jnp.full((batch,), (steps - 1) / steps, jnp.float32)
    _compare("euler_step", fn, (velocity, obs, a, t, 1.0 / steps), a + velocity(obs, a, t) / steps)


def _clipping_sample_case(rng, steps_low, steps_high):
    """Inputs where the final clip to [-1, 1] matters (drawn again until it does), so a missing clip shows."""
    import jax.numpy as jnp

    from qgf_lite.flow import euler_sample

    for _ in range(50):
        batch, dim = _sizes(rng)
        obs, obs_dim = _obs(rng, batch)
        velocity = _velocity(rng, dim, obs_dim)
        noise = _normal(rng, batch, dim, scale=1.5)
        steps = int(rng.integers(steps_low, steps_high + 1))
        want = euler_sample(velocity, obs, noise, steps=steps)
        unclipped = euler_sample(velocity, obs, noise, steps=steps, clip=None)
        if float(jnp.max(jnp.abs(want - unclipped))) > 1e-2:
            break
    return velocity, obs, noise, steps, want


def euler_sample_other_steps(fn, rng):
    velocity, obs, noise, steps, want = _clipping_sample_case(rng, 2, 12)
    _compare("euler_sample", fn, (velocity, obs, noise, steps), want, what=f"samples with steps={steps}")


def euler_sample_one_step(fn, rng):
    velocity, obs, noise, _, want = _clipping_sample_case(rng, 1, 1)
    _compare("euler_sample", fn, (velocity, obs, noise, 1), want, what="samples with steps=1")


# 02 critic -----------------------------------------------------------------


def expectile_other_shapes(fn, rng):
    from qgf_lite.iql import expectile_loss

    shape = tuple(int(s) for s in rng.integers(1, 9, size=int(rng.integers(1, 4))))
    diff = _normal(rng, *shape, scale=2.0)
    tau = float(rng.uniform(0.55, 0.99))
    _compare("expectile_loss", fn, (diff, tau), expectile_loss(diff, tau))


def expectile_half_and_zero(fn, rng):
    import jax.numpy as jnp

    from qgf_lite.iql import expectile_loss

    diff = jnp.concatenate([_normal(rng, 6), jnp.zeros(2, jnp.float32)])
    _compare("expectile_loss", fn, (diff, 0.5), expectile_loss(diff, 0.5))


def _chunk_case(rng, batch, horizon, terminal_rate):
    import jax.numpy as jnp

    rewards = _normal(rng, batch, horizon)
    terminals = jnp.asarray((rng.uniform(size=(batch, horizon)) < terminal_rate).astype(np.float32))
    return rewards, terminals


def chunk_returns_other_sizes(fn, rng):
    import jax.numpy as jnp

    from qgf_lite.iql import chunk_returns

    batch, horizon = int(rng.integers(3, 20)), int(rng.integers(2, 9))
    rewards, terminals = _chunk_case(rng, batch, horizon, 0.3)
    gamma = float(rng.uniform(0.8, 0.999))
    want = chunk_returns(rewards, terminals, jnp.ones_like(rewards), gamma)[0]
    _compare("chunk_returns", fn, (rewards, terminals, gamma), want, what="chunk returns")


def chunk_returns_horizon_one(fn, rng):
    import jax.numpy as jnp

    from qgf_lite.iql import chunk_returns

    rewards, terminals = _chunk_case(rng, int(rng.integers(3, 10)), 1, 0.5)
    want = chunk_returns(rewards, terminals, jnp.ones_like(rewards), 0.9)[0]
    _compare("chunk_returns", fn, (rewards, terminals, 0.9), want, what="chunk returns")


def td_target_other_sizes(fn, rng):
    import jax.numpy as jnp

    from qgf_lite.iql import q_target

    batch = int(rng.integers(2, 30))
    returns, next_value = _normal(rng, batch, scale=3.0), _normal(rng, batch, scale=3.0)
    mask = jnp.asarray((rng.uniform(size=batch) < 0.6).astype(np.float32))
    gamma, horizon = float(rng.uniform(0.8, 0.999)), int(rng.integers(1, 9))
    want = q_target(returns, mask, next_value, gamma, horizon)
    _compare("td_target", fn, (returns, mask, next_value, gamma, horizon), want, what="TD target")


# 03 guidance ---------------------------------------------------------------


def qgf_velocity_other_sizes(fn, rng):
    from qgf_lite.checks.guidance import reference_qgf_velocity

    batch, dim = _sizes(rng)
    obs, obs_dim = _obs(rng, batch)
    velocity, critic = _velocity(rng, dim, obs_dim), _critic(rng, dim, obs_dim)
    a, t = _normal(rng, batch, dim, scale=0.7), _times(rng, batch, 0.05, 0.95)
    weight = float(rng.uniform(0.1, 3.0))
    want = reference_qgf_velocity(velocity, critic, obs, a, t, weight)
    _compare("qgf_velocity", fn, (velocity, critic, obs, a, t, weight), want, what="guided velocity")


def denoised_other_sizes(fn, rng):
    from qgf_lite.checks.guidance import reference_denoised_estimate

    for _ in range(50):  # inputs where the clip matters, so a missing clip shows
        batch, dim = _sizes(rng)
        obs, obs_dim = _obs(rng, batch)
        velocity = _velocity(rng, dim, obs_dim)
        a, t = _normal(rng, batch, dim, scale=0.9), _times(rng, batch)
        want = reference_denoised_estimate(velocity, obs, a, t)
        if float(np.max(np.abs(np.asarray(want) - np.asarray(a + (1 - t)[:, None] * velocity(obs, a, t))))) > 1e-2:
            break
    _compare("denoised_estimate", fn, (velocity, obs, a, t), want, what="a_hat")


def denoised_gradient(fn, rng):
    import jax

    from qgf_lite.checks._core import compare_arrays, student_vjp
    from qgf_lite.checks.guidance import reference_denoised_estimate

    batch, dim = _sizes(rng)
    obs, obs_dim = _obs(rng, batch)
    velocity = _velocity(rng, dim, obs_dim)
    a, t = _normal(rng, batch, dim, scale=0.3), _times(rng, batch, 0.5, 1.0)
    weights = _normal(rng, batch, dim)
    got = student_vjp("denoised_estimate", fn, (velocity, obs, a, t), 2, weights)
    _, pullback = jax.vjp(lambda x: reference_denoised_estimate(velocity, obs, x, t), a)
    compare_arrays("denoised_estimate", got, pullback(weights)[0], what="gradient of a_hat")


# 04 test-time compute ------------------------------------------------------


def select_best_other_sizes(fn, rng):
    from qgf_lite.checks.guidance import reference_select_best

    batch, n, dim = int(rng.integers(2, 12)), int(rng.integers(2, 10)), int(rng.integers(1, 5))
    obs, obs_dim = _obs(rng, batch)
    critic = _critic(rng, dim, obs_dim)
    proposals = _normal(rng, batch, n, dim, scale=0.6)
    _compare(
        "select_best",
        fn,
        (critic, obs, proposals),
        reference_select_best(critic, obs, proposals),
        what="selected actions",
    )


def select_best_single_proposal(fn, rng):
    batch, dim = _sizes(rng)
    obs, obs_dim = _obs(rng, batch)
    critic = _critic(rng, dim, obs_dim)
    proposals = _normal(rng, batch, 1, dim, scale=0.6)
    _compare("select_best", fn, (critic, obs, proposals), proposals[:, 0], what="selected actions")


def matched_small_budgets(fn, rng):
    from qgf_lite.checks._core import call_student, fail
    from qgf_lite.checks.guidance import reference_matched_best_of_n

    for _ in range(5):
        steps = int(rng.integers(1, 30))
        budget = int(rng.integers(0, 3 * (steps + 1)))
        got = call_student("matched_best_of_n", fn, budget, steps)
        if (
            isinstance(got, (bool, np.bool_))
            or not isinstance(got, (int, np.integer))
            or int(got) != reference_matched_best_of_n(budget, steps)
        ):
            fail("matched_best_of_n", "wrong N for a small budget (possibly too small for a single sample).")


def matched_large_budgets(fn, rng):
    from qgf_lite.checks._core import call_student, fail
    from qgf_lite.checks.guidance import reference_matched_best_of_n

    for _ in range(5):
        steps = int(rng.integers(1, 64))
        budget = int(rng.integers(10 * (steps + 1), 200 * (steps + 1)))
        got = call_student("matched_best_of_n", fn, budget, steps)
        if (
            isinstance(got, (bool, np.bool_))
            or not isinstance(got, (int, np.integer))
            or int(got) != reference_matched_best_of_n(budget, steps)
        ):
            fail("matched_best_of_n", "wrong N for a large budget.")


# 06 test time vs training time ----------------------------------------------


def _fql_case(rng):
    """(policy, obs, noise, targets): a state-dependent policy and flow; targets = the flow's clipped Euler sample
    from the noise with a step count drawn at grade time (``qgf_lite.fql.flow_targets``)."""
    from qgf_lite.checks.fql import policy_field
    from qgf_lite.fql import flow_targets

    batch, dim = _sizes(rng)
    obs, obs_dim = _obs(rng, batch)
    policy = policy_field(
        rng.normal(scale=0.8, size=(dim, dim)),
        rng.normal(scale=0.5, size=dim),
        obs_matrix=rng.normal(size=(obs_dim, dim)),
    )
    noise = _normal(rng, batch, dim, scale=1.5)  # wide enough that the flow's target is clipped
    targets = flow_targets(_velocity(rng, dim, obs_dim), obs, noise, steps=int(rng.integers(1, 12)))
    return policy, obs, noise, targets


def fql_loss_other_sizes(fn, rng):
    from qgf_lite.checks.fql import reference_fql_distillation_loss

    args = _fql_case(rng)
    _compare("fql_distillation_loss", fn, args, reference_fql_distillation_loss(*args), what="loss")


def fql_loss_gradient(fn, rng):
    import jax
    import jax.numpy as jnp

    from qgf_lite.checks._core import compare_arrays, student_vjp
    from qgf_lite.checks.fql import reference_fql_distillation_loss

    policy, obs, noise, targets = _fql_case(rng)
    args = (policy, obs, noise, targets)
    want = jax.grad(lambda z: reference_fql_distillation_loss(policy, obs, z, targets))(noise)
    got = student_vjp("fql_distillation_loss", fn, args, 2, jnp.float32(1.0))
    compare_arrays("fql_distillation_loss", got, want, what="the loss's gradient with respect to the noise")
    got = student_vjp("fql_distillation_loss", fn, args, 3, jnp.float32(1.0))
    compare_arrays(
        "fql_distillation_loss",
        got,
        jnp.zeros_like(targets),
        what="the loss's gradient with respect to the targets (held fixed)",
    )


def _compare_choice(fn, weights, heldout, test):
    from qgf_lite.checks._core import call_student, fail
    from qgf_lite.toy.comparison import select_weight

    want = select_weight(weights, heldout, test)
    got = call_student("select_weight", fn, weights, heldout, test)
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        fail("select_weight", f"return a pair (weight, score), got {type(got).__name__}.")
    if not (np.isclose(float(got[0]), want[0]) and np.isclose(float(got[1]), want[1], rtol=1e-5, atol=1e-6)):
        fail(
            "select_weight",
            f"returned ({float(got[0]):.4g}, {float(got[1]):.4g}), expected ({want[0]:.4g}, {want[1]:.4g}).",
        )


def select_weight_other_sizes(fn, rng):
    count, repeats = int(rng.integers(2, 9)), int(rng.integers(1, 7))
    weights = rng.permutation(np.round(rng.uniform(0.0, 5.0, size=count), 3))  # unsorted
    _compare_choice(fn, weights, rng.uniform(size=(count, repeats)), rng.uniform(size=(count, repeats)))


def select_weight_ties(fn, rng):
    count, repeats = int(rng.integers(3, 8)), int(rng.integers(2, 6))
    weights = rng.permutation(np.arange(1, count + 1) * 0.25)
    heldout = rng.integers(0, 3, size=(count, repeats)).astype(float) / 4
    tied = rng.choice(count, size=2, replace=False)
    heldout[tied] = heldout[np.argmax(heldout.mean(axis=1))]  # two (or more) exact ties at the top
    _compare_choice(fn, weights, heldout, rng.uniform(size=(count, repeats)))


def _compare_interval(fn, successes, trials, z):
    from qgf_lite.checks._core import call_student, fail
    from qgf_lite.intervals import wilson_interval

    want = wilson_interval(successes, trials, z)
    got = call_student("wilson_interval", fn, successes, trials, z)
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        fail("wilson_interval", f"return a pair (low, high), got {type(got).__name__}.")
    if not np.allclose([float(got[0]), float(got[1])], want, rtol=1e-4, atol=1e-6):
        fail(
            "wilson_interval",
            f"for {successes}/{trials} (z = {z:g}) returned ({float(got[0]):.4g}, "
            f"{float(got[1]):.4g}), expected ({want[0]:.4g}, {want[1]:.4g}).",
        )
    if not 0.0 <= float(got[0]) <= float(got[1]) <= 1.0:
        fail("wilson_interval", f"for {successes}/{trials} the interval leaves [0, 1]; clip it.")


def wilson_other_counts(fn, rng):
    for _ in range(4):
        trials = int(rng.integers(2, 500))
        _compare_interval(fn, int(rng.integers(1, trials)), trials, float(rng.choice([1.0, 1.645, 1.96, 2.576])))


def wilson_edge_counts(fn, rng):
    trials = int(rng.integers(1, 200))
    _compare_interval(fn, 0, trials, 1.96)  # 0/n: not the point 0
    _compare_interval(fn, trials, trials, 1.96)  # n/n: not the point 1
    _compare_interval(fn, 1, 1, 1.96)  # a single episode
    _compare_interval(fn, 0, 0, 1.96)  # no episodes: (0, 1)


QUESTIONS: dict = {
    "01_flow_matching": {
        "1.1": Question(
            check="check_interpolation",
            function="interpolate",
            references=("qgf_lite.flow:interpolate",),
            hidden=(
                Hidden("other batch sizes and action dimensions", interpolate_other_sizes),
                Hidden("a single row", interpolate_single_row),
            ),
        ),
        "1.2": Question(
            check="check_flow_matching_loss",
            function="flow_matching_loss",
            references=("qgf_lite.flow:flow_matching_loss", "qgf_lite.checks.flow:reference_flow_matching_loss"),
            hidden=(
                Hidden("other batch sizes, action dimensions and velocity fields", loss_other_sizes),
                Hidden("times exactly 0 and 1", loss_end_times),
            ),
        ),
        "1.3": Question(
            check="check_euler_step",
            function="euler_step",
            references=(),
            hidden=(
                Hidden("other sizes, step sizes and velocity fields", euler_step_other_sizes),
                Hidden("the last step of a sampler", euler_step_last_step),
            ),
        ),
        "1.4": Question(
            check="check_euler_sample",
            function="euler_sample",
            references=("qgf_lite.flow:euler_sample", "qgf_lite.guidance:guided_sample"),
            hidden=(
                Hidden("other step counts, sizes and velocity fields", euler_sample_other_steps),
                Hidden("a single step", euler_sample_one_step),
            ),
        ),
    },
    "02_critic_learning": {
        "2.1": Question(
            check="check_expectile_loss",
            function="expectile_loss",
            references=("qgf_lite.iql:expectile_loss",),
            hidden=(
                Hidden("other shapes and expectiles", expectile_other_shapes),
                Hidden("expectile 0.5 and zero errors", expectile_half_and_zero),
            ),
        ),
        "2.2": Question(
            check="check_chunk_returns",
            function="chunk_returns",
            references=("qgf_lite.iql:chunk_returns",),
            hidden=(
                Hidden("other horizons, batches, discounts and terminal patterns", chunk_returns_other_sizes),
                Hidden("chunks of one step", chunk_returns_horizon_one),
            ),
        ),
        "2.3": Question(
            check="check_td_target",
            function="td_target",
            references=("qgf_lite.iql:q_target",),
            hidden=(Hidden("other batch sizes, discounts and horizons", td_target_other_sizes),),
        ),
    },
    "03_guided_sampling": {
        "3.1": Question(
            check="check_qgf_velocity",
            function="qgf_velocity",
            references=(
                "qgf_lite.checks.guidance:reference_qgf_velocity",
                "qgf_lite.checks.guidance:reference_denoised_estimate",
                "qgf_lite.guidance:guided_sample",
                "qgf_lite.guidance:denoised_estimate",
            ),
            hidden=(Hidden("other sizes, weights, velocity fields and critics", qgf_velocity_other_sizes),),
        ),
        "3.2": Question(
            check="check_denoised_estimate",
            function="denoised_estimate",
            references=("qgf_lite.checks.guidance:reference_denoised_estimate", "qgf_lite.guidance:denoised_estimate"),
            hidden=(
                Hidden("other sizes and velocity fields", denoised_other_sizes),
                Hidden("its gradient on other inputs", denoised_gradient),
            ),
        ),
    },
    "04_test_time_compute": {
        "4.1": Question(
            check="check_select_best",
            function="select_best",
            references=(
                "qgf_lite.checks.guidance:reference_select_best",
                "qgf_lite.guidance:best_of_n",
                "qgf_lite.guidance:select_highest",
            ),
            hidden=(
                Hidden("other batch sizes, proposal counts and dimensions", select_best_other_sizes),
                Hidden("a single proposal per row", select_best_single_proposal),
            ),
        ),
        "4.2": Question(
            check="check_matched_best_of_n",
            function="matched_best_of_n",
            # sampler_cost is allowed: notebook 04 introduces it, and counting with it is a fair way to the answer.
            references=("qgf_lite.checks.guidance:reference_matched_best_of_n",),
            hidden=(
                Hidden("budgets too small for many samples", matched_small_budgets),
                Hidden("large budgets and many steps", matched_large_budgets),
            ),
        ),
    },
    "05_ogbench_manipulation": {
        "5.1": Question(
            check="check_wilson_interval",
            function="wilson_interval",
            references=(
                "qgf_lite.intervals:wilson_interval",
                "qgf_lite.ogbench.evaluation:wilson_interval",
                "qgf_lite.checks.evaluation:reference_wilson_interval",
            ),
            hidden=(
                Hidden("other success counts, trials and z", wilson_other_counts),
                Hidden("0/n, n/n, 1/1 and no trials", wilson_edge_counts),
            ),
        ),
    },
    "06_test_time_vs_training_time": {
        "6.1": Question(
            check="check_fql_distillation_loss",
            function="fql_distillation_loss",
            references=(
                "qgf_lite.fql:distillation_loss",
                "qgf_lite.fql:flow_targets",
                "qgf_lite.checks.fql:reference_fql_distillation_loss",
            ),
            hidden=(
                Hidden("other sizes, states, policies and flows", fql_loss_other_sizes),
                Hidden("its gradient on other inputs (the flow's targets held fixed)", fql_loss_gradient),
            ),
        ),
        "6.2": Question(
            check="check_select_weight",
            function="select_weight",
            references=("qgf_lite.toy.comparison:select_weight",),
            hidden=(
                Hidden("other numbers of weights and repetitions, unsorted weights", select_weight_other_sizes),
                Hidden("exact ties of the mean held-out score", select_weight_ties),
            ),
        ),
    },
}


# The qgf_lite modules an assignment's exercises may import while graded (copied into the sandbox, where the
# package is otherwise absent), by notebook stem. Default: none. A module listed here must not compute the answer
# to any exercise: the sandbox exists so that a student has nothing to call.
SANDBOX_MODULES: dict = {}


def sandbox_modules(assignment: str) -> tuple:
    """The qgf_lite modules importable in the grading sandbox for ``assignment`` (usually none)."""
    return tuple(SANDBOX_MODULES.get(assignment, ()))


def questions_for(assignment: str) -> dict:
    """The question definitions of an assignment (by notebook stem); empty if it has none."""
    return QUESTIONS.get(assignment, {})


__all__ = ["Hidden", "Question", "QUESTIONS", "SANDBOX_MODULES", "questions_for", "sandbox_modules"]
