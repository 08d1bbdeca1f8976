"""qgf_lite.toy.comparison, the driver of notebook 06: sampling from multi-seed states, training with checkpoints
(BC flow + critic + FQL + QAM), critic quality, choosing w on held-out data, the width study, and bad input.

Everything trains tiny networks for a few dozen steps; the one quality test (guidance tracks the critic) trains
the ring bandit for 400 steps.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qgf_lite import SamplerSpec, toy
from qgf_lite.toy import comparison as cmp
from qgf_lite.toy.experiments import toy_config
from qgf_lite.training import critic_fn, init_train_state, init_train_states


@pytest.fixture(scope="module", autouse=True)
def quick_compile():
    """These networks are tiny: XLA's optimisation passes cost more compile time than they save (the setting is
    restored after the module, and jax keys its compile cache on it)."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


TINY = dict(actor_hidden=(32,), critic_hidden=(32,), fql_hidden=(32,), value_hidden=(8,), batch_size=64)


@pytest.fixture(scope="module")
def ring_run():
    """The ring bandit after 400 steps, 2 seeds, scored every 200 steps, QAM trained beside FQL.

    QAM's tau = 4: its target pi_BC exp(4 Q) holds about e^4 / (e^4 + 7) = 89% of its mass on the rewarded one of
    the ring's 8 modes (reward up to 1), against BC's 1/8, so 400 steps of these tiny networks already show the
    tilt (at tau = 1 the target holds 28% there, too little to separate from BC at this size)."""
    config = toy_config(fql=True, fql_alpha=10.0, qam=True, qam_inv_temp=4.0, **TINY)
    return cmp.run_bandit(
        "ring",
        seeds=(0, 1),
        num_steps=400,
        eval_every=200,
        config=config,
        num_samples=5000,
        num_eval=400,
        progress=False,
    )


def test_run_bandit_records_curves_and_critics_per_checkpoint_and_seed(ring_run):
    assert ring_run.steps == [200, 400]
    assert ring_run.critic_steps == [0, 200, 400] and len(ring_run.critics) == 3
    for metric in ("mean_reward", "frac_best_region", "sw_to_behaviour", "critic_value"):
        assert set(ring_run.curves[metric]) == {"BC", "QGF", "FQL", "QAM"}
        for values in ring_run.curves[metric].values():
            assert values.shape == (2, 2) and np.all(np.isfinite(values))
    # The stored step-0 critic is the untrained one, and the last stored critic is the final target critic.
    untrained = init_train_state(ring_run.config, jax.random.PRNGKey(1)).target_critic_params  # seed 1's
    assert all(
        bool(jnp.array_equal(a[1], b))
        for a, b in zip(jax.tree_util.tree_leaves(ring_run.critics[0]), jax.tree_util.tree_leaves(untrained))
    )
    assert all(
        bool(jnp.array_equal(a, b))
        for a, b in zip(
            jax.tree_util.tree_leaves(ring_run.critics[-1]),
            jax.tree_util.tree_leaves(ring_run.state.target_critic_params),
        )
    )
    assert ring_run.final("mean_reward", "QGF").shape == (2,)
    summary = cmp.summarise(ring_run, "mean_reward")
    assert summary["QGF"][2] <= summary["QGF"][0] <= summary["QGF"][3]


def test_qam_moves_the_reward_above_bc_on_every_seed(ring_run):
    """Measured (final checkpoint, 400 actions per seed): QAM 0.248 and 0.189 against BC's 0.152 and 0.114."""
    assert ring_run.specs["QAM"] == SamplerSpec("qam", steps=ring_run.config.flow_steps)
    qam, bc = ring_run.final("mean_reward", "QAM"), ring_run.final("mean_reward", "BC")
    assert np.all(qam > bc + 0.03), (qam, bc)
    # The curves score QAM's own network: Euler samples of its fine-tuned velocity, not the BC flow's.
    draw = lambda method: cmp.draw_actions(ring_run.config, ring_run.state, SamplerSpec(method), 4, num=64)
    assert draw("qam").shape == (2, 64, 2)
    assert not np.allclose(np.asarray(draw("qam")), np.asarray(draw("bc")), atol=1e-3)
    # Without qam the methods are the three of an FQL-only config
    assert list(cmp.method_specs(1.0)) == ["BC", "QGF", "FQL"]
    assert list(cmp.method_specs(1.0, qam=True)) == ["BC", "QGF", "FQL", "QAM"]


