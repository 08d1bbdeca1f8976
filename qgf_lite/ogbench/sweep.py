"""The paper's evaluation protocol as one command: domains x tasks x seeds -> train -> evaluate -> one table.

A sweep is described by one config file (JSON or TOML, fields of :class:`SweepConfig`)::

    domains = ["cube-double", "scene"]        # OGBench manipulation env ids
    tasks = [1, 2, 3, 4, 5]
    seeds = [0, 1, 2]                          # trained together under jax.vmap in one job per task
    selection_episodes = 20                    # pick each method's weight on other start states first
    [train]                                    # TrainSettings: train() keywords and QGFConfig options
    steps = 1000000
    [eval]                                     # EvalConfig fields, as `qgf-lite eval` takes them
    methods = ["bc", "qgf", "noisy", "best_of_n"]
    weights = [0.01, 0.03, 0.1]
    episodes = 50

A key that is not a field (a typo) is an error that names it, its closest field and the valid ones; 0.2's
top-level ``methods``, ``weights``, ``n``, ``episodes``, ``num_envs``, ``eval_workers`` and ``eval_seed`` still load
into ``[eval]``.

Jobs go through `submitit <https://github.com/facebookincubator/submitit>`_, the usual scheduler library for SLURM
clusters: ``executor="local"`` runs them as processes on this machine, ``executor="slurm"`` submits the very
same jobs to a cluster (one flag), ``executor="debug"`` runs them in this process (submitit opens pdb on a
failing job there: it is for debugging).

Stages: (1) one job per domain makes its dataset when it is missing and ``generate_episodes`` > 0 (OGBench's own
oracles); (2) one job per (domain, task) trains every seed at once, then evaluates every seed on the same start
states under every method and weight. With ``selection_episodes`` > 0 the weight of each guided method is chosen
on start states of their own (``selection_seed``; success pooled over seeds), and only that weight is evaluated on
the ``episodes`` fresh start states of ``[eval] seed``, so the reported rates are not picked on the episodes they
report. A job that finished (its ``done.json`` matches the config) is skipped, so
rerunning the command resumes a sweep; training itself resumes from its checkpoint. A job that fails (NaN loss,
missing data) is marked failed with its reason and the others still finish. The results table gives, per task and
over tasks, success rates with 95% intervals, network evaluations per action, and, for domains that have them,
published reference numbers at their own (larger) scale (:mod:`qgf_lite.ogbench.published`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import tomllib
import warnings
from pathlib import Path

from qgf_lite.fileio import atomic_write_bytes
from qgf_lite.ogbench.datasets import DATASET_TYPES, TASK_IDS, default_dataset_path, list_env_ids
from qgf_lite.ogbench.evaluation import EvalConfig
from qgf_lite.validation import require_known, require_positive_int

EXECUTORS = ("local", "slurm", "debug")
DONE_NAME = "done.json"


TRAIN_RUN_KEYS = ("steps", "checkpoint_every", "log_every", "init_from")  # train()'s keywords in [train]
# 0.2 wrote the evaluation settings at the top level of a sweep config; they are [eval]'s fields now.
LEGACY_EVAL_KEYS = {
    "methods": "methods",
    "weights": "weights",
    "n": "n",
    "episodes": "episodes",
    "num_envs": "num_envs",
    "eval_workers": "workers",
    "eval_seed": "seed",
}


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """A sweep's ``[train]`` table: the run (``steps``, ``checkpoint_every``, ``log_every``, ``init_from``: keywords of
    ``qgf_lite.ogbench.train.train``) and ``options``, the keywords of ``make_config``: QGFConfig fields, learners
    on/off and their options (``fql = true``, ``fql_alpha = 3.0``) and the ``hidden``/``layers`` shorthands. In the
    file the two are one flat table; ``from_dict`` splits it and rejects a key that is neither."""

    steps: int = 1_000_000
    checkpoint_every: int = 10_000
    log_every: int = 1_000
    init_from: str | None = None
    options: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        from qgf_lite.ogbench.train import SHORTHANDS, make_config
        from qgf_lite.training import QGFConfig

        for name in ("steps", "checkpoint_every", "log_every"):
            require_positive_int(name, getattr(self, name))
        if self.init_from is not None and not isinstance(self.init_from, str):
            raise TypeError(f"`init_from` must be a checkpoint path, got {self.init_from!r}")
        if not isinstance(self.options, dict):
            raise TypeError(f"`options` must be a dict of QGFConfig options, got {self.options!r}")
        option_names = [n for n in QGFConfig.option_names() if n not in ("obs_dim", "action_dim")]
        option_names += ["learners", *SHORTHANDS]
        require_known("key(s)", self.options, [*TRAIN_RUN_KEYS, *option_names])
        make_config(0, 1, **self.options)  # values QGFConfig rejects are named here; 0 and 1 stand for the dataset's

    @classmethod
    def from_dict(cls, table) -> TrainSettings:
        """The flat ``[train]`` table: ``TRAIN_RUN_KEYS`` go to their fields, every other key to ``options``."""
        if isinstance(table, cls):
            return table
        if not isinstance(table, dict):
            raise TypeError(f"it must be a table, e.g. {{steps = 10000, hidden = 256}}, got {table!r}")
        run = {k: v for k, v in table.items() if k in TRAIN_RUN_KEYS}
        return cls(**run, options={k: v for k, v in table.items() if k not in TRAIN_RUN_KEYS})

    def to_dict(self) -> dict:
        """The flat table again (``init_from`` only when set)."""
        run = {name: getattr(self, name) for name in TRAIN_RUN_KEYS if getattr(self, name) is not None}
        return {**run, **self.options}

    def trains(self, learner: str) -> bool:
        """Whether the run trains ``learner`` (e.g. "fql", by ``fql = true`` or a ``learners`` table), which its
        samplers need."""
        from qgf_lite.ogbench.train import make_config

        return bool(getattr(make_config(0, 1, **self.options), learner))


def sweep_eval_defaults() -> EvalConfig:
    """EvalConfig's defaults but three weights (0.01, 0.03, 0.1): a sweep multiplies every weight by tasks x seeds."""
    return EvalConfig(weights=(0.01, 0.03, 0.1))


