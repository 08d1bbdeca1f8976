"""Training BC (flow matching) and IQL side by side, never coupled (docs/algorithm.md §2-§3), plus learners.

- ``QGFConfig``: every size and hyper-parameter of the core (BC flow, IQL critic and value), frozen (it is a static
  argument of the jitted functions), and ``learners``: the training-time methods trained beside it, each with its
  options (``qgf_lite.learners``: CFG-RL, FQL, ...). ``QGFConfig(cfgrl=True, cfgrl_threshold=...)`` and
  ``fql=True``/``fql_*`` (0.2's fields) still work: they enable the learner and set its options.
- ``TrainState``: the three core networks' parameters, their Adam states, the target critic, a PRNG key, and
  ``learners``: name -> {"params", "opt_state"} of every enabled learner (``state.cfgrl_params`` /
  ``state.fql_opt_state`` ... read them under 0.2's names).
- ``train_step``: one update of policy, critic and value from one batch, then one of every enabled learner, which
  reads the core networks as constants (docs/algorithm.md §5).
- ``train_steps``: many updates inside one ``jax.lax.scan``, minibatches sampled on the device.
- ``guidance_critic_params``: which critic the samplers guide with (the target one unless asked otherwise).
- ``fit``: the host loop around ``train_steps`` with a progress bar; states with a leading seed axis
  (from ``init_train_states``) train several seeds at once with ``jax.vmap``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from qgf_lite.data import TransitionDataset, sample_chunk_batch
from qgf_lite.flow import flow_matching_loss
from qgf_lite.iql import critic_loss, polyak_update, q_target, value_loss
from qgf_lite.learners import CRITIC_CHOICES, LearnerContext, check_bool, get_learner, learner_names, options_name
from qgf_lite.networks import CriticEnsemble, ValueNet, VelocityField
from qgf_lite.validation import require_positive_int


def _field(default, help: str):
    """A QGFConfig field with its help text: ``qgf-lite train`` builds one flag per field from these."""
    return dataclasses.field(default=default, metadata={"help": help})


def legacy_option_names() -> dict:
    """0.2's flat learner options, "<learner>_<option>" -> (learner, option): ``cfgrl_threshold``, ``fql_alpha``..."""
    return {
        f"{name}_{f.name}": (name, f.name)
        for name in learner_names()
        for f in dataclasses.fields(get_learner(name).options)
    }


