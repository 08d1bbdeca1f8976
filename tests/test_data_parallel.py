"""Data-parallel training over two (simulated) devices gives the losses of single-device training.

jax fixes its device count when it starts, so the comparison runs in a fresh interpreter whose XLA_FLAGS
ask the CPU backend for two devices; it prints both loss histories as JSON for this process to compare.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent(
    """
    import json
    import jax
    import numpy as np
    from qgf_lite.data import make_dataset
    from qgf_lite.training import QGFConfig, data_parallel_sharding, fit, init_train_state

    assert jax.device_count() == 2, jax.devices()
    rng = np.random.default_rng(0)
    n = 256
    obs = rng.normal(size=(n + 1, 3)).astype(np.float32)
    actions = np.tanh(obs[:n, :2] + 0.1 * rng.normal(size=(n, 2))).astype(np.float32)
    rewards = -np.sum((actions - 0.2) ** 2, axis=1)
    terminals = np.zeros(n, np.float32)
    terminals[31::32] = 1.0
    dataset = make_dataset(actions, rewards, obs[:n], terminals, None, obs[1:])
    config = QGFConfig(obs_dim=3, action_dim=2, horizon=2, actor_hidden=(16,), critic_hidden=(16,),
                       value_hidden=(16,), time_emb_dim=8, batch_size=32, learning_rate=1e-3)
    sharding = data_parallel_sharding()
    assert sharding is not None and len(sharding.device_set) == 2
    state = init_train_state(config, jax.random.PRNGKey(0))
    plain, plain_history = fit(config, state, dataset, 50, chunk_size=10, progress=False)
    sharded, sharded_history = fit(config, state, dataset, 50, chunk_size=10, progress=False, data_sharding=sharding)
    print(json.dumps({
        "plain": plain_history,
        "sharded": sharded_history,
        "plain_params": [np.asarray(x).ravel().tolist() for x in jax.tree_util.tree_leaves(plain.critic_params)],
        "sharded_params": [np.asarray(x).ravel().tolist() for x in jax.tree_util.tree_leaves(sharded.critic_params)],
        "steps": [int(plain.step), int(sharded.step)],
        # The sharded run really ran on the two-device mesh (its parameters live, replicated, on both).
        "sharded_devices": len(jax.tree_util.tree_leaves(sharded.critic_params)[0].sharding.device_set),
    }))
    """
)


def test_data_parallel_fit_matches_single_device():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["steps"] == [50, 50]
    assert result["sharded_devices"] == 2
    plain, sharded = result["plain"], result["sharded"]
    assert [h["step"] for h in plain] == [h["step"] for h in sharded] == [10, 20, 30, 40, 50]
    for name in ("policy_loss", "critic_loss", "value_loss"):
        np.testing.assert_allclose([h[name] for h in sharded], [h[name] for h in plain], rtol=1e-5, atol=1e-7)
    # Training moved the losses, so agreement is not two untrained copies agreeing.
    assert plain[-1]["critic_loss"] < plain[0]["critic_loss"]
    for a, b in zip(result["sharded_params"], result["plain_params"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
