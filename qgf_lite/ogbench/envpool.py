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
import multiprocessing.connection
import time
from collections.abc import Sequence

import numpy as np

from qgf_lite.ogbench.datasets import make_eval_env
from qgf_lite.ogbench.environments import headless_mujoco


class _EnvSlice:
    """Some environments and the chunk stepping both the workers and the in-process path use."""

    def __init__(self, env_name: str, count: int, env_kwargs: dict):
        self.envs = [make_eval_env(env_name, **env_kwargs) for _ in range(count)]
        self.busy_seconds = 0.0  # time spent resetting and stepping: what the same work costs with no sampler

    def timed(self, command: str, args: tuple, frames: list | None = None):
        start = time.perf_counter()
        result = self.reset(*args) if command == "reset" else self.step_chunks(*args, frames)
        self.busy_seconds += time.perf_counter() - start
        return result

    def reset(self, seeds: Sequence[int | None]) -> np.ndarray:
        return np.stack(
            [
                env.reset(seed=seed)[0] if seed is not None else np.zeros(env.observation_space.shape)
                for env, seed in zip(self.envs, seeds)
            ]
        )

    def step_chunks(self, chunks: np.ndarray, active: np.ndarray, frames: list | None = None) -> tuple:
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
    headless_mujoco()
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
            if command == "busy":
                result = envs.busy_seconds
            else:
                result = envs.timed(command, (payload,) if command == "reset" else payload)
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
        self._pending = {}  # in-process pools: answers computed at submit time
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
            process = context.Process(
                target=_worker,
                daemon=True,
                args=(child, env_name, int(self._bounds[k + 1] - self._bounds[k]), env_kwargs),
            )
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
                raise RuntimeError(
                    f"an evaluation worker could not make {env_name!r}: {message}; "
                    "workers=0 steps the environments in this process instead"
                )

    # ------------------------------------------------------------------ groups: one per worker process
    @property
    def groups(self) -> list:
        """The slot indices each worker owns, in order (one group of every slot for an in-process pool).

        Groups run independently: ``submit`` a command to one, go on (sample for another), ``receive`` later.
        """
        if self._local is not None:
            return [np.arange(self.num_envs)]
        return [np.arange(self._bounds[k], self._bounds[k + 1]) for k in range(self.workers)]

    def submit(self, group: int, command: str, args: tuple, frames: list | None = None) -> None:
        """Start ``command`` ("reset" with (seeds,), or "step" with (chunks, active)) on one group's slots."""
        if self._local is not None:
            self._pending[group] = self._local.timed(command, args, frames)
            return
        if frames is not None:
            raise RuntimeError("frames need an in-process pool (workers=0)")
        self._conns[group].send((command, args[0] if command == "reset" else tuple(args)))

    def ready(self, groups) -> list:
        """Those of ``groups`` whose answer has arrived; waits until there is at least one."""
        groups = list(groups)
        if self._local is not None:
            return [g for g in groups if g in self._pending]
        conns = multiprocessing.connection.wait([self._conns[g] for g in groups])
        return [g for g in groups if self._conns[g] in conns]

    def receive(self, group: int):
        """The answer of the command last submitted to ``group`` (waits for it)."""
        if self._local is not None:
            return self._pending.pop(group)
        try:
            status, result = self._conns[group].recv()
        except EOFError:
            status, result = "error", "the worker process died"
        if status == "error":
            raise RuntimeError(f"an evaluation worker failed: {result}")
        return result

    def busy_seconds(self) -> list:
        """Per group, the seconds its environments spent resetting and stepping so far (no messaging, no
        sampling): the same work's cost with nothing else in the loop, for throughput comparisons."""
        if self._local is not None:
            return [self._local.busy_seconds]
        for conn in self._conns:
            conn.send(("busy", None))
        return [self.receive(g) for g in range(self.workers)]

    # ------------------------------------------------------------------ every slot at once
    def reset(self, seeds: Sequence[int | None]) -> np.ndarray:
        seeds = list(seeds)
        if len(seeds) != self.num_envs:
            raise ValueError(f"need one seed (or None) per environment: {self.num_envs}, got {len(seeds)}")
        for g, slots in enumerate(self.groups):
            self.submit(g, "reset", ([seeds[i] for i in slots],))
        return np.concatenate([self.receive(g) for g in range(len(self.groups))])

    def step_chunks(self, chunks: np.ndarray, active: np.ndarray, frames: list | None = None) -> tuple:
        """``frames``: a list that gets environment 0's frame after every step (in-process pools only)."""
        chunks = np.asarray(chunks, np.float64)
        active = np.asarray(active, bool)
        for g, slots in enumerate(self.groups):
            self.submit(g, "step", (chunks[slots], active[slots]), frames)
        parts = [self.receive(g) for g in range(len(self.groups))]
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


__all__ = [
    "EnvPool",
]