@dataclasses.dataclass(frozen=True)
class QGFConfig:
    """Sizes and hyper-parameters of the core (docs/algorithm.md §2-§4). The defaults are the reference code's
    (``QGFConfig.official_defaults``: 4 x 512, batch 256); ``QGFConfig.paper`` is the paper's larger setting.

    Every field but obs_dim/action_dim (set by the dataset) and ``learners`` is a ``qgf-lite train`` flag, with the
    help text of its ``metadata["help"]``. ``learners`` is a tuple of learner configs (``CFGRLConfig(...)``,
    ``FQLConfig(...)``, see ``qgf_lite.learners``), at most one per learner; each learner's options are the flags
    ``--<learner>-<option>`` and ``--<learner>`` enables it. The keywords ``<learner>=True/False`` and
    ``<learner>_<option>=...`` (0.2's fields, e.g. ``cfgrl=True, cfgrl_threshold=0.1``) enable a learner and set
    its options, and read back as attributes (``config.fql``, ``config.fql_alpha``).
    """

    obs_dim: int
    action_dim: int  # per environment step; the policy outputs horizon * action_dim
    horizon: int = _field(5, "action chunk length H: environment steps per policy call")
    actor_hidden: tuple[int, ...] = _field((512, 512, 512, 512), "hidden layer widths of the velocity network")
    critic_hidden: tuple[int, ...] = _field((512, 512, 512, 512), "hidden layer widths of each Q network")
    value_hidden: tuple[int, ...] = _field((512, 512, 512, 512), "hidden layer widths of the value network")
    num_critics: int = _field(2, "Q networks in the ensemble; guidance and the value use their minimum")
    layer_norm: bool = _field(True, "LayerNorm after every hidden layer")
    time_emb_dim: int = _field(32, "size of the velocity network's sinusoidal flow-time embedding")
    learning_rate: float = _field(3e-4, "Adam learning rate of all three networks")
    discount: float = _field(0.99, "per-step discount gamma; a chunk bootstraps with gamma^H")
    expectile: float = _field(0.9, "IQL expectile tau of the value regression, in (0, 1)")
    target_update_rate: float = _field(0.005, "Polyak rate rho of the target critic, in (0, 1]")
    batch_size: int = _field(256, "action chunks per minibatch")
    flow_steps: int = _field(10, "Euler steps of the samplers; evaluation uses it unless told otherwise")
    time_grid: int | None = _field(
        10, "training draws flow times from a grid of this many points; None: uniform on [0, 1]"
    )
    learners: tuple[Any, ...] = _field((), "the training-time learners trained beside the core, with their options")

    def __post_init__(self):
        for name in ("actor_hidden", "critic_hidden", "value_hidden"):
            object.__setattr__(self, name, tuple(int(w) for w in getattr(self, name)))
        require_positive_int("obs_dim", self.obs_dim, minimum=0)
        for name in ("action_dim", "horizon", "num_critics", "batch_size", "flow_steps", "time_emb_dim"):
            require_positive_int(name, getattr(self, name))
        if self.time_grid is not None:
            require_positive_int("time_grid", self.time_grid)
        if not 0.0 < self.discount <= 1.0:
            raise ValueError(f"`discount` must be in (0, 1], got {self.discount}.")
        if not 0.0 < self.expectile < 1.0:
            raise ValueError(f"`expectile` must be in (0, 1), got {self.expectile}.")
        if not 0.0 < self.target_update_rate <= 1.0:
            raise ValueError(f"`target_update_rate` must be in (0, 1], got {self.target_update_rate}.")
        if not self.learning_rate > 0:
            raise ValueError(f"`learning_rate` must be > 0, got {self.learning_rate}.")
        if isinstance(self.learners, Mapping):  # {name: options or {option: value}}, as to_dict writes it
            object.__setattr__(
                self,
                "learners",
                tuple(
                    o if not isinstance(o, Mapping) else get_learner(name).options(**o)
                    for name, o in self.learners.items()
                ),
            )
        if isinstance(self.learners, (str, bytes)) or not isinstance(self.learners, (tuple, list)):
            raise TypeError(
                f"`learners` must be a tuple of learner configs (or a dict name -> options), got {self.learners!r}."
            )
        names = [options_name(options) for options in self.learners]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"`learners` names {', '.join(repeated)} more than once; give each learner one config.")
        order = learner_names()  # one canonical order, so that equal configs compare and hash equal
        object.__setattr__(self, "learners", tuple(sorted(self.learners, key=lambda o: order.index(options_name(o)))))

    def __getattr__(self, name):
        # Only called for names that are not fields: 0.2's `config.cfgrl`, `config.fql_alpha`, ...
        if name.startswith("__") or "learners" not in self.__dict__:
            raise AttributeError(name)
        if name in learner_names():
            return self.learner_options(name) is not None
        legacy = legacy_option_names().get(name)
        if legacy is None:
            raise AttributeError(f"'QGFConfig' object has no attribute {name!r}")
        learner, option = legacy
        options = self.learner_options(learner)
        return getattr(get_learner(learner).options() if options is None else options, option)

    def learner_options(self, name: str):
        """The options of the enabled learner ``name``, or None when it is not enabled."""
        return next((o for o in self.learners if options_name(o) == name), None)

    @property
    def learner_names(self) -> tuple[str, ...]:
        """The enabled learners' names, in training order."""
        return tuple(options_name(o) for o in self.learners)

    @property
    def fql_hidden_dims(self) -> tuple[int, ...]:
        """The FQL one-step policy's hidden widths: ``fql_hidden``, or ``actor_hidden`` when it is empty (0.2)."""
        return self.fql_hidden or self.actor_hidden

    @property
    def chunk_dim(self) -> int:
        """Size of one flattened action chunk: what the policy samples and the critic scores."""
        return self.horizon * self.action_dim

    @classmethod
    def preset(cls, name: str, obs_dim: int, action_dim: int, **overrides) -> QGFConfig:
        """The named setting ``PRESETS[name]`` for a dataset of these sizes; ``overrides`` (fields) win over it."""
        return cls(obs_dim=obs_dim, action_dim=action_dim, **{**preset_fields(name), **overrides})

    @classmethod
    def paper(cls, obs_dim: int, action_dim: int, **overrides) -> QGFConfig:
        """The paper's OGBench runs: 4 x 1024 networks, batch 1024, discount 0.999, H = 5, expectile 0.9, 10 flow
        steps (trained for ``PRESET_STEPS["paper"]`` = 500k steps; docs/algorithm.md "Presets")."""
        return cls.preset("paper", obs_dim, action_dim, **overrides)

    @classmethod
    def official_defaults(cls, obs_dim: int, action_dim: int, **overrides) -> QGFConfig:
        """The reference code's agent defaults with H = 5 chunks: 4 x 512 networks, batch 256, discount 0.99 (the
        field defaults of this class; docs/algorithm.md "Presets")."""
        return cls.preset("official-defaults", obs_dim, action_dim, **overrides)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """Every keyword the constructor takes besides ``learners``: the core fields, then each learner's name and
        its ``<learner>_<option>`` names."""
        core = tuple(f.name for f in dataclasses.fields(cls) if f.name != "learners")
        return core + tuple(learner_names()) + tuple(legacy_option_names())

    def to_dict(self) -> dict:
        """The core fields, and ``learners``: {name: {option: value}} of the enabled learners."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "learners"}
        d["learners"] = {options_name(o): dataclasses.asdict(o) for o in self.learners}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> QGFConfig:
        """Inverse of ``to_dict``; also reads 0.2's flat dicts (``cfgrl``, ``cfgrl_threshold``, ``fql_alpha``...),
        where the options of a learner that is off are ignored (0.2 stored them for every run)."""
        d = dict(d)
        known = set(cls.option_names()) | {"learners"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown QGFConfig field(s) {unknown}.")
        learners = d.pop("learners", {}) or {}
        if not isinstance(learners, dict):
            raise ValueError(f"`learners` must map learner names to their options, got {learners!r}.")
        options = [get_learner(name).options(**dict(values)) for name, values in learners.items()]
        enabled = set(learners) | {name for name in learner_names() if d.get(name)}
        for key, (name, _) in legacy_option_names().items():
            if key in d and name not in enabled:
                del d[key]
        for name in learner_names():
            if name in d and not d[name]:
                del d[name]
        return cls(**d, learners=tuple(options))


# Named settings (docs/algorithm.md "Presets"): field values over QGFConfig's defaults, and the training steps of
# each (not a config field: `qgf-lite train --preset` uses it as the default of --steps).
PRESETS = {
    "paper": dict(
        actor_hidden=(1024,) * 4,
        critic_hidden=(1024,) * 4,
        value_hidden=(1024,) * 4,
        batch_size=1024,
        discount=0.999,
        horizon=5,
        expectile=0.9,
        flow_steps=10,
        time_grid=10,
    ),
    "official-defaults": dict(
        actor_hidden=(512,) * 4,
        critic_hidden=(512,) * 4,
        value_hidden=(512,) * 4,
        batch_size=256,
        discount=0.99,
        horizon=5,
        expectile=0.9,
        flow_steps=10,
        time_grid=10,
    ),
}
PRESET_STEPS = {"paper": 500_000, "official-defaults": 1_000_000}


def preset_fields(name: str) -> dict:
    """The QGFConfig fields preset ``name`` sets, or a ValueError naming the presets."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return dict(PRESETS[name])


