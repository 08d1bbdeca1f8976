"""OGBench manipulation datasets: environment names and loading through OGBench's own API.

Loading goes through ``ogbench.make_env_and_datasets`` so the arrays (and, for single-task names, the
rewards/masks relabelled from the stored ``qpos``) are exactly what OGBench gives everyone else. Machines that
cannot reach the OGBench host generate the same kind of data locally (:mod:`qgf_lite.ogbench.generate`).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import urllib.error
import zipfile
import zlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from qgf_lite.ogbench.environments import import_ogbench, quiet_env, quiet_spaces
from qgf_lite.validation import require_finite_arrays

ENV_IDS = (
    "cube-single",
    "cube-double",
    "cube-triple",
    "cube-quadruple",
    "cube-octuple",
    "scene",
    "puzzle-3x3",
    "puzzle-4x4",
    "puzzle-4x5",
    "puzzle-4x6",
)
DATASET_TYPES = ("play", "noisy")
TASK_IDS = (1, 2, 3, 4, 5)
VERSIONS = ("v0",)

# ogbench 1.2.2 resolves "no task number" inside the env classes; puzzle-4x5/4x6 default to task2, not task4.
_DEFAULT_TASK_IDS = {env_id: 2 for env_id in ENV_IDS} | {"puzzle-3x3": 4, "puzzle-4x4": 4}

DEFAULT_DATASET_DIR = "~/.ogbench/data"  # the same default as ogbench.make_env_and_datasets
DATASET_HOST = "rail.eecs.berkeley.edu"
DOWNLOAD_TIMEOUT_S = 60.0


class DatasetUnavailableError(FileNotFoundError):
    """The dataset file is not on disk and cannot be downloaded (offline, or the download failed)."""


class ParsedEnvName(NamedTuple):
    env_id: str  # e.g. "cube-double"
    dataset_type: str | None  # "play" / "noisy", or None for a bare environment name
    task_id: int | None  # 1..5 for single-task names (default task resolved), None for goal-conditioned
    version: str  # "v0"


# --------------------------------------------------------------------------------------------- names


def list_env_ids() -> tuple[str, ...]:
    """The OGBench manipulation environment ids this module supports."""
    return ENV_IDS


def default_task_id(env_id: str) -> int:
    """The task OGBench uses for a single-task name without a task number."""
    if env_id not in _DEFAULT_TASK_IDS:
        raise ValueError(_unknown_env_message(env_id))
    return _DEFAULT_TASK_IDS[env_id]


def _unknown_env_message(name) -> str:
    return (
        f"Unknown OGBench manipulation environment {name!r}. Valid environment ids: {', '.join(ENV_IDS)}. "
        "Names look like '<env id>[-play|-noisy][-singletask[-task1..5]]-v0', "
        "e.g. 'cube-double-play-singletask-task2-v0'."
    )


def parse_env_name(name: str) -> ParsedEnvName:
    """Split an OGBench manipulation name into (env_id, dataset_type, task_id, version).

    Accepts environment ids ('cube-single'), environment names ('cube-single-v0'), dataset names
    ('cube-single-play-v0') and single-task names ('cube-single-play-singletask-task3-v0'). A single-task name
    without a task number gets OGBench's default task; goal-conditioned names give ``task_id=None``.
    """
    if not isinstance(name, str):
        raise TypeError(f"`env_name` must be a string like 'cube-single-play-v0', got {type(name).__name__}.")
    body, version = name, "v0"
    match = re.fullmatch(r"(.+)-(v\d+)", name)
    if match:
        body, version = match.group(1), match.group(2)
    if version not in VERSIONS:
        raise ValueError(f"`env_name` {name!r} has version {version!r}; ogbench registers only {VERSIONS}.")

    # Longest id first so 'cube-single' is never read as a prefix of something longer.
    env_id = next((i for i in sorted(ENV_IDS, key=len, reverse=True) if body == i or body.startswith(i + "-")), None)
    if env_id is None:
        raise ValueError(_unknown_env_message(name))

    rest = body[len(env_id) :].split("-")[1:]
    dataset_type = rest.pop(0) if rest and rest[0] in DATASET_TYPES else None
    task_id = None
    if rest and rest[0] == "singletask":
        rest.pop(0)
        task_id = default_task_id(env_id)
        if rest and re.fullmatch(r"task\d+", rest[0]):
            task_id = int(rest.pop(0)[4:])
            if task_id not in TASK_IDS:
                raise ValueError(f"`env_name` {name!r}: task number must be one of {TASK_IDS}, got {task_id}.")
    if rest:
        raise ValueError(_unknown_env_message(name))
    return ParsedEnvName(env_id, dataset_type, task_id, version)


def dataset_file_name(env_name: str) -> str:
    """The file OGBench stores a name's data in: single-task names share their play/noisy dataset."""
    parsed = parse_env_name(env_name)
    if parsed.dataset_type is None:
        raise ValueError(
            f"`env_name` {env_name!r} names no dataset type; use e.g. '{parsed.env_id}-play-{parsed.version}' "
            f"or '{parsed.env_id}-noisy-{parsed.version}'."
        )
    return f"{parsed.env_id}-{parsed.dataset_type}-{parsed.version}.npz"


