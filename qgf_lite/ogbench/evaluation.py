"""Evaluating a trained checkpoint in its OGBench environment under several samplers (docs/algorithm.md §4).

Every setting (a ``qgf_lite.SamplerSpec``: a sampling method with its guidance weight, proposals, ...) uses the
same trained networks, the same episode start states and the same initial noise (common random numbers), so
differences between settings come from the sampler only. Episodes run in waves of ``num_envs`` environments;
each chunk step makes one batched, jitted sampler call for the whole wave, and the H actions of a chunk are
executed open loop.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qgf_lite.checkpoint import load_checkpoint
from qgf_lite.fileio import atomic_write_bytes
from qgf_lite.intervals import Z_95, wilson_interval  # noqa: F401 (re-exported: evaluation.wilson_interval)
from qgf_lite.samplers import SamplerSpec, spec_from_name, specs_from_names
from qgf_lite.ogbench.envpool import EnvPool
from qgf_lite.training import (
    QGFConfig,
    critic_fn,
    guidance_critic_params,
    sampler_velocity_fn,
    sampler_velocity_params,
)
from qgf_lite.validation import require_positive_int

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; read when mujoco is first imported
# OGBench builds its action/observation spaces on every access from float64 bounds, and gymnasium warns about the
# float32 cast each time: harmless, and it would bury the evaluation output.
warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32", category=UserWarning)

DEFAULT_WEIGHTS = (0.004, 0.008, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12)  # the OGBench sweep, docs/algorithm.md §6


# --------------------------------------------------------------------------------------------- sampling


def compiled_chunk_sampler(config: QGFConfig, spec: SamplerSpec):
    """jit((velocity_params, critic_params, obs (B, obs_dim), keys (B, 2), weight) -> chunks (B, H * action_dim)).

    ``velocity_params`` are those of the network the sampler runs (``sampler_params`` picks them).

    ``weight`` is traced: specs that differ only in their weight share one compiled function, so a weight sweep
    compiles once. Methods without a guidance weight ignore the argument.
    """
    if not isinstance(spec, SamplerSpec):
        raise TypeError(f"`spec` must be a qgf_lite.SamplerSpec, got {type(spec).__name__}.")
    return _compiled_chunk_sampler(config, spec.with_weight(0.0) if spec.takes_weight else spec)


@functools.lru_cache(maxsize=32)
def _compiled_chunk_sampler(config: QGFConfig, spec: SamplerSpec):
    noise_shape = spec.noise_shape(config.chunk_dim)

    def sample(velocity_params, critic_params, obs, keys, weight):
        noise = jax.vmap(lambda k: jax.random.normal(k, noise_shape))(keys)
        velocity = sampler_velocity_fn(config, velocity_params, spec.network)
        return spec.sample(velocity, critic_fn(config, critic_params), obs, noise,
                           weight=weight if spec.takes_weight else None)

    return jax.jit(sample)


def episode_chunk_keys(seed: int, episode_indices, chunk_index) -> jnp.ndarray:
    """Noise keys (B, 2) for (episode, chunk) pairs: a chunk's noise depends on its episode and its index in that
    episode only, so it is the same across settings, batch layouts and scheduling. ``chunk_index``: one index for
    every episode, or one per episode."""
    episodes = np.asarray(episode_indices, np.uint32)
    chunks = np.broadcast_to(np.asarray(chunk_index, np.uint32), episodes.shape)
    return _episode_chunk_keys(jnp.asarray(seed, jnp.uint32), jnp.asarray(episodes), jnp.asarray(chunks))


@jax.jit  # eagerly, the fold-ins cost more than the sampler itself (about 14 ms per decision round)
def _episode_chunk_keys(seed, episode_indices, chunk_indices):
    base = jax.random.PRNGKey(seed)
    return jax.vmap(lambda e, c: jax.random.fold_in(jax.random.fold_in(base, e), c))(episode_indices, chunk_indices)


def episode_reset_seed(seed: int, episode_index: int) -> int:
    return int(np.random.SeedSequence(entropy=seed, spawn_key=(episode_index,)).generate_state(1)[0])


# --------------------------------------------------------------------------------------------- envs


def make_eval_env(env_name: str, **env_kwargs):
    """The single-task OGBench environment for ``env_name`` (validated first, so typos list the valid ids)."""
    from qgf_lite.ogbench.datasets import parse_env_name

    parsed = parse_env_name(env_name)
    if parsed.task_id is None:
        raise ValueError(
            f"`env_name` {env_name!r} is goal-conditioned; evaluation needs a single-task name such as "
            f"'{parsed.env_id}-{parsed.dataset_type or 'play'}-singletask-task2-{parsed.version}'."
        )
    import ogbench

    name = env_name if parsed.dataset_type is not None else (
        f"{parsed.env_id}-play-singletask-task{parsed.task_id}-{parsed.version}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*precision lowered.*")
        return ogbench.make_env_and_datasets(name, env_only=True, **env_kwargs)


def check_env_matches(config: QGFConfig, env, env_name: str, checkpoint=None) -> None:
    obs_dim = int(np.prod(env.observation_space.shape))
    action_dim = int(np.prod(env.action_space.shape))
    if (obs_dim, action_dim) != (config.obs_dim, config.action_dim):
        raise ValueError(
            f"Checkpoint {checkpoint or ''} was trained for obs_dim={config.obs_dim}, action_dim={config.action_dim} "
            f"but {env_name} has obs_dim={obs_dim}, action_dim={action_dim}; evaluate it on the environment it "
            "was trained on."
        )


def select_seed(state, seed_index: int):
    """One seed's parameters out of a multi-seed state (leading seed axis); single-seed states pass through."""
    if np.ndim(state.step) == 0:
        if seed_index != 0:
            raise ValueError(f"The checkpoint holds one seed; `seed_index` must be 0, got {seed_index}.")
        return state
    count = int(np.shape(state.step)[0])
    if not 0 <= seed_index < count:
        raise ValueError(f"`seed_index` must be in [0, {count}), got {seed_index}.")
    return jax.tree_util.tree_map(lambda x: x[seed_index], state)


