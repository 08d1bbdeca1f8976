"""Data-generation throughput: cube-single 'play' transitions per second with 1 and 2 worker processes.

    python benchmarks/bench_datagen.py [--episodes 12] [--episode-length 400]

Figures are end to end (environment construction and, for >1 worker, process start-up included), which is
what a user waits for; transitions per CPU-second is also given because wall-clock figures on a shared
machine depend on its other load. The last line is JSON for scripts. A full 1M-step dataset is 1100 episodes of 1001 steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile

os.environ.setdefault("MUJOCO_GL", "egl")

from qgf_lite.ogbench.generate import generate_dataset  # noqa: E402


def _cpu_seconds() -> float:
    # This process plus reaped worker processes: a figure that other load on the machine barely changes.
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def measure(workers: int, episodes: int, episode_length: int, seed: int) -> dict:
    cpu_start = _cpu_seconds()
    with tempfile.TemporaryDirectory() as folder:
        stats = generate_dataset(
            "cube-single",
            dataset_type="play",
            num_episodes=episodes,
            out_path=os.path.join(folder, "bench.npz"),
            seed=seed,
            workers=workers,
            episode_length=episode_length,
            progress=False,
        )
    cpu = _cpu_seconds() - cpu_start
    transitions = stats.num_train_transitions + stats.num_val_transitions
    return {
        "workers": stats.workers,
        "transitions": transitions,
        "seconds": round(stats.seconds, 2),
        "transitions_per_second": round(stats.transitions_per_second, 1),
        "cpu_seconds": round(cpu, 2),
        "transitions_per_cpu_second": round(transitions / cpu, 1),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=12)
    parser.add_argument("--episode-length", type=int, default=400)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    results = []
    for workers in args.workers:
        result = measure(workers, args.episodes, args.episode_length, args.seed)
        results.append(result)
        print(
            f"cube-single play, {result['workers']} worker(s): {result['transitions']} transitions in "
            f"{result['seconds']:.1f} s = {result['transitions_per_second']:.0f} transitions/s "
            f"({result['transitions_per_cpu_second']:.0f} per CPU-second, start-up included)",
            flush=True,
        )
    one_million_hours = {str(r["workers"]): round(1_101_100 / r["transitions_per_second"] / 3600, 2) for r in results}
    print(f"projected hours for a standard 1000-episode dataset (+100 val): {one_million_hours}")
    print(
        json.dumps(
            {
                "benchmark": "datagen_cube_single_play",
                "cpu_count": os.cpu_count(),
                "machine": platform.machine(),
                "episodes": args.episodes,
                "episode_length": args.episode_length,
                "results": results,
                "projected_hours_1M": one_million_hours,
            }
        )
    )


if __name__ == "__main__":
    main()
