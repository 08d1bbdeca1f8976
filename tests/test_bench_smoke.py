"""Smoke test of benchmarks/bench_kernels.py at tiny sizes: it runs end to end, reports every figure, and
its host-side minibatch pipeline (the reference's per-step pattern) computes what the device one does.
No timing thresholds here; speed targets are checked by running the benchmark itself."""

import importlib.util
import json
import math
import pathlib
import sys

import jax
import numpy as np
import pytest

import qgf_lite
from qgf_lite.training import QGFConfig

BENCH_PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_kernels.py"

REQUIRED_KEYS = (
    "scan_vs_step_ratio_official_defaults",
    "scan_vs_step_ratio_toy",
    "train_steps_per_s_official_defaults",
    "step_pattern_steps_per_s_official_defaults",
    "train_steps_per_s_toy",
    "step_pattern_steps_per_s_toy",
    "guided_ms_batch1",
    "guided_ms_batch1000",
    "slider_ms",
)

TINY_CONFIG = QGFConfig(
    obs_dim=3, action_dim=2, horizon=3, actor_hidden=(8, 8), critic_hidden=(8, 8), value_hidden=(8, 8), batch_size=8
)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_kernels", BENCH_PATH)
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolve string annotations through sys.modules, so register before executing.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_sizes(bench):
    return bench.Sizes(
        num_transitions=120,
        episode_length=25,
        official_defaults_steps_per_rep=2,
        toy_steps_per_rep=2,
        train_reps=1,
        guided_batches=(1, 1000),
        latency_repeats=2,
        latency_budget_s=1.0,
        slider_particles=16,
        cpu_tuned_variants=False,
    )


def test_numpy_chunk_returns_by_hand(bench):
    # Episode ends at step 1 (terminal), so step 2 belongs to the next episode; gamma = 0.5.
    rewards = np.array([[1.0, 2.0, 4.0], [1.0, 1.0, 1.0]], np.float32)
    terminals = np.array([[0, 1, 0], [0, 0, 0]], np.float32)
    masks = np.array([[1, 0, 1], [1, 1, 1]], np.float32)
    returns, valid, bootstrap = bench.numpy_chunk_returns(rewards, terminals, masks, 0.5)
    np.testing.assert_allclose(returns, [1.0 + 0.5 * 2.0, 1.0 + 0.5 + 0.25])
    np.testing.assert_array_equal(valid, [[1, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(bootstrap, [0.0, 1.0])


def test_numpy_chunk_returns_match_the_jax_kernel(bench):
    rng = np.random.default_rng(0)
    rewards = rng.standard_normal((200, 5)).astype(np.float32)
    terminals = (rng.random((200, 5)) < 0.2).astype(np.float32)
    masks = np.where(rng.random((200, 5)) < 0.3, 0.0, 1.0).astype(np.float32)
    ours = bench.numpy_chunk_returns(rewards, terminals, masks, 0.97)
    ref = qgf_lite.chunk_returns(rewards, terminals, masks, 0.97)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-6, atol=1e-6)


def test_host_batch_matches_device_batch_layout_and_windows(bench):
    # The per-step pattern must feed train_step the same pytree the scan trainer builds on the device.
    arrays = bench.synthetic_transitions(60, TINY_CONFIG.obs_dim, TINY_CONFIG.action_dim, episode_length=20, seed=1)
    host = bench.HostChunkSampler(arrays, TINY_CONFIG, seed=0)
    device = qgf_lite.sample_chunk_batch(
        bench.device_dataset(arrays, TINY_CONFIG),
        jax.random.PRNGKey(0),
        TINY_CONFIG.batch_size,
        TINY_CONFIG.horizon,
        TINY_CONFIG.discount,
    )
    host_batch = host.sample()
    assert sorted(host_batch) == sorted(device)
    for key in device:
        assert host_batch[key].shape == device[key].shape, key
        assert host_batch[key].dtype == device[key].dtype, key
    # A chunk starting two steps before an episode end: its window is cut after the terminal.
    start = np.array([17])
    batch = host.sample_at(start)
    np.testing.assert_array_equal(batch["actions"][0], arrays["actions"][17:20].reshape(-1))
    np.testing.assert_array_equal(batch["valid"][0], [1, 1, 1])
    np.testing.assert_array_equal(batch["next_observations"][0], arrays["next_observations"][19])
    assert batch["bootstrap_mask"][0] == 0.0  # step 19 ends the episode: nothing to bootstrap
    batch = host.sample_at(np.array([18]))
    np.testing.assert_array_equal(batch["valid"][0], [1, 1, 0])


def test_synthetic_transitions_end_episodes_on_schedule(bench):
    arrays = bench.synthetic_transitions(100, 4, 2, episode_length=30, seed=0)
    np.testing.assert_array_equal(np.flatnonzero(arrays["terminals"]), [29, 59, 89, 99])
    np.testing.assert_array_equal(arrays["masks"], 1.0 - arrays["terminals"])
    np.testing.assert_array_equal(arrays["next_observations"][:-1], arrays["observations"][1:])


def test_benchmark_runs_end_to_end_and_reports_every_figure(bench, tiny_sizes, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "QUICK", tiny_sizes)
    monkeypatch.setattr(bench, "OFFICIAL_DEFAULTS_CONFIG", TINY_CONFIG)
    # One tiny config in both training slots: its two programs (step and scan) compile once, not twice.
    monkeypatch.setattr(bench, "TOY_CONFIG", TINY_CONFIG)
    monkeypatch.setattr(bench, "SLIDER_HIDDEN", (8,))
    out = tmp_path / "bench.json"
    results = bench.main(["--quick", "--out", str(out)])
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    printed = json.loads(last_line)
    assert printed == json.loads(out.read_text())
    assert printed == json.loads(json.dumps(results))
    for key in REQUIRED_KEYS:
        assert isinstance(printed[key], float) and math.isfinite(printed[key]) and printed[key] > 0, key
    assert printed["scan_vs_step_ratio_toy"] == pytest.approx(
        printed["train_steps_per_s_toy"] / printed["step_pattern_steps_per_s_toy"]
    )
    assert printed["slider_compilations"] == 1
    assert printed["platform"] == jax.devices()[0].platform
    assert printed["jax_version"] == jax.__version__
    assert printed["device"]
    assert not list(tmp_path.glob("*.tmp"))  # the JSON was written atomically