# --------------------------------------------------------------------------------------------- rollouts


def sampler_params(state, critic: str = "target", network: str = "policy") -> tuple:
    """(velocity_params, critic_params) for ``compiled_chunk_sampler``: the velocity network the sampler runs
    (``spec.network``: the BC flow, or CFG-RL's) and the target critic unless ``critic="online"``."""
    return sampler_velocity_params(state, network), guidance_critic_params(state, critic)


def run_episodes(pool: EnvPool, sampler, params, weight, config: QGFConfig, episode_indices, seed: int,
                 frames: Optional[list] = None, on_episode=None) -> list:
    """Run every episode of ``episode_indices`` to its end in ``pool``'s slots; returns per-episode dicts in order.

    The pool's worker groups run independently: as soon as one group has executed its action chunks, the sampler
    draws the next chunks for that group (one batched call) and sends them, while the other groups are still
    stepping; so sampling overlaps stepping and no worker waits for a slower one. A slot whose episode ends takes
    the next waiting episode at once. An episode's start state and noise depend only on its index
    (``episode_reset_seed``, ``episode_chunk_keys``), and the sampler always runs on the full slot batch, so the
    results do not depend on this scheduling, on the number of slots or on the number of workers.
    ``params``: (velocity_params, critic_params) as ``sampler_params`` returns them.
    ``frames``: when a list, slot 0's rendered frames are appended (video; in-process pools only).
    ``on_episode``: called with each finished episode's dict (progress bars).
    """
    batch = pool.num_envs
    waiting = list(episode_indices)[::-1]
    slot_episode = np.zeros(batch, np.int64)
    slot_chunk = np.zeros(batch, np.int64)
    active = np.zeros(batch, bool)
    returns = np.zeros(batch)
    lengths = np.zeros(batch, np.int64)
    success = np.zeros(batch, bool)
    obs = np.zeros((batch, config.obs_dim), np.float32)
    finished = {}
    groups = pool.groups

    def refill(group: int, free) -> None:
        """Start waiting episodes in the ``free`` slots of ``group`` (one reset round trip to its worker)."""
        started = []
        for i in free:
            if waiting:
                slot_episode[i], slot_chunk[i], active[i] = waiting.pop(), 0, True
                returns[i], lengths[i], success[i] = 0.0, 0, False
                started.append(i)
        if started:
            slots = groups[group]
            seeds = [episode_reset_seed(seed, int(slot_episode[i])) if i in started else None for i in slots]
            pool.submit(group, "reset", (seeds,))
            fresh = pool.receive(group)
            obs[started] = fresh[np.searchsorted(slots, started)]

    def launch(group: int) -> bool:
        """Sample chunks (for every slot: a fixed batch shape) and send this group's; False when it is idle."""
        slots = groups[group]
        if not active[slots].any():
            return False
        keys = episode_chunk_keys(seed, slot_episode, slot_chunk)
        chunks = np.asarray(sampler(params[0], params[1], jnp.asarray(obs), keys, weight), np.float64)
        chunks = chunks.reshape(batch, config.horizon, config.action_dim)
        pool.submit(group, "step", (chunks[slots], active[slots]), frames)
        return True

    for g, slots in enumerate(groups):
        refill(g, slots)
    if frames is not None:
        frames.append(pool.render())
    in_flight = {g for g in range(len(groups)) if launch(g)}
    while in_flight:
        for g in pool.ready(sorted(in_flight)):
            slots = groups[g]
            new_obs, reward_sums, steps, succeeded, ended = pool.receive(g)
            was_active = active[slots]
            obs[slots[was_active]] = new_obs[was_active]
            returns[slots] += reward_sums
            lengths[slots] += steps
            success[slots] |= succeeded
            slot_chunk[slots] += 1
            done_now = slots[was_active & ended]
            for i in done_now:
                episode = {"episode": int(slot_episode[i]), "success": bool(success[i]),
                           "return": float(returns[i]), "length": int(lengths[i])}
                finished[episode["episode"]] = episode
                if on_episode is not None:
                    on_episode(episode)
            active[done_now] = False
            refill(g, done_now)
            if not launch(g):
                in_flight.discard(g)
    return [finished[int(e)] for e in episode_indices]


