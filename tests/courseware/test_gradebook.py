"""The teacher's gradebook: hostile text stays harmless, resume/regrade by content, roster, LMS export.

Grading itself is replaced by a fake (``batch.grade_submission`` monkeypatched) that returns a chosen report, so
these tests exercise the gradebook side only and run in seconds; one test at the end goes through the real
grader.
"""

import csv
import json
import re
from pathlib import Path

import nbformat
import pytest

from qgf_lite import courseware as cw
from qgf_lite.courseware import batch
from qgf_lite.courseware.export import export
from qgf_lite.courseware.gradebook import FIELD_LIMIT, Gradebook, feedback_markdown, md_text, safe_field
from qgf_lite.courseware.roster import read_roster

REPO = Path(__file__).resolve().parents[2]
HOSTILE = '=HYPERLINK("http://x","y")\n\x00\x07\x1b[31m\r\t' + "A" * 2**20  # 1 MB, a formula, controls
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _reference(path: Path, assignment: str, ids=("1.1", "1.2")) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["qgf_courseware"] = {"assignment": assignment}
    for i, ex_id in enumerate(ids):
        nb.cells.append(
            nbformat.v4.new_code_cell(
                f"# EXERCISE {ex_id}: Part {i} [{i + 1} points]\ndef f{i}(x):\n    return x + {i}\n"
            )
        )
        check = nbformat.v4.new_code_cell(f"check(f{i})")
        check.metadata["tags"] = [f"check:{ex_id}"]
        nb.cells.append(check)
    nbformat.write(nb, path)
    return path


def _submission(path: Path, assignment: str | None, body: str = "return x") -> Path:
    nb = nbformat.v4.new_notebook()
    if assignment:
        nb.metadata["qgf_courseware"] = {"assignment": assignment}
    nb.cells.append(nbformat.v4.new_code_cell(f"# EXERCISE 1.1: Part 0 [1 points]\ndef f0(x):\n    {body}\n"))
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _report(path, reference, total=3.0, status="ok", message="passed"):
    questions = {
        "1.1": {
            "title": "Part 0",
            "points": min(total, 1.0),
            "max_points": 1.0,
            "passed": total >= 1,
            "message": message,
            "flags": [] if status == "ok" else [status],
            "checks": [
                {
                    "name": "public check",
                    "hidden": False,
                    "points": min(total, 1.0),
                    "max_points": 1.0,
                    "passed": total >= 1,
                    "message": message,
                },
                {
                    "name": "other shapes",
                    "hidden": True,
                    "points": 0.0,
                    "max_points": 0.0,
                    "passed": False,
                    "message": "hidden detail: inputs 1,2,3",
                },
            ],
        },
        "1.2": {
            "title": "Part 1",
            "points": max(total - 1.0, 0.0),
            "max_points": 2.0,
            "passed": total >= 3,
            "message": "ok",
            "flags": [],
            "checks": [],
        },
    }
    return {
        "notebook": str(Path(path).resolve()),
        "reference": str(reference),
        "assignment": Path(reference).stem,
        "questions": questions,
        "total": float(total),
        "max_total": 3.0,
        "status": status,
    }


class FakeGrader:
    """Stands in for grade_submission: records calls, returns the report chosen for a file name."""

    def __init__(self):
        self.calls = []
        self.reports = {}

    def __call__(self, path, reference, **kwargs):
        self.calls.append(Path(path).name)
        make = self.reports.get(Path(path).name)
        return make(path, reference) if make else _report(path, reference)


@pytest.fixture
def course(tmp_path, monkeypatch):
    grader = FakeGrader()
    monkeypatch.setattr(batch, "grade_submission", grader)
    monkeypatch.setattr(batch, "warm_jax_cache", lambda *a, **k: True)
    auto = tmp_path / "dist" / "autograder"
    auto.mkdir(parents=True)
    _reference(auto / "01_flow_matching.ipynb", "01_flow_matching")
    _reference(auto / "02_critic_learning.ipynb", "02_critic_learning", ids=("2.1",))
    subs = tmp_path / "submissions"
    out = tmp_path / "grades" / "grades.csv"

    def grade(*paths, **kwargs):
        messages = []
        kwargs.setdefault("seed", 7)
        rows = cw.grade_batch(
            list(paths) or [subs], out=out, autograder_dir=auto, progress=False, log=messages.append, **kwargs
        )
        return rows, messages

    return {"grader": grader, "auto": auto, "subs": subs, "out": out, "grade": grade, "tmp": tmp_path}


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:  # the default field size limit: 128 KiB
        return list(csv.DictReader(handle))


