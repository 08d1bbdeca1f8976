"""Training BC (flow matching) and IQL side by side, never coupled (docs/algorithm.md §2-§3).

- ``QGFConfig``: every size and hyper-parameter, frozen (it is a static argument of the jitted functions).
- ``TrainState``: the three networks' parameters, their Adam states, the target critic and a PRNG key (and,
  with ``QGFConfig(cfgrl=True)``, the CFG-RL baseline's label-conditioned velocity network and its Adam state;
  with ``QGFConfig(fql=True)``, FQL's one-step policy and its Adam state).
- ``train_step``: one update of policy, critic and value from one batch (and of the CFG-RL network, which
  reads the critic and value as constants: docs/algorithm.md §5, ``qgf_lite.cfgrl``; and of FQL's one-step
  policy, which reads the BC flow and the critic as constants: ``qgf_lite.fql``).
- ``train_steps``: many updates inside one ``jax.lax.scan``, minibatches sampled on the device.
- ``guidance_critic_params``: which critic the samplers guide with (the target one unless asked otherwise).
- ``fit``: the host loop around ``train_steps`` with a progress bar; states with a leading seed axis
  (from ``init_train_states``) train several seeds at once with ``jax.vmap``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Callable, Optional, Sequence, Tuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from qgf_lite.cfgrl import advantages, cfgrl_loss, optimality_weights
from qgf_lite.data import TransitionDataset, sample_chunk_batch
from qgf_lite.flow import flow_matching_loss
from qgf_lite.fql import Q_AGGREGATES, OneStepPolicy, fql_loss
from qgf_lite.iql import critic_loss, polyak_update, q_target, value_loss
from qgf_lite.networks import ConditionedVelocityField, CriticEnsemble, ValueNet, VelocityField
from qgf_lite.validation import require_positive_int


def _field(default, help: str):
    """A QGFConfig field with its help text: ``qgf-lite train`` builds one flag per field from these."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class QGFConfig:
    """Sizes and hyper-parameters; defaults are the paper/reference ones (docs/algorithm.md §2-§4).

    Every field but obs_dim/action_dim (set by the dataset) is a ``qgf-lite train`` flag, with the help text
    of its ``metadata["help"]``.
    """

    obs_dim: int
    action_dim: int  # per environment step; the policy outputs horizon * action_dim
    horizon: int = _field(5, "action chunk length H: environment steps per policy call")
    actor_hidden: Tuple[int, ...] = _field((512, 512, 512, 512), "hidden layer widths of the velocity network")
    critic_hidden: Tuple[int, ...] = _field((512, 512, 512, 512), "hidden layer widths of each Q network")
    value_hidden: Tuple[int, ...] = _field((512, 512, 512, 512), "hidden layer widths of the value network")
    num_critics: int = _field(2, "Q networks in the ensemble; guidance and the value use their minimum")
    layer_norm: bool = _field(True, "LayerNorm after every hidden layer")
    time_emb_dim: int = _field(32, "size of the velocity network's sinusoidal flow-time embedding")
    learning_rate: float = _field(3e-4, "Adam learning rate of all three networks")
    discount: float = _field(0.99, "per-step discount gamma; a chunk bootstraps with gamma^H")
    expectile: float = _field(0.9, "IQL expectile tau of the value regression, in (0, 1)")
    target_update_rate: float = _field(0.005, "Polyak rate rho of the target critic, in (0, 1]")
    batch_size: int = _field(256, "action chunks per minibatch")
    flow_steps: int = _field(10, "Euler steps of the samplers; evaluation uses it unless told otherwise")
    time_grid: Optional[int] = _field(10, "training draws flow times from a grid of this many "
                                          "points; None: uniform on [0, 1]")
    cfgrl: bool = _field(False, "also train the CFG-RL baseline (docs/algorithm.md §5): a second velocity network, "
                                "conditioned on the optimality label 1[Q - V > threshold], from the same batches")
    cfgrl_threshold: float = _field(0.0, "CFG-RL: an action is labelled positive when Q(s, a) - V(s) exceeds this")
    cfgrl_uncond_weight: float = _field(1.0, "CFG-RL: loss weight (>= 0) of the unconditional (all data) branch")
    cfgrl_critic: str = _field("target", "CFG-RL: the critic whose ensemble minimum labels the data, target "
                                         "(the Polyak copy) or online")
    fql: bool = _field(False, "also train the FQL baseline (docs/algorithm.md §5): a one-step policy mu(s, z) that "
                              "maximises Q while distilling the BC flow, from the same batches")
    fql_alpha: float = _field(10.0, "FQL: weight (>= 0) of the distillation loss against the normalised Q loss")
    fql_hidden: Tuple[int, ...] = _field((), "FQL: hidden layer widths of the one-step policy; empty: the "
                                             "velocity network's (actor_hidden)")
    fql_critic: str = _field("online", "FQL: the critic the one-step policy maximises, online (as the FQL "
                                       "reference) or target (the Polyak copy)")
    fql_q_aggregate: str = _field("mean", "FQL: how the actor loss reduces the Q ensemble, mean (as the FQL "
                                          "reference) or min")
    fql_normalize_q: bool = _field(True, "FQL: divide the Q loss by the batch's mean |Q| (stop-gradient), as the "
                                         "FQL reference's normalize_q_loss")

    def __post_init__(self):
        for name in ("actor_hidden", "critic_hidden", "value_hidden", "fql_hidden"):
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
        if not isinstance(self.cfgrl, (bool, np.bool_)):
            raise TypeError(f"`cfgrl` must be True or False, got {self.cfgrl!r}.")
        object.__setattr__(self, "cfgrl", bool(self.cfgrl))
        for name in ("cfgrl_threshold", "cfgrl_uncond_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"`{name}` must be a number, got {value!r} ({type(value).__name__}).")
            if not math.isfinite(value):
                raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
            object.__setattr__(self, name, float(value))
        if self.cfgrl_uncond_weight < 0:
            raise ValueError(f"`cfgrl_uncond_weight` must be >= 0 (it weighs the unconditional branch's loss), "
                             f"got {self.cfgrl_uncond_weight!r}.")
        if self.cfgrl_critic not in CRITIC_CHOICES:
            raise ValueError(f"`cfgrl_critic` must be one of {', '.join(map(repr, CRITIC_CHOICES))}, "
                             f"got {self.cfgrl_critic!r}.")
        for name in ("fql", "fql_normalize_q"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"`{name}` must be True or False, got {getattr(self, name)!r}.")
            object.__setattr__(self, name, bool(getattr(self, name)))
        if isinstance(self.fql_alpha, bool) or not isinstance(self.fql_alpha, numbers.Real):
            raise TypeError(f"`fql_alpha` must be a number, got {self.fql_alpha!r} ({type(self.fql_alpha).__name__}).")
        if not math.isfinite(self.fql_alpha) or self.fql_alpha < 0:
            raise ValueError(f"`fql_alpha` must be a finite number >= 0 (the distillation weight), "
                             f"got {self.fql_alpha!r}.")
        object.__setattr__(self, "fql_alpha", float(self.fql_alpha))
        for width in self.fql_hidden:
            require_positive_int("fql_hidden", width)
        if self.fql_critic not in CRITIC_CHOICES:
            raise ValueError(f"`fql_critic` must be one of {', '.join(map(repr, CRITIC_CHOICES))}, "
                             f"got {self.fql_critic!r}.")
        if self.fql_q_aggregate not in Q_AGGREGATES:
            raise ValueError(f"`fql_q_aggregate` must be one of {', '.join(map(repr, Q_AGGREGATES))}, "
                             f"got {self.fql_q_aggregate!r}.")

    @property
    def fql_hidden_dims(self) -> Tuple[int, ...]:
        """The one-step policy's hidden widths: ``fql_hidden``, or ``actor_hidden`` when it is empty."""
        return self.fql_hidden or self.actor_hidden

    @property
    def chunk_dim(self) -> int:
        """Size of one flattened action chunk: what the policy samples and the critic scores."""
        return self.horizon * self.action_dim

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "QGFConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown QGFConfig field(s) {unknown}.")
        return cls(**d)


