"""Grading a class: many submissions in parallel, a gradebook written as rows finish, feedback per student.

``grades.csv`` has one row per submission (``submission, assignment, <one column per question>, total,
max_total, status``; with a roster, one row per student and assignment, see :mod:`qgf_lite.courseware.roster`);
beside it ``feedback/<submission>.md`` (what the student may see), ``reports/`` (the gradebook's state: one
JSON file per submission with its resume key, row and full report), ``reports.jsonl`` (every current report,
for the instructor) and ``similarity.csv`` (near-identical exercise cells, see
:mod:`qgf_lite.courseware.similarity`). The gradebook side is in :mod:`qgf_lite.courseware.gradebook`.

A submission is named by its path relative to the folder given on the command line (a file given directly: by
its file name). Rerunning the same command grades only what is new or changed: a row is reused when the file's
content (sha256), the grader's version, the autograder notebook, the grading seed and the assignment are all
unchanged; ``regrade=True`` (``--regrade``) grades everything again. A regraded submission's row, report and
feedback replace the old ones.

Nothing of a submission is parsed in this process: its metadata (which assignment it says it is) and its
exercise cells (for the similarity report) are read by a limited child
(:func:`~qgf_lite.courseware.similarity.inspect_notebooks`).
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from qgf_lite.courseware.assignments import ASSIGNMENTS, find_exercises, read_notebook
from qgf_lite.courseware.gradebook import (
    Gradebook,
    _atomic_write,
    feedback_markdown,
    file_sha256,
    grader_identity,
    number_field,
    safe_field,
    submission_key,
)
from qgf_lite.courseware.grading import DEFAULT_SEED, Limits, assignment_name, grade_submission, warm_jax_cache

SEED_FILE = "grading_seed.txt"


def collect_named(paths: Iterable[str | os.PathLike]) -> list[tuple[str, Path]]:
    """(name, path) of every .ipynb named or inside a named folder (checkpoints skipped), without repeats.

    name: the path relative to the folder given (a file given directly: its file name); two different files
    that would get the same name are told apart by the given folder's (or the file's folder's) own name.
    """
    found: list[tuple[str, str, Path]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for p in sorted(path.rglob("*.ipynb")):
                if ".ipynb_checkpoints" not in p.parts and p.is_file():
                    rel = p.relative_to(path).as_posix()
                    found.append((rel, f"{path.resolve().name}/{rel}", p))
        elif path.exists():
            found.append((path.name, f"{path.resolve().parent.name}/{path.name}", path))
        else:
            raise FileNotFoundError(f"submission {str(path)!r} does not exist; pass .ipynb files or folders")
    named: list[tuple[str, Path]] = []
    owner: dict[str, Path] = {}
    seen: set = set()
    for short, qualified, path in found:
        key = path.resolve()
        if key in seen:
            continue
        seen.add(key)
        for name in (short, qualified):
            if name not in owner:
                break
        else:
            raise ValueError(
                f"two submissions would both be named {qualified!r} in the gradebook: "
                f"{str(owner[qualified])!r} and {str(path)!r}; grade them into separate gradebooks "
                "(--out) or rename one"
            )
        owner[name] = path
        named.append((name, path))
    return named


def collect_submissions(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Every .ipynb named or inside a named folder (checkpoints skipped), sorted, without repeats."""
    return [path for _, path in collect_named(paths)]


def read_seed(autograder_dir: str | os.PathLike | None, seed: int | None) -> tuple[int, str]:
    """The grading seed and where it came from: --seed, $QGF_GRADING_SEED, the autograder's file, or the default."""
    if seed is not None:
        return int(seed), "--seed"
    if os.environ.get("QGF_GRADING_SEED", "").strip():
        return int(os.environ["QGF_GRADING_SEED"]), "QGF_GRADING_SEED"
    if autograder_dir is not None and (Path(autograder_dir) / SEED_FILE).is_file():
        return int((Path(autograder_dir) / SEED_FILE).read_text().split()[0]), str(Path(autograder_dir) / SEED_FILE)
    return DEFAULT_SEED, "default"


def _name_suggests(stem: str, references: dict) -> str | None:
    for name in sorted(references, key=len, reverse=True):
        if stem.startswith(name) or name in stem:
            return name
    return None


def choose_reference(name: str, stored: str | None, references: dict[str, Path]) -> tuple[Path | None, str | None]:
    """(the reference notebook, None) for a submission, or (None, why not).

    stored: the assignment the submission's metadata names (the build writes it into every student notebook).
    A file whose metadata and file name name two different assignments is not graded as either.
    """
    by_name = _name_suggests(Path(name).stem, references)
    if stored is not None and by_name is not None and stored != by_name:
        return None, (
            f"assignment mismatch: the notebook's metadata says {stored!r} but its file name says "
            f"{by_name!r}; not graded: check which assignment the student meant, rename the file to match "
            "and grade it again"
        )
    if stored is not None and stored not in references:
        return None, (
            f"unmatched: the notebook's metadata names assignment {stored!r}, which is not one of {sorted(references)}"
        )
    if stored is not None:
        return references[stored], None
    if by_name is not None:
        return references[by_name], None
    return None, (
        f"unmatched: cannot tell which assignment this is (expected one of {sorted(references)} in its "
        "metadata or file name)"
    )


