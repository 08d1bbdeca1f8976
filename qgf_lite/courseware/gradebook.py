"""The teacher's side of grading: a gradebook that no submission can knock over.

Everything a student controls (check messages, exception text, statuses, flags, even the file's name) is
treated as hostile here:

* every ``grades.csv`` field goes through :func:`safe_field`: control characters removed, newlines and tabs made
  spaces, at most :data:`FIELD_LIMIT` characters (cut with an ellipsis), and a field that a spreadsheet would run
  as a formula (first character ``= + - @``) prefixed with a single quote;
* feedback markdown goes through :func:`md_text`: HTML and markdown syntax escaped, absolute paths replaced by
  ``<path>/name``, bounded length; its header names the submission as the teacher passed it (relative to the
  folder given on the command line), never an instructor path;
* the stored reports are bounded (:func:`bounded`) before they are written;
* the gradebook's state (one JSON file per submission in ``reports/``) is written by this module only, so
  resuming never parses an old, possibly huge, ``grades.csv``.

A row is keyed by the submission's content hash, the grader's identity (package version plus a hash of the
grading code), the autograder notebook's hash, the grading seed and the assignment (:func:`submission_key`). A
submission whose key is unchanged is skipped on a rerun; anything else is regraded and its row, report and
feedback *replace* the old ones.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path

FIELD_LIMIT = 500  # characters per grades.csv field
MESSAGE_LIMIT = 2000  # characters per message in feedback markdown
REPORT_TEXT_LIMIT = 20_000  # characters per string in a stored report
STATE_FILE_LIMIT = 8 * 2**20  # a state file larger than this is not ours: ignored (and regraded)
STATE_VERSION = 1
STATE_DIR = "reports"
FIXED_COLUMNS = ("submission", "assignment")
TAIL_COLUMNS = ("total", "max_total", "status")
ROSTER_COLUMNS = ("student_id", "name")

# C0/C1 controls (tab, newline and CR are turned into spaces first), DEL, and the Unicode line/paragraph
# separators and bidirectional overrides that make a field display as something other than what it holds.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~])(?:[A-Za-z]:)?[/\\](?:[^\s/\\'\"<>:|]+[/\\])+([^\s/\\'\"<>:|]*)")


def safe_field(value, limit: int = FIELD_LIMIT) -> str:
    """A CSV field a spreadsheet shows as plain text: one line, no controls, bounded, never a formula."""
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    text = text[: limit * 4]  # bound the work below whatever the input's size
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\t", " ")
    text = _CONTROL.sub("", text).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "\u2026"
    if text.startswith(_FORMULA_START):
        text = "'" + text
    return text


def number_field(value) -> str:
    """A score as text (``1.5``), or empty if it is not a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    return f"{number:g}" if math.isfinite(number) else ""


def scrub_paths(text: str) -> str:
    """Replace absolute paths (``/home/teacher/dist/x.py``) by ``…/x.py``: feedback names no folder."""
    return _ABSOLUTE_PATH.sub(lambda m: "…/" + m.group(1), text)


def md_text(value, limit: int = MESSAGE_LIMIT, *, block: bool = True) -> str:
    """Student text made safe for markdown: no raw HTML, links, code spans or headings; bounded; no paths.

    block=False for text placed after other text on a line (where a leading ``#`` or ``1.`` means nothing).
    """
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    text = text[: limit * 4].replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    text = _CONTROL.sub(lambda m: "\n" if m.group(0) == "\n" else "", text)
    text = scrub_paths(text)
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    text = html.escape(text, quote=False)  # & < > : no tag, entity or autolink survives
    text = re.sub(r"([\\`\[\]|*_~])", r"\\\1", text)  # code spans, links/images, tables, emphasis
    if not block:
        return text.replace("\n", " ")
    lines = []
    for line in text.split("\n"):
        stripped = line.lstrip(" ")
        if stripped[:1] in ("#", "=", "+", "-", ">") or re.match(r"\d+[.)]", stripped):
            line = line[: len(line) - len(stripped)] + "\\" + stripped  # no heading, rule, list or quote
        lines.append(line)
    return "\n".join(lines)


