"""The wire format between the grader and the sandboxed child: JSON headers plus raw numeric arrays.

One message, both directions::

    [u32 header length][header: UTF-8 JSON][u32 payload length][payload: raw array bytes, concatenated]

The header's ``"arrays"`` entry describes every array: ``{key: {"dtype", "shape", "offset", "nbytes"}}``. The
reader checks each description (an allowed dtype, a sane shape, ``nbytes == prod(shape) * itemsize``, inside the
payload) *before* it allocates anything, and never unpickles or decompresses: the largest thing a hostile child
can make the grader hold is one payload of :data:`MAX_PAYLOAD_BYTES`. Values (numbers, strings, lists, dicts,
arrays, functions with a recipe) are a JSON tree built by :func:`encode` and read back by :func:`decode`.

This module is copied into the sandbox and loaded by path there, where ``qgf_lite`` is not importable: it
imports nothing but the standard library and numpy.
"""

import json
import struct

import numpy as np

MAX_HEADER_BYTES = 8 * 2**20
MAX_PAYLOAD_BYTES = 64 * 2**20
MAX_ARRAYS = 4096
MAX_NDIM = 8
MAX_DEPTH = 32
MAX_STRING = 10_000
# Real numbers only. Complex answers are refused unless the reader allows them (no question does today): a
# complex result compared with a real reference "passes" on its real part alone.
REAL_KINDS = "biuf"


class WireError(ValueError):
    """A message that breaks the format (too large, malformed, a refused dtype in a place that needs one)."""


class Opaque:
    """Stands for a value the wire does not carry (a module, a generator, a complex array...)."""

    def __init__(self, type_name: str):
        self.type_name = str(type_name)[:200]

    def __repr__(self):
        return f"<{self.type_name} object>"


def encode(value, arrays: dict, *, callables: bool = True, register=None, _depth: int = 0) -> dict:
    """A JSON-able description of ``value``; its arrays go into ``arrays`` under fresh keys.

    A function the other side can rebuild (``qgf_spec``: builder name and arguments) travels as its recipe; any
    other function, when ``register`` is given, as a callback id the other side calls back through the protocol.
    """
    if _depth > MAX_DEPTH:
        return {"t": "opaque", "type": "too deeply nested value"}

    def put(array) -> str:
        key = f"a{len(arrays)}"
        arrays[key] = array
        return key

    def inner(v):
        return encode(v, arrays, callables=callables, register=register, _depth=_depth + 1)

    if value is None:
        return {"t": "none"}
    if isinstance(value, (bool, np.bool_)) and not isinstance(value, np.ndarray):
        return {"t": "bool", "v": bool(value)}
    if isinstance(value, int):
        if abs(value) > 2**4096:
            return {"t": "opaque", "type": "huge int"}
        return {"t": "int", "v": str(value)}
    if isinstance(value, float):
        return {"t": "float", "a": put(np.asarray(value, np.float64))}
    if isinstance(value, str):
        return {"t": "str", "v": value[:MAX_STRING]}
    if isinstance(value, complex):
        return {"t": "scalar", "a": put(np.asarray(value))}
    if isinstance(value, np.generic):
        return {"t": "scalar", "a": put(np.asarray(value))}
    if isinstance(value, (list, tuple)):
        return {
            "t": type(value).__name__ if type(value) in (list, tuple) else "tuple",
            "items": [inner(v) for v in value],
        }
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"t": "dict", "items": {k[:MAX_STRING]: inner(v) for k, v in value.items()}}
    spec = getattr(value, "qgf_spec", None)
    if callables and callable(value) and isinstance(spec, tuple) and len(spec) == 2:
        return {
            "t": "fn",
            "builder": str(spec[0]),
            "args": encode(dict(spec[1]), arrays, callables=False, _depth=_depth + 1),
        }
    if callables and callable(value) and register is not None and not hasattr(value, "__array__"):
        return {"t": "callback", "id": int(register(value))}
    if hasattr(value, "__array__") or isinstance(value, np.ndarray):
        try:
            array = np.asarray(value)
        except Exception:
            return {"t": "opaque", "type": type(value).__name__}
        if array.dtype.kind not in REAL_KINDS + "c" or array.dtype.hasobject:
            return {"t": "opaque", "type": f"array of dtype {array.dtype}"}
        return {"t": "array", "a": put(array)}
    return {"t": "opaque", "type": type(value).__name__}


