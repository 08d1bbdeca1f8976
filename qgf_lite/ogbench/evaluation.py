"""Evaluating a trained checkpoint in its OGBench environment under several samplers (docs/algorithm.md §4).

Every setting (a ``qgf_lite.SamplerSpec``: a sampling method with its guidance weight, proposals, ...) uses the
same trained networks, the same episode start states and the same initial noise (common random numbers), so
differences between settings come from the sampler only. Episodes run in waves of ``num_envs`` environments;
each chunk step makes one batched, jitted sampler call for the whole wave, and the H actions of a chunk are
executed open loop.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import math
import os
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from qgf_lite.checkpoint import load_checkpoint
from qgf_lite.fileio import atomic_write_bytes
from qgf_lite.intervals import Z_95, wilson_interval  # noqa: F401 (re-exported: evaluation.wilson_interval)
from qgf_lite.ogbench.datasets import make_eval_env  # noqa: F401 (re-exported: evaluation.make_eval_env)
from qgf_lite.ogbench.envpool import EnvPool
from qgf_lite.samplers import SamplerSpec, spec_from_name, specs_from_names
from qgf_lite.training import (
    QGFConfig,
    critic_fn,
    guidance_critic_params,
    sampler_velocity_fn,
    sampler_velocity_params,
)
from qgf_lite.validation import require_known, require_positive_int

DEFAULT_WEIGHTS = (0.004, 0.008, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12)  # the OGBench sweep, docs/algorithm.md §6


def _setting(default, help: str):
    """An EvalConfig field with its help text (its ``qgf-lite eval`` flag's)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Every setting of an evaluation (``evaluate``) and of its video (``record_video``), with their defaults.

    One place for them: ``evaluate``/``record_video`` take one, ``qgf-lite eval`` makes one flag per field (the
    same argparse generator as ``train``'s flags from QGFConfig, ``cli._add_field_argument``; argparse rather than
    tyro because ``train`` already builds its flags that way and one generator serves both), and a sweep config's
    ``[eval]`` table is one (``qgf_lite.ogbench.sweep``). Build a variant with ``config.replace(episodes=50)``.
    ``methods`` holds names (``qgf_lite.specs_from_names``) or ``SamplerSpec`` objects, used as they are.
    Values are checked here, so a bad setting fails before a checkpoint or environment is loaded.
    """

    methods: tuple[str | SamplerSpec, ...] = _setting(
        ("bc", "qgf"), "samplers to evaluate: names of qgf_lite.specs_from_names, or SamplerSpec objects"
    )
    weights: tuple[float, ...] = _setting(
        DEFAULT_WEIGHTS, "guidance weights: each guided method runs at every weight > 0 (bc is weight 0)"
    )
    n: int = _setting(4, "proposals of the best-of-N methods")
    step_size: float = _setting(0.01, "gradient_step's ascent step size")
    ascent_steps: int = _setting(3, "gradient_step's number of ascent steps")
    flow_steps: int | None = _setting(None, "Euler steps of every sampler; None: the checkpoint config's flow_steps")
    episodes: int = _setting(20, "episodes per setting")
    seed: int = _setting(0, "start states and sampler noise: the same for every setting (common random numbers)")
    num_envs: int = _setting(10, "environments stepped side by side")
    workers: int = _setting(0, "processes that step the environments while the sampler runs (0: in this process)")
    seed_index: int = _setting(0, "which seed of a multi-seed checkpoint")
    critic: str = _setting(
        "target", "critic that guides the samplers: the Polyak target, as in the paper, or the online one"
    )
    video_method: str = _setting("qgf", "sampler of the video, a name as in methods")
    video_weight: float = _setting(0.04, "guidance weight of the video")
    video_episode: int = _setting(0, "which evaluation episode the video replays (same start state and noise)")
    video_size: int = _setting(200, "width and height of the video in pixels")
    video_max_steps: int | None = _setting(None, "environment steps of the video; None: the whole episode")
    video_fps: int = _setting(20, "frames per second of the video")

    def __post_init__(self):
        from qgf_lite.training import check_critic

        def check(name, minimum):
            require_positive_int(name, getattr(self, name), minimum=minimum)

        if isinstance(self.methods, str) or not isinstance(self.methods, (list, tuple)):
            raise TypeError(f"`methods` must be a list of names, e.g. [{self.methods!r}], got {self.methods!r}.")
        if isinstance(self.weights, (str, bytes)) or not isinstance(self.weights, (list, tuple, np.ndarray)):
            raise TypeError(f"`weights` must be a list of numbers >= 0, e.g. [0.01, 0.1], got {self.weights!r}.")
        object.__setattr__(self, "methods", tuple(self.methods))  # frozen and hashable, as lists from TOML are not
        try:  # plain floats, so the config hashes, compares and writes to JSON alike whatever number type came in
            object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        except (TypeError, ValueError):
            raise TypeError(f"`weights` must be numbers >= 0, e.g. [0.01, 0.1], got {self.weights!r}.") from None
        for name in ("n", "episodes", "num_envs", "video_size", "video_fps"):
            check(name, 1)
        for name in ("ascent_steps", "seed", "workers", "seed_index", "video_episode"):
            check(name, 0)
        for name in ("flow_steps", "video_max_steps"):
            if getattr(self, name) is not None:
                check(name, 1)
        check_critic(self.critic)
        weight = self.video_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise TypeError(f"`video_weight` must be a number >= 0, got {weight!r}.")
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"`video_weight` must be a finite number >= 0, got {weight!r}.")
        spec_from_name(self.video_method, float(weight))  # unknown names listed
        self.specs(self.flow_steps or 1)  # method names, weights and the sampler knobs are checked here

    def specs(self, flow_steps: int) -> list:
        """The settings to evaluate (``qgf_lite.specs_from_names``) with ``flow_steps`` unless the config sets it."""
        return specs_from_names(
            self.methods,
            self.weights,
            n=self.n,
            step_size=self.step_size,
            ascent_steps=self.ascent_steps,
            steps=self.flow_steps or flow_steps,
        )

    def video_spec(self, flow_steps: int) -> SamplerSpec:
        """The video's setting: ``video_method`` at ``video_weight`` with this config's sampler knobs."""
        return spec_from_name(
            self.video_method,
            self.video_weight,
            n=self.n,
            step_size=self.step_size,
            ascent_steps=self.ascent_steps,
            steps=self.flow_steps or flow_steps,
        )

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes) -> EvalConfig:
        """A copy with ``changes`` (field names); an unknown name is a ValueError naming it and the fields."""
        require_known("EvalConfig setting(s)", changes, self.names())
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The fields as JSON-ready values (SamplerSpecs among ``methods`` as their dicts)."""
        d = {name: getattr(self, name) for name in self.names()}
        d["methods"] = [m.to_dict() if isinstance(m, SamplerSpec) else m for m in self.methods]
        d["weights"] = list(self.weights)
        return d


# record_video's short spellings of the video settings (record_video(..., method="qgf", weight=0.1, fps=30)).
VIDEO_KEYWORDS = {name[len("video_") :]: name for name in EvalConfig.names() if name.startswith("video_")}


def eval_config(config: EvalConfig | None = None, **changes) -> EvalConfig:
    """``config`` (default ``EvalConfig()``) with ``changes``: how ``evaluate`` and ``record_video`` read their
    keywords, so ``evaluate(checkpoint, methods=["bc"], episodes=5)`` still reads as before."""
    if config is None:
        config = EvalConfig()
    elif not isinstance(config, EvalConfig):
        raise TypeError(
            f"`config` must be a qgf_lite.ogbench.evaluation.EvalConfig, got {type(config).__name__}; "
            "pass settings as keywords (episodes=5) or as EvalConfig(episodes=5)."
        )
    return config.replace(**changes) if changes else config


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
        return spec.sample(
            velocity, critic_fn(config, critic_params), obs, noise, weight=weight if spec.takes_weight else None
        )

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


def run_episodes(
    pool: EnvPool,
    sampler,
    params,
    weight,
    config: QGFConfig,
    episode_indices,
    seed: int,
    frames: list | None = None,
    on_episode=None,
) -> list:
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
                episode = {
                    "episode": int(slot_episode[i]),
                    "success": bool(success[i]),
                    "return": float(returns[i]),
                    "length": int(lengths[i]),
                }
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
    env_name: str | None = None,
    config: EvalConfig | None = None,
    *,
    out: str | None = None,
    progress: bool = True,
    **settings,
) -> dict:
    """Success rate and return of each setting, with 95% intervals (Wilson for success, t for return).

    ``config`` (an ``EvalConfig``, default ``EvalConfig()``) holds every setting; keyword ``settings`` are
    EvalConfig fields that replace its values (``evaluate(checkpoint, methods=["bc", "qgf"], episodes=50)``).
    The settings evaluated are ``config.specs(flow_steps)``, i.e. ``qgf_lite.specs_from_names(methods, weights,
    n=n, step_size=step_size, ascent_steps=ascent_steps, steps=flow_steps)``: ``methods`` holds method names or
    shorthands ("bc", "qgf", "noisy", "best_of_n", "qgf_best_of_n", "gradient_step", ...) or ``SamplerSpec``
    objects, used as they are; guided methods run at every weight > 0. ``flow_steps`` defaults to the checkpoint's.
    Each result row holds the SamplerSpec fields, ``label`` and ``cost``. ``env_name`` defaults to the environment
    the checkpoint was trained on. Guided samplers use the target critic, as the paper does; ``critic="online"``
    guides with the online one instead (the report records which under ``"critic"``). ``workers`` > 0 steps the
    ``num_envs`` environments in that many processes while the sampler runs here (``qgf_lite.ogbench.envpool``);
    results are identical. With ``out`` (a folder), writes ``eval.json`` and ``success_vs_weight.html`` (plus
    ``.png`` when kaleido is installed) there; ``progress`` shows a progress bar.
    """
    from qgf_lite.progress import progress_bar as tqdm

    settings = eval_config(config, **settings)  # bad settings fail before the checkpoint is read
    config, state, extra = load_checkpoint(checkpoint)  # from here on `config` is the checkpoint's QGFConfig
    env_name = env_name or extra.get("env_name")
    if not env_name:
        raise ValueError(f"Checkpoint {checkpoint} does not record its environment; pass `env_name`.")
    episodes, seed, seed_index, critic = settings.episodes, settings.seed, settings.seed_index, settings.critic
    num_envs = min(settings.num_envs, episodes)
    flow_steps = settings.flow_steps or config.flow_steps
    specs = settings.specs(config.flow_steps)
    workers = settings.workers
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
                done = run_episodes(
                    pool,
                    sampler,
                    params[spec],
                    spec.weight,
                    config,
                    range(episodes),
                    seed,
                    on_episode=lambda _: bar.update(1),
                )
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
        "eval_config": settings.to_dict(),  # every setting, so the report says how to rerun it
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
            warnings.warn(f"PNG export failed ({type(err).__name__}: {err}); the HTML plot was written.", stacklevel=2)
    return paths