def bounded(value, *, text: int = REPORT_TEXT_LIMIT, items: int = 500, depth: int = 8):
    """A copy of a JSON-like value with every string, list and dict bounded (for the stored reports)."""
    if isinstance(value, str):
        return value if len(value) <= text else value[: text - 40] + f"... [{len(value) - text + 40} characters cut]"
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return value if (not isinstance(value, float) or math.isfinite(value)) else None
    if depth <= 0:
        return "[nested too deeply]"
    if isinstance(value, dict):
        out = {}
        for i, (k, v) in enumerate(value.items()):
            if i >= items:
                out["..."] = f"{len(value) - items} more entries cut"
                break
            out[bounded(str(k), text=200)] = bounded(v, text=text, items=items, depth=depth - 1)
        return out
    if isinstance(value, (list, tuple)):
        out = [bounded(v, text=text, items=items, depth=depth - 1) for v in list(value)[:items]]
        if len(value) > items:
            out.append(f"... {len(value) - items} more items cut")
        return out
    return bounded(repr(value), text=text)


# ---------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_GRADER_IDENTITY: str | None = None


def grader_identity() -> str:
    """``<qgf_lite version>+<hash of the grading code>``: a regrade follows any change of how grades are made."""
    global _GRADER_IDENTITY
    if _GRADER_IDENTITY is None:
        from qgf_lite.version import __version__

        package = Path(__file__).resolve().parents[1]
        files = [
            package / "courseware" / f"{name}.py"
            for name in ("grading", "sandbox", "questions", "assignments", "limited", "child", "wire")
        ]
        files += sorted((package / "checks").rglob("*.py"))
        digest = hashlib.sha256()
        for path in files:
            if path.is_file():
                digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
        _GRADER_IDENTITY = f"{__version__}+{digest.hexdigest()[:12]}"
    return _GRADER_IDENTITY


def submission_key(content_sha256: str, *, grader: str, autograder_sha256: str, seed: int, assignment: str) -> str:
    """The resume key: a row is reused only if every one of these is unchanged."""
    parts = json.dumps([content_sha256, grader, autograder_sha256, int(seed), assignment or ""])
    return hashlib.sha256(parts.encode()).hexdigest()


# ---------------------------------------------------------------------------
# Feedback
# ---------------------------------------------------------------------------


def _score(value) -> str:
    return number_field(value) or "0"


def feedback_markdown(report: dict, name: str | None = None) -> str:
    """What the student may see: points per question, public check messages, which hidden checks failed.

    name: the submission as the teacher passed it (relative to the folder given); never the report's path.
    Every piece of text that can come from the submission is escaped with :func:`md_text`.
    """
    if name is None:
        name = Path(str(report.get("notebook") or "submission")).name
    lines = [f"# Feedback: {md_text(name, 300, block=False)}", ""]
    lines.append(
        f"Assignment {md_text(report.get('assignment') or '?', 200, block=False)}: "
        f"**{_score(report.get('total'))} / {_score(report.get('max_total'))} points**."
    )
    if report.get("status") != "ok":
        lines.append("")
        lines.append(f"Grading notes: {md_text(report.get('status'))}")
    lines.append("")
    questions = report.get("questions") if isinstance(report.get("questions"), dict) else {}
    for ex_id, q in list(questions.items())[:100]:
        q = q if isinstance(q, dict) else {}
        lines.append(
            f"## {md_text(ex_id, 50, block=False)} {md_text(q.get('title', ''), 200, block=False)}: "
            f"{_score(q.get('points'))} / {_score(q.get('max_points'))}"
        )
        lines.append("")
        checks = q.get("checks") if isinstance(q.get("checks"), list) else []
        if not checks:
            lines.append(f"- {_indent(md_text(q.get('message', '')))}")
        for check in checks[:50]:
            check = check if isinstance(check, dict) else {}
            mark = "passed" if check.get("passed") is True else "failed"
            score = f"{_score(check.get('points'))} / {_score(check.get('max_points'))}"
            if check.get("hidden"):
                lines.append(f'- hidden check "{md_text(check.get("name", ""), 200, block=False)}" ({score}): {mark}')
            else:
                lines.append(f"- public check ({score}): {_indent(md_text(check.get('message', '')))}")
        if q.get("flags"):
            lines.append(f"- note: {_indent(md_text(q.get('message', '')))}")
        lines.append("")
    return "\n".join(lines)