def build_networks(config: QGFConfig):
    """The (velocity, critic, value) flax modules described by ``config``."""
    actor = VelocityField(config.chunk_dim, config.actor_hidden, config.time_emb_dim, config.layer_norm)
    critic = CriticEnsemble(config.critic_hidden, config.num_critics, config.layer_norm)
    value = ValueNet(config.value_hidden, config.layer_norm)
    return actor, critic, value


def build_cfgrl_network(config: QGFConfig) -> ConditionedVelocityField:
    """The CFG-RL baseline's label-conditioned velocity network: the policy's shape plus a label input."""
    return ConditionedVelocityField(config.chunk_dim, config.actor_hidden, config.time_emb_dim, config.layer_norm)


def build_fql_network(config: QGFConfig) -> OneStepPolicy:
    """FQL's one-step policy mu(s, z): an MLP on concat[obs, noise] -> action chunk (``qgf_lite.fql``)."""
    return OneStepPolicy(config.chunk_dim, config.fql_hidden_dims, config.layer_norm)


def make_optimizer(config: QGFConfig) -> optax.GradientTransformation:
    return optax.adam(config.learning_rate)


# The CFG-RL network's PRNG keys are folded out of the keys the other networks use, under this tag, so that
# turning cfgrl on changes no other key: policy, critic and value train exactly as without it. (split(k, n)[i]
# is fold_in(k, i) in jax, hence a tag far from small integers.)
CFGRL_KEY_TAG = 0x43464752
FQL_KEY_TAG = 0x46514C31  # the same for FQL's initialisation and noise