def t_quantile_975(dof: int) -> float:
    """Two-sided 95% Student-t quantile; falls back to the normal quantile without scipy (exact for large n)."""
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, dof))
    except ImportError:
        return Z_95


def mean_interval(values) -> tuple:
    """Mean and its 95% t interval; the interval is (mean, mean) for a single value (no spread to estimate)."""
    values = np.asarray(values, np.float64)
    mean = float(values.mean())
    if values.size < 2:
        return mean, (mean, mean)
    half = t_quantile_975(values.size - 1) * float(values.std(ddof=1)) / math.sqrt(values.size)
    return mean, (mean - half, mean + half)


def summarise(spec: SamplerSpec, episodes: list, seconds: float) -> dict:
    """One report row: the sampler's label, its SamplerSpec fields (``SamplerSpec.to_dict``), its cost (network evaluations per
    action chunk), and the success and return statistics of ``episodes``."""
    successes = sum(e["success"] for e in episodes)
    mean_return, return_ci = mean_interval([e["return"] for e in episodes])
    return {
        "label": spec.label,
        **spec.to_dict(),
        "cost": spec.cost,
        "episodes": len(episodes),
        "successes": int(successes),
        "success_rate": successes / len(episodes),
        "success_ci95": list(wilson_interval(successes, len(episodes))),
        "return_mean": mean_return,
        "return_ci95": list(return_ci),
        "length_mean": float(np.mean([e["length"] for e in episodes])),
        "seconds": seconds,
        "per_episode": episodes,
    }


