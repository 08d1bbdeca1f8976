"""``python -m qgf_lite.courseware build | grade``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence


from qgf_lite.courseware.build import build, find_reference, selftest
from qgf_lite.courseware.grading import grade_notebook

# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qgf_lite.courseware", description="Student versions, solutions and an autograder from the course notebooks.")
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

    p_grade = sub.add_parser("grade", help="grade submissions; prints a JSON report")
    p_grade.add_argument("submissions", nargs="+", help="submitted .ipynb files")
    group = p_grade.add_mutually_exclusive_group()
    group.add_argument("--reference", help="autograder notebook to take setup and check cells from")
    group.add_argument("--autograder-dir", help="folder of autograder notebooks; the matching one is picked")
    p_grade.add_argument("--timeout", type=float, default=300.0, help="seconds per cell (default 300)")
    p_grade.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")

    args = parser.parse_args(argv)
    if args.command == "build":
        built = build(
            args.out, args.notebooks or None, notebooks_dir=args.notebooks_dir, release=args.release
        )
        if not built:
            return 1
        if args.selftest:
            problems = selftest(args.out, built)
            for problem in problems:
                print(f"SELFTEST FAILED: {problem}")
            if problems:
                return 1
            print(f"selftest passed: {len(built)} assignments grade full marks solved and zero unsolved")
        return 0

    reports = []
    for submission in args.submissions:
        reference = args.reference
        if args.autograder_dir:
            reference = find_reference(submission, args.autograder_dir)
        reports.append(
            grade_notebook(submission, reference, cell_timeout=args.timeout, kernel_name=args.kernel)
        )
    print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
