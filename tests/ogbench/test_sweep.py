"""`qgf-lite sweep`: domains x tasks x seeds -> train -> evaluate, through submitit's local executor.

One tiny sweep (cube-single, 2 tasks x 2 seeds x 3 methods, a generated 2-episode dataset, 30 training steps,
one evaluation episode per setting) runs once for the module with the local executor (jobs in their own
processes, as on a cluster); the other tests reuse its folder with the in-process debug executor.
"""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from qgf_lite.ogbench import (  # noqa: E402
    cli,  # noqa: E402
    evaluation,
    sweep,
)

# gymnasium warns each time OGBench builds a space from float64 bounds (jobs of the debug executor run here); harmless.
pytestmark = pytest.mark.filterwarnings("ignore:.*precision lowered:UserWarning")

TINY = dict(
    domains=["cube-single"],
    tasks=[1, 2],
    seeds=[0, 1],
    generate_episodes=2,
    generate_episode_length=201,
    generate_val_episodes=1,
    train={"steps": 30, "hidden": 16, "layers": 1, "batch_size": 16, "log_every": 10, "checkpoint_every": 30},
    eval={"methods": ["bc", "qgf", "best_of_n"], "weights": [0.05], "n": 2, "episodes": 1, "num_envs": 1},
)


def tiny(**changes):
    """TINY with ``changes``; ``eval_changes`` go into its [eval] table."""
    eval_changes = changes.pop("eval_changes", {})
    return {**TINY, **changes, "eval": {**TINY["eval"], **eval_changes}}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    config = sweep.SweepConfig(**TINY, dataset_dir=str(root / "data"), out=str(root / "out"), executor="local")
    lines = []
    summary = sweep.run_sweep(config, progress=False, log=lines.append)
    return config, summary, lines


def test_local_sweep_trains_and_evaluates_every_task_seed_and_method(finished):
    config, summary, lines = finished
    assert lines == ["sweep: 2 jobs submitted (local), 0 already finished"]
    assert summary["failed"] == []
    assert [(t["domain"], t["task"]) for t in summary["tasks"]] == [("cube-single", 1), ("cube-single", 2)]
    for task in summary["tasks"]:
        assert task["env_name"] == f"cube-single-play-singletask-task{task['task']}-v0"
        assert len(task["results"]) == 3  # bc, qgf at one weight, best-of-2
        for row in task["results"].values():
            assert len(row["seed_rates"]) == 2 and row["episodes"] == 2  # both seeds evaluated
            assert 0.0 <= row["success_ci95"][0] <= row["success_rate"] <= row["success_ci95"][1] <= 1.0
    assert len(summary["mean_over_tasks"]) == 3 and all(r["tasks"] == 2 for r in summary["mean_over_tasks"])
    stored = json.loads((sweep.Path(config.out) / "results.json").read_text())
    assert stored["tasks"] == summary["tasks"]
    table = (sweep.Path(config.out) / "results.md").read_text()
    assert "| cube-single | 1 |" in table and "| cube-single | mean of 2 |" in table
    # Both seeds trained in one job: one checkpoint per task holds both.
    for task in (1, 2):
        assert (sweep.Path(config.out) / "cube-single" / f"task{task}" / "train" / "checkpoint.msgpack").is_file()


def test_rerun_skips_finished_jobs_and_gives_the_same_table(finished):
    config, summary, _ = finished
    lines = []
    again = sweep.run_sweep(
        sweep.SweepConfig(**{**TINY, "dataset_dir": config.dataset_dir, "out": config.out, "executor": "debug"}),
        progress=False,
        log=lines.append,
    )
    assert lines == ["sweep: 0 jobs submitted (debug), 2 already finished"]
    assert again["tasks"] == summary["tasks"]