def evaluate(
    checkpoint,
    env_name: Optional[str] = None,
    *,
    methods: Sequence = ("bc", "qgf"),
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    n: int = 4,
    step_size: float = 0.01,
    ascent_steps: int = 3,
    episodes: int = 20,
    seed: int = 0,
    num_envs: int = 10,
    flow_steps: Optional[int] = None,
    seed_index: int = 0,
    critic: str = "target",
    workers: int = 0,
    out: Optional[str] = None,
    progress: bool = True,
) -> dict:
    """Success rate and return of each setting, with 95% intervals (Wilson for success, t for return).

    The settings are ``qgf_lite.specs_from_names(methods, weights, n=n, step_size=step_size,
    ascent_steps=ascent_steps, steps=flow_steps)``: ``methods`` holds method names or shorthands ("bc", "qgf",
    "noisy", "best_of_n", "qgf_best_of_n", "gradient_step", ...) or ``SamplerSpec`` objects, used as they are;
    guided methods run at every weight > 0. ``flow_steps`` defaults to the checkpoint's. Each result row holds the
    SamplerSpec fields, ``label`` and ``cost``. ``env_name`` defaults to the environment the checkpoint was trained on.
    Guided samplers use the target critic, as the paper does; ``critic="online"`` guides with the online one
    instead (the report records which under ``"critic"``). ``workers`` > 0 steps the ``num_envs`` environments in
    that many processes while the sampler runs here (``qgf_lite.ogbench.envpool``); results are identical.
    With ``out`` (a folder), writes ``eval.json`` and
    ``success_vs_weight.html`` (plus ``.png`` when kaleido is installed) there.
    """
    from qgf_lite.progress import progress_bar as tqdm

    config, state, extra = load_checkpoint(checkpoint)
    env_name = env_name or extra.get("env_name")
    if not env_name:
        raise ValueError(f"Checkpoint {checkpoint} does not record its environment; pass `env_name`.")
    episodes = require_positive_int("episodes", episodes)
    num_envs = min(require_positive_int("num_envs", num_envs), episodes)
    flow_steps = require_positive_int("flow_steps", config.flow_steps if flow_steps is None else flow_steps)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be an integer >= 0, got {seed!r}.")
    specs = specs_from_names(methods, weights, n=n, step_size=step_size, ascent_steps=ascent_steps,
                             steps=flow_steps)
    workers = require_positive_int("workers", workers, minimum=0)
    state = select_seed(state, seed_index)
    params = {spec: sampler_params(state, critic, spec.network) for spec in specs}  # errors before any env

    check_env = make_eval_env(env_name)
    try:
        check_env_matches(config, check_env, env_name, checkpoint)
    finally:
        check_env.close()
    results = []
    start = time.perf_counter()
    bar = tqdm(total=len(specs) * episodes, desc=f"eval {env_name}", unit="episode", disable=not progress)
    try:
        with EnvPool(env_name, num_envs, workers=workers) as pool:
            for spec in specs:
                sampler = compiled_chunk_sampler(config, spec)
                t0, busy0 = time.perf_counter(), sum(pool.busy_seconds())
                done = run_episodes(pool, sampler, params[spec], spec.weight, config, range(episodes), seed,
                                    on_episode=lambda _: bar.update(1))
                results.append(summarise(spec, done, time.perf_counter() - t0))
                # Environment time alone (all workers together): rollouts' seconds x workers minus this is what
                # sampling and messaging cost (benchmarks/bench_eval.py).
                results[-1]["env_busy_seconds"] = sum(pool.busy_seconds()) - busy0
                bar.set_postfix({"last": f"{spec.label}: {results[-1]['success_rate']:.2f}"}, refresh=False)
    finally:
        bar.close()
    report = {
        "checkpoint": str(checkpoint),
        "env_name": env_name,
        "train_step": extra.get("step"),
        "dataset_path": extra.get("dataset_path"),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.to_dict().items()},
        "seed": int(seed),
        "seed_index": int(seed_index),
        "episodes_per_setting": episodes,
        "flow_steps": flow_steps,
        "critic": critic,
        "ci": "95%: Wilson score interval for success rate, Student-t interval for mean return",
        "seconds": time.perf_counter() - start,
        "results": results,
    }
    if out is not None:
        write_report(report, out)
    return report


# --------------------------------------------------------------------------------------------- outputs


