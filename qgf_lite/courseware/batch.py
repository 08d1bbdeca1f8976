"""Grading a class: many submissions in parallel, a gradebook CSV written as rows finish, feedback per student.

``grades.csv`` has one row per submission: ``submission, assignment, <one column per question>, total,
max_total, status``; beside it ``feedback/<submission>.md`` (what the student may see: every public check
message, which hidden checks failed but not their inputs) and ``reports.jsonl`` (everything, for the instructor).
Rows are appended and flushed as submissions finish, so an interrupted batch run again with the same command
grades only what is missing.
"""

from __future__ import annotations

import concurrent.futures
import csv
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable, Sequence

from qgf_lite.courseware.assignments import ASSIGNMENTS, METADATA_KEY, find_exercises, read_notebook
from qgf_lite.courseware.grading import DEFAULT_SEED, Limits, assignment_name, grade_submission, warm_jax_cache

SEED_FILE = "grading_seed.txt"
FIXED_COLUMNS = ("submission", "assignment")
TAIL_COLUMNS = ("total", "max_total", "status")


def collect_submissions(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Every .ipynb named or inside a named folder (checkpoints skipped), sorted, without repeats."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(f"submission {str(path)!r} does not exist; pass .ipynb files or folders")
    unique, seen = [], set()
    for path in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def read_seed(autograder_dir: str | os.PathLike | None, seed: int | None) -> tuple[int, str]:
    """The grading seed and where it came from: --seed, $QGF_GRADING_SEED, the autograder's file, or the default."""
    if seed is not None:
        return int(seed), "--seed"
    if os.environ.get("QGF_GRADING_SEED", "").strip():
        return int(os.environ["QGF_GRADING_SEED"]), "QGF_GRADING_SEED"
    if autograder_dir is not None and (Path(autograder_dir) / SEED_FILE).is_file():
        return int((Path(autograder_dir) / SEED_FILE).read_text().split()[0]), str(Path(autograder_dir) / SEED_FILE)
    return DEFAULT_SEED, "default"


def match_reference(submission: Path, references: dict[str, Path]) -> Path | None:
    """The reference notebook for a submission: by the assignment the build stored in it, else by file name."""
    try:
        nb = read_notebook(submission)
        stored = nb.metadata.get(METADATA_KEY, {}).get("assignment")
    except (ValueError, FileNotFoundError):
        stored = None
    if stored in references:
        return references[stored]
    stem = submission.stem
    for name in sorted(references, key=len, reverse=True):
        if stem.startswith(name) or name in stem:
            return references[name]
    return None


def _key_to_filename(key: str) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "__", key.replace(".ipynb", "")).strip("_")
    return (text or "submission")[-150:] + ".md"


def feedback_markdown(report: dict) -> str:
    lines = [f"# Feedback: {report.get('notebook', '')}", ""]
    total, max_total = report.get("total", 0.0), report.get("max_total", 0.0)
    lines.append(f"Assignment `{report.get('assignment')}`: **{total:g} / {max_total:g} points**.")
    if report.get("status") != "ok":
        lines.append(f"Grading notes: {report.get('status')}")
    lines.append("")
    for ex_id, q in report.get("questions", {}).items():
        lines.append(f"## {ex_id} {q['title']}: {q['points']:g} / {q['max_points']:g}")
        lines.append("")
        if not q.get("checks"):
            lines.append(f"- {q['message']}")
        for check in q.get("checks", []):
            mark = "passed" if check["passed"] else "failed"
            score = f"{check['points']:g} / {check['max_points']:g}"
            if check["hidden"]:
                lines.append(f"- hidden check \"{check['name']}\" ({score}): {mark}")
            else:
                message = check["message"].replace("\n", "\n  ")
                lines.append(f"- public check ({score}): {message}")
        if q.get("flags"):
            lines.append(f"- note: {q['message']}")
        lines.append("")
    return "\n".join(lines)


class Gradebook:
    """grades.csv + feedback/ + reports.jsonl, appended as submissions finish; reads back what is done."""

    def __init__(self, out: str | os.PathLike, question_columns: Sequence[str]):
        self.path = Path(out)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.feedback_dir = self.path.parent / "feedback"
        self.reports_path = self.path.parent / "reports.jsonl"
        self.columns = list(FIXED_COLUMNS) + list(question_columns) + list(TAIL_COLUMNS)
        self.done: dict[str, dict] = {}
        self._lock = threading.Lock()
        if self.path.is_file():
            with open(self.path, newline="") as handle:
                reader = csv.DictReader(handle)
                old_columns = reader.fieldnames or []
                rows = [row for row in reader if row.get("submission") and row.get("status") is not None]
            self.done = {row["submission"]: row for row in rows}
            if old_columns != self.columns:
                extra = [c for c in old_columns if c not in self.columns]
                self.columns = list(FIXED_COLUMNS) + list(question_columns) + extra + list(TAIL_COLUMNS)
                self._rewrite()
        else:
            self._rewrite()

    def _rewrite(self):
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, self.columns, extrasaction="ignore")
            writer.writeheader()
            for row in self.done.values():
                writer.writerow(row)
        os.replace(tmp, self.path)

    def add(self, key: str, report: dict) -> dict:
        row = {"submission": key, "assignment": report.get("assignment") or "",
               "total": f"{report.get('total', 0.0):g}", "max_total": f"{report.get('max_total', 0.0):g}",
               "status": report.get("status", "")}
        for ex_id, q in report.get("questions", {}).items():
            row[ex_id] = f"{q['points']:g}"
        with self._lock:
            self.feedback_dir.mkdir(parents=True, exist_ok=True)
            (self.feedback_dir / _key_to_filename(key)).write_text(feedback_markdown(report), encoding="utf-8")
            with open(self.reports_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"submission": key, **report}) + "\n")
            with open(self.path, "a", newline="") as handle:
                csv.DictWriter(handle, self.columns, extrasaction="ignore").writerow(row)
                handle.flush()
                os.fsync(handle.fileno())
            self.done[key] = row
        return row


