"""Kernel benchmarks for qgf_lite, all measured in one run on one machine.

1. Training throughput: the reference implementation's per-step pattern (numpy dataset on the host, a
   numpy minibatch drawn every step and handed to one jitted ``train_step`` call) against qgf_lite's
   scan trainer (``compiled_train_steps``: dataset in device memory, minibatches drawn on the device,
   many steps per call). Both run the same ``train_step``, for the official-defaults config (4 x 512 networks,
   H = 5 chunks of 5-dim actions, obs 40) and the notebook config (3 x 128, 2D actions, no state).
2. Guided sampling latency with the official-defaults networks (``GUIDED_SPEC``: QGF, 10 steps, w = 0.05) at batch 1 and 1000.
3. The slider path: QGF on 2048 2D particles with the networks the notebooks' sliders really run
   (``toy.experiments.toy_config()``: actor 3 x 64, critic 2 x 64, no LayerNorm), the weight a traced
   argument so a slider never recompiles; and, for scale, the same with 3 x 128 LayerNorm networks.

Sampling latencies are measured twice on CPU: with XLA's default options, and with the CPU option in
``CPU_SAMPLER_OPTIONS`` passed to that one ``jax.jit`` (see benchmarks/README.md).

Usage: ``python benchmarks/bench_kernels.py [--quick] [--out FILE]``. Human-readable lines first; the
last line printed is one JSON object with every figure. Runs unchanged on CPU or GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import qgf_lite
from qgf_lite.samplers import SamplerSpec
from qgf_lite.training import QGFConfig, critic_fn, init_train_state, train_step, velocity_fn

# The reference code's defaults (4 x 512, batch 256, H = 5; docs/algorithm.md "Presets"): every figure here. The
# paper's 4 x 1024, batch 1024 setting (PAPER_CONFIG) is timed by gpu_check, on a device fast enough for it.
OFFICIAL_DEFAULTS_CONFIG = QGFConfig.official_defaults(obs_dim=40, action_dim=5)
PAPER_CONFIG = QGFConfig.paper(obs_dim=40, action_dim=5)
TOY_CONFIG = QGFConfig(
    obs_dim=0,
    action_dim=2,
    horizon=1,
    actor_hidden=(128,) * 3,
    critic_hidden=(128,) * 3,
    value_hidden=(128,) * 3,
    batch_size=256,
)
GUIDED_STEPS = 10
GUIDED_WEIGHT = 0.05
GUIDED_SPEC = SamplerSpec("guided", mode="qgf", weight=GUIDED_WEIGHT, steps=GUIDED_STEPS)  # what is timed
SLIDER_PARTICLES = 2048
SLIDER_HIDDEN = (128,) * 3
# XLA:CPU's YNNPACK fusions pack the critic's backward pass (batched dots, LayerNorm and GELU
# gradients) into one library call that ran 2-3x slower than XLA's own fused loops here; an empty
# list turns them off for the one computation it is passed to. Ignored on other platforms.
CPU_SAMPLER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much work each measurement does; ``FULL`` is the reported run, ``QUICK`` a smoke run."""

    num_transitions: int = 100_000
    episode_length: int = 1000
    official_defaults_steps_per_rep: int = 20
    toy_steps_per_rep: int = 200
    train_reps: int = 5
    guided_batches: tuple = (1, 1000)
    latency_repeats: int = 21
    latency_budget_s: float = 8.0  # stop repeating a latency once it has run this long (>= 3 repeats)
    slider_particles: int = SLIDER_PARTICLES
    cpu_tuned_variants: bool = True  # on CPU, also time the samplers with CPU_SAMPLER_OPTIONS


FULL = Sizes()
QUICK = Sizes(
    num_transitions=20_000,
    official_defaults_steps_per_rep=5,
    toy_steps_per_rep=50,
    train_reps=2,
    latency_repeats=3,
    latency_budget_s=2.0,
)


