"""Courseware generator and autograder, on a small fixture assignment.

The fixture (tests/fixtures/courseware_assignment.ipynb) has three numpy
exercises with inline checks, a cell tagged `setup`, a training-loop stand-in
the grader must skip, and a `solution-only` cell.
"""

import ast
import copy
import json
import re
from pathlib import Path

import nbformat
import pytest

from qgf_lite import courseware as cw

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "courseware_assignment.ipynb"
NO_EXERCISES = REPO / "tests" / "fixtures" / "slider_plot.ipynb"
POINTS = {"1.1": 2.0, "1.2": 1.0, "1.3": 3.0}


def solution_lines(nb):
    """Every non-blank line written between the solution markers, stripped."""
    lines = []
    for cell in nb.cells:
        inside = False
        for line in cell.source.splitlines():
            if line.strip() == cw.BEGIN_SOLUTION:
                inside = True
            elif line.strip() == cw.END_SOLUTION:
                inside = False
            elif inside and line.strip():
                lines.append(line.strip())
    return lines


def cell_with_header(nb, ex_id):
    matches = [c for c in nb.cells if c.source.lstrip().startswith(f"# EXERCISE {ex_id}:")]
    assert len(matches) == 1
    return matches[0]


@pytest.fixture(scope="module")
def source():
    return cw.read_notebook(FIXTURE)


@pytest.fixture(scope="module")
def dist(tmp_path_factory, source):
    out = tmp_path_factory.mktemp("dist")
    messages = []
    built = cw.build(out, [FIXTURE, NO_EXERCISES], log=messages.append)
    return out, built, messages


def test_find_exercises_reads_ids_titles_points_and_checks(source):
    exercises = cw.find_exercises(source)
    assert {ex.id: ex.points for ex in exercises} == POINTS
    for ex in exercises:
        assert cw.check_id(source.cells[ex.check_index]) == ex.id
        assert ex.check_index > ex.cell_index
    assert exercises[0].title == "Interpolate between noise and data"


def test_student_version_has_no_solutions_no_outputs_and_valid_stubs(source):
    with_outputs = copy.deepcopy(source)
    for count, cell in enumerate(c for c in with_outputs.cells if c.cell_type == "code"):
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
        cell.execution_count = count + 1
    student = cw.make_student_notebook(with_outputs, name="fixture.ipynb")

    text = nbformat.writes(student)
    exercise_text = "\n".join(c.source for c in student.cells if cw.exercise_header(c))
    answers = solution_lines(source)
    assert "return (1 - t) * a0 + t * a1" in answers  # the helper really found the solutions
    for answer in answers:  # (check messages may quote a formula as a hint, so look at exercises)
        assert answer not in exercise_text, f"solution line leaked into the student version: {answer!r}"
    assert cw.BEGIN_SOLUTION not in text and cw.END_SOLUTION not in text
    assert "teacher note" not in text  # solution-only cell dropped
    for cell in student.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
            ast.parse(cw.to_python(cell.source))

    # The stub sits where the solution was: inside the loop body for 1.3.
    stub = cell_with_header(student, "1.3").source.splitlines()
    raise_line = next(line for line in stub if "NotImplementedError" in line)
    assert raise_line == '        raise NotImplementedError("Exercise 1.3: Euler sampler")'
    todo_line = stub[stub.index(raise_line) - 1]
    assert todo_line.startswith("        # TODO") and "1.3" in todo_line
    # Check cells stay so students can run them.
    assert sum(cw.check_id(c) is not None for c in student.cells) == 3


def test_grader_runs_setup_exercise_and_check_cells_only(source):
    exercises = cw.find_exercises(source)
    graded = cw.graded_cell_indices(source, exercises)
    sources = [source.cells[i].source for i in graded]
    assert any(s.startswith("import os") for s in sources)  # recognised as cheap setup
    assert any("VELOCITY_CASE =" in s for s in sources)  # included through its `setup` tag
    assert not any(s.startswith("for _ in range(3)") for s in sources)  # training loop skipped
    assert not any("teacher note" in s for s in sources)  # solution-only cells never graded
    # imports, tagged setup, check helpers, then three exercise + check pairs
    assert graded == [1, 2, 3, 5, 6, 7, 8, 12, 13]


@pytest.mark.parametrize(
    "code, cheap",
    [
        ("import numpy as np\nfrom jax import numpy as jnp", True),
        ('SMOKE = bool(os.environ.get("CI") or os.environ.get("QGF_SMOKE"))\nSTEPS = 10 if SMOKE else 10_000', True),
        ("%load_ext autoreload\n%autoreload 2\nimport qgf_lite", True),
        ("def f(x):\n    return train(x)\n\nclass A:\n    x: int = 3", True),
        ("state = fit(config, data)", False),
        ("for step in range(100):\n    pass", False),
        ("import numpy as np\nX = np.random.default_rng(0).normal(size=3)", False),
        ("!pip install qgf_lite", False),
        ("def broken(:\n", False),
        ("", False),
    ],
)
def test_is_setup_code(code, cheap):
    assert cw.is_setup_code(code) is cheap


