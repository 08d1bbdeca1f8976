"""The sandboxed child: it runs a submission's cells, then answers "call your function on these inputs".

The grader copies this file, :mod:`qgf_lite.courseware.wire` and :mod:`qgf_lite.checks.fields` into the
sandbox's ``lib`` folder and starts ``python -I -S lib/qgf_child.py`` there. ``qgf_lite`` itself is not
installed in that view of the file system (only modules an assignment declares are copied in), so nothing here
imports it: whatever the student's code finds in this process (these three files, the handed-over setup data,
jax, numpy) computes no answer.

Before any student code runs the child sets its own hard resource limits (core files, file size, address
space, and with a dedicated uid the number of processes), which it cannot raise again. The student's prints
go to stderr (the grader keeps the tail as a log), never into the protocol stream on the original stdout.
"""

import os
import sys


def _boot():
    lib = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [lib] + [p for p in os.environ.get("QGF_SANDBOX_PATH", "").split(os.pathsep) if p]
    import resource

    def hard(limit, value):
        value = int(value)
        if value > 0:
            resource.setrlimit(limit, (value, value))

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    hard(resource.RLIMIT_FSIZE, os.environ.get("QGF_SANDBOX_FILE_LIMIT", "0"))
    hard(resource.RLIMIT_AS, os.environ.get("QGF_SANDBOX_ADDRESS_LIMIT", "0"))
    hard(resource.RLIMIT_NPROC, os.environ.get("QGF_SANDBOX_NPROC", "0"))
    warm = os.environ.get("QGF_SANDBOX_JAX_CACHE_SEED", "")
    if warm and os.path.isdir(warm) and not os.path.exists(os.environ["JAX_COMPILATION_CACHE_DIR"]):
        import shutil

        shutil.copytree(warm, os.environ["JAX_COMPILATION_CACHE_DIR"])
    allowed = tuple(m for m in os.environ.get("QGF_SANDBOX_MODULES", "").split(",") if m)
    sys.meta_path.insert(0, _PackageGate(allowed))


class _PackageGate:
    """Refuses ``qgf_lite`` (bar declared modules) with a message a student understands. The files are not
    there anyway; this only replaces "No module named ..." with the reason."""

    def __init__(self, allowed):
        self.allowed = set(allowed)
        for name in allowed:  # their parent packages too
            parts = name.split(".")
            self.allowed.update(".".join(parts[:i]) for i in range(1, len(parts)))

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "qgf_lite" and name not in self.allowed:
            raise ModuleNotFoundError(
                f"{name} is not available while grading: exercises are graded with numpy, jax and your own "
                "functions only, so write the exercise without calling the qgf_lite package",
                name=name,
            )
        return None


class _NoIPython:
    """``get_ipython()`` here: magics and hooks do nothing (there is no IPython kernel in the sandbox)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class _LazyModule:
    """A handed-over ``import x as y`` that imports on first use (most exercises never touch plotly)."""

    def __init__(self, name):
        self.__dict__["_name"] = name
        self.__dict__["_module"] = None

    def _load(self):
        if self.__dict__["_module"] is None:
            import importlib

            self.__dict__["_module"] = importlib.import_module(self.__dict__["_name"])
        return self.__dict__["_module"]

    def __getattr__(self, name):
        return getattr(self._load(), name)

    def __repr__(self):
        return f"<module {self.__dict__['_name']!r} (lazy)>"


def _error_of(err):
    text = str(err)
    if isinstance(err, SyntaxError):
        text = f"{err.msg} (line {err.lineno})"
    return {"type": type(err).__name__[:100], "message": text[:2000]}


def _student_vjp(fn, args, argnum, cotangent):
    """Gradient of sum(fn(*args) * cotangent) with respect to args[argnum], computed where fn lives."""
    import jax
    import jax.numpy as jnp

    def partial(x):
        full = list(args)
        full[argnum] = x
        return jnp.asarray(fn(*full))

    _, pullback = jax.vjp(partial, jnp.asarray(args[argnum]))
    return pullback(jnp.asarray(cotangent))[0]


def _handover(namespace, handover, wire, builders):
    """The setup cells' results, computed by the grader: modules by name, plain values as data."""
    import importlib

    for name, module in handover.get("imports", []):
        namespace[str(name)] = _LazyModule(str(module))
    for name, module, attr in handover.get("attrs", []):
        try:
            namespace[str(name)] = getattr(importlib.import_module(str(module)), str(attr))
        except Exception:
            pass
    values = handover.get("values")
    if values is not None:
        namespace.update(wire.decode(values, handover.get("_arrays", {}), builders))


def main():  # pragma: no cover - runs in the sandbox
    _boot()
    import qgf_fields
    import qgf_wire as wire

    protocol_in = os.fdopen(os.dup(0), "rb", buffering=0)
    protocol_out = os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # the student's prints go to the log, never into the protocol stream
    sys.stdout = sys.stderr

    def send(header, arrays=None):
        protocol_out.write(wire.pack(header, arrays))

    namespace = {"__name__": "__main__", "get_ipython": lambda: _NoIPython()}
    builders = dict(qgf_fields.BUILDERS)

    def make_callback(callback_id):
        """A function of the grader's (e.g. a check's own helper), evaluated by the grader."""

        def callback(*args):
            arrays = {}
            send(
                {"op": "callback", "id": callback_id, "args": wire.encode(tuple(args), arrays, callables=False)}, arrays
            )
            reply, out = wire.unpack(protocol_in)
            if reply.get("op") != "callback_result":
                raise RuntimeError("the grader did not answer the callback")
            if "error" in reply:
                raise RuntimeError(f"the check's function failed on these inputs: {reply['error']}")
            return wire.decode(reply["value"], out, builders)

        return callback

    while True:
        try:
            header, arrays = wire.unpack(protocol_in)
        except EOFError:
            return
        op = header.get("op")
        if op == "init":
            handover = dict(header.get("handover", {}))
            handover["_arrays"] = arrays
            _handover(namespace, handover, wire, builders)
            for cell in header["cells"]:
                send({"op": "cell_start", "index": cell["index"]})
                error = None
                try:
                    exec(compile(cell["source"], f"<cell {cell['index']}>", "exec"), namespace)
                except BaseException as err:  # noqa: B036 - a student's sys.exit() or bare raise is a cell error
                    error = _error_of(err)
                send({"op": "cell_done", "index": cell["index"], "error": error})
            names = {
                name: ("callable" if callable(namespace[name]) else "value")
                for name in header.get("names", [])
                if name in namespace
            }
            send({"op": "ready", "names": names})
        elif op in ("call", "vjp"):
            builders["__callback__"] = make_callback
            out = {}
            try:
                fn = namespace[header["name"]]
                args = wire.decode(header["args"], arrays, builders)
                if op == "call":
                    result = fn(*args)
                else:
                    result = _student_vjp(
                        fn, args, int(header["argnum"]), wire.decode(header["cotangent"], arrays, builders)
                    )
                reply = {"op": "result", "value": wire.encode(result, out, callables=False)}
            except BaseException as err:  # noqa: B036
                out = {}
                reply = {"op": "raised", "error": _error_of(err)}
            send(reply, out)
        elif op == "get":
            out = {}
            send({"op": "result", "value": wire.encode(namespace.get(header["name"]), out, callables=False)}, out)
        else:
            return


if __name__ == "__main__":
    main()
