"""Offline generation of OGBench manipulation datasets with OGBench's own scripted oracles.

The oracles ship in the pip package (``ogbench.manipspace.oracles``): plan oracles for 'play' data, Markov
oracles for 'noisy' data, written in the file layout OGBench's loader reads (``x.npz`` plus ``x-val.npz``).
The settings follow OGBench's ``data_gen_scripts/generate_manipspace.py`` and ``commands.sh``: 1001-step
episodes, the per-domain episode counts of the published datasets, and for 'noisy' data a share of uniformly
random actions (10% for cube and scene, 20% for puzzle).

Generation is deterministic given ``seed``: every episode draws all of its randomness from a seed derived
from ``(seed, episode index)``, so the arrays do not depend on how many worker processes share the work.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import multiprocessing
import os
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

# --------------------------------------------------------------------------------------------- generation
from qgf_lite.ogbench.datasets import (
    DATASET_TYPES,
    ENV_IDS,
    ParsedEnvName,
    default_dataset_path,
    parse_env_name,
    validation_path,
)
from qgf_lite.ogbench.environments import headless_mujoco, import_ogbench, quiet_spaces
from qgf_lite.progress import progress_bar as tqdm
from qgf_lite.validation import require_positive_int

DEFAULT_EPISODE_LENGTH = 1001
# Range of the per-episode probability that a new cube target is on top of another cube (OGBench's generator).
_CUBE_STACK_PROBABILITY_RANGE = {
    "cube-single": (0.0, 0.0),
    "cube-double": (0.0, 0.25),
    "cube-triple": (0.05, 0.35),
    "cube-quadruple": (0.1, 0.5),
    "cube-octuple": (0.0, 0.35),
}
_OTHER_STACK_PROBABILITY = 0.5
# Training episodes of OGBench's published '<env>-play-v0'/'<env>-noisy-v0' datasets (its commands.sh); the
# others have 1000. cube-octuple has no standard-size dataset in OGBench (only a 100M one): 1000 here too.
_OGBENCH_NUM_EPISODES = {"cube-triple": 3000, "cube-quadruple": 5000, "puzzle-4x5": 3000, "puzzle-4x6": 5000}
_DEFAULT_NUM_EPISODES = 1000
_SCENE_MAX_ATTEMPTS = 100


@dataclasses.dataclass(frozen=True)
class GenerationStats:
    train_path: str
    val_path: str
    num_train_episodes: int
    num_val_episodes: int
    num_train_transitions: int  # rows in the training file (one per env step)
    num_val_transitions: int
    seconds: float
    transitions_per_second: float
    workers: int


@dataclasses.dataclass(frozen=True)
class _CollectorConfig:
    env_id: str
    version: str
    dataset_type: str
    episode_length: int
    noise: float
    noise_smoothing: float
    min_norm: float
    seed: int
    p_random_action: float = 0.0


def default_num_episodes(env_id: str) -> int:
    """Training episodes of OGBench's dataset for ``env_id`` (1000 x 1001 steps = 1M transitions for most)."""
    if env_id not in ENV_IDS:
        raise ValueError(f"Unknown environment id {env_id!r}; choose from {', '.join(ENV_IDS)}.")
    return _OGBENCH_NUM_EPISODES.get(env_id, _DEFAULT_NUM_EPISODES)


def random_action_probability(env_id: str, dataset_type: str) -> float:
    """Per-step probability of a uniformly random action in OGBench's datasets (its ``--p_random_action``).

    'play' data has none; 'noisy' data replaces 10% (cube, scene) or 20% (puzzle) of the oracle's actions.
    """
    if env_id not in ENV_IDS:
        raise ValueError(f"Unknown environment id {env_id!r}; choose from {', '.join(ENV_IDS)}.")
    if dataset_type not in DATASET_TYPES:
        raise ValueError(f"`dataset_type` must be one of {DATASET_TYPES}, got {dataset_type!r}.")
    if dataset_type == "play":
        return 0.0
    return 0.2 if env_id.startswith("puzzle") else 0.1