def default_dataset_path(env_name: str, dataset_dir: str | None = None) -> str:
    """Where OGBench (and generate_dataset) keep the training file for ``env_name``."""
    directory = os.path.expanduser(dataset_dir if dataset_dir is not None else DEFAULT_DATASET_DIR)
    return os.path.join(directory, dataset_file_name(env_name))


def validation_path(train_path: str) -> str:
    """The validation split next to a training file, as OGBench's loader names it."""
    if not str(train_path).endswith(".npz"):
        raise ValueError(f"dataset path must end with '.npz' (OGBench's layout), got {train_path!r}.")
    train_path = str(train_path)
    # ogbench derives it with str.replace('.npz', '-val.npz'), which would also rewrite an earlier '.npz'.
    if train_path.count(".npz") != 1:
        raise ValueError(
            f"dataset path {train_path!r} contains '.npz' more than once; ogbench's loader would look for the "
            "validation file in the wrong place. Rename the folder or file."
        )
    return train_path[: -len(".npz")] + "-val.npz"


# --------------------------------------------------------------------------------------------- 100M folders
# OGBench's large datasets (its README, "Additional Features"; the paper trains on them) are folders of 1M-transition
# slices: <env>-<type>-100m-v0/<env>-<type>-v0-000.npz ... -099.npz, each with its -val.npz sibling. The official QGF
# code points at such a folder under $OGBENCH_DATA_DIR and rotates through its slices.

SLICED_DIR_ENV_VAR = "OGBENCH_DATA_DIR"


def sliced_folder_name(env_name: str) -> str:
    """The 100M folder of ``env_name``'s data: 'cube-triple-play-singletask-task1-v0' -> 'cube-triple-play-100m-v0'."""
    stem = dataset_file_name(env_name)[: -len(".npz")]  # e.g. cube-triple-play-v0
    body, version = stem.rsplit("-", 1)
    return f"{body}-100m-{version}"


def slice_file_name(env_name: str, index: int) -> str:
    """Slice ``index`` of the 100M folder: 'cube-triple-play-v0-007.npz' (its validation file adds '-val')."""
    return f"{dataset_file_name(env_name)[: -len('.npz')]}-{int(index):03d}.npz"


def find_slice_files(folder: str, env_name: str) -> list:
    """The training slices of a 100M-layout ``folder``, in order (validation files left out).

    Raises NotADirectoryError / FileNotFoundError naming the expected file names when the folder is missing or holds
    no slice of ``env_name``'s dataset.
    """
    folder = os.path.expanduser(str(folder))
    example = f"{slice_file_name(env_name, 0)}, {slice_file_name(env_name, 1)}, ... (each with its -val.npz)"
    if not os.path.isdir(folder):
        raise NotADirectoryError(
            f"Dataset folder {folder!r} does not exist or is not a folder; a 100M-layout folder "
            f"({sliced_folder_name(env_name)}/) holds {example}."
        )
    pattern = re.compile(re.escape(dataset_file_name(env_name)[: -len(".npz")]) + r"-(\d+)\.npz")
    slices = sorted((int(m.group(1)), name) for name in os.listdir(folder) if (m := pattern.fullmatch(name)))
    if not slices:
        present = sorted(os.listdir(folder))[:5]
        raise FileNotFoundError(
            f"Dataset folder {folder!r} holds no slice of {env_name!r}: expected {example} (OGBench's 100M layout, "
            f"folder {sliced_folder_name(env_name)}/), or the standard {dataset_file_name(env_name)}; found "
            f"{present if present else 'nothing'}. Generate small slices with `qgf-lite generate "
            f"{parse_env_name(env_name).env_id} --slices 4 --episodes 10 --out {folder}`."
        )
    return [os.path.join(folder, name) for _, name in slices]