@flax.struct.dataclass
class TrainState:
    """Every array of a run. ``cfgrl_params``/``cfgrl_opt_state`` are empty dicts unless ``config.cfgrl``, and
    ``fql_params``/``fql_opt_state`` unless ``config.fql``."""

    step: jnp.ndarray
    rng: jnp.ndarray
    policy_params: dict
    critic_params: dict
    target_critic_params: dict
    value_params: dict
    policy_opt_state: optax.OptState
    critic_opt_state: optax.OptState
    value_opt_state: optax.OptState
    cfgrl_params: dict = flax.struct.field(default_factory=dict)
    cfgrl_opt_state: optax.OptState = flax.struct.field(default_factory=dict)
    fql_params: dict = flax.struct.field(default_factory=dict)
    fql_opt_state: optax.OptState = flax.struct.field(default_factory=dict)


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
    cfgrl_params, cfgrl_opt_state = {}, {}
    if config.cfgrl:
        label = jnp.zeros((1,), jnp.int32)
        cfgrl_params = build_cfgrl_network(config).init(
            jax.random.fold_in(key, CFGRL_KEY_TAG), obs, act, jnp.zeros((1,)), label
        )
        cfgrl_opt_state = opt.init(cfgrl_params)
    fql_params, fql_opt_state = {}, {}
    if config.fql:
        fql_params = build_fql_network(config).init(jax.random.fold_in(key, FQL_KEY_TAG), obs, act)
        fql_opt_state = opt.init(fql_params)
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
        cfgrl_params=cfgrl_params,
        cfgrl_opt_state=cfgrl_opt_state,
        fql_params=fql_params,
        fql_opt_state=fql_opt_state,
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