# ------------------------------------------------------------------ data
def synthetic_transitions(num_transitions: int, obs_dim: int, action_dim: int, episode_length: int, seed: int) -> dict:
    """Random transitions in time order, an episode ending every ``episode_length`` steps (numpy, host)."""
    rng = np.random.default_rng(seed)
    observations = rng.standard_normal((num_transitions, obs_dim), dtype=np.float32)
    # Inside an episode s' of step i is s of step i + 1; the very last s' is a fresh draw.
    next_observations = np.concatenate([observations[1:], rng.standard_normal((1, obs_dim), dtype=np.float32)])
    terminals = np.zeros(num_transitions, np.float32)
    terminals[episode_length - 1 :: episode_length] = 1.0
    terminals[-1] = 1.0
    return {
        "observations": observations,
        "actions": rng.uniform(-1.0, 1.0, (num_transitions, action_dim)).astype(np.float32),
        "rewards": rng.standard_normal(num_transitions, dtype=np.float32),
        "terminals": terminals,
        "masks": 1.0 - terminals,
        "next_observations": next_observations,
    }


def device_dataset(arrays: dict, config: QGFConfig):
    """The same transitions as a device-resident ``TransitionDataset`` for the scan trainer."""
    stateless = config.obs_dim == 0
    return qgf_lite.make_dataset(
        arrays["actions"],
        arrays["rewards"],
        observations=None if stateless else arrays["observations"],
        terminals=arrays["terminals"],
        masks=arrays["masks"],
        next_observations=None if stateless else arrays["next_observations"],
    )


def numpy_chunk_returns(rewards: np.ndarray, terminals: np.ndarray, masks: np.ndarray, discount: float):
    """``qgf_lite.chunk_returns`` in numpy, as the reference computes it on the host: (returns, valid, bootstrap)."""
    horizon = rewards.shape[-1]
    ended_before = np.concatenate(
        [np.zeros_like(terminals[:, :1]), np.maximum.accumulate(terminals, axis=1)[:, :-1]], axis=1
    )
    valid = 1.0 - ended_before
    discounts = (discount ** np.arange(horizon)).astype(rewards.dtype)
    returns = np.sum(rewards * valid * discounts, axis=1)
    bootstrap_mask = np.min(np.where(valid > 0, masks, 0.0), axis=1) * valid[:, -1]
    return returns, valid, bootstrap_mask.astype(rewards.dtype)


class HostChunkSampler:
    """The reference's minibatch pipeline: numpy index draw, gather of the chunk windows, numpy returns.

    Produces the batch dict of ``qgf_lite.sample_chunk_batch`` (same keys, shapes and math), only on the
    host and from a seeded numpy generator.
    """

    def __init__(self, arrays: dict, config: QGFConfig, seed: int):
        self.arrays = arrays
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.size = arrays["actions"].shape[0]
        self.offsets = np.arange(config.horizon)

    def sample_at(self, start: np.ndarray) -> dict:
        """The chunks that begin at the transition indices ``start`` (batch,)."""
        c, a = self.config, self.arrays
        window = start[:, None] + self.offsets
        returns, valid, bootstrap_mask = numpy_chunk_returns(
            a["rewards"][window], a["terminals"][window], a["masks"][window], c.discount
        )
        return {
            "observations": a["observations"][start],
            "actions": a["actions"][window].reshape(len(start), c.chunk_dim),
            "returns": returns,
            "valid": valid,
            "bootstrap_mask": bootstrap_mask,
            "next_observations": a["next_observations"][start + c.horizon - 1],
        }

    def sample(self) -> dict:
        c = self.config
        return self.sample_at(self.rng.integers(0, self.size - c.horizon + 1, size=c.batch_size))


# ------------------------------------------------------------------ training throughput
@functools.lru_cache(maxsize=8)
def jitted_train_step(config: QGFConfig) -> Callable:
    """One jitted ``train_step`` per call, as the reference's ``agent.update(batch)`` (no buffer donation).

    Cached per config, like ``compiled_train_steps``, so a config measured twice compiles once.
    """
    return jax.jit(functools.partial(train_step, config))


def run_step_pattern(step_fn: Callable, sampler: HostChunkSampler, state, num_steps: int):
    """The reference loop: host batch, one jitted update, repeat; sync only at the window's end.

    The reference pulls metrics only every log interval, so the host may draw the next batch while the
    device computes the last step. A window is tens to hundreds of steps, which bounds the dispatch
    queue, and the final block charges every queued step to the window that dispatched it.
    """
    metrics = None
    for _ in range(num_steps):
        state, metrics = step_fn(state, sampler.sample())
    jax.block_until_ready((state, metrics))
    return state, metrics


