"""Test-time against training-time policy improvement on the toy tasks (notebook 06).

QGF improves a frozen BC flow at test time by following the critic's gradient; FQL (``qgf_lite.fql``) trains a
one-step policy through the critic, and QAM (``qgf_lite.qam``) fine-tunes a copy of the flow by adjoint matching
against the critic's action gradient. All come out of one ``qgf_lite.fit`` run (``QGFConfig(fql=True, qam=True)``:
the BC flow, the IQL critic, FQL's policy and QAM's flow train side by side on the same batches), so they are
compared at equal training steps by construction.

- ``draw_actions``: actions from any ``SamplerSpec`` for a train state, with or without observations, for one seed
  or for every seed of a multi-seed state at once (``init_train_states``); the guiding critic can be swapped.
- ``run_bandit`` / ``run_point_goal``: train over several seeds and evaluate BC, QGF, FQL (and QAM when the config
  trains it) at checkpoints
  (training curves), keeping the target critic of every checkpoint (early-stopped critics).
- ``critic_quality``: the final flow guided by each stored critic, with the critic's agreement with the true
  reward; ``decoy_reward``: a reward with a deliberately wrong region, to train a wrong critic on.
- ``width_study``: flow and critic at several widths on the contextual ring, with w chosen on held-out contexts.
- ``select_weight``: choose w on held-out scores, report the score on separate evaluation scores.
- ``weight_sweep`` / ``bandit_scores``: QGF over guidance weights, and the scores of any actions, on a bandit run;
  ``actions_figure``: every policy's actions side by side in one call.
- ``seconds_per_action``: measured test-time cost next to ``SamplerSpec.cost``.

Everything here is seeded and reuses the package's trainer, samplers and metrics.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qgf_lite import toy
from qgf_lite.data import dataset_from_dict, make_dataset, sample_chunk_batch
from qgf_lite.samplers import SamplerSpec
from qgf_lite.toy import metrics
from qgf_lite.toy.experiments import bandit_data, toy_config
from qgf_lite.training import (
    QGFConfig,
    critic_fn,
    fit,
    guidance_critic_params,
    init_train_state,
    is_multi_seed,
    num_parameters,
    sampler_velocity_fn,
    sampler_velocity_params,
)
from qgf_lite.validation import require_positive_int

__all__ = [
    "TrainingRun",
    "actions_figure",
    "bandit_scores",
    "contextual_ring_dataset",
    "critic_quality",
    "decoy_reward",
    "curves_figure",
    "draw_actions",
    "evaluation_spec",
    "initial_states",
    "method_specs",
    "negated_critic",
    "rollout_scores",
    "point_goal_config",
    "point_goal_outcomes",
    "run_bandit",
    "run_point_goal",
    "seconds_per_action",
    "seed_state",
    "select_weight",
    "summarise",
    "weight_sweep",
    "width_study",
]


# --------------------------------------------------------------------------- sampling from (multi-seed) states
def _spec_key(spec: SamplerSpec) -> SamplerSpec:
    if not isinstance(spec, SamplerSpec):
        raise TypeError(f"`spec` must be a qgf_lite.SamplerSpec, got {type(spec).__name__}.")
    return spec.with_weight(0.0) if spec.takes_weight else spec


@functools.lru_cache(maxsize=128)
def _compiled_actions(spec: SamplerSpec, config: QGFConfig, num: int, multi: bool, per_seed_obs: bool = False):
    # Weight, critic parameters and observations are arguments: one compile serves a weight sweep, every stored
    # critic and every seed.
    def run(velocity_params, critic_params, obs, key, weight):
        velocity = sampler_velocity_fn(config, velocity_params, spec.network)
        noise = spec.draw_noise(key, num, config.chunk_dim)
        return spec.sample(
            velocity, critic_fn(config, critic_params), obs, noise, weight=weight if spec.takes_weight else None
        )

    if multi:
        run = jax.vmap(run, in_axes=(0, 0, 0 if per_seed_obs else None, 0, None))
    return jax.jit(run)


def evaluation_spec(spec: SamplerSpec) -> SamplerSpec:
    """The SamplerSpec the evaluations here draw with: BC as QGF at w = 0 (the same actions: the guidance term is multiplied
    by 0), so BC and every guided weight share one compiled sampler; other specs unchanged."""
    if isinstance(spec, SamplerSpec) and spec.method == "bc":
        return SamplerSpec("guided", steps=spec.steps, weight=0.0)
    return spec


def seed_state(state, index: int):
    """The ``index``-th seed of a multi-seed state (every leaf sliced on its leading axis)."""
    if not is_multi_seed(state):
        raise ValueError("`state` has no seed axis: it is already a single seed's state.")
    num = int(np.shape(state.step)[0])
    if not 0 <= index < num:
        raise ValueError(f"`index` must be in [0, {num}), got {index}.")
    return jax.tree_util.tree_map(lambda x: x[index], state)


def draw_actions(
    config: QGFConfig,
    state,
    spec: SamplerSpec,
    key,
    *,
    obs=None,
    num: int | None = None,
    critic: str = "target",
    critic_params=None,
) -> jnp.ndarray:
    """Actions (num, chunk_dim) from ``spec``, or (seeds, num, chunk_dim) for a multi-seed ``state``.

    obs: None (a bandit; then pass ``num``), (num, obs_dim) shared by every seed, or (seeds, num, obs_dim) one set
    per seed of a multi-seed ``state``. The guiding critic is the state's "target" (default) or "online" one, or
    ``critic_params`` (e.g. a stored early critic; with a multi-seed state they need the same seed axis). Every seed
    draws its own noise from ``key``.
    """
    multi = is_multi_seed(state)
    per_seed_obs = False
    if obs is None:
        if num is None:
            raise ValueError("`obs` is None (a bandit): pass `num`, the number of actions.")
        num = require_positive_int("num", num)
    else:
        obs = jnp.asarray(obs, jnp.float32)
        seeds = int(np.shape(state.step)[0]) if multi else None
        per_seed_obs = multi and obs.ndim == 3
        if per_seed_obs and obs.shape[0] != seeds:
            raise ValueError(
                f"`obs` with a seed axis must have shape ({seeds}, num, {config.obs_dim}), got {tuple(obs.shape)}."
            )
        if obs.ndim != (3 if per_seed_obs else 2) or obs.shape[-1] != config.obs_dim:
            raise ValueError(
                f"`obs` must have shape (num, {config.obs_dim})"
                f"{f' or ({seeds}, num, {config.obs_dim})' if multi else ''}, got {tuple(obs.shape)}."
            )
        if num is not None and num != obs.shape[-2]:
            raise ValueError(f"`num` ({num}) differs from the number of observations ({obs.shape[-2]}).")
        num = int(obs.shape[-2])
    if critic_params is None:
        critic_params = guidance_critic_params(state, critic)
    velocity_params = sampler_velocity_params(state, _spec_key(spec).network)
    key = toy.as_key(key)
    keys = jax.random.split(key, int(np.shape(state.step)[0])) if multi else key
    compiled = _compiled_actions(_spec_key(spec), config, num, multi, per_seed_obs)
    return compiled(velocity_params, critic_params, obs, keys, jnp.asarray(spec.weight, jnp.float32))


def method_specs(weight: float, steps: int = 10, *, qam: bool = False) -> dict[str, SamplerSpec]:
    """The methods compared: "BC" (the flow alone), "QGF" at ``weight``, "FQL" (one-step policy) and, with ``qam``,
    "QAM" (the flow fine-tuned by adjoint matching; needs a config trained with ``qam=True``)."""
    specs = {
        "BC": SamplerSpec("bc", steps=steps),
        "QGF": SamplerSpec("guided", steps=steps, weight=weight),
        "FQL": SamplerSpec("fql", steps=steps),
    }
    if qam:
        specs["QAM"] = SamplerSpec("qam", steps=steps)
    return specs


def seconds_per_action(
    config: QGFConfig, state, spec: SamplerSpec, *, obs=None, num: int = 1000, repeats: int = 5
) -> float:
    """Median wall-clock seconds per action of ``spec`` (after one warm-up call), over ``repeats`` calls.

    A multi-seed state draws for every seed in one call and the time is divided by seeds x actions too, so the
    functions compiled for the evaluation are reused.
    """
    repeats = require_positive_int("repeats", repeats)
    n = num if obs is None else int(np.shape(obs)[0])
    total = n * (int(np.shape(state.step)[0]) if is_multi_seed(state) else 1)
    draw_actions(config, state, spec, 0, obs=obs, num=n).block_until_ready()
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        draw_actions(config, state, spec, r + 1, obs=obs, num=n).block_until_ready()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) / total


# --------------------------------------------------------------------------- training with checkpoints
@dataclasses.dataclass
class TrainingRun:
    """Several seeds trained together, evaluated at checkpoints.

    curves: {metric: {method: (checkpoints, seeds) array}}, at ``steps``; critics: the target critic (multi-seed
    parameters) at each of ``critic_steps`` (step 0, the untrained critic, first).
    """

    config: QGFConfig
    state: object  # the final multi-seed TrainState
    seeds: tuple
    specs: dict[str, SamplerSpec]
    steps: list[int]
    curves: dict[str, dict[str, np.ndarray]]
    critic_steps: list[int]
    critics: list
    history: list
    extra: dict = dataclasses.field(default_factory=dict)

    def final(self, metric: str, method: str) -> np.ndarray:
        """The metric of ``method`` at the last checkpoint, one value per seed."""
        return self.curves[metric][method][-1]


def initial_states(config: QGFConfig, seeds: Sequence[int]):
    """``qgf_lite.training.init_train_states(config, seeds)`` (the same arrays), built seed by seed with the compiled
    ``init_train_state`` and stacked: on a CPU that compiles faster than the vmapped initialisation."""
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("`seeds` must name at least one seed.")
    states = [init_train_state(config, jax.random.PRNGKey(s)) for s in seeds]
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *states)


def _train_with_checkpoints(config, dataset, seeds, num_steps, eval_every, evaluate, progress, desc, curves=True):
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("`seeds` must name at least one seed.")
    num_steps = require_positive_int("num_steps", num_steps)
    eval_every = require_positive_int("eval_every", eval_every)
    if num_steps % eval_every:
        raise ValueError(
            f"`num_steps` ({num_steps}) must be a multiple of `eval_every` ({eval_every}), so every "
            "training chunk reuses one compiled loop."
        )
    state = initial_states(config, seeds)
    steps, records, critic_steps, critics = [], [], [0], [state.target_critic_params]

    def callback(state, record):
        if curves or record["step"] >= num_steps:
            steps.append(record["step"])
            records.append(evaluate(state, len(steps)))
        critic_steps.append(record["step"])
        critics.append(state.target_critic_params)

    state, history = fit(
        config, state, dataset, num_steps, chunk_size=eval_every, progress=progress, callback=callback, desc=desc
    )
    table: dict[str, dict[str, np.ndarray]] = {}
    for metric in records[0]:
        table[metric] = {m: np.stack([np.asarray(r[metric][m]) for r in records]) for m in records[0][metric]}
    return state, seeds, steps, table, critic_steps, critics, history


def _bandit_scores(problem, actions, behaviour, key, critic=None) -> dict:
    """Per seed: true reward, share in the best region, SW distance to the behaviour data, and the critic's mean
    value of the actions (what the guiding critic believes they are worth)."""
    out = {"mean_reward": [], "frac_best_region": [], "sw_to_behaviour": [], "critic_value": []}
    for a in actions:
        out["mean_reward"].append(float(jnp.mean(problem.reward(None, a))))
        out["frac_best_region"].append(float(jnp.mean(problem.in_best_region(None, a))))
        out["sw_to_behaviour"].append(float(metrics.sliced_wasserstein(a, behaviour, key)))
    if critic is not None:
        out["critic_value"] = [float(v) for v in critic(actions)]
    else:
        del out["critic_value"]
    return {k: np.asarray(v) for k, v in out.items()}


def decoy_reward(problem: toy.BanditProblem, centre, *, height: float = 1.5, width: float = 0.15) -> Callable:
    """``problem.reward`` plus a false bump ``height * exp(-|a - centre|^2 / (2 width^2))``: rewards recorded with
    a deliberately wrong region, for training a critic that is confidently wrong there."""
    centre = jnp.asarray(centre, jnp.float32)
    if centre.shape != (2,):
        raise ValueError(f"`centre` must be one 2D point, got shape {tuple(centre.shape)}.")

    def reward(obs, actions):
        bump = jnp.exp(-0.5 * jnp.sum((actions - centre) ** 2, axis=-1) / width**2)
        return problem.reward(obs, actions) + height * bump

    return reward


def run_bandit(
    name: str = "ring",
    *,
    seeds: Sequence[int] = (0, 1, 2),
    num_steps: int = 2000,
    eval_every: int = 250,
    weight: float = 1.0,
    config: QGFConfig | None = None,
    num_samples: int = 20000,
    num_eval: int = 1000,
    data_seed: int = 0,
    recorded_reward: Callable | None = None,
    curves: bool = True,
    progress: bool = True,
) -> TrainingRun:
    """BC flow, IQL critic and FQL's one-step policy (and QAM's flow when ``config.qam``) on a toy bandit, for
    several seeds at once.

    The behaviour data (``data_seed``) is shared; the seeds change initialisation and minibatches. At every
    ``eval_every`` steps, BC, QGF at ``weight`` (target critic), FQL and QAM are scored per seed with the problem's
    *true* reward (``recorded_reward`` replaces the reward written into the dataset, e.g. ``decoy_reward``).
    With ``curves=False`` only the final checkpoint is scored (the critics of every checkpoint are still kept).
    The default config trains QAM with tau = ``weight``: its target pi_BC exp(tau Q) is then the tilted
    distribution QGF at ``weight`` aims at (docs/algorithm.md §4-§5).
    """
    config = toy_config(fql=True, qam=True, qam_inv_temp=weight) if config is None else config
    if not config.fql:
        raise ValueError("`config` must train FQL too: pass toy_config(fql=True, ...).")
    problem = toy.make_bandit(name)
    actions, rewards = bandit_data(problem, num_samples, data_seed)
    if recorded_reward is not None:
        rewards = recorded_reward(None, actions)
    dataset = make_dataset(np.asarray(actions), np.asarray(rewards))
    behaviour = actions[:2000]
    specs = method_specs(weight, config.flow_steps, qam=config.qam)
    key = jax.random.PRNGKey(1000 + data_seed)

    q = jax.jit(jax.vmap(lambda p, a: jnp.mean(critic_fn(config, p)(None, a))))

    def evaluate(state, index):
        sample_key = jax.random.fold_in(key, index)
        out: dict[str, dict] = {}
        for label, spec in specs.items():
            a = draw_actions(config, state, evaluation_spec(spec), sample_key, num=num_eval)
            scores = _bandit_scores(
                problem,
                a,
                behaviour,
                jax.random.fold_in(key, 99),
                critic=lambda acts: q(state.target_critic_params, acts),
            )
            for metric, values in scores.items():
                out.setdefault(metric, {})[label] = values
        return out

    state, seeds, steps, curves, critic_steps, critics, history = _train_with_checkpoints(
        config,
        dataset,
        seeds,
        num_steps,
        eval_every,
        evaluate,
        progress,
        f"BC flow + critic + FQL{' + QAM' if config.qam else ''} on {name}",
        curves,
    )
    return TrainingRun(
        config,
        state,
        seeds,
        specs,
        steps,
        curves,
        critic_steps,
        critics,
        history,
        extra={"problem": problem, "behaviour": behaviour, "dataset": dataset},
    )


def weight_sweep(run: TrainingRun, weights: Sequence[float], key, *, num: int = 1000, critic_params=None) -> list[dict]:
    """QGF of a bandit ``run``'s final flow at each guidance weight: one row per weight with the means over seeds of
    the true reward (``mean_reward``, its spread over seeds ``reward_std``), the share in the best region, the guiding
    critic's mean value of the actions (``critic_value``: what the critic believes they are worth) and the distance
    to the behaviour data (``sw_to_behaviour``); per-seed values under ``*_seeds``.

    The guiding critic is the run's final target critic, or ``critic_params`` (multi-seed, e.g. a stored one).
    """
    if "problem" not in run.extra:
        raise ValueError("`run` must come from run_bandit (a bandit run: it scores actions with the true reward).")
    weights = [float(w) for w in weights]
    if not weights:
        raise ValueError("`weights` must name at least one guidance weight.")
    params = guidance_critic_params(run.state, "target") if critic_params is None else critic_params
    q = jax.jit(jax.vmap(lambda p, a: jnp.mean(critic_fn(run.config, p)(None, a))))
    key = toy.as_key(key)
    rows = []
    for i, w in enumerate(weights):
        spec = SamplerSpec("guided", steps=run.config.flow_steps, weight=w)
        actions = draw_actions(run.config, run.state, spec, jax.random.fold_in(key, i), num=num, critic_params=params)
        scores = _bandit_scores(
            run.extra["problem"],
            actions,
            run.extra["behaviour"],
            jax.random.fold_in(key, 99),
            critic=lambda a: q(params, a),
        )
        row = {
            "weight": w,
            **{k: float(v.mean()) for k, v in scores.items()},
            "reward_std": float(scores["mean_reward"].std()),
        }
        row.update({f"{k}_seeds": v for k, v in scores.items()})
        rows.append(row)
    return rows


def bandit_scores(run: TrainingRun, actions, key) -> dict[str, np.ndarray]:
    """Per seed, for actions (seeds, num, 2) drawn on a bandit ``run`` (e.g. by ``draw_actions`` or your own
    policy): the true reward, the share in the best region, the run's final target critic's mean value of the
    actions and the distance to the behaviour data. One value per seed in each entry."""
    if "problem" not in run.extra:
        raise ValueError("`run` must come from run_bandit (a bandit run: it scores actions with the true reward).")
    actions = jnp.asarray(actions, jnp.float32)
    if actions.ndim == 2:
        actions = actions[None]
    if actions.ndim != 3 or actions.shape[-1] != 2:
        raise ValueError(f"`actions` must have shape (seeds, num, 2) or (num, 2), got {tuple(actions.shape)}.")
    params = guidance_critic_params(run.state, "target")
    seeds = actions.shape[0]
    if seeds != int(np.shape(run.state.step)[0]):
        params = jax.tree_util.tree_map(lambda x: x[:seeds], params)
    q = jax.vmap(lambda p, a: jnp.mean(critic_fn(run.config, p)(None, a)))
    return _bandit_scores(
        run.extra["problem"], actions, run.extra["behaviour"], toy.as_key(key), critic=lambda a: q(params, a)
    )


def point_goal_config(**overrides) -> QGFConfig:
    """A QGFConfig for the chunked point-goal task (H = 5 steps of 2D actions), sized for a laptop CPU."""
    defaults = dict(
        obs_dim=2,
        action_dim=2,
        horizon=5,
        actor_hidden=(64, 64, 64),
        critic_hidden=(64, 64),
        value_hidden=(64, 64),
        fql=True,
        fql_alpha=10.0,
        fql_hidden=(64, 64, 64),
        learning_rate=1e-3,
        target_update_rate=0.01,
        batch_size=256,
        time_grid=None,
    )
    defaults.update(overrides)
    return QGFConfig(**defaults)


def run_point_goal(
    *,
    seeds: Sequence[int] = (0, 1, 2),
    num_steps: int = 3000,
    eval_every: int = 500,
    weight: float = 0.1,
    config: QGFConfig | None = None,
    num_episodes: int = 400,
    eval_episodes: int = 64,
    data_seed: int = 0,
    progress: bool = True,
) -> TrainingRun:
    """BC flow, IQL critic and FQL (and QAM when ``config.qam``) on the chunked point-goal task
    (``toy.make_point_goal_dataset``), several seeds.

    At every ``eval_every`` steps each seed's BC, QGF (``weight``), FQL (and QAM) policies are rolled out for
    ``eval_episodes`` episodes (``toy.evaluate_point_goal``: success rate, mean return), and their action chunks at
    dataset states are compared with the dataset's own chunks there (sliced Wasserstein distance between the
    (state, chunk) pairs, ``sw_to_behaviour``). The default config trains QAM with tau = ``weight``, as in
    ``run_bandit``.
    """
    config = point_goal_config(qam=True, qam_inv_temp=weight) if config is None else config
    if not config.fql or config.obs_dim != 2 or config.action_dim != 2:
        raise ValueError("`config` must describe the point-goal task with FQL: start from point_goal_config().")
    task = toy.PointGoalConfig()
    dataset = dataset_from_dict(toy.make_point_goal_dataset(data_seed, num_episodes, task))
    batch = sample_chunk_batch(dataset, jax.random.PRNGKey(data_seed + 7), 1024, config.horizon, config.discount)
    ok = np.asarray(batch["valid"][:, -1]) > 0
    data_obs = jnp.asarray(np.asarray(batch["observations"])[ok][:512])
    data_chunks = jnp.asarray(np.asarray(batch["actions"])[ok][:512])
    reference = jnp.concatenate([data_obs, data_chunks], axis=-1)
    specs = method_specs(weight, config.flow_steps, qam=config.qam)
    key = jax.random.PRNGKey(2000 + data_seed)

    def evaluate(state, index):
        out: dict[str, dict] = {m: {} for m in ("success_rate", "mean_return", "sw_to_behaviour")}
        for label, spec in specs.items():
            chunks = draw_actions(config, state, evaluation_spec(spec), jax.random.fold_in(key, index), obs=data_obs)
            out["sw_to_behaviour"][label] = np.asarray(
                [
                    float(
                        metrics.sliced_wasserstein(
                            jnp.concatenate([data_obs, c], axis=-1), reference, jax.random.fold_in(key, 99)
                        )
                    )
                    for c in chunks
                ]
            )
            rollouts = rollout_scores(
                config, state, spec, jax.random.fold_in(key, 10_000 + index), num_episodes=eval_episodes, task=task
            )
            out["success_rate"][label] = rollouts["success_rate"]
            out["mean_return"][label] = rollouts["mean_return"]
        return out

    state, seeds, steps, curves, critic_steps, critics, history = _train_with_checkpoints(
        config,
        dataset,
        seeds,
        num_steps,
        eval_every,
        evaluate,
        progress,
        f"BC flow + critic + FQL{' + QAM' if config.qam else ''} on point-goal",
    )
    return TrainingRun(
        config,
        state,
        seeds,
        specs,
        steps,
        curves,
        critic_steps,
        critics,
        history,
        extra={"task": task, "dataset": dataset, "data_obs": data_obs},
    )


def rollout_scores(
    config: QGFConfig,
    state,
    spec: SamplerSpec,
    key,
    *,
    num_episodes: int = 64,
    task: toy.PointGoalConfig = toy.PointGoalConfig(),
) -> dict[str, np.ndarray]:
    """Point-goal rollouts of ``spec`` for every seed of ``state``: {"success_rate": (seeds,), "mean_return":
    (seeds,)}.

    One ``toy.evaluate_point_goal`` call runs ``num_episodes`` episodes per seed (all seeds in one batch, each seed's
    policy on its own episodes); the per-seed figures are read off the returned trajectories.
    """
    num_episodes = require_positive_int("num_episodes", num_episodes)
    multi = is_multi_seed(state)
    seeds = int(np.shape(state.step)[0]) if multi else 1
    draw = evaluation_spec(spec)

    def policy(obs, k):
        if not multi:
            return draw_actions(config, state, draw, k, obs=obs)
        per_seed = draw_actions(config, state, draw, k, obs=obs.reshape(seeds, num_episodes, -1))
        return per_seed.reshape(seeds * num_episodes, -1)

    result = toy.evaluate_point_goal(
        policy, key, num_episodes=seeds * num_episodes, chunk_len=config.horizon, config=task
    )
    success, returns = point_goal_outcomes(result["trajectories"], task)
    return {
        "success_rate": success.reshape(seeds, num_episodes).mean(axis=1),
        "mean_return": returns.reshape(seeds, num_episodes).mean(axis=1),
    }


def point_goal_outcomes(trajectories, task: toy.PointGoalConfig = toy.PointGoalConfig()):
    """Per episode (success (E,) bool, return (E,)) from ``toy.evaluate_point_goal``'s trajectories
    (E, max_steps + 1, 2): positions freeze once the goal is reached; reward is -1 per step, 0 on the reaching step."""
    paths = np.asarray(trajectories)
    near = np.linalg.norm(paths[:, 1:] - np.asarray(task.goal), axis=-1) < task.goal_radius  # after step 1..T
    success = near.any(axis=1)
    steps = np.where(success, np.argmax(near, axis=1) + 1, task.max_steps)
    return success, -(steps - success).astype(float)


def summarise(run: TrainingRun, metric: str) -> dict[str, tuple]:
    """{method: (mean, std, min, max) over seeds} of ``metric`` at the last checkpoint."""
    out = {}
    for method, values in run.curves[metric].items():
        v = np.asarray(values[-1], float)
        out[method] = (float(v.mean()), float(v.std()), float(v.min()), float(v.max()))
    return out


# --------------------------------------------------------------------------- critic quality
def _critic_agreement(config, critic_params, actions, rewards):
    """Per seed: the Pearson correlation between the critic's min_i Q_i(a) and the true reward on ``actions``, and
    the critic's range max Q - min Q there (the scale of its gradient)."""
    q = np.asarray(jax.vmap(lambda p: critic_fn(config, p)(None, actions))(critic_params))
    r = np.asarray(rewards)
    corr = [0.0 if np.std(row) < 1e-12 else float(np.corrcoef(row, r)[0, 1]) for row in q]
    return np.asarray(corr), q.max(axis=1) - q.min(axis=1)


