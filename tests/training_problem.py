"""The small trainer problem shared by the training and CFG-RL tests."""

import numpy as np

from qgf_lite import QGFConfig, make_dataset

TINY = dict(actor_hidden=(32,), critic_hidden=(32,), value_hidden=(32,), time_emb_dim=8)


def training_problem(**config_overrides):
    """(config, dataset): 20-step episodes, the behaviour action a noisy function of the state, the reward
    preferring a = 0.3; tiny networks, so a few hundred steps train in seconds."""
    rng = np.random.default_rng(0)
    n = 512
    obs = rng.normal(size=(n + 1, 2)).astype(np.float32)
    actions = (0.5 * np.tanh(obs[:n]) + 0.1 * rng.normal(size=(n, 2))).astype(np.float32)
    rewards = -np.sum((actions - 0.3) ** 2, axis=1)
    terminals = np.zeros(n, np.float32)
    terminals[19::20] = 1.0
    terminals[-1] = 1.0
    dataset = make_dataset(actions, rewards, obs[:n], terminals, None, obs[1:])
    config = QGFConfig(obs_dim=2, action_dim=2, horizon=2, batch_size=32, discount=0.9,
                       target_update_rate=0.05, learning_rate=1e-3, **{**TINY, **config_overrides})
    return config, dataset
