"""CPU time of each course notebook run top to bottom in full mode: the figures the notebook headers quote.

    python benchmarks/bench_notebooks.py                       # every notebook, full mode (CI and QGF_SMOKE unset)
    python benchmarks/bench_notebooks.py 04 06                 # some of them (numbers or names)
    python benchmarks/bench_notebooks.py --quick               # one small notebook in SMOKE mode (CI's smoke run)
    python benchmarks/bench_notebooks.py --keep runs/executed  # also keep the executed notebooks

Each notebook runs in its own ``jupyter nbconvert --to notebook --execute`` process (a fresh kernel, as "Restart
kernel and run all" gives). The figure is **CPU time**: user + system time of that process and everything it
started and waited for (the kernel, its threads, the simulator), read with ``resource.getrusage(RUSAGE_CHILDREN)``
before and after. CPU time hardly changes when other programs share the machine, while wall-clock time does, so
the load average at the start and end of each run is recorded next to it (the notebooks compute on the CPU; a full
run on an idle 2-core laptop takes about its CPU time divided by 1 to 2, the cores JAX keeps busy).

Results are merged into ``benchmarks/results/notebook_times.json`` (one entry per notebook; ``--out`` elsewhere),
written atomically. ``header_quote`` is what a header should say: the CPU time rounded **up** (to 10 s below two
minutes, to 30 s above), so no header understates a measured run. ``tests/test_bench_notebooks.py`` checks that
every header quotes at least the measured time and runs ``--quick``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "notebook_times.json"
QUICK_NOTEBOOK = "01_flow_matching"
# What a header says: "Full mode needs about 3 min 30 s of CPU time" (the phrase the test reads back).
HEADER_PATTERN = re.compile(r"about (?:(\d+) min(?:utes?)?)?(?:\s*(\d+) s)? of CPU time")


def notebook_paths(selected: Sequence[str]) -> list[Path]:
    """The notebooks named by number ("04") or stem ("04_test_time_compute"); all six when none is named."""
    every = sorted(NOTEBOOKS.glob("0*.ipynb"))
    if not selected:
        return every
    chosen = []
    for name in selected:
        hits = [p for p in every if p.stem == name or p.stem.split("_")[0] == name.zfill(2)]
        if len(hits) != 1:
            raise SystemExit(f"no notebook named {name!r}; choose from {', '.join(p.stem for p in every)}")
        chosen.append(hits[0])
    return chosen


def header_quote(cpu_seconds: float) -> str:
    """The time a header quotes: ``cpu_seconds`` rounded up, to 10 s below 2 min and to 30 s above."""
    step = 10 if cpu_seconds < 120 else 30
    total = int(math.ceil(cpu_seconds / step) * step)
    minutes, seconds = divmod(total, 60)
    if not minutes:
        return f"{seconds} s"
    return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"


def quoted_seconds(text: str) -> int | None:
    """The CPU time a notebook header quotes (``HEADER_PATTERN``), in seconds; None when it quotes none."""
    match = HEADER_PATTERN.search(text)
    if not match or not (match.group(1) or match.group(2)):
        return None
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)


def run_notebook(path: Path, *, smoke: bool, keep: Path | None, timeout: int) -> dict:
    """Execute one notebook in a fresh kernel; its CPU time (user + sys of every process it waited for) and more."""
    env = dict(os.environ)
    env.pop("CI", None)
    env.pop("QGF_SMOKE", None)
    if smoke:
        env["QGF_SMOKE"] = "1"
    env.setdefault("MUJOCO_GL", "egl")
    out_dir = keep or Path(tempfile.mkdtemp(prefix="qgf-bench-nb-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "nbconvert",
        "--to",
        "notebook",
        "--execute",
        f"--ExecutePreprocessor.timeout={timeout}",
        "--output-dir",
        str(out_dir),
        "--output",
        path.name,
        str(path),
    ]
    load_before = os.getloadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=str(out_dir), capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_after = os.getloadavg()
    if done.returncode:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"{path.name} failed in {'SMOKE' if smoke else 'full'} mode:\n{tail}")
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return {
        "notebook": path.stem,
        "mode": "smoke" if smoke else "full",
        "cpu_s": round(user + system, 1),
        "user_s": round(user, 1),
        "sys_s": round(system, 1),
        "wall_s": round(wall, 1),
        "header_quote": header_quote(user + system),
        "load_average_start": [round(v, 2) for v in load_before],
        "load_average_end": [round(v, 2) for v in load_after],
        "executed": str(out_dir / path.name) if keep else None,
    }


def machine() -> dict:
    import jax

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax_version": jax.__version__,
        "git_commit": commit.stdout.strip() or None,
    }


def write_results(out: Path, rows: list[dict]) -> dict:
    """Merge ``rows`` into the JSON at ``out`` (one entry per notebook and mode) and write it atomically."""
    results = json.loads(out.read_text()) if out.is_file() else {"notebooks": {}}
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for row in rows:
        key = row["notebook"] if row["mode"] == "full" else f"{row['notebook']} (smoke)"
        results["notebooks"][key] = {**row, "measured_at": stamp, **machine()}
    results["what"] = (
        "CPU time (user + sys of the nbconvert process, its kernel and everything they waited for) of "
        "one top-to-bottom run per notebook; load averages show how busy the machine was."
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", help="notebook numbers or names (default: all six)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"only {QUICK_NOTEBOOK} in SMOKE mode, not written to the results unless --out is given",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help=f"results JSON (default {DEFAULT_OUT.relative_to(REPO)})"
    )
    parser.add_argument("--keep", type=Path, default=None, help="folder for the executed notebooks")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell (default 3600)")
    args = parser.parse_args(argv)
    paths = notebook_paths([QUICK_NOTEBOOK] if args.quick and not args.notebooks else args.notebooks)
    rows = []
    for path in paths:
        row = run_notebook(path, smoke=args.quick, keep=args.keep, timeout=args.timeout)
        rows.append(row)
        print(
            f"{row['notebook']:34s} {row['mode']:5s} CPU {row['cpu_s']:7.1f} s (user {row['user_s']:.1f}, sys "
            f"{row['sys_s']:.1f}), wall {row['wall_s']:7.1f} s, load average {row['load_average_start'][0]:.2f} -> "
            f"{row['load_average_end'][0]:.2f}; header: about {row['header_quote']} of CPU time",
            flush=True,
        )
    out = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)
    if out is not None:
        write_results(out, rows)
        print(f"wrote {out}")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
