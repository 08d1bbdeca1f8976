"""Experiments on the 2D toy bandits: train a BC flow and a critic once, then compare samplers.

- ``train_toy_bandit``: behaviour data from a ``toy`` bandit, then ``qgf_lite.fit`` (flow matching + IQL side by
  side), cached in memory and optionally on disk, so notebooks and tests pay for training once.
- ``draw_samples``: actions from any ``qgf_lite.SamplerSpec`` (BC, a guided mode, best-of-N, QGF + best-of-N,
  gradient step) with the trained networks, compiled once per spec (a weight sweep reuses one compile).
- ``tilted_target_samples`` / ``tilted_density_fn``: the distribution guidance aims at,
  pi(a) proportional to pi_ref(a) exp(w Q(a)), with the exact behaviour density and the *learned* critic (the
  sampler only ever sees the learned critic, so that is the fair target).
- ``critic="target"`` (the default everywhere here) guides with the Polyak target critic, as the paper does;
  ``critic="online"`` uses the online one (``qgf_lite.training.guidance_critic_params``).
- ``evaluate_specs`` / ``weight_sweep`` / ``equal_compute_specs``: tables of reward, best-region share and
  distances (sliced Wasserstein, MMD) to the tilted target and to the behaviour data; each row carries its SamplerSpec
  fields (``SamplerSpec.to_dict``), ``label`` and ``cost``, as the OGBench evaluation report does.

Toy networks are small and use no LayerNorm: with a 2D input and no observation, the first hidden layer of a
critic at a = 0 outputs only its biases, and LayerNorm divides those nearly equal numbers by their tiny spread,
so Q and its gradient explode right where the QGF estimate a_hat lands early in sampling (the ring's centre).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from qgf_lite import samplers, toy
from qgf_lite.checkpoint import load_checkpoint, save_checkpoint
from qgf_lite.data import make_dataset
from qgf_lite.guidance import denoised_estimate
from qgf_lite.samplers import matched_best_of_n  # noqa: F401 - the notebooks' name for it
from qgf_lite.toy import metrics
from qgf_lite.training import (
    QGFConfig,
    TrainState,
    critic_fn,
    fit,
    guidance_critic_params,
    init_train_state,
    sampler_velocity_fn,
    sampler_velocity_params,
    velocity_fn,
)
from qgf_lite.validation import require_positive_int

ACTION_DIM = 2


def toy_config(**overrides) -> QGFConfig:
    """A QGFConfig sized for 2D bandits on a laptop CPU (a few seconds of training).

    Bandits have no state (obs_dim 0) and one-step episodes (horizon 1). Flow times are drawn from U[0, 1]
    rather than the 10-point grid so that samplers with any number of steps stay on the training distribution.
    """
    defaults = dict(
        obs_dim=0,
        action_dim=ACTION_DIM,
        horizon=1,
        actor_hidden=(64, 64, 64),
        critic_hidden=(64, 64),
        value_hidden=(16,),
        layer_norm=False,
        learning_rate=1e-3,
        batch_size=256,
        time_grid=None,
    )
    defaults.update(overrides)
    return QGFConfig(**defaults)


@dataclasses.dataclass(frozen=True)
class ToySetup:
    """A bandit problem with its behaviour data and the BC flow + critic trained on it."""

    problem: toy.BanditProblem
    config: QGFConfig
    state: TrainState
    behaviour: jnp.ndarray  # (num_samples, 2) dataset actions
    history: tuple = ()

    @property
    def velocity(self) -> Callable:
        return velocity_fn(self.config, self.state.policy_params)

    @property
    def critic(self) -> Callable:
        """min over the ensemble of the target critic's Qbar(a), (obs, a) -> (batch,): what guidance differentiates."""
        return self.guidance_critic()

    def guidance_critic(self, critic: str = "target") -> Callable:
        """min over the ensemble of Q(a) from the "target" (default) or "online" critic parameters."""
        return critic_fn(self.config, guidance_critic_params(self.state, critic))

    @property
    def log_ref(self) -> Callable:
        """Exact log pi_ref(a) of the behaviour distribution (or a KDE of the data when none is known)."""
        if self.problem.log_density is not None:
            return self.problem.log_density
        return toy.kde_log_density(self.behaviour)