def run_scan_pattern(scan_fn: Callable, dataset, state):
    state, metrics = scan_fn(state, dataset)
    jax.block_until_ready((state, metrics))
    return state, metrics


def require_finite_metrics(name: str, metrics: dict) -> None:
    if not all(np.all(np.isfinite(np.asarray(v))) for v in metrics.values()):
        raise RuntimeError(f"The {name} pattern produced non-finite losses; its timing would not be meaningful.")


def bench_training(config: QGFConfig, arrays: dict, steps_per_rep: int, reps: int, seed: int = 0) -> dict:
    """Steps/s of both patterns: median over ``reps`` windows, interleaved so load drift hits both alike."""
    dataset = device_dataset(arrays, config)
    state0 = init_train_state(config, jax.random.PRNGKey(seed))
    sampler = HostChunkSampler(arrays, config, seed)
    step_fn = jitted_train_step(config)
    scan_fn = qgf_lite.compiled_train_steps(config, steps_per_rep)

    # Warm-up compiles both and runs one window of each, so allocators and caches are settled.
    step_state, _ = run_step_pattern(step_fn, sampler, state0, steps_per_rep)
    scan_state, _ = run_scan_pattern(scan_fn, dataset, state0)

    rates: dict[str, list[float]] = {"step": [], "scan": []}
    cpu_s = {"step": 0.0, "scan": 0.0}
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        step_state, step_metrics = run_step_pattern(step_fn, sampler, step_state, steps_per_rep)
        rates["step"].append(steps_per_rep / (time.perf_counter() - t0))
        cpu_s["step"] += time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        scan_state, scan_metrics = run_scan_pattern(scan_fn, dataset, scan_state)
        rates["scan"].append(steps_per_rep / (time.perf_counter() - t0))
        cpu_s["scan"] += time.process_time() - c0
    require_finite_metrics("per-step", step_metrics)
    require_finite_metrics("scan", scan_metrics)
    step_rate, scan_rate = statistics.median(rates["step"]), statistics.median(rates["scan"])
    return {
        "scan_steps_per_s": scan_rate,
        "step_steps_per_s": step_rate,
        "ratio": scan_rate / step_rate,
        "scan_rates": rates["scan"],
        "step_rates": rates["step"],
        # Process CPU time (all threads) per step: a second view that busy neighbours distort less.
        "scan_cpu_ms_per_step": 1e3 * cpu_s["scan"] / (reps * steps_per_rep),
        "step_cpu_ms_per_step": 1e3 * cpu_s["step"] / (reps * steps_per_rep),
    }


# ------------------------------------------------------------------ sampling latency
def median_ms(fn: Callable, repeats: int, budget_s: float = float("inf"), warmup: int = 2) -> dict:
    """Median wall and process-CPU time in ms of ``fn()``, each call blocked on, after ``warmup`` calls.

    Stops early once the timed calls have taken ``budget_s`` (after at least 3 of them). CPU time counts
    every thread of this process, so on an idle machine wall ~ CPU / threads busy; on a shared one it is
    the figure that neighbours distort less.
    """
    for _ in range(warmup):
        jax.block_until_ready(fn())
    wall: list[float] = []
    cpu: list[float] = []
    start = time.perf_counter()
    while len(wall) < repeats and not (len(wall) >= 3 and time.perf_counter() - start > budget_s):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return {"ms": statistics.median(wall), "cpu_ms": statistics.median(cpu), "calls": len(wall)}


def compiler_options(tuned: bool) -> dict | None:
    """The sampler's XLA options: the CPU tuning when asked for and running on CPU, else XLA's defaults."""
    return dict(CPU_SAMPLER_OPTIONS) if tuned and jax.default_backend() == "cpu" else None


def guided_sampler(config: QGFConfig, steps: int, options: dict | None = None) -> Callable:
    """jit of (policy_params, critic_params, obs, noise, weight) -> QGF actions (``GUIDED_SPEC``'s sampler).

    Parameters and the weight are arguments, not constants baked into the program: new weights (a
    slider) or new parameters (after training) reuse the compiled sampler.
    """
    spec = dataclasses.replace(GUIDED_SPEC, steps=steps)

    def sample(policy_params, critic_params, obs, noise, weight):
        return spec.sample(
            velocity_fn(config, policy_params), critic_fn(config, critic_params), obs, noise, weight=weight
        )

    return jax.jit(sample, compiler_options=options)


