"""qgf_lite.samplers: one SamplerSpec and one parser for the toy experiments, the OGBench evaluation and the CLI.

The parser (names, shorthands, expansion over weights, errors), labels and compute costs (against the counts of
docs/algorithm.md §5), validation of contradictory specs, report round trips, and SamplerSpec.sample against the
kernels called directly with the same noise, for every method and mode.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qgf_lite
from qgf_lite import samplers
from qgf_lite.guidance import MODES, best_of_n, gradient_step, guided_sample
from qgf_lite.samplers import SAMPLER_METHODS, SAMPLER_NAMES, SamplerSpec, sampler_cost, specs_from_names

S = SamplerSpec


def velocity(obs, a, t):
    return jnp.tanh(0.5 - a) * (1.0 + t[:, None]) + 0.1 * obs[:, :1]


def critic(obs, a):
    return -jnp.sum((a - jnp.array([0.4, -0.2])) ** 2, axis=-1) * (1.0 + obs[:, 0] ** 2)


BATCH, DIM = 6, 2
OBS = jax.random.normal(jax.random.PRNGKey(0), (BATCH, 3))


# ------------------------------------------------------------------------------------------- the parser


def test_method_names_and_mode_shorthands_give_the_same_specs():
    assert specs_from_names(["bc"]) == [S("bc")]
    for mode in MODES:
        assert specs_from_names([mode], [0.1]) == [S("guided", mode=mode, weight=0.1)]
        assert specs_from_names([f"{mode}_best_of_n"], [0.1], n=3) == [
            S("guided_best_of_n", mode=mode, weight=0.1, n=3)
        ]
    # The method names themselves use mode "qgf".
    assert specs_from_names(["guided", "qgf"], [0.1]) == [S("guided", weight=0.1)]  # one spec: duplicates dropped
    assert specs_from_names(["guided_best_of_n"], [0.1]) == specs_from_names(["qgf_best_of_n"], [0.1])
    assert set(SAMPLER_NAMES) == set(SAMPLER_METHODS) | set(MODES) | {f"{m}_best_of_n" for m in MODES}


def test_readme_command_expands_guided_methods_over_positive_weights_only():
    # qgf-lite eval CKPT --methods bc qgf noisy best_of_n qgf_best_of_n --weights 0.01 0.03 0.1 --n 4
    specs = specs_from_names(["bc", "qgf", "noisy", "best_of_n", "qgf_best_of_n"], [0.0, 0.01, 0.03, 0.1], n=4)
    assert [s.label for s in specs] == [
        "BC",
        "QGF w=0.01",
        "QGF w=0.03",
        "QGF w=0.1",
        "noisy-gradient w=0.01",
        "noisy-gradient w=0.03",
        "noisy-gradient w=0.1",
        "best-of-4",
        "QGF w=0.01 + best-of-4",
        "QGF w=0.03 + best-of-4",
        "QGF w=0.1 + best-of-4",
    ]
    assert all(s.steps == 10 for s in specs)
    assert specs_from_names(["bc", "qgf"], [0.1], steps=4) == [S("bc", steps=4), S("guided", weight=0.1, steps=4)]


def test_gradient_step_takes_its_step_size_never_the_weight_slot():
    [spec] = specs_from_names(["gradient_step"], [0.01, 0.1], step_size=0.05, ascent_steps=5)
    assert spec == S("gradient_step", step_size=0.05, ascent_steps=5)
    assert spec.weight == 0.0 and spec.label == "gradient-step a=0.05 x5"
    # n and the step size reach only the methods that read them.
    assert specs_from_names(["qgf", "best_of_n"], [0.1], n=8, step_size=0.5) == [
        S("guided", weight=0.1),
        S("best_of_n", n=8),
    ]


def test_parser_errors_name_the_valid_choices():
    with pytest.raises(ValueError, match="Unknown method") as info:
        specs_from_names(["qgf", "annealed"], [0.1])
    for name in SAMPLER_NAMES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match=">= 0"):
        specs_from_names(["qgf"], [-0.1])
    with pytest.raises(ValueError, match="finite"):
        specs_from_names(["qgf"], [float("nan")])
    with pytest.raises(ValueError, match="at least one weight > 0"):
        specs_from_names(["qgf"], [0.0])
    with pytest.raises(ValueError, match="`n` must be >= 1"):
        specs_from_names(["best_of_n"], n=0)
    with pytest.raises(TypeError, match="list of names"):
        specs_from_names("qgf", [0.1])


def test_specs_pass_through_the_parser_unchanged():
    custom = S("guided_best_of_n", mode="noisy", weight=0.2, n=8, steps=5)
    assert specs_from_names(["bc", custom], [0.1]) == [S("bc"), custom]


# ------------------------------------------------------------------------------------------- labels and costs

# (spec, label, cost at K = 10) as docs/algorithm.md §5 counts them.
TABLE = [
    (S("bc"), "BC", 10),
    (S("guided", weight=0.1), "QGF w=0.1", 30),
    (S("guided", mode="jacobian", weight=0.1), "QGF-Jacobian w=0.1", 40),
    (S("guided", mode="noisy", weight=0.1), "noisy-gradient w=0.1", 30),
    (S("guided", mode="bptt", weight=0.1), "BPTT w=0.1", 230),
    (S("best_of_n", n=4), "best-of-4", 44),
    (S("best_of_n", n=16), "best-of-16", 176),
    (S("guided_best_of_n", weight=0.1, n=4), "QGF w=0.1 + best-of-4", 124),
    (S("gradient_step"), "gradient-step a=0.01 x3", 16),
]


@pytest.mark.parametrize("spec, label, cost", TABLE, ids=[row[1] for row in TABLE])
def test_labels_and_costs(spec, label, cost):
    assert spec.label == label
    assert spec.cost == cost
    assert spec.cost_breakdown() == sampler_cost(
        spec.method, steps=spec.steps, n=spec.n, ascent_steps=spec.ascent_steps, mode=spec.mode
    )
    assert spec.cost_breakdown()["total"] == cost


def test_cost_breakdown_and_family():
    assert S("guided_best_of_n", weight=0.1, n=4).cost_breakdown() == {
        "velocity_forward": 40,
        "velocity_backward": 0,
        "critic_forward": 44,
        "critic_backward": 40,
        "total": 124,
    }
    assert S("guided", weight=0.1, steps=4).cost == 12
    assert S("guided", weight=0.1).family == "QGF"
    assert S("guided_best_of_n", weight=0.1, n=4).family == "QGF + best-of-4"
    assert S("best_of_n", n=4).family == S("best_of_n", n=4).label == "best-of-4"
    assert qgf_lite.sampler_cost is sampler_cost
    with pytest.raises(ValueError, match="Unknown sampler `method`"):
        sampler_cost("annealed")
    with pytest.raises(ValueError, match="mode"):
        sampler_cost("guided", mode="fast")


# ------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs, phrase",
    [
        (dict(method="bc", weight=0.1), "takes no guidance weight"),
        (dict(method="gradient_step", weight=0.1), "its ascent step is `step_size`"),
        (dict(method="guided", weight=0.1, n=4), "`n` applies to best_of_n, guided_best_of_n only"),
        (dict(method="guided", step_size=0.05), "takes no ascent step size"),
        (dict(method="best_of_n", mode="noisy"), "takes no guidance mode"),
        (dict(method="bc", ascent_steps=5), "`ascent_steps` applies to gradient_step only"),
        (
            dict(method="guided", mode="fast"),
            "Unknown guidance `mode` 'fast'; choose one of qgf, jacobian, noisy, bptt",
        ),
        (dict(method="annealed"), "choose one of bc, guided, best_of_n, guided_best_of_n, gradient_step"),
        (dict(method="qgf"), "SamplerSpec('guided', mode='qgf')"),
        (dict(method="guided", weight=-0.1), "`weight` must be finite and >= 0"),
        (dict(method="gradient_step", step_size=float("inf")), "`step_size` must be finite and >= 0"),
        (dict(method="best_of_n", n=0), "`n` must be >= 1"),
        (dict(method="bc", steps=0), "`steps` must be >= 1"),
    ],
)
def test_contradictory_or_bad_specs_are_rejected(kwargs, phrase):
    with pytest.raises(ValueError) as info:
        S(**kwargs)
    assert phrase in str(info.value)


def test_spec_fields_are_plain_python_values():
    with pytest.raises(TypeError, match="weight"):
        S("guided", weight=jnp.float32(0.1))  # a spec is hashed and written to JSON: pass traced weights to sample()
    with pytest.raises(TypeError, match="`n`"):
        S("best_of_n", n=2.0)
    spec = S("guided_best_of_n", weight=np.float32(0.5), n=np.int64(4))
    assert type(spec.weight) is float and type(spec.n) is int and spec == S("guided_best_of_n", weight=0.5, n=4)
    assert S("guided", weight=1) == S("guided", weight=1.0)
    assert hash(S("guided", weight=1)) == hash(S("guided", weight=1.0))


def test_to_dict_round_trips_through_json_and_report_rows():
    for spec, _, _ in TABLE:
        data = json.loads(json.dumps(spec.to_dict()))
        assert SamplerSpec.from_dict(data) == spec
    row = {"label": "QGF w=0.1", "cost": 30, "success_rate": 0.5, **S("guided", weight=0.1).to_dict()}
    assert SamplerSpec.from_dict(row) == S("guided", weight=0.1)
    assert set(S("bc").to_dict()) == {f.name for f in dataclasses.fields(SamplerSpec)}
    with pytest.raises(ValueError, match="needs a `method`"):
        SamplerSpec.from_dict({"weight": 0.1})


# ------------------------------------------------------------------------------------------- dispatch


def direct_calls():
    """(spec, noise, the kernel called directly): every method, every guidance mode."""
    key = jax.random.PRNGKey(3)
    flat = jax.random.normal(key, (BATCH, DIM))
    grouped = jax.random.normal(key, (BATCH, 4, DIM))
    cases = [(S("bc", steps=5), flat, guided_sample(velocity, None, OBS, flat, steps=5))]
    for mode in MODES:
        cases += [
            (
                S("guided", mode=mode, weight=0.7, steps=5),
                flat,
                guided_sample(velocity, critic, OBS, flat, steps=5, weight=0.7, mode=mode),
            ),
            (
                S("guided_best_of_n", mode=mode, weight=0.7, n=4, steps=5),
                grouped,
                best_of_n(velocity, critic, OBS, grouped, steps=5, weight=0.7, mode=mode),
            ),
        ]
    cases += [
        (S("best_of_n", n=4, steps=5), grouped, best_of_n(velocity, critic, OBS, grouped, steps=5)),
        (
            S("gradient_step", step_size=0.05, ascent_steps=2, steps=5),
            flat,
            gradient_step(velocity, critic, OBS, flat, steps=5, step_size=0.05, ascent_steps=2),
        ),
    ]
    return cases


def test_sample_equals_the_kernel_called_directly_for_every_method_and_mode():
    cases = direct_calls()
    # (cfgrl runs a label-conditioned network: its own test below; fql a one-step policy: tests/test_fql.py; qam its
    # fine-tuned flow: tests/test_qam.py)
    assert {spec.method for spec, _, _ in cases} == set(SAMPLER_METHODS) - {"cfgrl", "fql", "qam"}
    for spec, noise, expected in cases:
        got = spec.sample(velocity, critic, OBS, noise)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected), err_msg=spec.label)
    # BC is the plain Euler sampler, and the guided variants really use the weight.
    bc, qgf = cases[0][2], cases[1][2]
    np.testing.assert_allclose(
        np.asarray(bc), np.asarray(qgf_lite.euler_sample(velocity, OBS, cases[0][1], steps=5)), atol=1e-6
    )
    assert not np.allclose(np.asarray(bc), np.asarray(qgf))


def test_sample_draws_noise_of_the_right_shape_from_a_key():
    key = jax.random.PRNGKey(7)
    for spec in (S("guided", weight=0.3), S("guided_best_of_n", weight=0.3, n=3), S("best_of_n", n=5)):
        noise = jax.random.normal(key, (BATCH, *spec.noise_shape(DIM)))
        np.testing.assert_array_equal(np.asarray(spec.draw_noise(key, BATCH, DIM)), np.asarray(noise))
        got = spec.sample(velocity, critic, OBS, key, action_dim=DIM)  # batch from obs
        np.testing.assert_array_equal(np.asarray(got), np.asarray(spec.sample(velocity, critic, OBS, noise)))
        assert got.shape == (BATCH, DIM)
    assert S("best_of_n", n=5).noise_shape(DIM) == (5, DIM) and S("bc").noise_shape(DIM) == (DIM,)
    typed = jax.random.key(7)
    stateless = S("bc").sample(lambda o, a, t: -a, None, None, typed, batch=4, action_dim=DIM)
    assert stateless.shape == (4, DIM)
    with pytest.raises(ValueError, match="action_dim"):
        S("bc").sample(velocity, critic, OBS, key)
    with pytest.raises(ValueError, match="pass `batch`"):
        S("bc").sample(velocity, critic, None, key, action_dim=DIM)


def test_traced_weight_override_serves_a_whole_sweep():
    spec = S("guided", mode="noisy")
    noise = jax.random.normal(jax.random.PRNGKey(1), (BATCH, DIM))
    sweep = jax.jit(jax.vmap(lambda w: spec.sample(velocity, critic, OBS, noise, weight=w)))(jnp.array([0.0, 0.5]))
    for w, got in zip((0.0, 0.5), sweep):
        want = spec.with_weight(w).sample(velocity, critic, OBS, noise)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="BC takes no guidance weight"):
        S("bc").sample(velocity, critic, OBS, noise, weight=0.5)


def test_noise_of_the_wrong_shape_is_named():
    flat = jnp.zeros((BATCH, DIM))
    with pytest.raises(ValueError, match=r"must have shape \(batch, 4, 2\)"):
        S("best_of_n", n=4).sample(velocity, critic, OBS, flat)
    with pytest.raises(ValueError, match=r"must have shape \(batch, 2\)"):
        S("guided", weight=0.1).sample(velocity, critic, OBS, jnp.zeros((BATCH, 4, DIM)))


def test_a_new_method_is_one_registry_entry(monkeypatch):
    """What adding e.g. classifier-free guidance takes: one SAMPLERS entry, and every consumer knows it."""
    entry = samplers.SamplerMethod(
        run=lambda s, velocity, critic, obs, noise, w, clip: (
            guided_sample(velocity, None, obs, noise, steps=s.steps, clip=clip) * 0.0 + w
        ),
        noise_shape=lambda s, dim: (dim,),
        counts=lambda steps, n, ascent_steps, mode: (2 * steps, 0, 0, 0),
        label=lambda s, w: f"two-pass{w}",
        uses=frozenset({"weight"}),
    )
    monkeypatch.setitem(samplers.SAMPLERS, "two_pass", entry)
    spec = S("two_pass", weight=0.5)
    assert (spec.label, spec.family, spec.cost) == ("two-pass w=0.5", "two-pass", 20)
    assert sampler_cost("two_pass")["total"] == 20
    assert specs_from_names(["bc", "two_pass"], [0.5, 1.0]) == [S("bc"), spec, S("two_pass", weight=1.0)]
    out = spec.sample(velocity, critic, OBS, jnp.zeros((BATCH, DIM)))
    np.testing.assert_array_equal(np.asarray(out), 0.5)
    with pytest.raises(ValueError, match="`n` applies to best_of_n, guided_best_of_n only"):
        S("two_pass", n=3)


# ------------------------------------------------------------------------------------------- old names


def test_the_0_1_spellings_are_gone():
    from qgf_lite import guidance
    from qgf_lite.toy import experiments as tx

    assert not hasattr(tx, "SamplerSpec") and not hasattr(guidance, "sampler_cost")
    assert not hasattr(S("guided", weight=0.5), "name")
    assert not hasattr(qgf_lite, "sample_with_method")


# ------------------------------------------------------------------------------------------- toy rows


@pytest.fixture(scope="module")
def toy_setup():
    """Freshly initialised toy networks (no training): enough to check rows and dispatch, in a second."""
    from qgf_lite.toy import experiments as tx

    config = tx.toy_config()
    state = qgf_lite.init_train_state(config, jax.random.PRNGKey(0))
    behaviour = jax.random.uniform(jax.random.PRNGKey(1), (200, 2), minval=-1.0, maxval=1.0)
    return tx.ToySetup(problem=qgf_lite.toy.make_bandit("ring"), config=config, state=state, behaviour=behaviour)


def test_toy_rows_carry_label_cost_and_spec_fields(toy_setup):
    from qgf_lite.toy import experiments as tx

    specs = [S("bc"), S("guided", mode="noisy", weight=0.5), S("best_of_n", n=2)]
    rows = tx.evaluate_specs(toy_setup, specs, 0, num=64, progress=False)
    for spec, row in zip(specs, rows):
        assert row["label"] == spec.label and row["cost"] == spec.cost
        assert SamplerSpec.from_dict(row) == spec
    assert "noisy-gradient w=0.5" in tx.format_table(rows, ["label", "cost", "mean_reward"])
    sweep = tx.weight_sweep(toy_setup, [0.0, 0.5], 0, num=32)
    assert [r["label"] for r in sweep] == ["QGF w=0", "QGF w=0.5"] and [r["cost"] for r in sweep] == [30, 30]


def test_toy_draw_samples_compiles_once_per_weight_sweep(toy_setup):
    from qgf_lite.toy import experiments as tx

    key = jax.random.PRNGKey(4)
    noise = jax.random.normal(key, (32, 2))
    before = tx._compiled_spec.cache_info().currsize
    for w in (0.25, 0.75):
        got = tx.draw_samples(toy_setup, S("guided", mode="jacobian", weight=w), key, 32)
        want = guided_sample(toy_setup.velocity, toy_setup.critic, None, noise, steps=10, weight=w, mode="jacobian")
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
    assert tx._compiled_spec.cache_info().currsize == before + 1


# ------------------------------------------------------------------------------------------- evaluation report


def test_evaluation_report_rows_hold_the_spec_fields_label_and_cost():
    pytest.importorskip("ogbench")
    from qgf_lite.ogbench import evaluation

    specs = specs_from_names(["bc", "qgf", "qgf_best_of_n", "gradient_step"], [0.01, 0.1], n=4, step_size=0.05)
    episodes = [
        {"episode": 0, "success": True, "return": -10.0, "length": 10},
        {"episode": 1, "success": False, "return": -200.0, "length": 200},
    ]
    rows = [evaluation.summarise(spec, episodes, 1.0) for spec in specs]
    for spec, row in zip(specs, rows):
        assert {k: row[k] for k in spec.to_dict()} == spec.to_dict()
        assert row["label"] == spec.label and row["cost"] == spec.cost
        assert row["successes"] == 1 and row["episodes"] == 2
    assert rows[-1]["method"] == "gradient_step" and rows[-1]["step_size"] == 0.05 and rows[-1]["weight"] == 0.0
    report = {"env_name": "cube-single-play-singletask-task2-v0", "episodes_per_setting": 2, "results": rows}
    report = json.loads(json.dumps(report))  # what eval.json holds
    table = evaluation.results_table(report)
    assert "| QGF w=0.01 + best-of-4 | 2 | 50 [" in table and table.splitlines()[2].endswith("| 10 |")
    names = [trace.name for trace in evaluation.success_figure(report).data]
    assert names == ["BC", "QGF", "QGF + best-of-4", "gradient-step a=0.05 x3"]


def test_cfgrl_spec_runs_the_conditioned_network_through_the_cfgrl_sampler():
    from qgf_lite.cfgrl import cfgrl_sample

    def conditioned(obs, a, t, label):  # a toy label-conditioned velocity: the label shifts the target
        return (jnp.asarray(label, jnp.float32)[..., None] * 0.5 - a) * (1.0 + obs[:, :1])

    spec = S("cfgrl", weight=0.7, steps=5)
    assert (spec.label, spec.cost, spec.network) == ("CFG-RL w=0.7", 10, "cfgrl")  # 2 velocity calls x 5 steps
    noise = jax.random.normal(jax.random.PRNGKey(3), (BATCH, DIM))
    want = cfgrl_sample(conditioned, OBS, noise, steps=5, weight=0.7)
    np.testing.assert_array_equal(np.asarray(spec.sample(conditioned, None, OBS, noise)), np.asarray(want))
    assert [x.label for x in specs_from_names(["cfgrl"], [0.0, 1.0])] == ["CFG-RL w=1"]


def test_toy_draw_samples_runs_cfgrl_from_a_cfgrl_trained_setup():
    from qgf_lite.cfgrl import cfgrl_sample
    from qgf_lite.toy import experiments as tx
    from qgf_lite.training import cfgrl_velocity_fn

    config = tx.toy_config(cfgrl=True, actor_hidden=(16,), critic_hidden=(16,), value_hidden=(8,))
    setup = tx.train_toy_bandit("ring", num_steps=20, num_samples=256, config=config, cache_dir=None, progress=False)
    got = tx.draw_samples(setup, S("cfgrl", weight=1.0), jax.random.PRNGKey(4), 64)
    noise = S("cfgrl").draw_noise(jax.random.PRNGKey(4), 64, 2)
    want = cfgrl_sample(cfgrl_velocity_fn(setup.config, setup.state.cfgrl_params), None, noise, steps=10, weight=1.0)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
    plain = tx.train_toy_bandit(
        "ring", num_steps=20, num_samples=256, config=tx.toy_config(actor_hidden=(16,)), cache_dir=None, progress=False
    )
    with pytest.raises(ValueError, match="train with QGFConfig\\(cfgrl=True\\)"):
        tx.draw_samples(plain, S("cfgrl", weight=1.0), 0, 8)
