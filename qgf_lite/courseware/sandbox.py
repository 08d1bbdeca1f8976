"""Running a submission's code in a child process the grader does not trust.

The child (``python -m qgf_lite.courseware.sandbox``) runs the exercise cells, the cheap setup/helper cells and
nothing else, then answers requests "call your function ``name`` on these inputs" with the outputs. Inputs and
outputs cross the process boundary as JSON plus an ``.npz`` of plain arrays (never pickle), so whatever the
student's code does (monkeypatch ``checks``, install IPython hooks, swallow interrupts, write files) stays in the
child: the grade is decided in the parent from the returned numbers alone.

The parent side, :class:`Sandbox`, starts the child in a fresh temporary folder holding only a copy of the
submission (cwd and HOME there), in its own process group, kills the whole group on a wall-clock deadline
(SIGKILL: a bare ``except:`` cannot swallow it) or when its resident memory passes a limit (polled; RLIMIT_AS
would break JAX, which reserves a lot of virtual memory), and limits the size of files it may write. Where
unprivileged user namespaces work (``unshare -r``), the child also gets no network, its own PID namespace and
empty tmpfs mounts over the folders the grader names (other submissions, the gradebook, $HOME); see
:func:`isolation_available`.

Wire format, both directions: ``[u32 len][JSON header][u32 len][npz bytes]``. Values are encoded by
:func:`encode` into a JSON tree whose arrays live in the npz.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import queue
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

MAX_MESSAGE_BYTES = 64 * 2**20
JAX_CACHE_FOLDER = "jax_cache"  # far more than any check needs; a bigger answer is refused, not read


# ---------------------------------------------------------------------------
# Encoding values: JSON tree + named arrays
# ---------------------------------------------------------------------------


class Opaque:
    """Stands for a value of a type the wire format does not carry (a student returned a module, a generator...)."""

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self):
        return f"<{self.type_name} object>"


def encode(value, arrays: dict, *, callables: bool = True, register=None) -> dict:
    """A JSON-able description of ``value``; arrays go into ``arrays`` under fresh keys.

    A function the other side can rebuild (``qgf_spec``) travels as its recipe; any other function, when
    ``register`` is given, as a callback id: the other side calls it back through the protocol.
    """

    def put(array) -> str:
        key = f"a{len(arrays)}"
        arrays[key] = array
        return key

    if value is None:
        return {"t": "none"}
    if isinstance(value, (bool, np.bool_)) and not isinstance(value, np.ndarray):
        return {"t": "bool", "v": bool(value)}
    if isinstance(value, int):
        return {"t": "int", "v": str(value)}
    if isinstance(value, float):
        return {"t": "float", "a": put(np.asarray(value, np.float64))}
    if isinstance(value, str):
        return {"t": "str", "v": value[:10_000]}
    if isinstance(value, np.generic):
        return {"t": "scalar", "a": put(np.asarray(value))}
    if isinstance(value, (list, tuple)):
        return {"t": type(value).__name__,
                "items": [encode(v, arrays, callables=callables, register=register) for v in value]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"t": "dict",
                "items": {k: encode(v, arrays, callables=callables, register=register) for k, v in value.items()}}
    spec = getattr(value, "qgf_spec", None)
    if callables and callable(value) and isinstance(spec, tuple) and len(spec) == 2:
        return {"t": "fn", "builder": str(spec[0]), "args": encode(dict(spec[1]), arrays, callables=False)}
    if callables and callable(value) and register is not None and not hasattr(value, "__array__"):
        return {"t": "callback", "id": int(register(value))}
    if hasattr(value, "__array__") or isinstance(value, np.ndarray):
        try:
            array = np.asarray(value)
        except Exception:
            return {"t": "opaque", "type": type(value).__name__}
        if array.dtype == object or array.dtype.kind not in "biufc":
            return {"t": "opaque", "type": type(value).__name__}
        return {"t": "array", "a": put(array)}
    return {"t": "opaque", "type": type(value).__name__}


def decode(tree: dict, arrays, builders: dict | None = None):
    kind = tree.get("t")
    if kind == "none":
        return None
    if kind == "bool":
        return bool(tree["v"])
    if kind == "int":
        return int(tree["v"])
    if kind == "float":
        return float(arrays[tree["a"]])
    if kind == "str":
        return str(tree["v"])
    if kind == "scalar":
        return np.asarray(arrays[tree["a"]])[()]
    if kind == "array":
        return np.asarray(arrays[tree["a"]])
    if kind in ("list", "tuple"):
        items = [decode(v, arrays, builders) for v in tree["items"]]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        return {k: decode(v, arrays, builders) for k, v in tree["items"].items()}
    if kind == "fn":
        if builders is None or tree["builder"] not in builders:
            raise ValueError(f"unknown function builder {tree['builder']!r}")
        return builders[tree["builder"]](**decode(tree["args"], arrays, builders))
    if kind == "callback":
        if builders is None or "__callback__" not in builders:
            raise ValueError("a callback cannot be used here")
        return builders["__callback__"](int(tree["id"]))
    if kind == "opaque":
        return Opaque(str(tree.get("type", "object")))
    raise ValueError(f"bad value tag {kind!r}")


def pack(header: dict, arrays: dict | None = None) -> bytes:
    buffer = io.BytesIO()
    if arrays:
        np.savez(buffer, **arrays)
    payload = buffer.getvalue()
    head = json.dumps(header).encode("utf-8")
    return struct.pack(">I", len(head)) + head + struct.pack(">I", len(payload)) + payload


def _read_exact(stream, n: int) -> bytes:
    chunks = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            raise EOFError("stream closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def unpack(stream) -> tuple[dict, dict]:
    """Read one message; arrays are loaded without pickle."""
    (size,) = struct.unpack(">I", _read_exact(stream, 4))
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(f"message header of {size} bytes is too large")
    header = json.loads(_read_exact(stream, size).decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("message header is not an object")
    (size,) = struct.unpack(">I", _read_exact(stream, 4))
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(f"message payload of {size} bytes is too large")
    arrays = {}
    if size:
        with np.load(io.BytesIO(_read_exact(stream, size)), allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    return header, arrays


def function_builders() -> dict:
    """How the checks' toy functions are rebuilt on the other side (see ``qgf_spec``)."""
    from qgf_lite.checks.flow import velocity_field
    from qgf_lite.checks.fql import policy_field
    from qgf_lite.checks.guidance import critic_field

    return {"velocity_field": velocity_field, "critic_field": critic_field, "policy_field": policy_field}


