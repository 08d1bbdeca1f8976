"""Checkpoints: bit-exact round trips, atomic writes, and clear errors for mismatched or damaged files."""

import os

import flax.serialization
import jax
import numpy as np
import pytest
from training_problem import assert_bit_exact

from qgf_lite import fileio as atomic_io  # where save_checkpoint writes the file
from qgf_lite.checkpoint import load_checkpoint, save_checkpoint
from qgf_lite.training import QGFConfig, init_train_state, init_train_states

CONFIG = QGFConfig(
    obs_dim=3,
    action_dim=2,
    horizon=2,
    actor_hidden=(8,),
    critic_hidden=(8, 4),
    value_hidden=(8,),
    time_emb_dim=4,
    batch_size=8,
)
init_state = jax.jit(init_train_state, static_argnums=0)


def randomised(state, seed):
    """Every float leaf replaced by random values, so a round trip that loses or swaps leaves is caught."""
    rng = np.random.default_rng(seed)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    out = []
    for leaf in leaves:
        leaf = np.asarray(leaf)
        if np.issubdtype(leaf.dtype, np.floating):
            leaf = rng.normal(size=leaf.shape).astype(leaf.dtype)
        out.append(jax.numpy.asarray(leaf))
    return treedef.unflatten(out).replace(step=state.step + 123)


@pytest.fixture(scope="module")
def single_state():
    return randomised(init_state(CONFIG, jax.random.PRNGKey(0)), 1)


@pytest.fixture(scope="module")
def multi_state():
    """Two seeds stacked on a leading axis, the layout ``init_train_states`` produces."""
    seeds = [randomised(init_state(CONFIG, jax.random.PRNGKey(s)), 2 + s) for s in range(2)]
    return jax.tree_util.tree_map(lambda *leaves: jax.numpy.stack(leaves), *seeds)


def test_multi_seed_layout_matches_init_train_states(multi_state):
    reference = jax.eval_shape(lambda: init_train_states(CONFIG, [0, 1]))
    assert jax.tree_util.tree_structure(reference) == jax.tree_util.tree_structure(multi_state)
    for want, have in zip(jax.tree_util.tree_leaves(reference), jax.tree_util.tree_leaves(multi_state)):
        assert (want.shape, want.dtype) == (have.shape, have.dtype)


@pytest.mark.parametrize("which", ["single", "multi"])
def test_round_trip_is_bit_exact(tmp_path, single_state, multi_state, which):
    state = single_state if which == "single" else multi_state
    path = tmp_path / "run" / "ckpt.msgpack"  # the folder is created on save
    extra = {"dataset": "toy", "returns": [1.5, 2.0], "nested": {"seed": 3}}
    save_checkpoint(path, CONFIG, state, extra=extra)
    config, loaded, loaded_extra = load_checkpoint(path)
    assert config == CONFIG
    assert loaded_extra == extra
    assert_bit_exact(loaded, state)
    assert type(loaded) is type(state)
    # Loading against the same architecture explicitly works too.
    assert_bit_exact(load_checkpoint(path, CONFIG)[1], state)


def test_save_overwrites_previous_checkpoint(tmp_path, single_state):
    path = tmp_path / "ckpt.msgpack"
    save_checkpoint(path, CONFIG, single_state)
    newer = single_state.replace(step=single_state.step + 1)
    save_checkpoint(path, CONFIG, newer)
    assert int(load_checkpoint(path)[1].step) == int(newer.step)
    assert sorted(os.listdir(tmp_path)) == ["ckpt.msgpack"]


class _HalfWriteFile:
    """A file whose write stores half of the bytes and then fails, as a full disk or a kill would."""

    def __init__(self, raw):
        self.raw = raw

    def write(self, data):
        self.raw.write(data[: len(data) // 2])
        self.raw.flush()
        raise OSError("disk full (simulated)")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.raw.close()
        return False

    def __getattr__(self, name):
        return getattr(self.raw, name)


@pytest.mark.parametrize("failure", ["half_write", "fsync", "replace"])
def test_failed_save_leaves_old_checkpoint_and_no_temp_file(tmp_path, single_state, monkeypatch, failure):
    path = tmp_path / "ckpt.msgpack"
    save_checkpoint(path, CONFIG, single_state)
    before = path.read_bytes()
    real_fdopen = os.fdopen

    def boom(*args, **kwargs):
        raise OSError(f"{failure} failed (simulated)")

    if failure == "half_write":
        monkeypatch.setattr(atomic_io.os, "fdopen", lambda *a, **k: _HalfWriteFile(real_fdopen(*a, **k)))
    elif failure == "fsync":
        monkeypatch.setattr(atomic_io.os, "fsync", boom)
    else:
        monkeypatch.setattr(atomic_io.os, "replace", boom)
    newer = single_state.replace(step=single_state.step + 1)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, CONFIG, newer)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ckpt.msgpack"]
    assert_bit_exact(load_checkpoint(path)[1], single_state)


def test_mismatched_architecture_is_named(tmp_path, single_state):
    path = tmp_path / "ckpt.msgpack"
    save_checkpoint(path, CONFIG, single_state)
    wider = QGFConfig(**{**CONFIG.to_dict(), "critic_hidden": (16, 4)})
    with pytest.raises(ValueError, match=r"critic_hidden.*\(8, 4\).*\(16, 4\)"):
        load_checkpoint(path, wider)
    other_obs = QGFConfig(**{**CONFIG.to_dict(), "obs_dim": 5})
    with pytest.raises(ValueError, match="obs_dim"):
        load_checkpoint(path, other_obs)
    # Training hyper-parameters are not architecture: a new learning rate loads the same weights.
    slower = QGFConfig(**{**CONFIG.to_dict(), "learning_rate": 1e-5})
    config, state, _ = load_checkpoint(path, slower)
    assert config == slower
    assert_bit_exact(state, single_state)


def test_state_that_does_not_fit_its_config_is_named(tmp_path):
    """A state saved under the wrong config: the first parameter whose shape differs is reported with both shapes."""
    other = QGFConfig(**{**CONFIG.to_dict(), "value_hidden": (6,)})
    path = tmp_path / "ckpt.msgpack"
    save_checkpoint(path, CONFIG, init_state(other, jax.random.PRNGKey(0)))
    message = r"`value_\w+/.*Dense_0/\w+` has shape \((3, )?6,?\) but the architecture needs \((3, )?8,?\)"
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        load_checkpoint(tmp_path / "nothing_here.msgpack")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "foreign_msgpack", "header_only", "no_step"])
def test_corrupt_file_raises_value_error(tmp_path, single_state, damage):
    path = tmp_path / "ckpt.msgpack"
    save_checkpoint(path, CONFIG, single_state)
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(500))
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "foreign_msgpack":
        path.write_bytes(flax.serialization.msgpack_serialize({"weights": np.zeros(3, np.float32)}))
    else:
        payload = flax.serialization.msgpack_restore(data)
        if damage == "header_only":
            payload = {"format": payload["format"], "version": payload["version"]}
        else:
            del payload["state"]["step"]
        path.write_bytes(flax.serialization.msgpack_serialize(payload))
    with pytest.raises(ValueError, match="ckpt.msgpack"):
        load_checkpoint(path)


def test_saved_checkpoint_has_the_usual_permissions(tmp_path, single_state):
    """The atomic write's temporary file is private (mkstemp, 0600); the result must follow the umask like open()."""
    path = save_checkpoint(tmp_path / "ckpt.msgpack", CONFIG, single_state)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert (os.stat(path).st_mode & 0o777) == (os.stat(plain).st_mode & 0o777)