def match_reference(submission: Path, references: dict[str, Path]) -> Path | None:
    """The reference notebook for a submission: by the assignment the build stored in it, else by file name.

    The metadata is read by a limited child (see :func:`~qgf_lite.courseware.similarity.inspect_notebooks`).
    """
    from qgf_lite.courseware.similarity import inspect_notebooks

    found = inspect_notebooks([submission])[0]
    reference, _ = choose_reference(Path(submission).name, found["assignment"], references)
    return reference


def _not_graded(name: str, assignment: str, status: str, points: dict) -> dict:
    questions = {
        ex_id: {
            "title": title,
            "points": 0.0,
            "max_points": p,
            "passed": False,
            "message": status,
            "checks": [],
            "flags": [],
        }
        for ex_id, (title, p) in points.items()
    }
    return {
        "notebook": name,
        "reference": None,
        "assignment": assignment,
        "questions": questions,
        "total": 0.0,
        "max_total": float(sum(p for _, p in points.values())),
        "status": status,
    }


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
    regrade: bool = False,
    roster: str | os.PathLike | None = None,
    similarity: bool = True,
    grade_options: dict | None = None,
    log=print,
) -> list[dict]:
    """Grade every submission (files or folders) into ``out``; returns the rows written in this call.

    regrade: grade every submission again, even those whose row is up to date.
    roster: a roster CSV (see :mod:`qgf_lite.courseware.roster`): grades.csv then has one row per student.
    similarity: write ``similarity.csv`` beside ``out`` (near-identical exercise cells; no score changes).
    grade_options: more keyword arguments for :func:`~qgf_lite.courseware.grading.grade_submission` (e.g. the
    sandbox backend).
    warm_cache: first grade each assignment's reference once and start every sandbox with a copy of the JAX
    compilations it made (about twice as fast; see :func:`~qgf_lite.courseware.grading.warm_jax_cache`).
    """
    from qgf_lite.courseware.roster import read_roster
    from qgf_lite.courseware.similarity import inspect_notebooks

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
    roster_data = read_roster(roster) if roster is not None else None
    order = {Path(a).stem: i for i, a in enumerate(ASSIGNMENTS)}
    columns: list[str] = []
    points: dict[str, dict] = {}
    for name in sorted(references, key=lambda n: (order.get(n, len(order)), n)):
        exercises = find_exercises(read_notebook(references[name]), name=str(references[name]))
        points[name] = {ex.id: (ex.title, ex.points) for ex in exercises}
        for ex in exercises:
            if ex.id not in columns:
                columns.append(ex.id)
    seed, seed_source = read_seed(autograder_dir, seed)
    if seed_source == "default":
        log(
            "warning: no grading seed given (--seed, QGF_GRADING_SEED or the build's grading_seed.txt); hidden "
            "inputs come from the default seed, which anyone can read in the source code"
        )

    named = collect_named(submissions)
    book = Gradebook(
        out, columns, roster=roster_data, assignments=list(references) if reference is not None else (), log=log
    )
    grader = grader_identity()
    autograder_sha = {name: file_sha256(path) for name, path in references.items()}

    # What each file is: its content hash (read here, never parsed) and, from a limited child, the assignment
    # its metadata names and its exercise cells (cached by content hash in the gradebook's state).
    hashes = {name: file_sha256(path) for name, path in named}
    probes = {name: book.probe_of(hashes[name]) for name, _ in named}
    unknown = [(name, path) for name, path in named if probes[name] is None or probes[name].get("error")]
    for (name, _), found in zip(unknown, inspect_notebooks([path for _, path in unknown])):
        probes[name] = found

    plans = []  # (name, path, reference or None, status, key, key_parts)
    for name, path in named:
        found = probes[name]
        if found.get("error"):
            suggested = _name_suggests(Path(name).stem, references)
            ref, status = (references.get(suggested) if suggested else None), f"unreadable: {found['error']}"
        else:
            ref, status = choose_reference(name, found.get("assignment"), references)
        assignment = next((a for a, p in references.items() if p == ref), "")
        parts = {
            "sha256": hashes[name],
            "grader": grader,
            "autograder_sha256": autograder_sha.get(assignment, ""),
            "seed": seed,
            "assignment": assignment,
            "status": status,
        }
        key = submission_key(
            hashes[name],
            grader=grader,
            autograder_sha256=parts["autograder_sha256"],
            seed=seed,
            assignment=assignment + ("" if status is None else "\0" + status),
        )
        plans.append((name, path, ref if status is None else None, status, key, parts))
    todo = [plan for plan in plans if regrade or book.key_of(plan[0]) != plan[4]]
    if len(todo) < len(plans):
        log(f"resuming: {len(plans) - len(todo)} of {len(plans)} submissions already in {out}")
    changed = [plan[0] for plan in todo if not regrade and book.key_of(plan[0]) is not None]
    if changed:
        log(
            f"regrading {len(changed)} submission(s) whose file, autograder, seed or grader changed: "
            f"{safe_field(', '.join(changed[:5]), 300)}{' ...' if len(changed) > 5 else ''}"
        )

    hide = sorted(
        {str(p.resolve().parent) for _, p in named}
        | {str(Path(out).resolve().parent)}
        | {str(p.resolve().parent) for p in references.values()}
        | {str(Path.home())}
    )
    bar = Progress(len(todo), enabled=progress)
    rows = []
    cache_root = Path(tempfile.mkdtemp(prefix="qgf_jax_cache_"))
    caches: dict[str, Path] = {}
    to_grade = [plan for plan in todo if plan[2] is not None]
    if warm_cache and to_grade:
        # One trusted run of each assignment's reference first: its JAX compilations seed every sandbox.
        for reference_path in sorted({plan[2] for plan in to_grade}):
            caches[reference_path.stem] = cache_root / reference_path.stem
            warm_jax_cache(reference_path, caches[reference_path.stem], seed=seed, limits=limits, hide=hide)

    def grade_one(plan) -> dict:
        name, path, reference_path, status, _, parts = plan
        if reference_path is None:
            return _not_graded(name, parts["assignment"], status, points.get(parts["assignment"], {}))
        try:
            return grade_submission(
                path,
                reference_path,
                seed=seed,
                limits=limits,
                hide=hide,
                jax_cache=caches.get(reference_path.stem),
                **(grade_options or {}),
            )
        except Exception as err:  # a bug of the grader itself: say so in the row, keep grading the rest
            return _not_graded(
                name,
                parts["assignment"],
                f"grader error: {type(err).__name__}: {err}",
                points.get(parts["assignment"], {}),
            )

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(grade_one, plan): plan for plan in todo}
            for future in concurrent.futures.as_completed(futures):
                plan = futures[future]
                report = future.result()
                rows.append(
                    book.add(
                        plan[0], report, key=plan[4], sha256=hashes[plan[0]], probe=probes[plan[0]], key_parts=plan[5]
                    )
                )
                score = f"{number_field(report.get('total'))}/{number_field(report.get('max_total'))}"
                bar.update(f"{safe_field(Path(plan[0]).name, 60)}: {score}")
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)
        book.write_reports()
    if similarity:
        write_similarity(book, references, Path(out).parent / "similarity.csv", log=log)
    return rows


