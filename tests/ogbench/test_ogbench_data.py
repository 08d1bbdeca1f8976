"""OGBench data layer: names, generation with OGBench's oracles, loading through OGBench's own loader."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import urllib.error
import warnings

import gymnasium
import numpy as np
import ogbench
import pytest

from qgf_lite.ogbench import datasets as od
from qgf_lite.ogbench import generate as og

# gymnasium complains about ogbench's float64 Box bounds on every env construction; it is harmless.
pytestmark = pytest.mark.filterwarnings("ignore:.*precision lowered:UserWarning")

EPISODES = 3
LENGTH = 120  # long enough for the oracle to finish a pick-and-place and get a new target sometimes


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("gen") / "cube-single-play-v0.npz")
    stats = og.generate_dataset(
        "cube-single",
        num_episodes=EPISODES,
        out_path=path,
        seed=0,
        workers=1,
        episode_length=LENGTH,
        progress=False,
    )
    return path, stats


def _read(path):
    with np.load(path) as file:
        return {key: file[key] for key in file.files}


def _make_gc_env(name, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gymnasium.make(name, **kwargs)


# ----------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name, expected",
    [
        ("cube-single", ("cube-single", None, None, "v0")),
        ("cube-double-v0", ("cube-double", None, None, "v0")),
        ("cube-triple-play-v0", ("cube-triple", "play", None, "v0")),
        ("cube-double-play-singletask-task2-v0", ("cube-double", "play", 2, "v0")),
        ("scene-noisy-singletask-task5-v0", ("scene", "noisy", 5, "v0")),
        ("cube-quadruple-play-singletask-v0", ("cube-quadruple", "play", 2, "v0")),
        ("puzzle-3x3-play-singletask-v0", ("puzzle-3x3", "play", 4, "v0")),
        ("puzzle-4x4-play-singletask-v0", ("puzzle-4x4", "play", 4, "v0")),
        ("puzzle-4x5-play-singletask-v0", ("puzzle-4x5", "play", 2, "v0")),  # ogbench 1.2.2: task2, not task4
        ("cube-octuple-noisy-singletask-task1-v0", ("cube-octuple", "noisy", 1, "v0")),
    ],
)
def test_parse_env_name(name, expected):
    assert tuple(od.parse_env_name(name)) == expected


def test_every_parsed_single_task_name_is_registered_by_ogbench():
    import ogbench.manipspace  # noqa: F401

    for env_id in od.list_env_ids():
        assert f"{env_id}-v0" in gymnasium.registry
        for task in od.TASK_IDS:
            parsed = od.parse_env_name(f"{env_id}-play-singletask-task{task}-v0")
            assert f"{parsed.env_id}-singletask-task{parsed.task_id}-v0" in gymnasium.registry


@pytest.mark.parametrize("env_id", ["cube-single", "puzzle-3x3", "puzzle-4x5"])
def test_default_task_matches_what_the_ogbench_env_resolves(env_id):
    env = _make_gc_env(f"{env_id}-singletask-v0")
    assert env.unwrapped._reward_task_id == od.default_task_id(env_id)


@pytest.mark.parametrize(
    "name",
    ["cube-sextuple-play-v0", "visual-cube-single-play-v0", "antmaze-large-navigate-v0", "cube-single-play-extra-v0"],
)
def test_unknown_env_id_error_lists_valid_ids(name):
    with pytest.raises(ValueError) as info:
        od.parse_env_name(name)
    for env_id in od.list_env_ids():
        assert env_id in str(info.value)


def test_bad_task_number_and_version_are_rejected():
    with pytest.raises(ValueError, match="task number"):
        od.parse_env_name("cube-single-play-singletask-task6-v0")
    with pytest.raises(ValueError, match="version"):
        od.parse_env_name("cube-single-play-v1")
    with pytest.raises(TypeError):
        od.parse_env_name(3)


# ------------------------------------------------------------------------------------------ generation


def test_generated_file_loads_through_ogbench(generated):
    path, stats = generated
    raw = _read(path)
    env, train, val = ogbench.make_env_and_datasets("cube-single-play-v0", dataset_path=path)

    assert env.observation_space.shape == (28,) and env.action_space.shape == (5,)
    # OGBench drops each episode's last step (it has no successor) in its regular layout.
    assert train["observations"].shape == (EPISODES * (LENGTH - 1), 28)
    assert train["actions"].shape == (EPISODES * (LENGTH - 1), 5)
    assert val["observations"].shape == (LENGTH - 1, 28)
    assert np.all(np.abs(train["actions"]) <= 1.0)
    assert stats.num_train_transitions == EPISODES * LENGTH and stats.num_val_transitions == LENGTH

    # Independent layout check: the raw file, cut into episodes by hand.
    episodes = raw["observations"].reshape(EPISODES, LENGTH, 28)
    np.testing.assert_array_equal(train["observations"], episodes[:, :-1].reshape(-1, 28))
    np.testing.assert_array_equal(train["next_observations"], episodes[:, 1:].reshape(-1, 28))
    ends = np.zeros((EPISODES, LENGTH - 1))
    ends[:, -1] = 1
    np.testing.assert_array_equal(train["terminals"], ends.reshape(-1))


def test_generated_data_replays_exactly_in_a_fresh_env(generated):
    """Stored (observation, action, qpos) rows are aligned: replaying the actions reproduces them bit for bit."""
    path, _ = generated
    raw = _read(path)
    env = _make_gc_env("cube-single-v0", terminate_at_goal=False, mode="data_collection", max_episode_steps=LENGTH)
    for episode in range(EPISODES):
        rows = slice(episode * LENGTH, (episode + 1) * LENGTH)
        env_seed = int(og.episode_seed_sequence(0, episode).generate_state(1)[0])
        ob, info = env.reset(seed=env_seed)
        observations, qpos = [ob], [info["qpos"]]
        for action in raw["actions"][rows][:-1]:
            ob, _, _, _, info = env.step(action)
            observations.append(ob)
            qpos.append(info["qpos"])
        np.testing.assert_array_equal(np.asarray(observations, np.float32), raw["observations"][rows])
        np.testing.assert_array_equal(np.asarray(qpos, np.float32), raw["qpos"][rows])
    # The oracle moved the cube (not a dataset of an idle arm).
    cube_xyz = raw["qpos"][:, 14:17]
    assert np.ptp(cube_xyz, axis=0).max() > 0.02


def test_same_seed_same_data_for_any_worker_count_and_new_seed_differs(generated, tmp_path):
    path, _ = generated
    two_workers = str(tmp_path / "two.npz")
    og.generate_dataset(
        "cube-single-play-v0",
        num_episodes=EPISODES,
        out_path=two_workers,
        seed=0,
        workers=2,
        episode_length=LENGTH,
        progress=False,
    )
    for suffix in ("", "-val"):
        first, second = (
            _read(path.replace(".npz", f"{suffix}.npz")),
            _read(two_workers.replace(".npz", f"{suffix}.npz")),
        )
        assert sorted(first) == sorted(second) == ["actions", "observations", "qpos", "qvel", "terminals"]
        for key in first:
            np.testing.assert_array_equal(first[key], second[key], err_msg=key)

    other_seed = str(tmp_path / "seed1.npz")
    og.generate_dataset(
        "cube-single", num_episodes=1, out_path=other_seed, seed=1, episode_length=LENGTH, progress=False
    )
    assert not np.array_equal(_read(other_seed)["actions"], _read(path)["actions"][:LENGTH])


def test_generation_does_not_disturb_the_callers_numpy_random_state(tmp_path):
    np.random.seed(123)
    expected = np.random.RandomState(123).rand(3)
    og.generate_dataset(
        "cube-single", num_episodes=1, out_path=str(tmp_path / "x.npz"), episode_length=20, progress=False
    )
    np.testing.assert_array_equal(np.random.rand(3), expected)


def test_failure_while_writing_leaves_old_files_and_no_partial_file(generated, tmp_path, monkeypatch):
    out = tmp_path / "data.npz"
    old = {"marker": np.arange(3)}
    for target in (out, tmp_path / "data-val.npz"):
        np.savez(target, **old)
    calls = []

    def save_then_crash(file, arrays):
        calls.append(1)
        if len(calls) == 2:  # the validation file, after the training file was fully written
            file.write(b"PK\x03\x04 half an archive")
            raise OSError("disk full")
        np.savez_compressed(file, **arrays)

    monkeypatch.setattr(og, "_save_npz", save_then_crash)
    with pytest.raises(OSError, match="disk full"):
        og.generate_dataset("cube-single", num_episodes=1, out_path=str(out), episode_length=20, progress=False)
    for target in (out, tmp_path / "data-val.npz"):
        np.testing.assert_array_equal(_read(target)["marker"], old["marker"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data-val.npz", "data.npz"]


def test_failure_midway_through_episodes_writes_nothing(tmp_path, monkeypatch):
    real_collect = og.collect_episode

    def crash_on_third(collector, index):
        if index == 2:
            raise RuntimeError("simulated crash")
        return real_collect(collector, index)

    monkeypatch.setattr(og, "collect_episode", crash_on_third)
    with pytest.raises(RuntimeError, match="simulated crash"):
        og.generate_dataset(
            "cube-single", num_episodes=3, out_path=str(tmp_path / "d.npz"), episode_length=20, progress=False
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_episodes=0), "num_episodes"),
        (dict(workers=0), "workers"),
        (dict(episode_length=1), "episode_length"),
        (dict(dataset_type="expert"), "dataset_type"),
        (dict(out_path="/tmp/qgf-no-suffix"), ".npz"),
        (dict(seed=-1), "seed"),
        (dict(noise=float("nan")), "noise"),
    ],
)
def test_generate_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        og.generate_dataset("cube-single", **{"out_path": "/tmp/qgf-never-written.npz", **kwargs})


def test_generate_rejects_type_that_contradicts_the_name():
    with pytest.raises(ValueError, match="noisy"):
        og.generate_dataset("cube-single-noisy-v0", dataset_type="play", out_path="/tmp/qgf-never-written.npz")


def test_cli_generates_a_loadable_dataset(tmp_path, capsys):
    out = str(tmp_path / "cli.npz")
    status = og.main_generate(
        [
            "cube-single",
            "--type",
            "noisy",
            "--episodes",
            "1",
            "--workers",
            "1",
            "--seed",
            "3",
            "--out",
            out,
            "--episode-length",
            "30",
            "--no-progress",
        ]
    )
    assert status == 0 and "transitions/s" in capsys.readouterr().out
    _, train, val = od.load_dataset("cube-single-noisy-v0", dataset_path=out)
    assert train["actions"].shape == (29, 5) and val["actions"].shape == (29, 5)
    with pytest.raises(SystemExit):
        og.main_generate(["cube-hexadecuple", "--out", out])


# --------------------------------------------------------------------------------------------- loading


def test_single_task_rewards_are_relabelled_from_qpos(generated, tmp_path):
    """Put the cube exactly on task 3's goal in some rows; only those rows get reward 0 and mask 0."""
    path, _ = generated
    raw = _read(path)
    task3_goal = np.array([0.35, 0.0, 0.02])  # cube-single task3_vertical2 goal in ogbench's task table
    on_goal = np.zeros(len(raw["terminals"]), bool)
    on_goal[[5, 6, 40, LENGTH + 7]] = True
    raw["qpos"][on_goal, 14:17] = task3_goal
    target = str(tmp_path / "edited.npz")
    np.savez(target, **raw)
    np.savez(target.replace(".npz", "-val.npz"), **_read(path.replace(".npz", "-val.npz")))

    _, train, _ = od.load_dataset("cube-single-play-singletask-task3-v0", dataset_path=target)
    cube_distance = np.linalg.norm(
        raw["qpos"][~raw["terminals"], 14:17] - task3_goal, axis=-1
    )  # OGBench's regular layout keeps the non-terminal rows
    expected_success = cube_distance <= 0.04
    assert expected_success.sum() >= 4
    np.testing.assert_array_equal(train["rewards"], expected_success.astype(np.float32) - 1.0)
    np.testing.assert_array_equal(train["masks"], 1.0 - expected_success)