def bandit_data(problem: toy.BanditProblem, num_samples: int, seed: int):
    """Behaviour actions (n, 2) and their rewards (n,) for a stateless bandit."""
    if problem.contextual:
        raise ValueError(
            f"`{problem.name}` is contextual; the toy experiments use stateless bandits "
            f"(choose one of ring, moons, checkerboard, spiral)."
        )
    actions = problem.sample_actions(jax.random.PRNGKey(seed), num_samples)
    return actions, problem.reward(None, actions)


_MEMORY_CACHE: dict[str, ToySetup] = {}


def _cache_key(name: str, num_steps: int, num_samples: int, seed: int, config: QGFConfig) -> str:
    spec = json.dumps([name, num_steps, num_samples, seed, config.to_dict()], sort_keys=True, default=str)
    return hashlib.sha1(spec.encode()).hexdigest()[:16]


def default_cache_dir() -> Path | None:
    """$QGF_CACHE_DIR if set, else None (no disk cache: training is cheap, and tests must not share state)."""
    value = os.environ.get("QGF_CACHE_DIR")
    return Path(value) if value else None


def train_toy_bandit(
    name: str = "ring",
    *,
    num_steps: int = 3000,
    num_samples: int = 20000,
    seed: int = 0,
    config: QGFConfig | None = None,
    cache_dir=None,
    progress: bool = True,
) -> ToySetup:
    """Train the BC flow and the IQL critic on a toy bandit's behaviour data, once per setting.

    Results are kept in memory for the process and, with ``cache_dir`` (default ``$QGF_CACHE_DIR``), on disk as a
    qgf_lite checkpoint named after a hash of the settings. The behaviour data is regenerated from ``seed``.
    """
    num_steps = require_positive_int("num_steps", num_steps)
    num_samples = require_positive_int("num_samples", num_samples, minimum=2)
    seed = require_positive_int("seed", seed, minimum=0)
    config = toy_config() if config is None else config
    if not isinstance(config, QGFConfig):
        raise TypeError(f"`config` must be a QGFConfig (see toy_config()), got {type(config).__name__}.")
    if config.obs_dim != 0 or config.action_dim != ACTION_DIM or config.horizon != 1:
        raise ValueError(
            "`config` must describe a 2D stateless bandit: obs_dim=0, action_dim=2, horizon=1 "
            "(start from toy_config(**overrides))."
        )
    problem = toy.make_bandit(name)
    key = _cache_key(name, num_steps, num_samples, seed, config)
    if key in _MEMORY_CACHE:
        return _MEMORY_CACHE[key]
    actions, rewards = bandit_data(problem, num_samples, seed)
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
    path = None if cache_dir is None else cache_dir / f"toy_{name}_{key}.msgpack"
    if path is not None and path.is_file():
        _, state, extra = load_checkpoint(path, config)
        history = tuple(extra.get("history", ()))
    else:
        dataset = make_dataset(np.asarray(actions), np.asarray(rewards))
        state = init_train_state(config, jax.random.PRNGKey(seed))
        state, history = fit(
            config,
            state,
            dataset,
            num_steps,
            chunk_size=min(num_steps, 1000),
            progress=progress,
            desc=f"training BC flow + critic on {name}",
        )
        history = tuple(history)
        if path is not None:
            save_checkpoint(path, config, state, extra={"history": list(history)})
    setup = ToySetup(problem=problem, config=config, state=state, behaviour=actions, history=history)
    _MEMORY_CACHE[key] = setup
    return setup