def episode_seed_sequence(seed: int, episode_index: int, attempt: int = 0) -> np.random.SeedSequence:
    """All randomness of one episode (env reset, oracle plans, noise) comes from this sequence."""
    return np.random.SeedSequence(entropy=seed, spawn_key=(episode_index, attempt))


def _make_oracles(env, env_id: str, dataset_type: str, noise: float, noise_smoothing: float, min_norm: float):
    """Oracle per target kind ('cube', 'button', 'drawer', 'window'), chosen as OGBench's generator does."""
    import_ogbench()
    from ogbench.manipspace.oracles.markov import button_markov, cube_markov, drawer_markov, window_markov
    from ogbench.manipspace.oracles.plan import button_plan, cube_plan, drawer_plan, window_plan

    if dataset_type == "play":
        plan = dict(env=env, noise=noise, noise_smoothing=noise_smoothing)
        if env_id.startswith("puzzle"):
            return {"button": button_plan.ButtonPlanOracle(gripper_always_closed=True, **plan)}
        oracles = {"cube": cube_plan.CubePlanOracle(**plan)}
        if env_id == "scene":
            oracles |= {
                "button": button_plan.ButtonPlanOracle(**plan),
                "drawer": drawer_plan.DrawerPlanOracle(**plan),
                "window": window_plan.WindowPlanOracle(**plan),
            }
        return oracles

    markov = dict(env=env, min_norm=min_norm)
    if env_id.startswith("puzzle"):
        return {"button": button_markov.ButtonMarkovOracle(gripper_always_closed=True, **markov)}
    if env_id != "scene":
        return {"cube": cube_markov.CubeMarkovOracle(**markov)}
    return {
        "cube": cube_markov.CubeMarkovOracle(max_step=100, **markov),
        "button": button_markov.ButtonMarkovOracle(**markov),
        "drawer": drawer_markov.DrawerMarkovOracle(**markov),
        "window": window_markov.WindowMarkovOracle(**markov),
    }


def _scene_episode_is_healthy(qpos: np.ndarray) -> bool:
    # OGBench discards scene episodes where the cube leaves the visible table (except into the drawer),
    # because goal images of such states are ambiguous.
    xyz = qpos[:, 14:17]
    too_far_right = xyz[:, 1] >= 0.29
    left_outside_drawer = (xyz[:, 1] <= -0.3) & ((xyz[:, 2] < 0.06) | (xyz[:, 2] > 0.08))
    return not (too_far_right.any() or left_outside_drawer.any())


@contextlib.contextmanager
def _global_numpy_seed(seed_words: np.ndarray):
    # OGBench's oracles draw from the global NumPy generator; seed it per episode, then put the caller's back.
    saved = np.random.get_state()
    np.random.seed(seed_words)
    try:
        yield
    finally:
        np.random.set_state(saved)