def test_guidance_gain_tracks_the_critic_and_a_flipped_critic_hurts(ring_run):
    critics = {
        "untrained": ring_run.critics[0],
        "trained": ring_run.critics[-1],
        "flipped": cmp.negated_critic(ring_run.critics[-1]),
    }
    rows = {r["critic"]: r for r in cmp.critic_quality(ring_run, critics, weight=1.0, key=3, num=500)}
    assert rows["trained"]["critic_corr"] > 0.8 > rows["untrained"]["critic_corr"]
    # min_i(-Q_i) = -max_i Q_i: the flipped ensemble ranks actions (almost exactly) backwards
    assert rows["flipped"]["critic_corr"] < -0.8
    assert rows["trained"]["gain_over_bc"] > 0.1, rows["trained"]
    assert rows["trained"]["gain_over_bc"] > rows["untrained"]["gain_over_bc"] + 0.1
    assert rows["flipped"]["gain_over_bc"] < 0, rows["flipped"]


def test_initial_states_are_init_train_states():
    config = toy_config(fql=True, **TINY)
    want = init_train_states(config, (3, 4))
    got = cmp.initial_states(config, (3, 4))
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    assert all(
        bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want))
    )


def test_draw_actions_per_seed_matches_the_single_seed_draw(ring_run):
    spec = SamplerSpec("guided", weight=1.0)
    both = cmp.draw_actions(ring_run.config, ring_run.state, spec, 5, num=64)
    assert both.shape == (2, 64, 2)
    keys = jax.random.split(jax.random.PRNGKey(5), 2)
    for s in range(2):
        single = cmp.draw_actions(ring_run.config, cmp.seed_state(ring_run.state, s), spec, keys[s], num=64)
        np.testing.assert_allclose(np.asarray(both[s]), np.asarray(single), atol=1e-5)
    assert not np.allclose(np.asarray(both[0]), np.asarray(both[1]))  # each seed draws its own noise


def test_evaluation_spec_draws_exactly_the_bc_actions(ring_run):
    bc = cmp.draw_actions(ring_run.config, ring_run.state, SamplerSpec("bc"), 2, num=128)
    as_guided = cmp.draw_actions(ring_run.config, ring_run.state, cmp.evaluation_spec(SamplerSpec("bc")), 2, num=128)
    np.testing.assert_allclose(np.asarray(bc), np.asarray(as_guided), atol=1e-6)
    fql = SamplerSpec("fql")
    assert cmp.evaluation_spec(fql) is fql


def test_draw_actions_with_stored_critic_params_changes_only_the_guidance(ring_run):
    spec = SamplerSpec("guided", weight=1.0)
    early = cmp.draw_actions(ring_run.config, ring_run.state, spec, 1, num=64, critic_params=ring_run.critics[0])
    late = cmp.draw_actions(ring_run.config, ring_run.state, spec, 1, num=64)
    assert not np.allclose(np.asarray(early), np.asarray(late))


def test_negated_critic_outputs_minus_q(ring_run):
    params = cmp.seed_state(ring_run.state, 0).target_critic_params
    a = jax.random.uniform(jax.random.PRNGKey(0), (32, 2), minval=-1, maxval=1)
    q = critic_fn(ring_run.config, params)(None, a)
    # critic_fn takes the ensemble minimum: the flipped ensemble's minimum is minus the original's maximum.
    from qgf_lite.training import build_networks

    members = build_networks(ring_run.config)[1].apply(params, None, a)
    flipped = build_networks(ring_run.config)[1].apply(cmp.negated_critic(params), None, a)
    np.testing.assert_allclose(np.asarray(flipped), -np.asarray(members), rtol=1e-5, atol=1e-6)
    assert q.shape == (32,)


def test_seconds_per_action_is_positive_and_fql_is_cheaper_than_qgf(ring_run):
    qgf = cmp.seconds_per_action(ring_run.config, ring_run.state, SamplerSpec("guided", weight=1.0), num=256, repeats=3)
    fql = cmp.seconds_per_action(ring_run.config, ring_run.state, SamplerSpec("fql"), num=256, repeats=3)
    assert 0 < fql < qgf  # 1 network call against 30


def test_curves_figure_draws_shared_curves_once(ring_run):
    fig = cmp.curves_figure({"a": ring_run, "b": ring_run}, "mean_reward", title="t", y_title="y")
    names = [t.name for t in fig.data if t.showlegend is not False]
    assert names == ["BC", "QGF", "FQL, a", "QAM"]  # the second run's identical curves are not drawn again
    colours = {t.name: t.line.color for t in fig.data if t.showlegend is not False}
    from qgf_lite.presentation.plots import method_color

    assert colours["QAM"] == method_color("QAM") != colours["FQL, a"]
    assert fig.layout.xaxis.title.text == "training steps"


