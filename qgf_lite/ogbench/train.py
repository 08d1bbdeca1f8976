"""Training BC + IQL on an OGBench single-task dataset, as a resumable run in one folder.

A run folder holds
- ``checkpoint.msgpack``: the latest good state (atomic writes), its config, and in ``extra`` the step, the
  environment name, the dataset file and the seeds;
- ``log.jsonl``: one JSON line per logged chunk of steps with the mean losses and the speed.

Because the PRNG key lives in the train state and minibatches are drawn from it on the device, resuming from a
checkpoint replays exactly the steps an uninterrupted run would have taken (with the same chunk sizes).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np

from qgf_lite.checkpoint import load_checkpoint, save_checkpoint
from qgf_lite.data import TransitionDataset, dataset_from_dict
from qgf_lite.fileio import atomic_write_bytes
from qgf_lite.streaming import SliceStream
from qgf_lite.training import (
    QGFConfig,
    compiled_train_steps,
    data_parallel_sharding,
    fit,
    init_train_state,
    init_train_states,
    is_multi_seed,
    preset_fields,
)
from qgf_lite.validation import require_positive_int
from qgf_lite.version import __version__

CHECKPOINT_NAME = "checkpoint.msgpack"
LOG_NAME = "log.jsonl"
LOSS_KEYS = ("policy_loss", "critic_loss", "value_loss")


class TrainingDiverged(ValueError):
    """A loss became NaN/inf; the run folder keeps the last checkpoint written before it."""


@dataclasses.dataclass(frozen=True)
class TrainResult:
    run_dir: str
    checkpoint_path: str
    log_path: str
    start_step: int  # where this call began (> 0 when it resumed)
    final_step: int
    history: list  # the records logged by this call
    seconds: float
    steps_per_second: float


def require_singletask_name(env_name: str) -> str:
    """Training needs rewards, which OGBench only provides for single-task names."""
    from qgf_lite.ogbench.datasets import default_task_id, parse_env_name

    parsed = parse_env_name(env_name)
    if parsed.task_id is None or parsed.dataset_type is None:
        task_id = parsed.task_id or default_task_id(parsed.env_id)  # OGBench's default task for this domain
        raise ValueError(
            f"`env_name` {env_name!r} is not a single-task dataset name, so it has no rewards; use e.g. "
            f"'{parsed.env_id}-{parsed.dataset_type or 'play'}-singletask-task{task_id}-{parsed.version}'."
        )
    return env_name


def load_training_data(env_name: str, dataset_path=None, dataset_dir=None) -> dict:
    """The single-task training split through OGBench's loader (rewards/masks relabelled by OGBench)."""
    from qgf_lite.ogbench.datasets import load_dataset

    require_singletask_name(env_name)
    _env, train, _val = load_dataset(
        env_name,
        dataset_dir=None if dataset_dir is None else str(dataset_dir),
        dataset_path=None if dataset_path is None else str(dataset_path),
    )
    return train


DATASET_FIELDS = ("obs_dim", "action_dim")  # QGFConfig fields the dataset sets; every other one is an override
HIDDEN_FIELDS = ("actor_hidden", "critic_hidden", "value_hidden")
SHORTHANDS = ("hidden", "layers")  # make_config keywords that set all of HIDDEN_FIELDS at once


def make_config(
    obs_dim: int,
    action_dim: int,
    /,
    *,
    preset: str | None = None,
    hidden: int | None = None,
    layers: int | None = None,
    **overrides,
) -> QGFConfig:
    """QGFConfig's defaults, or those of ``preset`` ("paper", "official-defaults": ``qgf_lite.training.PRESETS``),
    with ``overrides`` (any field but obs_dim/action_dim) for a dataset of these sizes.

    ``hidden`` (width) and ``layers`` (depth) size all three networks alike, the layout the reference uses; an
    explicit ``actor_hidden``/``critic_hidden``/``value_hidden`` still wins for its network.
    """
    fields = {f.name: f for f in dataclasses.fields(QGFConfig)}
    settable = [name for name in QGFConfig.option_names() if name not in DATASET_FIELDS] + ["learners"]
    unknown = sorted(set(overrides) - set(settable))
    if unknown:
        raise ValueError(
            f"Unknown config option(s) {unknown}: {', '.join(DATASET_FIELDS)} come from the dataset; "
            f"the options are {', '.join(settable)}, plus {' and '.join(SHORTHANDS)}."
        )
    base = {} if preset is None else preset_fields(preset)
    if hidden is not None or layers is not None:
        default = base.get("actor_hidden", fields["actor_hidden"].default)  # the preset's widths, else 4 x 512
        width = default[0] if hidden is None else require_positive_int("hidden", hidden)
        depth = len(default) if layers is None else require_positive_int("layers", layers)
        for name in HIDDEN_FIELDS:
            overrides.setdefault(name, (width,) * depth)
    return QGFConfig(obs_dim=int(obs_dim), action_dim=int(action_dim), **{**base, **overrides})