class _EpisodeCollector:
    """One environment plus its oracles, reused for every episode a process collects."""

    def __init__(self, config: _CollectorConfig):
        import gymnasium

        import_ogbench()
        import ogbench.manipspace  # noqa: F401  (registers the environments)

        self.config = config
        with quiet_spaces():
            self.env = gymnasium.make(
                f"{config.env_id}-{config.version}",
                terminate_at_goal=False,
                mode="data_collection",
                max_episode_steps=config.episode_length,
            )
            self.action_shape = self.env.action_space.shape  # (5,): OGBench's normalised end-effector actions
        self.oracles = _make_oracles(
            self.env, config.env_id, config.dataset_type, config.noise, config.noise_smoothing, config.min_norm
        )
        self.has_button_states = hasattr(self.env.unwrapped, "_cur_button_states")

    def collect(self, episode_index: int) -> dict:
        for attempt in range(_SCENE_MAX_ATTEMPTS):
            sequence = episode_seed_sequence(self.config.seed, episode_index, attempt)
            env_seed, numpy_words = int(sequence.generate_state(1)[0]), sequence.generate_state(4)
            with _global_numpy_seed(numpy_words):
                episode = self._run_episode(env_seed)
            if self.config.env_id != "scene" or _scene_episode_is_healthy(episode["qpos"]):
                return episode
        raise RuntimeError(f"episode {episode_index}: no healthy scene episode in {_SCENE_MAX_ATTEMPTS} attempts.")

    def _stack_probability(self) -> float:
        low, high = _CUBE_STACK_PROBABILITY_RANGE.get(self.config.env_id, (None, None))
        if low is None:
            return _OTHER_STACK_PROBABILITY
        return float(np.random.uniform(low, high))

    def _run_episode(self, env_seed: int) -> dict:
        config, env = self.config, self.env
        ob, info = env.reset(seed=env_seed)
        p_stack = self._stack_probability()
        if config.dataset_type == "noisy":
            xi = np.random.uniform(0.0, config.noise)
            noise_scale = np.array([xi, xi, xi, 3 * xi, 10 * xi])
        oracle = self.oracles[info["privileged/target_task"]]
        oracle.reset(ob, info)

        rows = {"observations": [], "actions": [], "terminals": [], "qpos": [], "qvel": []}
        if self.has_button_states:
            rows["button_states"] = []
        done = False
        while not done:
            if config.p_random_action > 0 and np.random.rand() < config.p_random_action:
                # OGBench's env.action_space.sample(): uniform on [-1, 1]^5, drawn here from the seeded generator;
                # the oracle is not consulted (nor its noise added) on such a step, as in OGBench.
                action = np.random.uniform(-1.0, 1.0, size=self.action_shape)
            else:
                action = np.asarray(oracle.select_action(ob, info), dtype=np.float64)
                if config.dataset_type == "noisy":
                    action = action + np.random.normal(0.0, noise_scale)
            # Execute exactly the float32 action that is stored, so the data replays bit for bit.
            action = np.clip(action, -1.0, 1.0).astype(np.float32)
            next_ob, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            if oracle.done:
                # A new target as soon as the current one is reached: one episode chains many tasks.
                target_ob, target_info = env.unwrapped.set_new_target(p_stack=p_stack)
                oracle = self.oracles[target_info["privileged/target_task"]]
                oracle.reset(target_ob, target_info)
            rows["observations"].append(ob)
            rows["actions"].append(action)
            rows["terminals"].append(done)
            rows["qpos"].append(info["prev_qpos"])
            rows["qvel"].append(info["prev_qvel"])
            if self.has_button_states:
                rows["button_states"].append(info["prev_button_states"])
            ob = next_ob
        return _stack_rows(rows)


def _stack_rows(rows: dict) -> dict:
    dtypes = {"terminals": bool, "button_states": np.int64}  # OGBench's on-disk dtypes; the rest float32
    return {key: np.asarray(values, dtype=dtypes.get(key, np.float32)) for key, values in rows.items()}


_WORKER_COLLECTOR: _EpisodeCollector | None = None


def _init_worker(config: _CollectorConfig) -> None:
    global _WORKER_COLLECTOR
    headless_mujoco(force=True)
    _WORKER_COLLECTOR = _EpisodeCollector(config)


def _collect_in_worker(episode_index: int) -> dict:
    return _WORKER_COLLECTOR.collect(episode_index)


def _iter_episodes(config: _CollectorConfig, num_episodes: int, workers: int):
    """Episodes 0..num_episodes-1 in order, collected in this process or in a spawn pool."""
    if workers == 1:
        collector = _EpisodeCollector(config)
        for index in range(num_episodes):
            yield collect_episode(collector, index)
        return
    # spawn: fork is unsafe with MuJoCo/JAX threads. An executor (not multiprocessing.Pool) so a worker that
    # dies -- e.g. a script without an `if __name__ == "__main__":` guard -- raises instead of hanging.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(config,))
    try:
        yield from pool.map(_collect_in_worker, range(num_episodes))
    except BrokenProcessPool as err:
        raise RuntimeError(
            "a data-generation worker process died. When calling generate_dataset(workers>1) from a "
            'script, put the call under `if __name__ == "__main__":` (worker processes re-import it).'
        ) from err
    finally:
        # On an error or Ctrl-C, drop the queued episodes instead of finishing all of them first.
        pool.shutdown(wait=True, cancel_futures=True)