@dataclasses.dataclass
class SweepConfig:
    """One sweep. Every field can be set in the config file; ``out`` and ``executor`` also on the command line.

    ``train`` (the ``[train]`` table, :class:`TrainSettings`) and ``eval`` (the ``[eval]`` table, an
    ``EvalConfig``: methods, weights, n, episodes, num_envs, workers, seed (the start states), critic, ...) may be
    given as dicts; they are checked and typed on construction.
    """

    domains: list  # OGBench manipulation env ids, e.g. ["cube-single", "puzzle-3x3"]
    tasks: list = dataclasses.field(default_factory=lambda: [1, 2, 3, 4, 5])
    seeds: list = dataclasses.field(default_factory=lambda: [0])
    dataset_type: str = "play"
    dataset_dir: str | None = None  # folder of <env>-<type>-v0.npz (default ~/.ogbench/data)
    generate_episodes: int = 0  # > 0: generate a missing dataset with this many episodes
    generate_episode_length: int = 1001
    generate_val_episodes: int | None = None  # default: the generator's own share
    train: TrainSettings = dataclasses.field(default_factory=TrainSettings)
    eval: EvalConfig = dataclasses.field(default_factory=sweep_eval_defaults)
    # {method name: its own weights}, replacing eval.weights for that method: CFG-RL's weight multiplies
    # v_pos - v_uncond, so w = 1 is its label-conditioned flow and its useful range starts there, e.g.
    # method_weights = {cfgrl = [1.0, 2.0, 4.0]}
    method_weights: dict = dataclasses.field(default_factory=dict)
    selection_episodes: int = 0  # > 0: choose each guided method's weight on this many other episodes per seed
    selection_seed: int = 1  # start states for choosing weights (must differ from eval.seed)
    out: str = "runs/sweep"
    executor: str = "local"
    slurm: dict = dataclasses.field(default_factory=dict)  # e.g. {"slurm_partition": "gpu", "timeout_min": 600}

    def __post_init__(self):
        try:
            self.train = TrainSettings.from_dict(self.train)
        except (ValueError, TypeError) as error:
            raise type(error)(f"sweep config [train]: {error}") from None
        try:
            if isinstance(self.eval, dict):
                require_known("key(s)", self.eval, EvalConfig.names())
                self.eval = sweep_eval_defaults().replace(**self.eval)
            elif not isinstance(self.eval, EvalConfig):
                raise TypeError(f"it must be a table of EvalConfig fields, e.g. {{episodes = 50}}, got {self.eval!r}")
        except (ValueError, TypeError) as error:
            raise type(error)(f"sweep config [eval]: {error}") from None

    @classmethod
    def from_dict(cls, data: dict) -> SweepConfig:
        """A SweepConfig from a config file's tables; 0.2's top-level evaluation keys (``methods``, ``weights``,
        ``n``, ``episodes``, ``num_envs``, ``eval_workers``, ``eval_seed``) still load, into ``[eval]``."""
        data = dict(data)
        legacy_keys = [k for k in data if k in LEGACY_EVAL_KEYS]
        legacy = {LEGACY_EVAL_KEYS[k]: data.pop(k) for k in legacy_keys}
        require_known("sweep config field(s)", data, [f.name for f in dataclasses.fields(cls)])
        if "domains" not in data:
            raise ValueError('sweep config: `domains` is required, e.g. domains = ["cube-single"]')
        if legacy:
            warnings.warn(
                f"sweep config: {sorted(legacy_keys)} at the top level is "
                f"0.2's spelling; write them under [eval] as {sorted(legacy)} (they load as before).",
                FutureWarning,
                stacklevel=2,
            )
            table = data.get("eval", {})
            twice = sorted(set(legacy) & set(table)) if isinstance(table, dict) else []
            if twice:
                raise ValueError(
                    f"sweep config: {twice} given both at the top level (0.2's spelling) and under "
                    "[eval]; keep the [eval] ones"
                )
            data["eval"] = {**legacy, **table} if isinstance(table, dict) else table
        return cls(**data)

    def env_name(self, domain: str, task: int) -> str:
        return f"{domain}-{self.dataset_type}-singletask-task{task}-v0"

    def specs(self, flow_steps: int = 10) -> list:
        """Every setting the sweep evaluates (before weights are chosen): ``eval.methods`` in order, each guided
        method at its weights (``method_weights`` where given, else ``eval.weights``), with ``eval``'s sampler
        settings and ``flow_steps`` Euler steps unless ``eval.flow_steps`` is set."""
        from qgf_lite.samplers import specs_from_names

        e, specs = self.eval, []
        for name in e.methods:
            weights = self.method_weights.get(name, e.weights)
            specs.extend(
                specs_from_names(
                    [name],
                    weights,
                    n=e.n,
                    step_size=e.step_size,
                    ascent_steps=e.ascent_steps,
                    steps=e.flow_steps or flow_steps,
                )
            )
        return list(dict.fromkeys(specs))

    def dataset_path(self, domain: str) -> str:
        return default_dataset_path(f"{domain}-{self.dataset_type}-v0", self.dataset_dir)

    def to_dict(self) -> dict:
        """The config as a config file holds it (``train`` flat, ``eval`` as EvalConfig's fields)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**d, "train": self.train.to_dict(), "eval": self.eval.to_dict()}

    def fingerprint(self) -> str:
        """What a finished job's results depend on (not where they go or how jobs are scheduled)."""
        fields = self.to_dict()
        for key in ("out", "executor", "slurm", "domains", "tasks"):
            fields.pop(key)
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _allowed(name: str, values, valid) -> None:
    bad = [v for v in values if v not in valid]
    if bad:
        raise ValueError(f"sweep config: unknown {name} {bad}; valid: {list(valid)}")


