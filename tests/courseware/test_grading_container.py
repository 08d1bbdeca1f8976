"""The container backend (uid: root without user namespaces, as on Docker and Gradescope) and Gradescope's layout.

Runs where the tests run as root (CI does); elsewhere it is skipped with the reason.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

import pytest
from hostile_grading import (
    HOSTILE,
    REPO,
    check_expected_grades,
    check_hostile_text_is_bounded,
    check_nothing_escaped,
    grade_hostile,
    interpreter_reachable_by_others,
    marked_processes,
    require_backend,
)

from qgf_lite import courseware as cw


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "qgf_lite.courseware",
            "build",
            str(REPO / "notebooks" / "01_flow_matching.ipynb"),
            "--out",
            str(out),
            "--gradescope",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_hostile_submissions_under_the_uid_backend(built, tmp_path):
    require_backend("uid")
    with interpreter_reachable_by_others():
        graded = grade_hostile(built / "autograder", tmp_path, "uid")
    check_expected_grades(graded)
    check_nothing_escaped(graded)
    check_hostile_text_is_bounded(graded)
    # The package and the clone's notebooks were closed to "other" before any student code ran.
    assert not os.stat(REPO / "qgf_lite").st_mode & 0o007
    assert not os.stat(REPO / "notebooks").st_mode & 0o007


def test_the_gradescope_zip_holds_no_solution(built):
    archive = zipfile.ZipFile(built / "gradescope" / "01_flow_matching" / "autograder.zip")
    text = "".join(archive.read(name).decode() for name in archive.namelist())
    assert "(1.0 - t) * a0 + t * a1" not in text  # the 1.1 solution
    assert "raise NotImplementedError" in text
    modes = {info.filename: (info.external_attr >> 16) & 0o777 for info in archive.infolist()}
    assert all(mode & 0o007 == 0 for mode in modes.values()), modes
    assert "python3.11" in archive.read("setup.sh").decode()
    assert subprocess.run(["bash", "-n", "-c", archive.read("setup.sh").decode()]).returncode == 0


@pytest.mark.parametrize("name, score", [("honest", 6.0), ("daemons", 1.0), ("read_the_source", 0.0)])
def test_run_autograder_as_root_under_gradescopes_layout(built, tmp_path, name, score):
    require_backend("uid")
    root = tmp_path / "autograder"
    (root / "submission").mkdir(parents=True)
    with zipfile.ZipFile(built / "gradescope" / "01_flow_matching" / "autograder.zip") as archive:
        archive.extractall(root / "source")
    shutil.copy(HOSTILE / f"{name}_01_flow_matching.ipynb", root / "submission" / "homework.ipynb")
    env = dict(os.environ, GRADESCOPE_ROOT=str(root), QGF_PYTHON=sys.executable)
    env.pop("QGF_SANDBOX_BACKEND", None)
    with interpreter_reachable_by_others():
        done = subprocess.run(
            ["bash", str(root / "source" / "run_autograder")], capture_output=True, text=True, env=env, timeout=600
        )
    assert done.returncode == 0, done.stderr[-3000:]
    results_path = root / "results" / "results.json"
    first = results_path.read_text()
    time.sleep(10)  # the daemon would rewrite results.json within 8 s
    assert results_path.read_text() == first
    results = json.loads(first)
    assert results["score"] == score, results["output"]
    assert "qgf_escape" not in first
    assert marked_processes() == []
    assert not os.stat(root / "source").st_mode & 0o007


def test_without_a_sandbox_grading_refuses_with_the_fix(monkeypatch):
    from qgf_lite.courseware import sandbox

    monkeypatch.setattr(sandbox, "_PROBES", {"bwrap": "not installed", "unshare": "no namespaces", "uid": "not root"})
    monkeypatch.delenv("QGF_SANDBOX_BACKEND", raising=False)
    with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap.*--unsafe-no-sandbox"):
        sandbox.choose_backend()
    assert sandbox.choose_backend(unsafe=True) == "none"
    with pytest.raises(sandbox.SandboxUnavailable, match="--unsafe-no-sandbox"):
        sandbox.choose_backend("none")


def test_the_grade_command_refuses_in_one_message_where_no_sandbox_works(monkeypatch, tmp_path, capsys):
    from qgf_lite.courseware import sandbox

    monkeypatch.setattr(sandbox, "_PROBES", {"bwrap": "not installed", "unshare": "no namespaces", "uid": "not root"})
    monkeypatch.delenv("QGF_SANDBOX_BACKEND", raising=False)
    submission = tmp_path / "alice_01_flow_matching.ipynb"
    shutil.copy(HOSTILE / "honest_01_flow_matching.ipynb", submission)
    code = cw.main(
        [
            "grade",
            str(submission),
            "--reference",
            str(REPO / "notebooks" / "01_flow_matching.ipynb"),
            "--out",
            str(tmp_path / "grades.csv"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("error:") == 1 and "apt-get install bubblewrap" in err and "Traceback" not in err
    assert not (tmp_path / "grades.csv").exists()