def test_load_dataset_finds_files_in_dataset_dir(generated):
    path, _ = generated
    env, train, _ = od.load_dataset("cube-single-play-singletask-v0", dataset_dir=os.path.dirname(path), download=False)
    assert env.unwrapped._reward_task_id == 2
    assert train["observations"].shape == (EPISODES * (LENGTH - 1), 28)


def test_missing_file_error_says_how_to_generate(tmp_path):
    with pytest.raises(FileNotFoundError, match="qgf-lite generate cube-double --type play"):
        od.load_dataset("cube-double-play-singletask-task2-v0", dataset_path=str(tmp_path / "nope.npz"))


def test_offline_without_local_file_raises_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(od, "dataset_host_reachable", lambda *a, **k: False)
    with pytest.raises(od.DatasetUnavailableError) as info:
        od.load_dataset("scene-play-singletask-task1-v0", dataset_dir=str(tmp_path))
    message = str(info.value)
    assert "cannot be reached" in message and "qgf-lite generate scene --type play" in message
    assert "generate_dataset(" in message


def test_failed_download_is_reported_and_leaves_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setattr(od, "dataset_host_reachable", lambda *a, **k: True)

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("connection refused")

    monkeypatch.setattr(ogbench.utils.urllib.request, "urlopen", refuse)
    with pytest.raises(od.DatasetUnavailableError, match="Downloading dataset cube-single-play-v0"):
        od.load_dataset("cube-single-play-v0", dataset_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated"])
def test_corrupted_or_empty_file_is_a_value_error(generated, tmp_path, damage):
    path, _ = generated
    good = open(path, "rb").read()
    content = {"empty": b"", "garbage": np.random.default_rng(0).bytes(2000), "truncated": good[: len(good) // 2]}[
        damage
    ]
    target = tmp_path / "bad.npz"
    target.write_bytes(content)
    (tmp_path / "bad-val.npz").write_bytes(open(path.replace(".npz", "-val.npz"), "rb").read())
    with pytest.raises(ValueError, match="empty|corrupted"):
        od.load_dataset("cube-single-play-v0", dataset_path=str(target))


@pytest.mark.parametrize("key", ["observations", "actions", "qpos"])
def test_nan_in_data_names_the_key(generated, tmp_path, key):
    path, _ = generated
    raw = _read(path)
    raw[key][7, 1] = np.nan if key != "actions" else np.inf
    target = str(tmp_path / "nan.npz")
    np.savez(target, **raw)
    np.savez(target.replace(".npz", "-val.npz"), **_read(path.replace(".npz", "-val.npz")))
    with pytest.raises(ValueError, match=f"`{key}`"):
        od.load_dataset("cube-single-play-singletask-task2-v0", dataset_path=target)


def test_single_task_file_without_qpos_is_rejected(generated, tmp_path):
    path, _ = generated
    raw = _read(path)
    del raw["qpos"]
    target = str(tmp_path / "noqpos.npz")
    np.savez(target, **raw)
    np.savez(target.replace(".npz", "-val.npz"), **_read(path.replace(".npz", "-val.npz")))
    with pytest.raises(ValueError, match="qpos"):
        od.load_dataset("cube-single-play-singletask-task2-v0", dataset_path=target)
    # Goal-conditioned loading does not need qpos.
    _, train, _ = od.load_dataset("cube-single-play-v0", dataset_path=target)
    assert train["observations"].shape[1] == 28


def test_load_needs_a_dataset_type_and_one_location(tmp_path):
    with pytest.raises(ValueError, match="dataset type"):
        od.load_dataset("cube-single-v0", dataset_dir=str(tmp_path))
    with pytest.raises(ValueError, match="not both"):
        od.load_dataset("cube-single-play-v0", dataset_dir=str(tmp_path), dataset_path=str(tmp_path / "a.npz"))