def sliced_folder(env_name: str, dataset_dir: str | None = None) -> str | None:
    """The 100M-layout folder to train ``env_name`` from, or None for the standard single-file layout.

    ``dataset_dir`` may be the 100M folder itself (it holds '<env>-<type>-v0-000.npz', ...) or a folder holding it
    as '<env>-<type>-100m-v0/' and no standard '<env>-<type>-v0.npz' (that file wins, as before). Without
    ``dataset_dir``, ``$OGBENCH_DATA_DIR/<env>-<type>-100m-v0/`` is used when it exists, as the official code does.
    """
    if dataset_dir is None:
        root = os.environ.get(SLICED_DIR_ENV_VAR)
        candidates = [] if not root else [os.path.join(os.path.expanduser(root), sliced_folder_name(env_name))]
    else:
        directory = os.path.expanduser(str(dataset_dir))
        if os.path.isfile(os.path.join(directory, dataset_file_name(env_name))):
            return None
        candidates = [directory, os.path.join(directory, sliced_folder_name(env_name))]
    for folder in candidates:
        if os.path.isdir(folder) and os.path.isfile(os.path.join(folder, slice_file_name(env_name, 0))):
            return folder
        if os.path.isdir(folder) and os.path.basename(os.path.normpath(folder)).endswith("-100m-v0"):
            find_slice_files(folder, env_name)  # a 100M-named folder without slices: say what it should hold
            return folder
    return None


def load_slice(env_name: str, path: str, env=None, validate: bool = True) -> dict:
    """One slice's training arrays, relabelled for ``env_name``'s task as OGBench's loader does (rewards and masks
    from the stored qpos); ``env`` (the single-task environment, from ``make_singletask_env``) is reused if given.
    The slice's -val.npz is not read."""
    import_ogbench()
    import ogbench.utils
    from ogbench.relabel_utils import relabel_dataset

    parsed = parse_env_name(env_name)
    keys = _required_keys(parsed)
    if validate:
        # The cheap part of check_dataset_file (keys, final terminal) up front; a full check, a second read of every
        # array, runs only if OGBench's loader fails, to name the problem. (Its CPU time competes with training.)
        try:
            with np.load(path, allow_pickle=False) as file:
                missing = [key for key in keys if key not in file.files]
                ends_with_terminal = not missing and bool(file["terminals"][-1])
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError):
            ends_with_terminal = False
        if not ends_with_terminal:
            check_dataset_file(path, keys)
    env = make_singletask_env(env_name) if env is None else env
    try:
        data = ogbench.utils.load_dataset(path, add_info=parsed.task_id is not None)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError):
        check_dataset_file(path, keys)  # names what is wrong with the file
        raise
    if parsed.task_id is not None:
        relabel_dataset(singletask_env_name(env_name), env, data)
    for key in ("qpos", "qvel", "button_states"):
        data.pop(key, None)
    return data


def singletask_env_name(env_name: str) -> str:
    """The environment OGBench makes for a single-task dataset name (the dataset type removed)."""
    parsed = parse_env_name(env_name)
    task = "" if parsed.task_id is None else f"-singletask-task{parsed.task_id}"
    return f"{parsed.env_id}{task}-{parsed.version}"


def make_eval_env(env_name: str, **env_kwargs):
    """The single-task OGBench environment for ``env_name`` (validated first, so typos list the valid ids)."""
    parsed = parse_env_name(env_name)
    if parsed.task_id is None:
        raise ValueError(
            f"`env_name` {env_name!r} is goal-conditioned; evaluation needs a single-task name such as "
            f"'{parsed.env_id}-{parsed.dataset_type or 'play'}-singletask-task2-{parsed.version}'."
        )
    ogbench = import_ogbench()
    name = (
        env_name
        if parsed.dataset_type is not None
        else (f"{parsed.env_id}-play-singletask-task{parsed.task_id}-{parsed.version}")
    )
    with quiet_spaces():
        return quiet_env(ogbench.make_env_and_datasets(name, env_only=True, **env_kwargs))