def random_params(config: QGFConfig, seed: int):
    state = init_train_state(config, jax.random.PRNGKey(seed))
    return state.policy_params, state.critic_params


def bench_guided(
    config: QGFConfig,
    batch: int,
    repeats: int,
    budget_s: float = float("inf"),
    *,
    tuned: bool = False,
    weight: float = GUIDED_WEIGHT,
    seed: int = 0,
) -> dict:
    """ms per QGF guided sample of ``batch`` action chunks with ``config``'s (randomly initialised) networks."""
    policy_params, critic_params = random_params(config, seed)
    k_obs, k_noise = jax.random.split(jax.random.PRNGKey(seed + 1))
    obs = jax.random.normal(k_obs, (batch, config.obs_dim)) if config.obs_dim else None
    noise = jax.random.normal(k_noise, (batch, config.chunk_dim))
    fn = guided_sampler(config, GUIDED_STEPS, compiler_options(tuned))
    w = jnp.float32(weight)
    return median_ms(lambda: fn(policy_params, critic_params, obs, noise, w), repeats, budget_s)


def slider_config(hidden=None) -> QGFConfig:
    """The notebooks' own slider networks when ``hidden`` is None, else ``hidden``-wide LayerNorm networks."""
    if hidden is None:
        from qgf_lite.toy.experiments import toy_config

        return toy_config()
    return QGFConfig(obs_dim=0, action_dim=2, horizon=1, actor_hidden=hidden, critic_hidden=hidden, value_hidden=hidden)


def bench_slider(
    particles: int, repeats: int, budget_s: float = float("inf"), hidden=None, *, tuned: bool = False, seed: int = 0
) -> dict:
    """ms per slider move: one QGF sample of ``particles`` 2D points, with a new weight every call.

    A recompile per weight would make the median huge; it is also ruled out directly through the jit
    cache, which must hold exactly one program afterwards.
    """
    config = slider_config(hidden)
    policy_params, critic_params = random_params(config, seed)
    noise = jax.random.normal(jax.random.PRNGKey(seed + 1), (particles, config.chunk_dim))
    fn = guided_sampler(config, GUIDED_STEPS, compiler_options(tuned))
    weights = iter(np.linspace(0.0, 2.0, repeats + 3, dtype=np.float32))

    def move_slider():
        return fn(policy_params, critic_params, None, noise, jnp.float32(next(weights)))

    timing = median_ms(move_slider, repeats, budget_s)
    # _cache_size is private jax API; where it is missing the median alone has to tell.
    compilations = fn._cache_size() if hasattr(fn, "_cache_size") else 1
    if compilations != 1:
        raise RuntimeError(f"The slider sampler compiled {compilations} times; the weight must stay a traced argument.")
    return {**timing, "compilations": compilations}


# ------------------------------------------------------------------ driver
def device_description() -> str:
    d = jax.devices()[0]
    return f"{d.device_kind} (platform {d.platform}, {jax.device_count()} device(s))"