_dataclass_init = QGFConfig.__init__


def _init_with_legacy_keywords(self, *args, **kwargs):
    # 0.2's keywords: `<learner>=bool` enables or disables a learner, `<learner>_<option>=value` sets an option.
    enable = {name: kwargs.pop(name) for name in learner_names() if name in kwargs}
    legacy = {key: kwargs.pop(key) for key in list(kwargs) if key in legacy_option_names()}
    if enable or legacy:
        kwargs["learners"] = _merge_learners(kwargs.get("learners", ()), enable, legacy)
    _dataclass_init(self, *args, **kwargs)


_init_with_legacy_keywords.__doc__ = _dataclass_init.__doc__
_init_with_legacy_keywords.__signature__ = __import__("inspect").signature(_dataclass_init)
QGFConfig.__init__ = _init_with_legacy_keywords


def _merge_learners(learners, enable: dict, legacy: dict) -> tuple:
    """``learners`` with 0.2's keywords applied: ``enable`` {learner: bool}, ``legacy`` {"<learner>_<option>": value}."""
    current = {options_name(o): o for o in learners}
    for name, on in enable.items():
        if check_bool(name, on):
            current.setdefault(name, get_learner(name).options())
        else:
            current.pop(name, None)
    grouped: dict = {}
    for key, value in legacy.items():
        name, option = legacy_option_names()[key]
        grouped.setdefault(name, {})[option] = value
    for name, values in grouped.items():
        base = current.get(name, get_learner(name).options())
        updated = dataclasses.replace(base, **values)  # checks the values, naming `<learner>_<option>`
        if name not in current:
            raise ValueError(
                f"{', '.join(f'`{name}_{k}`' for k in values)} set(s) options of the {name} learner, "
                f"which this config does not train: add {name}=True (`qgf-lite train --{name}`) or "
                f"leave the option out."
            )
        current[name] = updated
    return tuple(current.values())