def normalise_seeds(seeds) -> list:
    if isinstance(seeds, (int, np.integer)):
        seeds = [seeds]
    seeds = [require_positive_int("seeds", s, minimum=0) for s in seeds]
    if not seeds:
        raise ValueError("`seeds` must name at least one seed.")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"`seeds` must be distinct, got {seeds}.")
    return seeds


def fresh_state(config: QGFConfig, seeds: Sequence[int]):
    """A single-seed state for one seed, else a state with a leading seed axis (trained with vmap)."""
    if len(seeds) == 1:
        return init_train_state(config, jax.random.PRNGKey(seeds[0]))
    return init_train_states(config, seeds)


def state_step(state) -> int:
    return int(np.max(np.asarray(state.step)))


def first_nonfinite_loss(record: dict) -> str | None:
    """The name of the first loss in a metrics record that is NaN/inf (for any seed), or None."""
    for key in LOSS_KEYS:
        if key in record and not np.all(np.isfinite(np.asarray(record[key], dtype=np.float64))):
            return key
    return None


def locate_divergence(config: QGFConfig, state, dataset: TransitionDataset, num_steps: int, data_sharding=None):
    """Replay ``num_steps`` steps from a good ``state`` and return (offset, loss name) of the first NaN/inf loss.

    ``fit`` reports chunk means; replaying the one bad chunk with per-step metrics names the exact step.
    """
    multi = is_multi_seed(state)
    _, metrics = compiled_train_steps(config, num_steps, multi, data_sharding)(state, dataset)
    first = None
    for key in LOSS_KEYS:
        bad = ~np.isfinite(np.asarray(metrics[key]))  # (steps,), or (seeds, steps) for multi-seed states
        bad = bad.any(axis=0) if multi else bad
        if bad.any() and (first is None or int(np.argmax(bad)) < first[0]):
            first = (int(np.argmax(bad)), key)
    return first


def read_log(path) -> list:
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a crash mid-write ends the usable log
    return records


def truncate_log(path, last_step: int) -> None:
    """Drop log lines past the checkpoint we resume from, so the log shows each step once."""
    path = Path(path)
    if not path.is_file():
        return
    kept = [r for r in read_log(path) if r.get("step", 0) <= last_step]
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in kept).encode())