# ---------------------------------------------------------------------------
# Child side
# ---------------------------------------------------------------------------


class _NoIPython:
    """``get_ipython()`` in the child: magics and hooks do nothing (there is no IPython kernel here)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


_FIRED: list = []


def _install_tripwires(paths: Sequence[str]) -> None:
    """Wrap the package's reference implementations so calls to them are recorded (see ``Question.references``)."""
    import functools
    import importlib

    wrappers = {}
    for path in paths:
        module_name, _, attr = path.partition(":")
        try:
            module = importlib.import_module(module_name)
            original = getattr(module, attr)
        except Exception:
            continue
        if id(original) in wrappers or not callable(original):
            continue

        def make(original, label):
            @functools.wraps(original)
            def tripwire(*args, **kwargs):
                _FIRED.append(label)
                return original(*args, **kwargs)

            return tripwire

        wrappers[id(original)] = (original, make(original, path))
    for name, module in list(sys.modules.items()):
        if not name.startswith("qgf_lite") or module is None:
            continue
        for attr, value in list(vars(module).items()):
            if id(value) in wrappers and wrappers[id(value)][0] is value:
                setattr(module, attr, wrappers[id(value)][1])


def _child_main() -> None:  # pragma: no cover - runs in the sandboxed process
    import resource

    file_limit = int(os.environ.get("QGF_SANDBOX_FILE_LIMIT", str(64 * 2**20)))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))  # hard limit too: no raising it back
    protocol_in = os.fdopen(os.dup(0), "rb", buffering=0)
    protocol_out = os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # the student's prints go to the log, never into the protocol stream
    sys.stdout = sys.stderr

    def send(header, arrays=None):
        protocol_out.write(pack(header, arrays))

    def error_of(err: BaseException) -> dict:
        text = str(err)
        if isinstance(err, SyntaxError):
            text = f"{err.msg} (line {err.lineno})"
        return {"type": type(err).__name__, "message": text[:2000]}

    namespace: dict = {"__name__": "__main__", "get_ipython": lambda: _NoIPython()}
    builders = None

    def make_callback(callback_id):
        """A function of the grader's (e.g. a check's velocity field), evaluated by the grader."""

        def callback(*args):
            arrays: dict = {}
            send({"op": "callback", "id": callback_id, "args": encode(tuple(args), arrays, callables=False)}, arrays)
            reply, out = unpack(protocol_in)
            if reply.get("op") != "callback_result":
                raise RuntimeError("the grader did not answer the callback")
            if "error" in reply:
                raise RuntimeError(f"the check's function failed on these inputs: {reply['error']}")
            return decode(reply["value"], out, builders)

        return callback
    while True:
        try:
            header, arrays = unpack(protocol_in)
        except EOFError:
            return
        op = header.get("op")
        if op == "init":
            _install_tripwires(header.get("tripwires", []))
            builders = function_builders()
            for cell in header["cells"]:
                send({"op": "cell_start", "index": cell["index"]})
                error = None
                try:
                    exec(compile(cell["source"], f"<cell {cell['index']}>", "exec"), namespace)
                except BaseException as err:  # noqa: B036 - a student's sys.exit() or bare raise is a cell error
                    error = error_of(err)
                send({"op": "cell_done", "index": cell["index"], "error": error})
            names = {name: ("callable" if callable(namespace[name]) else "value")
                     for name in header.get("names", []) if name in namespace}
            send({"op": "ready", "names": names})
        elif op in ("call", "vjp"):
            del _FIRED[:]
            builders["__callback__"] = make_callback
            out: dict = {}
            try:
                fn = namespace[header["name"]]
                args = decode(header["args"], arrays, builders)
                if op == "call":
                    result = fn(*args)
                else:
                    from qgf_lite.checks._core import student_vjp

                    result = student_vjp(header["name"], fn, args, int(header["argnum"]),
                                         decode(header["cotangent"], arrays, builders))
                tree = encode(result, out, callables=False)
                reply = {"op": "result", "value": tree}
            except BaseException as err:  # noqa: B036
                out = {}
                reply = {"op": "raised", "error": error_of(err)}
            reply["tripwires"] = sorted(set(_FIRED))
            send(reply, out)
        elif op == "get":
            out = {}
            send({"op": "result", "value": encode(namespace.get(header["name"]), out, callables=False),
                  "tripwires": []}, out)
        else:
            return