def _assert_safe(rows):
    for row in rows:
        for column, value in row.items():
            assert len(value) <= FIELD_LIMIT + 1, (column, len(value))
            assert not value.startswith(FORMULA_START), (column, value[:40])
            assert not re.search(r"[\x00-\x1f\x7f]", value), (column, value[:40])


# ---------------------------------------------------------------------------
# A hostile report costs its own row and nothing else
# ---------------------------------------------------------------------------


def test_hostile_status_and_message_give_a_bounded_neutral_row_and_resume_still_works(course):
    _submission(course["subs"] / "evil_01_flow_matching.ipynb", "01_flow_matching")
    _submission(course["subs"] / "=HYPERLINK(1)_01_flow_matching.ipynb", "01_flow_matching")
    _submission(course["subs"] / "honest_01_flow_matching.ipynb", "01_flow_matching")
    course["grader"].reports["evil_01_flow_matching.ipynb"] = lambda p, r: _report(
        p, r, total=1.0, status=HOSTILE, message=HOSTILE
    )
    rows, _ = course["grade"]()
    assert len(rows) == 3
    table = _read_csv(course["out"])
    assert len(table) == 3
    _assert_safe(table)
    evil = next(r for r in table if r["submission"] == "evil_01_flow_matching.ipynb")
    assert evil["status"].startswith("'=HYPERLINK(")
    assert evil["status"].endswith("\u2026") and evil["total"] == "1"
    assert any(r["submission"].startswith("'=HYPERLINK(1)") for r in table)
    honest = next(r for r in table if r["submission"] == "honest_01_flow_matching.ipynb")
    assert honest["status"] == "ok" and honest["total"] == "3"
    # The stored report is bounded too; reports.jsonl stays readable.
    reports = [json.loads(line) for line in (course["out"].parent / "reports.jsonl").read_text().splitlines()]
    assert len(reports) == 3 and all(len(json.dumps(r)) < 200_000 for r in reports)
    # A second run resumes without error and grades nothing.
    course["grader"].calls.clear()
    rows, messages = course["grade"]()
    assert rows == [] and course["grader"].calls == []
    assert messages == [f"resuming: 3 of 3 submissions already in {course['out']}"]
    assert _read_csv(course["out"]) == table


def test_an_old_gradebook_with_a_huge_field_is_set_aside_not_parsed(course):
    _submission(course["subs"] / "a_01_flow_matching.ipynb", "01_flow_matching")
    course["out"].parent.mkdir(parents=True)
    course["out"].write_text('submission,assignment,status\na.ipynb,x,"' + "=1+1" * 300_000 + '"\n')
    rows, messages = course["grade"]()
    assert len(rows) == 1
    assert any("moved it to" in m for m in messages)
    assert (course["out"].parent / "grades.csv.bak").is_file()
    _assert_safe(_read_csv(course["out"]))


def test_safe_field_neutralises_formulas_controls_and_length():
    assert safe_field("=1+1") == "'=1+1"
    assert safe_field("  @SUM(A1)") == "'@SUM(A1)"
    assert safe_field("-2") == "'-2" and safe_field("+x") == "'+x"
    assert safe_field("a\nb\r\nc\x00d\x1b[0m\u202eevil") == "a b cd[0mevil"
    assert safe_field("x" * 10_000) == "x" * (FIELD_LIMIT - 1) + "\u2026"
    assert safe_field(None) == "" and safe_field(3) == "3"