def test_decoy_reward_adds_a_false_peak_only_near_its_centre():
    problem = toy.make_bandit("ring")
    reward = cmp.decoy_reward(problem, (-0.7, 0.0), height=2.0, width=0.1)
    a = jnp.asarray([[-0.7, 0.0], [0.7, 0.0], [0.0, 0.7]])
    np.testing.assert_allclose(np.asarray(reward(None, a) - problem.reward(None, a)), [2.0, 0.0, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="one 2D point"):
        cmp.decoy_reward(problem, (0.0, 0.0, 0.0))


def test_select_weight_chooses_on_heldout_and_reports_test():
    weights = [0.0, 0.5, 1.0]
    heldout = np.array([[0.1, 0.1], [0.5, 0.3], [0.2, 0.9]])  # means 0.1, 0.4, 0.55
    test = np.array([[0.0, 0.0], [1.0, 1.0], [0.25, 0.75]])
    assert cmp.select_weight(weights, heldout, test) == (1.0, 0.5)
    # a tie goes to the smaller weight, whatever the order
    assert cmp.select_weight([2.0, 0.5], [[1.0], [1.0]], [[3.0], [4.0]]) == (0.5, 4.0)
    with pytest.raises(ValueError, match="heldout_scores"):
        cmp.select_weight(weights, heldout[:2], test)
    with pytest.raises(ValueError, match="non-empty 1D"):
        cmp.select_weight([], np.zeros((0, 1)), np.zeros((0, 1)))


def test_run_point_goal_scores_rollouts_and_distances():
    config = cmp.point_goal_config(
        actor_hidden=(16,), critic_hidden=(16,), value_hidden=(16,), fql_hidden=(16,), batch_size=32, qam=True
    )
    run = cmp.run_point_goal(
        seeds=(0, 1), num_steps=20, eval_every=10, config=config, num_episodes=30, eval_episodes=4, progress=False
    )
    assert run.steps == [10, 20] and run.critic_steps == [0, 10, 20]
    assert list(run.specs) == ["BC", "QGF", "FQL", "QAM"]
    for method in ("BC", "QGF", "FQL", "QAM"):
        success = run.curves["success_rate"][method]
        assert success.shape == (2, 2) and np.all((success >= 0) & (success <= 1))
        assert np.all(run.curves["mean_return"][method] <= 0)  # -1 per step until the goal
        assert np.all(run.curves["sw_to_behaviour"][method] > 0)
    scores = cmp.rollout_scores(config, run.state, SamplerSpec("guided", weight=0.1), 0, num_episodes=4)
    assert scores["success_rate"].shape == (2,)


def test_width_study_rows():
    rows = cmp.width_study(
        [4],
        seeds=(0,),
        num_steps=20,
        weights=[0.5, 1.0],
        num_samples=500,
        num_contexts=64,
        batch_size=32,
        progress=False,
    )
    assert [r["width"] for r in rows] == [4]
    # 3 hidden layers of 4 on [context (2), action (2), time embedding (32)], output 2
    assert rows[0]["flow_params"] == (36 * 4 + 4) + 2 * (4 * 4 + 4) + (4 * 2 + 2)
    for r in rows:
        assert r["weights"] == [0.0, 0.5, 1.0]  # w = 0 (BC) is always a candidate
        assert r["chosen_weight"] in r["weights"]
        assert r["heldout_scores"].shape == r["test_scores"].shape == (3, 1)
        assert r["gain_over_bc"] == pytest.approx(r["qgf_reward"] - r["bc_reward"])
        assert r["bc_reward"] == pytest.approx(float(r["test_scores"][0].mean()))


def test_bad_input(ring_run):
    config = ring_run.config
    with pytest.raises(ValueError, match="multiple of `eval_every`"):
        cmp.run_bandit("ring", seeds=(0,), num_steps=30, eval_every=20, config=config, progress=False)
    with pytest.raises(ValueError, match="train FQL too"):
        cmp.run_bandit("ring", config=toy_config(), progress=False)
    with pytest.raises(ValueError, match="pass `num`"):
        cmp.draw_actions(config, ring_run.state, SamplerSpec("bc"), 0)
    with pytest.raises(ValueError, match="obs"):
        cmp.draw_actions(config, ring_run.state, SamplerSpec("bc"), 0, obs=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="already a single seed"):
        cmp.seed_state(cmp.seed_state(ring_run.state, 0), 0)
    with pytest.raises(ValueError, match="index"):
        cmp.seed_state(ring_run.state, 2)
    with pytest.raises(TypeError, match="SamplerSpec"):
        cmp.draw_actions(config, ring_run.state, "qgf", 0, num=4)


def test_point_goal_outcomes_agree_with_the_rollout_aggregates():
    """Per-episode success and return read off the trajectories average to evaluate_point_goal's own figures."""

    def policy(obs, key):  # towards the goal above the obstacle, noisily: some episodes succeed, some do not
        target = jnp.where(obs[:, :1] < 0, jnp.asarray([[0.0, 0.5]]), jnp.asarray([[0.7, 0.0]]))
        direction = (target - obs) / jnp.linalg.norm(target - obs, axis=-1, keepdims=True)
        noise = 0.8 * jax.random.normal(key, (obs.shape[0], 5, 2))
        return (direction[:, None, :] + noise).reshape(obs.shape[0], 10)

    result = toy.evaluate_point_goal(policy, 3, num_episodes=32, chunk_len=5)
    success, returns = cmp.point_goal_outcomes(result["trajectories"])
    assert 0 < success.mean() < 1
    assert success.mean() == pytest.approx(result["success_rate"])
    assert returns.mean() == pytest.approx(result["mean_return"])


# --------------------------------------------------------------------------- the public helpers notebook 06 calls
def test_weight_sweep_fills_every_column_and_matches_the_run_at_its_weight(ring_run):
    rows = cmp.weight_sweep(ring_run, [0.0, 1.0], key=3, num=200)
    assert [r["weight"] for r in rows] == [0.0, 1.0]
    for row in rows:
        for column in ("mean_reward", "reward_std", "frac_best_region", "critic_value", "sw_to_behaviour"):
            assert np.isfinite(row[column]), column
        assert row["critic_value_seeds"].shape == (2,)
    # the critic's value is the mean of min_i Q_i over the actions, per seed, averaged over seeds
    actions = cmp.draw_actions(
        ring_run.config,
        ring_run.state,
        SamplerSpec("guided", weight=1.0),
        jax.random.fold_in(jax.random.PRNGKey(3), 1),
        num=200,
    )
    scores = cmp.bandit_scores(ring_run, actions, key=0)
    assert rows[1]["critic_value"] == pytest.approx(float(scores["critic_value"].mean()), rel=1e-5)
    assert rows[1]["mean_reward"] == pytest.approx(float(scores["mean_reward"].mean()), rel=1e-5)
    with pytest.raises(ValueError, match="at least one"):
        cmp.weight_sweep(ring_run, [], key=0)


def test_bandit_scores_of_one_seed_uses_that_seeds_critic(ring_run):
    actions = cmp.draw_actions(ring_run.config, ring_run.state, SamplerSpec("bc"), 0, num=100)
    both = cmp.bandit_scores(ring_run, actions, key=1)
    first = cmp.bandit_scores(ring_run, actions[0], key=1)
    assert first["critic_value"].shape == (1,)
    assert first["critic_value"][0] == pytest.approx(both["critic_value"][0], rel=1e-5)
    with pytest.raises(ValueError, match="shape"):
        cmp.bandit_scores(ring_run, np.zeros((3, 4, 5)), key=0)


def test_actions_figure_one_panel_per_policy_in_method_colours(ring_run):
    from qgf_lite.presentation.plots import method_color

    fig = cmp.actions_figure(
        {"alpha=10": ring_run}, weight=1.0, key=0, num=50, extra={"FQL, your loss": np.zeros((50, 2))}
    )
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["behaviour data", "BC", "QGF w=1", "FQL", "QAM", "FQL, your loss"]
    colours = [t.marker.color for t in fig.data if t.marker.symbol != "star"]
    assert colours == [method_color(t) for t in titles]


def test_width_study_uses_the_given_selection():
    calls = []

    def smallest(weights, heldout, test):
        calls.append(len(weights))
        return float(weights[0]), float(np.mean(test[0]))

    rows = cmp.width_study(
        [4],
        seeds=(0,),
        num_steps=20,
        weights=[0.5, 1.0],
        num_samples=500,
        num_contexts=64,
        batch_size=32,
        progress=False,
        select=smallest,
    )
    assert calls == [3] and rows[0]["chosen_weight"] == 0.0
    assert rows[0]["qgf_reward"] == pytest.approx(rows[0]["bc_reward"])
