"""Checkpoints: one msgpack file holding the config, the full train state and free-form metadata.

Writes are atomic (a temporary file in the same folder, fsynced, then ``os.replace``), so a crash leaves
either the old checkpoint or the new one, never half of one. Loading checks the stored arrays against the
architecture they are loaded into and names the first mismatch. Checkpoints written before a config field or a
train-state field existed still load: a missing config field takes its default, and a missing state field is
accepted when the architecture holds no arrays in it. Checkpoints of 0.2, which stored the CFG-RL and FQL options
as flat config fields (``cfgrl``, ``fql_alpha``...) and their arrays as state fields (``cfgrl_params``,
``fql_opt_state``...), load into the learner layout (``QGFConfig.learners``, ``TrainState.learners[name]``).
"""

from __future__ import annotations

from pathlib import Path

import flax.serialization
import jax
import numpy as np

from qgf_lite.fileio import atomic_write_bytes
from qgf_lite.learners import get_learner, learner_names
from qgf_lite.training import QGFConfig, TrainState, init_train_state, init_train_states

FORMAT = "qgf_lite.checkpoint"
FORMAT_VERSION = 1


def _plain(value):
    """Tuples become lists: msgpack (strict) stores lists only."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def save_checkpoint(path, config: QGFConfig, state: TrainState, extra: dict | None = None) -> Path:
    """Save ``state`` (single- or multi-seed) with its ``config``; ``extra`` must be msgpack-able (dict of plain values)."""
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": _plain(config.to_dict()),
        "state": jax.tree_util.tree_map(np.asarray, flax.serialization.to_state_dict(state)),
        "extra": _plain(extra or {}),
    }
    return atomic_write_bytes(path, flax.serialization.msgpack_serialize(payload))


def _flat(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}/{k}" if prefix else str(k)))
        return out
    return {prefix: tree}


def _architecture_diff(stored: QGFConfig, wanted: QGFConfig):
    fields = (
        "obs_dim",
        "action_dim",
        "horizon",
        "actor_hidden",
        "critic_hidden",
        "value_hidden",
        "num_critics",
        "layer_norm",
        "time_emb_dim",
        *learner_names(),
    )  # a learner's name: is it trained
    diff = [
        f"{f}: checkpoint {getattr(stored, f)!r} vs requested {getattr(wanted, f)!r}"
        for f in fields
        if getattr(stored, f) != getattr(wanted, f)
    ]
    for name in set(stored.learner_names) & set(wanted.learner_names):
        architecture = get_learner(name).architecture
        have = architecture(stored, stored.learner_options(name))
        want = architecture(wanted, wanted.learner_options(name))
        diff += [f"{k}: checkpoint {have[k]!r} vs requested {want[k]!r}" for k in sorted(have) if have[k] != want[k]]
    return diff


def _learner_layout(state: dict) -> dict:
    """A stored state dict with 0.2's learner fields (``cfgrl_params``, ``fql_opt_state``...) moved to
    ``learners[name]["params" | "opt_state"]``; empty ones (a learner the run did not train) are dropped."""
    state = dict(state)
    learners = dict(state.get("learners", {}) or {})
    for name in learner_names():
        for part in ("params", "opt_state"):
            value = state.pop(f"{name}_{part}", None)
            if value is not None and _flat(value):
                learners.setdefault(name, {})[part] = value
    state["learners"] = learners
    return state


def load_checkpoint(path, config: QGFConfig | None = None) -> tuple[QGFConfig, TrainState, dict]:
    """Load (config, state, extra). With ``config``, the checkpoint must match its architecture exactly.

    Raises FileNotFoundError for a missing file and ValueError for a corrupt file or any mismatch
    (naming the config field or the parameter and both shapes).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    try:
        payload = flax.serialization.msgpack_restore(path.read_bytes())
    except Exception as err:
        raise ValueError(f"{path} is not a readable qgf_lite checkpoint ({type(err).__name__}: {err}).") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a qgf_lite checkpoint (no '{FORMAT}' header).")
    try:
        stored_config = QGFConfig.from_dict(
            {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in payload["config"].items()}
        )
        stored_state = payload["state"]
        step = np.asarray(stored_state["step"])
    except (KeyError, TypeError, AttributeError) as err:
        # The header is there but the body is not what save_checkpoint writes (a damaged or foreign file).
        raise ValueError(f"{path} is a damaged qgf_lite checkpoint ({type(err).__name__}: {err}).") from None
    if config is not None:
        diff = _architecture_diff(stored_config, config)
        if diff:
            raise ValueError(f"Checkpoint {path} was trained for another architecture: " + "; ".join(diff) + ".")
        stored_config = config
    if step.ndim == 1:
        template = jax.eval_shape(lambda: init_train_states(stored_config, list(range(step.shape[0]))))
    else:
        template = jax.eval_shape(lambda: init_train_state(stored_config, jax.random.PRNGKey(0)))
    template_dict = flax.serialization.to_state_dict(template)
    # A state field the architecture leaves empty (the CFG-RL network of a run without it) is absent from
    # checkpoints written before the field existed: restore it as the empty container it is.
    stored_state = _learner_layout(stored_state)
    for name, value in template_dict.items():
        if name not in stored_state and isinstance(value, dict) and not _flat(value):
            stored_state[name] = value
    want = _flat(template_dict)
    have = _flat(stored_state)
    for name in sorted(set(want) | set(have)):
        if name not in have:
            raise ValueError(f"Checkpoint {path} lacks `{name}` expected by the architecture.")
        if name not in want:
            raise ValueError(f"Checkpoint {path} has `{name}`, which the architecture does not.")
        if tuple(np.shape(have[name])) != tuple(want[name].shape):
            raise ValueError(
                f"Checkpoint {path}: `{name}` has shape {tuple(np.shape(have[name]))} but the architecture "
                f"needs {tuple(want[name].shape)}."
            )
    state = flax.serialization.from_state_dict(template, stored_state)
    state = jax.tree_util.tree_map(jax.numpy.asarray, state)
    return stored_config, state, payload.get("extra", {})


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "load_checkpoint",
    "save_checkpoint",
]