def load_average() -> float | None:
    """1-minute load average where the OS reports one: other work on the machine skews every timing."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def run_benchmarks(
    sizes: Sizes,
    official_defaults_config: QGFConfig | None = None,
    toy_config: QGFConfig | None = None,
    slider_hidden=None,
    log: Callable[[str], None] = print,
) -> dict:
    """Every measurement; returns the flat result dict (the JSON line) and logs human-readable lines.

    Configs left as None take the module's OFFICIAL_DEFAULTS_CONFIG, TOY_CONFIG and SLIDER_HIDDEN.
    """
    official_defaults_config = (
        OFFICIAL_DEFAULTS_CONFIG if official_defaults_config is None else official_defaults_config
    )
    toy_config = TOY_CONFIG if toy_config is None else toy_config
    slider_hidden = SLIDER_HIDDEN if slider_hidden is None else tuple(slider_hidden)
    on_cpu = jax.default_backend() == "cpu"
    results: dict[str, object] = {
        "device": device_description(),
        "platform": jax.devices()[0].platform,
        "jax_version": jax.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_average_start": load_average(),
    }
    log(f"device: {results['device']}, jax {jax.__version__}, load average {results['load_average_start']}")
    for tag, config, steps in (
        ("official_defaults", official_defaults_config, sizes.official_defaults_steps_per_rep),
        ("toy", toy_config, sizes.toy_steps_per_rep),
    ):
        arrays = synthetic_transitions(
            sizes.num_transitions, config.obs_dim, config.action_dim, sizes.episode_length, 0
        )
        t0 = time.perf_counter()
        r = bench_training(config, arrays, steps, sizes.train_reps)
        results[f"train_steps_per_s_{tag}"] = r["scan_steps_per_s"]
        results[f"step_pattern_steps_per_s_{tag}"] = r["step_steps_per_s"]
        results[f"scan_vs_step_ratio_{tag}"] = r["ratio"]
        results[f"scan_cpu_ms_per_step_{tag}"] = r["scan_cpu_ms_per_step"]
        results[f"step_pattern_cpu_ms_per_step_{tag}"] = r["step_cpu_ms_per_step"]
        log(
            f"training [{tag}] scan {r['scan_steps_per_s']:.1f} steps/s vs per-step {r['step_steps_per_s']:.1f} steps/s"
            f" -> scan/step = {r['ratio']:.2f}x  ({sizes.train_reps} windows of {steps} steps,"
            f" {time.perf_counter() - t0:.0f} s incl. compile)"
        )
        log(
            f"    process CPU time per step: scan {r['scan_cpu_ms_per_step']:.2f} ms,"
            f" per-step {r['step_cpu_ms_per_step']:.2f} ms"
        )
    variants = [(False, "")] + ([(True, "_cpu_tuned")] if on_cpu and sizes.cpu_tuned_variants else [])
    for batch in sizes.guided_batches:
        for tuned, suffix in variants:
            g = bench_guided(
                official_defaults_config, batch, sizes.latency_repeats, sizes.latency_budget_s, tuned=tuned
            )
            results[f"guided_ms_batch{batch}{suffix}"] = g["ms"]
            results[f"guided_cpu_ms_batch{batch}{suffix}"] = g["cpu_ms"]
            log(
                f"guided sample [official-defaults nets, {GUIDED_SPEC.label}, {GUIDED_STEPS} steps, {GUIDED_SPEC.cost} evals/"
                f"action, batch {batch}"
                f"{', CPU options' if tuned else ''}]: {g['ms']:.2f} ms/call (CPU {g['cpu_ms']:.2f} ms, {g['calls']} calls)"
            )
    # First the networks the notebooks' sliders run (the figure that matters to a student), then wider ones.
    for hidden, prefix in (
        (None, "slider"),
        (slider_hidden, f"slider_{len(slider_hidden)}x{slider_hidden[0]}_layernorm"),
    ):
        config = slider_config(hidden)
        arch = f"actor {'x'.join(map(str, config.actor_hidden))}, critic {'x'.join(map(str, config.critic_hidden))}" + (
            ", LayerNorm" if config.layer_norm else ""
        )
        for tuned, suffix in variants:
            s = bench_slider(sizes.slider_particles, sizes.latency_repeats, sizes.latency_budget_s, hidden, tuned=tuned)
            results[f"{prefix}_ms{suffix}"] = s["ms"]
            results[f"{prefix}_cpu_ms{suffix}"] = s["cpu_ms"]
            results[f"{prefix}_compilations"] = s["compilations"]
            log(
                f"{prefix} [{sizes.slider_particles} particles, 2D, {arch}, traced w"
                f"{', CPU options' if tuned else ''}]: {s['ms']:.2f} ms/call (CPU {s['cpu_ms']:.2f} ms,"
                f" {s['calls']} calls), {s['compilations']} compilation"
            )
    results["load_average_end"] = load_average()
    return results


def write_json_atomically(path: str, obj: dict) -> None:
    from qgf_lite.fileio import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(obj, indent=2).encode())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and a smaller dataset (smoke run)")
    parser.add_argument("--out", help="also write the JSON result to this file")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    results = run_benchmarks(QUICK if args.quick else FULL)
    results["mode"] = "quick" if args.quick else "full"
    results["total_s"] = time.perf_counter() - t0
    print(f"total {results['total_s']:.0f} s", flush=True)
    if args.out:
        write_json_atomically(args.out, results)
    print(json.dumps(results), flush=True)
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