def _indent(text: str) -> str:
    return text.replace("\n", "\n  ")


# ---------------------------------------------------------------------------
# The gradebook
# ---------------------------------------------------------------------------


def _safe_stem(name: str, limit: int = 100) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "__", name.replace(".ipynb", "")).strip("._")
    return (text or "submission")[-limit:]


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _has_rows(path: Path) -> bool:
    """Whether a CSV file has more than a header line, without parsing any of its fields."""
    newlines = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            newlines += block.count(b"\n")
            if newlines > 1:
                return True
    return False


class Gradebook:
    """``grades.csv`` + ``feedback/`` + ``reports/`` (+ ``reports.jsonl``), rows replaced as submissions finish.

    The state lives in ``reports/<name>-<hash>.json`` (one file per submission: its key, row and bounded report);
    ``grades.csv`` is rewritten atomically from it after every row, ``reports.jsonl`` by :meth:`write_reports`.
    question_columns: the question ids, in order. roster: a :class:`~qgf_lite.courseware.roster.Roster` to lay
    the gradebook out one row per student (see :func:`~qgf_lite.courseware.roster.roster_rows`).
    assignments: the assignments a student is expected to submit (for "missing" rows with a roster).
    """

    def __init__(
        self,
        out: str | os.PathLike,
        question_columns: Sequence[str],
        *,
        roster=None,
        assignments: Sequence[str] = (),
        log=None,
    ):
        self.path = Path(out)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.feedback_dir = self.path.parent / "feedback"
        self.state_dir = self.path.parent / STATE_DIR
        self.reports_path = self.path.parent / "reports.jsonl"
        self.question_columns = list(question_columns)
        self.roster = roster
        self.assignments = list(assignments)
        self.log = log or (lambda _message: None)
        self.entries: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._load()
        extra = [
            c
            for e in self.entries.values()
            for c in e["row"]
            if c not in self.question_columns and c not in FIXED_COLUMNS + TAIL_COLUMNS + ROSTER_COLUMNS
        ]
        for column in extra:
            if column not in self.question_columns:
                self.question_columns.append(column)
        if self.path.is_file() and not self.entries and _has_rows(self.path):
            backup = self.path.with_name(self.path.name + ".bak")
            os.replace(self.path, backup)
            if self.reports_path.is_file():
                os.replace(self.reports_path, self.reports_path.with_name(self.reports_path.name + ".bak"))
            self.log(
                f"{self.path} has no gradebook state beside it (written by an older qgf_lite, or by hand); "
                f"moved it to {backup} and every submission is graded again"
            )
        self.rewrite()

    # -- state -----------------------------------------------------------------------------------------------

    @property
    def columns(self) -> list[str]:
        head = list(ROSTER_COLUMNS) if self.roster is not None else []
        return head + list(FIXED_COLUMNS) + self.question_columns + list(TAIL_COLUMNS)

    @property
    def done(self) -> dict[str, dict]:
        """{submission name: its grades.csv row}."""
        return {name: dict(entry["row"]) for name, entry in sorted(self.entries.items())}

    def _state_path(self, name: str) -> Path:
        digest = hashlib.sha256(f"{self.path.name}\0{name}".encode()).hexdigest()[:16]
        return self.state_dir / f"{_safe_stem(name, 80)}-{digest}.json"

    def _load(self) -> None:
        if not self.state_dir.is_dir():
            return
        for path in sorted(self.state_dir.glob("*.json")):
            try:
                if path.stat().st_size > STATE_FILE_LIMIT:
                    raise ValueError("too large")
                entry = json.loads(path.read_text(encoding="utf-8"))
                if entry.get("state_version") != STATE_VERSION or entry.get("gradebook") != self.path.name:
                    continue
                name, row = entry["submission"], entry["row"]
                if not isinstance(name, str) or not isinstance(row, dict) or path != self._state_path(name):
                    raise ValueError("not a gradebook entry")
                entry["row"] = {safe_field(k, 100): safe_field(v) for k, v in row.items()}
                self.entries[name] = entry
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
                self.log(f"ignoring {path} ({type(err).__name__}: {str(err)[:100]}); that submission is regraded")

    def key_of(self, name: str) -> str | None:
        entry = self.entries.get(name)
        return entry.get("key") if entry else None

    def probe_of(self, content_sha256: str) -> dict | None:
        """A cached inspection result (metadata, exercise features) of a file with this content."""
        for entry in self.entries.values():
            if entry.get("sha256") == content_sha256 and isinstance(entry.get("probe"), dict):
                return entry["probe"]
        return None

    def _feedback_name(self, name: str) -> str:
        existing = self.entries.get(name, {}).get("feedback")
        if isinstance(existing, str) and re.fullmatch(r"[A-Za-z0-9._-]+\.md", existing):
            return existing
        used = {e.get("feedback") for n, e in self.entries.items() if n != name}
        candidate = _safe_stem(name, 150) + ".md"
        if candidate in used:
            candidate = f"{_safe_stem(name, 130)}-{hashlib.sha256(name.encode()).hexdigest()[:8]}.md"
        return candidate

    # -- rows ------------------------------------------------------------------------------------------------

    def make_row(self, name: str, report: dict) -> dict:
        row = {
            "submission": safe_field(name),
            "assignment": safe_field(report.get("assignment") or ""),
            "total": number_field(report.get("total", 0.0)),
            "max_total": number_field(report.get("max_total", 0.0)),
            "status": safe_field(report.get("status", "")),
        }
        questions = report.get("questions") if isinstance(report.get("questions"), dict) else {}
        for ex_id, q in questions.items():
            if isinstance(q, dict) and safe_field(ex_id, 100) in self.question_columns:
                row[safe_field(ex_id, 100)] = number_field(q.get("points"))
        return row

    def add(
        self,
        name: str,
        report: dict,
        *,
        key: str | None = None,
        sha256: str | None = None,
        probe: dict | None = None,
        key_parts: dict | None = None,
    ) -> dict:
        """Record (or replace) a submission's row, report and feedback; returns its row (every column)."""
        row = self.make_row(name, report)
        with self._lock:
            feedback = self._feedback_name(name)
            entry = {
                "state_version": STATE_VERSION,
                "gradebook": self.path.name,
                "submission": name,
                "key": key,
                "key_parts": key_parts or {},
                "sha256": sha256,
                "probe": probe,
                "feedback": feedback,
                "row": row,
                "report": bounded(report),
            }
            self.feedback_dir.mkdir(parents=True, exist_ok=True)
            self.state_dir.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.feedback_dir / feedback, feedback_markdown(report, name))
            _atomic_write(self._state_path(name), json.dumps(entry, allow_nan=False))
            self.entries[name] = entry
            self.rewrite()
        return {c: row.get(c, "") for c in list(FIXED_COLUMNS) + self.question_columns + list(TAIL_COLUMNS)}

    def rows(self) -> list[dict]:
        """The grades.csv rows: one per submission, or with a roster one per student and assignment."""
        rows = [dict(entry["row"]) for _, entry in sorted(self.entries.items())]
        if self.roster is None:
            return rows
        from qgf_lite.courseware.roster import roster_rows

        return roster_rows(rows, self.roster, self.assignments)

    def rewrite(self) -> None:
        """Write grades.csv from the state, atomically (a crash leaves the old file or the new one)."""
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, self.columns, extrasaction="ignore")
        writer.writeheader()
        for row in self.rows():
            writer.writerow({c: safe_field(row.get(c, "")) for c in self.columns})
        _atomic_write(self.path, buffer.getvalue())

    def write_reports(self) -> None:
        """reports.jsonl: every current report (bounded), one line each, replaced as a whole."""
        lines = [
            json.dumps({"submission": name, **entry.get("report", {})}, allow_nan=False)
            for name, entry in sorted(self.entries.items())
        ]
        _atomic_write(self.reports_path, "".join(line + "\n" for line in lines))


__all__ = [
    "FIELD_LIMIT",
    "Gradebook",
    "bounded",
    "feedback_markdown",
    "file_sha256",
    "grader_identity",
    "md_text",
    "number_field",
    "safe_field",
    "scrub_paths",
    "submission_key",
]