def critic_quality(
    run: TrainingRun, critics: dict[str, object], *, weight: float, key, num: int = 1000, heldout: int = 2000
) -> list[dict]:
    """The final BC flow of ``run`` guided (QGF at ``weight``) by each critic in ``critics`` ({label: multi-seed
    critic parameters}); one row per critic with, averaged over seeds, the critic's correlation with the true
    reward on held-out behaviour actions and its range there (max Q - min Q, true range 1), QGF's true reward, its gain
    over BC, its share in the best region and its distance to the behaviour data (and the per-seed correlations and
    gains under ``critic_corr_seeds``, ``gain_seeds``)."""
    problem, behaviour = run.extra["problem"], run.extra["behaviour"]
    key = toy.as_key(key)
    fresh = problem.sample_actions(jax.random.fold_in(key, 1), heldout)
    true_r = problem.reward(None, fresh)
    bc = draw_actions(
        run.config,
        run.state,
        evaluation_spec(SamplerSpec("bc", steps=run.config.flow_steps)),
        jax.random.fold_in(key, 2),
        num=num,
    )
    bc_reward = np.asarray([float(jnp.mean(problem.reward(None, a))) for a in bc])
    spec = SamplerSpec("guided", steps=run.config.flow_steps, weight=weight)
    rows = []
    for label, params in critics.items():
        actions = draw_actions(run.config, run.state, spec, jax.random.fold_in(key, 2), num=num, critic_params=params)
        scores = _bandit_scores(problem, actions, behaviour, jax.random.fold_in(key, 3))
        agreement, q_range = _critic_agreement(run.config, params, fresh, true_r)
        gain = scores["mean_reward"] - bc_reward
        row = {
            "critic": label,
            "critic_corr": float(agreement.mean()),
            "q_range": float(q_range.mean()),
            "qgf_reward": float(scores["mean_reward"].mean()),
            "gain_over_bc": float(gain.mean()),
            "frac_best_region": float(scores["frac_best_region"].mean()),
            "sw_to_behaviour": float(scores["sw_to_behaviour"].mean()),
            "critic_corr_seeds": agreement,
            "gain_seeds": gain,
        }
        rows.append(row)
    return rows


