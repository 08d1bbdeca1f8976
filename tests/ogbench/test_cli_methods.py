"""`qgf-lite eval --methods` takes names separated by spaces, commas or both (notebook 06 prints `bc,qgf,fql`)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("ogbench", reason="the qgf-lite command line needs the ogbench extra")

from qgf_lite.ogbench import cli  # noqa: E402


@pytest.mark.parametrize("given", [["bc,qgf,fql"], ["bc", "qgf", "fql"], ["bc,", "qgf", ",fql"], ["bc, qgf", "fql"]])
def test_methods_accept_commas_and_spaces(given):
    args = cli.build_parser().parse_args(["eval", "run/checkpoint.msgpack", "--methods", *given])
    assert args.methods == ["bc", "qgf", "fql"]


def test_methods_default_is_bc_and_qgf():
    """No --methods: the setting keeps EvalConfig's default."""
    from qgf_lite.ogbench.evaluation import EvalConfig

    args = cli.build_parser().parse_args(["eval", "run/checkpoint.msgpack"])
    assert cli.eval_settings(args).methods == EvalConfig().methods == ("bc", "qgf")
    given = cli.build_parser().parse_args(["eval", "run/checkpoint.msgpack", "--methods", "bc,qgf,fql"])
    assert cli.eval_settings(given).methods == ("bc", "qgf", "fql")


@pytest.mark.parametrize("given, bad", [(["bc,magic"], "magic"), (["bc", "qgf,fq"], "fq")])
def test_unknown_method_in_a_comma_list_is_named(given, bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["eval", "run/checkpoint.msgpack", "--methods", *given])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"invalid choice: {bad!r}" in err and "commas" in err


def test_only_commas_is_an_error(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["eval", "run/checkpoint.msgpack", "--methods", ","])
    assert "name at least one method" in capsys.readouterr().err


def test_notebook_06_command_parses():
    """The closing command of notebook 06 is one the CLI accepts."""
    import json
    from pathlib import Path

    notebook = Path(__file__).resolve().parents[2] / "notebooks" / "06_test_time_vs_training_time.ipynb"
    text = "".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"])
    start = text.index("`qgf-lite eval ")
    command = text[start + 1 : text.index("`", start + 1)].split()
    args = cli.build_parser().parse_args(command[1:])
    assert "fql" in args.methods and args.checkpoint
