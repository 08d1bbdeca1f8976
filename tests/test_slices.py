"""OGBench's 100M-transition folders: the layout, loading, and training that streams slices (double buffering)."""

import gc
import json
import threading
import time
import weakref

import jax
import numpy as np
import pytest

import qgf_lite
from qgf_lite.streaming import SliceStream, slice_for_step
from qgf_lite.training import QGFConfig, fit, init_train_state

ENV = "cube-single-play-singletask-task2-v0"
TINY = dict(hidden=8, layers=1, batch_size=8, horizon=2, flow_steps=2, time_grid=2)


# ------------------------------------------------------------------ the stream itself (no OGBench)
def tiny_slice(index: int, n: int = 40) -> qgf_lite.TransitionDataset:
    """A distinct small dataset per slice index: its rewards all equal -index."""
    rng = np.random.default_rng(index)
    obs = rng.normal(size=(n + 1, 3)).astype(np.float32)
    terminals = np.zeros(n, np.float32)
    terminals[-1] = 1
    return qgf_lite.make_dataset(
        rng.uniform(-1, 1, (n, 2)), np.full(n, -float(index)), obs[:-1], terminals=terminals, next_observations=obs[1:]
    )


class Recorder:
    """load_slice for a SliceStream that notes the thread of every load and keeps a weak reference to each slice."""

    def __init__(self, delay_s: float = 0.0):
        self.delay_s, self.threads, self.refs = delay_s, [], []

    def __call__(self, index):
        time.sleep(self.delay_s)
        self.threads.append(threading.current_thread().name)
        dataset = tiny_slice(index)
        self.refs.append(weakref.ref(dataset))
        return dataset

    def alive(self) -> int:
        gc.collect()
        return sum(ref() is not None for ref in self.refs)


def test_rotation_visits_every_slice_in_order_and_resumes_on_the_same_slice():
    config = QGFConfig(
        obs_dim=3,
        action_dim=2,
        horizon=2,
        actor_hidden=(8,),
        critic_hidden=(8,),
        value_hidden=(8,),
        batch_size=8,
        flow_steps=2,
        time_grid=2,
    )
    with SliceStream(3, Recorder()) as stream:
        state, history = fit(
            config,
            init_train_state(config, jax.random.PRNGKey(0)),
            stream,
            35,
            chunk_size=3,
            progress=False,
            rotate_every=5,
        )
        # chunks are cut at every 5th step: 3 + 2 per slice, and the slices come 0, 1, 2, 0, ...
        assert [r["step"] for r in history][:4] == [3, 5, 8, 10]
        assert [r["slice"] for r in history] == [s for s in (0, 1, 2, 0, 1, 2, 0) for _ in range(2)]
        # The next slice is prefetched in the background: slice 1 after the last may or may not have started.
        assert stream.loads[:7] == [0, 1, 2, 0, 1, 2, 0] and stream.loads[7:] in ([], [1])
        assert int(state.step) == 35

    # A run resumed at step 10 starts on slice 2, as the uninterrupted run did at that step.
    assert slice_for_step(10, 5, 3) == 2
    with SliceStream(3, Recorder()) as stream:
        _, history = fit(
            config, state.replace(step=state.step * 0 + 10), stream, 5, chunk_size=3, progress=False, rotate_every=5
        )
        assert [r["slice"] for r in history] == [2, 2] and stream.max_resident <= 2


def test_background_loader_never_holds_more_than_two_slices():
    recorder = Recorder(delay_s=0.05)
    stream = SliceStream(5, recorder)
    seen = [stream.index]
    for _ in range(12):
        time.sleep(0.08)  # "training": long enough for the prefetch to finish
        stream.advance()
        seen.append(stream.index)
        assert stream.resident <= 2 and recorder.alive() <= 2
    assert seen == [i % 5 for i in range(13)]
    assert stream.max_resident == 2
    # The first slice is loaded by the caller; every later one in the loader thread, while "training" ran.
    assert recorder.threads[0] == threading.current_thread().name
    assert all(name.startswith("qgf-slice-loader") for name in recorder.threads[1:])
    assert stream.wait_s < 12 * 0.05  # the loads were hidden behind the training time
    stream.close()
    assert stream.resident == 0 and recorder.alive() == 0


def test_synchronous_stream_loads_at_the_swap_and_holds_one_slice():
    recorder = Recorder(delay_s=0.02)
    with SliceStream(3, recorder, prefetch=False) as stream:
        for _ in range(4):
            stream.advance()
            assert stream.resident == 1 and recorder.alive() == 1
        assert set(recorder.threads) == {threading.current_thread().name}
        assert stream.wait_s >= 4 * 0.02
        assert stream.loads == [0, 1, 2, 0, 1]


def test_a_failing_load_surfaces_in_the_training_thread():
    def load(index):
        if index == 1:
            raise OSError("disk gone")
        return tiny_slice(index)

    stream = SliceStream(2, load)
    with pytest.raises(OSError, match="disk gone"):
        stream.advance()


