"""Smoke test of benchmarks/vs_reference.py without the official code: a stand-in checkout
(tests/fixtures/fake_qgf_reference, a tiny agent with the official interface and file layout) plays the official
implementation. The script runs end to end in a subprocess (it registers the checkout's top-level ``agents`` and
``utils`` packages, which must not leak into the test process) on a two-episode generated dataset, at toy sizes.
Checked: the report's structure and counts, the shims, common random numbers (zeroed networks give identical
samples), resuming, the Markdown table, and the input errors."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

from qgf_lite.ogbench import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "vs_reference.py"
FAKE = ROOT / "tests" / "fixtures" / "fake_qgf_reference"

pytestmark = pytest.mark.filterwarnings("ignore:.*precision lowered:UserWarning")

TOY = [
    "--seeds",
    "0",
    "1",
    "--steps",
    "4",
    "--chunk",
    "2",
    "--hidden",
    "8",
    "--layers",
    "1",
    "--batch-size",
    "8",
    "--episodes",
    "2",
    "--num-envs",
    "2",
    "--workers",
    "0",
    "--max-episode-steps",
    "10",
    "--weights",
    "0.1",
    "--noisy-weights",
    "0.1",
    "--latency-batches",
    "2",
    "--latency-repeats",
    "1",
    "--official-defaults-hidden",
    "8",
    "--official-defaults-layers",
    "1",
    "--official-defaults-steps",
    "2",
    "--official-defaults-windows",
    "1",
    "--no-progress",
]


def load_script():
    spec = importlib.util.spec_from_file_location("vs_reference_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def run_script(*args, check=True):
    # XLA's cheap compile settings (as gpu_check --quick): the toy run's timings mean nothing, its compiles dominate.
    env = {
        "XLA_FLAGS": "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
        **os.environ,
        "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
    }
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"vs_reference.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "cube-single-play-v0.npz"
    assert (
        cli.main(
            [
                "generate",
                "cube-single",
                "--episodes",
                "2",
                "--workers",
                "1",
                "--episode-length",
                "51",
                "--out",
                str(path),
                "--no-progress",
            ]
        )
        == 0
    )
    return path


@pytest.fixture(scope="module")
def toy_run(dataset_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("vs") / "vs.json"
    proc = run_script("--reference", FAKE, "--dataset", dataset_path, "--out", out, *TOY)
    return out, json.loads(out.read_text()), proc.stdout


def test_report_holds_both_implementations_side_by_side(toy_run):
    _, report, stdout = toy_run
    assert report["schema"] == "qgf_lite.vs_reference/1" and report["complete"] is True
    assert report["dataset"]["transitions"] == 2 * 50 and report["dataset"]["action_dim"] == 5
    # matched settings reach both configs
    q, o = report["qgf_lite_config"], report["official_config"]
    assert q["actor_hidden"] == q["critic_hidden"] == q["value_hidden"] == [8]
    assert list(o["actor_hidden_dims"]) == list(o["value_network_kwargs"]["hidden_dims"]) == [8]
    assert (o["horizon_length"], o["action_chunking"], o["batch_size"], o["denoise_steps"]) == (5, True, 8, 10)
    assert (q["horizon"], q["batch_size"], q["flow_steps"]) == (5, 8, 10)
    # every (seed, setting, implementation) evaluated once, on the same episodes
    evals = report["evaluations"]
    keys = {(e["seed"], e["method"], e["weight"], e["impl"]) for e in evals}
    assert len(evals) == len(keys) == 2 * 3 * 2
    assert {(m, w) for _, m, w, _ in keys} == {("bc", 0.0), ("qgf", 0.1), ("noisy", 0.1)}
    assert all(e["episodes"] == 2 and len(e["per_episode_success"]) == 2 for e in evals)
    rows = report["rows"]
    assert len(rows) == 6 and all(
        r["episodes"] == 4 and 0 <= r["success_ci95"][0] <= r["success_ci95"][1] <= 1 for r in rows
    )
    assert len(report["agreement"]) == 3
    assert report["all_intervals_overlap"] == all(a["intervals_overlap"] for a in report["agreement"])
    for seed in ("0", "1"):
        t = report["training"][seed]
        assert t["steps"] == 4 and t["chunk_steps"] == [2, 2]
        assert t["official"]["steps_per_s"] > 0 and t["qgf_lite"]["steps_per_s"] > 0
        assert (
            set(t["official"]["final_losses"])
            == set(t["qgf_lite"]["final_losses"])
            == {"flow_per_dim", "critic", "value", "q"}
        )
    for seed in ("0", "1"):
        g = report["critic_gradient"][seed]
        assert g["official"]["mean_norm"] > 0 and g["qgf_lite"]["mean_norm"] > 0
        assert g["qgf_lite_over_official"] == pytest.approx(g["qgf_lite"]["mean_norm"] / g["official"]["mean_norm"])
    assert all(lo <= a["difference"] <= hi for a in report["agreement"] for lo, hi in [a["difference_ci95"]])
    speed = report["speed"]
    assert set(speed["trained_size"]["guided_ms"]) == {"2"}
    assert speed["official_defaults_size"]["train"]["steps"] == 4 and speed["official_defaults_size"]["hidden"] == 8
    assert all(
        v[k] > 0
        for v in speed["official_defaults_size"]["guided_ms"].values()
        for k in ("official", "qgf_lite", "official_cpu", "qgf_lite_cpu")
    )
    assert "| setting | official" in stdout and "| qgf w=0.1 |" in stdout and "claim:" in stdout


def test_common_random_numbers_and_shims(toy_run):
    _, report, _ = toy_run
    # zeroed networks: both samplers return their initial noise, so equal samples = equal noise per key
    assert report["common_noise_max_abs_diff"] == 0.0
    shims = " ".join(report["official"]["shims"])
    assert "agents, utils" in shims  # the stand-in's agents/__init__.py raises if it is ever run
    for package in ("ml_collections", "distrax"):
        assert (package + ":" in shims) == (importlib.util.find_spec(package) is None)


def test_resume_keeps_results_and_redoes_only_the_missing(toy_run, dataset_path, tmp_path):
    out, report, _ = toy_run
    partial = dict(report, complete=False, evaluations=report["evaluations"][:-1])
    del partial["rows"]
    copy = tmp_path / "vs.json"
    copy.write_text(json.dumps(partial))
    work = out.with_name(out.stem + "_work")
    proc = run_script(
        "--reference", FAKE, "--dataset", dataset_path, "--out", copy, "--workdir", work, "--resume", *TOY
    )
    assert "trained networks loaded" in proc.stdout
    resumed = json.loads(copy.read_text())
    assert resumed["complete"] is True and len(resumed["evaluations"]) == 12
    assert resumed["evaluations"][:11] == report["evaluations"][:11]  # kept as they were, not re-run
    redone = resumed["evaluations"][11]
    assert {k: redone[k] for k in ("seed", "impl", "method", "weight")} == {
        k: report["evaluations"][11][k] for k in ("seed", "impl", "method", "weight")
    }
    assert resumed["training"] == report["training"] and resumed["speed"] == report["speed"]
    table = run_script("--table-only", "--out", copy).stdout
    assert table.count("\n| ") >= 3 + 2 and "noisy w=0.1" in table


def test_input_errors_are_one_clear_message(dataset_path, tmp_path, capsys):
    vs = load_script()
    with pytest.raises(FileNotFoundError, match="zhouzypaul/qgf"):
        vs.load_reference(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        vs.load_reference(tmp_path / "absent")
    for argv, message in (
        (["--dataset", str(dataset_path)], "--reference PATH is required"),
        (["--reference", str(FAKE)], "--dataset is required"),
        (["--reference", str(FAKE), "--dataset", "x.npz", "--weights", "0"], "must be > 0"),
        (["--reference", str(FAKE), "--dataset", "x.npz", "--seeds", "1", "1"], "distinct"),
        (["--reference", str(FAKE), "--dataset", "x.npz", "--out", str(tmp_path)], "is a folder"),
    ):
        with pytest.raises(SystemExit) as exc:
            vs.parse_args(argv)
        assert exc.value.code == 2 and message in capsys.readouterr().err
    # --resume refuses a report made with other sizes (checked before the official code is imported)
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"args": {"steps": 4, "hidden": 8, "seeds": [0]}}))
    with pytest.raises(ValueError, match="--steps 4"):
        vs.main(
            [
                "--reference",
                str(FAKE),
                "--dataset",
                str(dataset_path),
                "--out",
                str(earlier),
                "--resume",
                "--steps",
                "5",
                "--hidden",
                "8",
            ]
        )
    with pytest.raises(SystemExit, match="no report"):
        vs.main(["--table-only", "--out", str(tmp_path / "none.json")])
