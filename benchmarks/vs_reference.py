"""qgf_lite side by side with the official QGF code (zhouzypaul/qgf): same data, same seeds, same start states.

    python benchmarks/vs_reference.py --reference PATH_TO_OFFICIAL_CHECKOUT \\
        --dataset data/cube-single-play-v0.npz --out benchmarks/results/vs_reference.json

``PATH_TO_OFFICIAL_CHECKOUT`` is a checkout of https://github.com/zhouzypaul/qgf that you fetched yourself; nothing
of it is shipped with qgf_lite and no test needs it (``tests/ogbench/test_vs_reference.py`` runs this script against a tiny
stand-in checkout). What the script does, in one process:

1. **Data.** The generated dataset (``qgf-lite generate ...``) is loaded once, through
   ``qgf_lite.ogbench.datasets.load_dataset`` (OGBench's loader; single-task rewards and masks relabelled by
   OGBench), and the *same arrays* go to both trainers: qgf_lite's ``dataset_from_dict`` and the official
   ``utils.datasets.Dataset.create`` (whose ``sample_sequence`` draws the official chunked minibatches).
2. **Training.** Per seed, both implementations train from that seed, interleaved in chunks of ``--chunk`` steps
   (official chunk, qgf_lite chunk, ...), so the machine's load hits both alike: the official loop is the one of
   its ``main.py`` (``np.random.seed(seed)``, then per step ``Dataset.sample_sequence`` on the host and one jitted
   ``agent.update(batch)``), qgf_lite's is its scan trainer (``compiled_train_steps``, minibatches drawn on the
   device). Train steps/s are the median over chunks after the first (compilation).
3. **Evaluation.** Both are evaluated by the same loop, ``qgf_lite.ogbench.evaluation.run_episodes`` on one
   ``EnvPool``: every setting of both implementations sees the same start states (``episode_reset_seed``) and the
   same per-chunk noise keys (``episode_chunk_keys``; the official sampler is vmapped over rows so each row draws
   its own noise from its key, which gives the same initial noise as qgf_lite's sampler). Settings: BC (guidance
   weight 0; the official agent at ``guidance_weight=0``), QGF at each ``--weights`` (official
   ``denoised_action_approx="one_euler_step_approx"``), noisy-gradient at each ``--noisy-weights`` (official
   ``"noisy"``). Both guide with the target critic (the official ``sample_actions`` does; so does qgf_lite by
   default). Success is pooled over seeds with a Wilson 95% interval (``wilson_interval``).
4. **Speed.** Guided sampling latency (QGF, 10 steps, batch 1 and 1000) of both, calls interleaved, at the trained
   size and at the official defaults' size (4 x 512, fresh networks), and training steps/s at that size (4 x 512,
   batch 256, H = 5; docs/algorithm.md "Presets": not the paper's 4 x 1024, batch 1024), measured as in step 2.

**Shims** (applied only when the package is missing; the JSON lists those applied under ``shims``):

* ``ml_collections``: the official ``agents/qgf.py`` imports it for ``get_config()`` only; the shim is a module
  whose ``ConfigDict`` is a ``dict`` with attribute access.
* ``distrax``: ``utils/networks.py`` imports it for one class (``TransformedWithMode(distrax.Transformed)``) that
  the QGF agent never uses; the shim is a module with an empty ``Transformed`` class.
* ``agents`` is registered as a bare package pointing at the checkout's ``agents/`` folder, so importing
  ``agents.qgf`` does not run ``agents/__init__.py`` (which imports all 16 agents and their dependencies).
  ``utils`` likewise. No official file is modified or copied.

**Matched**: network widths and depths (``--hidden``, ``--layers`` for the flow, each critic member and the value),
2 critics, batch, H (action chunking), 10 denoising steps (flow times on the grid {0, 0.1, ..., 1} in training),
expectile, discount, Polyak rate, Adam 3e-4, GELU + LayerNorm, the critic minimum for V and guidance. **Not
matched** (each implementation keeps its own; see docs/results.md): the MLP block order (official Dense -> LayerNorm
-> GELU with no LayerNorm on the last hidden layer and Glorot-uniform hidden kernels; qgf_lite Dense -> GELU ->
LayerNorm on every hidden layer, flax default init), the flow-time embedding (official: cos/sin(10000^(1-k/8) t), k
< 8, 16 features; qgf_lite: sin/cos(2 pi f t) with 16 frequencies f from 1 down to 1/1000, 32 features), validity
weighting (the official weights the value loss by chunk validity and the flow loss not; qgf_lite the reverse), and
the minibatch sampler (host numpy vs device).
The official ``main.py`` would also clip dataset actions to +-(1 - 1e-5) and set masks = 1 - terminals; here both
see OGBench's own relabelled arrays (masks = 1 - success), so the data are identical.

Output: one JSON (rewritten atomically after every trained seed and every evaluated setting, so a run stopped early
keeps what it finished; ``--resume`` continues from it and from the checkpoints in ``--workdir``), and the
side-by-side table printed as Markdown at the end (``--table-only`` prints it from an existing JSON).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
import types
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the checkout's qgf_lite, not an installed copy
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

SCHEMA = "qgf_lite.vs_reference/1"
# options a --resume must keep (the seeds, weights and speed options may change: new ones are added to the report)
RESUME_MUST_MATCH = (
    "dataset",
    "env",
    "steps",
    "hidden",
    "layers",
    "batch_size",
    "horizon",
    "flow_steps",
    "discount",
    "expectile",
    "tau",
    "episodes",
    "eval_seed",
    "max_episode_steps",
)
REFERENCE_FILES = (
    "agents/qgf.py",
    "agents/common.py",
    "utils/networks.py",
    "utils/flax_utils.py",
    "utils/datasets.py",
    "utils/activation.py",
)


# ------------------------------------------------------------------------------------------ the official code
@dataclasses.dataclass
class Reference:
    path: Path
    agent_cls: type
    get_config: object
    dataset_cls: type
    shims: list
    git_commit: str | None


def _shim_module(name: str, doc: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name, doc)
    module.__dict__.update(attrs)
    module.__qgf_lite_shim__ = True
    return module


class _ConfigDict(dict):
    """ml_collections.ConfigDict stand-in: a dict with attribute access (all get_config() needs)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e

    def __setattr__(self, name, value):
        self[name] = value