def build_networks(config: QGFConfig):
    """The (velocity, critic, value) flax modules described by ``config``."""
    actor = VelocityField(config.chunk_dim, config.actor_hidden, config.time_emb_dim, config.layer_norm)
    critic = CriticEnsemble(config.critic_hidden, config.num_critics, config.layer_norm)
    value = ValueNet(config.value_hidden, config.layer_norm)
    return actor, critic, value


def _options_or_default(config: QGFConfig, name: str):
    options = config.learner_options(name)
    return get_learner(name).options() if options is None else options


def build_learner_network(config: QGFConfig, name: str):
    """The flax module of learner ``name`` (with its options in ``config``, or its defaults when it is off)."""
    return get_learner(name).build(config, _options_or_default(config, name))


def build_cfgrl_network(config: QGFConfig):
    """0.2's name for ``build_learner_network(config, "cfgrl")``: CFG-RL's label-conditioned velocity network."""
    return build_learner_network(config, "cfgrl")


def build_fql_network(config: QGFConfig):
    """0.2's name for ``build_learner_network(config, "fql")``: FQL's one-step policy mu(s, z)."""
    return build_learner_network(config, "fql")


def make_optimizer(config: QGFConfig) -> optax.GradientTransformation:
    return optax.adam(config.learning_rate)


# A learner's PRNG keys are folded out of the keys the core networks use, under its ``key_tag``, so that turning it
# on changes no other key: policy, critic and value train exactly as without it. (split(k, n)[i] is fold_in(k, i)
# in jax, hence tags far from small integers.)
CFGRL_KEY_TAG = get_learner("cfgrl").key_tag
FQL_KEY_TAG = get_learner("fql").key_tag

_STATE_SUFFIXES = ("_params", "_opt_state")


@flax.struct.dataclass
class TrainState:
    """Every array of a run: the core networks' and, in ``learners``, each enabled learner's
    {"params": ..., "opt_state": ...}. ``state.<learner>_params`` / ``state.<learner>_opt_state`` (0.2's fields,
    e.g. ``state.fql_params``) read them, and are empty dicts for a learner the run does not train."""

    step: jnp.ndarray
    rng: jnp.ndarray
    policy_params: dict
    critic_params: dict
    target_critic_params: dict
    value_params: dict
    policy_opt_state: optax.OptState
    critic_opt_state: optax.OptState
    value_opt_state: optax.OptState
    learners: dict = flax.struct.field(default_factory=dict)

    def __getattr__(self, name):
        # Only called for names that are not fields: 0.2's `cfgrl_params`, `fql_opt_state`, ...
        for suffix in _STATE_SUFFIXES:
            learner = name[: -len(suffix)]
            if name.endswith(suffix) and learner in learner_names() and "learners" in self.__dict__:
                return self.learners.get(learner, {}).get(suffix[1:], {})
        raise AttributeError(f"'TrainState' object has no attribute {name!r}")


def init_train_state(config: QGFConfig, key) -> TrainState:
    """Fresh parameters and optimiser states; the target critic starts as a copy of the critic."""
    return _init_train_state_compiled(config, key)


@functools.partial(jax.jit, static_argnums=0)
def _init_train_state_compiled(config: QGFConfig, key) -> TrainState:
    # Compiled: run op by op, initialising the paper networks takes seconds on a CPU.
    actor, critic, value = build_networks(config)
    rng, k_actor, k_critic, k_value = jax.random.split(key, 4)
    obs = jnp.zeros((1, config.obs_dim))
    act = jnp.zeros((1, config.chunk_dim))
    policy_params = actor.init(k_actor, obs, act, jnp.zeros((1,)))
    critic_params = critic.init(k_critic, obs, act)
    value_params = value.init(k_value, obs)
    opt = make_optimizer(config)
    learners = {}
    for options in config.learners:
        learner = get_learner(options_name(options))
        params = learner.build(config, options).init(
            jax.random.fold_in(key, learner.key_tag), *learner.init_inputs(config, options)
        )
        learners[learner.name] = {"params": params, "opt_state": opt.init(params)}
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        rng=rng,
        policy_params=policy_params,
        critic_params=critic_params,
        target_critic_params=critic_params,
        value_params=value_params,
        policy_opt_state=opt.init(policy_params),
        critic_opt_state=opt.init(critic_params),
        value_opt_state=opt.init(value_params),
        learners=learners,
    )


