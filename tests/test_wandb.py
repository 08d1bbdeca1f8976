"""--wandb: W&B logging of config, losses and evaluation tables, tested offline (WANDB_MODE=offline, no network)."""

import json
import sys

import numpy as np
import pytest

import qgf_lite
from qgf_lite.tracking import WandbTracker, scalars

ENV = "cube-single-play-singletask-task2-v0"
TINY = [
    "--hidden",
    "8",
    "--layers",
    "1",
    "--batch-size",
    "8",
    "--horizon",
    "2",
    "--flow-steps",
    "2",
    "--time-grid",
    "2",
]


def test_scalars_flattens_per_seed_lists():
    out = scalars({"step": 5, "policy_loss": 1.5, "critic_loss": [1.0, 3.0], "slice": 2, "note": "x"}, "train")
    assert out == {
        "train/policy_loss": 1.5,
        "train/critic_loss": 2.0,
        "train/critic_loss_seed0": 1.0,
        "train/critic_loss_seed1": 3.0,
        "train/slice": 2.0,
    }


def test_wandb_flag_without_wandb_installed_is_a_clear_error(monkeypatch, tmp_path, capsys):
    pytest.importorskip("ogbench")
    from qgf_lite.ogbench import cli

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError
    out = tmp_path / "run"
    status = cli.main(
        [
            "train",
            ENV,
            "--dataset-path",
            str(tmp_path / "missing.npz"),
            "--out",
            str(out),
            "--wandb",
            "--steps",
            "2",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "--wandb needs the wandb package" in err and "pip install 'qgf_lite[wandb]'" in err
    assert not out.exists()  # it failed before any work (the missing dataset was never reached)


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    return tmp_path


def offline_run_files(root):
    runs = sorted(root.rglob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


def run_records(folder) -> bytes:
    """The offline run's record log (run-<id>.wandb: protobuf records holding each key and its JSON value), as bytes;
    wandb >= 0.19 ships no Python reader for it, and `wandb sync` would need the network."""
    (log,) = folder.glob("run-*.wandb")
    return log.read_bytes()


def test_offline_run_gets_config_losses_and_eval_table(offline):
    from qgf_lite.ogbench.train import make_config, train_on_dataset

    rng = np.random.default_rng(0)
    obs = rng.normal(size=(61, 3)).astype(np.float32)
    dataset = qgf_lite.make_dataset(rng.uniform(-1, 1, (60, 2)), -np.ones(60), obs[:-1], next_observations=obs[1:])
    config = make_config(3, 2, hidden=8, layers=1, batch_size=8, horizon=2, flow_steps=2, time_grid=2)
    tracker = WandbTracker(project="qgf-test", mode="offline", directory=offline / "wandb_dir")
    result = train_on_dataset(config, dataset, offline / "run", steps=4, log_every=2, progress=False, tracker=tracker)
    run = tracker.run
    assert run.config["batch_size"] == 8 and run.config["num_transitions"] == 60
    report = {
        "results": [
            {
                "label": "BC",
                "method": "bc",
                "weight": 0.0,
                "episodes": 4,
                "successes": 1,
                "success_rate": 0.25,
                "success_ci95": [0.05, 0.7],
                "return_mean": -3.0,
                "length_mean": 200.0,
            },
            {
                "label": "QGF w=0.1",
                "method": "guided",
                "weight": 0.1,
                "episodes": 4,
                "successes": 3,
                "success_rate": 0.75,
                "success_ci95": [0.3, 0.95],
                "return_mean": -1.0,
                "length_mean": 120.0,
            },
        ]
    }
    tracker.log_eval(report)
    tracker.finish()
    tracker.finish()  # idempotent
    folder = offline_run_files(offline / "wandb_dir")
    records = run_records(folder)
    for record in result.history:  # every logged chunk's losses, under train/
        assert json.dumps(record["policy_loss"]).encode() in records
    for key in (
        b"train/policy_loss",
        b"train/critic_loss",
        b"train/value_loss",
        b"eval/success/QGF w=0.1",
        b"eval/best_label",
        b"batch_size",
        b"num_transitions",
        b"actor_hidden",
    ):
        assert key in records, key
    (table_file,) = folder.rglob("results_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == [
        "label",
        "method",
        "weight",
        "episodes",
        "successes",
        "success_rate",
        "success_ci95_low",
        "success_ci95_high",
        "return_mean",
        "length_mean",
    ]
    assert table["data"][1][:3] == ["QGF w=0.1", "guided", 0.1] and table["data"][1][6:8] == [0.3, 0.95]


def test_cli_train_with_wandb_offline(offline, capsys):
    pytest.importorskip("ogbench")
    from qgf_lite.ogbench import cli
    from qgf_lite.ogbench.generate import generate_dataset

    data = offline / "cube-single-play-v0.npz"
    generate_dataset("cube-single", num_episodes=1, out_path=str(data), episode_length=40, workers=1, progress=False)
    status = cli.main(
        [
            "train",
            ENV,
            "--dataset-path",
            str(data),
            "--out",
            str(offline / "run"),
            "--steps",
            "4",
            "--log-every",
            "2",
            "--no-progress",
            "--wandb",
            "--wandb-project",
            "qgf-test",
            *TINY,
        ]
    )
    assert status == 0, capsys.readouterr().err
    records = run_records(offline_run_files(offline / "wandb_dir"))
    log = [json.loads(line) for line in (offline / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]
    for record in log:
        assert json.dumps(record["critic_loss"]).encode() in records
    assert b"qgf-test" in records and b"learning_rate" in records