def _bare_package(name: str, folder: Path) -> None:
    existing = sys.modules.get(name)
    if existing is not None:
        paths = [str(Path(p).resolve()) for p in getattr(existing, "__path__", [])]
        if str(folder.resolve()) in paths:
            return
        raise RuntimeError(
            f"A module named {name!r} is already imported from {paths or existing!r}; the official "
            f"code's top-level package {name!r} would clash with it. Run this script in a fresh "
            "process."
        )
    package = types.ModuleType(name, f"The official checkout's {name}/ (its __init__ is not run).")
    package.__path__ = [str(folder)]
    sys.modules[name] = package


def load_reference(path) -> Reference:
    """Import the official QGFAgent, get_config and Dataset from a checkout, with the shims the module doc lists."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(
            f"--reference {str(path)!r} is not a folder; pass a checkout of "
            "https://github.com/zhouzypaul/qgf (e.g. git clone it first)."
        )
    missing = [f for f in REFERENCE_FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"--reference {str(path)!r} does not look like a checkout of zhouzypaul/qgf: missing {', '.join(missing)}."
        )
    shims = []
    if "ml_collections" not in sys.modules and importlib.util.find_spec("ml_collections") is None:
        sys.modules["ml_collections"] = _shim_module(
            "ml_collections", "shim (qgf_lite vs_reference)", ConfigDict=_ConfigDict
        )
        shims.append(
            "ml_collections: not installed; shim module whose ConfigDict is a dict with attribute access "
            "(used only by agents/qgf.py get_config)"
        )
    if "distrax" not in sys.modules and importlib.util.find_spec("distrax") is None:
        sys.modules["distrax"] = _shim_module(
            "distrax", "shim (qgf_lite vs_reference)", Transformed=type("Transformed", (), {})
        )
        shims.append(
            "distrax: not installed; shim module with an empty Transformed class (utils/networks.py "
            "subclasses it in TransformedWithMode, which the QGF agent does not use)"
        )
    _bare_package("agents", path / "agents")
    _bare_package("utils", path / "utils")
    shims.append(
        "agents, utils: registered as bare packages on the checkout's folders, so agents/__init__.py "
        "(which imports every agent) is not run"
    )
    qgf = importlib.import_module("agents.qgf")
    datasets = importlib.import_module("utils.datasets")
    return Reference(path, qgf.QGFAgent, qgf.get_config, datasets.Dataset, shims, _git_commit(path))


def _git_commit(path: Path):
    import subprocess

    try:
        return (
            subprocess.run(
                ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None  # not a git checkout (e.g. an unpacked archive), or git is missing


def reference_config(ref: Reference, args, hidden: tuple) -> dict:
    """The official get_config() defaults with this run's matched settings, as a plain dict."""
    cfg = dict(ref.get_config())
    cfg.update(
        batch_size=args.batch_size,
        actor_hidden_dims=tuple(hidden),
        value_network_kwargs=dict(dict(cfg["value_network_kwargs"]), hidden_dims=tuple(hidden), layer_norm=True),
        horizon_length=args.horizon,
        action_chunking=True,
        discount=args.discount,
        expectile=args.expectile,
        tau=args.tau,
        denoise_steps=args.flow_steps,
        denoised_action_approx="one_euler_step_approx",
        apply_jacobian=False,
    )
    return cfg


def reference_variant(agent, mode: str):
    """The same trained agent with ``denoised_action_approx`` = ``mode`` (config is static in the official agent)."""
    from flax.core import FrozenDict

    return agent.replace(config=FrozenDict({**dict(agent.config), "denoised_action_approx": mode}))


@jax.jit
def reference_chunk_sampler(agent, _unused, obs, keys, weight):
    """The official ``sample_actions`` as an evaluation sampler: (agent, -, obs (B, d), keys (B, 2), w) -> (B, H*A).

    Vmapped over rows, each with its own key: row i starts from ``normal(keys[i], (1, H*A))``, the noise qgf_lite's
    sampler draws for the same key, so both implementations start every chunk from the same noise."""
    return jax.vmap(lambda o, k: agent.sample_actions(o, seed=k, guidance_weight=weight))(obs, keys)


# ------------------------------------------------------------------------------------------ helpers
def write_json(path, data) -> None:
    from qgf_lite.fileio import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(data, indent=1, default=_json_default) + "\n").encode())


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, (tuple, Path)):
        return list(x) if isinstance(x, tuple) else str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def median(xs):
    return float(statistics.median(xs)) if xs else None