def seed_keys(seeds: Sequence[int]) -> jnp.ndarray:
    """One PRNG key per integer seed, stacked: (num_seeds, 2)."""
    return jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])


def init_train_states(config: QGFConfig, seeds: Sequence[int]) -> TrainState:
    """States for several seeds at once, each leaf with a leading seed axis (train them with ``fit``)."""
    return jax.vmap(functools.partial(init_train_state, config))(seed_keys(seeds))


def velocity_fn(config: QGFConfig, policy_params) -> Callable:
    """The trained velocity as a plain function (obs, a, t) -> v for the samplers."""
    actor = build_networks(config)[0]
    return functools.partial(actor.apply, policy_params)


def learner_fn(config: QGFConfig, name: str, params) -> Callable:
    """Learner ``name``'s trained network as a plain function (its module's ``apply`` on ``params``)."""
    learner = get_learner(name)
    if not jax.tree_util.tree_leaves(params):
        raise ValueError(
            f"`{name}_params` is empty: this state has no {learner.label} {learner.noun}; train with "
            f"QGFConfig({name}=True) (`qgf-lite train --{name}`)."
        )
    return functools.partial(build_learner_network(config, name).apply, params)


def cfgrl_velocity_fn(config: QGFConfig, cfgrl_params) -> Callable:
    """The trained CFG-RL network as a plain function (obs, a, t, label) -> v, for ``qgf_lite.cfgrl.cfgrl_sample``.

    Pass ``state.cfgrl_params`` of a state trained with ``QGFConfig(cfgrl=True)``; label 0 is the unconditional
    branch, 1 the positive one. (``learner_fn(config, "cfgrl", params)``.)
    """
    return learner_fn(config, "cfgrl", cfgrl_params)


def fql_policy_fn(config: QGFConfig, fql_params) -> Callable:
    """FQL's trained one-step policy as a plain function (obs, noise) -> actions (unclipped), for
    ``qgf_lite.fql.fql_sample``. Pass ``state.fql_params`` of a state trained with ``QGFConfig(fql=True)``.
    (``learner_fn(config, "fql", params)``.)"""
    return learner_fn(config, "fql", fql_params)


VELOCITY_NETWORKS = ("policy",) + learner_names()


def sampler_velocity_params(state: TrainState, network: str = "policy"):
    """The parameters of the network a sampler runs: the BC flow ("policy") or a learner's (its name: "cfgrl",
    "fql", ...)."""
    if network not in VELOCITY_NETWORKS:
        raise ValueError(f"`network` must be one of {VELOCITY_NETWORKS}, got {network!r}.")
    if network == "policy":
        return state.policy_params
    params = state.learners.get(network, {}).get("params", {})
    if not jax.tree_util.tree_leaves(params):
        learner = get_learner(network)
        raise ValueError(
            f"The {learner.label} sampler needs {learner.network_text}, and this state has none: train "
            f"with QGFConfig({network}=True) (`qgf-lite train --{network}`)."
        )
    return params


def sampler_velocity_fn(config: QGFConfig, params, network: str = "policy") -> Callable:
    """``velocity_fn`` of ``params``, or ``learner_fn`` for a learner's network, as ``SamplerSpec.network`` names it
    (FQL's is the one-step policy (obs, noise) -> actions, which its runner calls once)."""
    return velocity_fn(config, params) if network == "policy" else learner_fn(config, network, params)


def critic_fn(config: QGFConfig, critic_params) -> Callable:
    """min_i Q_i(s, a) of the ensemble as a plain function (obs, a) -> (batch,), as guidance uses it.

    For guidance pass ``guidance_critic_params(state)`` (the target critic), not ``state.critic_params``.
    """
    critic = build_networks(config)[1]
    return lambda obs, actions: jnp.min(critic.apply(critic_params, obs, actions), axis=0)


# CRITIC_CHOICES (from qgf_lite.learners): the values of every sampler's `critic` option; the first is the default


