"""Optional parts of qgf_lite name the pip extra they need; the extras in pyproject match what the code checks."""

import tomllib
from pathlib import Path

import pytest

from qgf_lite import _optional

ROOT = Path(__file__).resolve().parents[1]


def test_a_missing_module_names_the_extra_and_the_command(monkeypatch):
    monkeypatch.setitem(_optional.EXTRA_MODULES, "ogbench", ("ogbench", "surely_not_installed_module"))
    with pytest.raises(_optional.MissingExtraError) as caught:
        _optional.require_extra("qgf_lite.ogbench", "ogbench")
    message = str(caught.value)
    assert "surely_not_installed_module" in message and "pip install 'qgf_lite[ogbench]'" in message
    assert "ogbench," not in message  # only what is missing is listed
    assert isinstance(caught.value, ImportError)  # `except ImportError` still catches it


def test_installed_extras_pass_silently():
    for extra in _optional.EXTRA_MODULES:
        _optional.require_extra("part", extra)  # the dev install has every extra


def test_every_checked_extra_exists_in_pyproject():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(_optional.EXTRA_MODULES) <= set(extras)
    assert "qgf_lite[ogbench,lab,course]" in extras["dev"]


def test_the_0_1_import_paths_are_gone_as_announced():
    # CHANGELOG 0.3: the aliases kept for notebooks handed out with 0.1 were removed.
    import importlib

    for old in (
        "qgf_lite.metrics",
        "qgf_lite.toy_experiments",
        "qgf_lite.evaluation",
        "qgf_lite.ogbench_train",
        "qgf_lite.ogbench_data",
    ):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(old)
