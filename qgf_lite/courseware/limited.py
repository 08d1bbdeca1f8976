"""Trusted code on untrusted input, in a child process with hard limits.

Reading a student's notebook is itself an attack surface: a deeply nested JSON document or a 7 MB cell makes
``json``/``ast`` recurse, allocate and (CPython gh-106905) crash when parsed in several threads at once. The grader
therefore never parses student source in its own process: :func:`run_limited` runs one of this folder's own
scripts (``python -I <file>``, by path: importing the ``qgf_lite`` package would cost seconds) with a CPU-time, address-space and file-size limit it sets on itself before
reading anything, hands it a JSON request on stdin and takes one JSON answer, of bounded size, from stdout.
A crash, a limit or a time-out costs that request only; it comes back as :class:`LimitedFailed`.

The child runs *our* code (no student code is executed), so it needs no sandbox beyond the limits.

A script served this way (a file in this folder that imports only the standard library and this folder's
light modules) ends with::

    if __name__ == "__main__":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from limited import serve
        serve(handle)      # handle(request: dict) -> dict
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable

MAX_ANSWER_BYTES = 64 * 2**20


class LimitedFailed(RuntimeError):
    """The limited child crashed, ran out of time or memory, or answered nonsense."""


HERE = os.path.dirname(os.path.abspath(__file__))


def run_limited(script: str, request: dict, *, timeout: float = 60.0, memory: int = 2 * 2**30) -> dict:
    """Run ``python -I <this folder>/<script>`` with ``request`` on stdin; returns its JSON answer (a dict).

    timeout: wall-clock seconds (the child also limits its CPU time to this); memory: its address-space limit.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "QGF_LIMITED_CPU": str(max(1, int(timeout) + 1)),
        "QGF_LIMITED_MEMORY": str(int(memory)),
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    path = os.path.join(HERE, script)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no limited script {script!r} in {HERE}")
    process = subprocess.Popen(
        [sys.executable, "-I", path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(json.dumps(request).encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(process)
        raise LimitedFailed(f"took longer than {timeout:g} s") from None
    finally:
        _kill(process)
    if process.returncode != 0:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        reason = "ran out of memory" if "MemoryError" in tail[0] else tail[0][:200]
        raise LimitedFailed(f"exit code {process.returncode}{': ' + reason if reason else ''}")
    if len(out) > MAX_ANSWER_BYTES:
        raise LimitedFailed("answer too large")
    try:
        answer = json.loads(out)
    except ValueError as error:
        raise LimitedFailed(f"unreadable answer ({error})") from None
    if not isinstance(answer, dict):
        raise LimitedFailed("answer is not an object")
    return answer


def _kill(process) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def serve(handle: Callable[[dict], dict]) -> None:  # pragma: no cover - runs in the limited child
    """The child's side: set the limits, read one request, write one answer."""
    import resource

    cpu = int(os.environ.get("QGF_LIMITED_CPU", "60"))
    memory = int(os.environ.get("QGF_LIMITED_MEMORY", str(2 * 2**30)))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.setrecursionlimit(2000)
    request = json.loads(sys.stdin.buffer.read())
    answer = handle(request)
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()


__all__ = ["LimitedFailed", "run_limited", "serve"]