# --------------------------------------------------------------------------- #
# The tilted target pi_ref exp(w Q)
# --------------------------------------------------------------------------- #
def tilted_density_fn(log_ref: Callable, critic: Callable, grid: toy.Grid2D = toy.Grid2D(size=64)) -> Callable:
    """weight -> (size, size) density of pi_ref exp(w Q) on ``grid``, normalised so sum * cell_area = 1.

    Pure jnp in the weight, so ``jax.vmap`` gives every slider position in one call (toy.tilted_density_grid
    computes the same thing for one concrete weight, with input checks).
    """
    points = grid.points
    log_p = log_ref(points)
    q = critic(None, points)

    def density(weight):
        logits = jnp.where(weight > 0, log_p + weight * q, log_p)
        logits = logits - jax.scipy.special.logsumexp(logits) - jnp.log(grid.cell_area)
        return jnp.exp(logits).reshape(grid.size, grid.size)

    return density


def tilted_target_samples(
    setup: ToySetup, weight: float, key, n: int, grid: toy.Grid2D = toy.Grid2D(), *, critic: str = "target"
) -> jnp.ndarray:
    """n samples (n, 2) of pi_ref(a) exp(w Q(a)) with the learned ``critic``, drawn cell by cell from a fine grid."""
    density = toy.tilted_density_grid(setup.log_ref, setup.guidance_critic(critic), weight, grid)
    return toy.sample_grid_density(key, density, grid, n)


# --------------------------------------------------------------------------- #
# Samplers and their compute
# --------------------------------------------------------------------------- #
def _spec_key(spec: samplers.SamplerSpec) -> samplers.SamplerSpec:
    """The compile-cache key: the SamplerSpec with its weight zeroed, since the weight is a traced argument."""
    if not isinstance(spec, samplers.SamplerSpec):
        raise TypeError(f"`spec` must be a qgf_lite.SamplerSpec, got {type(spec).__name__}.")
    return spec.with_weight(0.0) if spec.takes_weight else spec


@functools.lru_cache(maxsize=128)
def _compiled_spec(spec: samplers.SamplerSpec, config: QGFConfig, num: int):
    # The critic parameters and the weight are arguments, so the target and the online critic, and every weight
    # of a sweep, share one compiled function.
    def run(velocity_params, critic_params, key, weight):
        velocity = sampler_velocity_fn(config, velocity_params, spec.network)
        return spec.sample(
            velocity,
            critic_fn(config, critic_params),
            None,
            spec.draw_noise(key, num, ACTION_DIM),
            weight=weight if spec.takes_weight else None,
        )

    return jax.jit(run)


def draw_samples(setup: ToySetup, spec: samplers.SamplerSpec, key, num: int, *, critic: str = "target") -> jnp.ndarray:
    """``num`` actions (num, 2) from the sampler ``spec`` with the trained networks.

    Compiled once per spec up to its weight, which is a traced argument (a weight sweep compiles once).
    Guidance (and best-of-N's ranking) uses the "target" critic unless ``critic="online"``. A "cfgrl" spec runs
    the CFG-RL network, so it needs a setup trained with ``toy_config(cfgrl=True)``; an "fql" spec runs FQL's
    one-step policy (``toy_config(fql=True)``).
    """
    num = require_positive_int("num", num)
    critic_params = guidance_critic_params(setup.state, critic)
    velocity_params = sampler_velocity_params(setup.state, _spec_key(spec).network)
    compiled = _compiled_spec(_spec_key(spec), setup.config, num)
    return compiled(velocity_params, critic_params, toy.as_key(key), jnp.asarray(spec.weight, jnp.float32))


@functools.lru_cache(maxsize=32)
def _compiled_weight_sweep(spec: samplers.SamplerSpec, config: QGFConfig, num: int):
    def run(policy_params, critic_params, key, weights):
        velocity = velocity_fn(config, policy_params)
        critic = critic_fn(config, critic_params)
        noise = spec.draw_noise(key, num, ACTION_DIM)
        # The same noise for every weight: differences between columns come from guidance alone.
        return jax.vmap(lambda w: spec.sample(velocity, critic, None, noise, weight=w))(weights)

    return jax.jit(run)