def cfgrl_velocity_fn(config: QGFConfig, cfgrl_params) -> Callable:
    """The trained CFG-RL network as a plain function (obs, a, t, label) -> v, for ``qgf_lite.cfgrl.cfgrl_sample``.

    Pass ``state.cfgrl_params`` of a state trained with ``QGFConfig(cfgrl=True)``; label 0 is the unconditional
    branch, 1 the positive one.
    """
    if not jax.tree_util.tree_leaves(cfgrl_params):
        raise ValueError("`cfgrl_params` is empty: this state has no CFG-RL network; train with "
                         "QGFConfig(cfgrl=True) (`qgf-lite train --cfgrl`).")
    return functools.partial(build_cfgrl_network(config).apply, cfgrl_params)


def fql_policy_fn(config: QGFConfig, fql_params) -> Callable:
    """FQL's trained one-step policy as a plain function (obs, noise) -> actions (unclipped), for
    ``qgf_lite.fql.fql_sample``. Pass ``state.fql_params`` of a state trained with ``QGFConfig(fql=True)``."""
    if not jax.tree_util.tree_leaves(fql_params):
        raise ValueError("`fql_params` is empty: this state has no FQL policy; train with QGFConfig(fql=True) "
                         "(`qgf-lite train --fql`).")
    return functools.partial(build_fql_network(config).apply, fql_params)


VELOCITY_NETWORKS = ("policy", "cfgrl", "fql")
_NETWORK_FIELDS = {"policy": "policy_params", "cfgrl": "cfgrl_params", "fql": "fql_params"}


def sampler_velocity_params(state: TrainState, network: str = "policy"):
    """The parameters of the network a sampler runs: the BC flow ("policy"), CFG-RL's ("cfgrl") or FQL's one-step
    policy ("fql")."""
    if network not in VELOCITY_NETWORKS:
        raise ValueError(f"`network` must be one of {VELOCITY_NETWORKS}, got {network!r}.")
    if network == "cfgrl" and not jax.tree_util.tree_leaves(state.cfgrl_params):
        raise ValueError("The CFG-RL sampler needs a CFG-RL network, and this state has none: train with "
                         "QGFConfig(cfgrl=True) (`qgf-lite train --cfgrl`).")
    if network == "fql" and not jax.tree_util.tree_leaves(state.fql_params):
        raise ValueError("The FQL sampler needs an FQL one-step policy, and this state has none: train with "
                         "QGFConfig(fql=True) (`qgf-lite train --fql`).")
    return getattr(state, _NETWORK_FIELDS[network])


def sampler_velocity_fn(config: QGFConfig, params, network: str = "policy") -> Callable:
    """``velocity_fn``, ``cfgrl_velocity_fn`` or ``fql_policy_fn`` of ``params``, as ``SamplerSpec.network`` names
    the network (FQL's is the one-step policy (obs, noise) -> actions, which its runner calls once)."""
    if network == "cfgrl":
        return cfgrl_velocity_fn(config, params)
    if network == "fql":
        return fql_policy_fn(config, params)
    return velocity_fn(config, params)


def critic_fn(config: QGFConfig, critic_params) -> Callable:
    """min_i Q_i(s, a) of the ensemble as a plain function (obs, a) -> (batch,), as guidance uses it.

    For guidance pass ``guidance_critic_params(state)`` (the target critic), not ``state.critic_params``.
    """
    critic = build_networks(config)[1]
    return lambda obs, actions: jnp.min(critic.apply(critic_params, obs, actions), axis=0)


CRITIC_CHOICES = ("target", "online")  # the values of every sampler's `critic` option; the first is the default


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