def test_feedback_escapes_student_text_and_holds_no_instructor_path(course, tmp_path):
    message = (
        "<script>alert(1)</script> [click](http://evil) ![img](x) `code` | a | b |\n# Heading\n"
        f"> quote\nFile {tmp_path}/dist/autograder/01_flow_matching.ipynb, line 3 & /home/teacher/secret.py"
    )
    _submission(course["subs"] / "sub" / "bob_01_flow_matching.ipynb", "01_flow_matching")
    course["grader"].reports["bob_01_flow_matching.ipynb"] = lambda p, r: _report(
        p, r, total=1.0, status="1.1: " + message, message=message
    )
    course["grade"]()
    files = list((course["out"].parent / "feedback").glob("*.md"))
    assert [f.name for f in files] == ["sub__bob_01_flow_matching.md"]
    text = files[0].read_text()
    assert "# Feedback: sub/bob\\_01\\_flow\\_matching.ipynb" in text.splitlines()[0]
    assert str(tmp_path) not in text and "/home/teacher" not in text and "\u2026/secret.py" in text
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert not re.search(r"(?<!\\)\]\(", text) and "\\[click\\]" in text and "\\`code\\`" in text
    assert not re.search(r"^\s*#\s*Heading", text, re.M) and not re.search(r"^\s*> quote", text, re.M)
    assert "hidden detail" not in text  # hidden checks are named, never their messages
    assert 'hidden check "other shapes" (0 / 0): failed' in text


def test_md_text_is_bounded():
    assert len(md_text("a" * 10**6)) <= 2000
    assert feedback_markdown({"notebook": "/abs/x.ipynb", "total": 1, "max_total": 2, "status": "ok"}).startswith(
        "# Feedback: x.ipynb"
    )


# ---------------------------------------------------------------------------
# Resume and regrade
# ---------------------------------------------------------------------------


def test_resume_skips_unchanged_regrades_changed_content_and_regrade_forces(course):
    a = _submission(course["subs"] / "a_01_flow_matching.ipynb", "01_flow_matching")
    _submission(course["subs"] / "b_01_flow_matching.ipynb", "01_flow_matching")
    grader = course["grader"]
    course["grade"]()
    assert sorted(grader.calls) == ["a_01_flow_matching.ipynb", "b_01_flow_matching.ipynb"]

    grader.calls.clear()
    _submission(a, "01_flow_matching", body="return x + 0  # resubmitted under the same name")
    grader.reports[a.name] = lambda p, r: _report(p, r, total=1.0)
    rows, messages = course["grade"]()
    assert grader.calls == [a.name]
    assert messages[0] == f"resuming: 1 of 2 submissions already in {course['out']}"
    assert "regrading 1 submission(s)" in messages[1]
    table = _read_csv(course["out"])
    assert [r["submission"] for r in table] == ["a_01_flow_matching.ipynb", "b_01_flow_matching.ipynb"]
    assert table[0]["total"] == "1"  # replaced, not appended

    grader.calls.clear()
    course["grade"](regrade=True)
    assert sorted(grader.calls) == ["a_01_flow_matching.ipynb", "b_01_flow_matching.ipynb"]
    grader.calls.clear()
    course["grade"](seed=8)  # another grading seed: every row is stale
    assert len(grader.calls) == 2

    folder = course["out"].parent
    assert len(_read_csv(course["out"])) == 2
    assert len((folder / "reports.jsonl").read_text().splitlines()) == 2
    assert len(list((folder / "reports").glob("*.json"))) == 2
    assert len(list((folder / "feedback").glob("*.md"))) == 2
    state = json.loads(next((folder / "reports").glob("a_01*.json")).read_text())
    assert set(state["key_parts"]) >= {"sha256", "grader", "autograder_sha256", "seed", "assignment"}


def test_a_changed_autograder_regrades(course):
    _submission(course["subs"] / "a_01_flow_matching.ipynb", "01_flow_matching")
    course["grade"]()
    _reference(course["auto"] / "01_flow_matching.ipynb", "01_flow_matching", ids=("1.1", "1.2", "1.3"))
    course["grader"].calls.clear()
    course["grade"]()
    assert course["grader"].calls == ["a_01_flow_matching.ipynb"]