def decode(tree, arrays: dict, builders: dict | None = None, *, _depth: int = 0):
    """The value ``tree`` describes. A refused array (see :func:`read`) comes back as an :class:`Opaque`."""
    if _depth > MAX_DEPTH or not isinstance(tree, dict):
        raise WireError("malformed value")
    kind = tree.get("t")

    def array(key):
        if not isinstance(key, str) or key not in arrays:
            raise WireError("a value names an array that was not sent")
        return arrays[key]

    def inner(v):
        return decode(v, arrays, builders, _depth=_depth + 1)

    if kind == "none":
        return None
    if kind == "bool":
        return bool(tree.get("v"))
    if kind == "int":
        text = str(tree.get("v", ""))
        if len(text) > 1300:
            return Opaque("huge int")
        try:
            return int(text)
        except ValueError:
            raise WireError("malformed int") from None
    if kind == "float":
        value = array(tree.get("a"))
        if isinstance(value, Opaque) or np.size(value) != 1 or value.dtype.kind == "c":
            return value if isinstance(value, Opaque) else Opaque("malformed float")
        return float(value.reshape(-1)[0])
    if kind == "str":
        return str(tree.get("v", ""))[:MAX_STRING]
    if kind == "scalar":
        value = array(tree.get("a"))
        if isinstance(value, Opaque) or np.ndim(value) != 0:
            return value if isinstance(value, Opaque) else Opaque("malformed scalar")
        return value[()]
    if kind == "array":
        value = array(tree.get("a"))
        return value if isinstance(value, Opaque) else np.asarray(value)
    if kind in ("list", "tuple"):
        items = tree.get("items")
        if not isinstance(items, list):
            raise WireError("malformed list")
        values = [inner(v) for v in items]
        return values if kind == "list" else tuple(values)
    if kind == "dict":
        items = tree.get("items")
        if not isinstance(items, dict):
            raise WireError("malformed dict")
        return {str(k)[:MAX_STRING]: inner(v) for k, v in items.items()}
    if kind == "fn":
        if builders is None or tree.get("builder") not in builders:
            raise WireError(f"unknown function builder {str(tree.get('builder'))[:50]!r}")
        return builders[tree["builder"]](**decode(tree.get("args"), arrays, None, _depth=_depth + 1))
    if kind == "callback":
        if builders is None or "__callback__" not in builders:
            raise WireError("a callback cannot be used here")
        return builders["__callback__"](int(tree.get("id", -1)))
    if kind == "opaque":
        return Opaque(str(tree.get("type", "object")))
    raise WireError(f"bad value tag {str(kind)[:20]!r}")


def pack(header: dict, arrays: dict | None = None) -> bytes:
    """One message: ``header`` plus the arrays it refers to (C order, native dtypes as given)."""
    table, chunks, offset = {}, [], 0
    for key, value in (arrays or {}).items():
        array = np.asarray(value)  # not ascontiguousarray: it turns a 0-d array into shape (1,)
        if not array.flags.c_contiguous:
            array = array.copy(order="C")
        data = array.tobytes()
        table[key] = {"dtype": array.dtype.str, "shape": list(array.shape), "offset": offset, "nbytes": len(data)}
        chunks.append(data)
        offset += len(data)
    head = json.dumps({**header, "arrays": table}).encode("utf-8")
    payload = b"".join(chunks)
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


def _array(spec, payload: bytes, allow_complex: bool):
    """One described array, checked before it is built; a refused dtype gives an Opaque, not an error."""
    if not isinstance(spec, dict):
        raise WireError("malformed array description")
    dtype_text, shape = spec.get("dtype"), spec.get("shape")
    offset, nbytes = spec.get("offset"), spec.get("nbytes")
    if not (
        isinstance(dtype_text, str)
        and len(dtype_text) <= 8
        and isinstance(shape, list)
        and len(shape) <= MAX_NDIM
        and all(isinstance(n, int) and 0 <= n <= MAX_PAYLOAD_BYTES for n in shape)
        and isinstance(offset, int)
        and isinstance(nbytes, int)
        and 0 <= offset
        and 0 <= nbytes
        and offset + nbytes <= len(payload)
    ):
        raise WireError("malformed array description")
    try:
        dtype = np.dtype(dtype_text)
    except TypeError:
        raise WireError(f"unknown dtype {dtype_text!r}") from None
    count = 1
    for n in shape:
        count *= n
    if dtype.kind not in REAL_KINDS + "c" or dtype.hasobject or dtype.itemsize == 0 or count * dtype.itemsize != nbytes:
        raise WireError("array description does not match its bytes")
    if dtype.kind == "c" and not allow_complex:
        return Opaque(f"array of complex numbers ({dtype.name}); real numbers were expected")
    return np.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(shape).copy()


def unpack(stream, *, allow_complex: bool = True, max_payload: int = MAX_PAYLOAD_BYTES) -> tuple[dict, dict]:
    """Read one message: (header, {key: array or Opaque}). Sizes are checked before anything is allocated."""
    (size,) = struct.unpack(">I", _read_exact(stream, 4))
    if size > MAX_HEADER_BYTES:
        raise WireError(f"message header of {size} bytes is too large")
    try:
        header = json.loads(_read_exact(stream, size).decode("utf-8"))
    except (ValueError, RecursionError):
        raise WireError("message header is not JSON") from None
    if not isinstance(header, dict):
        raise WireError("message header is not an object")
    (size,) = struct.unpack(">I", _read_exact(stream, 4))
    if size > max_payload:
        raise WireError(f"message payload of {size} bytes is too large (limit {max_payload})")
    payload = _read_exact(stream, size) if size else b""
    table = header.pop("arrays", {}) or {}
    if not isinstance(table, dict) or len(table) > MAX_ARRAYS:
        raise WireError("malformed array table")
    arrays = {str(key): _array(spec, payload, allow_complex) for key, spec in table.items()}
    return header, arrays


__all__ = [
    "decode",
    "encode",
    "MAX_ARRAYS",
    "MAX_DEPTH",
    "MAX_HEADER_BYTES",
    "MAX_NDIM",
    "MAX_PAYLOAD_BYTES",
    "MAX_STRING",
    "Opaque",
    "pack",
    "REAL_KINDS",
    "unpack",
    "WireError",
]
