"""Training-time methods as plug-in learners beside the core BC flow + IQL critic (docs/algorithm.md §5).

QGF itself needs only the BC flow and the IQL critic (``qgf_lite.training``). Every other training-time method (a
baseline such as CFG-RL, FQL or QAM) is one module that builds a ``Learner`` and lists it in ``BUILTIN_LEARNERS``;
``QGFConfig(learners=...)`` enables it with its config, ``train_step`` updates it from the same batch as the
core, ``TrainState.learners[name]`` holds its parameters and optimiser state, and the samplers it declares join
``qgf_lite.samplers.SAMPLERS``. A learner reads the core networks (flow, critic, value) as constants: its
gradients reach only its own parameters, so enabling it changes nothing else of a run.

- ``Learner``: what a method declares (its config dataclass, network, loss, samplers, PRNG tag).
- ``LearnerContext``: what its loss is given: the batch, the core networks and their parameters before this
  step's update, the critic's and value's outputs on the batch, and a key of its own.
- ``get_learner`` / ``learner_names``: the registry, loaded lazily (a learner module imports nothing of the
  trainer, so the trainer can import every learner).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

# name -> the module whose ``LEARNER`` it is. Adding a method is one line here.
BUILTIN_LEARNERS = {
    "cfgrl": "qgf_lite.cfgrl",
    "fql": "qgf_lite.fql",
    "qam": "qgf_lite.qam",
}

_LOADED: dict = {}


@dataclasses.dataclass(frozen=True)
class LearnerContext:
    """Everything a learner's loss may read at one train step (all constants for its gradient).

    config: the QGFConfig (core fields); options: this learner's config dataclass; obs, actions (batch, chunk_dim),
    valid (batch,) the chunk-validity weights; key: this learner's PRNG key for the step (the flow-matching key
    folded with its ``key_tag``); actor/critic/value: the core flax modules; policy_params, critic_params,
    target_critic_params, value_params: their parameters before this step's update; q (members, batch): the online
    critic on (obs, actions); target_q: the target critic on them; v (batch,): the value on obs.
    """

    config: Any
    options: Any
    obs: Any
    actions: Any
    valid: Any
    key: Any
    actor: Any
    critic: Any
    value: Any
    policy_params: Any
    critic_params: Any
    target_critic_params: Any
    value_params: Any
    q: Any
    target_q: Any
    v: Any

    def critic_params_for(self, which: str):
        """The online or target critic's parameters ("online" / "target")."""
        return self.critic_params if which == "online" else self.target_critic_params


@dataclasses.dataclass(frozen=True)
class Learner:
    """One training-time method.

    name: its registry name, the ``qgf-lite train --<name>`` flag and the prefix of its metrics and options.
    options: its config dataclass (frozen; every field has a default and ``metadata["help"]``, and becomes the
      ``qgf-lite train --<name>-<field>`` flag); ``options.validate()`` may normalise and check it.
    build: (config, options) -> the flax module of its network.
    init_inputs: (config, options) -> the example inputs of ``module.init`` after the key.
    loss: (module, params, ctx) -> (scalar loss, {metric: value}); metrics are reported as ``<name>_<metric>``
      and the loss as ``<name>_loss``.
    key_tag: folded into the init key and each step's flow-matching key, so that the learner's randomness is its
      own and enabling it changes no other key (a number far from the small integers ``split`` folds in).
    samplers: name -> keyword arguments of ``qgf_lite.samplers.SamplerMethod`` (its ``network`` is this learner).
    architecture: (config, options) -> what a checkpoint's arrays depend on, compared when loading.
    summary: one line, the help of the ``--<name>`` flag.
    """

    name: str
    options: type
    build: Callable
    init_inputs: Callable
    loss: Callable
    key_tag: int
    samplers: Mapping[str, dict] = dataclasses.field(default_factory=dict)
    architecture: Callable = lambda config, options: {}
    summary: str = ""
    label: str = ""  # how errors and tables name the method ("CFG-RL")
    noun: str = "network"  # what its parameters are ("one-step policy"), for error messages

    @property
    def network_text(self) -> str:
        """ "a CFG-RL network", "an FQL one-step policy": the learner's network in an error message."""
        article = "an" if self.label[:1] in tuple("AEFHILMNORSX") else "a"
        return f"{article} {self.label} {self.noun}"


def learner_names() -> tuple[str, ...]:
    return tuple(BUILTIN_LEARNERS)


def get_learner(name: str) -> Learner:
    """The registered learner ``name``; a ValueError names the choices."""
    if name not in BUILTIN_LEARNERS:
        raise ValueError(f"Unknown learner {name!r}; the learners are {', '.join(map(repr, BUILTIN_LEARNERS))}.")
    if name not in _LOADED:
        learner = importlib.import_module(BUILTIN_LEARNERS[name]).LEARNER
        if learner.name != name:
            raise RuntimeError(f"{BUILTIN_LEARNERS[name]}.LEARNER is named {learner.name!r}, registered as {name!r}.")
        _LOADED[name] = learner
    return _LOADED[name]


def options_name(options) -> str:
    """The learner name of a learner config instance (its class's ``learner`` attribute)."""
    name = getattr(type(options), "learner", None)
    if name not in BUILTIN_LEARNERS or get_learner(name).options is not type(options):
        raise TypeError(
            f"{options!r} is not the config of a registered learner "
            f"({', '.join(f'{n}: {get_learner(n).options.__name__}' for n in BUILTIN_LEARNERS)})."
        )
    return name


def learner_field(default, help: str):
    """A learner-config field with its help text (the ``qgf-lite train --<learner>-<field>`` flag's)."""
    return dataclasses.field(default=default, metadata={"help": help})


CRITIC_CHOICES = ("target", "online")  # which critic a learner reads; the same values as every sampler's `critic`


def check_number(name: str, value, *, minimum=None, why: str = "") -> float:
    """``value`` as a float: a TypeError for a non-number, a ValueError for a non-finite one (or one below
    ``minimum``, with ``why`` it must not be)."""
    import math
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number, got {value!r} ({type(value).__name__}).")
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}{f' ({why})' if why else ''}, got {value!r}.")
    return float(value)


def check_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, choices))}, got {value!r}.")
    return value


def check_bool(name: str, value) -> bool:
    import numpy as np

    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)


__all__ = [
    "BUILTIN_LEARNERS",
    "CRITIC_CHOICES",
    "Learner",
    "LearnerContext",
    "check_bool",
    "check_choice",
    "check_number",
    "get_learner",
    "learner_field",
    "learner_names",
    "options_name",
]