def write_report(report: dict, out) -> dict:
    """eval.json plus the success-vs-weight plot (HTML; PNG only if kaleido is installed). Returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": str(atomic_write_bytes(out / "eval.json", json.dumps(report, indent=2).encode()))}
    fig = success_figure(report)
    # Self-contained (plotly.js inlined, ~4 MB) so the plot opens offline too.
    paths["html"] = str(atomic_write_bytes(out / "success_vs_weight.html", fig.to_html(include_plotlyjs=True).encode()))
    if importlib.util.find_spec("kaleido") is not None:
        try:
            paths["png"] = str(atomic_write_bytes(out / "success_vs_weight.png", fig.to_image(format="png")))
        except Exception as err:  # kaleido without a usable browser: the HTML plot is the deliverable
            warnings.warn(f"PNG export failed ({type(err).__name__}: {err}); the HTML plot was written.")
    return paths


def results_table(report: dict) -> str:
    """A markdown table of the report: success and return with their 95% intervals, and each setting's compute."""
    lines = ["| setting | episodes | success % [95% CI] | return [95% CI] | network evals / chunk |",
             "| --- | --- | --- | --- | --- |"]
    for r in report["results"]:
        lo, hi = r["success_ci95"]
        rlo, rhi = r["return_ci95"]
        lines.append(
            f"| {r['label']} | {r['episodes']} | {100 * r['success_rate']:.0f} [{100 * lo:.0f}, {100 * hi:.0f}] "
            f"| {r['return_mean']:.1f} [{rlo:.1f}, {rhi:.1f}] | {r.get('cost', '')} |"
        )
    return "\n".join(lines)


def success_figure(report: dict):
    """Success rate against guidance weight, one line per sampler family (``SamplerSpec.family``: "QGF",
    "QGF + best-of-4", ...) with its 95% intervals as error bars; samplers without a weight (BC, best-of-N,
    gradient step) as dashed lines across the axis with their interval as a shaded band."""
    import plotly.graph_objects as go

    from qgf_lite.plots import FIT_WIDTH, log_axis, method_color

    fig = go.Figure()
    by_family = {}
    for r in report["results"]:
        spec = SamplerSpec.from_dict(r)
        by_family.setdefault((spec.family, spec.takes_weight), []).append(r)
    weights = [r["weight"] for (_, weighted), rows in by_family.items() if weighted for r in rows]
    # Sweeps usually span decades of w: a log axis then, with the weight-free baselines drawn across it.
    log_axis_wanted = bool(weights) and max(weights) >= 10 * min(weights)
    span = (min(weights), max(weights)) if weights else (0.0, 1.0)
    if not log_axis_wanted and weights:
        span = (0.0, span[1])
    for i, ((family, weighted), rows) in enumerate(by_family.items()):
        color = method_color(family)  # one colour per method in every figure
        rows = sorted(rows, key=lambda r: r["weight"])
        rate = [100 * r["success_rate"] for r in rows]
        upper = [100 * r["success_ci95"][1] - v for r, v in zip(rows, rate)]
        lower = [v - 100 * r["success_ci95"][0] for r, v in zip(rows, rate)]
        if not weighted:
            lo, hi = (100 * c for c in rows[0]["success_ci95"])
            # The interval as a shaded band across the axis (a shape, so the legend keeps one entry per family).
            fig.add_hrect(y0=lo, y1=hi, fillcolor=color, opacity=0.15, line_width=0, layer="below")
            fig.add_trace(go.Scatter(x=list(span), y=[rate[0]] * 2, mode="lines", name=family,
                                     line=dict(dash="dash", color=color)))
            continue
        fig.add_trace(go.Scatter(
            x=[r["weight"] for r in rows], y=rate, mode="lines+markers", name=family,
            line=dict(color=color), error_y=dict(type="data", symmetric=False, array=upper, arrayminus=lower)))
    fig.update_layout(
        title=f"{report['env_name']}:<br><sup>success rate against guidance weight "
              f"({report['episodes_per_setting']} episodes per setting; bars and bands: 95% intervals)</sup>",
        xaxis_title="guidance weight w" + (" (log scale)" if log_axis_wanted else ""),
        yaxis_title="success rate (%)", yaxis_range=[0, 100], template="plotly_white",
        width=min(FIT_WIDTH, 700), height=420, margin=dict(t=80),
    )
    if log_axis_wanted:
        log_axis(fig, weights, axis="x", exact=True)
    return fig


