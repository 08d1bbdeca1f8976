"""Every manipulation domain end to end at tiny scale: generate -> OGBench's loader (reward relabelling) -> train
-> eval, for cube-single, cube-double, cube-triple, scene, puzzle-3x3 and puzzle-4x4 (issue 11, item 4).

One module-scoped pipeline per domain (a few short play episodes, 2 training steps of 1 x 16 networks, one
evaluation episode per setting at the env's own episode limit); every test of that domain reads its results.
Plus the generator settings that make the non-cube-single datasets OGBench's (random actions in noisy data,
per-domain episode counts), the default-task hint of ``train``, and the success timing of ogbench >= 1.2.0
that the ``ogbench`` extra pins (docs/algorithm.md §6).

The expected numbers below are read off ogbench 1.2.x, not computed by the package under test:
- obs_dim: ``compute_observation`` of cube_env/scene_env/puzzle_env (19 proprio + 9 per cube; scene 40;
  puzzle 19 + 4 per button); action_dim 5 for all (ManipSpaceEnv.action_space);
- nq (qpos size): 14 arm/gripper + 7 per cube + 1 per button (+ drawer and window for scene);
- subtasks: ogbench/relabel_utils.py relabels single-task rewards as (satisfied subtasks - all subtasks), where
  the subtasks are the cubes (cube-*), the cube + 2 buttons + drawer + window (scene), the buttons (puzzle);
- default task: the ``_reward_task_id == 0`` branch of each env's ``set_tasks``;
- episode limit: ``max_episode_steps`` of the ``*-singletask-v0`` registrations in ogbench/manipspace/__init__.py.
"""

from __future__ import annotations

import math
import os
import time
from typing import NamedTuple

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from qgf_lite.checkpoint import load_checkpoint  # noqa: E402
from qgf_lite.ogbench import generate as og  # noqa: E402
from qgf_lite.ogbench.datasets import default_task_id, load_dataset, parse_env_name  # noqa: E402
from qgf_lite.ogbench.evaluation import evaluate, make_eval_env  # noqa: E402
from qgf_lite.ogbench.generate import generate_dataset  # noqa: E402
from qgf_lite.ogbench.train import read_log, require_singletask_name, train  # noqa: E402

# gymnasium warns each time OGBench builds a space from float64 bounds; harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:.*precision lowered:UserWarning")


class Domain(NamedTuple):
    obs_dim: int
    nq: int
    buttons: int  # length of the stored button_states (0: the file has none)
    subtasks: int  # k: single-task rewards lie in {-k, ..., 0}
    default_task: int
    episode_limit: int


DOMAINS = {
    "cube-single": Domain(obs_dim=28, nq=21, buttons=0, subtasks=1, default_task=2, episode_limit=200),
    "cube-double": Domain(obs_dim=37, nq=28, buttons=0, subtasks=2, default_task=2, episode_limit=500),
    "cube-triple": Domain(obs_dim=46, nq=35, buttons=0, subtasks=3, default_task=2, episode_limit=1000),
    "scene": Domain(obs_dim=40, nq=25, buttons=2, subtasks=5, default_task=2, episode_limit=750),
    "puzzle-3x3": Domain(obs_dim=55, nq=23, buttons=9, subtasks=9, default_task=4, episode_limit=500),
    "puzzle-4x4": Domain(obs_dim=83, nq=30, buttons=16, subtasks=16, default_task=4, episode_limit=500),
}
ACTION_DIM = 5
EPISODES, VAL_EPISODES, LENGTH = 2, 1, 100  # 300 generated steps per domain
STEPS = 2
# horizon 10 (not the paper's 5) halves the sampler calls of the full-length evaluation episodes.
TINY = dict(hidden=16, layers=1, batch_size=8, horizon=10, flow_steps=2)
WEIGHT = 0.04
TIMES: dict = {}  # env_id -> stage -> (wall, CPU) seconds; printed with -s (`--durations=0`: each setup)


class Pipeline(NamedTuple):
    env_id: str
    domain: Domain
    name: str
    raw: dict  # the generated training file's arrays
    env: object  # the single-task env OGBench's loader made
    train_data: dict
    stats: object
    result: object  # TrainResult
    report: dict