def write_similarity(book: Gradebook, references: dict[str, Path], path: Path, *, log=print) -> list[dict]:
    """similarity.csv for every submission in the gradebook (see :mod:`qgf_lite.courseware.similarity`)."""
    import hashlib
    import json

    from qgf_lite.courseware import similarity as similarity_module
    from qgf_lite.courseware.limited import LimitedFailed
    from qgf_lite.courseware.similarity import inspect_notebooks, similar_pairs, similarity_csv

    submissions = {
        name: (entry["row"].get("assignment", ""), entry.get("probe"))
        for name, entry in book.entries.items()
        if isinstance(entry.get("probe"), dict)
    }
    names = sorted(references)
    # Unchanged inputs (every file, the references, this code): the report on disk is still right.
    fingerprint = hashlib.sha256(
        json.dumps(
            [
                sorted((n, book.entries[n].get("sha256"), a) for n, (a, _) in submissions.items()),
                [(n, file_sha256(references[n])) for n in names],
                file_sha256(similarity_module.__file__),
            ]
        ).encode()
    ).hexdigest()
    stamp = book.state_dir / f".{path.name}.key"
    if path.is_file() and stamp.is_file() and stamp.read_text().strip() == fingerprint:
        return []
    reference_found = dict(zip(names, inspect_notebooks([references[n] for n in names])))
    try:
        rows = similar_pairs(submissions, reference_found)
    except LimitedFailed as err:
        log(f"warning: similarity.csv not written: comparing the exercise cells failed ({err})")
        return []
    _atomic_write(path, similarity_csv(rows))
    book.state_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(stamp, fingerprint + "\n")
    return rows


__all__ = [
    "Gradebook",
    "choose_reference",
    "collect_named",
    "collect_submissions",
    "feedback_markdown",
    "grade_batch",
    "match_reference",
    "read_seed",
    "write_similarity",
]