def collect_episode(collector: _EpisodeCollector, episode_index: int) -> dict:
    """One episode's arrays (a seam for tests that interrupt generation)."""
    return collector.collect(episode_index)


def _concatenate_episodes(episodes: list) -> dict:
    return {key: np.concatenate([episode[key] for episode in episodes]) for key in episodes[0]}


def _save_npz(file, arrays: dict) -> None:
    np.savez_compressed(file, **arrays)


def write_npz_files_atomically(contents: dict) -> None:
    """Write {path: arrays} so each path holds either its old content or the complete new file.

    Every file goes to a temporary sibling first; only when all are written do they replace the targets.
    """
    temporaries = {}
    try:
        for path, arrays in contents.items():
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            # Same folder, so os.replace is an atomic rename; 'x' mode keeps the usual umask permissions.
            temporary = f"{path}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part"
            temporaries[path] = temporary
            with open(temporary, "xb") as file:
                _save_npz(file, arrays)
        for path, temporary in temporaries.items():
            os.replace(temporary, path)
    finally:
        for temporary in temporaries.values():
            with contextlib.suppress(FileNotFoundError):
                os.remove(temporary)


def _resolve_generation_name(env_name: str, dataset_type: str | None) -> ParsedEnvName:
    parsed = parse_env_name(env_name)
    if dataset_type is None:
        dataset_type = parsed.dataset_type or "play"
    if dataset_type not in DATASET_TYPES:
        raise ValueError(f"`dataset_type` must be one of {DATASET_TYPES}, got {dataset_type!r}.")
    if parsed.dataset_type not in (None, dataset_type):
        raise ValueError(
            f"`env_name` {env_name!r} says {parsed.dataset_type!r} data but `dataset_type` is {dataset_type!r}."
        )
    return parsed._replace(dataset_type=dataset_type)