def train_step(config: QGFConfig, state: TrainState, batch: dict) -> Tuple[TrainState, dict]:
    """One update of the policy (flow matching), critic (TD to R + gamma^H V) and value (expectile of Qbar).

    All three losses see the same batch and are differentiated with respect to their own parameters only:
    the policy never sees the critic.

    With ``config.cfgrl`` the CFG-RL network is updated from the same batch too (``qgf_lite.cfgrl.cfgrl_loss``):
    its positive branch is weighted by 1[min_i Q_i - V > cfgrl_threshold] (Q from the target or online critic
    per ``cfgrl_critic``, Q and V at this step's parameters before the update, as constants), times the chunk
    validity. Its gradients reach only its own parameters, and its flow-matching key is folded out of the
    policy's, so every other field of the new state is what it is with ``cfgrl`` off.

    With ``config.fql`` FQL's one-step policy takes one Adam step of ``qgf_lite.fql.fql_loss`` on the batch's
    observations, with noise from ``fold_in(flow_key, FQL_KEY_TAG)``, the BC flow's Euler sample (``flow_steps``
    steps, the policy parameters before this step's update) as distillation target, and Q from the online or target
    critic (``fql_critic``, before the update) reduced by ``fql_q_aggregate``. Gradients reach only its parameters;
    every other field is what it is with ``fql`` off. The critic stays the IQL critic (FQL's paper trains a TD
    critic on the one-step policy's actions instead; docs/algorithm.md §5).
    """
    if config.cfgrl and not jax.tree_util.tree_leaves(state.cfgrl_params):
        raise ValueError("config.cfgrl is True but the state has no CFG-RL network: initialise it with "
                         "init_train_state(config, key) for this config.")
    if config.fql and not jax.tree_util.tree_leaves(state.fql_params):
        raise ValueError("config.fql is True but the state has no FQL policy: initialise it with "
                         "init_train_state(config, key) for this config.")
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
    if config.cfgrl:
        cfgrl_update = _cfgrl_update(config, state, obs, actions, chunk_ok, flow_key,
                                     target_q if config.cfgrl_critic == "target" else q, v)
    if config.fql:
        fql_update = _fql_update(config, state, obs, flow_key)

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
    )
    metrics = {
        "policy_loss": policy_l,
        "critic_loss": critic_l,
        "value_loss": value_l,
        "q_mean": jnp.mean(q),
        "v_mean": jnp.mean(v),
    }
    if config.cfgrl:
        cfgrl_params, cfgrl_opt_state, cfgrl_metrics = cfgrl_update
        new_state = new_state.replace(cfgrl_params=cfgrl_params, cfgrl_opt_state=cfgrl_opt_state)
        metrics.update(cfgrl_metrics)
    if config.fql:
        fql_params, fql_opt_state, fql_metrics = fql_update
        new_state = new_state.replace(fql_params=fql_params, fql_opt_state=fql_opt_state)
        metrics.update(fql_metrics)
    return new_state, metrics


def _fql_update(config: QGFConfig, state: TrainState, obs, flow_key):
    """One Adam step of FQL's one-step policy: (params, opt_state, metrics).

    Noise z ~ N(0, I) from ``fold_in(flow_key, FQL_KEY_TAG)``; the BC flow (``state.policy_params``) and the
    critic (online or target per ``fql_critic``) at this step's parameters before their update are constants.
    """
    network = build_fql_network(config)
    opt = make_optimizer(config)
    actor, critic, _ = build_networks(config)
    velocity = functools.partial(actor.apply, jax.lax.stop_gradient(state.policy_params))
    critic_params = jax.lax.stop_gradient(
        state.critic_params if config.fql_critic == "online" else state.target_critic_params)
    critic_apply = functools.partial(critic.apply, critic_params)
    batch = jnp.shape(obs)[0]
    noise = jax.random.normal(jax.random.fold_in(flow_key, FQL_KEY_TAG), (batch, config.chunk_dim))

    def objective(params):
        return fql_loss(functools.partial(network.apply, params), critic_apply, velocity, obs, noise,
                        alpha=config.fql_alpha, flow_steps=config.flow_steps, aggregate=config.fql_q_aggregate,
                        normalize=config.fql_normalize_q, return_parts=True)

    (loss, parts), grads = jax.value_and_grad(objective, has_aux=True)(state.fql_params)
    updates, opt_state = opt.update(grads, state.fql_opt_state, state.fql_params)
    metrics = {"fql_loss": loss, "fql_q_loss": parts["q_loss"], "fql_distill_loss": parts["distill_loss"],
               "fql_q_mean": parts["q_mean"]}
    return optax.apply_updates(state.fql_params, updates), opt_state, metrics