def test_gradebook_class_replaces_a_row(tmp_path):
    book = Gradebook(tmp_path / "g.csv", ["1.1"])
    report = {"assignment": "x", "questions": {"1.1": {"points": 1.0}}, "total": 1.0, "max_total": 1.0, "status": "ok"}
    book.add("a.ipynb", report, key="k1")
    book.add("a.ipynb", {**report, "total": 0.5}, key="k2")
    again = Gradebook(tmp_path / "g.csv", ["1.1"])
    assert again.key_of("a.ipynb") == "k2"
    assert (tmp_path / "g.csv").read_text().splitlines() == [
        "submission,assignment,1.1,total,max_total,status",
        "a.ipynb,x,1,0.5,1,ok",
    ]


# ---------------------------------------------------------------------------
# Which assignment, and files nobody can read
# ---------------------------------------------------------------------------


def test_metadata_that_names_another_assignment_than_the_file_name_is_flagged_not_graded(course):
    _submission(course["subs"] / "alice_02_critic_learning.ipynb", "01_flow_matching")
    _submission(course["subs"] / "renamed.ipynb", "01_flow_matching")  # no name hint: the metadata decides
    course["grade"]()
    rows = {r["submission"]: r for r in _read_csv(course["out"])}
    status = rows["alice_02_critic_learning.ipynb"]["status"]
    assert (
        status.startswith("assignment mismatch:")
        and "'01_flow_matching'" in status
        and "'02_critic_learning'" in status
    )
    assert rows["alice_02_critic_learning.ipynb"]["total"] == "0"
    assert course["grader"].calls == ["renamed.ipynb"]
    assert rows["renamed.ipynb"]["assignment"] == "01_flow_matching"


def test_huge_and_deeply_nested_notebooks_cost_their_own_row_only(course):
    subs = course["subs"]
    _submission(subs / "honest_01_flow_matching.ipynb", "01_flow_matching")
    big = subs / "big_01_flow_matching.ipynb"
    with open(big, "w") as handle:
        handle.write('{"cells": [], "metadata": {}, "pad": "')
        handle.write("x" * (21 * 2**20))
        handle.write('"}')
    (subs / "nested_01_flow_matching.ipynb").write_text("[" * 200_000 + "]" * 200_000)
    deep_cell = "# EXERCISE 1.1: Part 0 [1 points]\nx = " + "(" * 100_000 + ")" * 100_000 + "\n"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(deep_cell)])
    nb.metadata["qgf_courseware"] = {"assignment": "01_flow_matching"}
    nbformat.write(nb, subs / "deepcell_01_flow_matching.ipynb")
    course["grade"]()
    rows = {r["submission"]: r for r in _read_csv(course["out"])}
    assert rows["big_01_flow_matching.ipynb"]["status"].startswith("unreadable: the file is 21.0 MiB")
    assert rows["nested_01_flow_matching.ipynb"]["status"] == "unreadable: the notebook's JSON is nested too deeply"
    assert rows["honest_01_flow_matching.ipynb"]["status"] == "ok"
    assert rows["deepcell_01_flow_matching.ipynb"]["status"] == "ok"  # graded; only its similarity is skipped
    assert sorted(course["grader"].calls) == ["deepcell_01_flow_matching.ipynb", "honest_01_flow_matching.ipynb"]


# ---------------------------------------------------------------------------
# Roster and export
# ---------------------------------------------------------------------------

ROSTER = (
    "student_id,name,pattern,email,section,login_id,canvas_id\n"
    "s1,Alice Liddell,alice_*,alice@example.org,A,aliddell,101\n"
    "s2,Bob Builder,bob_*,bob@example.org,B,bbuilder,102\n"
    "s3,Carol Danvers,carol_*,carol@example.org,A,cdanvers,103\n"
)


@pytest.fixture
def graded_class(course):
    subs = course["subs"]
    _submission(subs / "alice_01_flow_matching.ipynb", "01_flow_matching")
    _submission(subs / "bob_01_flow_matching.ipynb", "01_flow_matching")
    _submission(subs / "bob_01_flow_matching_v2.ipynb", "01_flow_matching")
    _submission(subs / "zed_01_flow_matching.ipynb", "01_flow_matching")
    course["grader"].reports["alice_01_flow_matching.ipynb"] = lambda p, r: _report(p, r, total=2.5)
    roster = course["tmp"] / "roster.csv"
    roster.write_text(ROSTER)
    course["grade"](roster=roster)
    return {**course, "roster": roster}