def append_log(path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def run_metadata(env_name: str, dataset_path, seeds, dataset, step: int) -> dict:
    """What a checkpoint's ``extra`` records; ``num_transitions`` is one slice's for a streamed 100M folder."""
    sliced = {} if not isinstance(dataset, SliceStream) else {"num_slices": dataset.num_slices}
    return {
        **sliced,
        "step": int(step),
        "env_name": env_name,
        "dataset_path": None if dataset_path is None else str(dataset_path),
        "num_transitions": int(dataset.size),
        "obs_dim": int(dataset.obs_dim),
        "action_dim": int(dataset.action_dim),
        "seeds": list(seeds),
        "qgf_lite_version": __version__,
    }


def resume_or_init(checkpoint_path: Path, config: QGFConfig, env_name: str, seeds: list, init_from=None):
    """(state, start step, source): the run's own checkpoint if present, else ``init_from``, else fresh."""
    if Path(checkpoint_path).is_file():
        source = Path(checkpoint_path)
    elif init_from is not None:
        source = Path(init_from)
        if not source.is_file():
            raise FileNotFoundError(f"`init_from` checkpoint {source} does not exist.")
    else:
        return fresh_state(config, seeds), 0, None
    _, state, extra = load_checkpoint(source, config)
    if extra.get("env_name") not in (None, env_name):
        raise ValueError(
            f"Checkpoint {source} was trained on {extra.get('env_name')!r}, not {env_name!r}; "
            "use another --out folder (or the matching environment)."
        )
    if list(extra.get("seeds", seeds)) != list(seeds):
        raise ValueError(
            f"Checkpoint {source} holds seeds {extra.get('seeds')}, but seeds {seeds} were requested; "
            "pass the same --seed values or another --out folder."
        )
    return state, state_step(state), str(source)


def train_on_dataset(
    config: QGFConfig,
    dataset: TransitionDataset,
    run_dir,
    *,
    steps: int,
    seeds=(0,),
    env_name: str = "unknown",
    dataset_path=None,
    checkpoint_every: int = 10_000,
    log_every: int = 1_000,
    init_from=None,
    progress: bool = True,
    callback: Callable | None = None,
    data_sharding="auto",
    rotate_every: int = 1000,
    tracker=None,
) -> TrainResult:
    """Train (or resume training) until the state's step counter reaches ``steps``.

    ``tracker`` (e.g. ``qgf_lite.tracking.WandbTracker``) gets ``start(config)`` with the QGFConfig and the run's
    metadata once, then ``log_train(record)`` with every record written to log.jsonl; the caller finishes it.

    ``dataset`` may be a ``SliceStream`` (a 100M folder, ``slice_stream``): training moves to the next slice every
    ``rotate_every`` steps, the one after it loading in the background.

    ``callback(state, record)`` runs after every logged chunk, after the checkpoint logic (tests use it to
    simulate a crash). ``data_sharding="auto"`` splits batches across all local devices when there are several.
    Raises TrainingDiverged when a loss becomes NaN/inf, naming the loss and the step.
    """
    steps = require_positive_int("steps", steps)
    checkpoint_every = require_positive_int("checkpoint_every", checkpoint_every)
    log_every = require_positive_int("log_every", log_every)
    seeds = normalise_seeds(seeds)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path, log_path = run_dir / CHECKPOINT_NAME, run_dir / LOG_NAME
    if data_sharding == "auto":
        data_sharding = data_parallel_sharding()
        if data_sharding is not None and config.batch_size % len(data_sharding.device_set):
            data_sharding = None  # an uneven split is not worth an error: train on one device

    state, start_step, source = resume_or_init(checkpoint_path, config, env_name, seeds, init_from)
    truncate_log(log_path, start_step)
    if source is None:
        log_path.unlink(missing_ok=True)
    if start_step >= steps:
        return TrainResult(str(run_dir), str(checkpoint_path), str(log_path), start_step, start_step, [], 0.0, 0.0)

    def save(s):
        extra = run_metadata(env_name, dataset_path, seeds, dataset, state_step(s))
        save_checkpoint(checkpoint_path, config, s, extra)

    if source != str(checkpoint_path):
        save(state)  # the run folder always has a resumable starting point
    if tracker is not None:
        tracker.start(
            {
                **config.to_dict(),
                **run_metadata(env_name, dataset_path, seeds, dataset, start_step),
                "rotate_every": rotate_every,
                "run_dir": str(run_dir),
            }
        )
    chunk = min(log_every, checkpoint_every)
    external_tracker = tracker
    tracker = {"good": state, "saved_step": start_step, "time": time.perf_counter(), "history": []}
    t0 = time.perf_counter()

    def on_chunk(s, record):
        step = record["step"]
        bad = first_nonfinite_loss(record)
        if bad is not None:
            good = tracker["good"]
            replay = dataset.current if isinstance(dataset, SliceStream) else dataset  # the chunk's slice
            found = locate_divergence(config, good, replay, step - state_step(good), data_sharding)
            offset, bad = found if found is not None else (step - state_step(good) - 1, bad)
            raise TrainingDiverged(
                f"`{bad}` became NaN/inf at step {state_step(good) + offset + 1}; training stopped. "
                f"The last good checkpoint (step {tracker['saved_step']}) is kept at {checkpoint_path}. "
                "Lower the learning rate or check the dataset's rewards."
            )
        now = time.perf_counter()
        done = step - state_step(tracker["good"])
        record = dict(record, steps_per_s=done / max(now - tracker["time"], 1e-9), wall_s=now - t0)
        tracker.update(good=s, time=now)
        if step - tracker["saved_step"] >= checkpoint_every or step >= steps:
            save(s)
            tracker["saved_step"] = step
        append_log(log_path, record)
        if external_tracker is not None:
            external_tracker.log_train(record)
        tracker["history"].append(record)
        if callback is not None:
            return callback(s, record)
        return False

    state, _ = fit(
        config,
        state,
        dataset,
        steps - start_step,
        chunk_size=chunk,
        progress=progress,
        callback=on_chunk,
        data_sharding=data_sharding,
        desc=f"train {env_name}",
        rotate_every=rotate_every,
    )
    seconds = time.perf_counter() - t0
    final = state_step(state)
    return TrainResult(
        str(run_dir),
        str(checkpoint_path),
        str(log_path),
        start_step,
        final,
        tracker["history"],
        seconds,
        (final - start_step) / max(seconds, 1e-9),
    )


def train(
    env_name: str,
    out,
    *,
    steps: int = 1_000_000,
    dataset_path=None,
    dataset_dir=None,
    seeds=(0,),
    checkpoint_every: int = 10_000,
    log_every: int = 1_000,
    init_from=None,
    progress: bool = True,
    callback: Callable | None = None,
    rotate_every: int = 1000,
    tracker=None,
    **config_overrides,
) -> TrainResult:
    """Load an OGBench single-task dataset, then train BC (flow matching) + IQL on action chunks in ``out``.

    ``config_overrides`` are QGFConfig fields (e.g. ``expectile=0.7, num_critics=3, time_grid=None``) or the
    shorthands ``hidden``/``layers`` of ``make_config``; the rest keep QGFConfig's defaults (the reference code's),
    or with ``config_overrides["preset"]`` ("paper", "official-defaults") that preset's values.

    ``steps`` is the total step count of the run: a run folder that already has a checkpoint resumes from its
    step, so rerunning the same command after an interruption finishes the job. ``init_from`` starts a new
    run from another checkpoint (same architecture), e.g. the small pretrained one shipped with the package
    (``qgf_lite.ogbench.pretrained_checkpoint()``).

    ``dataset_dir`` may be a folder in OGBench's 100M layout (``qgf_lite.ogbench.datasets.sliced_folder``; without
    ``dataset_dir``, ``$OGBENCH_DATA_DIR/<env>-<type>-100m-v0/`` when it exists): its slices are streamed, the next
    one every ``rotate_every`` steps, loaded and put on the device in the background while the current one trains.
    """
    from qgf_lite.ogbench.datasets import sliced_folder

    if dataset_path is not None and dataset_dir is not None:
        raise ValueError("Pass either `dataset_path` (one .npz file) or `dataset_dir` (a folder), not both.")
    rotate_every = require_positive_int("rotate_every", rotate_every)
    # A bad option fails here, before the (slow) dataset load; sizes 0 and 1 stand in for the dataset's.
    config = make_config(0, 1, **config_overrides)
    require_singletask_name(env_name)
    folder = None if dataset_path is not None else sliced_folder(env_name, dataset_dir)
    if folder is not None:
        dataset = slice_stream(env_name, folder)
        dataset_path = folder
    else:
        data = load_training_data(env_name, dataset_path=dataset_path, dataset_dir=dataset_dir)
        dataset = dataset_from_dict(data)
    try:
        config = dataclasses.replace(config, obs_dim=int(dataset.obs_dim), action_dim=int(dataset.action_dim))
        if dataset.size < config.horizon:
            raise ValueError(
                f"The dataset has only {dataset.size} transitions, fewer than one chunk of {config.horizon}."
            )
        if dataset_path is None:
            from qgf_lite.ogbench.datasets import default_dataset_path

            dataset_path = default_dataset_path(env_name, None if dataset_dir is None else str(dataset_dir))
        return train_on_dataset(
            config,
            dataset,
            out,
            steps=steps,
            seeds=seeds,
            env_name=env_name,
            dataset_path=dataset_path,
            checkpoint_every=checkpoint_every,
            log_every=log_every,
            init_from=init_from,
            progress=progress,
            callback=callback,
            rotate_every=rotate_every,
            tracker=tracker,
        )
    finally:
        if isinstance(dataset, SliceStream):
            dataset.close()


def slice_stream(
    env_name: str, folder, *, prefetch: bool = True, start: int = 0, validate: bool = True, device=None
) -> SliceStream:
    """A ``SliceStream`` over the slices of a 100M-layout ``folder`` for single-task ``env_name``: each slice is
    read and relabelled as OGBench's loader does (``load_slice``) and put on the device, in the background when
    ``prefetch`` (else at each swap, the official code's pattern)."""
    from qgf_lite.ogbench.datasets import find_slice_files, load_slice, make_singletask_env

    require_singletask_name(env_name)
    paths = find_slice_files(folder, env_name)
    env = make_singletask_env(env_name)  # one environment relabels every slice (only ever one load at a time)

    def load(index: int) -> TransitionDataset:
        return dataset_from_dict(load_slice(env_name, paths[index], env=env, validate=validate), device=device)

    return SliceStream(len(paths), load, start=start, prefetch=prefetch)


__all__ = [
    "append_log",
    "CHECKPOINT_NAME",
    "DATASET_FIELDS",
    "first_nonfinite_loss",
    "fresh_state",
    "HIDDEN_FIELDS",
    "load_training_data",
    "locate_divergence",
    "LOG_NAME",
    "LOSS_KEYS",
    "make_config",
    "normalise_seeds",
    "read_log",
    "require_singletask_name",
    "resume_or_init",
    "run_metadata",
    "SHORTHANDS",
    "slice_stream",
    "state_step",
    "train",
    "train_on_dataset",
    "TrainingDiverged",
    "TrainResult",
    "truncate_log",
]
