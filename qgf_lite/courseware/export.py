"""``grades.csv`` in a learning-management system's import format: Canvas, Moodle, or a plain long CSV.

* ``canvas``: Canvas's gradebook import CSV: ``Student, ID, SIS User ID, SIS Login ID, Section`` then one column
  per assignment (its name, or ``--column``), one row per student. Canvas matches students on ``ID``,
  ``SIS User ID`` or ``SIS Login ID``; we fill ``SIS User ID`` with the roster's ``student_id`` and the others
  from its optional ``canvas_id``, ``login_id`` and ``section`` columns.
* ``moodle``: Moodle's "Import grades from CSV file": ``ID number, Email address, Full name`` then one column per
  assignment; at import, map "ID number" (or "Email address") to the user field of the same name and each
  assignment column to its grade item.
* ``csv``: one row per student (or submission, without a roster) and assignment: ``student_id, name, email,
  section, assignment, submission, total, max_total, status``.

The score written is the row's ``total`` (points); a student without exactly one graded submission for an
assignment gets an empty cell (Canvas and Moodle then leave that grade unchanged). Every text field goes through
:func:`~qgf_lite.courseware.gradebook.safe_field`.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from qgf_lite.courseware.gradebook import _atomic_write, number_field, safe_field
from qgf_lite.courseware.roster import read_roster, roster_rows

FORMATS = ("canvas", "moodle", "csv")
CANVAS_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
MOODLE_COLUMNS = ("ID number", "Email address", "Full name")
CSV_COLUMNS = ("student_id", "name", "email", "section", "assignment", "submission", "total", "max_total", "status")
_NEEDED = ("student_id", "name", "submission", "assignment", "total", "max_total", "status")


def read_grades(path: str | os.PathLike) -> tuple[list[str], list[dict]]:
    """(columns, rows) of a grades.csv, keeping only the columns an export needs, every field re-checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"gradebook {str(path)!r} does not exist; run `python -m qgf_lite.courseware grade ... --out` first"
        )
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        try:
            columns = list(reader.fieldnames or [])
            missing = [c for c in ("submission", "assignment", "total") if c not in columns]
            if missing:
                raise ValueError(
                    f"{str(path)!r} is not a gradebook written by `grade` (no column "
                    f"{', '.join(missing)}); it has {columns[:10]!r}"
                )
            for row in reader:
                rows.append({c: safe_field(row.get(c) or "") for c in _NEEDED if c in row})
        except csv.Error as err:  # e.g. a field over csv.field_size_limit() in an old, unprotected gradebook
            raise ValueError(
                f"{str(path)!r} line {reader.line_num}: {err}; it was not written by this version of "
                "qgf_lite: grade again (`grade ... --regrade`) to rewrite it"
            ) from None
    return columns, rows


def export(
    grades: str | os.PathLike,
    out: str | os.PathLike,
    fmt: str,
    *,
    assignment: str | None = None,
    roster: str | os.PathLike | None = None,
    column: str | None = None,
    log=print,
) -> int:
    """Write ``out`` in format ``fmt`` from the gradebook ``grades``; returns the number of rows written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if column is not None and assignment is None:
        raise ValueError("--column names the column of one assignment: pass --assignment too")
    columns, rows = read_grades(grades)
    students = {}
    if roster is not None:
        roster_data = read_roster(roster)
        students = roster_data.by_id()
        graded = [{k: v for k, v in r.items() if k not in ("student_id", "name")} for r in rows if r["submission"]]
        unique = list({(r["submission"], r["assignment"]): r for r in graded}.values())
        expected = [a for a in dict.fromkeys(r["assignment"] for r in rows) if a]
        table = roster_rows(unique, roster_data, expected)
    elif "student_id" in columns:
        table = rows
    elif fmt != "csv":
        raise ValueError(
            f"a {fmt} import needs to know each file's student: pass --roster roster.csv (or grade "
            "with --roster); see docs/TEACHING.md for its columns"
        )
    else:
        table = [{**r, "student_id": "", "name": ""} for r in rows]
    names = [a for a in dict.fromkeys(r.get("assignment", "") for r in table) if a]
    if assignment is not None:
        if assignment not in names:
            raise ValueError(f"no assignment {assignment!r} in {str(grades)!r}; it has {', '.join(names) or 'none'}")
        names = [assignment]
    if not names:
        raise ValueError(f"{str(grades)!r} has no graded assignment to export")
    table = [r for r in table if r.get("assignment") in names or (not r.get("assignment") and fmt == "csv")]
    flagged = [r for r in table if r.get("submission") and r.get("status") != "ok"]
    if flagged:
        log(
            f"warning: {len(flagged)} row(s) have a status other than 'ok' (see the status column of {grades}); "
            f"their total is exported as graded, e.g. {flagged[0].get('submission')}: {flagged[0].get('status')[:120]}"
        )
    titles = {a: (column if column is not None else a) for a in names}
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if fmt == "csv":
        writer.writerow(CSV_COLUMNS)
        for r in table:
            who = students.get(r.get("student_id", ""))
            extra = {"email": who.email if who else "", "section": who.section if who else ""}
            writer.writerow(
                [
                    safe_field({**r, **extra}.get(c, "")) if c not in ("total", "max_total") else number_field(r.get(c))
                    for c in CSV_COLUMNS
                ]
            )
        count = len(table)
    else:
        order, scores, ambiguous = [], {}, []
        for r in table:
            sid = r.get("student_id", "")
            if not sid:
                continue  # a file no student matches: it is in grades.csv, flagged, never in an import
            if sid not in scores:
                order.append((sid, r.get("name", "")))
                scores[sid] = {}
            if r.get("submission"):
                scores[sid].setdefault(r["assignment"], []).append(number_field(r.get("total")))
        head = CANVAS_COLUMNS if fmt == "canvas" else MOODLE_COLUMNS
        writer.writerow([*head, *(safe_field(titles[a]) for a in names)])
        for sid, name in order:
            who = students.get(sid)
            if fmt == "canvas":
                ident = [
                    name,
                    who.canvas_id if who else "",
                    sid,
                    who.login_id if who else "",
                    who.section if who else "",
                ]
            else:
                ident = [sid, who.email if who else "", name]
            cells = []
            for a in names:
                got = scores[sid].get(a, [])
                if len(got) > 1:
                    ambiguous.append(f"{sid} ({a})")
                cells.append(got[0] if len(got) == 1 else "")
            writer.writerow([*(safe_field(v) for v in ident), *cells])
        if ambiguous:
            log(f"warning: left empty because several files match the same student: {', '.join(ambiguous[:10])}")
        count = len(order)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(Path(out), buffer.getvalue())
    return count


__all__ = ["CANVAS_COLUMNS", "CSV_COLUMNS", "FORMATS", "MOODLE_COLUMNS", "export", "read_grades"]