def results_table(report: dict) -> str:
    """A markdown table of the report: success and return with their 95% intervals, and each setting's compute."""
    lines = [
        "| setting | episodes | success % [95% CI] | return [95% CI] | network evals / chunk |",
        "| --- | --- | --- | --- | --- |",
    ]
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

    from qgf_lite.presentation.plots import FIT_WIDTH, log_axis, method_color

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
    for _i, ((family, weighted), rows) in enumerate(by_family.items()):
        color = method_color(family)  # one colour per method in every figure
        rows = sorted(rows, key=lambda r: r["weight"])
        rate = [100 * r["success_rate"] for r in rows]
        upper = [100 * r["success_ci95"][1] - v for r, v in zip(rows, rate)]
        lower = [v - 100 * r["success_ci95"][0] for r, v in zip(rows, rate)]
        if not weighted:
            lo, hi = (100 * c for c in rows[0]["success_ci95"])
            # The interval as a shaded band across the axis (a shape, so the legend keeps one entry per family).
            fig.add_hrect(y0=lo, y1=hi, fillcolor=color, opacity=0.15, line_width=0, layer="below")
            fig.add_trace(
                go.Scatter(
                    x=list(span), y=[rate[0]] * 2, mode="lines", name=family, line=dict(dash="dash", color=color)
                )
            )
            continue
        fig.add_trace(
            go.Scatter(
                x=[r["weight"] for r in rows],
                y=rate,
                mode="lines+markers",
                name=family,
                line=dict(color=color),
                error_y=dict(type="data", symmetric=False, array=upper, arrayminus=lower),
            )
        )
    fig.update_layout(
        title=f"{report['env_name']}:<br><sup>success rate against guidance weight "
        f"({report['episodes_per_setting']} episodes per setting; bars and bands: 95% intervals)</sup>",
        xaxis_title="guidance weight w" + (" (log scale)" if log_axis_wanted else ""),
        yaxis_title="success rate (%)",
        yaxis_range=[0, 100],
        template="plotly_white",
        width=min(FIT_WIDTH, 700),
        height=420,
        margin=dict(t=80),
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
        warnings.warn(
            f"imageio-ffmpeg is not installed: writing {path.with_suffix('.gif')} instead of an mp4 "
            "(pip install imageio-ffmpeg for mp4).",
            stacklevel=2,
        )
        return path.with_suffix(".gif")
    return path


def record_video(
    checkpoint,
    path,
    env_name: str | None = None,
    config: EvalConfig | None = None,
    **settings,
) -> dict:
    """Render one episode of ``video_method`` at ``video_weight`` to ``path`` (.mp4, or .gif when ffmpeg is missing).

    ``config`` (an ``EvalConfig``) and keyword ``settings`` (EvalConfig fields replacing its values) as in
    ``evaluate``; the ``video_*`` settings may drop their prefix here (``method="qgf", weight=0.1, size=128,
    max_steps=200, fps=20, episode=0``). ``qgf_lite.spec_from_name`` applies ``n``, ``step_size``,
    ``ascent_steps`` and ``flow_steps`` (default: the checkpoint's) where the method reads them. The episode uses
    the same start state, noise and ``critic`` ("target" or "online") as episode ``video_episode`` of ``evaluate``
    with the same ``seed`` and setting.
    Returns {"path", "success", "return", "length", "frames", "setting" (the label), "spec", "critic"}.
    """
    import imageio.v2 as imageio

    settings = eval_config(config, **{VIDEO_KEYWORDS.get(k, k): v for k, v in settings.items()})
    config, state, extra = load_checkpoint(checkpoint)  # from here on `config` is the checkpoint's QGFConfig
    env_name = env_name or extra.get("env_name")
    state = select_seed(state, settings.seed_index)
    spec = settings.video_spec(config.flow_steps)
    critic, fps = settings.critic, settings.video_fps
    params = sampler_params(state, critic, spec.network)  # checked before the environment is built
    kwargs = {"width": settings.video_size, "height": settings.video_size}
    if settings.video_max_steps is not None:
        kwargs["max_episode_steps"] = settings.video_max_steps
    frames = []
    with EnvPool(env_name, 1, workers=0, **kwargs) as pool:
        check_env_matches(config, pool.env(0), env_name, checkpoint)
        sampler = compiled_chunk_sampler(config, spec)
        result = run_episodes(
            pool, sampler, params, spec.weight, config, [settings.video_episode], settings.seed, frames=frames
        )[0]
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
    return {
        "path": str(path),
        "success": result["success"],
        "return": result["return"],
        "length": result["length"],
        "frames": len(frames),
        "setting": spec.label,
        "spec": spec.to_dict(),
        "critic": critic,
    }


__all__ = [
    "check_env_matches",
    "compiled_chunk_sampler",
    "DEFAULT_WEIGHTS",
    "episode_chunk_keys",
    "episode_reset_seed",
    "eval_config",
    "EvalConfig",
    "evaluate",
    "mean_interval",
    "record_video",
    "results_table",
    "run_episodes",
    "sampler_params",
    "select_seed",
    "success_figure",
    "summarise",
    "t_quantile_975",
    "video_format_for",
    "VIDEO_KEYWORDS",
    "write_report",
]