@pytest.fixture(scope="module", params=list(DOMAINS))
def pipeline(request, tmp_path_factory):
    env_id = request.param
    folder = tmp_path_factory.mktemp(env_id)
    path = str(folder / f"{env_id}-play-v0.npz")
    name = f"{env_id}-play-singletask-v0"  # no task number: OGBench's default task
    clock = [(time.perf_counter(), time.process_time())]
    stats = generate_dataset(
        env_id,
        "play",
        num_episodes=EPISODES,
        num_val_episodes=VAL_EPISODES,
        out_path=path,
        episode_length=LENGTH,
        seed=0,
        progress=False,
    )
    clock.append((time.perf_counter(), time.process_time()))
    env, train_data, _ = load_dataset(name, dataset_path=path, add_info=True)
    clock.append((time.perf_counter(), time.process_time()))
    result = train(
        name,
        folder / "run",
        steps=STEPS,
        dataset_path=path,
        log_every=1,
        checkpoint_every=STEPS,
        progress=False,
        **TINY,
    )
    clock.append((time.perf_counter(), time.process_time()))
    report = evaluate(
        result.checkpoint_path, methods=["bc", "qgf"], weights=[WEIGHT], episodes=1, num_envs=1, progress=False
    )
    clock.append((time.perf_counter(), time.process_time()))
    stages = ("generate", "load", "train", "eval")
    TIMES[env_id] = {stage: (b[0] - a[0], b[1] - a[1]) for stage, a, b in zip(stages, clock, clock[1:])}
    TIMES[env_id]["total"] = (clock[-1][0] - clock[0][0], clock[-1][1] - clock[0][1])
    print(f"\n{env_id} (wall / CPU s): " + ", ".join(f"{k} {w:.1f} / {c:.1f}" for k, (w, c) in TIMES[env_id].items()))
    with np.load(path) as file:
        raw = {key: file[key] for key in file.files}
    yield Pipeline(env_id, DOMAINS[env_id], name, raw, env, train_data, stats, result, report)
    env.close()


# ------------------------------------------------------------------------------------------ generation


def test_generated_file_has_the_domains_layout(pipeline):
    d, raw = pipeline.domain, pipeline.raw
    rows = EPISODES * LENGTH
    expected = {
        "observations": (rows, d.obs_dim),
        "actions": (rows, ACTION_DIM),
        "terminals": (rows,),
        "qpos": (rows, d.nq),
    }
    if d.buttons:
        expected["button_states"] = (rows, d.buttons)
    assert {k: raw[k].shape for k in expected} == expected
    assert ("button_states" in raw) == bool(d.buttons)  # cube files have none, as OGBench's
    assert raw["qvel"].shape[0] == rows
    assert raw["terminals"].dtype == bool and raw["terminals"].sum() == EPISODES
    assert np.flatnonzero(raw["terminals"]).tolist() == [LENGTH - 1, 2 * LENGTH - 1]
    assert np.all(np.abs(raw["actions"]) <= 1.0) and np.ptp(raw["actions"], axis=0).min() > 0
    assert pipeline.stats.num_train_transitions == rows and pipeline.stats.num_val_transitions == LENGTH
    if d.buttons:
        assert raw["button_states"].dtype == np.int64
        assert set(np.unique(raw["button_states"])) <= {0, 1}
    # The env the loader made agrees with the file.
    assert pipeline.env.observation_space.shape == (d.obs_dim,)
    assert pipeline.env.action_space.shape == (ACTION_DIM,)


def test_the_oracle_moves_the_domains_objects(pipeline):
    """Scripted data, not an idle arm: cubes move (cube, scene) or buttons get pressed (scene, puzzle)."""
    raw = pipeline.raw
    if pipeline.env_id.startswith("cube") or pipeline.env_id == "scene":
        assert np.ptp(raw["qpos"][:, 14:17], axis=0).max() > 0.01  # the first cube's position
    if pipeline.env_id.startswith("puzzle"):
        assert np.any(np.diff(raw["button_states"], axis=0) != 0)
    effector = raw["observations"][:, 12:15]  # (effector_pos - centre) * 10, after 6 joint pos + 6 joint vel
    assert np.ptp(effector, axis=0).max() > 0.3


# ------------------------------------------------------------------------------------ reward relabelling


def test_singletask_rewards_are_ogbench_subtask_counts(pipeline):
    """reward = satisfied subtasks - all subtasks, in {-k, ..., 0}; mask 0 exactly when every subtask holds."""
    data, k = pipeline.train_data, pipeline.domain.subtasks
    rewards, masks = data["rewards"], data["masks"]
    assert rewards.shape == masks.shape == (EPISODES * (LENGTH - 1),)
    assert np.all(rewards == np.round(rewards)) and rewards.min() >= -k and rewards.max() <= 0
    np.testing.assert_array_equal(masks, (rewards < 0).astype(np.float32))


def test_relabelled_rewards_match_the_envs_own_reward_at_the_stored_state(pipeline):
    """Independent of relabel_utils: put the single-task env in each stored state and ask it for its reward."""
    data, unwrapped = pipeline.train_data, pipeline.env.unwrapped
    rows = np.arange(0, len(data["rewards"]), 7)
    for row in rows:
        if pipeline.domain.buttons:
            unwrapped.set_state(data["qpos"][row], data["qvel"][row], data["button_states"][row])
        else:
            unwrapped.set_state(data["qpos"][row], data["qvel"][row])
        assert unwrapped.compute_reward() == data["rewards"][row], f"row {row}"