def video_format_for(path) -> Path:
    """The path to write: mp4 needs imageio-ffmpeg; without it the video is written as a GIF next to it."""
    path = Path(path)
    if path.suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"Video path must end in .mp4 or .gif, got {path}.")
    if path.suffix.lower() == ".mp4" and importlib.util.find_spec("imageio_ffmpeg") is None:
        # imageio writes mp4 through the imageio-ffmpeg package (which can also use a system ffmpeg).
        warnings.warn(f"imageio-ffmpeg is not installed: writing {path.with_suffix('.gif')} instead of an mp4 "
                      "(pip install imageio-ffmpeg for mp4).")
        return path.with_suffix(".gif")
    return path


def record_video(
    checkpoint,
    path,
    env_name: Optional[str] = None,
    *,
    method: str = "qgf",
    weight: float = 0.04,
    n: int = 4,
    step_size: float = 0.01,
    ascent_steps: int = 3,
    flow_steps: Optional[int] = None,
    seed: int = 0,
    episode: int = 0,
    seed_index: int = 0,
    critic: str = "target",
    size: int = 200,
    max_steps: Optional[int] = None,
    fps: int = 20,
) -> dict:
    """Render one episode of ``method`` at ``weight`` to ``path`` (.mp4, or .gif when ffmpeg is missing).

    ``method`` is a name as ``evaluate`` takes them; ``qgf_lite.spec_from_name`` applies ``weight``, ``n``,
    ``step_size``, ``ascent_steps`` and ``flow_steps`` (default: the checkpoint's) where the method reads them.
    The episode uses the same start state, noise and ``critic`` ("target" or "online") as episode ``episode`` of
    ``evaluate`` with ``seed`` and the same setting.
    Returns {"path", "success", "return", "length", "frames", "setting" (the label), "spec", "critic"}.
    """
    import imageio.v2 as imageio

    config, state, extra = load_checkpoint(checkpoint)
    env_name = env_name or extra.get("env_name")
    state = select_seed(state, seed_index)
    flow_steps = require_positive_int("flow_steps", config.flow_steps if flow_steps is None else flow_steps)
    spec = spec_from_name(method, weight, n=n, step_size=step_size, ascent_steps=ascent_steps, steps=flow_steps)
    params = sampler_params(state, critic, spec.network)  # checked before the environment is built
    kwargs = {"width": int(size), "height": int(size)}
    if max_steps is not None:
        kwargs["max_episode_steps"] = require_positive_int("max_steps", max_steps)
    frames = []
    with EnvPool(env_name, 1, workers=0, **kwargs) as pool:
        check_env_matches(config, pool.env(0), env_name, checkpoint)
        sampler = compiled_chunk_sampler(config, spec)
        result = run_episodes(pool, sampler, params, spec.weight, config, [episode], seed, frames=frames)[0]
    path = video_format_for(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        with warnings.catch_warnings():
            # imageio-ffmpeg starts ffmpeg with subprocess(preexec_fn=os.setpgrp), so Python runs its fork hooks
            # and JAX's hook warns that os.fork() in a multithreaded process may deadlock. The child only calls
            # setpgrp and then execs ffmpeg (no JAX, no lock taken), so the warning does not apply here; in a
            # notebook it would show as a pink stderr box under the video.
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            if path.suffix == ".gif":
                imageio.mimsave(tmp, frames, duration=1000 / fps, loop=0)
            else:
                # 8 divides the 200-pixel renders and keeps H.264's even sizes, so frames are not rescaled.
                imageio.mimsave(tmp, frames, fps=fps, macro_block_size=8)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write leaves no partial video behind
    return {"path": str(path), "success": result["success"], "return": result["return"],
            "length": result["length"], "frames": len(frames), "setting": spec.label,
            "spec": spec.to_dict(), "critic": critic}