def test_failed_jobs_are_marked_with_their_reason_and_the_others_finish(finished, tmp_path):
    config, _, _ = finished
    # cube-double has no dataset and generation is off; cube-single's tasks are finished already.
    mixed = sweep.SweepConfig(
        **{
            **TINY,
            "domains": ["cube-single", "cube-double"],
            "generate_episodes": 0,
            "dataset_dir": config.dataset_dir,
            "out": config.out,
            "executor": "debug",
        }
    )
    summary = sweep.run_sweep(mixed, progress=False, log=lambda _: None)
    assert len(summary["tasks"]) == 2
    assert [(f["domain"], f["task"]) for f in summary["failed"]] == [("cube-double", 1), ("cube-double", 2)]
    assert all("no dataset at" in f["reason"] and "generate_episodes" in f["reason"] for f in summary["failed"])
    assert "| cube-double | 1 | FAILED |" in sweep.results_markdown(summary)


def test_a_checkpoint_of_another_architecture_fails_naming_the_field(finished):
    config, _, _ = finished
    # (local, not debug: submitit's debug executor opens pdb on a failing job)
    wider = sweep.SweepConfig(
        **tiny(
            train={**TINY["train"], "hidden": 32},
            tasks=[1],
            dataset_dir=config.dataset_dir,
            out=config.out,
            executor="local",
        )
    )
    summary = sweep.run_sweep(wider, progress=False, log=lambda _: None)
    assert summary["tasks"] == [] and len(summary["failed"]) == 1
    assert "hidden" in summary["failed"][0]["reason"], summary["failed"][0]["reason"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"domains": ["cube-singel"]}, r"unknown domains \['cube-singel'\]; valid: \['cube-single'"),
        ({"tasks": [1, 7]}, r"unknown tasks \[7\]; valid: \[1, 2, 3, 4, 5\]"),
        ({"eval_changes": {"methods": ["bc", "qfg"]}}, r"sweep config \[eval\]: Unknown method\(s\) \['qfg'\]"),
        ({"eval_changes": {"methods": ["qgf"], "weights": []}}, r"guided methods need at least one weight > 0"),
        ({"eval_changes": {"methods": ["bc"], "weights": []}}, r"`\[eval\] weights` must be a non-empty list"),
        ({"eval_changes": {"weights": [0.1, float("nan")]}}, r"weights must be finite"),
        ({"seeds": [0, 0]}, r"`seeds` must be distinct"),
        ({"executor": "kubernetes"}, r"unknown executor \['kubernetes'\]; valid: \['local', 'slurm', 'debug'\]"),
        ({"train": {"expectlie": 0.7}}, r"\[train\]: unknown key\(s\) \['expectlie'\] \(did you mean 'expectile'"),
        ({"train": {"expectile": 1.5}}, r"\[train\]: `expectile` must be in \(0, 1\)"),
        ({"train": {"steps": 0}}, r"\[train\]: `steps` must be >= 1"),
        ({"eval_changes": {"episdoes": 3}}, r"\[eval\]: unknown key\(s\) \['episdoes'\] \(did you mean 'episodes'"),
        ({"eval_changes": {"critic": "ema"}}, r"\[eval\]: `critic` must be one of 'target', 'online', got 'ema'"),
        ({"selection_episodes": 5, "selection_seed": 0}, r"`selection_seed` \(0\) equals `\[eval\] seed`"),
        ({"selection_episodes": -1}, r"`selection_episodes` must be an integer >= 0"),
        (
            {"eval_changes": {"methods": ["bc", "cfgrl"]}},
            r"method `cfgrl` samples from a network the run does not train; add `cfgrl = true`",
        ),
        ({"eval_changes": {"methods": ["fql"]}}, r"add `fql = true` under \[train\]"),
        ({"method_weights": {"noisy": [0.1]}}, r"`method_weights` names 'noisy', which is not in `methods`"),
        ({"method_weights": {"qgf": []}}, r"`method_weights.qgf` must be a non-empty list of numbers > 0"),
        ({"method_weights": {"qgf": [0.0]}}, r"`method_weights.qgf` must be a non-empty list of numbers > 0"),
        ({"method_weights": {"best_of_n": [2.0]}}, r"method 'best_of_n' takes no guidance weight"),
        ({"method_weights": [1.0]}, r"`method_weights` must map method names to weight lists"),
    ],
)
def test_bad_configs_name_the_entry_before_any_job_starts(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        config = sweep.SweepConfig(**tiny(**change, out=str(tmp_path / "out")))
        sweep.run_sweep(config, progress=False, log=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_wrong_types_in_the_tables_are_named():
    with pytest.raises(TypeError, match=r"sweep config \[eval\]: `episodes` must be an integer >= 1, got '3'"):
        sweep.SweepConfig(**tiny(eval_changes={"episodes": "3"}))
    with pytest.raises(TypeError, match=r"sweep config \[eval\]: `methods` must be a list of names, e.g. \['qgf'\]"):
        sweep.SweepConfig(**tiny(eval_changes={"methods": "qgf"}))
    with pytest.raises(TypeError, match=r"sweep config \[train\]: it must be a table"):
        sweep.SweepConfig(**tiny(train=[("steps", 10)]))


def test_method_weights_replace_the_shared_weights_for_their_method_only():
    config = sweep.validate(
        sweep.SweepConfig(
            **tiny(
                eval_changes={"methods": ["bc", "qgf", "cfgrl", "best_of_n"], "weights": [0.01, 0.1]},
                method_weights={"cfgrl": [1.0, 3.0]},
                train={**TINY["train"], "cfgrl": True},
            )
        )
    )
    assert [s.label for s in config.specs()] == [
        "BC",
        "QGF w=0.01",
        "QGF w=0.1",
        "CFG-RL w=1",
        "CFG-RL w=3",
        "best-of-2",
    ]


def test_config_files_and_the_cli(tmp_path, capsys):
    path = tmp_path / "sweep.toml"
    path.write_text(
        'domains = ["cube-single"]\ntasks = [2]\n[train]\nsteps = 10\nhidden = 8\n'
        '[eval]\nmethods = ["bc"]\ncritic = "online"\n'
    )
    config = sweep.load_config(path, executor="debug", out=str(tmp_path / "o"))
    assert (config.tasks, config.eval.methods, config.eval.critic, config.executor) == ([2], ("bc",), "online", "debug")
    assert config.train == sweep.TrainSettings(steps=10, options={"hidden": 8})
    assert config.train.to_dict() == {"steps": 10, "checkpoint_every": 10_000, "log_every": 1_000, "hidden": 8}
    # [eval] left out keeps EvalConfig's defaults, but the sweep's three weights
    assert config.eval == evaluation.EvalConfig(methods=("bc",), weights=(0.01, 0.03, 0.1), critic="online")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"domains": ["cube-single"], "task": [1]}))
    with pytest.raises(ValueError, match=r"unknown sweep config field\(s\) \['task'\] \(did you mean 'tasks'"):
        sweep.load_config(bad)
    assert cli.main(["sweep", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: unknown sweep config field(s) ['task']" in err and "valid: domains, tasks" in err
    typo = tmp_path / "typo.toml"
    typo.write_text('domains = ["cube-single"]\n[eval]\nmethods = ["bc", "qgf"]\nepisodes = 5\nnum_env = 2\n')
    assert cli.main(["sweep", str(typo)]) == 2
    err = capsys.readouterr().err
    assert "sweep config [eval]: unknown key(s) ['num_env'] (did you mean 'num_envs' for 'num_env'?)" in err
    assert "Traceback" not in err
    parser = cli.build_parser()
    args = parser.parse_args(["sweep", str(path), "--executor", "slurm"])
    assert args.executor == "slurm"


def _row(method, weight, successes, return_mean, mode="qgf"):
    from qgf_lite.samplers import SamplerSpec

    spec = SamplerSpec(method, mode=mode, weight=weight) if weight else SamplerSpec(method)
    return {
        "label": spec.label,
        **spec.to_dict(),
        "cost": spec.cost,
        "successes": successes,
        "episodes": 4,
        "success_rate": successes / 4,
        "return_mean": return_mean,
    }


def test_choose_weights_pools_seeds_then_breaks_ties_by_return_then_by_the_smaller_weight():
    seed0 = {
        "results": [
            _row("bc", 0, 1, -90),
            _row("guided", 0.1, 3, -50),
            _row("guided", 0.3, 1, -80),
            _row("guided", 0.1, 1, -70, mode="noisy"),
            _row("guided", 0.3, 1, -70, mode="noisy"),
        ]
    }
    seed1 = {
        "results": [
            _row("bc", 0, 0, -95),
            _row("guided", 0.1, 0, -90),
            _row("guided", 0.3, 3, -40),
            _row("guided", 0.1, 2, -60, mode="noisy"),
            _row("guided", 0.3, 2, -60, mode="noisy"),
        ]
    }
    # QGF: 3 successes at either weight over both seeds; w=0.3 has the higher mean return (-60 vs -70).
    # noisy-gradient: 3 successes and the same return at both weights: the smaller weight.
    assert sweep.choose_weights([seed0, seed1]) == {"QGF": 0.3, "noisy-gradient": 0.1}
    kept = sweep.chosen_specs([seed0, seed1], {"QGF": 0.3, "noisy-gradient": 0.1})
    assert [s.label for s in kept] == ["BC", "QGF w=0.3", "noisy-gradient w=0.1"]


def test_weights_chosen_on_selection_start_states_are_reported_on_fresh_ones(finished, tmp_path):
    config, _, _ = finished
    chosen_config = sweep.SweepConfig(
        **tiny(
            eval_changes={"methods": ["bc", "qgf"], "weights": [0.3]},
            tasks=[1],
            method_weights={"qgf": [0.05, 0.5]},  # replaces [0.3] for qgf
            selection_episodes=1,
            selection_seed=3,
            dataset_dir=config.dataset_dir,
            out=str(tmp_path / "out"),
            executor="local",
        )
    )
    summary = sweep.run_sweep(chosen_config, progress=False, log=lambda _: None)
    assert summary["failed"] == []
    (task,) = summary["tasks"]
    weight = task["chosen_weights"]["QGF"]
    assert weight in (0.05, 0.5)
    assert list(task["results"]) == ["BC", f"QGF w={weight:g}"]  # only the chosen weight is reported
    job = sweep.Path(chosen_config.out) / "cube-single" / "task1"
    for seed in (0, 1):  # the two stages saw different start states
        selection = json.loads((job / f"select-seed{seed}" / "eval.json").read_text())
        final = json.loads((job / f"eval-seed{seed}" / "eval.json").read_text())
        assert (selection["seed"], final["seed"]) == (3, 0)
        assert len(selection["results"]) == 3 and len(final["results"]) == 2
    assert {row["label"] for row in summary["mean_over_tasks"]} == {"BC", "QGF"}  # one row per method family
    table = sweep.results_markdown(summary)
    assert "Weights chosen per task on 1 episodes per seed" in table and f"| QGF w={weight:g} | 2 |" in table
    assert "| cube-single | mean of 1 | QGF | | " in table and "(one task: no interval)" in table


def test_published_numbers_are_printed_as_a_labelled_reference_for_their_domain(finished):
    config, summary, _ = finished
    assert summary["published"] == []  # cube-single has none
    from qgf_lite.ogbench.published import published_reference

    with_reference = {**summary, "published": [published_reference("cube-double")]}
    table = sweep.results_markdown(with_reference)
    assert "Published reference for cube-double (1M steps, 4 x 512 networks" in table
    assert "| FQL | 45.7 |" in table and "not comparable in scale" in table
    assert published_reference("cube-single") is None
    # scene's published runs used the sparse-reward variant, which a sweep here does not: the label says so
    assert "sparse-reward variant" in published_reference("scene")["scale"]
    assert "sparse" not in published_reference("cube-double")["scale"]


def test_the_committed_and_documented_sweep_configs_load(tmp_path):
    """benchmarks/sweeps/*.toml (the commands behind docs/results.md) and README's example stay valid configs."""
    import re
    import warnings
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    paths = sorted((root / "benchmarks" / "sweeps").glob("*.toml"))
    assert len(paths) >= 3, paths
    for path in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # written in the [eval] layout, so no 0.2-spelling warning
            config = sweep.load_config(path)
        assert config.specs(), path
    (example,) = re.findall(
        r"`qgf-lite sweep sweep.toml`, with a config such as\n\n```toml\n(.*?)```",
        (root / "README.md").read_text(),
        re.S,
    )
    readme = tmp_path / "readme_sweep.toml"
    readme.write_text(example)
    config = sweep.load_config(readme)
    assert "CFG-RL w=2" in [s.label for s in config.specs()]


def test_the_0_2_layout_loads_into_eval_with_a_warning(tmp_path):
    """0.2 wrote the evaluation settings at the top level; such a file loads into the same [eval] as the new one."""
    old = tmp_path / "old.toml"
    old.write_text(
        'domains = ["cube-single"]\nmethods = ["bc", "noisy"]\nweights = [0.2]\nn = 3\nepisodes = 7\n'
        "num_envs = 2\neval_workers = 1\neval_seed = 4\n[train]\nsteps = 10\n"
    )
    new = tmp_path / "new.toml"
    new.write_text(
        'domains = ["cube-single"]\n[train]\nsteps = 10\n[eval]\nmethods = ["bc", "noisy"]\n'
        "weights = [0.2]\nn = 3\nepisodes = 7\nnum_envs = 2\nworkers = 1\nseed = 4\n"
    )
    with pytest.warns(FutureWarning, match=r"\['episodes', 'eval_seed', 'eval_workers', .*under \[eval\]"):
        loaded = sweep.load_config(old)
    assert loaded == sweep.load_config(new) and loaded.eval.workers == 1 and loaded.eval.seed == 4
    assert loaded.fingerprint() == sweep.load_config(new).fingerprint()
    both = tmp_path / "both.toml"
    both.write_text('domains = ["cube-single"]\nepisodes = 7\n[eval]\nepisodes = 8\n')
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match=r"\['episodes'\] given both at the top level"):
        sweep.load_config(both)


def test_eval_settings_reach_every_evaluation_of_the_sweep(monkeypatch, tmp_path):
    """task_job hands [eval]'s settings to evaluate, with each stage's methods, episodes, start states and seed."""
    from qgf_lite.ogbench import train as train_module

    calls = []
    config = sweep.SweepConfig(
        **tiny(
            eval_changes={"critic": "online", "step_size": 0.2, "methods": ["bc", "qgf"]},
            tasks=[1],
            out=str(tmp_path / "out"),
        )
    )
    result = train_module.TrainResult("run", "ck", "log", 0, 30, [], 0.0, 0.0)
    monkeypatch.setattr(train_module, "train", lambda *a, **k: calls.append(("train", a, k)) or result)
    monkeypatch.setattr(
        "qgf_lite.checkpoint.load_checkpoint", lambda path: (type("C", (), {"flow_steps": 6})(), None, {})
    )
    monkeypatch.setattr(
        evaluation,
        "evaluate",
        lambda path, env, settings, **kw: calls.append(("eval", settings, kw)) or {"results": []},
    )
    sweep.task_job(config, "cube-single", 1)
    (_, args, kwargs), *evals = calls
    assert kwargs["steps"] == 30 and kwargs["log_every"] == 10 and kwargs["hidden"] == 16 and "eval" not in kwargs
    assert [settings.seed_index for _, settings, _ in evals] == [0, 1]  # one evaluation per trained seed
    for _, settings, kw in evals:
        assert (settings.critic, settings.step_size, settings.episodes, settings.seed) == ("online", 0.2, 1, 0)
        assert [s.label for s in settings.methods] == ["BC", "QGF w=0.05"] and settings.methods[1].steps == 6
        assert kw == {
            "out": str(tmp_path / "out" / "cube-single" / "task1" / f"eval-seed{settings.seed_index}"),
            "progress": False,
        }


def test_the_train_table_enables_a_learner_by_flag_or_by_a_learners_table():
    for train in ({"fql": True}, {"learners": {"fql": {"alpha": 3.0}}}):
        config = sweep.validate(sweep.SweepConfig(**tiny(train=train, eval_changes={"methods": ["bc", "fql"]})))
        assert config.train.trains("fql") and not config.train.trains("cfgrl")
        assert [s.label for s in config.specs()] == ["BC", "FQL"]