def validate(config: SweepConfig) -> SweepConfig:
    """Check every entry before any job starts; errors name the bad entry and the valid ones. (``train`` and
    ``eval`` check their own fields when the config is made.)"""
    from qgf_lite.samplers import specs_from_names

    for name in ("domains", "tasks", "seeds"):
        value = getattr(config, name)
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(f"sweep config: `{name}` must be a non-empty list, got {value!r}")
    if not config.eval.weights:
        raise ValueError("sweep config: `[eval] weights` must be a non-empty list, e.g. [0.01, 0.03, 0.1]")
    _allowed("domains", config.domains, list_env_ids())
    _allowed("tasks", config.tasks, TASK_IDS)
    _allowed("dataset_type", [config.dataset_type], DATASET_TYPES)
    _allowed("executor", [config.executor], EXECUTORS)
    if len(set(config.seeds)) != len(config.seeds) or not all(isinstance(s, int) and s >= 0 for s in config.seeds):
        raise ValueError(f"sweep config: `seeds` must be distinct integers >= 0, got {config.seeds}")
    methods = config.eval.methods
    if not isinstance(config.method_weights, dict):
        raise ValueError(
            f"sweep config: `method_weights` must map method names to weight lists, e.g. "
            f"{{cfgrl = [1.0, 2.0]}}, got {config.method_weights!r}"
        )
    for name, values in config.method_weights.items():
        if name not in methods:
            raise ValueError(
                f"sweep config: `method_weights` names {name!r}, which is not in `methods` {list(methods)}"
            )
        numbers = [
            float(w) if isinstance(w, (int, float)) and not isinstance(w, bool) else math.nan
            for w in (values if isinstance(values, (list, tuple)) else [math.nan])
        ]
        if not numbers or not all(math.isfinite(w) and w > 0 for w in numbers):
            raise ValueError(
                f"sweep config: `method_weights.{name}` must be a non-empty list of numbers > 0, got {values!r}"
            )
        if not specs_from_names([name], numbers, n=config.eval.n)[0].takes_weight:
            raise ValueError(f"sweep config: `method_weights.{name}`: method {name!r} takes no guidance weight")
    for name in ("selection_episodes", "selection_seed"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"sweep config: `{name}` must be an integer >= 0, got {value!r}")
    if config.selection_episodes and config.selection_seed == config.eval.seed:
        raise ValueError(
            f"sweep config: `selection_seed` ({config.selection_seed}) equals `[eval] seed`: weights "
            "would be chosen on the very start states they are reported on; give them different values"
        )
    networks = {spec.network for spec in config.specs()} - {"policy"}
    for network in sorted(networks):  # "cfgrl" and "fql" samplers need their network trained in the same run
        if not config.train.trains(network):
            raise ValueError(
                f"sweep config: method `{network}` samples from a network the run does not train; "
                f"add `{network} = true` under [train]"
            )
    return config