def test_a_name_without_task_number_uses_the_default_task(pipeline):
    env_id, d = pipeline.env_id, pipeline.domain
    assert default_task_id(env_id) == d.default_task
    assert parse_env_name(pipeline.name).task_id == d.default_task
    assert pipeline.env.unwrapped._reward_task_id == d.default_task
    # The same rewards as the explicit name of that task (and the run and its evaluation keep the bare name).
    explicit = f"{env_id}-play-singletask-task{d.default_task}-v0"
    _, train_data, _ = load_dataset(explicit, dataset_path=pipeline.stats.train_path)
    np.testing.assert_array_equal(train_data["rewards"], pipeline.train_data["rewards"])
    assert pipeline.report["env_name"] == pipeline.name


# ------------------------------------------------------------------------------------------- training


def test_training_writes_a_checkpoint_sized_for_the_env(pipeline):
    config, state, extra = load_checkpoint(pipeline.result.checkpoint_path)
    assert (config.obs_dim, config.action_dim) == (pipeline.domain.obs_dim, ACTION_DIM)
    assert config.actor_hidden == config.critic_hidden == config.value_hidden == (TINY["hidden"],)
    assert int(state.step) == STEPS and extra["step"] == STEPS and pipeline.result.final_step == STEPS
    assert extra["env_name"] == pipeline.name
    assert extra["num_transitions"] == EPISODES * (LENGTH - 1)
    log = read_log(pipeline.result.log_path)
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))
    for key in ("policy_loss", "critic_loss", "value_loss"):
        assert all(math.isfinite(r[key]) for r in log), key


# ------------------------------------------------------------------------------------------ evaluation


def test_evaluation_reports_each_setting_within_the_episode_limit(pipeline):
    d, report = pipeline.domain, pipeline.report
    assert [r["label"] for r in report["results"]] == ["BC", f"QGF w={WEIGHT:g}"]
    for r in report["results"]:
        assert r["episodes"] == 1 and len(r["per_episode"]) == 1
        assert math.isfinite(r["success_rate"]) and 0.0 <= r["success_rate"] <= 1.0
        assert all(math.isfinite(x) and 0.0 <= x <= 1.0 for x in r["success_ci95"])
        episode = r["per_episode"][0]
        assert 1 <= episode["length"] <= d.episode_limit
        if not episode["success"]:
            assert episode["length"] == d.episode_limit  # only success or the time limit ends an episode
        # Per-step single-task rewards lie in {-k, ..., 0}.
        assert -d.subtasks * episode["length"] <= episode["return"] <= 0


def test_evaluation_env_has_the_registered_limit_and_default_task(pipeline):
    env = make_eval_env(pipeline.name)
    try:
        assert env.spec.max_episode_steps == pipeline.domain.episode_limit
        assert env.unwrapped._reward_task_id == pipeline.domain.default_task
        assert env.observation_space.shape == (pipeline.domain.obs_dim,)
        # ogbench >= 1.2.0 single-task timing (docs/algorithm.md §6): scored before the action, ends at success.
        assert env.unwrapped._success_timing == "pre" and env.unwrapped._terminate_at_goal
    finally:
        env.close()


def test_success_is_scored_on_the_state_before_the_action():
    """ogbench >= 1.2.0: a step (s, a, s') reports reward, success and termination for s, not s' (1.1.x).

    A cube dropped onto its target: every step's reward equals the reward of the state the step started
    from, and the episode ends on the first step that *starts* solved (whose action still runs).
    """
    env = make_eval_env("cube-single-play-singletask-v0")
    try:
        env.reset(seed=0)
        unwrapped = env.unwrapped
        qpos, qvel = unwrapped._data.qpos.copy(), np.zeros_like(unwrapped._data.qvel)
        target = unwrapped._data.mocap_pos[unwrapped._cube_target_mocap_ids[0]]
        qpos[14:17] = target + np.array([0.0, 0.0, 0.1])  # 10 cm above its target: not solved yet
        unwrapped.set_state(qpos, qvel)
        before = []
        for _ in range(60):
            before.append(unwrapped.compute_reward())  # the reward of the state this step starts from
            _, reward, terminated, truncated, info = env.step(np.zeros(ACTION_DIM, np.float32))
            assert reward == before[-1]
            assert bool(info["success"]) == (before[-1] == 0) == terminated
            if terminated:
                break
        assert terminated and before[0] == -1 and before[-1] == 0 and len(before) > 2
    finally:
        env.close()


# ------------------------------------------------------------------- generator settings (OGBench's datasets)