def check_critic(critic: str) -> str:
    """``critic`` itself if it is "target" or "online", else a ValueError naming the choices."""
    if critic not in CRITIC_CHOICES:
        raise ValueError(f"`critic` must be one of {', '.join(map(repr, CRITIC_CHOICES))}, got {critic!r}.")
    return critic


def guidance_critic_params(state: TrainState, critic: str = "target"):
    """The critic parameters a guided sampler differentiates: the Polyak target copy unless ``critic="online"``.

    The paper and the reference code guide with min_i Qbar_i, the slowly moving average of the critic
    (docs/algorithm.md §4); the online ``critic_params`` follow each minibatch and are offered for comparison.
    Wrap the result with ``critic_fn``. Every sampler that guides from a train state picks its critic here.
    """
    return state.target_critic_params if check_critic(critic) == "target" else state.critic_params


def value_fn(config: QGFConfig, value_params) -> Callable:
    value = build_networks(config)[2]
    return functools.partial(value.apply, value_params)


def train_step(config: QGFConfig, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    """One update of the policy (flow matching), critic (TD to R + gamma^H V) and value (expectile of Qbar), then
    one of every learner in ``config.learners``.

    All three core losses see the same batch and are differentiated with respect to their own parameters only:
    the policy never sees the critic.

    Each learner takes one Adam step of its loss (``Learner.loss``) on the same batch, given a ``LearnerContext``:
    the core networks' parameters before this step's update, the online and target critics' Q and the value on the
    batch (all constants), and a key ``fold_in(flow_key, learner.key_tag)``. Its gradients reach only its own
    parameters, so every other field of the new state is what it is without the learner. CFG-RL
    (``qgf_lite.cfgrl``) weights its positive branch by 1[min_i Q_i - V > threshold]; FQL (``qgf_lite.fql``)
    distils the BC flow's Euler sample while maximising the critic (which stays the IQL critic; docs/algorithm.md
    §5). Metrics: the core's, and ``<learner>_loss``, ``<learner>_<metric>`` of each learner.
    """
    for name in config.learner_names:
        if name not in state.learners:
            learner = get_learner(name)
            raise ValueError(
                f"config.{name} is True but the state has no {learner.label} {learner.noun}: initialise "
                f"it with init_train_state(config, key) for this config."
            )
    actor, critic, value = build_networks(config)
    opt = make_optimizer(config)
    rng, flow_key = jax.random.split(state.rng)
    obs, actions = batch["observations"], batch["actions"]
    chunk_ok = batch["valid"][:, -1]  # the chunk lies inside one episode

    def policy_objective(params):
        return flow_matching_loss(
            functools.partial(actor.apply, params), obs, actions, flow_key, config.time_grid, weights=chunk_ok
        )

    next_v = value.apply(state.value_params, batch["next_observations"])
    target = q_target(batch["returns"], batch["bootstrap_mask"], next_v, config.discount, config.horizon)

    def critic_objective(params):
        q = critic.apply(params, obs, actions)
        return critic_loss(q, target, chunk_ok), q

    target_q = critic.apply(state.target_critic_params, obs, actions)

    def value_objective(params):
        v = value.apply(params, obs)
        return value_loss(target_q, v, config.expectile), v

    policy_l, policy_grads = jax.value_and_grad(policy_objective)(state.policy_params)
    (critic_l, q), critic_grads = jax.value_and_grad(critic_objective, has_aux=True)(state.critic_params)
    (value_l, v), value_grads = jax.value_and_grad(value_objective, has_aux=True)(state.value_params)
    metrics = {
        "policy_loss": policy_l,
        "critic_loss": critic_l,
        "value_loss": value_l,
        "q_mean": jnp.mean(q),
        "v_mean": jnp.mean(v),
    }
    learners = dict(state.learners)
    for options in config.learners:
        learner = get_learner(options_name(options))
        context = LearnerContext(
            config=config,
            options=options,
            obs=obs,
            actions=actions,
            valid=chunk_ok,
            key=jax.random.fold_in(flow_key, learner.key_tag),
            actor=actor,
            critic=critic,
            value=value,
            policy_params=state.policy_params,
            critic_params=state.critic_params,
            target_critic_params=state.target_critic_params,
            value_params=state.value_params,
            q=q,
            target_q=target_q,
            v=v,
        )
        learners[learner.name], learner_metrics = learner_update(
            config, learner.name, state.learners[learner.name], context
        )
        metrics.update(learner_metrics)

    def apply(grads, opt_state, params):
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    policy_params, policy_opt_state = apply(policy_grads, state.policy_opt_state, state.policy_params)
    critic_params, critic_opt_state = apply(critic_grads, state.critic_opt_state, state.critic_params)
    value_params, value_opt_state = apply(value_grads, state.value_opt_state, state.value_params)
    new_state = state.replace(
        step=state.step + 1,
        rng=rng,
        policy_params=policy_params,
        critic_params=critic_params,
        target_critic_params=polyak_update(state.target_critic_params, critic_params, config.target_update_rate),
        value_params=value_params,
        policy_opt_state=policy_opt_state,
        critic_opt_state=critic_opt_state,
        value_opt_state=value_opt_state,
        learners=learners,
    )
    return new_state, metrics


def learner_update(config: QGFConfig, name: str, entry: dict, context: LearnerContext):
    """One Adam step of learner ``name`` from its state ``entry`` {"params", "opt_state"}: (new entry, metrics with
    the learner's name as prefix)."""
    learner = get_learner(name)
    module = learner.build(config, context.options)
    opt = make_optimizer(config)
    (loss, parts), grads = jax.value_and_grad(lambda p: learner.loss(module, p, context), has_aux=True)(entry["params"])
    updates, opt_state = opt.update(grads, entry["opt_state"], entry["params"])
    metrics = {f"{name}_loss": loss, **{f"{name}_{k}": value for k, value in parts.items()}}
    return {"params": optax.apply_updates(entry["params"], updates), "opt_state": opt_state}, metrics


def sample_and_train_step(config: QGFConfig, state: TrainState, dataset: TransitionDataset, data_sharding=None):
    """Draw a minibatch on the device from the state's key, then take one ``train_step``."""
    rng, batch_key = jax.random.split(state.rng)
    batch = sample_chunk_batch(dataset, batch_key, config.batch_size, config.horizon, config.discount)
    if data_sharding is not None:
        # Data parallel: each device holds a slice of the batch; the replicated parameters see summed grads.
        batch = jax.lax.with_sharding_constraint(batch, data_sharding)
    return train_step(config, state.replace(rng=rng), batch)


def train_steps(config: QGFConfig, state: TrainState, dataset: TransitionDataset, num_steps: int, data_sharding=None):
    """``num_steps`` updates inside one ``lax.scan``; returns the new state and per-step metrics (num_steps,)."""

    def body(s, _):
        return sample_and_train_step(config, s, dataset, data_sharding)

    return jax.lax.scan(body, state, None, length=num_steps)


@functools.lru_cache(maxsize=64)
def _compiled_train_steps(config: QGFConfig, num_steps: int, multi_seed: bool, data_sharding):
    fn = functools.partial(train_steps, config, num_steps=num_steps, data_sharding=data_sharding)
    if multi_seed:
        fn = jax.vmap(fn, in_axes=(0, None))
    return jax.jit(fn)


def compiled_train_steps(config: QGFConfig, num_steps: int, multi_seed: bool = False, data_sharding=None):
    """The jitted (state, dataset) -> (state, metrics) for ``num_steps`` steps, built once per setting."""
    return _compiled_train_steps(config, int(num_steps), bool(multi_seed), data_sharding)


def is_multi_seed(state: TrainState) -> bool:
    return jnp.ndim(state.step) == 1


def data_parallel_sharding(devices=None):
    """A sharding that splits the batch axis over ``devices`` (default: all local devices), or None for one."""
    devices = jax.local_devices() if devices is None else list(devices)
    if len(devices) < 2:
        return None
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    return NamedSharding(Mesh(np.array(devices), ("data",)), PartitionSpec("data"))


def fit(
    config: QGFConfig,
    state: TrainState,
    dataset: TransitionDataset,
    num_steps: int,
    *,
    chunk_size: int = 1000,
    progress: bool = True,
    callback: Callable | None = None,
    data_sharding=None,
    desc: str = "training",
    rotate_every: int | None = None,
):
    """Train for ``num_steps`` updates in compiled chunks of ``chunk_size`` scan steps.

    ``dataset`` is a ``TransitionDataset``, or a ``qgf_lite.streaming.SliceStream`` of a dataset larger than the
    device's memory: then training moves to the next slice every ``rotate_every`` steps (default 1000; chunks are
    cut at those boundaries), the slice after it loading in the background meanwhile, and each record says which
    slice its chunk trained on (``"slice"``). The slice of a step depends only on the step count, so a resumed run
    trains on the same slices.

    A state whose leaves have a leading seed axis (``init_train_states``) trains every seed at once.
    ``callback(state, metrics)`` runs after each chunk with the chunk's mean metrics (host floats, one
    value per seed for multi-seed states); return True from it to stop early. ``data_sharding`` (see
    ``data_parallel_sharding``) splits each batch across devices.

    Returns (state, history) with history a list of dicts {"step": ..., metric: mean over the chunk}.
    """
    from qgf_lite.progress import progress_bar as tqdm
    from qgf_lite.streaming import SliceStream, slice_for_step

    num_steps = require_positive_int("num_steps", num_steps)
    chunk_size = require_positive_int("chunk_size", chunk_size)
    stream = dataset if isinstance(dataset, SliceStream) else None
    if stream is None and not isinstance(dataset, TransitionDataset):
        raise TypeError(
            f"`dataset` must be a TransitionDataset (see qgf_lite.make_dataset) or a "
            f"qgf_lite.streaming.SliceStream, got {type(dataset).__name__}."
        )
    if stream is not None:
        rotate_every = require_positive_int("rotate_every", 1000 if rotate_every is None else rotate_every)
    if dataset.obs_dim != config.obs_dim or dataset.action_dim != config.action_dim:
        raise ValueError(
            f"The dataset has obs_dim={dataset.obs_dim}, action_dim={dataset.action_dim} but the config expects "
            f"obs_dim={config.obs_dim}, action_dim={config.action_dim}."
        )
    if dataset.size < config.horizon:
        raise ValueError(
            f"The dataset has {dataset.size} transitions, fewer than one chunk (horizon {config.horizon})."
        )
    if data_sharding is not None and config.batch_size % len(data_sharding.device_set) != 0:
        raise ValueError(
            f"batch_size {config.batch_size} must divide evenly over {len(data_sharding.device_set)} devices."
        )
    multi = is_multi_seed(state)
    history = []
    done = 0
    start_step = int(np.max(np.asarray(state.step)))
    if stream is not None:
        stream.seek(slice_for_step(start_step, rotate_every, stream.num_slices))
    bar = tqdm(total=num_steps, desc=desc, disable=not progress, leave=False)
    try:
        while done < num_steps:
            n = min(chunk_size, num_steps - done)
            data = dataset
            if stream is not None:  # a chunk never spans two slices
                n = min(n, rotate_every - (start_step + done) % rotate_every)
                data, slice_index = stream.current, stream.index
            state, metrics = compiled_train_steps(config, n, multi, data_sharding)(state, data)
            del data  # the stream alone decides how long a slice stays in memory
            axis = 1 if multi else 0
            means = {k: np.asarray(jnp.mean(v, axis=axis)) for k, v in metrics.items()}  # waits for the chunk
            done += n
            record = {"step": int(np.max(np.asarray(state.step)))}
            if stream is not None:
                record["slice"] = slice_index
                if (start_step + done) % rotate_every == 0 and done < num_steps:
                    stream.advance()  # the chunk has finished with the old slice; the next one is (usually) ready
            record.update({k: (v.tolist() if v.ndim else float(v)) for k, v in means.items()})
            history.append(record)
            bar.update(n)
            bar.set_postfix(
                {k: f"{float(np.mean(v)):.3g}" for k, v in means.items() if k.endswith("loss")}, refresh=False
            )
            if callback is not None and callback(state, record):
                break
    finally:
        bar.close()
    return state, history


def num_parameters(params) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


__all__ = [
    "build_cfgrl_network",
    "build_fql_network",
    "build_learner_network",
    "build_networks",
    "CFGRL_KEY_TAG",
    "cfgrl_velocity_fn",
    "check_critic",
    "compiled_train_steps",
    "critic_fn",
    "data_parallel_sharding",
    "fit",
    "FQL_KEY_TAG",
    "fql_policy_fn",
    "guidance_critic_params",
    "init_train_state",
    "init_train_states",
    "is_multi_seed",
    "learner_fn",
    "learner_update",
    "legacy_option_names",
    "make_optimizer",
    "num_parameters",
    "preset_fields",
    "PRESET_STEPS",
    "PRESETS",
    "QGFConfig",
    "sample_and_train_step",
    "sampler_velocity_fn",
    "sampler_velocity_params",
    "seed_keys",
    "train_step",
    "train_steps",
    "TrainState",
    "value_fn",
    "velocity_fn",
    "VELOCITY_NETWORKS",
]