def load_config(path, **overrides) -> SweepConfig:
    """A :class:`SweepConfig` from a .json or .toml file, with command-line ``overrides`` (None = not given)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep config {path} does not exist")
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"sweep config {path} is not valid {path.suffix[1:].upper()}: {error}") from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return validate(SweepConfig.from_dict(data))
    except (ValueError, TypeError) as error:
        raise type(error)(f"{path}: {error}") from None


# --------------------------------------------------------------------------------------------- jobs
# Top-level functions, so submitit can pickle them into another process or onto a cluster node.


def generate_job(config: SweepConfig, domain: str) -> dict:
    """Make ``domain``'s dataset if it is missing (OGBench's oracles); returns where it is."""
    from qgf_lite.ogbench.generate import generate_dataset

    path = config.dataset_path(domain)
    if Path(path).is_file():
        return {"domain": domain, "dataset": path, "generated": False}
    generate_dataset(
        domain,
        config.dataset_type,
        num_episodes=config.generate_episodes,
        out_path=path,
        episode_length=config.generate_episode_length,
        num_val_episodes=config.generate_val_episodes,
        seed=0,
        progress=False,
    )
    return {"domain": domain, "dataset": path, "generated": True}


def task_job(config: SweepConfig, domain: str, task: int) -> dict:
    """Train every seed of one task together; with ``selection_episodes``, choose each guided method's weight on
    the selection start states; then evaluate each seed under every (chosen) setting on the evaluation ones."""
    from qgf_lite.checkpoint import load_checkpoint
    from qgf_lite.ogbench.evaluation import evaluate
    from qgf_lite.ogbench.train import train

    env_name = config.env_name(domain, task)
    job_dir = Path(config.out) / domain / f"task{task}"
    run = config.train
    result = train(
        env_name,
        job_dir / "train",
        steps=run.steps,
        dataset_path=config.dataset_path(domain),
        seeds=list(config.seeds),
        checkpoint_every=run.checkpoint_every,
        log_every=run.log_every,
        init_from=run.init_from,
        progress=False,
        **run.options,
    )

    def evaluate_seeds(methods, episodes: int, seed: int, stage: str) -> list:
        reports = []
        for index, train_seed in enumerate(config.seeds):
            settings = config.eval.replace(methods=tuple(methods), episodes=episodes, seed=seed, seed_index=index)
            report = evaluate(
                result.checkpoint_path,
                env_name,
                settings,
                out=str(job_dir / f"{stage}-seed{train_seed}"),
                progress=False,
            )
            reports.append(
                {
                    "seed": train_seed,
                    "results": [{k: v for k, v in row.items() if k != "per_episode"} for row in report["results"]],
                }
            )
        return reports

    done = {"env_name": env_name, "fingerprint": config.fingerprint(), "train_steps": result.final_step}
    methods = config.specs(flow_steps=load_checkpoint(result.checkpoint_path)[0].flow_steps)
    if config.selection_episodes:
        selection = evaluate_seeds(methods, config.selection_episodes, config.selection_seed, "select")
        chosen = choose_weights(selection)
        methods = chosen_specs(selection, chosen)
        done["selection"] = {
            "episodes": config.selection_episodes,
            "seed": config.selection_seed,
            "chosen_weights": chosen,
            "reports": selection,
        }
    done["reports"] = evaluate_seeds(methods, config.eval.episodes, config.eval.seed, "eval")
    atomic_write_bytes(job_dir / DONE_NAME, json.dumps(done, indent=2).encode())
    return done


def choose_weights(reports: list) -> dict:
    """{method family: weight} for every guided family in ``reports`` (one report per seed): the weight with the
    most successes pooled over seeds; ties go to the higher mean return, then to the smaller weight."""
    from qgf_lite.samplers import SamplerSpec

    rows_by_weight: dict = {}  # family -> weight -> that weight's rows, one per seed
    for report in reports:
        for row in report["results"]:
            spec = SamplerSpec.from_dict(row)
            if spec.takes_weight:
                rows_by_weight.setdefault(spec.family, {}).setdefault(spec.weight, []).append(row)

    def score(rows: list, weight: float) -> tuple:
        return sum(r["successes"] for r in rows), sum(r["return_mean"] for r in rows) / len(rows), -weight

    return {
        family: max(by_weight, key=lambda w: score(by_weight[w], w)) for family, by_weight in rows_by_weight.items()
    }


def chosen_specs(reports: list, chosen: dict) -> list:
    """The SamplerSpecs of ``reports``' rows, keeping only the chosen weight of each guided family."""
    from qgf_lite.samplers import SamplerSpec

    specs = [SamplerSpec.from_dict(row) for row in reports[0]["results"]]
    return [s for s in specs if not s.takes_weight or s.weight == chosen[s.family]]


