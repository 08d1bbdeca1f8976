"""End to end on a tiny cube-single dataset: generate -> OGBench loader -> train (resumable) -> eval, and bad input.

Also: which critic guides evaluation (target by default, --critic online) and the train flags made from QGFConfig.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from qgf_lite.checkpoint import load_checkpoint  # noqa: E402
from qgf_lite.ogbench import cli, evaluation  # noqa: E402
from qgf_lite.ogbench.train import TrainingDiverged, read_log, train  # noqa: E402
from qgf_lite.samplers import SamplerSpec, specs_from_names  # noqa: E402

# gymnasium warns each time OGBench builds a space from float64 bounds; harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:.*precision lowered:UserWarning")

ENV = "cube-single-play-singletask-task2-v0"
TINY = ["--hidden", "32", "--layers", "2", "--batch-size", "32", "--horizon", "5"]
TINY_KW = dict(hidden=32, layers=2, batch_size=32, horizon=5)


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "cube-single-play-v0.npz"
    rc = cli.main(
        [
            "generate",
            "cube-single",
            "--episodes",
            "3",
            "--workers",
            "1",
            "--episode-length",
            "101",
            "--out",
            str(path),
            "--no-progress",
        ]
    )
    assert rc == 0
    return path


@pytest.fixture(scope="module")
def trained_run(dataset_path, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    rc = cli.main(
        [
            "train",
            ENV,
            "--dataset-path",
            str(dataset_path),
            "--steps",
            "200",
            *TINY,
            "--checkpoint-every",
            "100",
            "--log-every",
            "50",
            "--out",
            str(run),
            "--no-progress",
        ]
    )
    assert rc == 0
    return run


def test_train_writes_log_and_checkpoint_from_ogbench_data(trained_run, dataset_path):
    import ogbench

    # The dataset as OGBench's own loader sees it: what the run must have trained on.
    _, train_data, _ = ogbench.make_env_and_datasets(ENV, dataset_path=str(dataset_path))
    config, state, extra = load_checkpoint(trained_run / "checkpoint.msgpack")
    assert int(state.step) == 200 and extra["step"] == 200
    assert extra["env_name"] == ENV
    assert extra["num_transitions"] == len(train_data["actions"])  # 3 episodes x (101 - 1) transitions
    assert (config.obs_dim, config.action_dim) == (train_data["observations"].shape[1], 5)
    assert config.actor_hidden == (32, 32) and config.horizon == 5
    log = read_log(trained_run / "log.jsonl")
    assert [r["step"] for r in log] == [50, 100, 150, 200]
    for record in log:
        for key in ("policy_loss", "critic_loss", "value_loss"):
            assert math.isfinite(record[key])
    # Flow matching starts near E||a1 - a0||^2 (about the chunk dimension) and must fall quickly.
    assert log[-1]["policy_loss"] < log[0]["policy_loss"]
    # Single-task cube rewards are -1 until the cube is placed, 0 after: Q lies in [-1/(1-gamma), 0].
    assert -100.0 <= log[-1]["q_mean"] <= 1.0


def test_resume_after_crash_matches_uninterrupted_run(trained_run, dataset_path, tmp_path):
    class Crash(RuntimeError):
        pass

    def crash_at_150(state, record):
        if record["step"] == 150:
            raise Crash("simulated crash")

    common = dict(dataset_path=dataset_path, steps=200, checkpoint_every=100, log_every=50, progress=False, **TINY_KW)
    with pytest.raises(Crash):
        train(ENV, tmp_path, callback=crash_at_150, **common)
    _, _, extra = load_checkpoint(tmp_path / "checkpoint.msgpack")
    assert extra["step"] == 100  # the step-150 chunk was never checkpointed

    result = train(ENV, tmp_path, **common)
    assert (result.start_step, result.final_step) == (100, 200)
    assert [r["step"] for r in read_log(tmp_path / "log.jsonl")] == [50, 100, 150, 200]

    _, resumed, _ = load_checkpoint(tmp_path / "checkpoint.msgpack")
    _, reference, _ = load_checkpoint(trained_run / "checkpoint.msgpack")
    import jax

    for a, b in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(reference)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)

    # A finished run has nothing left to do.
    again = train(ENV, tmp_path, **common)
    assert (again.start_step, again.final_step, again.history) == (200, 200, [])


def test_eval_json_structure_and_ranges(trained_run, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = cli.main(
        [
            "eval",
            str(trained_run / "checkpoint.msgpack"),
            "--methods",
            "bc",
            "qgf",
            "--weights",
            "0.05",
            "0.2",
            "--episodes",
            "2",
            "--num-envs",
            "2",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    report = json.loads((out / "eval.json").read_text())
    assert (out / "success_vs_weight.html").stat().st_size > 0
    assert report["env_name"] == ENV and report["train_step"] == 200
    assert [r["label"] for r in report["results"]] == ["BC", "QGF w=0.05", "QGF w=0.2"]
    # Each row holds its sampler's fields, so the spec comes back from the report, with its compute.
    assert [SamplerSpec.from_dict(r) for r in report["results"]] == [
        SamplerSpec("bc"),
        SamplerSpec("guided", weight=0.05),
        SamplerSpec("guided", weight=0.2),
    ]
    assert [r["cost"] for r in report["results"]] == [10, 30, 30] and report["flow_steps"] == 10
    for r in report["results"]:
        assert r["episodes"] == 2 and len(r["per_episode"]) == 2
        assert r["successes"] == sum(e["success"] for e in r["per_episode"])
        assert 0.0 <= r["success_ci95"][0] <= r["success_rate"] <= r["success_ci95"][1] <= 1.0
        assert r["return_ci95"][0] <= r["return_mean"] <= r["return_ci95"][1]
        for e in r["per_episode"]:
            assert 1 <= e["length"] <= 200  # cube-single's time limit
            if not e["success"]:
                # reward is -1 on every step before the goal, so a failed episode returns -length
                assert e["return"] == -e["length"] and e["length"] == 200
    # Common random numbers: every setting starts its episodes from the same states.
    assert len({tuple(e["episode"] for e in r["per_episode"]) for r in report["results"]}) == 1
    assert "| BC | 2 |" in capsys.readouterr().out


def test_confidence_intervals_against_independent_formulas():
    from scipy import stats

    # Wilson at 0 successes has the closed form [0, z^2 / (n + z^2)].
    z = 1.959963984540054
    lo, hi = evaluation.wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(z * z / (10 + z * z))
    # ... and is symmetric: k successes <-> n - k failures.
    lo7, hi7 = evaluation.wilson_interval(7, 20)
    lo13, hi13 = evaluation.wilson_interval(13, 20)
    assert (lo7, hi7) == pytest.approx((1 - hi13, 1 - lo13))
    values = np.array([-200.0, -150.0, -37.0, -200.0, -90.0])
    mean, (rlo, rhi) = evaluation.mean_interval(values)
    ref = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert mean == pytest.approx(values.mean()) and (rlo, rhi) == pytest.approx(ref)


def test_settings_expand_methods_and_weights():
    specs = specs_from_names(["bc", "qgf", "best_of_n", "qgf_best_of_n"], [0.0, 0.01, 0.1], n=8)
    assert [s.label for s in specs] == [
        "BC",
        "QGF w=0.01",
        "QGF w=0.1",
        "best-of-8",
        "QGF w=0.01 + best-of-8",
        "QGF w=0.1 + best-of-8",
    ]
    with pytest.raises(ValueError, match="Unknown method"):
        specs_from_names(["qgf", "magic"], [0.1])
    with pytest.raises(ValueError, match=">= 0"):
        specs_from_names(["qgf"], [-0.1])


@pytest.mark.parametrize(
    "argv, phrase",
    [
        (["--methods", "magic"], "invalid choice: 'magic'"),
        (["--methods", "qgf", "--weights", "-0.1"], ">= 0"),
        (["--methods", "qgf", "--weights", "0"], "at least one weight > 0"),
        (["--methods", "best_of_n", "--n", "0"], "`n` must be >= 1"),
        (["--methods", "gradient_step", "--step-size", "-0.01"], "`step_size` must be finite and >= 0"),
        (["--methods", "gradient_step", "--ascent-steps", "-1"], "`ascent_steps` must be >= 0"),
        (["--methods", "qgf", "--steps", "0"], "`flow_steps` must be >= 1"),
    ],
)
def test_eval_rejects_bad_sampler_settings(trained_run, capsys, argv, phrase):
    try:
        rc = cli.main(["eval", str(trained_run / "checkpoint.msgpack"), "--episodes", "1", "--no-progress", *argv])
    except SystemExit as exit_info:  # argparse's own errors
        rc = exit_info.code
    err = capsys.readouterr().err
    assert rc == 2 and phrase in err and "Traceback" not in err


def test_eval_gradient_step_and_best_of_n_flags_reach_the_specs(trained_run, monkeypatch, capsys):
    calls = []
    spy_rollouts(monkeypatch, calls, play=True)
    rc = cli.main(
        [
            "eval",
            str(trained_run / "checkpoint.msgpack"),
            "--methods",
            "gradient_step",
            "noisy_best_of_n",
            "--weights",
            "0.1",
            "--step-size",
            "0.05",
            "--ascent-steps",
            "2",
            "--n",
            "3",
            "--steps",
            "4",
            "--episodes",
            "1",
            "--num-envs",
            "1",
            "--no-progress",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "| gradient-step a=0.05 x2 | 1 |" in out and "| noisy-gradient w=0.1 + best-of-3 | 1 |" in out
    # The step size never travels in the weight slot: gradient_step's weight is 0.
    assert [c["weight"] for c in calls] == [0.0, 0.1]


def test_eval_video_takes_the_best_weight_of_its_own_sampler_family(trained_run, monkeypatch, capsys):
    def rollout(pool, sampler, params, weight, config, episode_indices, seed, frames=None, on_episode=None):
        # Only w = 0.2 succeeds, whatever the sampler.
        return [{"episode": int(e), "success": weight == 0.2, "return": -1.0, "length": 1} for e in episode_indices]

    videos = []
    monkeypatch.setattr(evaluation, "run_episodes", rollout)
    monkeypatch.setattr(
        evaluation,
        "record_video",
        lambda *args, **kwargs: videos.append(args[3]) or {"setting": "?", "success": False, "path": "v.gif"},
    )
    rc = cli.main(
        [
            "eval",
            str(trained_run / "checkpoint.msgpack"),
            "--methods",
            "bc",
            "qgf",
            "noisy",
            "--weights",
            "0.05",
            "0.2",
            "--n",
            "3",
            "--step-size",
            "0.02",
            "--steps",
            "4",
            "--episodes",
            "1",
            "--num-envs",
            "1",
            "--video",
            "v.gif",
            "--video-method",
            "noisy",
            "--video-fps",
            "7",
            "--no-progress",
        ]
    )
    assert rc == 0
    [video] = videos  # the EvalConfig the video is recorded with
    assert (video.video_method, video.video_weight, video.n, video.step_size, video.flow_steps) == (
        "noisy",
        0.2,
        3,
        0.02,
        4,
    )
    assert video.video_fps == 7 and video.video_size == evaluation.EvalConfig().video_size
    # A weight given on the command line is the video's, whatever the evaluation found.
    videos.clear()
    assert (
        cli.main(
            [
                "eval",
                str(trained_run / "checkpoint.msgpack"),
                "--methods",
                "qgf",
                "--weights",
                "0.05",
                "0.2",
                "--episodes",
                "1",
                "--num-envs",
                "1",
                "--video",
                "v.gif",
                "--video-weight",
                "0.05",
                "--no-progress",
            ]
        )
        == 0
    )
    assert videos[0].video_weight == 0.05
    # The best weight is chosen among the rows of the video's own sampler family.
    rows = [
        evaluation.summarise(spec, [{"episode": 0, "success": ok, "return": -1.0, "length": 1}], 0.0)
        for spec, ok in [
            (SamplerSpec("guided", weight=0.05), False),
            (SamplerSpec("guided", weight=0.2), True),
            (SamplerSpec("guided", mode="noisy", weight=0.05), True),
            (SamplerSpec("guided", mode="noisy", weight=0.2), False),
        ]
    ]
    report = {"results": rows}
    assert cli.best_guided_weight(report, SamplerSpec("guided")) == 0.2
    assert cli.best_guided_weight(report, SamplerSpec("guided", mode="noisy", weight=0.3)) == 0.05
    assert cli.best_guided_weight(report, SamplerSpec("guided_best_of_n", n=4)) is None


# ------------------------------------------------------------------------------------ bad input


def run_cli(argv, capsys):
    rc = cli.main(argv)
    captured = capsys.readouterr()
    return rc, captured.err


def test_unknown_env_lists_valid_ids(dataset_path, tmp_path, capsys):
    rc, err = run_cli(
        [
            "train",
            "cube-singel-play-singletask-task2-v0",
            "--dataset-path",
            str(dataset_path),
            "--out",
            str(tmp_path),
            "--steps",
            "10",
        ],
        capsys,
    )
    assert rc == 2
    assert "Unknown OGBench" in err and "cube-single" in err and "puzzle-4x4" in err
    assert "Traceback" not in err


def test_unknown_task_id(dataset_path, tmp_path, capsys):
    rc, err = run_cli(
        [
            "train",
            "cube-single-play-singletask-task9-v0",
            "--dataset-path",
            str(dataset_path),
            "--out",
            str(tmp_path),
            "--steps",
            "10",
        ],
        capsys,
    )
    assert rc == 2 and "task number" in err


def test_goal_conditioned_name_has_no_rewards(dataset_path, tmp_path, capsys):
    rc, err = run_cli(
        ["train", "cube-single-play-v0", "--dataset-path", str(dataset_path), "--out", str(tmp_path), "--steps", "10"],
        capsys,
    )
    assert rc == 2 and "singletask" in err


def test_checkpoint_for_another_env_is_rejected(trained_run, capsys):
    rc, err = run_cli(
        [
            "eval",
            str(trained_run / "checkpoint.msgpack"),
            "--env",
            "cube-double-play-singletask-task2-v0",
            "--episodes",
            "1",
            "--no-progress",
        ],
        capsys,
    )
    assert rc == 2
    assert "obs_dim=28" in err and "obs_dim=37" in err


@pytest.mark.parametrize("content, phrase", [(b"", "empty"), (b"PK\x03\x04 definitely not a zip", "corrupted")])
def test_empty_or_corrupted_dataset_file(tmp_path, capsys, content, phrase):
    path = tmp_path / "cube-single-play-v0.npz"
    path.write_bytes(content)
    (tmp_path / "cube-single-play-v0-val.npz").write_bytes(content)
    rc, err = run_cli(
        ["train", ENV, "--dataset-path", str(path), "--out", str(tmp_path / "run"), "--steps", "10"], capsys
    )
    assert rc == 2 and phrase in err and str(path) in err


def test_missing_dataset_file_explains_how_to_generate(tmp_path, capsys):
    rc, err = run_cli(
        [
            "train",
            ENV,
            "--dataset-path",
            str(tmp_path / "cube-single-play-v0.npz"),
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "10",
        ],
        capsys,
    )
    assert rc == 2 and "qgf-lite generate" in err


def test_nan_losses_stop_training_and_keep_last_good_checkpoint(dataset_path, tmp_path, capsys):
    # An absurd learning rate sends the parameters to inf within a few steps.
    rc, err = run_cli(
        [
            "train",
            ENV,
            "--dataset-path",
            str(dataset_path),
            *TINY,
            "--lr",
            "1e30",
            "--steps",
            "200",
            "--checkpoint-every",
            "100",
            "--log-every",
            "50",
            "--out",
            str(tmp_path),
            "--no-progress",
        ],
        capsys,
    )
    assert rc == 2
    assert "became NaN/inf at step" in err and "last good checkpoint" in err
    _, state, extra = load_checkpoint(tmp_path / "checkpoint.msgpack")
    import jax

    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(state.policy_params))
    # The named step is the first one whose losses are not finite: replaying from the checkpoint agrees.
    step = int(err.split("at step ")[1].split(";")[0])
    assert 1 <= step <= 200
    with pytest.raises(TrainingDiverged, match=f"at step {step};"):
        train(
            ENV,
            tmp_path,
            dataset_path=dataset_path,
            steps=200,
            checkpoint_every=100,
            log_every=50,
            learning_rate=1e30,
            progress=False,
            **TINY_KW,
        )


def test_two_host_devices_train_like_one(trained_run, dataset_path, tmp_path):
    """Data parallel over 2 forced host devices gives the losses of the single-device run."""
    script = (
        "import jax, sys; assert jax.local_device_count() == 2, jax.devices()\n"
        "from qgf_lite.ogbench.cli import main\n"
        f"sys.exit(main(['train', {ENV!r}, '--dataset-path', {str(dataset_path)!r}, '--steps', '100', "
        f"*{TINY!r}, '--checkpoint-every', '100', '--log-every', '50', '--out', {str(tmp_path)!r}, '--no-progress']))\n"
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    two = read_log(tmp_path / "log.jsonl")
    one = read_log(trained_run / "log.jsonl")[:2]
    for a, b in zip(two, one):
        assert a["step"] == b["step"]
        for key in ("policy_loss", "critic_loss", "value_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-3)


def test_several_seeds_train_together_and_seed_zero_matches_single_run(trained_run, dataset_path, tmp_path):
    rc = cli.main(
        [
            "train",
            ENV,
            "--dataset-path",
            str(dataset_path),
            "--steps",
            "50",
            *TINY,
            "--seed",
            "0",
            "7",
            "--checkpoint-every",
            "50",
            "--log-every",
            "50",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert rc == 0
    _, state, extra = load_checkpoint(tmp_path / "checkpoint.msgpack")
    assert np.asarray(state.step).tolist() == [50, 50] and extra["seeds"] == [0, 7]
    [multi] = read_log(tmp_path / "log.jsonl")
    [single] = read_log(trained_run / "log.jsonl")[:1]
    # vmap over seeds must not change seed 0's trajectory; seed 7 draws other batches and weights.
    assert multi["policy_loss"][0] == pytest.approx(single["policy_loss"], rel=1e-4)
    assert multi["policy_loss"][1] != pytest.approx(single["policy_loss"], rel=1e-4)


@pytest.mark.filterwarnings("ignore:imageio-ffmpeg is not installed")
def test_record_video_writes_one_frame_per_step(trained_run, tmp_path):
    import importlib.util

    import imageio.v2 as imageio

    video = evaluation.record_video(
        trained_run / "checkpoint.msgpack", tmp_path / "rollout.mp4", method="qgf", weight=0.05, size=48, max_steps=6
    )
    has_mp4_writer = importlib.util.find_spec("imageio_ffmpeg") is not None
    assert video["path"].endswith(".mp4" if has_mp4_writer else ".gif")
    frames = imageio.mimread(video["path"])
    assert video["length"] == 6 and not video["success"]  # nothing can grasp and place the cube in 6 steps
    assert len(frames) == video["frames"] == 7  # the reset frame plus one per step
    assert frames[0].shape[:2] == (48, 48)


def test_chunk_sampler_at_weight_zero_is_behaviour_cloning(trained_run):
    import jax

    config, state, _ = load_checkpoint(trained_run / "checkpoint.msgpack")
    obs = jax.random.normal(jax.random.PRNGKey(3), (3, config.obs_dim))
    keys = evaluation.episode_chunk_keys(0, [0, 1, 2], 4)
    args = (state.policy_params, state.critic_params, obs, keys)
    bc = evaluation.compiled_chunk_sampler(config, SamplerSpec("bc"))(*args, 0.0)
    qgf0 = evaluation.compiled_chunk_sampler(config, SamplerSpec("guided"))(*args, 0.0)
    qgf = evaluation.compiled_chunk_sampler(config, SamplerSpec("guided", weight=1.0))(*args, 1.0)
    # The weight is traced: one compiled sampler serves the whole sweep.
    assert evaluation.compiled_chunk_sampler(config, SamplerSpec("guided", weight=1.0)) is (
        evaluation.compiled_chunk_sampler(config, SamplerSpec("guided", weight=0.3))
    )
    assert bc.shape == (3, config.chunk_dim) and np.all(np.abs(np.asarray(bc)) <= 1.0)
    np.testing.assert_allclose(np.asarray(qgf0), np.asarray(bc), atol=1e-6)  # w = 0 is BC, same noise
    assert not np.allclose(np.asarray(qgf), np.asarray(bc), atol=1e-3)  # and the weight is really applied


# ------------------------------------------------------------------------------------ which critic guides


@pytest.fixture(scope="module")
def two_critic_checkpoint(trained_run, tmp_path_factory):
    """The trained checkpoint with a target critic from another initialisation, so the two critics guide apart."""
    import jax

    from qgf_lite.checkpoint import save_checkpoint
    from qgf_lite.training import init_train_state

    config, state, extra = load_checkpoint(trained_run / "checkpoint.msgpack")
    other = init_train_state(config, jax.random.PRNGKey(123)).critic_params
    path = tmp_path_factory.mktemp("two_critics") / "checkpoint.msgpack"
    save_checkpoint(path, config, state.replace(target_critic_params=other), extra)
    return path


class Recorded(Exception):
    """Raised by the rollout spy once it has what the test needs, so no episode is played."""


def spy_rollouts(monkeypatch, calls, play=False):
    """Replace run_episodes: record the params the sampler got and the chunks it samples for fixed obs and keys."""
    import jax

    def rollout(pool, sampler, params, weight, config, episode_indices, seed, frames=None, on_episode=None):
        obs = jax.random.normal(jax.random.PRNGKey(3), (2, config.obs_dim))
        keys = evaluation.episode_chunk_keys(seed, [0, 1], 0)
        calls.append(
            {
                "params": params,
                "chunks": np.asarray(sampler(*params, obs, keys, weight)),
                "obs": obs,
                "keys": keys,
                "weight": weight,
            }
        )
        if not play:
            raise Recorded
        return [{"episode": int(e), "success": False, "return": -1.0, "length": 1} for e in episode_indices]

    monkeypatch.setattr(evaluation, "run_episodes", rollout)


def assert_sampled_with(call, checkpoint, which):
    """The recorded chunks are those of the sampler called directly with the `which` critic, not the other one."""
    import jax

    config, state, _ = load_checkpoint(checkpoint)
    wanted, other = (
        (state.target_critic_params, state.critic_params)
        if which == "target"
        else (state.critic_params, state.target_critic_params)
    )
    sampler = evaluation.compiled_chunk_sampler(config, SamplerSpec("guided", steps=config.flow_steps))
    direct = np.asarray(sampler(state.policy_params, wanted, call["obs"], call["keys"], call["weight"]))
    not_this = np.asarray(sampler(state.policy_params, other, call["obs"], call["keys"], call["weight"]))
    np.testing.assert_allclose(call["chunks"], direct, atol=1e-6)
    assert np.abs(call["chunks"] - not_this).max() > 1e-3
    for got, want in zip(jax.tree_util.tree_leaves(call["params"][1]), jax.tree_util.tree_leaves(wanted)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_evaluate_guides_with_the_target_critic_by_default(two_critic_checkpoint, monkeypatch):
    calls = []
    spy_rollouts(monkeypatch, calls, play=True)
    report = evaluation.evaluate(
        two_critic_checkpoint, methods=["qgf"], weights=[1.0], episodes=1, num_envs=1, progress=False
    )
    assert report["critic"] == "target" and len(calls) == 1
    assert_sampled_with(calls[0], two_critic_checkpoint, "target")


def test_eval_cli_critic_online_guides_with_the_online_critic_and_says_so(
    two_critic_checkpoint, monkeypatch, tmp_path, capsys
):
    calls = []
    spy_rollouts(monkeypatch, calls, play=True)
    rc = cli.main(
        [
            "eval",
            str(two_critic_checkpoint),
            "--methods",
            "qgf",
            "--weights",
            "1.0",
            "--episodes",
            "1",
            "--num-envs",
            "1",
            "--critic",
            "online",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert rc == 0
    assert json.loads((tmp_path / "eval.json").read_text())["critic"] == "online"
    assert_sampled_with(calls[0], two_critic_checkpoint, "online")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["eval", str(two_critic_checkpoint), "--critic", "ema"])
    assert exit_info.value.code == 2
    assert "argument --critic: invalid choice: 'ema' (choose from 'target', 'online')" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["target", "online"])
def test_record_video_guides_with_the_chosen_critic(two_critic_checkpoint, monkeypatch, tmp_path, which):
    calls = []
    spy_rollouts(monkeypatch, calls)
    kwargs = {} if which == "target" else {"critic": "online"}
    with pytest.raises(Recorded):
        evaluation.record_video(
            two_critic_checkpoint, tmp_path / "v.gif", method="qgf", weight=1.0, size=48, max_steps=5, **kwargs
        )
    assert_sampled_with(calls[0], two_critic_checkpoint, which)
    with pytest.raises(ValueError, match="`critic` must be one of 'target', 'online'"):
        evaluation.record_video(two_critic_checkpoint, tmp_path / "v.gif", critic="Target")


# ------------------------------------------------------------------------------------ train flags from QGFConfig


def train_parser():
    import argparse

    parser = argparse.ArgumentParser(prog="qgf-lite train")
    cli.add_train_arguments(parser)
    return parser


def test_every_config_field_is_a_train_flag():
    import dataclasses

    from qgf_lite.learners import get_learner, learner_names
    from qgf_lite.training import QGFConfig

    flags = train_parser()._option_string_actions
    for field in dataclasses.fields(QGFConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.name in ("obs_dim", "action_dim", "learners"):  # the dataset sets them; learners: below
            assert flag not in flags
        else:
            assert flag in flags and flags[flag].dest == field.name, flag
            assert field.metadata["help"] in flags[flag].help
    # Every learner: --<learner> enables it, --<learner>-<option> per field of its options dataclass.
    for name in learner_names():
        assert f"--{name}" in flags and f"--no-{name}" in flags
        for field in dataclasses.fields(get_learner(name).options):
            flag = f"--{name}-{field.name.replace('_', '-')}"
            assert flag in flags and flags[flag].dest == f"{name}_{field.name}", flag
            assert field.metadata["help"] in flags[flag].help
    # The spellings README and docs/results.md use keep working.
    for flag in (
        "--hidden",
        "--layers",
        "--horizon",
        "--batch-size",
        "--discount",
        "--lr",
        "--steps",
        "--seed",
        "--out",
        "--dataset-path",
        "--dataset-dir",
        "--checkpoint-every",
        "--log-every",
        "--init-from",
    ):
        assert flag in flags, flag


def test_config_flags_parse_into_the_config():
    from qgf_lite.ogbench.train import make_config
    from qgf_lite.training import QGFConfig

    args = train_parser().parse_args(
        [
            ENV,
            "--out",
            "run",
            "--expectile",
            "0.7",
            "--num-critics",
            "3",
            "--no-time-grid",
            "--no-layer-norm",
            "--target-update-rate",
            "0.01",
            "--flow-steps",
            "4",
            "--hidden",
            "32",
            "--layers",
            "2",
            "--critic-hidden",
            "64",
            "64",
            "64",
            "--lr",
            "1e-3",
            "--batch-size",
            "64",
            "--time-emb-dim",
            "8",
        ]
    )
    config = make_config(28, 5, **cli.config_overrides(args))
    assert (config.expectile, config.num_critics, config.time_grid, config.layer_norm) == (0.7, 3, None, False)
    assert (config.target_update_rate, config.flow_steps, config.learning_rate) == (0.01, 4, 1e-3)
    assert (config.batch_size, config.time_emb_dim, config.horizon) == (64, 8, 5)
    # --hidden/--layers size all three networks; an explicit --critic-hidden wins for the critic.
    assert config.actor_hidden == config.value_hidden == (32, 32) and config.critic_hidden == (64, 64, 64)
    # No flags: no overrides, so the defaults are QGFConfig's own.
    defaults = cli.config_overrides(train_parser().parse_args([ENV, "--out", "run"]))
    assert defaults == {} and make_config(28, 5) == QGFConfig(obs_dim=28, action_dim=5)
    assert train_parser().parse_args([ENV, "--out", "run", "--time-grid", "4", "--layer-norm"]).time_grid == 4


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num-critics", "abc"], "argument --num-critics: invalid int value: 'abc'"),
        (["--expectile", "high"], "argument --expectile: invalid float value: 'high'"),
        (["--actor-hidden"], "argument --actor-hidden: expected at least one argument"),
        (["--time-grid", "4", "--no-time-grid"], "argument --no-time-grid: not allowed with argument --time-grid"),
        (["--expectiles", "0.7"], "unrecognized arguments: --expectiles"),
        (["--obs-dim", "3"], "unrecognized arguments: --obs-dim"),
    ],
)
def test_bad_config_flags_give_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", ENV, "--out", "run", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_train_passes_config_flags_and_checks_values_before_loading(dataset_path, tmp_path, monkeypatch, capsys):
    from qgf_lite.ogbench import train as train_module

    seen = {}

    def fake_train_on_dataset(config, dataset, run_dir, **kwargs):
        seen["config"] = config
        return train_module.TrainResult(str(run_dir), "ck", "log", 10, 10, [], 0.0, 0.0)

    monkeypatch.setattr(train_module, "train_on_dataset", fake_train_on_dataset)
    rc = cli.main(
        [
            "train",
            ENV,
            "--dataset-path",
            str(dataset_path),
            "--out",
            str(tmp_path),
            "--steps",
            "10",
            *TINY,
            "--expectile",
            "0.7",
            "--num-critics",
            "3",
            "--no-time-grid",
            "--no-progress",
        ]
    )
    assert rc == 0
    config = seen["config"]
    assert (config.obs_dim, config.action_dim) == (28, 5)  # from the dataset
    assert (config.expectile, config.num_critics, config.time_grid, config.actor_hidden) == (0.7, 3, None, (32, 32))
    # Values QGFConfig rejects fail before the dataset is read (this path does not exist).
    missing = tmp_path / "missing.npz"
    rc, err = run_cli(
        ["train", ENV, "--dataset-path", str(missing), "--out", str(tmp_path), "--expectile", "1.5"], capsys
    )
    assert rc == 2 and "`expectile` must be in (0, 1), got 1.5" in err
    with pytest.raises(ValueError, match=r"Unknown config option\(s\) \['stpes'\].*come from the dataset"):
        train(ENV, tmp_path, dataset_path=missing, stpes=10)
    with pytest.raises(ValueError, match=r"Unknown config option\(s\) \['obs_dim'\]"):
        train(ENV, tmp_path, dataset_path=missing, obs_dim=3)


# ------------------------------------------------------------------------------------ eval flags from EvalConfig


def eval_parser():
    import argparse

    parser = argparse.ArgumentParser(prog="qgf-lite eval")
    cli.add_eval_arguments(parser)
    return parser


# Every field away from its default, so the round trip below tests each flag (a new field must be added here).
NON_DEFAULT = dict(
    methods=("bc", "noisy", "best_of_n"),
    weights=(0.5, 0.25),
    n=3,
    step_size=0.2,
    ascent_steps=1,
    flow_steps=4,
    episodes=7,
    seed=2,
    num_envs=3,
    workers=1,
    seed_index=1,
    critic="online",
    video_method="noisy",
    video_weight=0.3,
    video_episode=2,
    video_size=64,
    video_max_steps=9,
    video_fps=5,
)


def test_every_eval_config_field_is_an_eval_flag_with_its_help():
    import dataclasses

    flags = eval_parser()._option_string_actions
    overridden = cli.eval_flag_options()
    for field in dataclasses.fields(evaluation.EvalConfig):
        flag = "--" + field.name.replace("_", "-")
        assert flag in flags and flags[flag].dest == field.name, flag
        help_text = overridden.get(field.name, {}).get("help") or field.metadata["help"]
        assert help_text in flags[flag].help, flag
    # The spellings of the hand-written parser that came before, and the flags that are not settings.
    for flag in (
        "--methods",
        "--weights",
        "--n",
        "--step-size",
        "--ascent-steps",
        "--steps",
        "--flow-steps",
        "--episodes",
        "--seed",
        "--num-envs",
        "--workers",
        "--seed-index",
        "--critic",
        "--env",
        "--out",
        "--video",
        "--video-method",
        "--video-weight",
        "--no-progress",
    ):
        assert flag in flags, flag
    assert flags["--steps"].dest == "flow_steps"


def test_eval_flags_round_trip_every_field():
    config = evaluation.EvalConfig(**NON_DEFAULT)
    default = evaluation.EvalConfig()
    assert set(NON_DEFAULT) == set(evaluation.EvalConfig.names())
    assert all(getattr(config, name) != getattr(default, name) for name in NON_DEFAULT)
    argv = ["run/checkpoint.msgpack"]
    for name, value in NON_DEFAULT.items():
        argv += ["--" + name.replace("_", "-"), *map(str, value if isinstance(value, tuple) else [value])]
    assert cli.eval_settings(eval_parser().parse_args(argv)) == config
    # No flags: EvalConfig's defaults, but one worker per core at most --num-envs.
    plain = cli.eval_settings(eval_parser().parse_args(["run/checkpoint.msgpack", "--num-envs", "1"]))
    assert plain == default.replace(num_envs=1, workers=1)
    assert cli.eval_settings(eval_parser().parse_args(["run/checkpoint.msgpack", "--no-flow-steps"])).flow_steps is None
    assert cli.eval_settings(eval_parser().parse_args(["c", "--methods", "bc,qgf,fql"])).methods == ("bc", "qgf", "fql")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--episodes", "abc"], "argument --episodes: invalid int value: 'abc'"),
        (["--video-method", "magic"], "argument --video-method: invalid choice: 'magic'"),
        (["--video-frames", "3"], "unrecognized arguments: --video-frames 3"),
        (["--video-fps"], "argument --video-fps: expected one argument"),
    ],
)
def test_bad_eval_flags_give_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["eval", "run/checkpoint.msgpack", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_eval_settings_are_named_before_the_checkpoint_is_read(tmp_path, capsys):
    missing = tmp_path / "missing.msgpack"  # never read: the settings fail first
    for argv, message in [
        (["--video-fps", "0"], "`video_fps` must be >= 1, got 0"),
        (["--num-envs", "0"], "`num_envs` must be >= 1, got 0"),
    ]:
        assert cli.main(["eval", str(missing), *argv]) == 2
        err = capsys.readouterr().err
        assert f"qgf-lite eval: error: {message}" in err and "Traceback" not in err
    with pytest.raises(ValueError, match=r"unknown EvalConfig setting\(s\) \['episdoes'\] \(did you mean 'episodes'"):
        evaluation.evaluate(missing, episdoes=3)
    with pytest.raises(ValueError, match=r"valid: methods, weights, n, .*video_fps"):
        evaluation.record_video(missing, tmp_path / "v.gif", framerate=3)
    with pytest.raises(TypeError, match=r"`config` must be a qgf_lite.ogbench.evaluation.EvalConfig, got dict"):
        evaluation.evaluate(missing, None, {"episodes": 3})
    with pytest.raises(TypeError, match=r"`episodes` must be an integer >= 1, got 2.5"):
        evaluation.EvalConfig(episodes=2.5)


def test_evaluate_takes_a_config_and_keyword_overrides_alike(trained_run, monkeypatch):
    calls = []
    spy_rollouts(monkeypatch, calls, play=True)
    checkpoint = trained_run / "checkpoint.msgpack"
    config = evaluation.EvalConfig(methods=("qgf",), weights=(0.1,), episodes=2, num_envs=1, seed=5)
    by_config = evaluation.evaluate(checkpoint, None, config, progress=False)
    by_keywords = evaluation.evaluate(
        checkpoint, methods=["qgf"], weights=[0.1], episodes=2, num_envs=1, seed=5, progress=False
    )
    mixed = evaluation.evaluate(checkpoint, None, config.replace(seed=0), seed=5, progress=False)
    assert [r["per_episode"] for r in by_config["results"]] == [r["per_episode"] for r in by_keywords["results"]]
    assert by_config["eval_config"] == by_keywords["eval_config"] == mixed["eval_config"] == config.to_dict()
    assert by_config["seed"] == 5 and len(calls) == 3


def test_documented_train_and_eval_commands_still_parse():
    import re
    import shlex
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    commands = []
    for doc in ("README.md", "docs/results.md"):
        text = (root / doc).read_text().replace("\\\n", " ")  # join continued lines
        commands += re.findall(r"^qgf-lite (?:train|eval) .*$", text, re.M)
    assert any(c.startswith("qgf-lite train") for c in commands)
    for command in commands:
        args = cli.build_parser().parse_args(shlex.split(command, comments=True)[1:])  # exit 2 on an unknown flag
        if args.command == "eval":  # and the settings make an EvalConfig whose samplers are specs
            assert cli.eval_settings(args).specs(10)


def test_cfgrl_trains_in_the_same_run_and_evaluates_by_name(trained_run, dataset_path, tmp_path, capsys):
    run = tmp_path / "cfgrl"
    assert (
        cli.main(
            [
                "train",
                ENV,
                "--dataset-path",
                str(dataset_path),
                "--steps",
                "40",
                *TINY,
                "--cfgrl",
                "--out",
                str(run),
                "--log-every",
                "20",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "eval",
                str(run / "checkpoint.msgpack"),
                "--methods",
                "bc",
                "cfgrl",
                "--weights",
                "0.5",
                "--episodes",
                "1",
                "--num-envs",
                "1",
                "--workers",
                "0",
                "--out",
                str(run / "eval"),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = json.loads((run / "eval" / "eval.json").read_text())["results"]
    assert [(r["label"], r["cost"]) for r in rows] == [("BC", 10), ("CFG-RL w=0.5", 20)]
    # A checkpoint trained without the option has no CFG-RL network: one clear line, before any episode.
    capsys.readouterr()
    assert (
        cli.main(
            [
                "eval",
                str(trained_run / "checkpoint.msgpack"),
                "--methods",
                "cfgrl",
                "--weights",
                "0.5",
                "--episodes",
                "1",
                "--workers",
                "0",
                "--no-progress",
            ]
        )
        == 2
    )
    assert "train with QGFConfig(cfgrl=True) (`qgf-lite train --cfgrl`)" in capsys.readouterr().err
