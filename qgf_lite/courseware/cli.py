"""``python -m qgf_lite.courseware build | grade | export | gradescope``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from qgf_lite.courseware.build import build, selftest


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    return parse


def _add_limits(parser):
    parser.add_argument(
        "--timeout",
        type=_positive(float),
        default=300.0,
        help="wall-clock seconds per submission, always enforced by killing it (default 300)",
    )
    parser.add_argument(
        "--question-timeout",
        type=_positive(float),
        default=60.0,
        help="seconds one question (or one cell) may take; it alone then scores 0 (default 60)",
    )
    parser.add_argument(
        "--memory", type=_positive(float), default=4.0, help="resident memory limit per submission in GiB (default 4)"
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "bwrap", "unshare", "uid"),
        default=None,
        help="the sandbox that runs student code (default auto: bwrap, else unshare, else uid when "
        "run as root; $QGF_SANDBOX_BACKEND also sets it); see docs/TEACHING.md",
    )
    parser.add_argument(
        "--unsafe-no-sandbox",
        action="store_true",
        help="where no sandbox works, run student code with your own rights instead of refusing",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="grading seed for the hidden inputs (default: the build's "
        "autograder/grading_seed.txt, or $QGF_GRADING_SEED)",
    )


def _sandbox(args) -> dict | None:
    """The grade_submission options for the sandbox; None (after one message) when none can run here."""
    from qgf_lite.courseware.sandbox import SandboxUnavailable, choose_backend

    try:
        backend = choose_backend(args.backend, unsafe=args.unsafe_no_sandbox)
    except SandboxUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return None
    if backend == "none":
        print("warning: no sandbox: student code runs with your rights (--unsafe-no-sandbox)", file=sys.stderr)
    return {"backend": backend, "unsafe": args.unsafe_no_sandbox}


def _limits(args):
    from qgf_lite.courseware.grading import Limits

    return Limits(timeout=args.timeout, question_timeout=args.question_timeout, memory=int(args.memory * 2**30))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qgf_lite.courseware",
        description="Student versions, solutions and an autograder from the course notebooks.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p_build = sub.add_parser("build", help="build student, solution and autograder notebooks")
    p_build.add_argument("notebooks", nargs="*", help="source notebooks (default: the course assignments)")
    p_build.add_argument("--out", default="dist", help="output folder (default: dist)")
    p_build.add_argument("--notebooks-dir", default="notebooks", help="where the assignments live")
    p_build.add_argument(
        "--release",
        metavar="PIP_REQUIREMENT",
        help='the qgf_lite the handed-out notebooks install where it is missing (Colab), e.g. "0.2.0" or '
        '"qgf_lite @ git+https://github.com/<owner>/<repo>@v0.2.0" (default: the release the notebooks pin)',
    )
    p_build.add_argument(
        "--selftest",
        action="store_true",
        help="then grade every solutions (must pass) and student (must fail) notebook; exit 1 otherwise",
    )
    p_build.add_argument(
        "--gradescope",
        action="store_true",
        help="also write gradescope/<assignment>/autograder.zip for Gradescope's autograder",
    )

    p_grade = sub.add_parser("grade", help="grade submissions into a gradebook CSV plus feedback per student")
    p_grade.add_argument("submissions", nargs="+", help="submitted .ipynb files, or folders of them")
    group = p_grade.add_mutually_exclusive_group()
    group.add_argument("--reference", help="the autograder (or source) notebook of the assignment")
    group.add_argument(
        "--autograder-dir",
        help="folder of autograder notebooks; each submission gets its match (default: dist/autograder)",
    )
    p_grade.add_argument(
        "--out",
        default="grades.csv",
        help="gradebook CSV (default grades.csv); feedback/, "
        "reports/, reports.jsonl and similarity.csv go beside it; rerunning grades only new or "
        "changed files",
    )
    p_grade.add_argument(
        "--regrade",
        action="store_true",
        help="grade every submission again, even those whose "
        "row is up to date (their rows, reports and feedback are replaced)",
    )
    p_grade.add_argument(
        "--roster",
        metavar="ROSTER_CSV",
        help="CSV with columns student_id,name,pattern (optional "
        "email,section,login_id,canvas_id): one row per student, missing and unmatched files flagged",
    )
    p_grade.add_argument("--no-similarity", action="store_true", help="do not write similarity.csv")
    p_grade.add_argument("--jobs", type=_positive(int), default=1, help="submissions graded in parallel (default 1)")
    p_grade.add_argument("--json", action="store_true", help="also print the full reports as JSON")
    p_grade.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _add_limits(p_grade)

    p_export = sub.add_parser("export", help="write a gradebook in Canvas's or Moodle's grade import format")
    p_export.add_argument("grades", help="the grades.csv written by `grade`")
    p_export.add_argument(
        "--format",
        required=True,
        choices=("canvas", "moodle", "csv"),
        help="canvas: Student,ID,SIS User ID,SIS Login ID,Section,<assignment>...; moodle: ID "
        "number,Email address,Full name,<assignment>...; csv: one row per student and assignment",
    )
    p_export.add_argument("--out", required=True, help="the file to write")
    p_export.add_argument("--assignment", help="export this assignment only (default: every one in the gradebook)")
    p_export.add_argument(
        "--column",
        help="with --assignment: the column's title, e.g. the assignment's name in "
        "your Canvas course (default: the assignment's name here)",
    )
    p_export.add_argument(
        "--roster",
        metavar="ROSTER_CSV",
        help="the roster (needed for canvas/moodle unless grades.csv was graded with --roster)",
    )

    p_gs = sub.add_parser("gradescope", help="grade a Gradescope submission folder (what run_autograder calls)")
    p_gs.add_argument("--root", help="Gradescope's root (default $GRADESCOPE_ROOT or /autograder)")
    p_gs.add_argument("--reference", required=True, help="the autograder notebook")
    _add_limits(p_gs)

    args = parser.parse_args(argv)
    if args.command == "build":
        built = build(args.out, args.notebooks or None, notebooks_dir=args.notebooks_dir, release=args.release)
        if not built:
            return 1
        if args.gradescope:
            from qgf_lite.courseware.gradescope import write_gradescope

            for path in write_gradescope(args.out, built, release=args.release):
                print(f"wrote {path}")
        if args.selftest:
            problems = selftest(args.out, built)
            for problem in problems:
                print(f"SELFTEST FAILED: {problem}")
            if problems:
                return 1
            print(f"selftest passed: {len(built)} assignments grade full marks solved and zero unsolved")
        return 0

    if args.command == "export":
        from qgf_lite.courseware.export import export

        try:
            count = export(
                args.grades,
                args.out,
                args.format,
                assignment=args.assignment,
                roster=args.roster,
                column=args.column,
                log=lambda m: print(m, file=sys.stderr),
            )
        except (FileNotFoundError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"wrote {count} rows to {args.out} ({args.format})", file=sys.stderr)
        return 0

    if args.command == "gradescope":
        from qgf_lite.courseware.gradescope import run_gradescope

        options = _sandbox(args)
        if options is None:
            return 2
        run_gradescope(args.root, args.reference, seed=args.seed, limits=_limits(args), **options)
        return 0

    from pathlib import Path

    from qgf_lite.courseware.batch import grade_batch

    autograder_dir = args.autograder_dir
    if args.reference is None and autograder_dir is None:
        autograder_dir = "dist/autograder"
        if not Path(autograder_dir).is_dir():
            parser.error(
                "pass --reference NOTEBOOK or --autograder-dir FOLDER (no dist/autograder here; run "
                "`python -m qgf_lite.courseware build` first)"
            )
    options = _sandbox(args)
    if options is None:
        return 2
    try:
        rows = grade_batch(
            args.submissions,
            out=args.out,
            reference=args.reference,
            autograder_dir=autograder_dir,
            jobs=args.jobs,
            seed=args.seed,
            limits=_limits(args),
            progress=not args.no_progress,
            regrade=args.regrade,
            roster=args.roster,
            similarity=not args.no_similarity,
            grade_options=options,
            log=lambda m: print(m, file=sys.stderr),
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        reports_path = Path(args.out).parent / "reports.jsonl"
        graded = {row["submission"] for row in rows}
        reports = [json.loads(line) for line in reports_path.read_text().splitlines() if line.strip()]
        print(json.dumps([r for r in reports if r["submission"] in graded], indent=2))
    print(f"graded {len(rows)} submissions into {args.out}", file=sys.stderr)
    similarity = Path(args.out).parent / "similarity.csv"
    if not args.no_similarity and similarity.is_file():
        pairs = max(0, len(similarity.read_text(encoding="utf-8").splitlines()) - 1)
        print(
            f"{similarity}: {pairs} pairs of near-identical exercise cells to look at (no score changed)",
            file=sys.stderr,
        )
    return 0


__all__ = [
    "main",
]


if __name__ == "__main__":
    sys.exit(main())