def finished_job(config: SweepConfig, domain: str, task: int) -> dict | None:
    """The stored result of a job already done with this config, else None."""
    path = Path(config.out) / domain / f"task{task}" / DONE_NAME
    if not path.is_file():
        return None
    try:
        done = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return done if done.get("fingerprint") == config.fingerprint() else None


# --------------------------------------------------------------------------------------------- scheduling


def make_executor(config: SweepConfig, folder: Path):
    """A submitit executor: local processes, a SLURM cluster, or this process (debug)."""
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder), cluster=config.executor)
    params = {"timeout_min": 24 * 60, "name": "qgf-sweep"}
    if config.executor == "slurm":
        params.update({"gpus_per_node": 1, "cpus_per_task": 8})
    params.update(config.slurm)
    executor.update_parameters(**params)
    return executor


def _failure_reason(error: BaseException) -> str:
    """The job's own error line. submitit reports a failed job as its remote traceback between two dashed lines
    followed by log paths; the traceback's last line names the original error."""
    text = str(error)
    blocks = [b for b in re.split(r"\n-{5,}\n", text) if b.strip()]
    trace = blocks[1] if len(blocks) >= 3 else text
    lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(error).__name__


def _wait(jobs: dict, progress: bool, description: str) -> dict:
    """{key: (result or None, failure reason or None)} as jobs finish, with a progress bar."""
    from qgf_lite.progress import progress_bar as tqdm

    outcomes = {}
    with tqdm(total=len(jobs), desc=description, disable=not progress or not jobs) as bar:
        for key, job in jobs.items():
            try:
                outcomes[key] = (job.result(), None)
            except Exception as error:  # one failed job must not stop the sweep
                outcomes[key] = (None, _failure_reason(error))
            bar.update(1)
    return outcomes