def test_solutions_get_full_marks_against_the_source_notebook():
    report = cw.grade_notebook(FIXTURE, FIXTURE)  # the source notebook (with solutions) serves as reference
    assert {q: v["points"] for q, v in report["questions"].items()} == POINTS
    assert report["total"] == report["max_total"] == sum(POINTS.values())
    assert report["questions"]["1.3"]["message"] == "check_euler_sample passed"
    assert report["status"] == "ok"
    with pytest.raises(ValueError, match="a submission's own check cells are never trusted"):
        cw.grade_notebook(FIXTURE)


def test_untouched_student_version_gets_zero_via_cli(dist, tmp_path):
    out, _, _ = dist
    book = tmp_path / "grades.csv"
    code = cw.main(
        [
            "grade",
            str(out / "student" / FIXTURE.name),
            "--autograder-dir",
            str(out / "autograder"),
            "--out",
            str(book),
            "--no-progress",
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "reports.jsonl").read_text().splitlines()[0])
    assert report["reference"].endswith(str(Path("autograder") / FIXTURE.name))
    assert report["total"] == 0 and report["max_total"] == sum(POINTS.values())
    for ex_id, question in report["questions"].items():
        assert not question["passed"]
        assert question["message"].startswith(f"NotImplementedError: Exercise {ex_id}")
    header, row = book.read_text().splitlines()
    assert header == "submission,assignment,1.1,1.2,1.3,total,max_total,status"
    assert row.endswith(",courseware_assignment,0,0,0,0,6,ok")


def test_typical_mistake_loses_exactly_that_question(dist, tmp_path):
    out, _, _ = dist
    submission = cw.read_notebook(out / "solutions" / FIXTURE.name)
    exercise = cell_with_header(submission, "1.1")
    assert "(1 - t) * a0" in exercise.source
    exercise.source = exercise.source.replace("(1 - t) * a0", "a0")
    # The student also "fixes" the failing check; the reference's check must still be used.
    check = next(c for c in submission.cells if cw.check_id(c) == "1.1")
    check.source = "pass"
    path = tmp_path / "submission.ipynb"
    nbformat.write(submission, path)

    report = cw.grade_notebook(path, out / "autograder" / FIXTURE.name)
    points = {q: v["points"] for q, v in report["questions"].items()}
    assert points == {"1.1": 0.0, "1.2": 1.0, "1.3": 3.0}
    assert report["total"] == 4.0
    assert "(1 - t) * a0 + t * a1" in report["questions"]["1.1"]["message"]
    assert report["questions"]["1.1"]["message"].startswith("AssertionError")


def test_build_writes_expected_tree_and_skips_notebooks_without_exercises(dist):
    out, built, messages = dist
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    name = FIXTURE.name
    assert files == sorted(
        [
            f"student/{name}",
            f"solutions/{name}",
            f"autograder/{name}",
            "autograder/README.md",
            "autograder/grade.py",
            "autograder/grading_seed.txt",
            "course/README.md",
            f"course/{name}",
            f"course/{Path(NO_EXERCISES).name}",
        ]
    )
    # What students must not see is the teacher's alone (the uid sandbox backend relies on it).
    assert (out / "solutions").stat().st_mode & 0o077 == 0 and (out / "autograder").stat().st_mode & 0o077 == 0
    assert int((out / "autograder" / "grading_seed.txt").read_text()) > 0
    assert list(built) == [FIXTURE.stem]
    assert any(m.startswith(f"skip {NO_EXERCISES}") for m in messages)

    solutions = cw.read_notebook(out / "solutions" / name)
    assert "return (1 - t) * a0 + t * a1" in nbformat.writes(solutions)
    assert cw.BEGIN_SOLUTION not in nbformat.writes(solutions)
    autograder = cw.read_notebook(out / "autograder" / name)
    assert not any(c.source.startswith("for _ in range(3)") for c in autograder.cells)
    assert autograder.metadata[cw.METADATA_KEY]["questions"]["1.3"]["points"] == 3.0
    readme = (out / "autograder" / "README.md").read_text()
    assert re.search(r"\| courseware_assignment \| 1\.3: Euler sampler \| 3 \|", readme)


def test_build_cli_finds_assignments_by_name_and_selftests(tmp_path, capsys):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    (notebooks / "01_flow_matching.ipynb").write_text(FIXTURE.read_text())
    (notebooks / "03_guided_sampling.ipynb").write_text(NO_EXERCISES.read_text())
    args = ["build", "--out", str(tmp_path / "dist"), "--notebooks-dir", str(notebooks), "--selftest"]
    assert cw.main(args) == 0
    log = capsys.readouterr().out
    assert "built 01_flow_matching.ipynb: 3 exercises, 6 points" in log
    assert "selftest passed: 1 assignments" in log
    assert "02_critic_learning.ipynb: not found" in log
    assert "03_guided_sampling.ipynb: no '# EXERCISE" in log
    student = cw.read_notebook(tmp_path / "dist" / "student" / "01_flow_matching.ipynb")
    assert student.metadata[cw.METADATA_KEY]["assignment"] == "01_flow_matching"