# ---------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------


class SandboxLost(BaseException):
    """The child was killed or died. A BaseException, so a check's ``except Exception`` cannot hide it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _process_group_rss(pgid: int) -> int:
    """Resident bytes of every process in a process group (0 if none is left)."""
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
            if int(fields[2]) != pgid:  # fields after ')': state ppid pgrp ...
                continue
            with open(f"/proc/{entry}/statm", "rb") as handle:
                total += int(handle.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    return total


_ISOLATION: bool | None = None


def isolation_available() -> bool:
    """True where ``unshare`` can give the child its own user, mount, PID and network namespaces."""
    global _ISOLATION
    if _ISOLATION is None:
        unshare = shutil.which("unshare")
        if unshare is None or os.environ.get("QGF_SANDBOX_NO_UNSHARE"):
            _ISOLATION = False
        else:
            try:
                done = subprocess.run([unshare, "-r", "-m", "-n", "-p", "-f", "--mount-proc", "true"],
                                      capture_output=True, timeout=20)
                _ISOLATION = done.returncode == 0
            except (OSError, subprocess.SubprocessError):
                _ISOLATION = False
    return _ISOLATION


_MOUNT_SCRIPT = r"""
set -e
dir="$QGF_SANDBOX_DIR"
for hidden in "$@"; do
  [ -d "$hidden" ] && mount -t tmpfs -o size=1m,mode=755 tmpfs "$hidden"
done
if [ -d /mnt ]; then
  # A private /tmp. What the child needs from the old one (its own folder; the package or the interpreter when
  # they live under /tmp, e.g. a checkout there) is parked on a staging tmpfs and bound back at the same paths.
  mount -t tmpfs -o size=1m,mode=755 tmpfs /mnt
  mkdir /mnt/submission && mount --bind "$dir" /mnt/submission
  printf '%s\n' "$QGF_SANDBOX_KEEP_TMP" | { i=0; while IFS= read -r keep; do
    [ -n "$keep" ] || continue
    mkdir "/mnt/keep$i" && mount --rbind "$keep" "/mnt/keep$i"; i=$((i + 1)); done; }
  mount -t tmpfs -o size=256m,mode=1777 tmpfs /tmp
  mkdir -p /tmp/submission && mount --bind /mnt/submission /tmp/submission
  printf '%s\n' "$QGF_SANDBOX_KEEP_TMP" | { i=0; while IFS= read -r keep; do
    [ -n "$keep" ] || continue
    mkdir -p "$keep" && mount --rbind "/mnt/keep$i" "$keep"; i=$((i + 1)); done; }
  umount -l /mnt
  dir=/tmp/submission