def test_roster_gives_one_row_per_student_with_missing_and_unmatched_flagged(graded_class):
    table = _read_csv(graded_class["out"])
    assert list(table[0])[:4] == ["student_id", "name", "submission", "assignment"]
    by = [(r["student_id"], r["submission"], r["status"]) for r in table]
    assert by[0] == ("s1", "alice_01_flow_matching.ipynb", "ok")
    assert [b[0] for b in by[1:3]] == ["s2", "s2"] and all("2 files of this student" in b[2] for b in by[1:3])
    assert by[3][:2] == ("s3", "") and by[3][2].startswith("missing: no submission matches carol_*")
    assert table[3]["total"] == ""
    assert by[4][0] == "" and by[4][1] == "zed_01_flow_matching.ipynb"
    assert by[4][2].startswith("no student in the roster matches this file")
    _assert_safe(table)


def test_roster_errors_name_the_problem(tmp_path):
    bad = tmp_path / "r.csv"
    bad.write_text("id,name\n1,x\n")
    with pytest.raises(ValueError, match="lacks the column.*student_id.*pattern"):
        read_roster(bad)
    bad.write_text("student_id,name,pattern\n1,x,x_*\n1,y,y_*\n")
    with pytest.raises(ValueError, match="line 3: student_id '1' is also on line 2"):
        read_roster(bad)
    bad.write_text("student_id,name,pattern\n1,x,\n")
    with pytest.raises(ValueError, match="line 2: empty 'pattern'"):
        read_roster(bad)


def test_export_canvas_moodle_and_csv_round_trip(graded_class, tmp_path):
    grades, roster = graded_class["out"], graded_class["roster"]
    messages = []
    assert export(grades, tmp_path / "canvas.csv", "canvas", roster=roster, log=messages.append) == 3
    canvas = list(csv.reader(open(tmp_path / "canvas.csv", newline="")))
    assert canvas[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "01_flow_matching"]
    assert canvas[1:] == [
        ["Alice Liddell", "101", "s1", "aliddell", "A", "2.5"],
        ["Bob Builder", "102", "s2", "bbuilder", "B", ""],  # two files: left for the teacher
        ["Carol Danvers", "103", "s3", "cdanvers", "A", ""],
    ]  # missing
    assert any("several files match the same student: s2" in m for m in messages)

    export(
        grades,
        tmp_path / "moodle.csv",
        "moodle",
        assignment="01_flow_matching",
        column="Flow matching (HW1)",
        log=lambda _: None,
    )  # grades.csv was graded with --roster: no roster needed
    moodle = list(csv.DictReader(open(tmp_path / "moodle.csv", newline="")))
    assert list(moodle[0]) == ["ID number", "Email address", "Full name", "Flow matching (HW1)"]
    assert [(r["ID number"], r["Flow matching (HW1)"]) for r in moodle] == [("s1", "2.5"), ("s2", ""), ("s3", "")]

    export(grades, tmp_path / "long.csv", "csv", roster=roster, log=lambda _: None)
    long = list(csv.DictReader(open(tmp_path / "long.csv", newline="")))
    alice = next(r for r in long if r["student_id"] == "s1")
    assert alice["email"] == "alice@example.org" and alice["total"] == "2.5" and alice["max_total"] == "3"
    assert [r["submission"] for r in long if not r["student_id"]] == ["zed_01_flow_matching.ipynb"]


def test_export_errors_are_clear(course, tmp_path):
    _submission(course["subs"] / "a_01_flow_matching.ipynb", "01_flow_matching")
    course["grade"]()
    with pytest.raises(ValueError, match="needs to know each file's student: pass --roster"):
        export(course["out"], tmp_path / "x.csv", "canvas")
    with pytest.raises(ValueError, match="no assignment 'nope'"):
        export(course["out"], tmp_path / "x.csv", "csv", assignment="nope")
    old = tmp_path / "old.csv"
    old.write_text('submission,assignment,total,status\na,b,1,"' + "x" * 200_000 + '"\n')
    with pytest.raises(ValueError, match="grade again"):
        export(old, tmp_path / "x.csv", "csv")


