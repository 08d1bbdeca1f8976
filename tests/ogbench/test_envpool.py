"""Evaluation environments in worker processes step exactly like the same environments in this process."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from qgf_lite.ogbench.envpool import EnvPool  # noqa: E402

ENV = "cube-single-play-singletask-task2-v0"


def _roll(pool: EnvPool, rounds: int = 8, horizon: int = 5):
    rng = np.random.default_rng(0)
    obs = pool.reset([11, 12, 13])
    active = np.ones(3, bool)
    trace = [obs]
    for _ in range(rounds):
        chunks = rng.uniform(-1, 1, (3, horizon, 5))
        obs, rewards, lengths, success, done = pool.step_chunks(chunks, active)
        trace += [obs, rewards, lengths, success, done]
        active &= ~done
    return trace


def test_worker_processes_step_exactly_like_in_process_envs():
    with EnvPool(ENV, 3, workers=0) as local, EnvPool(ENV, 3, workers=2) as remote:
        local_trace, remote_trace = _roll(local), _roll(remote)
    assert len(local_trace) == len(remote_trace)
    for a, b in zip(local_trace, remote_trace):
        np.testing.assert_array_equal(a, b)
    assert local_trace[3].max() == 5  # a full chunk of steps per active env


def test_inactive_envs_are_not_stepped_and_report_done():
    with EnvPool(ENV, 2, workers=0) as pool:
        pool.reset([1, 2])
        _, rewards, lengths, _, done = pool.step_chunks(np.zeros((2, 5, 5)), np.array([True, False]))
    assert lengths.tolist() == [5, 0] and rewards[1] == 0 and done[1]


def test_bad_arguments_and_bad_envs_are_named():
    with pytest.raises(ValueError, match="num_envs"):
        EnvPool(ENV, 0)
    with pytest.raises(ValueError, match="workers"):
        EnvPool(ENV, 2, workers=-1)
    with pytest.raises(RuntimeError, match="could not make 'cube-single-play-singletask-task9-v0'"):
        EnvPool("cube-single-play-singletask-task9-v0", 2, workers=1)
    with EnvPool(ENV, 2, workers=0) as pool, pytest.raises(ValueError, match="one seed"):
        pool.reset([1])


def test_evaluation_results_do_not_depend_on_workers_or_slot_count():
    """Episodes refill free slots as others end, in worker processes or not: every episode's start state and
    noise depend only on its index, so the per-episode results are the same."""
    from qgf_lite.ogbench import pretrained_checkpoint
    from qgf_lite.ogbench.evaluation import evaluate

    runs = [
        evaluate(
            pretrained_checkpoint(),
            ENV,
            methods=["qgf"],
            weights=[0.03],
            episodes=3,
            num_envs=num_envs,
            workers=workers,
            seed=5,
            progress=False,
        )["results"][0]["per_episode"]
        for num_envs, workers in ((1, 0), (2, 0), (2, 2))
    ]
    assert runs[0] == runs[1] == runs[2]
    assert [e["episode"] for e in runs[0]] == [0, 1, 2]