def _cfgrl_update(config: QGFConfig, state: TrainState, obs, actions, chunk_ok, flow_key, q_values, values):
    """One Adam step of the CFG-RL network: (params, opt_state, metrics). ``q_values`` (members, batch), ``values``
    (batch,) label the batch and are constants here."""
    network = build_cfgrl_network(config)
    opt = make_optimizer(config)
    positive = optimality_weights(advantages(q_values, values), config.cfgrl_threshold, chunk_ok)

    def objective(params):
        return cfgrl_loss(
            functools.partial(network.apply, params), obs, actions, jax.random.fold_in(flow_key, CFGRL_KEY_TAG),
            positive, uncond_weight=config.cfgrl_uncond_weight, valid=chunk_ok, time_grid=config.time_grid,
            return_parts=True,
        )

    (loss, parts), grads = jax.value_and_grad(objective, has_aux=True)(state.cfgrl_params)
    updates, opt_state = opt.update(grads, state.cfgrl_opt_state, state.cfgrl_params)
    metrics = {
        "cfgrl_loss": loss,
        "cfgrl_positive_loss": parts["positive_loss"],
        "cfgrl_unconditional_loss": parts["unconditional_loss"],
        # share of the batch's valid chunks labelled positive
        "cfgrl_positive_fraction": jnp.sum(positive) / jnp.maximum(jnp.sum(chunk_ok), 1e-8),
    }
    return optax.apply_updates(state.cfgrl_params, updates), opt_state, metrics


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
    callback: Optional[Callable] = None,
    data_sharding=None,
    desc: str = "training",
):
    """Train for ``num_steps`` updates in compiled chunks of ``chunk_size`` scan steps.

    A state whose leaves have a leading seed axis (``init_train_states``) trains every seed at once.
    ``callback(state, metrics)`` runs after each chunk with the chunk's mean metrics (host floats, one
    value per seed for multi-seed states); return True from it to stop early. ``data_sharding`` (see
    ``data_parallel_sharding``) splits each batch across devices.

    Returns (state, history) with history a list of dicts {"step": ..., metric: mean over the chunk}.
    """
    from qgf_lite.progress import progress_bar as tqdm

    num_steps = require_positive_int("num_steps", num_steps)
    chunk_size = require_positive_int("chunk_size", chunk_size)
    if not isinstance(dataset, TransitionDataset):
        raise TypeError(f"`dataset` must be a TransitionDataset (see qgf_lite.make_dataset), got {type(dataset).__name__}.")
    if dataset.obs_dim != config.obs_dim or dataset.action_dim != config.action_dim:
        raise ValueError(
            f"The dataset has obs_dim={dataset.obs_dim}, action_dim={dataset.action_dim} but the config expects "
            f"obs_dim={config.obs_dim}, action_dim={config.action_dim}."
        )
    if dataset.size < config.horizon:
        raise ValueError(f"The dataset has {dataset.size} transitions, fewer than one chunk (horizon {config.horizon}).")
    if data_sharding is not None and config.batch_size % len(data_sharding.device_set) != 0:
        raise ValueError(
            f"batch_size {config.batch_size} must divide evenly over {len(data_sharding.device_set)} devices."
        )
    multi = is_multi_seed(state)
    history = []
    done = 0
    bar = tqdm(total=num_steps, desc=desc, disable=not progress, leave=False)
    try:
        while done < num_steps:
            n = min(chunk_size, num_steps - done)
            state, metrics = compiled_train_steps(config, n, multi, data_sharding)(state, dataset)
            axis = 1 if multi else 0
            means = {k: np.asarray(jnp.mean(v, axis=axis)) for k, v in metrics.items()}
            done += n
            record = {"step": int(np.max(np.asarray(state.step)))}
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