def timed(fn):
    """(wall seconds, process CPU seconds, result) of fn()."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def finite_losses(name: str, losses: dict) -> dict:
    out = {k: float(np.mean(np.asarray(v))) for k, v in losses.items()}
    bad = [k for k, v in out.items() if not math.isfinite(v)]
    if bad:
        raise RuntimeError(f"{name}: non-finite loss(es) {bad}; the comparison would be meaningless.")
    return out


# ------------------------------------------------------------------------------------------ training
class Trainers:
    """Both implementations for one seed, trained in alternating chunks."""

    def __init__(self, ref: Reference, ref_config: dict, config, dataset, ref_dataset, seed: int):
        import qgf_lite

        self.ref, self.config, self.dataset, self.ref_dataset, self.seed = ref, config, dataset, ref_dataset, seed
        ex_obs = np.asarray(ref_dataset["observations"][:1])
        ex_act = np.asarray(ref_dataset["actions"][:1])
        self.agent = ref.agent_cls.create(seed, ex_obs, ex_act, ref_config)
        self.np_rng_state = None
        self.state = qgf_lite.init_train_state(config, jax.random.PRNGKey(seed))
        self.ref_config = ref_config

    def official_chunk(self, steps: int):
        if self.np_rng_state is None:  # as the official main.py: np.random.seed(FLAGS.seed), then sample_sequence
            np.random.seed(self.seed)
        else:
            np.random.set_state(self.np_rng_state)
        agent, info = self.agent, None
        for _ in range(steps):
            batch = self.ref_dataset.sample_sequence(
                self.ref_config["batch_size"],
                sequence_length=self.ref_config["horizon_length"],
                discount=self.ref_config["discount"],
            )
            agent, info = agent.update(batch)
        jax.block_until_ready((agent, info))
        self.agent, self.np_rng_state = agent, np.random.get_state()
        return info

    def qgf_lite_chunk(self, steps: int):
        import qgf_lite

        fn = qgf_lite.compiled_train_steps(self.config, steps)
        state, metrics = fn(self.state, self.dataset)
        jax.block_until_ready((state, metrics))
        self.state = state
        return metrics


def train_side_by_side(trainers: Trainers, steps: int, chunk: int, bar=None) -> dict:
    rec = {"official": {"wall_s": [], "cpu_s": [], "losses": []}, "qgf_lite": {"wall_s": [], "cpu_s": [], "losses": []}}
    done = 0
    while done < steps:
        k = min(chunk, steps - done)
        w, c, info = timed(lambda: trainers.official_chunk(k))
        rec["official"]["wall_s"].append(w), rec["official"]["cpu_s"].append(c)
        rec["official"]["losses"].append(
            finite_losses(
                "official",
                {
                    "flow_per_dim": info["bc_loss"],
                    "critic": info["critic_loss"],
                    "value": info["value_loss"],
                    "q": info["q"],
                },
            )
        )
        if bar is not None:
            bar.update(k)
        w, c, m = timed(lambda: trainers.qgf_lite_chunk(k))
        rec["qgf_lite"]["wall_s"].append(w), rec["qgf_lite"]["cpu_s"].append(c)
        rec["qgf_lite"]["losses"].append(
            finite_losses(
                "qgf_lite",
                {  # qgf_lite's flow loss sums over the chunk
                    "flow_per_dim": m["policy_loss"] / trainers.config.chunk_dim,
                    "critic": m["critic_loss"],
                    "value": m["value_loss"],
                    "q": m["q_mean"],
                },
            )
        )
        if bar is not None:
            bar.update(k)
        done += k
        rec.setdefault("chunk_steps", []).append(k)
    return summarise_training(rec)


def summarise_training(rec: dict) -> dict:
    steps = rec["chunk_steps"]
    timed_idx = list(range(1, len(steps))) or [0]  # the first chunk compiles
    for impl in ("official", "qgf_lite"):
        r = rec[impl]
        r["steps_per_s"] = median([steps[i] / r["wall_s"][i] for i in timed_idx])
        r["cpu_ms_per_step"] = median([1e3 * r["cpu_s"][i] / steps[i] for i in timed_idx])
        r["total_wall_s"] = float(sum(r["wall_s"]))
        r["final_losses"] = r["losses"][-1]
    rec["qgf_lite_vs_official_steps_per_s"] = rec["qgf_lite"]["steps_per_s"] / rec["official"]["steps_per_s"]
    rec["steps"] = int(sum(steps))
    return rec


# ------------------------------------------------------------------------------------------ checkpoints
def save_pair(workdir: Path, seed: int, trainers: Trainers) -> None:
    from flax import serialization

    from qgf_lite.fileio import atomic_write_bytes

    atomic_write_bytes(workdir / f"seed{seed}_official.msgpack", serialization.to_bytes(trainers.agent))
    atomic_write_bytes(workdir / f"seed{seed}_qgf_lite.msgpack", serialization.to_bytes(trainers.state))


def load_pair(workdir: Path, seed: int, trainers: Trainers) -> bool:
    from flax import serialization

    a, b = workdir / f"seed{seed}_official.msgpack", workdir / f"seed{seed}_qgf_lite.msgpack"
    if not (a.is_file() and b.is_file()):
        return False
    trainers.agent = serialization.from_bytes(trainers.agent, a.read_bytes())
    trainers.state = serialization.from_bytes(trainers.state, b.read_bytes())
    return True


# ------------------------------------------------------------------------------------------ evaluation
def settings(weights, noisy_weights) -> list:
    """(method, weight) pairs: BC, QGF at each weight, noisy-gradient at each noisy weight."""
    return [("bc", 0.0)] + [("qgf", float(w)) for w in weights] + [("noisy", float(w)) for w in noisy_weights]


def setting_label(method: str, weight: float) -> str:
    return "bc" if method == "bc" else f"{method} w={weight:g}"


def samplers_for(trainers: Trainers, config, method: str, weight: float):
    """{impl: (sampler, params)} for one setting; both called as sampler(params[0], params[1], obs, keys, w)."""
    from qgf_lite.ogbench.evaluation import compiled_chunk_sampler, sampler_params
    from qgf_lite.samplers import spec_from_name

    spec = spec_from_name(method, weight, steps=config.flow_steps)
    agent = trainers.agent if method in ("bc", "qgf") else reference_variant(trainers.agent, "noisy")
    return {
        "official": (reference_chunk_sampler, (agent, None)),
        "qgf_lite": (compiled_chunk_sampler(config, spec), sampler_params(trainers.state)),
    }


def pooled_rows(evals: list) -> list:
    """One row per (setting, impl), successes pooled over seeds, Wilson 95% interval."""
    from qgf_lite.ogbench.evaluation import wilson_interval

    rows = {}
    for e in evals:
        key = (e["method"], e["weight"], e["impl"])
        r = rows.setdefault(
            key,
            {
                "method": e["method"],
                "weight": e["weight"],
                "impl": e["impl"],
                "label": setting_label(e["method"], e["weight"]),
                "successes": 0,
                "episodes": 0,
                "per_seed": {},
            },
        )
        r["successes"] += e["successes"]
        r["episodes"] += e["episodes"]
        r["per_seed"][str(e["seed"])] = e["success_rate"]
    for r in rows.values():
        r["success_rate"] = r["successes"] / r["episodes"]
        r["success_ci95"] = list(wilson_interval(r["successes"], r["episodes"]))
    return list(rows.values())


def newcombe_difference_interval(p1, ci1, p2, ci2) -> tuple:
    """95% interval of p1 - p2 for two independent proportions from their Wilson intervals (Newcombe 1998,
    method 10). Overlapping Wilson intervals are a loose test; this is the direct one. Treating the two arms as
    independent ignores the shared start states and noise, which makes the interval conservative."""
    d = p1 - p2
    return (
        d - math.sqrt((p1 - ci1[0]) ** 2 + (ci2[1] - p2) ** 2),
        d + math.sqrt((ci1[1] - p1) ** 2 + (p2 - ci2[0]) ** 2),
    )


def agreement(rows: list) -> list:
    by = {}
    for r in rows:
        by.setdefault((r["method"], r["weight"]), {})[r["impl"]] = r
    out = []
    for (method, weight), pair in by.items():
        if set(pair) != {"official", "qgf_lite"}:
            continue
        o, q = pair["official"], pair["qgf_lite"]
        overlap = o["success_ci95"][0] <= q["success_ci95"][1] and q["success_ci95"][0] <= o["success_ci95"][1]
        diff_ci = newcombe_difference_interval(
            q["success_rate"], q["success_ci95"], o["success_rate"], o["success_ci95"]
        )
        out.append(
            {
                "method": method,
                "weight": weight,
                "label": setting_label(method, weight),
                "official": o["success_rate"],
                "qgf_lite": q["success_rate"],
                "difference": q["success_rate"] - o["success_rate"],
                "difference_ci95": list(diff_ci),
                "difference_excludes_zero": bool(diff_ci[0] > 0 or diff_ci[1] < 0),
                "intervals_overlap": bool(overlap),
                "episodes": o["episodes"],
            }
        )
    return out


def critic_gradient_scale(trainers: Trainers, arrays: dict, config, n: int = 1024, seed: int = 0) -> dict:
    """Mean and median L2 norm of grad_a min_i Qbar_i(s, a) (the target critic, as guidance uses it) of each
    implementation on the same ``n`` dataset (state, action chunk) pairs. Guidance adds ``w`` times this gradient
    to the velocity, so the ratio of the two scales says how differently the same ``w`` guides them."""
    from qgf_lite.guidance import critic_action_gradient
    from qgf_lite.training import critic_fn, guidance_critic_params

    size = arrays["actions"].shape[0]
    start = np.random.default_rng(seed).integers(0, size - config.horizon + 1, size=n)
    obs = jnp.asarray(arrays["observations"][start], jnp.float32)
    acts = jnp.asarray(arrays["actions"][start[:, None] + np.arange(config.horizon)].reshape(n, -1), jnp.float32)
    agent = trainers.agent
    ours = critic_action_gradient(critic_fn(config, guidance_critic_params(trainers.state)), obs, acts)
    theirs = jax.grad(lambda a: jnp.sum(jnp.min(agent.target_critic(obs, a), axis=0)))(acts)
    out = {}
    for impl, g in (("official", theirs), ("qgf_lite", ours)):
        norms = np.asarray(jnp.linalg.norm(g, axis=-1))
        out[impl] = {"mean_norm": float(norms.mean()), "median_norm": float(np.median(norms))}
    out["qgf_lite_over_official"] = out["qgf_lite"]["mean_norm"] / out["official"]["mean_norm"]
    return out


def common_noise_check(trainers: Trainers, config, batch: int = 4, seed: int = 0) -> float:
    """Max |difference| between the two evaluation samplers with every network parameter set to zero.

    Zero networks give zero velocity and zero critic gradient, so each sampler returns its initial noise, clipped:
    0.0 means row i of both starts from the same noise for the same (episode, chunk) key, i.e. the comparison uses
    common random numbers for the sampling noise too, not only for the start states."""
    from qgf_lite.ogbench.evaluation import compiled_chunk_sampler, episode_chunk_keys, sampler_params
    from qgf_lite.samplers import spec_from_name

    zero = functools.partial(jax.tree_util.tree_map, jnp.zeros_like)
    obs = jnp.asarray(np.random.default_rng(seed).standard_normal((batch, config.obs_dim)), jnp.float32)
    keys = episode_chunk_keys(seed, np.arange(batch), 0)
    ours = compiled_chunk_sampler(config, spec_from_name("qgf", 0.1, steps=config.flow_steps))(
        *sampler_params(zero(trainers.state)), obs, keys, 0.1
    )
    theirs = reference_chunk_sampler(zero(trainers.agent), None, obs, keys, 0.1)
    if not bool(jnp.any(jnp.abs(ours) < 1.0)):
        raise RuntimeError("common_noise_check: every sample is clipped; the check would prove nothing.")
    return float(jnp.max(jnp.abs(ours - theirs)))


# ------------------------------------------------------------------------------------------ speed
def interleaved_latency(fns: dict, repeats: int) -> dict:
    """Median wall ms and process-CPU ms of each fn (called alternately, each blocked on), after two warm-up calls
    each. On a shared machine the CPU time is the steadier view of the work; the wall time is what a user waits."""
    for fn in fns.values():
        for _ in range(2):
            jax.block_until_ready(fn())
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            w, c, out = timed(fn)
            jax.block_until_ready(out)  # fn returns an async result: block inside the timed window
            wall[k].append(1e3 * w), cpu[k].append(1e3 * c)
    return {**{k: median(v) for k, v in wall.items()}, **{f"{k}_cpu": median(v) for k, v in cpu.items()}}


def latency_pair(trainers: Trainers, config, batches, repeats: int, weight: float = 0.05) -> dict:
    """QGF guided sampling, 10 steps: the official batched ``sample_actions`` vs qgf_lite's chunk sampler."""
    from qgf_lite.ogbench.evaluation import compiled_chunk_sampler, sampler_params
    from qgf_lite.samplers import spec_from_name

    sampler = compiled_chunk_sampler(config, spec_from_name("qgf", weight, steps=config.flow_steps))
    params = sampler_params(trainers.state)
    out = {}
    for b in batches:
        obs = jnp.asarray(np.random.default_rng(b).standard_normal((b, config.obs_dim)), jnp.float32)
        keys = jax.random.split(jax.random.PRNGKey(b), b)
        key = jax.random.PRNGKey(b)
        agent = trainers.agent
        ms = interleaved_latency(
            {
                "official": lambda: jax.block_until_ready(agent.sample_actions(obs, seed=key, guidance_weight=weight)),
                "qgf_lite": lambda: jax.block_until_ready(sampler(params[0], params[1], obs, keys, weight)),
            },
            repeats,
        )
        ms["qgf_lite_speedup"] = ms["official"] / ms["qgf_lite"]
        ms["qgf_lite_speedup_cpu"] = ms["official_cpu"] / ms["qgf_lite_cpu"]
        out[str(b)] = ms
    return out


