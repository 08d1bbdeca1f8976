"""Grading throughput: submissions per minute for N copies of assignment 01 graded with --jobs J.

    python benchmarks/bench_grading.py [--copies 40] [--jobs 2] [--hostile] [--backend auto]

Builds the course's autograder for notebooks/01_flow_matching.ipynb in a temporary folder, copies its solutions
notebook N times (every copy runs all public and hidden checks, the most work a submission can cause), and
grades them with ``qgf_lite.courseware.grade_batch``, as ``python -m qgf_lite.courseware grade --jobs J`` does.
Figures are end to end (sandbox start-up, JAX import and the checks included). CPU seconds per submission are given twice:
the grader's process tree (this process plus the sandboxes it reaped; a child killed inside bwrap's PID namespace
is missed) and machine-wide from /proc/stat (everything that ran meanwhile: exact on an idle machine, an upper
bound on a shared one). The last line is JSON for scripts. Target (issue 18): at least 25 submissions per minute with
--jobs 2 on an idle 2-core machine, i.e. 100 students x 4 assignments in under 16 minutes.

--hostile adds tests/fixtures/grading/hostile/knock_over_the_grader (a 400 MB answer, a 1 MB exception name, a
complex answer) to the batch and reports the grader's own peak resident memory (target: under 1 GB), which the
sandboxes' memory does not count in.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _machine_cpu_seconds() -> float | None:
    """CPU seconds spent by every process on the machine (Linux /proc/stat). The sandboxes' own work shows up here
    even where the grader cannot reap it (a child killed inside bwrap's PID namespace is not accounted to the
    grader); on a busy machine it includes the other load too, so read it on an idle one."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--notebook", default=str(REPO / "notebooks" / "01_flow_matching.ipynb"))
    parser.add_argument("--hostile", action="store_true", help="add a submission that attacks the trusted side")
    parser.add_argument("--backend", default=None, help="sandbox backend (default: auto)")
    args = parser.parse_args(argv)

    from qgf_lite.courseware import build, grade_batch
    from qgf_lite.courseware.sandbox import choose_backend

    backend = choose_backend(args.backend)

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        built = build(folder / "dist", [args.notebook], log=lambda _: None)
        stem = next(iter(built))
        submissions = folder / "submissions"
        submissions.mkdir()
        for index in range(args.copies):
            shutil.copy(
                folder / "dist" / "solutions" / f"{stem}.ipynb", submissions / f"student{index:03d}_{stem}.ipynb"
            )
        if args.hostile:
            hostile = REPO / "tests" / "fixtures" / "grading" / "hostile" / f"knock_over_the_grader_{stem}.ipynb"
            shutil.copy(hostile, submissions / hostile.name)
        cpu, machine, start = _cpu_seconds(), _machine_cpu_seconds(), time.perf_counter()
        rows = grade_batch(
            [submissions],
            out=folder / "out" / "grades.csv",
            autograder_dir=folder / "dist" / "autograder",
            jobs=args.jobs,
            progress=False,
            log=lambda _: None,
            similarity=False,
            grade_options={"backend": backend},
        )
        wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
        machine = _machine_cpu_seconds() - machine if machine is not None else None
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    graded = len(rows)
    full = sum(1 for row in rows if row["total"] == row["max_total"] and row["status"] == "ok")
    result = {
        "assignment": stem,
        "copies": args.copies,
        "jobs": args.jobs,
        "wall_s": round(wall, 1),
        "graded": graded,
        "submissions_per_min": round(60 * graded / wall, 1),
        "cpu_s_per_submission": round(cpu / graded, 2),
        "submissions_per_min_per_cpu_from_cpu_time": round(60 * graded / cpu, 1),
        "machine_cpu_s_per_submission": round(machine / graded, 2) if machine is not None else None,
        "full_marks": full,
        "hostile": args.hostile,
        "grader_peak_rss_mib": round(peak_mib, 1),
        "backend": backend,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
    print(
        f"{args.copies} copies of {stem}, --jobs {args.jobs}: {wall:.1f} s wall, "
        f"{result['submissions_per_min']} submissions/min, {result['cpu_s_per_submission']} CPU s per submission "
        f"(grader's process tree; {result['machine_cpu_s_per_submission']} machine-wide), "
        f"{full}/{args.copies} full marks, grader peak RSS {peak_mib:.0f} MiB, backend {backend} "
        f"(load average {result['load_average_1min']})"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
