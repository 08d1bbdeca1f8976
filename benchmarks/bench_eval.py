"""Evaluation throughput: environment steps per second with the sampler in the loop, against raw stepping.

    python benchmarks/bench_eval.py [--workers 2] [--num-envs 10] [--episodes 20] [--quick]

Both figures use the same environments (cube-single task 2, 200-step episodes) in the same worker processes
(`qgf_lite.ogbench.envpool.EnvPool`), measured side by side in one run:

* raw: random action chunks, no sampler, episodes restarted as they end (after their worker processes started);
* evaluation: `qgf_lite.ogbench.evaluation.evaluate` on the shipped 2 x 256 checkpoint, QGF at w = 0.03 (10 Euler
  steps, 30 network evaluations per chunk), the sampler batched over every active episode in this process.
  A one-episode warm-up compiles the sampler first, so compile time is not counted.

The ratio evaluation / raw says how much of the machine's stepping speed the sampler leaves; the target is 0.7 on
2 cores. Random actions are cheaper to simulate than a policy that grasps the cube (fewer contacts), so a second
raw figure times the evaluation's own trajectories: the workers' time inside reset/step (`env_busy_seconds`),
spread over the workers. The last line is JSON for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from qgf_lite.ogbench import pretrained_checkpoint  # noqa: E402
from qgf_lite.ogbench.envpool import EnvPool  # noqa: E402
from qgf_lite.ogbench.evaluation import evaluate  # noqa: E402

ENV = "cube-single-play-singletask-task2-v0"


def raw_steps_per_second(num_envs: int, workers: int, seconds: float, horizon: int = 5) -> dict:
    rng = np.random.default_rng(0)
    with EnvPool(ENV, num_envs, workers=workers) as pool:
        pool.reset(list(range(num_envs)))
        active = np.ones(num_envs, bool)
        steps, episode = 0, num_envs
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            chunks = rng.uniform(-1, 1, (num_envs, horizon, 5))
            _, _, lengths, _, done = pool.step_chunks(chunks, active)
            steps += int(lengths.sum())
            if done.any():  # restart finished episodes so every environment keeps stepping
                seeds = [episode + i if d else None for i, d in enumerate(done)]
                episode += int(done.sum())
                pool.reset(seeds)
        elapsed = time.perf_counter() - start
    return {"env_steps": steps, "seconds": round(elapsed, 2), "env_steps_per_s": round(steps / elapsed, 1)}


def eval_steps_per_second(num_envs: int, workers: int, episodes: int) -> dict:
    checkpoint = pretrained_checkpoint()
    common = dict(methods=["qgf"], weights=[0.03], num_envs=num_envs, workers=workers, progress=False)
    evaluate(checkpoint, ENV, episodes=num_envs, seed=123, **common)  # compiles the sampler for this batch size
    start = time.perf_counter()
    report = evaluate(checkpoint, ENV, episodes=episodes, seed=0, **common)
    elapsed = time.perf_counter() - start
    row = report["results"][0]
    steps = sum(e["length"] for e in row["per_episode"])
    # Rollouts only (the row's own clock): what the sampler and the stepping cost once the workers are up.
    # End to end adds loading the checkpoint and starting the worker processes, a fixed cost per call.
    # The same trajectories with nothing but the environments in the loop: their stepping time spread over the
    # workers (random actions are not the same work: a policy that grasps the cube makes costlier contacts).
    same_work_seconds = row["env_busy_seconds"] / max(workers, 1)
    return {
        "env_steps": steps,
        "seconds": round(row["seconds"], 2),
        "env_steps_per_s": round(steps / row["seconds"], 1),
        "same_trajectories_raw_env_steps_per_s": round(steps / same_work_seconds, 1),
        "end_to_end_seconds": round(elapsed, 2),
        "end_to_end_env_steps_per_s": round(steps / elapsed, 1),
        "success_rate": row["success_rate"],
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--num-envs", type=int, default=10)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--raw-seconds", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 envs, 2 episodes, 3 s of raw stepping")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_envs, args.episodes, args.raw_seconds = 2, 2, 3.0
    raw = raw_steps_per_second(args.num_envs, args.workers, args.raw_seconds)
    print(f"raw stepping, {args.num_envs} envs in {args.workers} workers: {raw['env_steps_per_s']} env steps/s")
    inline = eval_steps_per_second(args.num_envs, args.workers, args.episodes)
    print(
        f"evaluation (QGF w=0.03, 2x256 networks): {inline['env_steps_per_s']} env steps/s in rollouts, "
        f"{inline['end_to_end_env_steps_per_s']} end to end (worker start-up included)"
    )
    ratio = inline["env_steps_per_s"] / raw["env_steps_per_s"]
    same = inline["env_steps_per_s"] / inline["same_trajectories_raw_env_steps_per_s"]
    print(
        f"raw stepping of the evaluation's own trajectories: {inline['same_trajectories_raw_env_steps_per_s']} "
        "env steps/s"
    )
    print(
        f"evaluation / raw random-action stepping: {ratio:.2f}; evaluation / raw stepping of the same "
        f"trajectories: {same:.2f} (target >= 0.70 on 2 cores)"
    )
    result = {
        "raw": raw,
        "evaluation": inline,
        "ratio": round(ratio, 3),
        "ratio_same_trajectories": round(same, 3),
        "workers": args.workers,
        "num_envs": args.num_envs,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