# ------------------------------------------------------------------ OGBench's layout, generated here
@pytest.fixture(scope="module")
def slice_root(tmp_path_factory):
    pytest.importorskip("ogbench")
    from qgf_lite.ogbench.generate import generate_slices

    root = tmp_path_factory.mktemp("ogdata")
    generate_slices(
        "cube-single",
        3,
        num_episodes=1,
        out_dir=str(root / "cube-single-play-100m-v0"),
        episode_length=40,
        num_val_episodes=1,
        workers=1,
        progress=False,
    )
    return root


def test_generated_folder_has_ogbenchs_file_names(slice_root):
    folder = slice_root / "cube-single-play-100m-v0"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"cube-single-play-v0-{i:03d}{val}.npz" for i in range(3) for val in ("", "-val")
    )
    # slices are different data (distinct seeds), not copies
    first, second = (np.load(folder / f"cube-single-play-v0-00{i}.npz")["actions"] for i in (0, 1))
    assert first.shape == second.shape and not np.allclose(first, second)


def test_load_dataset_reads_the_folder_its_root_and_ogbench_data_dir(slice_root, monkeypatch):
    from qgf_lite.ogbench.datasets import load_dataset, sliced_folder

    folder = slice_root / "cube-single-play-100m-v0"
    _, train0, val0 = load_dataset(ENV, dataset_dir=str(folder))
    assert train0["observations"].shape == (39, 28) and set(train0) >= {"rewards", "masks"}
    assert val0["observations"].shape[1] == 28
    _, train2, _ = load_dataset(ENV, dataset_dir=str(slice_root), slice_index=2)  # the root holding the folder
    assert train2["observations"].shape == train0["observations"].shape
    assert not np.allclose(train2["observations"], train0["observations"])
    monkeypatch.setenv("OGBENCH_DATA_DIR", str(slice_root))  # as the official code's scripts use it
    assert sliced_folder(ENV) == str(folder)
    monkeypatch.delenv("OGBENCH_DATA_DIR")
    assert sliced_folder(ENV) is None or "100m" in sliced_folder(ENV)


def test_bad_folder_errors_name_the_expected_files(slice_root, tmp_path, capsys):
    from qgf_lite.ogbench import cli
    from qgf_lite.ogbench.datasets import find_slice_files

    empty = tmp_path / "cube-single-play-100m-v0"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"cube-single-play-v0-000\.npz, cube-single-play-v0-001\.npz"):
        find_slice_files(str(empty), ENV)
    with pytest.raises(NotADirectoryError, match=r"cube-single-play-v0-000\.npz"):
        find_slice_files(str(tmp_path / "missing"), ENV)
    status = cli.main(
        ["train", ENV, "--dataset-dir", str(empty), "--out", str(tmp_path / "run"), "--steps", "2", "--no-progress"]
    )
    err = capsys.readouterr().err
    assert status == 2 and "cube-single-play-v0-000.npz" in err and "notes.txt" in err
    # a 100M folder of another task's dataset is not silently used
    with pytest.raises(FileNotFoundError, match="scene-play-v0-000.npz"):
        find_slice_files(str(slice_root / "cube-single-play-100m-v0"), "scene-play-singletask-task2-v0")


def test_train_streams_the_slices_and_logs_which_one(slice_root, tmp_path):
    from qgf_lite.ogbench.train import read_log, train

    result = train(
        ENV,
        tmp_path / "run",
        steps=12,
        dataset_dir=str(slice_root),
        log_every=2,
        checkpoint_every=4,
        rotate_every=4,
        progress=False,
        **TINY,
    )
    records = read_log(result.log_path)
    assert [r["slice"] for r in records] == [0, 0, 1, 1, 2, 2]
    assert result.final_step == 12
    extra = qgf_lite.load_checkpoint(result.checkpoint_path)[2]
    assert extra["num_slices"] == 3 and extra["dataset_path"].endswith("cube-single-play-100m-v0")
    # resumed to 16 steps: the next chunks train on slice 0 again, as step 12 // 4 % 3 says
    train(
        ENV,
        tmp_path / "run",
        steps=16,
        dataset_dir=str(slice_root),
        log_every=2,
        checkpoint_every=4,
        rotate_every=4,
        progress=False,
        **TINY,
    )
    assert [r["slice"] for r in read_log(result.log_path)][6:] == [0, 0]


def test_generate_cli_writes_slices(tmp_path, capsys):
    pytest.importorskip("ogbench")
    from qgf_lite.ogbench import cli

    out = tmp_path / "puzzle-3x3-play-100m-v0"
    assert (
        cli.main(
            [
                "generate",
                "puzzle-3x3",
                "--slices",
                "2",
                "--episodes",
                "1",
                "--episode-length",
                "20",
                "--workers",
                "1",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "puzzle-3x3-play-v0-000-val.npz",
        "puzzle-3x3-play-v0-000.npz",
        "puzzle-3x3-play-v0-001-val.npz",
        "puzzle-3x3-play-v0-001.npz",
    ]
    assert "wrote 2 slices" in capsys.readouterr().out
    json.dumps(str(out))
