"""pyproject.toml and environment.yml must install the same packages."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _normalise(requirement: str) -> str:
    name, rest = re.match(r"^\s*([A-Za-z0-9_.\-\[\]]+)\s*(.*)$", requirement).groups()
    return re.sub(r"[-_.]+", "-", name).lower() + rest.replace(" ", "")


def _environment_pip_list():
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    items = []
    for line in lines[start + 1 :]:
        stripped = line.strip()
        if not stripped.startswith("- "):
            break
        item = stripped[2:].strip()
        if not item.startswith("-e"):
            items.append(item)
    return items


def _expand_extra(extras: dict, extra: str) -> list:
    """An extra's requirements with its references to other extras (``qgf_lite[a,b]``) expanded."""
    out = []
    for requirement in extras[extra]:
        nested = re.fullmatch(r"qgf_lite\[(.*)\]", requirement)
        out += (
            [r for e in nested.group(1).split(",") for r in _expand_extra(extras, e.strip())]
            if nested
            else [requirement]
        )
    return out


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_normalise(r) for r in project["dependencies"] + _expand_extra(project["optional-dependencies"], "dev")}
    have = {_normalise(r) for r in _environment_pip_list()}
    assert have == wanted, f"environment.yml lacks {sorted(wanted - have)} and has extra {sorted(have - wanted)}"


def test_environment_yml_installs_the_package_itself():
    assert any(line.strip() == "- -e ." for line in (ROOT / "environment.yml").read_text().splitlines())


def test_python_versions_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11,<3.13"
    env = (ROOT / "environment.yml").read_text()
    assert re.search(r"python=3\.1[12]\b", env)