def run_sweep(config: SweepConfig, *, progress: bool = True, log=print) -> dict:
    """Run (or resume) the sweep; returns the summary also written to ``out``/results.json and results.md."""
    validate(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    executor = make_executor(config, out / "jobs")

    missing = [d for d in config.domains if not Path(config.dataset_path(d)).is_file()]
    data_failures = {}
    if missing:
        if config.generate_episodes <= 0:
            data_failures = {
                d: f"no dataset at {config.dataset_path(d)}; set generate_episodes > 0 or dataset_dir" for d in missing
            }
        else:
            jobs = {d: executor.submit(generate_job, config, d) for d in missing}
            for domain, (_, reason) in _wait(jobs, progress, "datasets").items():
                if reason:
                    data_failures[domain] = f"dataset generation failed: {reason}"

    outcomes, jobs = {}, {}
    for domain in config.domains:
        for task in config.tasks:
            if domain in data_failures:
                outcomes[(domain, task)] = (None, data_failures[domain])
            elif (done := finished_job(config, domain, task)) is not None:
                outcomes[(domain, task)] = (done, None)
            else:
                jobs[(domain, task)] = executor.submit(task_job, config, domain, task)
    skipped = len(outcomes) - sum(1 for d in config.domains for _ in config.tasks if d in data_failures)
    log(f"sweep: {len(jobs)} jobs submitted ({config.executor}), {skipped} already finished")
    outcomes.update(_wait(jobs, progress, "tasks"))

    summary = summarise_sweep(config, outcomes)
    atomic_write_bytes(out / "results.json", json.dumps(summary, indent=2).encode())
    atomic_write_bytes(out / "results.md", (results_markdown(summary) + "\n").encode())
    return summary


# --------------------------------------------------------------------------------------------- results


def summarise_sweep(config: SweepConfig, outcomes: dict) -> dict:
    """Per task and label: success pooled over seeds (Wilson 95%), the per-seed rates and network evaluations per
    action; over tasks: the mean of the task rates with a 95% t interval over tasks, per label, or per method
    family when weights were chosen per task (``selection_episodes``); published references for the domains."""
    from qgf_lite.ogbench.evaluation import mean_interval, wilson_interval
    from qgf_lite.ogbench.published import published_reference
    from qgf_lite.samplers import SamplerSpec

    tasks, failures = [], []
    per_key_rates: dict = {}
    for (domain, task), (done, reason) in sorted(outcomes.items()):
        if reason is not None:
            failures.append({"domain": domain, "task": task, "status": "failed", "reason": reason})
            continue
        rows: dict = {}
        for report in done["reports"]:
            for row in report["results"]:
                spec = SamplerSpec.from_dict(row)
                entry = rows.setdefault(
                    row["label"],
                    {"family": spec.family, "cost": row["cost"], "successes": 0, "episodes": 0, "seed_rates": []},
                )
                entry["successes"] += row["successes"]
                entry["episodes"] += row["episodes"]
                entry["seed_rates"].append(row["success_rate"])
        selected = "selection" in done
        for label, entry in rows.items():
            rate = entry["successes"] / entry["episodes"]
            entry.update(success_rate=rate, success_ci95=list(wilson_interval(entry["successes"], entry["episodes"])))
            key = entry["family"] if selected else label
            per_key_rates.setdefault((domain, key), []).append((rate, entry["cost"]))
        task_summary = {"domain": domain, "task": task, "status": "done", "env_name": done["env_name"], "results": rows}
        if selected:
            task_summary["chosen_weights"] = done["selection"]["chosen_weights"]
        tasks.append(task_summary)
    means = []
    for (domain, label), pairs in per_key_rates.items():
        rates = [rate for rate, _ in pairs]
        mean, (lo, hi) = mean_interval(rates)
        means.append(
            {
                "domain": domain,
                "label": label,
                "tasks": len(rates),
                "success_rate": mean,
                "success_ci95": [max(0.0, lo), min(1.0, hi)],
                "cost": pairs[0][1],
            }
        )
    references = [published_reference(d) for d in config.domains if published_reference(d) is not None]
    return {
        "config": config.to_dict(),
        "tasks": tasks,
        "failed": failures,
        "mean_over_tasks": means,
        "published": references,
    }


def _percent(rate: float, ci) -> str:
    lo, hi = ci
    return f"{100 * rate:.0f} [{100 * lo:.0f}, {100 * hi:.0f}]"


def results_markdown(summary: dict) -> str:
    """The sweep's table: one row per task and setting, then the mean over each domain's tasks, then failures;
    then, for domains that have them, published numbers (labelled with their own scale)."""
    lines = [
        "| domain | task | setting | seeds | success % [95% CI] | network evals / action |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for task in summary["tasks"]:
        for label, row in task["results"].items():
            lines.append(
                f"| {task['domain']} | {task['task']} | {label} | {len(row['seed_rates'])} | "
                f"{_percent(row['success_rate'], row['success_ci95'])} | {row['cost']} |"
            )
    for row in summary["mean_over_tasks"]:
        # One task has no spread over tasks to build an interval from: print the mean alone.
        rate = (
            _percent(row["success_rate"], row["success_ci95"])
            if row["tasks"] > 1
            else f"{100 * row['success_rate']:.0f} (one task: no interval)"
        )
        lines.append(f"| {row['domain']} | mean of {row['tasks']} | {row['label']} | | {rate} | {row['cost']} |")
    for failure in summary["failed"]:
        lines.append(f"| {failure['domain']} | {failure['task']} | FAILED | | {failure['reason']} | |")
    if any("chosen_weights" in task for task in summary["tasks"]):
        config = summary["config"]
        lines += [
            "",
            f"Weights chosen per task on {config['selection_episodes']} episodes per seed from other start "
            f"states (seed {config['selection_seed']}); rates above are on fresh start states "
            f"(seed {config['eval']['seed']}).",
        ]
    for reference in summary.get("published", []):
        lines += [
            "",
            f"Published reference for {reference['domain']} ({reference['scale']}; "
            f"source: {reference['source']}), not comparable in scale with the rows above:",
            "",
            "| method | mean success % over tasks 1-5 |",
            "| --- | --- |",
        ]
        lines += [f"| {method} | {value:.1f} |" for method, value in reference["success"].items()]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- CLI


def add_sweep_arguments(parser) -> None:
    parser.add_argument("config", help="sweep config (.toml or .json): fields of qgf_lite.ogbench.sweep.SweepConfig")
    parser.add_argument(
        "--executor",
        choices=EXECUTORS,
        default=None,
        help="local processes (default), a SLURM cluster, or this process (debug)",
    )
    parser.add_argument("--out", default=None, help="results folder (overrides the config's `out`)")


def run_sweep_command(args) -> int:
    config = load_config(args.config, executor=args.executor, out=args.out)
    summary = run_sweep(config)
    print(results_markdown(summary))
    print(f"results: {Path(config.out) / 'results.json'} and results.md")
    return 1 if summary["failed"] else 0


__all__ = [
    "EXECUTORS",
    "SweepConfig",
    "TrainSettings",
    "load_config",
    "results_markdown",
    "run_sweep",
    "summarise_sweep",
    "validate",
]
