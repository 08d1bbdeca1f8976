"""Tamper-resistant grading: the adversarial submissions of tests/fixtures/grading get their expected grades.

All fixtures are graded in one batch call with --jobs 2 (the expensive part, shared by the tests through a
module fixture); determinism is checked by regrading a small subset.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
from hostile_grading import interpreter_reachable_by_others, require_backend

from qgf_lite import courseware as cw
from qgf_lite.courseware import grading
from qgf_lite.courseware.batch import Gradebook, match_reference
from qgf_lite.courseware.sandbox import probe_backend

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "grading"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
SEED = "424242"
QUESTION_TIMEOUT = "20"  # generous for a loaded 2-core machine; the two looping fixtures each wait this long


@pytest.fixture(scope="module")
def autograder(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    cw.build(out, [REPO / "notebooks" / "01_flow_matching.ipynb"], log=lambda _: None)
    return out / "autograder"


@pytest.fixture(scope="module")
def graded(autograder, tmp_path_factory):
    """Every fixture graded in one call (with the warmed JAX cache; the determinism test regrades without)."""
    root = tmp_path_factory.mktemp("class")
    subs = root / "submissions"
    subs.mkdir()
    for path in FIXTURES.glob("*.ipynb"):
        shutil.copy(path, subs / path.name)
    (subs / "truncated_01_flow_matching.ipynb").write_text((FIXTURES / "correct.ipynb").read_text()[:2000])
    nb = cw.read_notebook(FIXTURES / "blank.ipynb")
    nb.metadata.pop("qgf_courseware")
    nbformat.write(nb, subs / "homework.ipynb")  # neither metadata nor file name say which assignment it is
    out = root / "out" / "grades.csv"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "qgf_lite.courseware",
            "grade",
            str(subs),
            "--autograder-dir",
            str(autograder),
            "--out",
            str(out),
            "--jobs",
            "2",
            "--seed",
            SEED,
            "--question-timeout",
            QUESTION_TIMEOUT,
            "--memory",
            "1.5",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out, newline="") as handle:
        rows = {Path(row["submission"]).stem: row for row in csv.DictReader(handle)}
    reports = {
        Path(r["submission"]).stem: r for r in map(json.loads, (out.parent / "reports.jsonl").read_text().splitlines())
    }
    return {"root": root, "subs": subs, "out": out, "rows": rows, "reports": reports, "stderr": done.stderr}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_gets_its_expected_grade(graded, name):
    row = graded["rows"][name]
    want = EXPECTED[name]
    got = {q: float(row[q]) for q in want["questions"]}
    assert got == {q: float(v) for q, v in want["questions"].items()}, (name, row["status"])
    assert float(row["total"]) == want["total"] and row["max_total"] == "6"


def test_failures_say_why(graded):
    rows, reports = graded["rows"], graded["reports"]
    assert rows["infinite_loop"]["status"] == "1.4: time limit exceeded while calling euler_sample"
    assert rows["interrupt_swallowing_loop"]["status"] == "1.4: time limit exceeded while calling euler_sample"
    assert "died (exit code 3)" in rows["kernel_dies"]["status"]
    assert rows["memory_hog"]["status"] == "1.3: memory limit exceeded (1.5 GiB resident)"
    assert rows["syntax_error"]["status"] == "1.2: syntax error"
    assert "SyntaxError" in reports["syntax_error"]["questions"]["1.2"]["message"]
    assert "raised ValueError: oops" in reports["exception"]["questions"]["1.3"]["message"]
    # Code naming the package's implementation is reported; it scores 0 because the sandbox has no qgf_lite.
    status = rows["cheat_reference_imports"]["status"]
    assert "1.1: names the package's implementation (qgf_lite.flow.interpolate)" in status
    assert "reference_flow_matching_loss" in status
    assert "not available while grading" in reports["cheat_reference_imports"]["questions"]["1.1"]["message"]
    assert "the last one was graded" in reports["duplicated_cell"]["questions"]["1.1"]["message"]
    hard = reports["hard_coded_1_3"]["questions"]["1.3"]["checks"]
    assert not any(c["passed"] for c in hard)  # public check (on grading-seed inputs) and hidden ones
    assert rows["truncated_01_flow_matching"]["status"].startswith("unreadable:")
    assert rows["truncated_01_flow_matching"]["total"] == "0"
    assert rows["homework"]["status"].startswith("unmatched:")
    # Typical bugs are named by the public check's message.
    assert "swapped" in reports["bugs_1_1_and_1_3"]["questions"]["1.1"]["message"]
    assert "forgets dt" in reports["bugs_1_1_and_1_3"]["questions"]["1.3"]["message"]
    assert "wrong sign" in reports["bugs_1_2_and_1_4"]["questions"]["1.2"]["message"]
    assert "not clipped" in reports["bugs_1_2_and_1_4"]["questions"]["1.4"]["message"]


def test_feedback_shows_public_messages_and_names_failed_hidden_checks_without_inputs(graded):
    feedback = graded["out"].parent / "feedback"
    files = sorted(p.name for p in feedback.glob("*.md"))
    assert len(files) == len(graded["rows"])
    text = next(feedback.glob("*bugs_1_1_and_1_3.md")).read_text()
    assert "**2 / 6 points**" in text
    assert "swapped" in text  # the public message
    assert 'hidden check "other batch sizes and action dimensions" (0 / 0.25): failed' in text
    correct = next(feedback.glob("*correct.md")).read_text()
    assert "**6 / 6 points**" in correct and "failed" not in correct


def test_a_submission_cannot_write_outside_its_folder(graded):
    if probe_backend("bwrap") and probe_backend("unshare"):
        pytest.skip(
            "no namespace sandbox here (bwrap or unshare); tests/courseware/test_grading_container.py covers the uid "
            "backend"
        )
    subs, root = graded["subs"], graded["root"]
    assert sorted(p.name for p in subs.iterdir() if not p.name.endswith(".ipynb")) == []
    assert not (root / "escaped_by_submission.txt").exists()
    assert not Path("/tmp/escaped_by_submission.txt").exists()
    assert not (Path.home().parent / "escaped_by_submission.txt").exists()
    assert graded["rows"]["writes_files"]["total"] == "6"


def test_grades_are_deterministic_and_a_rerun_resumes(graded, autograder, tmp_path):
    subset = ["correct", "hard_coded_1_3"]
    rows = cw.grade_batch(
        [graded["subs"] / f"{n}.ipynb" for n in subset],
        out=tmp_path / "again.csv",
        autograder_dir=autograder,
        jobs=2,
        seed=int(SEED),
        progress=False,
        log=lambda _: None,
        limits=cw.Limits(question_timeout=float(QUESTION_TIMEOUT)),
        warm_cache=False,
    )
    again = {Path(r["submission"]).stem: r for r in rows}
    for name in subset:
        first = {k: v for k, v in graded["rows"][name].items() if k != "submission"}
        assert {k: v for k, v in again[name].items() if k != "submission"} == first
    # Same command again: everything is already in the gradebook, nothing is regraded.
    messages = []
    assert (
        cw.grade_batch(
            [graded["subs"] / f"{n}.ipynb" for n in subset],
            out=tmp_path / "again.csv",
            autograder_dir=autograder,
            seed=int(SEED),
            progress=False,
            log=messages.append,
        )
        == []
    )
    assert messages == ["resuming: 2 of 2 submissions already in " + str(tmp_path / "again.csv")]


def test_gradebook_appends_rows_and_keeps_them_when_columns_change(tmp_path):
    book = Gradebook(tmp_path / "g.csv", ["1.1"])
    book.add(
        "a.ipynb",
        {
            "assignment": "x",
            "questions": {
                "1.1": {"points": 1.0, "title": "t", "max_points": 1, "checks": [], "message": "m", "flags": []}
            },
            "total": 1.0,
            "max_total": 1.0,
            "status": "ok",
        },
    )
    again = Gradebook(tmp_path / "g.csv", ["1.1", "2.1"])
    assert list(again.done) == ["a.ipynb"]
    assert (tmp_path / "g.csv").read_text().splitlines() == [
        "submission,assignment,1.1,2.1,total,max_total,status",
        "a.ipynb,x,1,,1,1,ok",
    ]


def test_reference_uses_are_read_from_the_code():
    forbidden = ("qgf_lite.flow:euler_sample",)
    assert cw.find_reference_uses("def f(v, n, s):\n    return qgf_lite.euler_sample(v, None, n)", forbidden)
    assert cw.find_reference_uses("from qgf_lite.flow import euler_sample as e\ndef f():\n    return e", forbidden)
    assert cw.find_reference_uses("def f():\n    return E()", forbidden, ["from qgf_lite import euler_sample as E"])
    assert cw.find_reference_uses("def f():\n    return getattr(q, 'euler_sample')", forbidden)
    assert not cw.find_reference_uses("def euler_sample(v, n, s):\n    return n", forbidden)
    assert not cw.find_reference_uses("def f(a0, a1, t):\n    return qgf_lite.interpolate(a0, a1, t)", forbidden)


def test_match_reference_by_metadata_then_name(tmp_path):
    references = {"01_flow_matching": Path("a.ipynb"), "02_critic_learning": Path("b.ipynb")}
    renamed = tmp_path / "whatever.ipynb"
    shutil.copy(FIXTURES / "blank.ipynb", renamed)
    assert match_reference(renamed, references) == Path("a.ipynb")
    garbage = tmp_path / "alice_02_critic_learning.ipynb"
    garbage.write_text("{")
    assert match_reference(garbage, references) == Path("b.ipynb")
    assert match_reference(tmp_path / "alice.ipynb", references) is None


def test_gradescope_autograder_zip_grades_a_submission(autograder, tmp_path):
    out = autograder.parent
    assert (
        cw.main(
            [
                "build",
                str(REPO / "notebooks" / "01_flow_matching.ipynb"),
                "--out",
                str(out),
                "--gradescope",
                "--release",
                "0.2.0",
            ]
        )
        == 0
    )
    archive = out / "gradescope" / "01_flow_matching" / "autograder.zip"
    root = tmp_path / "autograder"
    with zipfile.ZipFile(archive) as handle:
        assert sorted(handle.namelist()) == [
            "01_flow_matching.ipynb",
            "grading_seed.txt",
            "requirements.txt",
            "run_autograder",
            "setup.sh",
        ]
        handle.extractall(root / "source")
    assert (root / "source" / "requirements.txt").read_text() == "qgf_lite[course]==0.2.0\n"
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
    (root / "submission").mkdir()
    shutil.copy(FIXTURES / "bugs_1_1_and_1_3.ipynb", root / "submission" / "my_notebook.ipynb")
    # The uid backend (Gradescope's default) needs root: tests/courseware/test_grading_container.py runs it; here any works.
    env = dict(
        os.environ,
        GRADESCOPE_ROOT=str(root),
        QGF_PYTHON=sys.executable,
        PYTHONPATH=str(REPO),
        QGF_SANDBOX_BACKEND="auto",
    )
    done = subprocess.run(["bash", str(root / "run_autograder")], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == 2.0
    tests = {t["name"]: t for t in results["tests"]}
    public = tests["1.1 Interpolate between noise and data: public check"]
    assert public["score"] == 0 and public["max_score"] == 0.5 and "swapped" in public["output"]
    hidden = [t for t in results["tests"] if "hidden check" in t["name"]]
    assert hidden and all(t["visibility"] == "after_published" for t in hidden)
    assert sum(t["max_score"] for t in results["tests"]) == 6.0


CHECK_FAILURE_NOTEBOOK = [
    "from qgf_lite import checks\nimport jax.numpy as jnp",
    "def interpolate(a0, a1, t):\n    return a0",
    "checks.check_interpolation(interpolate)",
    "print('not reached')",
]


def test_a_failing_check_shows_one_message_in_a_real_kernel():
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in CHECK_FAILURE_NOTEBOOK])
    client = NotebookClient(nb, timeout=120, kernel_name="python3")
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    with pytest.raises(CellExecutionError):  # "Run All" stops at the failing check (nbmake fails too)
        with client.setup_kernel(env=env):
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)
    error = next(o for o in nb.cells[2].outputs if o.output_type == "error")
    text = "\n".join(error.traceback)
    assert error.ename == "CheckFailed"
    assert "qgf_lite/checks" not in text and "_reference" not in text and "File " not in text
    assert len(error.traceback) <= 3
    assert "interpolation: a_t is off" in text or "interpolation: a_t differs" in text
    assert nb.cells[3].outputs == []


def test_check_messages_for_unfinished_functions_and_unexplained_mismatches():
    import jax.numpy as jnp

    from qgf_lite import checks
    from qgf_lite.checks import CheckFailed

    def none_loss(velocity, obs, a0, a1, t):
        jnp.sum(a0)  # forgot the return

    with pytest.raises(CheckFailed, match="returned None") as info:
        checks.check_flow_matching_loss(none_loss)
    assert "axis" not in str(info.value)
    with pytest.raises(CheckFailed, match="all zeros") as info:
        checks.check_flow_matching_loss(lambda velocity, obs, a0, a1, t: 0.0)
    assert "constant factor" not in str(info.value)
    with pytest.raises(CheckFailed) as info:  # an unrecognised mistake that no single factor explains
        checks.check_flow_matching_loss(lambda velocity, obs, a0, a1, t: jnp.mean(jnp.square(a1)) + 1.0)
    assert "constant factor" not in str(info.value) and "differs from the reference" in str(info.value)

    def doubled(velocity, obs, a0, a1, t):
        tc = t[:, None]
        a_t = (1 - tc) * a0 + tc * a1
        return 2.0 * jnp.mean(jnp.sum(jnp.square(velocity(obs, a_t, t) - (a1 - a0)), axis=-1))

    with pytest.raises(CheckFailed, match="times 2 for every input: a constant factor"):
        checks.check_flow_matching_loss(doubled)


def test_the_grading_seed_changes_the_public_inputs():
    from qgf_lite.checks._core import grading_seed, random_inputs

    public = random_inputs(11, [(2, 3)])[0]
    assert (random_inputs(11, [(2, 3)])[0] == public).all()
    with grading_seed(99):
        graded = random_inputs(11, [(2, 3)])[0]
    assert not (graded == public).any()


def test_the_warmed_jax_cache_serves_every_compilation_of_a_sandboxed_solution(autograder, tmp_path):
    """Each sandbox runs in its own folder; a cache key that depended on it would miss every warmed entry and
    double the grading time (it did: JAX puts a GPU autotuning folder under the cache folder into the key)."""
    require_backend("uid")  # the backend that keeps its child's cache folder on disk
    reference = autograder / "01_flow_matching.ipynb"
    warmed, again, graded = tmp_path / "warmed", tmp_path / "again", tmp_path / "graded"
    assert grading.warm_jax_cache(reference, warmed)
    grading.warm_jax_cache(reference, again)
    names = sorted(p.name for p in warmed.iterdir())
    assert len(names) > 20
    assert sorted(p.name for p in again.iterdir()) == names  # two trusted runs in two folders: the same keys
    with interpreter_reachable_by_others():
        report = grading.grade_submission(
            FIXTURES / "correct.ipynb", reference, backend="uid", jax_cache=warmed, keep_jax_cache=graded
        )
    assert report["total"] == report["max_total"]
    new = sorted(set(p.name for p in graded.iterdir()) - set(names))
    assert not new, f"the sandboxed child compiled {len(new)} programs the warmed cache should have held: {new[:5]}"
