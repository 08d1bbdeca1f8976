"""Streaming OGBench's 100M layout: training steps/s while rotating slices, against one slice held in memory.

    python benchmarks/bench_slices.py [--slices 4] [--rows 200000] [--rotations 4] [--repeats 2] \\
        [--hidden 64 --layers 2 --batch-size 256] [--folder DIR] [--out benchmarks/results/bench_slices_cpu.json]

Three ways to train the same number of steps with the same compiled trainer (``qgf_lite.training.fit``, chunks of
``--rotate-every`` steps), timed side by side in one process, each repeated ``--repeats`` times in turn:

* ``in_memory``: one slice in device memory for the whole run (the upper bound: no slice ever changes);
* ``streamed``: ``SliceStream`` (``qgf_lite.streaming``), a new slice every ``--rotate-every`` steps, the next
  one read from disk, relabelled and put on the device by a background thread while the current one trains;
* ``synchronous``: the official code's pattern, the next slice read at each swap while training waits.

Data: without ``--folder``, ``qgf-lite generate``'s oracles write one small real slice (``--episodes`` episodes of
cube-single play data), and ``--slices`` slices of ``--rows`` transitions are made from it in OGBench's layout
(``<env>-play-v0-000.npz``, ...) by repeating its episodes with small observation noise, so each slice costs
what a real one of that size costs to read and relabel, without hours of oracle time. With ``--folder``, an
existing 100M-layout folder is used as is (a real one has 1M-transition slices).

The figure of merit is ``streamed / in_memory`` steps/s (target >= 0.95); ``synchronous / in_memory`` shows what
the stall at every swap costs. Both ratios use the median over chunks (the time from one chunk's end to the next,
the swap included), which a burst of other work on a shared machine moves less than whole-run times (also
reported, ``run_ratios``). The last line printed is the JSON written to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from qgf_lite.data import dataset_from_dict  # noqa: E402
from qgf_lite.fileio import atomic_write_bytes  # noqa: E402
from qgf_lite.ogbench.datasets import find_slice_files, load_slice, make_singletask_env, slice_file_name  # noqa: E402
from qgf_lite.ogbench.train import make_config, slice_stream  # noqa: E402
from qgf_lite.training import fit, init_train_state  # noqa: E402

ENV = "cube-single-play-singletask-task2-v0"


def build_slices(folder: Path, slices: int, rows: int, episodes: int, seed: int) -> dict:
    """``slices`` files of about ``rows`` transitions in OGBench's 100M layout, from one small oracle-made slice."""
    from qgf_lite.ogbench.generate import generate_dataset

    t0 = time.perf_counter()
    source = folder / "source" / "cube-single-play-v0.npz"
    generate_dataset(
        "cube-single",
        num_episodes=episodes,
        out_path=str(source),
        seed=seed,
        workers=1,
        num_val_episodes=1,
        progress=False,
    )
    generate_s = time.perf_counter() - t0
    with np.load(source) as f:
        base = {k: f[k] for k in f.files}
    with np.load(source.with_name("cube-single-play-v0-val.npz")) as f:
        val = {k: f[k] for k in f.files}
    length = len(base["terminals"])
    copies = max(1, rows // length)
    rng = np.random.default_rng(seed)
    target = folder / "cube-single-play-100m-v0"
    target.mkdir(parents=True, exist_ok=True)
    for i in range(slices):
        arrays = {k: np.concatenate([v] * copies) for k, v in base.items()}
        # distinct slices: observations jittered (rewards come from qpos, which stays the oracle's)
        arrays["observations"] = arrays["observations"] + rng.normal(0, 1e-3, arrays["observations"].shape).astype(
            arrays["observations"].dtype
        )
        np.savez_compressed(target / slice_file_name(ENV, i), **arrays)  # OGBench's files are compressed too
        np.savez_compressed(target / slice_file_name(ENV, i).replace(".npz", "-val.npz"), **val)
    return {
        "oracle_episodes": episodes,
        "oracle_transitions": length,
        "copies_per_slice": copies,
        "transitions_per_slice": copies * length,
        "generate_s": generate_s,
        "build_s": time.perf_counter() - t0 - generate_s,
    }


def time_fit(config, state, data, steps: int, rotate_every: int) -> dict:
    """Steps/s of one run, and of each chunk: the time between two chunk ends (the swap included for a stream)."""
    ends = []

    def note(_state, _record):
        ends.append(time.perf_counter())  # after the chunk's metrics arrived and, for a stream, after the swap

    t0 = time.perf_counter()
    # rotate_every only matters to a stream; the in-memory run trains in chunks of the same length
    state, history = fit(
        config, state, data, steps, chunk_size=rotate_every, progress=False, callback=note, rotate_every=rotate_every
    )
    jax.block_until_ready(state.step)
    seconds = time.perf_counter() - t0
    chunk_s = np.diff([t0] + ends).tolist()
    return {
        "seconds": seconds,
        "steps_per_s": steps / seconds,
        "chunk_s": chunk_s,
        "slices": [r.get("slice") for r in history],
    }


def measure_rotation(
    folder: Path,
    make_cfg,
    *,
    rotate_every: int,
    rotations: int,
    repeats: int,
    seed: int = 0,
    deadline: float | None = None,
    log=print,
) -> dict:
    """The three runs of the module docstring on the 100M-layout ``folder`` (slices of ``ENV``), side by side.

    ``make_cfg(obs_dim, action_dim)`` gives the QGFConfig to train. Each repeat runs in_memory, streamed and
    synchronous in turn; with a ``deadline`` (time.perf_counter()), no repeat after the first starts unless the last
    one's duration still fits. Returns the config, the data's figures, one slice's load time, the compile time,
    every run, median run and chunk steps/s and the ratios (chunk medians; whole-run medians in ``run_ratios``).
    """
    paths = find_slice_files(str(folder), ENV)
    data = {"num_slices": len(paths), "slice_mb": [round(os.path.getsize(p) / 2**20, 1) for p in paths]}

    # One slice's load, timed alone: what the synchronous pattern waits for at every swap.
    env = make_singletask_env(ENV)
    t0 = time.perf_counter()
    memory = dataset_from_dict(load_slice(ENV, paths[0], env=env))
    jax.block_until_ready(memory.observations)
    load_s = time.perf_counter() - t0
    config = make_cfg(memory.obs_dim, memory.action_dim)
    steps = rotations * rotate_every
    state0 = init_train_state(config, jax.random.PRNGKey(seed))
    t0 = time.perf_counter()
    fit(config, state0, memory, rotate_every, chunk_size=rotate_every, progress=False)  # compile
    compile_s = time.perf_counter() - t0

    runs = {"in_memory": [], "streamed": [], "synchronous": []}
    last_s = 0.0
    for repeat in range(repeats):
        if repeat and deadline is not None and time.perf_counter() + last_s > deadline:
            break
        t0 = time.perf_counter()
        for mode in runs:
            if mode == "in_memory":
                figures = time_fit(config, state0, memory, steps, rotate_every)
                del figures["slices"]  # one slice throughout: no slice indices
                runs[mode].append(figures)
                log(f"in_memory: {runs[mode][-1]['steps_per_s']:.1f} steps/s")
                continue
            with slice_stream(ENV, str(folder), prefetch=mode == "streamed") as stream:
                figures = time_fit(config, state0, stream, steps, rotate_every)
                figures.update(wait_s=stream.wait_s, max_resident=stream.max_resident, loads=stream.loads)
            runs[mode].append(figures)
            log(f"{mode}: {figures['steps_per_s']:.1f} steps/s, waited {figures['wait_s']:.2f} s")
        last_s = time.perf_counter() - t0

    median = {mode: statistics.median(r["steps_per_s"] for r in rs) for mode, rs in runs.items()}
    # On a shared machine a burst of other work slows whichever run it lands in. The median chunk (every chunk
    # of every repeat of a mode) is the steadier figure; the ratios below use it.
    chunk = {mode: rotate_every / statistics.median(s for r in rs for s in r["chunk_s"]) for mode, rs in runs.items()}
    return {
        "config": config,
        "data": data,
        "one_slice_load_s": load_s,
        "compile_s": compile_s,
        "repeats_run": len(runs["in_memory"]),
        "runs": runs,
        "median_run_steps_per_s": median,
        "median_chunk_steps_per_s": chunk,
        "run_ratios": {
            "streamed_vs_in_memory": median["streamed"] / median["in_memory"],
            "synchronous_vs_in_memory": median["synchronous"] / median["in_memory"],
        },
        "streamed_vs_in_memory": chunk["streamed"] / chunk["in_memory"],
        "synchronous_vs_in_memory": chunk["synchronous"] / chunk["in_memory"],
        "streamed_vs_synchronous": chunk["streamed"] / chunk["synchronous"],
        "target": "streamed_vs_in_memory >= 0.95",
        "target_met": chunk["streamed"] / chunk["in_memory"] >= 0.95,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", default=None, help="an existing 100M-layout folder (default: build one, see above)")
    p.add_argument("--slices", type=int, default=4)
    p.add_argument("--rows", type=int, default=200_000, help="transitions per built slice (a real one: 1M)")
    p.add_argument("--episodes", type=int, default=5, help="oracle episodes the built slices repeat")
    p.add_argument("--rotate-every", type=int, default=1000)
    p.add_argument("--rotations", type=int, default=4, help="slice swaps per timed run (steps = this x rotate-every)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    for name in (
        "slices",
        "rows",
        "episodes",
        "rotate_every",
        "rotations",
        "repeats",
        "hidden",
        "layers",
        "batch_size",
    ):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")

    with tempfile.TemporaryDirectory(prefix="bench_slices_") as scratch:
        data_info = {"folder": args.folder}
        folder = Path(args.folder) if args.folder else None
        if folder is None:
            data_info.update(build_slices(Path(scratch), args.slices, args.rows, args.episodes, args.seed))
            folder = Path(scratch) / "cube-single-play-100m-v0"
        figures = measure_rotation(
            folder,
            lambda obs_dim, action_dim: make_config(
                obs_dim, action_dim, hidden=args.hidden, layers=args.layers, batch_size=args.batch_size
            ),
            rotate_every=args.rotate_every,
            rotations=args.rotations,
            repeats=args.repeats,
            seed=args.seed,
        )
        data_info.update(figures.pop("data"))
    config = figures.pop("config")
    steps = args.rotations * args.rotate_every

    report = {
        "schema": "qgf_lite.bench_slices/1",
        "command": "python benchmarks/bench_slices.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "started_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind}",
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "jax_version": jax.__version__,
        "python": platform.python_version(),
        "env": ENV,
        "data": data_info,
        "config": {
            "hidden": args.hidden,
            "layers": args.layers,
            "batch_size": args.batch_size,
            "horizon": config.horizon,
            "rotate_every": args.rotate_every,
            "steps_per_run": steps,
            "repeats": args.repeats,
        },
        **figures,
    }
    text = json.dumps(report, indent=1)
    if args.out:
        atomic_write_bytes(args.out, text.encode() + b"\n")
    print(
        json.dumps(
            {
                k: report[k]
                for k in (
                    "median_chunk_steps_per_s",
                    "run_ratios",
                    "streamed_vs_in_memory",
                    "synchronous_vs_in_memory",
                    "one_slice_load_s",
                )
            }
        )
    )
    return report


if __name__ == "__main__":
    main()
