"""The named settings: QGFConfig.paper / official_defaults and `qgf-lite train --preset`."""

import argparse

import pytest

from qgf_lite.ogbench import cli
from qgf_lite.ogbench.train import make_config
from qgf_lite.training import PRESET_STEPS, PRESETS, QGFConfig


def test_paper_preset_is_the_papers_setting():
    config = QGFConfig.paper(46, 5)
    for name in ("actor_hidden", "critic_hidden", "value_hidden"):
        assert getattr(config, name) == (1024, 1024, 1024, 1024)
    assert (config.batch_size, config.discount, config.horizon, config.expectile, config.flow_steps) == (
        1024,
        0.999,
        5,
        0.9,
        10,
    )
    assert (config.obs_dim, config.action_dim) == (46, 5)
    assert PRESET_STEPS["paper"] == 500_000


def test_official_defaults_preset_is_qgfconfigs_defaults():
    assert QGFConfig.official_defaults(40, 5) == QGFConfig(obs_dim=40, action_dim=5)
    config = QGFConfig.official_defaults(40, 5)
    assert config.actor_hidden == (512,) * 4 and config.batch_size == 256 and config.discount == 0.99
    assert QGFConfig.paper(40, 5) != QGFConfig.official_defaults(40, 5)


def test_preset_overrides_win_and_unknown_names_fail():
    config = QGFConfig.paper(40, 5, batch_size=64, discount=0.99)
    assert config.batch_size == 64 and config.discount == 0.99 and config.actor_hidden == (1024,) * 4
    with pytest.raises(ValueError, match="official-defaults"):
        QGFConfig.preset("paperish", 40, 5)
    # make_config's width/depth shorthands start from the preset's networks
    assert make_config(40, 5, preset="paper", layers=2).critic_hidden == (1024, 1024)


def parse_train(argv):
    parser = argparse.ArgumentParser()
    cli.add_train_arguments(parser)
    return parser.parse_args(argv)


def test_cli_preset_with_overriding_flags(monkeypatch):
    seen = {}

    def fake_train(env, out, **kwargs):
        seen.update(kwargs, env=env)
        raise KeyboardInterrupt  # stop before any work: only the arguments matter here

    import qgf_lite.ogbench.train as train_module

    monkeypatch.setattr(train_module, "train", fake_train)
    args = parse_train(["scene-play-singletask-task2-v0", "--out", "run", "--preset", "paper", "--batch-size", "64"])
    with pytest.raises(KeyboardInterrupt):
        cli.run_train(args)
    assert seen["preset"] == "paper" and seen["batch_size"] == 64 and seen["steps"] == PRESET_STEPS["paper"]
    config = make_config(40, 5, **{k: v for k, v in seen.items() if k in ("preset", "batch_size")})
    assert config.batch_size == 64 and config.actor_hidden == (1024,) * 4 and config.discount == 0.999

    seen.clear()
    args = parse_train(
        ["scene-play-singletask-task2-v0", "--out", "run", "--preset", "official-defaults", "--steps", "7"]
    )
    with pytest.raises(KeyboardInterrupt):
        cli.run_train(args)
    assert seen["steps"] == 7 and seen["preset"] == "official-defaults"

    seen.clear()
    with pytest.raises(KeyboardInterrupt):
        cli.run_train(parse_train(["scene-play-singletask-task2-v0", "--out", "run"]))
    assert "preset" not in seen and seen["steps"] == 1_000_000
    assert set(PRESETS) == {"paper", "official-defaults"}


def test_cli_rejects_unknown_preset(capsys):
    with pytest.raises(SystemExit):
        parse_train(["scene-play-singletask-task2-v0", "--out", "run", "--preset", "big"])
    assert "invalid choice" in capsys.readouterr().err
