"""qgf_lite: Q-Guided Flow (QGF), test-time critic guidance of flow-matching policies.

The kernels are small pure functions that trace under ``jax.jit`` and ``jax.vmap``; see
each module docstring for the math it implements.
"""

from qgf_lite.version import __version__
from qgf_lite.networks import (
    ConditionedVelocityField,
    CriticEnsemble,
    MLP,
    SinusoidalTimeEmbedding,
    ValueNet,
    VelocityField,
)
from qgf_lite.flow import euler_sample, flow_matching_loss, interpolate, sample_flow_times
from qgf_lite.guidance import MODES, best_of_n, critic_action_gradient, denoised_estimate, gradient_step, guided_sample
from qgf_lite.samplers import (
    SAMPLER_METHODS,
    SAMPLER_NAMES,
    SAMPLERS,
    SamplerSpec,
    sampler_cost,
    spec_from_name,
    specs_from_names,
)
from qgf_lite.iql import (
    chunk_discount,
    chunk_returns,
    critic_loss,
    expectile_loss,
    polyak_update,
    q_target,
    value_loss,
)
from qgf_lite.cfgrl import cfg_velocity, cfgrl_loss, cfgrl_sample, optimality_weights
from qgf_lite.fql import OneStepPolicy, distillation_loss, fql_loss, fql_q_loss, fql_sample
from qgf_lite.data import TransitionDataset, dataset_from_dict, make_dataset, sample_chunk_batch
from qgf_lite.training import (
    QGFConfig,
    TrainState,
    build_cfgrl_network,
    build_fql_network,
    build_networks,
    cfgrl_velocity_fn,
    compiled_train_steps,
    critic_fn,
    data_parallel_sharding,
    fit,
    fql_policy_fn,
    guidance_critic_params,
    init_train_state,
    init_train_states,
    num_parameters,
    train_step,
    train_steps,
    value_fn,
    velocity_fn,
)
from qgf_lite.checkpoint import load_checkpoint, save_checkpoint

__all__ = [name for name in dir() if not name.startswith("_")]
