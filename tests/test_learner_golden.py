"""CFG-RL and FQL train bit-for-bit as they did in 0.2, and 0.2 checkpoints still load.

``tests/fixtures/learners_golden_0.2.npz`` holds every array of two short runs (both baselines on, default and
non-default options) and their metrics, recorded with qgf_lite 0.2.0 *before* the baselines became learner
modules (issue 20); ``tests/fixtures/checkpoint_0.2_cfgrl_fql.msgpack`` is a checkpoint that 0.2.0 wrote. Both
were made by ``python tests/test_learner_golden.py`` on a CPU; rerunning it overwrites them, so do that only to
record a deliberate change of outputs. Exact equality assumes the same XLA CPU numerics as the recording machine.
"""

from pathlib import Path

import jax
import numpy as np
import pytest
from training_problem import training_problem

from qgf_lite.training import fit, init_train_state

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "learners_golden_0.2.npz"
CHECKPOINT_02 = FIXTURES / "checkpoint_0.2_cfgrl_fql.msgpack"

RUNS = {
    "defaults": dict(cfgrl=True, fql=True),
    "options": dict(
        cfgrl=True,
        cfgrl_threshold=-0.1,
        cfgrl_uncond_weight=0.5,
        cfgrl_critic="online",
        fql=True,
        fql_alpha=3.0,
        fql_hidden=(16, 16),
        fql_critic="target",
        fql_q_aggregate="min",
        fql_normalize_q=False,
        time_grid=None,
    ),
}
STEPS, CHUNK = 6, 3

# The state's arrays under the names 0.2 gave them (TrainState fields), whatever the state's layout now.
FIELDS = (
    "step",
    "rng",
    "policy_params",
    "critic_params",
    "target_critic_params",
    "value_params",
    "policy_opt_state",
    "critic_opt_state",
    "value_opt_state",
    "cfgrl_params",
    "cfgrl_opt_state",
    "fql_params",
    "fql_opt_state",
)


def named_arrays(state) -> dict:
    out = {}
    for field in FIELDS:
        for path, leaf in jax.tree_util.tree_flatten_with_path(getattr(state, field))[0]:
            out[field + jax.tree_util.keystr(path)] = np.asarray(leaf)
    return out


def run(name):
    config, dataset = training_problem(**RUNS[name])
    state = init_train_state(config, jax.random.PRNGKey(7))
    state, history = fit(config, state, dataset, STEPS, chunk_size=CHUNK, progress=False)
    arrays = {f"{name}/state/{k}": v for k, v in named_arrays(state).items()}
    for i, record in enumerate(history):
        arrays.update({f"{name}/metrics/{i}/{k}": np.asarray(v) for k, v in record.items()})
    return config, state, arrays


@pytest.mark.parametrize("name", sorted(RUNS))
def test_cfgrl_and_fql_train_bit_for_bit_as_in_0_2(name):
    golden = np.load(GOLDEN)
    _, _, arrays = run(name)
    want = {k: golden[k] for k in golden.files if k.startswith(f"{name}/")}
    assert sorted(arrays) == sorted(want)
    for key, value in want.items():
        assert arrays[key].dtype == value.dtype, key
        np.testing.assert_array_equal(arrays[key], value, err_msg=key)


def test_a_0_2_checkpoint_loads_and_keeps_every_array():
    from qgf_lite.checkpoint import load_checkpoint

    config, state, extra = load_checkpoint(CHECKPOINT_02)
    assert extra == {"written_by": "qgf_lite 0.2.0"}
    assert config.cfgrl and config.fql
    assert config == training_problem(**RUNS["options"])[0]
    golden = np.load(GOLDEN)
    arrays = named_arrays(state)
    for key, value in arrays.items():
        np.testing.assert_array_equal(value, golden[f"options/state/{key}"], err_msg=key)
    assert len(arrays) == sum(k.startswith("options/state/") for k in golden.files)


if __name__ == "__main__":  # record the fixtures (see the module docstring)
    from qgf_lite.checkpoint import save_checkpoint

    recorded = {}
    for name in RUNS:
        config, state, arrays = run(name)
        recorded.update(arrays)
        if name == "options":
            save_checkpoint(CHECKPOINT_02, config, state, extra={"written_by": "qgf_lite 0.2.0"})
    np.savez_compressed(GOLDEN, **recorded)
    print(f"wrote {GOLDEN} ({len(recorded)} arrays) and {CHECKPOINT_02}")