def guided_samples_for_weights(
    setup: ToySetup, weights, key, num: int, *, mode: str = "qgf", steps: int = 10, critic: str = "target"
) -> jnp.ndarray:
    """Guided samples for every weight in one vectorised call: (len(weights), num, 2), shared noise."""
    weights = jnp.asarray(weights, jnp.float32)
    if weights.ndim != 1 or weights.size == 0:
        raise ValueError(f"`weights` must be a non-empty 1D sequence, got shape {tuple(weights.shape)}.")
    if not bool(jnp.all(jnp.isfinite(weights) & (weights >= 0))):
        raise ValueError("`weights` must be finite and >= 0.")
    spec = samplers.SamplerSpec("guided", mode=mode, steps=steps)
    critic_params = guidance_critic_params(setup.state, critic)
    return _compiled_weight_sweep(spec, setup.config, require_positive_int("num", num))(
        setup.state.policy_params, critic_params, toy.as_key(key), weights
    )


def one_step_estimates(velocity: Callable, path, clip=(-1.0, 1.0)) -> jnp.ndarray:
    """QGF's a_hat = clip(a_t + (1 - t) v(a_t, t)) at every step of a sampler path (steps + 1, batch, dim).

    Returns (steps, batch, dim): the estimate made at t = k / steps from the particles path[k], i.e. where the
    critic is queried at step k.
    """
    path = jnp.asarray(path)
    if path.ndim != 3 or path.shape[0] < 2:
        raise ValueError(f"`path` must have shape (steps + 1, batch, dim) with steps >= 1, got {tuple(path.shape)}.")
    steps, batch = path.shape[0] - 1, path.shape[1]

    def estimate(a, k):
        return denoised_estimate(velocity, None, a, jnp.full((batch,), k / steps, a.dtype), clip)

    return jax.vmap(estimate)(path[:-1], jnp.arange(steps))


# --------------------------------------------------------------------------- #
# Evaluation tables
# --------------------------------------------------------------------------- #
def score_samples(setup: ToySetup, actions, key, *, target=None) -> dict:
    """Mean reward (true reward), share in the best region, and SW/MMD to ``target`` and to the behaviour data."""
    problem = setup.problem
    return metrics.compare_samples(
        actions,
        key,
        target=target,
        behaviour=setup.behaviour[:2000],
        reward_fn=problem.reward,
        region_fn=problem.in_best_region,
    )


def evaluate_specs(
    setup: ToySetup,
    specs: Sequence[samplers.SamplerSpec],
    key,
    *,
    num: int = 1000,
    target_weight: float | None = None,
    num_seeds: int = 1,
    progress: bool = True,
    critic: str = "target",
) -> list[dict]:
    """One row per spec: its ``label``, ``cost``, fields (``SamplerSpec.to_dict``), and the metrics of
    ``score_samples`` averaged over ``num_seeds``.

    ``critic`` ("target" or "online") guides the samplers and tilts their targets.
    With ``target_weight`` the distances are to pi_ref exp(w Q) at that w; otherwise each guided spec is scored
    against the target at its own weight (best-of-N and gradient steps against w = 0, i.e. pi_ref itself).
    Also reports ``<metric>_std`` (across seeds) for the mean reward.
    """
    from qgf_lite.progress import progress_bar as tqdm

    num_seeds = require_positive_int("num_seeds", num_seeds)
    key = toy.as_key(key)
    targets: dict[float, jnp.ndarray] = {}
    rows = []
    for i, spec in enumerate(tqdm(specs, desc="evaluating samplers", disable=not progress, leave=False)):
        w = float(target_weight if target_weight is not None else spec.weight)
        if w not in targets:
            targets[w] = tilted_target_samples(
                setup, w, jax.random.fold_in(key, 10_000 + len(targets)), num, critic=critic
            )
        per_seed = []
        for s in range(num_seeds):
            sample_key, metric_key = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, i), s))
            actions = draw_samples(setup, spec, sample_key, num, critic=critic)
            # One projection key for every spec, so their SW values are paired comparisons.
            per_seed.append(score_samples(setup, actions, jax.random.fold_in(key, 99), target=targets[w]))
        row = {"label": spec.label, "cost": spec.cost, **spec.to_dict(), "target_weight": w}
        for metric in per_seed[0]:
            values = np.array([r[metric] for r in per_seed])
            row[metric] = float(values.mean())
        row["mean_reward_std"] = float(np.std([r["mean_reward"] for r in per_seed]))
        rows.append(row)
    return rows