def speed_section(ref, args, config, dataset, ref_dataset, trainers0, log) -> dict:
    """Guided-sampling latency at the run's size (``trainers0``: freshly initialised; the cost does not depend on
    the weights' values) and, with ``--official-defaults-speed``, latency and training steps/s at the official
    defaults' size (4 x 512)."""
    from qgf_lite.ogbench.train import make_config

    out = {
        "trained_size": {
            "hidden": args.hidden,
            "layers": args.layers,
            "guided_ms": latency_pair(trainers0, config, args.latency_batches, args.latency_repeats),
        }
    }
    log(f"latency (trained size): {out['trained_size']['guided_ms']}")
    if args.official_defaults_speed:
        hidden, layers = args.official_defaults_hidden, args.official_defaults_layers
        pconfig = make_config(
            config.obs_dim,
            config.action_dim,
            hidden=hidden,
            layers=layers,
            horizon=args.horizon,
            batch_size=args.batch_size,
            flow_steps=args.flow_steps,
        )
        ptr = Trainers(ref, reference_config(ref, args, (hidden,) * layers), pconfig, dataset, ref_dataset, 0)
        train = train_side_by_side(
            ptr, args.official_defaults_steps * (args.official_defaults_windows + 1), args.official_defaults_steps
        )
        for impl in ("official", "qgf_lite"):
            train[impl].pop("losses")
        out["official_defaults_size"] = {
            "hidden": hidden,
            "layers": layers,
            "train": train,
            "guided_ms": latency_pair(ptr, pconfig, args.latency_batches, args.latency_repeats),
        }
        log(
            f"official-defaults size: train {train['official']['steps_per_s']:.1f} (official) vs "
            f"{train['qgf_lite']['steps_per_s']:.1f} (qgf_lite) steps/s; "
            f"latency {out['official_defaults_size']['guided_ms']}"
        )
    return out


