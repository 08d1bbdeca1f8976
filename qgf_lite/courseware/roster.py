"""A class roster: which submission file belongs to which student, and who did not submit.

``roster.csv`` is a UTF-8 CSV file (a spreadsheet's "save as CSV" works; a byte-order mark is fine) with a
header line and one line per student. Columns (names exact, any order, extra columns ignored):

========== ======== ===================================================================================
column     required meaning
========== ======== ===================================================================================
student_id yes      the student's identifier in your institution (unique); Canvas's "SIS User ID",
                    Moodle's "ID number"
name       yes      the student's name as the gradebook should show it
pattern    yes      a glob matched against the submission's name (relative to the folder you grade, and
                    its file name alone), case-insensitively: ``alice_*``, ``*/a.smith/*.ipynb``;
                    several patterns separated by ``;``
email      no       for Moodle's import (matched on "Email address")
section    no       Canvas's "Section"
login_id   no       Canvas's "SIS Login ID"
canvas_id  no       Canvas's internal "ID" (from a Canvas gradebook export)
========== ======== ===================================================================================
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

REQUIRED = ("student_id", "name", "pattern")
OPTIONAL = ("email", "section", "login_id", "canvas_id")
MAX_ROSTER_BYTES = 32 * 2**20


@dataclass(frozen=True)
class Student:
    student_id: str
    name: str
    patterns: tuple
    email: str = ""
    section: str = ""
    login_id: str = ""
    canvas_id: str = ""

    def matches(self, submission: str) -> bool:
        text = submission.lower()
        base = PurePosixPath(text).name
        return any(fnmatchcase(text, p) or fnmatchcase(base, p) for p in self.patterns)


@dataclass(frozen=True)
class Roster:
    students: tuple
    path: str = "roster.csv"
    _cache: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def matching(self, submission: str) -> list:
        """The students whose pattern matches this submission name (cached: the gradebook asks often)."""
        if submission not in self._cache:
            self._cache[submission] = [s for s in self.students if s.matches(submission)]
        return self._cache[submission]

    def by_id(self) -> dict:
        return {s.student_id: s for s in self.students}


def read_roster(path: str | os.PathLike) -> Roster:
    """Read and check a roster; every problem is a ValueError naming the line and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"roster {str(path)!r} does not exist; pass a CSV file with the columns "
            f"{', '.join(REQUIRED)} (see docs/TEACHING.md)"
        )
    if path.stat().st_size > MAX_ROSTER_BYTES:
        raise ValueError(f"roster {str(path)!r} is larger than {MAX_ROSTER_BYTES // 2**20} MiB; is it the right file?")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        try:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise ValueError(
                    f"roster {str(path)!r} lacks the column(s) {', '.join(missing)}; its first line must "
                    f"name the columns, e.g. 'student_id,name,pattern' (optional: {', '.join(OPTIONAL)}); "
                    f"it has {header!r}"
                )
            reader.fieldnames = header
            students, seen = [], {}
            for line, row in enumerate(reader, start=2):
                values = {k: (v or "").strip() for k, v in row.items() if isinstance(k, str)}
                if not any(values.values()):
                    continue
                for column in REQUIRED:
                    if not values.get(column):
                        raise ValueError(
                            f"roster {str(path)!r} line {line}: empty {column!r}; every student needs "
                            f"a student_id, a name and a file pattern"
                        )
                sid = values["student_id"]
                if sid in seen:
                    raise ValueError(
                        f"roster {str(path)!r} line {line}: student_id {sid!r} is also on line "
                        f"{seen[sid]}; student ids must be unique"
                    )
                seen[sid] = line
                patterns = tuple(p.strip().lower() for p in values["pattern"].split(";") if p.strip())
                students.append(Student(sid, values["name"], patterns, **{c: values.get(c, "") for c in OPTIONAL}))
        except csv.Error as err:
            raise ValueError(
                f"roster {str(path)!r} is not a readable CSV file ({err}); save it as CSV, UTF-8"
            ) from None
    if not students:
        raise ValueError(f"roster {str(path)!r} has no students")
    return Roster(tuple(students), str(path))


def roster_rows(rows: Sequence[dict], roster: Roster, assignments: Sequence[str] = ()) -> list[dict]:
    """One row per student and assignment, from rows of one submission each.

    assignments: what each student is expected to submit (others that appear in ``rows`` are added). A student
    with no file for an assignment gets a row with status ``missing``; a student whose pattern matches several
    files of one assignment gets one row per file, each flagged; a file no student matches gets a row at the
    end with an empty student_id, flagged; a file several students match is flagged in each of their rows.
    Statuses of flagged rows start with what is wrong, then the grading status.
    """
    scope = [a for a in assignments if a]
    for row in rows:
        if row.get("assignment") and row["assignment"] not in scope:
            scope.append(row["assignment"])
    owners = {id(row): roster.matching(row.get("submission", "")) for row in rows}
    files_of: dict = {}
    for row in rows:
        for student in owners[id(row)]:
            files_of.setdefault(student.student_id, []).append(row)
    out = []
    for student in roster.students:
        mine = files_of.get(student.student_id, [])
        person = {"student_id": student.student_id, "name": student.name}
        for assignment in scope + [""]:
            files = [row for row in mine if (row.get("assignment") or "") == assignment]
            if not files and assignment:
                out.append(
                    {
                        **person,
                        "submission": "",
                        "assignment": assignment,
                        "total": "",
                        "max_total": "",
                        "status": f"missing: no submission matches {'; '.join(student.patterns)}",
                    }
                )
            for row in files:
                notes = []
                if len(files) > 1 and assignment:
                    names = ", ".join(r.get("submission", "") for r in files)
                    notes.append(f"{len(files)} files of this student for {assignment} ({names}): keep one")
                others = [s.student_id for s in owners[id(row)] if s.student_id != student.student_id]
                if others:
                    notes.append(f"this file also matches student(s) {', '.join(others)} in the roster")
                out.append({**row, **person, "status": _flagged(notes, row.get("status", ""))})
    for row in rows:
        if not owners[id(row)]:
            out.append(
                {
                    **row,
                    "student_id": "",
                    "name": "",
                    "status": _flagged(["no student in the roster matches this file"], row.get("status", "")),
                }
            )
    return out


def _flagged(notes, status) -> str:
    return "; ".join(notes + [status]) if notes else status


__all__ = ["OPTIONAL", "REQUIRED", "Roster", "Student", "read_roster", "roster_rows"]