def generate_dataset(
    env_name: str,
    dataset_type: str | None = None,
    num_episodes: int | None = None,
    out_path: str | None = None,
    *,
    seed: int = 0,
    workers: int = 1,
    episode_length: int | None = None,
    noise: float = 0.1,
    noise_smoothing: float = 0.5,
    min_norm: float = 0.4,
    num_val_episodes: int | None = None,
    p_random_action: float | None = None,
    progress: bool = True,
) -> GenerationStats:
    """Generate an OGBench-format dataset with OGBench's scripted oracles.

    Args:
        env_name: 'cube-single', 'cube-single-v0' or a dataset name such as 'cube-single-play-v0'.
        dataset_type: 'play' (plan oracles with temporally smoothed noise) or 'noisy' (Markov oracles with
            per-episode Gaussian action noise, plus random actions: ``p_random_action``); default: the type in
            ``env_name``, else 'play'.
        num_episodes: training episodes (default: as many as OGBench's dataset, ``default_num_episodes``:
            1000, or 3000 for cube-triple/puzzle-4x5, 5000 for cube-quadruple/puzzle-4x6);
            ``num_val_episodes`` (default num_episodes // 10, at least 1) more go to the '-val.npz' split.
        out_path: training file, must end in '.npz' (default ~/.ogbench/data/<env>-<type>-v0.npz, where
            ``load_dataset`` looks first).
        seed: episode i uses randomness derived from (seed, i) only, so any ``workers`` gives the same data.
        workers: processes collecting episodes (1 = this process).
        episode_length: steps per episode (default 1001, OGBench's standard); the target changes whenever the
            oracle finishes one.
        noise, noise_smoothing, min_norm: oracle noise settings (OGBench defaults).
        p_random_action: per-step probability of a uniformly random action instead of the oracle's (default:
            OGBench's, ``random_action_probability``: 0 for play, 0.1 for noisy cube/scene, 0.2 for noisy puzzle).

    Returns:
        GenerationStats, including transitions per second.
    """
    parsed = _resolve_generation_name(env_name, dataset_type)
    if num_episodes is None:
        num_episodes = default_num_episodes(parsed.env_id)
    num_episodes = require_positive_int("num_episodes", num_episodes)
    workers = require_positive_int("workers", workers)
    episode_length = require_positive_int(
        "episode_length", DEFAULT_EPISODE_LENGTH if episode_length is None else episode_length, minimum=2
    )
    if num_val_episodes is None:
        num_val_episodes = max(1, num_episodes // 10)
    num_val_episodes = require_positive_int("num_val_episodes", num_val_episodes)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be an integer >= 0, got {seed!r}.")
    for name, value in (("noise", noise), ("noise_smoothing", noise_smoothing), ("min_norm", min_norm)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
    if p_random_action is None:
        p_random_action = random_action_probability(parsed.env_id, parsed.dataset_type)
    if isinstance(p_random_action, bool) or not 0.0 <= float(p_random_action) <= 1.0:
        raise ValueError(f"`p_random_action` must be a probability in [0, 1], got {p_random_action!r}.")

    name = f"{parsed.env_id}-{parsed.dataset_type}-{parsed.version}"
    train_path = os.path.expanduser(str(out_path)) if out_path is not None else default_dataset_path(name)
    val_path = validation_path(train_path)

    config = _CollectorConfig(
        env_id=parsed.env_id,
        version=parsed.version,
        dataset_type=parsed.dataset_type,
        episode_length=episode_length,
        noise=float(noise),
        noise_smoothing=float(noise_smoothing),
        min_norm=float(min_norm),
        seed=int(seed),
        p_random_action=float(p_random_action),
    )
    total = num_episodes + num_val_episodes
    workers = min(workers, total)
    start = time.perf_counter()
    episodes, steps = [], 0
    with tqdm(total=total, desc=f"generate {name}", unit="episode", disable=not progress) as bar:
        for episode in _iter_episodes(config, total, workers):
            episodes.append(episode)
            steps += len(episode["terminals"])
            bar.update(1)
            bar.set_postfix(transitions_per_s=f"{steps / (time.perf_counter() - start):.0f}")
    seconds = time.perf_counter() - start

    train, val = _concatenate_episodes(episodes[:num_episodes]), _concatenate_episodes(episodes[num_episodes:])
    write_npz_files_atomically({train_path: train, val_path: val})
    transitions = len(train["terminals"]) + len(val["terminals"])
    return GenerationStats(
        train_path=train_path,
        val_path=val_path,
        num_train_episodes=num_episodes,
        num_val_episodes=num_val_episodes,
        num_train_transitions=len(train["terminals"]),
        num_val_transitions=len(val["terminals"]),
        seconds=seconds,
        transitions_per_second=transitions / seconds,
        workers=workers,
    )


def slice_seed(seed: int, index: int) -> int:
    """The ``seed`` of slice ``index`` of a sliced dataset: distinct per (seed, index), so slices share no episode."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def generate_slices(
    env_name: str,
    num_slices: int,
    dataset_type: str | None = None,
    num_episodes: int | None = None,
    out_dir: str | None = None,
    *,
    seed: int = 0,
    progress: bool = True,
    **kwargs,
) -> list:
    """Write OGBench's 100M-transition folder layout with ``num_slices`` slices made by ``generate_dataset``.

    The folder (default ~/.ogbench/data/<env>-<type>-100m-v0) gets '<env>-<type>-v0-000.npz' with its
    '-000-val.npz', '-001.npz', ..., as OGBench publishes its 100M datasets (100 slices of 1000 episodes); here
    each slice holds ``num_episodes`` episodes (default as ``generate_dataset``), so the streaming path can be
    tested on small slices. Slice i draws its episodes from ``slice_seed(seed, i)``. ``kwargs`` go to
    ``generate_dataset`` (workers, episode_length, ...). Returns the GenerationStats of each slice.
    """
    from qgf_lite.ogbench.datasets import DEFAULT_DATASET_DIR, slice_file_name, sliced_folder_name

    num_slices = require_positive_int("num_slices", num_slices)
    if num_slices > 1000:
        raise ValueError(f"`num_slices` must be at most 1000 (slice files are numbered 000-999), got {num_slices}.")
    parsed = _resolve_generation_name(env_name, dataset_type)
    name = f"{parsed.env_id}-{parsed.dataset_type}-{parsed.version}"
    folder = os.path.expanduser(
        str(out_dir) if out_dir is not None else os.path.join(DEFAULT_DATASET_DIR, sliced_folder_name(name))
    )
    if os.path.isfile(folder):
        raise ValueError(
            f"`out_dir` {folder!r} is a file; with slices, --out names the folder to fill, e.g. "
            f"data/{sliced_folder_name(name)}."
        )
    stats = []
    for index in range(num_slices):
        path = os.path.join(folder, slice_file_name(name, index))
        stats.append(
            generate_dataset(
                name,
                num_episodes=num_episodes,
                out_path=path,
                seed=slice_seed(seed, index),
                progress=progress,
                **kwargs,
            )
        )
    return stats


# --------------------------------------------------------------------------------------------- CLI


def build_generate_parser(prog: str = "qgf-lite generate") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Generate an OGBench manipulation dataset offline with OGBench's scripted oracles."
    )
    parser.add_argument("env", help=f"environment id or dataset name, one of: {', '.join(ENV_IDS)}")
    parser.add_argument(
        "--type",
        dest="dataset_type",
        choices=DATASET_TYPES,
        default=None,
        help="'play' (plan oracles) or 'noisy' (Markov oracles); default from the name, else play",
    )
    parser.add_argument(
        "--episodes",
        type=int,
        default=None,
        help="training episodes (default: as many as OGBench's dataset; 1000 = 1M steps for most, "
        "3000 for cube-triple and puzzle-4x5, 5000 for cube-quadruple and puzzle-4x6)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        default=None,
        help="training .npz path (default ~/.ogbench/data/<name>.npz); with "
        "--slices, the folder (default ~/.ogbench/data/<env>-<type>-100m-v0)",
    )
    parser.add_argument(
        "--slices",
        type=int,
        default=None,
        help="write OGBench's 100M layout instead: this many slices <env>-<type>-v0-000.npz, ... (each "
        "with its -val.npz) of --episodes episodes each, in the --out folder",
    )
    parser.add_argument("--episode-length", type=int, default=None, help="steps per episode (default 1001)")
    parser.add_argument(
        "--p-random-action",
        type=float,
        default=None,
        help="per-step probability of a uniformly random action (default: OGBench's, 0 for play, "
        "0.1 for noisy cube/scene, 0.2 for noisy puzzle)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main_generate(argv: Sequence[str] | None = None) -> int:
    """``qgf-lite generate ...``: returns a process exit status."""
    parser = build_generate_parser()
    args = parser.parse_args(argv)
    try:
        if args.slices is not None:
            slices = generate_slices(
                args.env,
                args.slices,
                dataset_type=args.dataset_type,
                num_episodes=args.episodes,
                out_dir=args.out,
                seed=args.seed,
                workers=args.workers,
                episode_length=args.episode_length,
                p_random_action=args.p_random_action,
                progress=not args.no_progress,
            )
            folder = os.path.dirname(slices[0].train_path)
            print(
                f"wrote {len(slices)} slices to {folder} ({sum(s.num_train_transitions for s in slices)} training "
                f"transitions) in {sum(s.seconds for s in slices):.1f} s"
            )
            return 0
        stats = generate_dataset(
            args.env,
            dataset_type=args.dataset_type,
            num_episodes=args.episodes,
            out_path=args.out,
            seed=args.seed,
            workers=args.workers,
            episode_length=args.episode_length,
            p_random_action=args.p_random_action,
            progress=not args.no_progress,
        )
    except (TypeError, ValueError) as err:
        parser.error(str(err))
    print(
        f"wrote {stats.train_path} ({stats.num_train_transitions} transitions) and {stats.val_path} "
        f"({stats.num_val_transitions}) in {stats.seconds:.1f} s: {stats.transitions_per_second:.0f} "
        f"transitions/s with {stats.workers} worker(s)"
    )
    return 0


__all__ = [
    "build_generate_parser",
    "collect_episode",
    "DEFAULT_EPISODE_LENGTH",
    "default_num_episodes",
    "episode_seed_sequence",
    "generate_dataset",
    "generate_slices",
    "GenerationStats",
    "main_generate",
    "random_action_probability",
    "slice_seed",
    "write_npz_files_atomically",
]