def make_singletask_env(env_name: str, **env_kwargs):
    """The environment ``ogbench.make_env_and_datasets`` builds for ``env_name``."""
    ogbench = import_ogbench()
    with quiet_spaces():
        return ogbench.make_env_and_datasets(env_name, env_only=True, **env_kwargs)


# --------------------------------------------------------------------------------------------- loading


def _generate_hint(env_name: str, path: str) -> str:
    try:
        parsed = parse_env_name(env_name)
        env_id, dataset_type = parsed.env_id, parsed.dataset_type or "play"
    except (TypeError, ValueError):
        env_id, dataset_type = "cube-single", "play"
    return (
        f"Generate it locally with the OGBench oracles:\n"
        f"    qgf-lite generate {env_id} --type {dataset_type} --out {path}\n"
        f"or, from Python, qgf_lite.ogbench.generate.generate_dataset({env_id!r}, dataset_type={dataset_type!r}, "
        f"out_path={path!r}); then pass dataset_path={path!r} (or its folder as dataset_dir)."
    )


def dataset_host_reachable(host: str = DATASET_HOST, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the OGBench dataset host opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    # ogbench's downloader calls urlopen without a timeout; a stalled connection must not hang for ever.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _download_with_ogbench(env_name: str, dataset_dir: str) -> None:
    ogbench = import_ogbench()

    name = dataset_file_name(env_name)[: -len(".npz")]
    train_path = os.path.join(dataset_dir, name + ".npz")
    if not dataset_host_reachable():
        raise DatasetUnavailableError(
            f"Dataset {name} is not in {dataset_dir} and the OGBench host {DATASET_HOST} cannot be reached "
            f"(offline?).\n" + _generate_hint(env_name, train_path)
        )
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            ogbench.download_datasets([name], dataset_dir=dataset_dir)
    except (urllib.error.URLError, OSError) as err:
        for leftover in (train_path + ".tmp", validation_path(train_path) + ".tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)
        raise DatasetUnavailableError(
            f"Downloading dataset {name} from the OGBench host failed ({type(err).__name__}: {err}).\n"
            + _generate_hint(env_name, train_path)
        ) from err


def _required_keys(parsed: ParsedEnvName) -> tuple[str, ...]:
    keys = ("observations", "actions", "terminals")
    if parsed.task_id is not None:
        # Single-task rewards are relabelled from the stored simulator state.
        keys += ("qpos",)
        if parsed.env_id == "scene" or parsed.env_id.startswith("puzzle"):
            keys += ("button_states",)
    return keys


def check_dataset_file(path: str, required_keys: Sequence[str] = ("observations", "actions", "terminals")) -> dict:
    """Read an OGBench-layout ``.npz`` and reject what ogbench's loader would mis-read; returns the arrays.

    Raises FileNotFoundError (missing), ValueError (empty, corrupted, missing keys, ragged lengths, no
    final terminal, NaN/inf in a float array -- the message names the key).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Dataset file {path!r} does not exist.")
    if os.path.getsize(path) == 0:
        raise ValueError(f"Dataset file {path!r} is empty (0 bytes); delete it and regenerate or re-download it.")
    try:
        with np.load(path, allow_pickle=False) as file:
            arrays = {key: file[key] for key in file.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as err:
        raise ValueError(
            f"Dataset file {path!r} is corrupted or not an .npz archive ({type(err).__name__}: {err}); "
            "delete it and regenerate or re-download it."
        ) from err

    missing = [key for key in required_keys if key not in arrays]
    if missing:
        raise ValueError(
            f"Dataset file {path!r} lacks the key(s) {missing} (it has {sorted(arrays)}); "
            "regenerate it with qgf_lite.ogbench.generate.generate_dataset."
        )
    lengths = {key: len(value) if value.ndim else None for key, value in arrays.items()}
    if len(set(lengths.values())) != 1 or None in lengths.values():
        raise ValueError(f"Dataset file {path!r} has arrays of different lengths: {lengths}.")
    if lengths["terminals"] == 0:
        raise ValueError(f"Dataset file {path!r} holds no transitions.")
    if not bool(arrays["terminals"][-1]):
        raise ValueError(
            f"Dataset file {path!r} does not end with a terminal step (truncated?); OGBench's loader "
            "would pair the last episode with nothing. Regenerate it."
        )
    require_finite_arrays(arrays, where=f"dataset file {path!r}")
    return arrays


def load_dataset(
    env_name: str,
    dataset_dir: str | None = None,
    dataset_path: str | None = None,
    *,
    compact_dataset: bool = False,
    add_info: bool = False,
    download: bool = True,
    validate: bool = True,
    slice_index: int = 0,
    **env_kwargs,
):
    """Make the OGBench env and load its (train, val) datasets through ``ogbench.make_env_and_datasets``.

    ``dataset_dir`` may also be a folder in OGBench's 100M layout ('<env>-<type>-100m-v0/' with
    '<env>-<type>-v0-000.npz', ... and their '-val.npz'; see ``sliced_folder``; ``$OGBENCH_DATA_DIR`` is looked in
    when ``dataset_dir`` is None): then slice ``slice_index`` and its validation file are loaded, one 1M-transition
    slice at a time (training streams the others: ``qgf_lite.ogbench.train.train``).

    Args:
        env_name: an OGBench dataset name, e.g. 'cube-single-play-v0' (goal-conditioned) or
            'cube-double-play-singletask-task2-v0' (single task: 'rewards' and 'masks' are added).
        dataset_dir: folder holding '<dataset>.npz' and '<dataset>-val.npz' (default ~/.ogbench/data);
            missing files are downloaded when ``download`` and the OGBench host is reachable.
        dataset_path: explicit training file (its '-val.npz' sibling must exist); excludes ``dataset_dir``.
        compact_dataset, add_info, env_kwargs: passed to ogbench.
        validate: check the files (corruption, NaN/inf, truncation) before ogbench reads them.

    Returns:
        (env, train_dataset, val_dataset), as ogbench returns them.
    """
    parsed = parse_env_name(env_name)
    dataset_file_name(env_name)  # rejects names without a dataset type
    if dataset_path is not None and dataset_dir is not None:
        raise ValueError("Pass either `dataset_path` (one file) or `dataset_dir` (a folder), not both.")
    folder = None if dataset_path is not None else sliced_folder(env_name, dataset_dir)
    if folder is not None:  # OGBench's 100M layout: one slice (and its validation file) through OGBench's loader
        slices = find_slice_files(folder, env_name)
        if not 0 <= int(slice_index) < len(slices):
            raise ValueError(f"`slice_index` must be in [0, {len(slices)}) for {folder!r}, got {slice_index}.")
        dataset_path = slices[int(slice_index)]

    if dataset_path is not None:
        train_path = os.path.expanduser(str(dataset_path))
    else:
        directory = os.path.expanduser(dataset_dir if dataset_dir is not None else DEFAULT_DATASET_DIR)
        train_path = default_dataset_path(env_name, directory)
    val_path = validation_path(train_path)

    absent = [p for p in (train_path, val_path) if not os.path.isfile(p)]
    if absent and dataset_path is None and download:
        _download_with_ogbench(env_name, os.path.dirname(train_path))
    elif absent:
        raise FileNotFoundError(f"Dataset file(s) {absent} not found.\n" + _generate_hint(env_name, train_path))

    if validate:
        for path in (train_path, val_path):
            check_dataset_file(path, _required_keys(parsed))

    ogbench = import_ogbench()
    with quiet_spaces():
        return ogbench.make_env_and_datasets(
            env_name,
            dataset_path=train_path,
            compact_dataset=compact_dataset,
            add_info=add_info,
            **env_kwargs,
        )


__all__ = [
    "check_dataset_file",
    "dataset_file_name",
    "DATASET_HOST",
    "dataset_host_reachable",
    "DATASET_TYPES",
    "DatasetUnavailableError",
    "DEFAULT_DATASET_DIR",
    "default_dataset_path",
    "default_task_id",
    "DOWNLOAD_TIMEOUT_S",
    "ENV_IDS",
    "find_slice_files",
    "list_env_ids",
    "load_dataset",
    "load_slice",
    "make_eval_env",
    "make_singletask_env",
    "parse_env_name",
    "ParsedEnvName",
    "singletask_env_name",
    "slice_file_name",
    "SLICED_DIR_ENV_VAR",
    "sliced_folder",
    "sliced_folder_name",
    "TASK_IDS",
    "validation_path",
    "VERSIONS",
]