# ------------------------------------------------------------------------------------------ table
def fmt_rate(r) -> str:
    lo, hi = r["success_ci95"]
    return f"**{100 * r['success_rate']:.0f}** [{100 * lo:.0f}, {100 * hi:.0f}]"


def markdown_table(report: dict) -> str:
    rows = pooled_rows(report.get("evaluations", []))
    by = {}
    for r in rows:
        by.setdefault((r["method"], r["weight"]), {})[r["impl"]] = r
    order = {"bc": 0, "qgf": 1, "noisy": 2}
    lines = [
        (
            "| setting | official: success % [95% CI] | qgf_lite: success % [95% CI] "
            "| per seed (official / qgf_lite) | intervals overlap | qgf_lite - official, pp [95% CI] |"
        ),
        "| --- | --- | --- | --- | --- | --- |",
    ]
    diffs = {(a["method"], a["weight"]): a for a in agreement(rows)}
    for (method, weight), pair in sorted(by.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1])):
        o, q = pair.get("official"), pair.get("qgf_lite")
        per_seed = " / ".join(
            ", ".join(f"{100 * x['per_seed'][s]:.0f}" for s in sorted(x["per_seed"])) if x else "-" for x in (o, q)
        )
        overlap = (
            "-"
            if not (o and q)
            else (
                "yes"
                if o["success_ci95"][0] <= q["success_ci95"][1] and q["success_ci95"][0] <= o["success_ci95"][1]
                else "**no**"
            )
        )
        a = diffs.get((method, weight))
        diff = (
            "-"
            if a is None
            else (
                f"{100 * a['difference']:+.0f} [{100 * a['difference_ci95'][0]:+.0f}, "
                f"{100 * a['difference_ci95'][1]:+.0f}]"
            )
        )
        lines.append(
            f"| {setting_label(method, weight)} | {fmt_rate(o) if o else '-'} | {fmt_rate(q) if q else '-'} "
            f"| {per_seed} | {overlap} | {diff} |"
        )
    speed = [
        "",
        ("| speed (same process, interleaved) | official | qgf_lite | qgf_lite / official: wall | process CPU |"),
        "| --- | --- | --- | --- | --- |",
    ]

    def train_row(name, t):
        cpu = t["official"]["cpu_ms_per_step"] / t["qgf_lite"]["cpu_ms_per_step"]
        return (
            f"| {name} | {t['official']['steps_per_s']:.1f} | {t['qgf_lite']['steps_per_s']:.1f} | "
            f"{t['qgf_lite_vs_official_steps_per_s']:.2f}x | {cpu:.2f}x |"
        )

    for seed, t in sorted(report.get("training", {}).items()):
        size = f"{report['args']['layers']} x {report['args']['hidden']}"
        speed.append(train_row(f"train steps/s, seed {seed} ({size})", t))
    sp = report.get("speed", {})
    for size_key in ("trained_size", "official_defaults_size"):
        s = sp.get(size_key)
        if not s:
            continue
        size = f"{s['layers']} x {s['hidden']}"
        if "train" in s:
            speed.append(train_row(f"train steps/s ({size})", s["train"]))
        for b, ms in s["guided_ms"].items():
            speed.append(
                f"| QGF guided sampling, batch {b}, ms ({size}) | {ms['official']:.2f} | "
                f"{ms['qgf_lite']:.2f} | {ms['qgf_lite_speedup']:.2f}x | "
                + (f"{ms['qgf_lite_speedup_cpu']:.2f}x |" if "qgf_lite_speedup_cpu" in ms else "- |")
            )
    return "\n".join(lines + (speed if len(speed) > 3 else []))