def test_random_action_share_and_episode_counts_are_ogbench_s():
    # data_gen_scripts/commands.sh: --p_random_action=0.1 (cube, scene noisy), 0.2 (puzzle noisy), none for play.
    for env_id in DOMAINS:
        assert og.random_action_probability(env_id, "play") == 0.0
        assert og.random_action_probability(env_id, "noisy") == (0.2 if env_id.startswith("puzzle") else 0.1)
    # --num_episodes: 1000, except cube-triple/puzzle-4x5 (3000) and cube-quadruple/puzzle-4x6 (5000).
    counts = {env_id: og.default_num_episodes(env_id) for env_id in og.ENV_IDS}
    assert counts == {
        "cube-single": 1000,
        "cube-double": 1000,
        "cube-triple": 3000,
        "cube-quadruple": 5000,
        "cube-octuple": 1000,
        "scene": 1000,
        "puzzle-3x3": 1000,
        "puzzle-4x4": 1000,
        "puzzle-4x5": 3000,
        "puzzle-4x6": 5000,
    }
    assert og.build_generate_parser().parse_args(["scene"]).episodes is None  # the CLI defers to these counts
    with pytest.raises(ValueError, match="Unknown environment id"):
        og.default_num_episodes("cube-sextuple")


class _ZeroOracle:
    """Stands in for every OGBench oracle: always the zero action, never done."""

    done = False

    def reset(self, ob, info):
        pass

    def select_action(self, ob, info):
        return np.zeros(ACTION_DIM)


class _AnyKey(dict):
    def __missing__(self, key):
        return _ZeroOracle()


@pytest.mark.parametrize(
    "env_id, dataset_type, share",
    [("puzzle-3x3", "noisy", 0.2), ("cube-single", "noisy", 0.1), ("cube-single", "play", 0.0)],
)
def test_noisy_data_replaces_ogbench_s_share_of_oracle_actions_with_random_ones(
    env_id, dataset_type, share, tmp_path, monkeypatch
):
    # With noise=0 the (stubbed) oracle's actions are exactly zero, so the nonzero rows are the random actions.
    monkeypatch.setattr(og, "_make_oracles", lambda *args: _AnyKey())
    length = 400
    stats = og.generate_dataset(
        env_id,
        dataset_type,
        num_episodes=1,
        num_val_episodes=1,
        episode_length=length,
        noise=0.0,
        out_path=str(tmp_path / f"{env_id}-{dataset_type}-v0.npz"),
        progress=False,
    )
    with np.load(stats.train_path) as file:
        actions = file["actions"]
    random_rows = np.any(actions != 0, axis=1)
    assert abs(random_rows.mean() - share) <= 4 * math.sqrt(share * (1 - share) / length) + 1e-9
    if share:
        chosen = actions[random_rows]
        assert np.all(np.abs(chosen) <= 1.0) and np.all(chosen.min(0) < -0.5) and np.all(chosen.max(0) > 0.5)


def test_p_random_action_is_checked_and_can_be_set(tmp_path, monkeypatch):
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="p_random_action"):
            og.generate_dataset("cube-single", num_episodes=1, p_random_action=bad, out_path=str(tmp_path / "x.npz"))

    # Explicit p=1: every action random, so the oracle is never asked (as in OGBench's generator).
    class Refusing(_ZeroOracle):
        def select_action(self, ob, info):
            raise AssertionError("the oracle was consulted on a random-action step")

    monkeypatch.setattr(og, "_make_oracles", lambda *args: {"cube": Refusing()})
    stats = og.generate_dataset(
        "cube-single",
        "play",
        num_episodes=1,
        num_val_episodes=1,
        episode_length=20,
        p_random_action=1.0,
        out_path=str(tmp_path / "cube-single-play-v0.npz"),
        progress=False,
    )
    assert stats.num_train_transitions == 20


def test_default_episode_count_reaches_generate_dataset(tmp_path, monkeypatch):
    seen = {}

    def fake_episodes(config, total, workers):
        seen.update(total=total, p_random_action=config.p_random_action)
        for _ in range(total):
            yield {
                "observations": np.zeros((2, 3), np.float32),
                "actions": np.zeros((2, 5), np.float32),
                "terminals": np.array([False, True]),
            }

    monkeypatch.setattr(og, "_iter_episodes", fake_episodes)
    stats = og.generate_dataset("puzzle-4x5", "noisy", out_path=str(tmp_path / "p.npz"), progress=False)
    assert (stats.num_train_episodes, stats.num_val_episodes) == (3000, 300) and seen["total"] == 3300
    assert seen["p_random_action"] == 0.2


def test_training_hint_names_the_domains_default_task():
    with pytest.raises(ValueError, match="puzzle-3x3-play-singletask-task4-v0"):
        require_singletask_name("puzzle-3x3-play-v0")
    with pytest.raises(ValueError, match="scene-noisy-singletask-task2-v0"):
        require_singletask_name("scene-noisy-v0")
