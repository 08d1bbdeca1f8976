"""The student's road: `python -m qgf_lite.courseware build --out dist` writes dist/course/ with all six notebooks in
order (student versions: exercises left to do, 05 included) and a README that lists them in that order."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("nbformat", reason="the courseware needs the course extra")

from qgf_lite.courseware.build import build  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SIX = [
    "01_flow_matching",
    "02_critic_learning",
    "03_guided_sampling",
    "04_test_time_compute",
    "05_ogbench_manipulation",
    "06_test_time_vs_training_time",
]


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    build(out, notebooks_dir=REPO / "notebooks", log=lambda *a: None)
    return out


def test_course_folder_holds_all_six_notebooks_and_a_readme(dist):
    course = dist / "course"
    assert sorted(p.name for p in course.iterdir()) == sorted([f"{s}.ipynb" for s in SIX] + ["README.md"])
    readme = (course / "README.md").read_text()
    positions = [readme.index(f"[{s}.ipynb]") for s in SIX]
    assert positions == sorted(positions), "the README lists the notebooks out of order"
    for i, stem in enumerate(SIX, start=1):
        assert re.search(rf"\| {i} \| \[{stem}\.ipynb\]\({stem}\.ipynb\): \S", readme), stem


def test_course_notebooks_are_the_student_versions(dist):
    for stem in SIX:
        text = (dist / "course" / f"{stem}.ipynb").read_text()
        cells = ["".join(c["source"]) for c in json.loads(text)["cells"]]
        exercises = [c for c in cells if re.match(r"\s*# EXERCISE \S+:", c)]
        assert exercises, f"{stem}: no exercise"
        assert all("raise NotImplementedError" in c for c in exercises), f"{stem}: an exercise is solved"
        assert "### BEGIN SOLUTION" not in text and "### END SOLUTION" not in text
        assert text == (dist / "student" / f"{stem}.ipynb").read_text()


def test_readme_quick_start_opens_the_course_folder():
    readme = (REPO / "README.md").read_text()
    quick = readme[readme.index("## Quick start") : readme.index("**Developers**")]
    assert "python -m qgf_lite.courseware build --out dist" in quick
    assert "jupyter lab dist/course" in quick