# ------------------------------------------------------------------------------------------ main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--reference", help="a checkout of https://github.com/zhouzypaul/qgf (required unless --table-only)")
    p.add_argument(
        "--dataset",
        help="generated training .npz (its -val.npz sibling must exist), e.g. from "
        "`qgf-lite generate cube-single --out data/cube-single-play-v0.npz`",
    )
    p.add_argument("--env", default="cube-single-play-singletask-task2-v0")
    p.add_argument("--out", default="vs_reference.json", help="result JSON (rewritten as results come in)")
    p.add_argument("--workdir", help="trained checkpoints, for --resume (default: next to --out)")
    p.add_argument("--resume", action="store_true", help="keep the results and checkpoints of an earlier run")
    p.add_argument("--table-only", action="store_true", help="print the Markdown table of --out and exit")
    p.add_argument(
        "--redo-speed",
        action="store_true",
        help="with --resume: measure the speed section again (the earlier one is kept under speed_earlier)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--chunk", type=int, default=500, help="training steps per timed chunk")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--horizon", type=int, default=5)
    p.add_argument("--flow-steps", type=int, default=10)
    p.add_argument("--discount", type=float, default=0.99)
    p.add_argument("--expectile", type=float, default=0.9)
    p.add_argument("--tau", type=float, default=0.005, help="Polyak rate of the target critic")
    p.add_argument("--weights", type=float, nargs="*", default=[0.01, 0.03, 0.1])
    p.add_argument("--noisy-weights", type=float, nargs="*", default=[0.03])
    p.add_argument("--episodes", type=int, default=50, help="episodes per setting per seed per implementation")
    p.add_argument("--eval-seed", type=int, default=1)
    p.add_argument("--num-envs", type=int, default=10)
    p.add_argument("--workers", type=int, default=2, help="environment worker processes (0: in this process)")
    p.add_argument("--max-episode-steps", type=int, help="cut episodes shorter than the task's own limit (smoke runs)")
    p.add_argument("--latency-batches", type=int, nargs="*", default=[1, 1000])
    p.add_argument("--latency-repeats", type=int, default=11)
    p.add_argument(
        "--official-defaults-speed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time training and sampling at the official defaults' size (4 x 512, fresh networks)",
    )
    p.add_argument("--official-defaults-hidden", type=int, default=512)
    p.add_argument("--official-defaults-layers", type=int, default=4)
    p.add_argument(
        "--official-defaults-steps",
        type=int,
        default=20,
        help="training steps per timed window, official defaults' size",
    )
    p.add_argument("--official-defaults-windows", type=int, default=5)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.table_only:
        return args
    if not args.reference:
        p.error(
            "--reference PATH is required: a checkout of https://github.com/zhouzypaul/qgf (git clone it; it "
            "is not shipped with qgf_lite)"
        )
    if not args.dataset:
        p.error(
            "--dataset is required: a generated .npz, e.g. `qgf-lite generate cube-single --episodes 100 "
            "--out data/cube-single-play-v0.npz`"
        )
    if args.max_episode_steps is not None and args.max_episode_steps < 1:
        p.error(f"--max-episode-steps must be >= 1, got {args.max_episode_steps}")
    for name in (
        "steps",
        "chunk",
        "hidden",
        "layers",
        "batch_size",
        "horizon",
        "flow_steps",
        "episodes",
        "latency_repeats",
        "official_defaults_steps",
        "official_defaults_windows",
        "num_envs",
    ):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if any(w <= 0 for w in args.weights + args.noisy_weights):
        p.error("--weights and --noisy-weights must be > 0 (BC, weight 0, is always evaluated)")
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        p.error(f"--seeds must be distinct integers >= 0, got {args.seeds}")
    if Path(args.out).is_dir():
        p.error(f"--out {args.out!r} is a folder; pass a .json file path")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if args.table_only:
        if not out.is_file():
            raise SystemExit(f"--table-only: no report at --out {str(out)!r}.")
        print(markdown_table(json.loads(out.read_text())))
        return 0
    from tqdm.auto import tqdm

    import qgf_lite
    from qgf_lite.data import dataset_from_dict
    from qgf_lite.ogbench.datasets import load_dataset
    from qgf_lite.ogbench.envpool import EnvPool
    from qgf_lite.ogbench.evaluation import make_eval_env, run_episodes
    from qgf_lite.ogbench.train import make_config, require_singletask_name

    t_start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)

    require_singletask_name(args.env)
    report = json.loads(out.read_text()) if (args.resume and out.is_file()) else {}
    argv_now = sys.argv if argv is None else ["benchmarks/vs_reference.py", *argv]
    invocations = report.get("invocations") or ([report["argv"]] if "argv" in report else [])
    before = report.get("args", {})
    changed = [k for k in RESUME_MUST_MATCH if k in before and before[k] != getattr(args, k)]
    if changed:
        was = ", ".join(f"--{k.replace('_', '-')} {before[k]!r}" for k in changed)
        raise ValueError(
            f"--resume: {out} was made with {was}; with other values the results would not be "
            "comparable. Pass the same options, or another --out."
        )
    ref = load_reference(args.reference)
    log(f"official code: {ref.path} (commit {ref.git_commit}); shims: {len(ref.shims)}")
    workdir = Path(args.workdir) if args.workdir else out.with_suffix("").with_name(out.stem + "_work")
    workdir.mkdir(parents=True, exist_ok=True)

    _env, train, _val = load_dataset(args.env, dataset_path=args.dataset)
    train = {k: np.asarray(v) for k, v in train.items()}
    dataset = dataset_from_dict(train)
    ref_dataset = ref.dataset_cls.create(**{k: v.copy() for k, v in train.items()})
    hidden = (args.hidden,) * args.layers
    config = make_config(
        dataset.obs_dim,
        dataset.action_dim,
        hidden=args.hidden,
        layers=args.layers,
        horizon=args.horizon,
        batch_size=args.batch_size,
        flow_steps=args.flow_steps,
        discount=args.discount,
        expectile=args.expectile,
        target_update_rate=args.tau,
    )
    ref_config = reference_config(ref, args, hidden)
    env_kwargs = {} if args.max_episode_steps is None else {"max_episode_steps": args.max_episode_steps}
    check_env = make_eval_env(args.env, **env_kwargs)
    check_env.close()

    report.update(
        {
            "schema": SCHEMA,
            "claim": "the two implementations' success rates agree within their 95% intervals",
            "args": vars(args),
            "argv": argv_now,
            "invocations": [*invocations, argv_now],  # every run that wrote to this report, in order
            "env_name": args.env,
            "dataset": {
                "path": str(args.dataset),
                "transitions": int(dataset.size),
                "obs_dim": int(dataset.obs_dim),
                "action_dim": int(dataset.action_dim),
                "episodes": int(np.sum(train["terminals"])),
                "success_fraction": float(np.mean(train["masks"] == 0)),
            },
            "qgf_lite_config": config.to_dict(),
            "official_config": {k: (dict(v) if isinstance(v, dict) else v) for k, v in ref_config.items()},
            "official": {"path": str(ref.path), "git_commit": ref.git_commit, "shims": ref.shims},
            "environment": {
                "jax": jax.__version__,
                "backend": jax.default_backend(),
                "python": platform.python_version(),
                "cpu_count": os.cpu_count(),
                "qgf_lite": getattr(qgf_lite, "__version__", None),
                "load_average_start": list(os.getloadavg()),
            },
            "complete": False,
        }
    )
    report.setdefault("training", {})
    report.setdefault("evaluations", [])
    write_json(out, report)

    fresh = Trainers(ref, ref_config, config, dataset, ref_dataset, args.seeds[0])
    report["common_noise_max_abs_diff"] = common_noise_check(fresh, config)
    same = report["common_noise_max_abs_diff"] == 0.0
    verdict = "both samplers start from the same noise" if same else "WARNING: the samplers' noise differs"
    log(
        f"common random numbers: {verdict} (max |diff| with zeroed networks: {report['common_noise_max_abs_diff']:.3g})"
    )
    write_json(out, report)
    if "speed" in report and args.redo_speed:
        report.setdefault("speed_earlier", []).append(report.pop("speed"))
    if "speed" not in report:  # first: a few minutes, and kept even if the run is stopped later
        report["speed"] = speed_section(ref, args, config, dataset, ref_dataset, fresh, log)
        write_json(out, report)

    todo = settings(args.weights, args.noisy_weights)
    n_eval = len(args.seeds) * len(todo) * 2 * args.episodes
    bar = tqdm(
        total=len(args.seeds) * 2 * args.steps + n_eval,
        desc="vs_reference",
        unit="step|episode",
        disable=args.no_progress,
        mininterval=5,
    )
    with EnvPool(args.env, min(args.num_envs, args.episodes), workers=args.workers, **env_kwargs) as pool:
        for seed in args.seeds:
            tr = Trainers(ref, ref_config, config, dataset, ref_dataset, seed)
            if str(seed) in report["training"] and load_pair(workdir, seed, tr):
                log(f"seed {seed}: trained networks loaded from {workdir}")
                bar.update(2 * args.steps)
            else:
                log(f"seed {seed}: training both for {args.steps} steps")
                report["training"][str(seed)] = train_side_by_side(tr, args.steps, args.chunk, bar)
                save_pair(workdir, seed, tr)
                write_json(out, report)
                t = report["training"][str(seed)]
                log(
                    f"seed {seed}: {t['official']['steps_per_s']:.1f} (official) vs {t['qgf_lite']['steps_per_s']:.1f} "
                    f"(qgf_lite) steps/s; final losses official {t['official']['final_losses']}, "
                    f"qgf_lite {t['qgf_lite']['final_losses']}"
                )
            if str(seed) not in report.setdefault("critic_gradient", {}):
                report["critic_gradient"][str(seed)] = critic_gradient_scale(tr, train, config)
                write_json(out, report)
                log(f"seed {seed}: |grad_a Qbar| on 1024 data chunks: {report['critic_gradient'][str(seed)]}")
            for method, weight in todo:
                pair = samplers_for(tr, config, method, weight)
                for impl, (sampler, params) in pair.items():
                    if any(
                        e["seed"] == seed and e["impl"] == impl and e["method"] == method and e["weight"] == weight
                        for e in report["evaluations"]
                    ):
                        bar.update(args.episodes)
                        continue
                    t0 = time.perf_counter()
                    eps = run_episodes(
                        pool,
                        sampler,
                        params,
                        weight,
                        config,
                        range(args.episodes),
                        args.eval_seed,
                        on_episode=lambda _: bar.update(1),
                    )
                    successes = sum(e["success"] for e in eps)
                    report["evaluations"].append(
                        {
                            "seed": seed,
                            "impl": impl,
                            "method": method,
                            "weight": weight,
                            "episodes": len(eps),
                            "successes": int(successes),
                            "success_rate": successes / len(eps),
                            "return_mean": float(np.mean([e["return"] for e in eps])),
                            "seconds": time.perf_counter() - t0,
                            "per_episode_success": [int(e["success"]) for e in eps],
                        }
                    )
                    write_json(out, report)
                    bar.set_postfix_str(
                        f"seed {seed} {setting_label(method, weight)} {impl}: {successes}/{len(eps)}", refresh=False
                    )
    bar.close()

    report["rows"] = pooled_rows(report["evaluations"])
    report["agreement"] = agreement(report["rows"])
    report["all_intervals_overlap"] = all(a["intervals_overlap"] for a in report["agreement"])
    report["settings_with_difference_excluding_zero"] = [
        a["label"] for a in report["agreement"] if a["difference_excludes_zero"]
    ]
    report["environment"]["load_average_end"] = list(os.getloadavg())
    report["seconds"] = time.perf_counter() - t_start
    report["complete"] = True
    write_json(out, report)
    print(markdown_table(report))
    print(
        f"claim: {report['claim']}: {'holds' if report['all_intervals_overlap'] else 'does NOT hold'} for every "
        f"setting ({len(report['agreement'])} settings); JSON: {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
