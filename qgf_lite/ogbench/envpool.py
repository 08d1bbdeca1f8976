"""Evaluation environments stepped in parallel worker processes, one whole action chunk per message.

The sampler runs batched in the main process (one jitted call for every active episode); the MuJoCo stepping,
which is single-threaded Python, runs in ``workers`` processes that each own a slice of the environments. A
decision round sends every worker its chunks, (num_envs, H, action_dim), and gets back, per environment, the
observation after the chunk, the reward sum, the steps taken, success and whether the episode ended. Sending
chunks instead of single actions keeps the messages to one round trip per H steps.

Why not gymnasium's ``AsyncVectorEnv``: it steps every environment one action at a time in lockstep and resets
finished ones itself, while an evaluation here executes H actions per decision and must stop each episode at its
own end. ``workers=0`` runs the same code in this process (videos, debugging); the results are identical.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Optional, Sequence

import numpy as np


class _EnvSlice:
    """Some environments and the chunk stepping both the workers and the in-process path use."""

    def __init__(self, env_name: str, count: int, env_kwargs: dict):
        from qgf_lite.ogbench.evaluation import make_eval_env

        self.envs = [make_eval_env(env_name, **env_kwargs) for _ in range(count)]

    def reset(self, seeds: Sequence[Optional[int]]) -> np.ndarray:
        return np.stack([env.reset(seed=seed)[0] if seed is not None else np.zeros(env.observation_space.shape)
                         for env, seed in zip(self.envs, seeds)])

    def step_chunks(self, chunks: np.ndarray, active: np.ndarray, frames: Optional[list] = None) -> tuple:
        count = len(self.envs)
        obs = [None] * count
        reward_sums = np.zeros(count)
        lengths = np.zeros(count, np.int64)
        success = np.zeros(count, bool)
        done = ~active.copy()
        for i in np.flatnonzero(active):
            for action in chunks[i]:
                ob, reward, terminated, truncated, info = self.envs[i].step(action)
                reward_sums[i] += reward
                lengths[i] += 1
                success[i] |= bool(info.get("success", False))
                obs[i] = ob
                if frames is not None and i == 0:
                    frames.append(self.envs[0].render())
                if terminated or truncated:
                    done[i] = True
                    break
        shape = self.envs[0].observation_space.shape
        obs = np.stack([o if o is not None else np.zeros(shape) for o in obs])
        return obs, reward_sums, lengths, success, done

    def render(self, index: int = 0):
        return self.envs[index].render()

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _worker(conn, env_name: str, count: int, env_kwargs: dict) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        envs = _EnvSlice(env_name, count, env_kwargs)
        conn.send(("ready", None))
    except Exception as error:  # report, so the parent raises a clear error instead of hanging
        conn.send(("error", f"{type(error).__name__}: {error}"))
        return
    while True:
        command, payload = conn.recv()
        if command == "close":
            envs.close()
            conn.close()
            return
        try:
            result = envs.reset(payload) if command == "reset" else envs.step_chunks(*payload)
            conn.send(("ok", result))
        except Exception as error:
            conn.send(("error", f"{type(error).__name__}: {error}"))


class EnvPool:
    """``num_envs`` single-task OGBench environments, stepped in ``workers`` processes (0: in this process).

    ``reset(seeds)`` -> observations (num_envs, obs_dim); ``step_chunks(chunks (num_envs, H, A), active
    (num_envs,) bool)`` -> (observations, reward sums, steps taken, success, episode ended), each (num_envs,...).
    Use as a context manager, so the worker processes always end.
    """

    def __init__(self, env_name: str, num_envs: int, workers: int = 0, **env_kwargs):
        if num_envs < 1:
            raise ValueError(f"`num_envs` must be >= 1, got {num_envs}")
        if workers < 0:
            raise ValueError(f"`workers` must be >= 0, got {workers}")
        self.num_envs = num_envs
        self.workers = min(workers, num_envs)
        self._local = None
        self._conns = []
        self._processes = []
        if self.workers == 0:
            self._local = _EnvSlice(env_name, num_envs, env_kwargs)
            return
        # Contiguous slices, as even as possible: worker k owns environments [bounds[k], bounds[k + 1]).
        self._bounds = np.linspace(0, num_envs, self.workers + 1).round().astype(int)
        context = multiprocessing.get_context("spawn")  # fork would copy JAX's threads (and deadlock)
        for k in range(self.workers):
            parent, child = context.Pipe()
            process = context.Process(target=_worker, daemon=True,
                                      args=(child, env_name, int(self._bounds[k + 1] - self._bounds[k]), env_kwargs))
            process.start()
            self._conns.append(parent)
            self._processes.append(process)
        for k, conn in enumerate(self._conns):
            try:
                status, message = conn.recv()
            except EOFError:  # the process died before it could answer (e.g. a spawn that cannot re-import __main__)
                status, message = "error", f"worker process exited with code {self._processes[k].exitcode}"
            if status == "error":
                self.close()
                raise RuntimeError(f"an evaluation worker could not make {env_name!r}: {message}; "
                                   "workers=0 steps the environments in this process instead")

    def _scatter(self, command: str, per_env_args: list) -> list:
        for k, conn in enumerate(self._conns):
            lo, hi = self._bounds[k], self._bounds[k + 1]
            args = [a[lo:hi] for a in per_env_args]
            conn.send((command, args[0] if command == "reset" else tuple(args)))
        results = []
        for conn in self._conns:
            try:
                status, result = conn.recv()
            except EOFError:
                status, result = "error", "the worker process died"
            if status == "error":
                raise RuntimeError(f"an evaluation worker failed: {result}")
            results.append(result)
        return results

    def reset(self, seeds: Sequence[Optional[int]]) -> np.ndarray:
        seeds = list(seeds)
        if len(seeds) != self.num_envs:
            raise ValueError(f"need one seed (or None) per environment: {self.num_envs}, got {len(seeds)}")
        if self._local is not None:
            return self._local.reset(seeds)
        return np.concatenate(self._scatter("reset", [seeds]))

    def step_chunks(self, chunks: np.ndarray, active: np.ndarray, frames: Optional[list] = None) -> tuple:
        """``frames``: a list that gets environment 0's frame after every step (in-process pools only)."""
        chunks = np.asarray(chunks, np.float64)
        active = np.asarray(active, bool)
        if self._local is not None:
            return self._local.step_chunks(chunks, active, frames)
        if frames is not None:
            raise RuntimeError("frames need an in-process pool (workers=0)")
        parts = self._scatter("step", [chunks, active])
        return tuple(np.concatenate([p[j] for p in parts]) for j in range(5))

    def env(self, index: int = 0):
        """Environment ``index`` itself (in-process pools only)."""
        if self._local is None:
            raise RuntimeError("env() needs an in-process pool (workers=0)")
        return self._local.envs[index]

    def render(self):
        """A frame of environment 0 (in-process pools only: frames are for videos)."""
        return self.env(0).render()

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
        for conn in self._conns:
            try:
                conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
        self._conns, self._processes = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