def negated_critic(critic_params):
    """Critic parameters whose every ensemble member outputs -Q: the output layer (the last ``Dense_k`` of each
    MLP) negated. A deliberately wrong critic that ranks every action backwards."""

    def walk(tree):
        if not isinstance(tree, dict):
            return tree
        dense = sorted((k for k in tree if str(k).startswith("Dense_")), key=lambda k: int(str(k).split("_")[1]))
        out = {k: walk(v) for k, v in tree.items()}
        if dense:
            last = dense[-1]
            out[last] = jax.tree_util.tree_map(lambda x: -x, tree[last])
        return out

    negated = walk(jax.tree_util.tree_map(lambda x: x, dict(critic_params)))
    return type(critic_params)(negated) if not isinstance(critic_params, dict) else negated


# --------------------------------------------------------------------------- choosing w on held-out data
def select_weight(weights, heldout_scores, test_scores):
    """(w, reported score): the weight whose mean held-out score is highest (the smallest such w on a tie), and the
    mean *test* score at that weight.

    weights: (W,); heldout_scores, test_scores: (W, R) scores of each weight on R held-out / test repetitions
    (seeds, states, ...). The test scores play no part in the choice, so the reported number is an unbiased
    estimate of the chosen w's performance; choosing on the test scores reports the maximum of noisy estimates,
    which is biased upwards.
    """
    weights = np.asarray(weights, float)
    heldout = np.asarray(heldout_scores, float)
    test = np.asarray(test_scores, float)
    if weights.ndim != 1 or weights.size == 0:
        raise ValueError(f"`weights` must be a non-empty 1D sequence, got shape {weights.shape}.")
    for name, scores in (("heldout_scores", heldout), ("test_scores", test)):
        if scores.ndim != 2 or scores.shape[0] != weights.size:
            raise ValueError(f"`{name}` must have shape ({weights.size}, repetitions), got {scores.shape}.")
    means = heldout.mean(axis=1)
    tied = np.flatnonzero(means == means.max())
    index = int(tied[np.argmin(weights[tied])])
    return float(weights[index]), float(test[index].mean())