def test_cli_grade_regrade_roster_and_export(course, tmp_path, capsys):
    _submission(course["subs"] / "alice_01_flow_matching.ipynb", "01_flow_matching")
    roster = tmp_path / "roster.csv"
    roster.write_text(ROSTER)
    common = [
        "grade",
        str(course["subs"]),
        "--autograder-dir",
        str(course["auto"]),
        "--out",
        str(course["out"]),
        "--seed",
        "7",
        "--no-progress",
        "--roster",
        str(roster),
    ]
    assert cw.main(common) == 0
    assert cw.main(common + ["--regrade"]) == 0
    assert course["grader"].calls == ["alice_01_flow_matching.ipynb"] * 2
    out = tmp_path / "canvas.csv"
    assert (
        cw.main(["export", str(course["out"]), "--format", "canvas", "--out", str(out), "--roster", str(roster)]) == 0
    )
    assert list(csv.reader(open(out)))[1] == ["Alice Liddell", "101", "s1", "aliddell", "A", "3"]
    assert cw.main(["export", str(course["out"]), "--format", "moodle", "--out", str(out), "--column", "x"]) == 2
    assert "pass --assignment too" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# One end-to-end run through the real grader
# ---------------------------------------------------------------------------


def test_end_to_end_real_grader_resume_and_export(tmp_path):
    fixture = REPO / "tests" / "fixtures" / "courseware_assignment.ipynb"
    dist = tmp_path / "dist"
    cw.build(dist, [fixture], log=lambda _: None)
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "ann_courseware_assignment.ipynb").write_bytes((dist / "solutions" / fixture.name).read_bytes())
    (subs / "ben_courseware_assignment.ipynb").write_bytes((dist / "student" / fixture.name).read_bytes())
    out = tmp_path / "out" / "grades.csv"
    args = dict(out=out, autograder_dir=dist / "autograder", progress=False, seed=5, warm_cache=False)
    rows = cw.grade_batch([subs], log=lambda _: None, **args)
    got = {r["submission"]: (r["total"], r["max_total"]) for r in rows}
    if got.get("ann_courseware_assignment.ipynb") != ("6", "6"):
        pytest.fail(f"the real grader did not give the solutions full marks: {rows}")
    assert got["ben_courseware_assignment.ipynb"] == ("0", "6")
    messages = []
    assert cw.grade_batch([subs], log=messages.append, **args) == []
    assert messages == [f"resuming: 2 of 2 submissions already in {out}"]
    roster = tmp_path / "roster.csv"
    roster.write_text("student_id,name,pattern\n1,Ann,ann_*\n2,Ben,ben_*\n")
    assert export(out, tmp_path / "canvas.csv", "canvas", roster=roster, log=lambda _: None) == 2
    canvas = list(csv.reader(open(tmp_path / "canvas.csv", newline="")))
    assert [row[-1] for row in canvas] == ["courseware_assignment", "6", "0"]
    report = (out.parent / "feedback" / "ann_courseware_assignment.md").read_text()
    assert "**6 / 6 points**" in report and str(tmp_path) not in report


def test_a_hostile_file_name_is_neutral_everywhere(course):
    name = "=cmd|' /C calc'!A0\n\x1b[2J<b>x</b>_01_flow_matching.ipynb"
    _submission(course["subs"] / name, "01_flow_matching")
    rows, _ = course["grade"]()
    table = _read_csv(course["out"])
    _assert_safe(table)
    assert table[0]["submission"].startswith("'=cmd|") and table[0]["status"] == "ok"
    folder = course["out"].parent
    feedback = [p.name for p in (folder / "feedback").iterdir()]
    state = [p.name for p in (folder / "reports").glob("*.json")]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in feedback + state), feedback + state
    text = (folder / "feedback" / feedback[0]).read_text()
    assert "<b>" not in text and "\x1b" not in text
    assert course["grade"]()[0] == []  # and it resumes