def test_selftest_reports_a_solution_that_fails_its_check(dist, tmp_path):
    out, built, _ = dist
    broken = tmp_path / "dist"
    for part in ("solutions", "student", "autograder"):
        (broken / part).mkdir(parents=True)
        (broken / part / FIXTURE.name).write_text((out / part / FIXTURE.name).read_text())
    solutions = cw.read_notebook(broken / "solutions" / FIXTURE.name)
    exercise = cell_with_header(solutions, "1.2")
    exercise.source = exercise.source.replace("return a1 - a0", "return a0 - a1")
    nbformat.write(solutions, broken / "solutions" / FIXTURE.name)
    problems = cw.selftest(broken, built)
    assert len(problems) == 1 and problems[0].startswith(f"{FIXTURE.stem} solutions: exercise 1.2 fails")


def test_release_pins_the_install_cell_which_the_grader_never_runs(tmp_path, monkeypatch):
    release = "qgf_lite @ git+https://example.org/qgf_lite.git@v9.9.9"
    cw.build(tmp_path, [FIXTURE], release=release, log=lambda _: None)
    student = cw.read_notebook(tmp_path / "student" / FIXTURE.name)
    first_code = next(c for c in student.cells if c.cell_type == "code")
    assert "install" in first_code.metadata.tags and repr(release) in first_code.source
    assert not cw.is_setup_cell(first_code)  # the grader must not pip install
    autograder = cw.read_notebook(tmp_path / "autograder" / FIXTURE.name)
    assert release not in nbformat.writes(autograder)

    class Done:
        returncode = 0
        stderr = ""

    calls = []
    monkeypatch.setattr("subprocess.run", lambda args, **k: calls.append(args[-1]) or Done())
    monkeypatch.delenv("QGF_LITE_SOURCE", raising=False)
    exec(first_code.source, {})
    assert calls == []  # qgf_lite is installed here: the cell does nothing
    monkeypatch.setenv("QGF_LITE_SOURCE", "/wheels/qgf_lite-0.2.0-py3-none-any.whl")
    exec(first_code.source, {})
    assert calls == ["/wheels/qgf_lite-0.2.0-py3-none-any.whl"]  # the teacher's or CI's pin wins

    with pytest.raises(ValueError, match="one pip requirement"):
        cw.build(tmp_path / "other", [FIXTURE], release="a\nb", log=lambda _: None)
    assert not (tmp_path / "other").exists()


def test_bad_notebooks_raise_clear_errors(source, tmp_path):
    no_check = copy.deepcopy(source)
    for cell in no_check.cells:
        if cw.check_id(cell) == "1.2":
            cell.metadata["tags"] = []
    with pytest.raises(ValueError, match="exercise 1.2 .*check:1.2"):
        cw.make_student_notebook(no_check)

    unclosed = copy.deepcopy(source)
    exercise = cell_with_header(unclosed, "1.1")
    exercise.source = exercise.source.replace(cw.END_SOLUTION, "")
    with pytest.raises(ValueError, match="without a matching"):
        cw.make_student_notebook(unclosed)

    stray = copy.deepcopy(source)
    stray.cells[1].source += f"\n{cw.BEGIN_SOLUTION}\nSECRET = 1\n{cw.END_SOLUTION}"
    with pytest.raises(ValueError, match="cell 1 has"):
        cw.make_student_notebook(stray)

    duplicate = copy.deepcopy(source)
    cell_with_header(duplicate, "1.2").source = cell_with_header(duplicate, "1.2").source.replace(
        "EXERCISE 1.2", "EXERCISE 1.1"
    )
    with pytest.raises(ValueError, match="appears twice"):
        cw.find_exercises(duplicate)

    with pytest.raises(FileNotFoundError, match="missing.ipynb"):
        cw.grade_notebook(tmp_path / "missing.ipynb", FIXTURE)
    with pytest.raises(ValueError, match="question_timeout must be a positive number"):
        cw.grade_notebook(FIXTURE, FIXTURE, cell_timeout=0)


ASSIGNMENT_PATHS = [REPO / "notebooks" / name for name in cw.ASSIGNMENTS]


@pytest.mark.parametrize("path", ASSIGNMENT_PATHS, ids=[p.stem for p in ASSIGNMENT_PATHS])
def test_course_notebooks_follow_the_exercise_convention(path):
    if not path.is_file():
        pytest.skip(f"{path.name} not written yet")
    nb = cw.read_notebook(path)
    if not cw.has_exercises(nb):
        pytest.skip(f"{path.name} has no exercises")
    student = cw.make_student_notebook(nb, name=path.name)  # raises on convention errors
    text = "\n".join(c.source for c in student.cells if cw.exercise_header(c))
    for answer in solution_lines(nb):
        if len(answer) > 12:  # short lines such as `return a` may legitimately appear elsewhere
            assert answer not in text, f"{path.name}: solution line leaked: {answer!r}"