# --------------------------------------------------------------------------- model size
def contextual_ring_dataset(num_samples: int, seed: int):
    """(dataset, problem): contexts, ring actions and their rewards from ``toy.contextual_ring_bandit``."""
    problem = toy.make_bandit("contextual_ring")
    obs, actions = problem.sample(jax.random.PRNGKey(seed), require_positive_int("num_samples", num_samples))
    rewards = problem.reward(obs, actions)
    n = actions.shape[0]
    dataset = make_dataset(
        np.asarray(actions),
        np.asarray(rewards),
        observations=np.asarray(obs),
        terminals=np.ones(n, np.float32),
        masks=np.zeros(n, np.float32),
        next_observations=np.asarray(obs),
    )
    return dataset, problem


def width_study(
    widths: Sequence[int],
    *,
    seeds: Sequence[int] = (0, 1),
    num_steps: int = 2000,
    weights: Sequence[float] = (0.0, 0.25, 0.5, 1.0, 2.0),
    num_samples: int = 20000,
    num_contexts: int = 1000,
    batch_size: int = 256,
    data_seed: int = 0,
    progress: bool = True,
    select: Callable | None = None,
) -> list[dict]:
    """Flow (3 hidden layers) and critic (2 hidden layers) of each width on the contextual ring.

    For each width: train over ``seeds``; score BC and QGF at every ``weights`` entry with the true reward on
    ``num_contexts`` held-out contexts and on as many separate test contexts; choose w on the held-out ones
    (``select``: a function like ``select_weight``, which is the default; notebook 06 passes the student's) and
    report the test reward, the gain over BC (test), the critic's correlation with the
    true reward (test contexts, behaviour actions) and the parameter counts.
    """
    dataset, problem = contextual_ring_dataset(num_samples, data_seed)
    weights = [float(w) for w in weights]
    if 0.0 not in weights:
        weights = [0.0] + weights
    key = jax.random.PRNGKey(3000 + data_seed)
    val_obs = problem.sample_contexts(jax.random.fold_in(key, 1), num_contexts)
    test_obs = problem.sample_contexts(jax.random.fold_in(key, 2), num_contexts)
    test_actions = problem.sample_actions(jax.random.fold_in(key, 3), num_contexts)
    test_rewards = problem.reward(test_obs, test_actions)
    rows = []
    for width in widths:
        width = require_positive_int("widths", width)
        config = QGFConfig(
            obs_dim=2,
            action_dim=2,
            horizon=1,
            actor_hidden=(width,) * 3,
            critic_hidden=(width,) * 2,
            value_hidden=(16,),
            layer_norm=False,
            learning_rate=1e-3,
            batch_size=batch_size,
            time_grid=None,
        )
        state = initial_states(config, seeds)
        state, history = fit(
            config, state, dataset, num_steps, chunk_size=num_steps, progress=progress, desc=f"width {width}"
        )
        scores = {}
        for split, obs in (("heldout", val_obs), ("test", test_obs)):
            per_weight = []
            for i, w in enumerate(weights):
                spec = SamplerSpec("guided", weight=w)  # w = 0 draws exactly the BC actions
                a = draw_actions(config, state, spec, jax.random.fold_in(key, 10 + i), obs=obs)
                per_weight.append([float(jnp.mean(problem.reward(obs, x))) for x in a])
            scores[split] = np.asarray(per_weight)  # (weights, seeds)
        chosen, test_reward = (select or select_weight)(weights, scores["heldout"], scores["test"])
        chosen, test_reward = float(chosen), float(test_reward)
        q = np.asarray(
            jax.vmap(lambda p, c=config: critic_fn(c, p)(test_obs, test_actions))(state.target_critic_params)
        )
        corr = float(np.mean([np.corrcoef(row, np.asarray(test_rewards))[0, 1] for row in q]))
        rows.append(
            {
                "width": width,
                "flow_params": num_parameters(seed_state(state, 0).policy_params),
                "critic_params": num_parameters(seed_state(state, 0).critic_params),
                "flow_loss": float(np.mean(history[-1]["policy_loss"])),
                "critic_corr": corr,
                "bc_reward": float(scores["test"][0].mean()),
                "chosen_weight": chosen,
                "qgf_reward": test_reward,
                "qgf_reward_std": float(scores["test"][weights.index(chosen)].std()),
                "gain_over_bc": test_reward - float(scores["test"][0].mean()),
                "weights": weights,
                "heldout_scores": scores["heldout"],
                "test_scores": scores["test"],
            }
        )
    return rows