class Progress:
    """A one-line progress bar on stderr (a line per submission when stderr is not a terminal)."""

    def __init__(self, total: int, stream=None, enabled: bool = True):
        self.total, self.done, self.start = total, 0, time.monotonic()
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed * 60 if elapsed > 0 else 0.0
        eta = (self.total - self.done) / (self.done / elapsed) if self.done else 0.0
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        text = f"[{bar}] {self.done}/{self.total} {rate:.1f}/min ETA {eta:.0f} s  {label}"
        if self.tty:
            self.stream.write("\r" + text[:150].ljust(150))
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def grade_batch(
    submissions: Sequence[str | os.PathLike],
    *,
    out: str | os.PathLike = "grades.csv",
    reference: str | os.PathLike | None = None,
    autograder_dir: str | os.PathLike | None = None,
    jobs: int = 1,
    seed: int | None = None,
    limits: Limits = Limits(),
    progress: bool = True,
    warm_cache: bool = True,
    log=print,
) -> list[dict]:
    """Grade every submission (files or folders) into ``out``; returns the rows written in this call.

    warm_cache: first grade each assignment's reference once and start every sandbox with a copy of the JAX
    compilations it made (about twice as fast; see :func:`~qgf_lite.courseware.grading.warm_jax_cache`).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs!r}")
    if (reference is None) == (autograder_dir is None):
        raise ValueError("pass exactly one of reference (a notebook) or autograder_dir (a folder of them)")
    if reference is not None:
        reference_nb = read_notebook(reference)
        references = {assignment_name(reference_nb, reference): Path(reference)}
    else:
        autograder_dir = Path(autograder_dir)
        if not autograder_dir.is_dir():
            raise FileNotFoundError(f"autograder_dir {str(autograder_dir)!r} does not exist; run the build first")
        references = {p.stem: p for p in sorted(autograder_dir.glob("*.ipynb"))}
        if not references:
            raise ValueError(f"no autograder notebooks (*.ipynb) in {str(autograder_dir)!r}; run the build first")
    order = {Path(a).stem: i for i, a in enumerate(ASSIGNMENTS)}
    columns: list[str] = []
    for name in sorted(references, key=lambda n: (order.get(n, len(order)), n)):
        for ex in find_exercises(read_notebook(references[name]), name=str(references[name])):
            if ex.id not in columns:
                columns.append(ex.id)
    seed, seed_source = read_seed(autograder_dir, seed)
    if seed_source == "default":
        log("warning: no grading seed given (--seed, QGF_GRADING_SEED or the build's grading_seed.txt); hidden "
            "inputs come from the default seed, which anyone can read in the source code")

    paths = collect_submissions(submissions)
    book = Gradebook(out, columns)
    todo = [p for p in paths if str(p) not in book.done]
    if len(todo) < len(paths):
        log(f"resuming: {len(paths) - len(todo)} of {len(paths)} submissions already in {out}")
    hide = sorted({str(p.resolve().parent) for p in paths} | {str(Path(out).resolve().parent)}
                  | {str(p.resolve().parent) for p in references.values()} | {str(Path.home())})
    bar = Progress(len(todo), enabled=progress)
    rows = []
    cache_root = Path(tempfile.mkdtemp(prefix="qgf_jax_cache_"))
    caches: dict[str, Path] = {}
    if warm_cache and todo:
        # One trusted run of each assignment's reference first: its JAX compilations seed every sandbox.
        wanted = {match_reference(p, references) for p in todo} - {None}
        for reference_path in sorted(wanted):
            caches[reference_path.stem] = cache_root / reference_path.stem
            warm_jax_cache(reference_path, caches[reference_path.stem], seed=seed, limits=limits, hide=hide)

    def grade_one(path: Path) -> dict:
        reference_path = match_reference(path, references)
        if reference_path is None:
            return {"notebook": str(path), "assignment": "", "questions": {}, "total": 0.0, "max_total": 0.0,
                    "status": f"unmatched: cannot tell which assignment this is (expected one of "
                              f"{sorted(references)} in its metadata or file name)"}
        try:
            return grade_submission(path, reference_path, seed=seed, limits=limits, hide=hide,
                                    jax_cache=caches.get(reference_path.stem))
        except Exception as err:  # a bug of the grader itself: say so in the row, keep grading the rest
            return {"notebook": str(path), "assignment": reference_path.stem, "questions": {}, "total": 0.0,
                    "max_total": 0.0, "status": f"grader error: {type(err).__name__}: {err}"}

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(grade_one, path): path for path in todo}
            for future in concurrent.futures.as_completed(futures):
                path = futures[future]
                report = future.result()
                rows.append(book.add(str(path), report))
                bar.update(f"{path.name}: {report.get('total', 0):g}/{report.get('max_total', 0):g}")
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)
    return rows


__all__ = ["Gradebook", "collect_submissions", "feedback_markdown", "grade_batch", "match_reference", "read_seed"]