def weight_sweep(
    setup: ToySetup,
    weights: Sequence[float],
    key,
    *,
    num: int = 1000,
    mode: str = "qgf",
    steps: int = 10,
    critic: str = "target",
) -> list[dict]:
    """The trade-off as w grows: reward, best-region share, distance to the behaviour data and to pi_ref exp(wQ).

    ``critic`` ("target" or "online") guides the samples and tilts the target.
    """
    key = toy.as_key(key)
    sample_key, target_key, metric_key = jax.random.split(key, 3)
    all_actions = guided_samples_for_weights(setup, weights, sample_key, num, mode=mode, steps=steps, critic=critic)
    rows = []
    for w, actions in zip(weights, all_actions):
        target = tilted_target_samples(setup, float(w), target_key, num, critic=critic)
        spec = samplers.SamplerSpec("guided", mode=mode, weight=float(w), steps=steps)
        row = {"label": spec.label, "cost": spec.cost, **spec.to_dict()}
        row.update(score_samples(setup, actions, metric_key, target=target))
        rows.append(row)
    return rows


def equal_compute_specs(weight: float, *, steps: int = 10, bfn_n: int = 4) -> list[samplers.SamplerSpec]:
    """BC, QGF, noisy-gradient and Jacobian QGF at ``weight``, best-of-N with the N that QGF's compute buys,
    a gradient-step baseline, and QGF + best-of-``bfn_n`` next to the plain best-of-N of the same cost."""
    qgf = samplers.SamplerSpec("guided", steps=steps, weight=weight, mode="qgf")
    combo = samplers.SamplerSpec("guided_best_of_n", steps=steps, weight=weight, mode="qgf", n=bfn_n)
    return [
        samplers.SamplerSpec("bc", steps=steps),
        qgf,
        samplers.SamplerSpec("guided", steps=steps, weight=weight, mode="noisy"),
        samplers.SamplerSpec("guided", steps=steps, weight=weight, mode="jacobian"),
        samplers.SamplerSpec("best_of_n", steps=steps, n=matched_best_of_n(qgf.cost, steps)),
        samplers.SamplerSpec("gradient_step", steps=steps, step_size=0.05, ascent_steps=5),
        combo,
        samplers.SamplerSpec("best_of_n", steps=steps, n=matched_best_of_n(combo.cost, steps)),
    ]


def format_table(rows: Iterable[dict], columns: Sequence[str], *, digits: int = 3) -> str:
    """A plain-text table of ``rows`` (dicts) with the given columns, for notebook and benchmark printouts."""
    rows = list(rows)
    cells = [[c for c in columns]]
    for row in rows:
        cells.append(
            [f"{row[c]:.{digits}f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns]
        )
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


__all__ = [
    "ToySetup",
    "bandit_data",
    "draw_samples",
    "equal_compute_specs",
    "evaluate_specs",
    "format_table",
    "guided_samples_for_weights",
    "matched_best_of_n",
    "one_step_estimates",
    "score_samples",
    "tilted_density_fn",
    "tilted_target_samples",
    "toy_config",
    "train_toy_bandit",
    "weight_sweep",
]