# --------------------------------------------------------------------------- figures
def curves_figure(
    runs: dict[str, TrainingRun],
    metric: str,
    *,
    title: str,
    y_title: str,
    methods: dict[str, str] | None = None,
    width: int = 860,
    height: int = 380,
):
    """Training curves of ``metric``: for each (run label, method) the mean over seeds as a line and the
    seeds' range as a shaded band. ``runs`` {label: TrainingRun}; ``methods`` {method: colour} (default BC, QGF,
    FQL and QAM; a run without a method's curves skips it); a method shared by several runs with identical curves
    (the BC flow, QGF and QAM do not depend on FQL's alpha) is drawn once."""
    import plotly.graph_objects as go

    from qgf_lite.presentation.plots import method_color

    methods = methods or {m: method_color(m) for m in ("BC", "QGF", "FQL", "QAM")}
    fig = go.Figure()
    drawn = []
    dashes = ["solid", "dash", "dot", "dashdot"]
    for r, (run_label, run) in enumerate(runs.items()):
        steps = np.asarray(run.steps)
        for method, colour in methods.items():
            if method not in run.curves[metric]:
                continue  # e.g. QAM, trained in only one of the runs
            values = np.asarray(run.curves[metric][method], float)  # (checkpoints, seeds)
            if any(np.array_equal(values, other) for other in drawn):
                continue
            drawn.append(values)
            name = method if method != "FQL" or len(runs) == 1 else f"FQL, {run_label}"
            dash = dashes[r % len(dashes)] if method == "FQL" else "solid"
            fig.add_trace(
                go.Scatter(
                    x=np.concatenate([steps, steps[::-1]]),
                    y=np.concatenate([values.max(axis=1), values.min(axis=1)[::-1]]),
                    mode="lines",
                    fill="toself",
                    line=dict(width=0),
                    fillcolor=colour,
                    opacity=0.15,
                    hoverinfo="skip",
                    showlegend=False,
                )
            )
            fig.add_trace(
                go.Scatter(
                    x=steps, y=values.mean(axis=1), mode="lines+markers", name=name, line=dict(color=colour, dash=dash)
                )
            )
    fig.update_layout(
        title=title,
        template="plotly_white",
        width=width,
        height=height,
        xaxis_title="training steps",
        yaxis_title=y_title,
        legend=dict(x=1.02, y=1),
    )
    return fig