fi
[ -d /dev/shm ] && mount -t tmpfs -o size=64m tmpfs /dev/shm || true
mount --rbind / / && mount -o remount,bind,ro / || true
export HOME="$dir" TMPDIR="$dir" JAX_COMPILATION_CACHE_DIR="$dir/jax_cache"
cd "$dir"
exec "$QGF_SANDBOX_PYTHON" -c "$QGF_SANDBOX_BOOT"
"""


def _needed_under_tmp(paths) -> list[str]:
    """The outermost of ``paths`` that lie under /tmp (the sandbox's private /tmp must bring them back)."""
    tmp = Path("/tmp").resolve()
    under = sorted({p for p in paths if tmp in p.parents}, key=lambda p: len(p.parts))
    outermost: list[Path] = []
    for path in under:
        if not any(o == path or o in path.parents for o in outermost):
            outermost.append(path)
    return [str(p) for p in outermost]


class Sandbox:
    """One child process for one submission (restarted by the grader after it is killed)."""

    def __init__(self, submission: Path, *, memory_limit: int, hide: Sequence[Path] = (),
                 file_limit: int = 64 * 2**20, isolate: bool | None = None, jax_cache: Path | None = None):
        self.folder = Path(tempfile.mkdtemp(prefix="qgf_grade_"))
        self.copy = self.folder / Path(submission).name
        shutil.copyfile(submission, self.copy)
        # JAX's compilation cache, warmed by grading the reference (see grading.warm_jax_cache): the child gets
        # its own copy, so whatever it writes there reaches no other submission.
        self.jax_cache = self.folder / JAX_CACHE_FOLDER
        if jax_cache is not None and Path(jax_cache).is_dir():
            shutil.copytree(jax_cache, self.jax_cache)
        else:
            self.jax_cache.mkdir()
        self.memory_limit = memory_limit
        self.killed_for: str | None = None
        self.log = bytearray()
        self._messages: queue.Queue = queue.Queue()
        package_root = str(Path(__file__).resolve().parents[2])
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.folder),
            "TMPDIR": str(self.folder),
            "PYTHONPATH": package_root,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
            "QGF_SMOKE": "1",
            "MPLBACKEND": "Agg",
            "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
            "OMP_NUM_THREADS": "1",
            "QGF_SANDBOX_FILE_LIMIT": str(int(file_limit)),
            "JAX_COMPILATION_CACHE_DIR": str(self.jax_cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        # Run this file by path: `-m` would import qgf_lite.courseware (nbformat, nbclient...) for nothing.
        boot = f"import runpy; runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')"
        command = [sys.executable, "-c", boot]
        if isolate is None:
            isolate = isolation_available()
        self.isolated = bool(isolate)
        if self.isolated:
            keep = {Path(package_root).resolve(), Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(),
                    Path(sys.executable).resolve().parent, self.folder.resolve()}
            hidden = []
            for path in list(hide) + [Path.home()]:
                path = Path(path).resolve()
                # Never hide a folder the child needs (the package, the interpreter, its own folder); /tmp goes
                # anyway (the child's folder is moved to /tmp/submission inside).
                if path.is_dir() and not any(k == path or path in k.parents for k in keep if k != self.folder.resolve()):
                    hidden.append(str(path))
            env["QGF_SANDBOX_DIR"] = str(self.folder)
            env["QGF_SANDBOX_KEEP_TMP"] = "\n".join(_needed_under_tmp(k for k in keep if k != self.folder.resolve()))
            env["QGF_SANDBOX_PYTHON"] = sys.executable
            env["QGF_SANDBOX_BOOT"] = boot
            command = [shutil.which("unshare"), "-r", "-m", "-n", "-p", "-f", "--mount-proc", "--kill-child",
                       "sh", "-c", _MOUNT_SCRIPT, "sandbox", *hidden]
        self.process = subprocess.Popen(
            command, cwd=self.folder, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,  # no preexec_fn: unsafe with JAX's threads
        )
        self.pgid = self.process.pid
        self._alive = True
        threading.Thread(target=self._read_messages, daemon=True).start()
        threading.Thread(target=self._read_log, daemon=True).start()
        threading.Thread(target=self._watch_memory, daemon=True).start()

    # -- background threads
    def _read_messages(self):
        try:
            while True:
                self._messages.put(unpack(self.process.stdout))
        except (ValueError, OSError) as err:
            self._messages.put(EOFError(str(err)) if "closed file" in str(err) else err)
        except Exception as err:  # EOF, or a malformed / oversized message: both end the session
            self._messages.put(err)

    def _read_log(self):
        try:
            for chunk in iter(lambda: self.process.stderr.read(4096), b""):
                self.log += chunk
                del self.log[:-20_000]
        except (OSError, ValueError):  # closed by close()
            pass

    def _watch_memory(self):
        while self._alive and self.process.poll() is None:
            if _process_group_rss(self.pgid) > self.memory_limit:
                self.killed_for = f"memory limit exceeded ({self.memory_limit / 2**30:.3g} GiB resident)"
                self.kill()
                return
            time.sleep(0.3)

    # -- talking to the child
    def send(self, header: dict, arrays: dict | None = None) -> None:
        try:
            self.process.stdin.write(pack(header, arrays))
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise SandboxLost(self._death_reason()) from None

    def receive(self, deadline: float, what: str) -> tuple[dict, dict]:
        remaining = deadline - time.monotonic()
        try:
            message = self._messages.get(timeout=max(remaining, 0.0))
        except queue.Empty:
            self.killed_for = f"time limit exceeded while {what}"
            self.kill()
            raise SandboxLost(self.killed_for) from None
        if isinstance(message, Exception):
            if not isinstance(message, EOFError):
                self.killed_for = f"the grading process sent a malformed answer ({message})"
                self.kill()
            raise SandboxLost(self._death_reason())
        return message

    def _death_reason(self) -> str:
        if self.killed_for:
            return self.killed_for
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.returncode
        if code is not None and code < 0:
            return f"the process running the submission died (signal {-code})"
        return f"the process running the submission died (exit code {code})"

    def kill(self) -> None:
        self._alive = False
        for target in (self.pgid,):
            try:
                os.killpg(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.process.kill()
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass

    def keep_jax_cache(self, target: Path) -> None:
        """Copy the child's compilation cache to ``target`` (after a trusted run; see warm_jax_cache)."""
        if self.jax_cache.is_dir():
            shutil.copytree(self.jax_cache, target, dirs_exist_ok=True)

    def close(self) -> None:
        if self._alive and self.process.poll() is None and not self.killed_for:
            try:  # a clean exit first, so the child's CPU time is accounted to the grader (benchmarks)
                self.process.stdin.write(pack({"op": "exit"}))
                self.process.stdin.flush()
                self.process.wait(timeout=2)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        self.kill()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                stream.close()
            except OSError:
                pass

    def cleanup(self) -> None:
        """Remove the child's folder (after :meth:`close`)."""
        shutil.rmtree(self.folder, ignore_errors=True)


# ---------------------------------------------------------------------------
# The student's functions, as the trusted side sees them
# ---------------------------------------------------------------------------


def _remote_exception(error: dict) -> Exception:
    name = str(error.get("type", "Exception"))
    message = str(error.get("message", ""))
    builtin = getattr(builtins, name, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        try:
            return builtin(message)
        except Exception:
            pass
    return type(name if name.isidentifier() else "Error", (Exception,), {})(message)


class StudentFunction:
    """Calls the student's function ``name`` in the sandbox; usable wherever a check expects the function."""

    def __init__(self, session, name: str):
        self._session = session
        self.__name__ = name

    def __call__(self, *args, **kwargs):
        if kwargs:
            raise TypeError("the autograder passes positional arguments only")
        return self._session.call("call", self.__name__, {"args": args})

    def qgf_vjp(self, args, argnum, cotangent):
        return self._session.call("vjp", self.__name__, {"args": tuple(args), "argnum": int(argnum),
                                                         "cotangent": cotangent})

    def __repr__(self):
        return f"<student function {self.__name__}>"


if __name__ == "__main__":  # pragma: no cover
    _child_main()
