"""One-command GPU check: qgf_lite's kernels, seed throughput and training at both presets (the paper's and the
official code's defaults), streaming OGBench's 100M layout, and a short cube-double run, timed on one device and
written to one JSON file.

    python benchmarks/gpu_check.py [--out gpu_check.json] [--budget-s 450] [--quick] [--workers N] [--workdir DIR]
    bash benchmarks/gpu_check.sh [same options]   # installs carried wheels first (benchmarks/README.md "GPU check")

Sections, in this order, each timed:

1. ``bench_kernels``: benchmarks/bench_kernels.py's own functions (imported, not copied): the scan trainer
   against the reference's per-step pattern on the official-defaults config and the toy config, and
   guided-sampling latency (QGF, 10 steps, official-defaults networks) at batch 1 and 1000.
2. ``seed_throughput``: the scan trainer (``compiled_train_steps(multi_seed=True)`` on ``init_train_states``)
   with 1, 4 and 16 seeds vmapped on the official-defaults config: steps/s per seed, seed-steps/s in all, and
   each count's seed-steps/s over one seed's.
3. ``paper_seed_throughput``: the same at the paper preset with 1, 4, 10 (the paper's seed count; target: >= 6x
   one seed's seed-steps/s) and 16 seeds.
4. ``paper_train``: the paper preset (``QGFConfig.paper``: 4 x 1024, batch 1024, discount 0.999, H = 5), one
   seed: train steps/s, the time 500k steps would take, and the device's peak memory where it reports one.
5. ``official_defaults_train``: the official-defaults preset (4 x 512, batch 256, H = 5), one seed: train steps/s.
6. ``slice_rotation``: benchmarks/bench_slices.py's measurement at the paper preset: three slices in OGBench's
   100M layout (made from cube-single oracle episodes), trained with one slice in memory, streamed (the next
   slice loaded and put on the device in the background, a swap every 1000 steps) and swapped synchronously (the
   official loop): steps/s and the ratios (target: streamed >= 0.95x in memory).
7. ``cube_double``: a small cube-double play dataset from OGBench's oracles (``generate_dataset``, one worker
   per CPU), 4 x 512 networks trained for a few thousand steps (``ogbench.train.train``), then BC and QGF at two
   weights evaluated on a few episodes (``ogbench.evaluation.evaluate``): success rates with 95% intervals.

**Budget.** ``--budget-s`` (default 450 s, counted from process start) is shared out: each section gets its
weight's share of what is left (unused time passes on), starts only if at least its minimum is left (else it
is recorded as ``"skipped: budget"``), and shrinks its own work to its share (fewer timed calls, fewer
episodes, training stopped at its deadline). The JSON is rewritten (atomically) after every section, so a run
killed from outside still leaves the sections it finished. ``--quick`` makes every size tiny: the same code
runs end to end on a CPU in well under a minute (``tests/test_gpu_check.py``).
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # the budget counts from start-up, before the heavy imports

import argparse  # noqa: E402
import ctypes  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _path in (str(HERE), str(REPO)):  # this checkout's qgf_lite and bench_kernels, also when run as a file
    if _path not in sys.path:
        sys.path.insert(0, _path)


def egl_available() -> bool:
    """Whether libEGL loads: MuJoCo and dm_control import their EGL backends when MUJOCO_GL=egl."""
    for name in ("libEGL.so.1", "libEGL.so"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            pass
    return False


# MuJoCo reads MUJOCO_GL at its first import. Nothing here renders, so without EGL turn GL off rather than fail.
EGL_AVAILABLE = egl_available()
os.environ.setdefault("MUJOCO_GL", "egl" if EGL_AVAILABLE else "disable")

import bench_kernels as bench  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

import qgf_lite  # noqa: E402
from qgf_lite.fileio import atomic_write_bytes  # noqa: E402
from qgf_lite.training import QGFConfig  # noqa: E402

SCHEMA = "qgf_lite.gpu_check/1"
# --quick as a script, when XLA_FLAGS is unset: compile with XLA's cheap settings. A smoke run's timings mean
# nothing, and this halves its wall time on a CPU, where compilation is most of it.
QUICK_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
SKIPPED = "skipped: budget"
TARGET_WALL_S = 480  # the whole check, install included, on one H100/H200


# ------------------------------------------------------------------ plans
@dataclasses.dataclass(frozen=True)
class CubePlan:
    """Sizes of the cube-double run, and the rough costs used to fit it into its share of the budget."""

    env_id: str = "cube-double"
    task_env: str = "cube-double-play-singletask-task2-v0"
    episodes: int = 100  # training episodes generated (+ 10% validation episodes)
    episode_length: int = 1001  # OGBench's standard
    train_steps: int = 5000
    log_every: int = 1000  # training chunk; a checkpoint is written after each, so stopping early loses nothing
    hidden: int = 512
    layers: int = 4
    batch_size: int = 256
    horizon: int = 5
    eval_weights: tuple = (0.02, 0.08)
    eval_episodes: int = 10  # per setting (bc, then qgf at each weight)
    # Rough costs for sizing (conservative; the generation's measured rate replaces the first for evaluation).
    env_steps_per_s: float = 250.0  # one core, oracle or policy included
    worker_start_s: float = 20.0  # spawning the generation workers (each imports jax, mujoco, ogbench)
    compile_s: float = 20.0  # one sampler's or trainer's compilation
    sampler_call_s: float = 0.01  # one batched chunk-sampler call
    env_make_s: float = 1.0  # building one evaluation environment


@dataclasses.dataclass(frozen=True)
class SlicePlan:
    """Sizes of the 100M-layout rotation run (benchmarks/bench_slices.py's measurement at the paper preset)."""

    slices: int = 3
    rows: int = 300_000  # transitions per slice (OGBench's are 1M; 300k keeps the build inside the budget)
    oracle_episodes: int = 5  # cube-single oracle episodes the slices repeat, with jittered observations
    rotate_every: int = 1000  # the official loop's swap interval
    rotations: int = 3  # swaps per timed run
    repeats: int = 2


@dataclasses.dataclass(frozen=True)
class Plan:
    mode: str
    paper: QGFConfig  # the paper's setting (docs/algorithm.md "Presets")
    official_defaults: QGFConfig  # the reference code's defaults: 4 x 512, batch 256
    toy: QGFConfig
    kernel_sizes: bench.Sizes
    seed_counts: tuple = (1, 4, 16)
    # The paper runs 10 seeds; its GPU target is 10 vmapped seeds at >= 6x the seed-steps/s of one.
    paper_seed_counts: tuple = (1, 4, 10, 16)
    seed_steps_per_call: int = 200
    train_steps_per_call: int = 1000
    target_call_s: float = 1.0  # fewer steps per call when the measured rate says a call would take longer
    min_steps_per_call: int = 20
    min_timed_s: float = 2.0  # time each throughput over at least this much work ...
    max_timed_calls: int = 10  # ... and at most this many calls (always at least one)
    cube: CubePlan = CubePlan()
    slices: SlicePlan = SlicePlan()
    # Sections in order: (name, weight of the remaining budget, minimum seconds needed to start).
    sections: tuple = (
        ("bench_kernels", 0.2, 30.0),
        ("seed_throughput", 0.12, 20.0),
        ("paper_seed_throughput", 0.15, 25.0),
        ("paper_train", 0.08, 15.0),
        ("official_defaults_train", 0.04, 10.0),
        ("slice_rotation", 0.11, 30.0),
        ("cube_double", 0.3, 60.0),
    )
    reserve_s: float = 3.0  # kept back for the final write


def full_plan(backend: str = "gpu") -> Plan:
    """The GPU run: both presets and bench_kernels' toy config, windows long enough to time on a fast device.

    On a CPU backend (no GPU found) the kernels keep bench_kernels' own CPU-sized windows instead, so one
    timing window cannot eat the budget; the other sections size themselves from the measured rates.
    """
    if backend == "cpu":
        sizes = dataclasses.replace(bench.FULL, cpu_tuned_variants=False)
    else:
        sizes = bench.Sizes(
            num_transitions=100_000,
            episode_length=1000,
            official_defaults_steps_per_rep=100,
            toy_steps_per_rep=500,
            train_reps=5,
            guided_batches=(1, 1000),
            latency_repeats=21,
            latency_budget_s=3.0,
            cpu_tuned_variants=False,
        )
    return Plan(
        mode="full",
        paper=bench.PAPER_CONFIG,
        official_defaults=bench.OFFICIAL_DEFAULTS_CONFIG,
        toy=bench.TOY_CONFIG,
        kernel_sizes=sizes,
    )


def quick_plan() -> Plan:
    """Every size tiny, so the same code runs end to end on a CPU in well under a minute."""
    hidden = (16, 16)
    tiny = QGFConfig(
        obs_dim=8,
        action_dim=2,
        horizon=3,
        actor_hidden=hidden,
        critic_hidden=hidden,
        value_hidden=hidden,
        batch_size=16,
    )
    # One tiny config in every training slot (both presets, toy): its programs compile once, not four times.
    sizes = bench.Sizes(
        num_transitions=200,
        episode_length=50,
        official_defaults_steps_per_rep=2,
        toy_steps_per_rep=2,
        train_reps=1,
        guided_batches=(1, 1000),
        latency_repeats=2,
        latency_budget_s=0.5,
        slider_particles=16,
        cpu_tuned_variants=False,
    )
    cube = CubePlan(
        episodes=2,
        episode_length=60,
        train_steps=20,
        log_every=10,
        hidden=16,
        layers=2,
        batch_size=16,
        eval_episodes=1,
        env_steps_per_s=200.0,
        worker_start_s=0.0,
        compile_s=2.0,
        sampler_call_s=0.002,
        env_make_s=1.0,
    )
    # train_steps_per_call equals the kernels' scan window, so the preset sections reuse that compiled trainer.
    return Plan(
        mode="quick",
        paper=tiny,
        official_defaults=tiny,
        toy=tiny,
        kernel_sizes=sizes,
        seed_steps_per_call=2,
        train_steps_per_call=2,
        min_steps_per_call=2,
        min_timed_s=0.0,
        max_timed_calls=2,
        cube=cube,
        slices=SlicePlan(slices=2, rows=1000, oracle_episodes=1, rotate_every=2, rotations=2, repeats=1),
        sections=(
            ("bench_kernels", 0.2, 3.0),
            ("seed_throughput", 0.12, 2.0),
            ("paper_seed_throughput", 0.12, 2.0),
            ("paper_train", 0.08, 1.0),
            ("official_defaults_train", 0.04, 1.0),
            ("slice_rotation", 0.14, 4.0),
            ("cube_double", 0.3, 6.0),
        ),
        reserve_s=0.5,
    )


# ------------------------------------------------------------------ budget
class Budget:
    """``total_s`` seconds from ``start`` (on ``clock``), less ``reserve_s`` kept back for the final write."""

    def __init__(
        self, total_s: float, start: float, reserve_s: float = 0.0, clock: Callable[[], float] = time.perf_counter
    ):
        self.total_s, self.start, self.reserve_s, self.clock = float(total_s), float(start), float(reserve_s), clock

    def elapsed(self) -> float:
        return self.clock() - self.start

    def remaining(self) -> float:
        return self.total_s - self.reserve_s - self.elapsed()

    def allot(self, weight: float, later_weights: Sequence[float], min_s: float) -> float | None:
        """Seconds for the next section: its weight's share of what is left, at least ``min_s``; None to skip.

        Time a section leaves unused stays in the pot for the ones after it.
        """
        remaining = self.remaining()
        if remaining < min_s:
            return None
        share = remaining * weight / (weight + sum(later_weights))
        return min(remaining, max(share, min_s))


@dataclasses.dataclass
class Section:
    name: str
    weight: float
    min_s: float
    run: Callable[[float], dict]  # deadline (on the budget's clock) -> figures


def run_sections(
    sections: Sequence[Section],
    budget: Budget,
    on_update: Callable[[dict], None] = lambda r: None,
    log: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Run each section in its allotment, or record why not; never raises for a failing section."""
    results: dict[str, dict] = {}
    for i, section in enumerate(sections):
        allotted = budget.allot(section.weight, [s.weight for s in sections[i + 1 :]], section.min_s)
        start = budget.elapsed()
        record = {
            "status": SKIPPED,
            "ran": False,
            "allotted_s": allotted,
            "min_s": section.min_s,
            "started_at_s": start,
            "seconds": 0.0,
        }
        if allotted is None:
            log(
                f"[{start:6.1f} s] {section.name}: {SKIPPED} ({budget.remaining():.1f} s left,"
                f" needs {section.min_s:g} s)"
            )
        else:
            log(f"[{start:6.1f} s] {section.name}: start, {allotted:.0f} s allotted")
            t0 = budget.clock()
            try:
                record.update(section.run(t0 + allotted))
                record.update(status="ok", ran=True)
            except Exception as err:  # a broken section must not cost the others their figures
                record.update(
                    status=f"error: {type(err).__name__}: {err}", ran=False, traceback=traceback.format_exc(limit=20)
                )
            record["seconds"] = budget.clock() - t0
            log(f"[{budget.elapsed():6.1f} s] {section.name}: {record['status']} in {record['seconds']:.1f} s")
        results[section.name] = record
        on_update(results)
    return results


# ------------------------------------------------------------------ measurement helpers
def describe(config: QGFConfig) -> dict:
    return {
        "obs_dim": config.obs_dim,
        "action_dim": config.action_dim,
        "horizon": config.horizon,
        "chunk_dim": config.chunk_dim,
        "actor_hidden": list(config.actor_hidden),
        "critic_hidden": list(config.critic_hidden),
        "value_hidden": list(config.value_hidden),
        "num_critics": config.num_critics,
        "layer_norm": config.layer_norm,
        "batch_size": config.batch_size,
        "discount": config.discount,
    }


def timed_calls(call: Callable[[], object], *, min_s: float, max_calls: int, deadline: float) -> dict:
    """One untimed first call (compilation and warm-up), then timed calls, each blocked on, until ``min_s`` of
    timed work, ``max_calls`` calls or the deadline (at least one timed call). Median seconds per call."""
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - t0
    times: list[float] = []
    while True:
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - t0)
        if len(times) >= max_calls or sum(times) >= min_s or time.perf_counter() >= deadline:
            break
    return {"first_call_s": first, "call_s": statistics.median(times), "calls": len(times)}


def require_finite(name: str, metrics: dict) -> dict:
    """Mean of each metric over the last call; raises if any loss is NaN/inf (a timing would mean nothing)."""
    means = {k: float(np.mean(np.asarray(v))) for k, v in metrics.items()}
    bad = [k for k, v in means.items() if not math.isfinite(v)]
    if bad:
        raise RuntimeError(f"{name}: non-finite {', '.join(bad)}")
    return {k: v for k, v in means.items() if k.endswith("loss")}


# The paper preset's step costs about this many official-defaults steps: twice the width (4x the matmul work) on
# four times the batch. Only sizes its first timing window; the window's own timing is what is reported.
PAPER_COST_FACTOR = 16.0


def steps_per_call(plan: Plan, planned: int, measured: dict, cost_factor: float = 1.0) -> int:
    """``planned`` steps, fewer if the kernels' measured official-defaults rate (divided by ``cost_factor``, the
    step's cost relative to it) says one call would exceed target_call_s."""
    rate = measured.get("official_defaults_scan_steps_per_s")
    rate = rate / cost_factor if rate else rate
    if not rate or plan.mode == "quick":
        return planned
    fit = int(rate * plan.target_call_s) // 10 * 10
    return max(plan.min_steps_per_call, min(planned, fit))


def synthetic_dataset(config: QGFConfig, sizes) -> object:
    arrays = bench.synthetic_transitions(
        sizes.num_transitions, config.obs_dim, config.action_dim, sizes.episode_length, 0
    )
    return bench.device_dataset(arrays, config)


# ------------------------------------------------------------------ sections
def section_bench_kernels(plan: Plan, deadline: float, measured: dict) -> dict:
    sizes = plan.kernel_sizes
    out: dict = {
        "sizes": dataclasses.asdict(sizes),
        "skipped": [],
        "configs": {"official_defaults": describe(plan.official_defaults), "toy": describe(plan.toy)},
    }
    last_s = 0.0
    for i, (tag, config, steps) in enumerate(
        (
            ("official_defaults", plan.official_defaults, sizes.official_defaults_steps_per_rep),
            ("toy", plan.toy, sizes.toy_steps_per_rep),
        )
    ):
        if i and time.perf_counter() + last_s > deadline:
            out["skipped"].append(f"training_{tag}")
            for key in ("train_steps_per_s", "step_pattern_steps_per_s", "scan_vs_step_ratio"):
                out[f"{key}_{tag}"] = SKIPPED
            continue
        t0 = time.perf_counter()
        arrays = bench.synthetic_transitions(
            sizes.num_transitions, config.obs_dim, config.action_dim, sizes.episode_length, 0
        )
        r = bench.bench_training(config, arrays, steps, sizes.train_reps)
        out[f"train_steps_per_s_{tag}"] = r["scan_steps_per_s"]
        out[f"step_pattern_steps_per_s_{tag}"] = r["step_steps_per_s"]
        out[f"scan_vs_step_ratio_{tag}"] = r["ratio"]
        out[f"scan_cpu_ms_per_step_{tag}"] = r["scan_cpu_ms_per_step"]
        out[f"step_pattern_cpu_ms_per_step_{tag}"] = r["step_cpu_ms_per_step"]
        last_s = time.perf_counter() - t0
        out[f"training_{tag}_s"] = last_s  # compilation included
        if tag == "official_defaults":
            measured["official_defaults_scan_steps_per_s"] = r["scan_steps_per_s"]
    for batch in sizes.guided_batches:
        if time.perf_counter() >= deadline:
            out["skipped"].append(f"guided_batch{batch}")
            out[f"guided_ms_batch{batch}"] = SKIPPED
            continue
        g = bench.bench_guided(plan.official_defaults, batch, sizes.latency_repeats, sizes.latency_budget_s)
        out[f"guided_ms_batch{batch}"] = g["ms"]
        out[f"guided_cpu_ms_batch{batch}"] = g["cpu_ms"]
        out[f"guided_calls_batch{batch}"] = g["calls"]
    out["guided_steps"], out["guided_weight"] = bench.GUIDED_STEPS, bench.GUIDED_WEIGHT
    return out


def section_seed_throughput(
    plan: Plan,
    deadline: float,
    measured: dict,
    config: QGFConfig | None = None,
    preset: str = "official-defaults",
    counts: Sequence[int] | None = None,
    cost_factor: float = 1.0,
) -> dict:
    """Seeds vmapped on one device (``counts``, default ``plan.seed_counts``) at ``config`` (default: the official
    defaults): steps/s per seed, seed-steps/s in all, and each count's seed-steps/s over one seed's."""
    config = plan.official_defaults if config is None else config
    counts = tuple(plan.seed_counts if counts is None else counts)
    dataset = synthetic_dataset(config, plan.kernel_sizes)
    steps = steps_per_call(plan, plan.seed_steps_per_call, measured, cost_factor)
    out: dict = {
        "preset": preset,
        "config": describe(config),
        "steps_per_call": steps,
        "per_num_seeds": {},
        "skipped": [],
    }
    # One initialisation for the largest count; the first n seeds of it are init_train_states(range(n)) exactly
    # (vmap initialises each seed on its own), and one compilation serves every count.
    t0 = time.perf_counter()
    all_states = jax.block_until_ready(qgf_lite.init_train_states(config, list(range(max(counts)))))
    out["init_s"] = time.perf_counter() - t0
    last_s = 0.0
    for i, n in enumerate(counts):
        # The next count costs at least what the last one did (a compilation plus the timed calls).
        if i and time.perf_counter() + last_s > deadline:
            out["skipped"].append(str(n))
            out["per_num_seeds"][str(n)] = SKIPPED
            continue
        t0 = time.perf_counter()
        box = {"state": jax.tree_util.tree_map(lambda x: x[:n], all_states)}
        fn = qgf_lite.compiled_train_steps(config, steps, multi_seed=True)

        def call():
            box["state"], box["metrics"] = fn(box["state"], dataset)
            return box["state"], box["metrics"]

        t = timed_calls(call, min_s=plan.min_timed_s, max_calls=plan.max_timed_calls, deadline=deadline)
        losses = require_finite(f"{n} seeds", box["metrics"])
        per_seed = steps / t["call_s"]
        out["per_num_seeds"][str(n)] = {
            "num_seeds": n,
            "steps_per_s_per_seed": per_seed,
            "seed_steps_per_s": per_seed * n,
            "first_call_s": t["first_call_s"],
            "timed_calls": t["calls"],
            "final_losses": losses,
        }
        last_s = time.perf_counter() - t0
    one = out["per_num_seeds"].get("1")
    if isinstance(one, dict):
        # The paper's GPU target: 10 vmapped seeds at >= 6x one seed's seed-steps/s.
        out["seed_steps_vs_one_seed"] = {
            n: figures["seed_steps_per_s"] / one["seed_steps_per_s"]
            for n, figures in out["per_num_seeds"].items()
            if isinstance(figures, dict)
        }
    return out


def section_paper_seed_throughput(plan: Plan, deadline: float, measured: dict) -> dict:
    return section_seed_throughput(
        plan, deadline, measured, plan.paper, "paper", plan.paper_seed_counts, PAPER_COST_FACTOR
    )


def peak_device_memory() -> int | None:
    """Peak bytes in use on the first device since start-up, where the backend reports it (GPUs; not the CPU)."""
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # informative only
        return None
    return stats.get("peak_bytes_in_use")


def section_paper_train(plan: Plan, deadline: float, measured: dict) -> dict:
    out = section_preset_train(plan, plan.paper, "paper", deadline, measured, PAPER_COST_FACTOR)
    # The paper trains 500k steps per run (qgf_lite.training.PRESET_STEPS).
    out["minutes_for_500k_steps"] = 500_000 / out["steps_per_s"] / 60
    peak = peak_device_memory()
    if peak is None:
        out["peak_device_memory"] = "not reported by this backend"
    else:
        out["peak_device_bytes"] = peak  # the whole process so far: every earlier section included
    return out


def section_official_defaults_train(plan: Plan, deadline: float, measured: dict) -> dict:
    return section_preset_train(plan, plan.official_defaults, "official-defaults", deadline, measured)


def section_preset_train(
    plan: Plan, config: QGFConfig, preset: str, deadline: float, measured: dict, cost_factor: float = 1.0
) -> dict:
    dataset = synthetic_dataset(config, plan.kernel_sizes)
    steps = steps_per_call(plan, plan.train_steps_per_call, measured, cost_factor)
    box = {"state": qgf_lite.init_train_state(config, jax.random.PRNGKey(0))}
    fn = qgf_lite.compiled_train_steps(config, steps)

    def call():
        box["state"], box["metrics"] = fn(box["state"], dataset)
        return box["state"], box["metrics"]

    t = timed_calls(call, min_s=plan.min_timed_s, max_calls=plan.max_timed_calls, deadline=deadline)
    rate = steps / t["call_s"]
    return {
        "preset": preset,
        "config": describe(config),
        "steps_per_call": steps,
        "steps_per_s": rate,
        "ms_per_step": 1e3 / rate,
        "first_call_s": t["first_call_s"],
        "timed_calls": t["calls"],
        "final_losses": require_finite(f"{preset} train", box["metrics"]),
        "num_parameters": qgf_lite.num_parameters(box["state"].policy_params)
        + qgf_lite.num_parameters(box["state"].critic_params)
        + qgf_lite.num_parameters(box["state"].value_params),
    }


def section_slice_rotation(plan: Plan, deadline: float, workdir: Path, measured: dict) -> dict:
    """benchmarks/bench_slices.py's measurement at the paper preset: slices in OGBench's 100M layout (made from a
    few cube-single oracle episodes), trained with one slice in memory, streamed (``qgf_lite.streaming``: the next
    slice loaded and put on the device in the background) and swapped synchronously (the official loop)."""
    import bench_slices

    s = plan.slices
    built = bench_slices.build_slices(workdir / "slices", s.slices, s.rows, s.oracle_episodes, 0)  # times itself
    paper = plan.paper

    def make_cfg(obs_dim: int, action_dim: int) -> QGFConfig:
        return dataclasses.replace(paper, obs_dim=obs_dim, action_dim=action_dim)

    figures = bench_slices.measure_rotation(
        workdir / "slices" / "cube-single-play-100m-v0",
        make_cfg,
        rotate_every=s.rotate_every,
        rotations=s.rotations,
        repeats=s.repeats,
        deadline=deadline,
        log=lambda line: None,
    )
    config = figures.pop("config")
    return {
        "preset": "paper",
        "config": describe(config),
        "env": bench_slices.ENV,
        "data": {**built, **figures.pop("data")},
        "rotate_every": s.rotate_every,
        "steps_per_run": s.rotations * s.rotate_every,
        **figures,
    }


def max_episode_steps(env_id: str, default: int = 500) -> int:
    try:
        import gymnasium
        import ogbench.manipspace  # noqa: F401  (registers the environments)

        return int(gymnasium.spec(f"{env_id}-v0").max_episode_steps or default)
    except Exception:
        return default


def section_cube_double(plan: Plan, deadline: float, workers: int, workdir: Path, measured: dict) -> dict:
    from qgf_lite.ogbench.evaluation import evaluate
    from qgf_lite.ogbench.generate import generate_dataset
    from qgf_lite.ogbench.train import train

    c = plan.cube
    out: dict = {"env_name": c.task_env, "mujoco_gl": os.environ.get("MUJOCO_GL"), "skipped": []}
    if workers > 1 and not EGL_AVAILABLE:
        # generate's worker processes always select MUJOCO_GL=egl; without libEGL they could not start.
        out["note"] = f"no libEGL: generated in this process instead of {workers} workers"
        workers = 1

    # 1. Data: as many episodes as fit a quarter of the section (the rest is training and evaluation).
    t0 = time.perf_counter()
    share = 0.25 * (deadline - t0)
    fit = int((share - c.worker_start_s) * c.env_steps_per_s * workers / c.episode_length)
    episodes = max(1, min(c.episodes, fit))
    data_path = workdir / f"{c.env_id}-play-v0.npz"
    stats = generate_dataset(
        c.env_id,
        dataset_type="play",
        num_episodes=episodes,
        out_path=str(data_path),
        seed=0,
        workers=workers,
        episode_length=c.episode_length,
        num_val_episodes=max(1, episodes // 10),
        progress=False,
    )
    out["generate"] = {
        "seconds": time.perf_counter() - t0,
        "episodes": stats.num_train_episodes,
        "val_episodes": stats.num_val_episodes,
        "episode_length": c.episode_length,
        "workers": stats.workers,
        "transitions": stats.num_train_transitions + stats.num_val_transitions,
        "transitions_per_s": stats.transitions_per_second,
    }

    # 2. Training, stopped at its share of what is left. The budget is checked between chunks, and a checkpoint
    #    is written after each, so chunks are shortened where the kernels' measured rate says they would be slow.
    t0 = time.perf_counter()
    train_deadline = t0 + 0.4 * (deadline - t0)
    chunk = steps_per_call(plan, c.log_every, measured)
    steps = chunk * math.ceil(c.train_steps / chunk)
    result = train(
        c.task_env,
        workdir / "run",
        steps=steps,
        dataset_path=str(data_path),
        seeds=(0,),
        checkpoint_every=chunk,
        log_every=chunk,
        progress=False,
        callback=lambda state, record: time.perf_counter() >= train_deadline,
        hidden=c.hidden,
        layers=c.layers,
        batch_size=c.batch_size,
        horizon=c.horizon,
    )
    last = result.history[-1] if result.history else {}
    out["train"] = {
        "seconds": time.perf_counter() - t0,
        "steps": result.final_step,
        "planned_steps": steps,
        "steps_per_chunk": chunk,
        "stopped_by_budget": result.final_step < steps,
        "steps_per_s": result.steps_per_second,  # compilation included
        "steps_per_s_last_chunk": last.get("steps_per_s"),
        "final_losses": {k: last[k] for k in ("policy_loss", "critic_loss", "value_loss") if k in last},
        "hidden": c.hidden,
        "layers": c.layers,
        "batch_size": c.batch_size,
        "horizon": c.horizon,
    }

    # 3. Evaluation: as many episodes per setting as the rest of the section holds, all in one wave.
    t0 = time.perf_counter()
    settings = 1 + len(c.eval_weights)
    env_rate = min(c.env_steps_per_s, stats.transitions_per_second / stats.workers)  # start-up included: low
    length = max_episode_steps(c.env_id)
    episode_s = length / env_rate + math.ceil(length / c.horizon) * c.sampler_call_s
    left = 0.8 * (deadline - time.perf_counter()) - 2 * c.compile_s
    episodes = min(c.eval_episodes, int(left / (c.env_make_s + settings * episode_s)))
    out["evaluate"] = {"estimated_episode_s": episode_s, "max_episode_steps": length}
    if episodes < 1:
        out["skipped"].append("evaluate")
        out["evaluate"]["status"] = SKIPPED
        return out
    report = evaluate(
        result.checkpoint_path,
        c.task_env,
        methods=["bc", "qgf"],
        weights=list(c.eval_weights),
        episodes=episodes,
        seed=0,
        num_envs=episodes,
        progress=False,
    )
    keep = (
        "label",
        "method",
        "weight",
        "episodes",
        "successes",
        "success_rate",
        "success_ci95",
        "return_mean",
        "return_ci95",
        "length_mean",
        "seconds",
    )
    out["evaluate"].update(
        {
            "status": "ok",
            "seconds": time.perf_counter() - t0,
            "episodes_per_setting": episodes,
            "planned_episodes": c.eval_episodes,
            "critic": report["critic"],
            "flow_steps": report["flow_steps"],
            "ci": report["ci"],
            "results": [{k: r[k] for k in keep} for r in report["results"]],
        }
    )
    return out


# ------------------------------------------------------------------ environment and output
def load_average() -> list | None:
    try:
        return [float(x) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def version_of(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return done.stdout.strip() or None if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    devices = jax.devices()
    try:
        info = jax.print_environment_info(return_string=True)
    except Exception as err:  # informative only
        info = f"unavailable: {err}"
    return {
        "jax_version": jax.__version__,
        "jaxlib_version": version_of("jaxlib"),
        "backend": jax.default_backend(),
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "devices": [{"id": d.id, "platform": d.platform, "kind": d.device_kind} for d in devices],
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_start": load_average(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "mujoco_gl": os.environ.get("MUJOCO_GL"),
        "egl_available": EGL_AVAILABLE,
        "versions": {
            name: version_of(name)
            for name in ("flax", "optax", "numpy", "ogbench", "mujoco", "dm_control", "gymnasium")
        },
        "qgf_lite_version": qgf_lite.__version__,
        "git_commit": git_commit(),
        "jax_environment_info": info,
    }


def jsonable(obj):
    """Plain JSON types; numpy scalars become numbers and non-finite floats None (strict JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def write_json(path: Path, report: dict) -> None:
    atomic_write_bytes(path, json.dumps(jsonable(report), indent=2, allow_nan=False).encode() + b"\n")


def checked_out_path(parser: argparse.ArgumentParser, out: str) -> Path:
    """``--out`` as a file path whose folder exists (created if need be); a clear error before any work if not."""
    path = Path(out).expanduser()
    if path.is_dir():
        parser.error(f"--out {out!r} is an existing directory; give a file path such as {path / 'gpu_check.json'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        parser.error(f"--out {out!r}: cannot create its folder {str(path.parent)!r} ({err})")
    if not os.access(path.parent, os.W_OK):
        parser.error(f"--out {out!r}: its folder {str(path.parent)!r} is not writable")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu_check.json", help="the JSON file to write (default gpu_check.json)")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=450.0,
        help="seconds for the whole check, from start-up (default 450); later sections shrink or "
        "are skipped to stay inside it",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes everywhere (a CPU smoke run)")
    parser.add_argument(
        "--workers", type=int, default=None, help="data-generation processes (default: the CPU count; 1 with --quick)"
    )
    parser.add_argument("--workdir", default=None, help="keep the cube-double data and run here (default: a temp dir)")
    return parser


def main(argv: Sequence[str] | None = None, start: float | None = None, script: bool = False) -> dict:
    """Run the check; returns the report as written. ``script``: this process is the check alone (it may set
    XLA_FLAGS for --quick before JAX starts its backend)."""
    start = time.perf_counter() if start is None else start
    parser = build_parser()
    args = parser.parse_args(argv)
    if script and args.quick and "XLA_FLAGS" not in os.environ:
        os.environ["XLA_FLAGS"] = QUICK_XLA_FLAGS
    out_path = checked_out_path(parser, args.out)
    if not (math.isfinite(args.budget_s) and args.budget_s > 0):
        parser.error(f"--budget-s must be a positive number of seconds, got {args.budget_s}")
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    workers = args.workers or (1 if args.quick else (os.cpu_count() or 1))

    def log(line: str) -> None:
        print(line, flush=True)

    env = environment()
    plan = quick_plan() if args.quick else full_plan(env["backend"])
    report: dict = {
        "schema": SCHEMA,
        "mode": plan.mode,
        "complete": False,
        "budget_s": args.budget_s,
        "target_wall_s": TARGET_WALL_S,
        "started_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "argv": list(sys.argv[1:] if argv is None else argv),
        "workers": workers,
        "warnings": [],
        "environment": env,
    }
    if plan.mode == "full" and env["backend"] == "cpu":
        report["warnings"].append("no GPU: JAX runs on the CPU (is the CUDA plugin installed and working?)")
    for warning in report["warnings"]:
        log(f"warning: {warning}")
    log(
        f"gpu_check ({plan.mode}): jax {env['jax_version']} on {env['backend']} ({env['device_kind']} x "
        f"{env['device_count']}), {env['cpu_count']} CPUs, MUJOCO_GL={env['mujoco_gl']}, budget {args.budget_s:g} s"
    )

    report["sections"] = {}
    write_json(out_path, report)  # from now on the file exists, complete or not

    budget = Budget(args.budget_s, start, plan.reserve_s)
    measured: dict = {}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        workdir = Path(args.workdir) if args.workdir else Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        runners = {
            "bench_kernels": lambda d: section_bench_kernels(plan, d, measured),
            "seed_throughput": lambda d: section_seed_throughput(plan, d, measured),
            "paper_seed_throughput": lambda d: section_paper_seed_throughput(plan, d, measured),
            "paper_train": lambda d: section_paper_train(plan, d, measured),
            "official_defaults_train": lambda d: section_official_defaults_train(plan, d, measured),
            "slice_rotation": lambda d: section_slice_rotation(plan, d, workdir, measured),
            "cube_double": lambda d: section_cube_double(plan, d, workers, workdir, measured),
        }
        sections = [Section(name, weight, min_s, runners[name]) for name, weight, min_s in plan.sections]

        def update(results: dict) -> None:
            report["sections"] = results
            report["total_s"] = budget.elapsed()
            write_json(out_path, report)

        report["sections"] = run_sections(sections, budget, update, log)
    env["load_average_end"] = load_average()
    report["total_s"] = budget.elapsed()
    report["within_budget"] = report["total_s"] <= args.budget_s
    report["errors"] = [name for name, s in report["sections"].items() if s["status"].startswith("error")]
    report["complete"] = True
    write_json(out_path, report)
    summary = {name: s["status"] for name, s in report["sections"].items()}
    log(f"[{report['total_s']:6.1f} s] done, budget {args.budget_s:g} s; sections: {summary}; wrote {out_path}")
    return jsonable(report)


if __name__ == "__main__":
    sys.exit(1 if main(start=_T0, script=True)["errors"] else 0)