def actions_figure(
    runs: dict[str, TrainingRun],
    *,
    weight: float,
    key,
    num: int = 1000,
    seed: int = 0,
    extra: dict[str, object] | None = None,
    title: str | None = None,
):
    """Where each policy puts its actions on a bandit, one panel each (seed ``seed``): the behaviour data, BC and QGF
    at ``weight`` (from the first run: they do not depend on FQL's alpha), FQL of every run (``runs`` {label:
    TrainingRun from run_bandit}), QAM (from the first run that trained it: it does not depend on FQL's alpha either),
    then ``extra`` {label: actions (num, 2)} (e.g. a policy you trained); the reward
    peak as a red star. Every method keeps its colour (``qgf_lite.presentation.plots.method_color``)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from qgf_lite.presentation.plots import method_color, scatter_trace

    if not runs:
        raise ValueError("`runs` must hold at least one TrainingRun.")
    main = next(iter(runs.values()))
    key = toy.as_key(key)
    steps = main.config.flow_steps
    panels = {"behaviour data": np.asarray(main.extra["behaviour"][:num])}
    for label, spec in (
        ("BC", SamplerSpec("bc", steps=steps)),
        (f"QGF w={weight:g}", SamplerSpec("guided", steps=steps, weight=weight)),
    ):
        panels[label] = np.asarray(draw_actions(main.config, main.state, evaluation_spec(spec), key, num=num)[seed])
    for run_label, run in runs.items():
        name = "FQL" if len(runs) == 1 else f"FQL {run_label}"
        actions = draw_actions(run.config, run.state, SamplerSpec("fql", steps=steps), key, num=num)
        panels[name] = np.asarray(actions[seed])
    qam_run = next((run for run in runs.values() if run.config.qam), None)
    if qam_run is not None:
        panels["QAM"] = np.asarray(
            draw_actions(qam_run.config, qam_run.state, SamplerSpec("qam", steps=steps), key, num=num)[seed]
        )
    panels.update({label: np.asarray(a) for label, a in (extra or {}).items()})
    fig = make_subplots(1, len(panels), subplot_titles=list(panels), horizontal_spacing=0.02)
    peak = np.asarray(main.extra["problem"].best_points)
    for col, (name, actions) in enumerate(panels.items(), start=1):
        fig.add_trace(scatter_trace(actions, color=method_color(name), size=3, opacity=0.35), row=1, col=col)
        fig.add_trace(
            go.Scatter(x=peak[:, 0], y=peak[:, 1], mode="markers", marker=dict(symbol="star", size=12, color="red")),
            row=1,
            col=col,
        )
    fig.update_xaxes(range=[-1.05, 1.05], showticklabels=False)
    fig.update_yaxes(range=[-1.05, 1.05], showticklabels=False, scaleanchor="x", scaleratio=1)
    for annotation in fig.layout.annotations:  # the panel titles: small enough to fit side by side
        annotation.font = dict(size=12)
    fig.update_layout(
        title=title or f"Actions of each policy (seed {seed}; star: reward peak)",
        height=300,
        width=860,
        showlegend=False,
        template="plotly_white",
        margin=dict(t=70, b=10, l=10, r=10),
    )
    return fig
