"""Ops: DeepSpeed's op builders and their JIT (``dsrs_op_*`` in the C ABI).

An op is a set of kernel sources the library builds on demand (C++ by the system
compiler, CUDA by NVRTC), caches in a private directory keyed by everything that affects
the build, and loads into the process. Built-in ops (``cpu_adam``, ``fused_adam``,
``philox_random``) come with the library; hosts add their own with :func:`define_op`.

>>> import ctypes, deepspeed_rs as ds
>>> ds.define_op({"name": "my_op", "symbols": ["my_op_twice"], "sources": [
...     {"name": "my_op.cpp", "text": '#include "dsrs_op.h"\\n'
...      'DSRS_OP_EXPORT double my_op_twice(double x) { return 2 * x; }\\n'}]})
'my_op'
>>> with ds.load_op("my_op") as op:
...     twice = op.function("my_op_twice", ctypes.c_double, ctypes.c_double)
>>> twice(21.0)                               # the code stays loaded after close()
42.0

Build options are keyword arguments of :func:`load_op` and :func:`list_ops`, passed to the
library as a JSON object: ``portable``, ``debug``, ``force_rebuild``, ``prebuilt``
(booleans), ``cuda_arch`` (``"sm_90"``, ``"compute_80"``), ``nvcc`` (boolean),
``lock_timeout_s`` (seconds) and ``cache_dir`` (an absolute path, ``str`` or
``os.PathLike``). Unknown or invalid options raise
:class:`~deepspeed_rs.errors.InvalidConfigError` naming the option.
"""

from __future__ import annotations

import ctypes
import json
import os
from ctypes import POINTER, byref, c_size_t, c_uint8, c_void_p
from typing import Any, Dict, List, Mapping, Optional, Union

from ._handle import Handle
from ._lib import device_arg, encode, lib, read_string
from .errors import check

__all__ = ["Op", "define_op", "load_op", "list_ops", "cache_dir"]


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} values cannot be passed to the library as JSON")


def _dumps(value: Any) -> str:
    # allow_nan=False: NaN and infinities are not JSON; refuse them here (ValueError)
    # rather than send text the library cannot parse.
    return json.dumps(value, default=_json_default, allow_nan=False)


def _options_json(options: Mapping[str, Any]) -> Optional[str]:
    """The options as the C ABI's ``options_json`` (``None``, i.e. NULL, for no options)."""
    return _dumps(dict(options)) if options else None


def define_op(spec: Union[Mapping[str, Any], str]) -> str:
    """Defines (or redefines) an op at run time; returns its name.

    ``spec`` is a dict (sent as JSON; ``os.PathLike`` values become strings) or JSON text::

        {"name": "my_op", "kind": "cpu",
         "sources": [{"name": "my_op.cpp", "text": "..."}, {"path": "/abs/other.cpp"}],
         "headers": [{"name": "my_op.h", "text": "..."}],
         "include_dirs": ["/abs/include"], "defines": {"N": "4"}, "flags": ["-ffast-math"],
         "symbols": ["my_op_run"], "min_compute_capability": "8.0"}

    Only ``name`` (lowercase letters, digits, ``_``) and ``sources`` are required. Sources
    may ``#include "dsrs_op.h"`` for ``DSRS_OP_EXPORT``; every name in ``symbols`` must be
    exported, which is checked after each build. Nothing is compiled until
    :func:`load_op`. Raises :class:`~deepspeed_rs.errors.InvalidJsonError` or
    :class:`~deepspeed_rs.errors.InvalidConfigError` naming the field at fault.
    """
    if isinstance(spec, (str, bytes)):
        text = spec
    elif isinstance(spec, Mapping):
        text = _dumps(dict(spec))
    else:
        raise TypeError(f"spec must be a dict or JSON text, got {type(spec).__name__}")
    check(lib.dsrs_op_define(encode(text, "spec")))
    # The library accepted it, so it is a JSON object with a valid "name".
    return str(json.loads(text)["name"])


def load_op(name: str, **options: Any) -> "Op":
    """Loads op ``name``, building it if needed (see the module docstring for the
    options), e.g. ``load_op("cpu_adam", portable=True, cache_dir="/abs/dir")``.

    In order of preference: the op compiled into the library (``DSRS_BUILD_OPS=1``, unless
    ``prebuilt=False``), the cache's verified build, a fresh build under a per-key lock.
    Raises :class:`~deepspeed_rs.errors.UnknownOpError`,
    :class:`~deepspeed_rs.errors.OpIncompatibleError`,
    :class:`~deepspeed_rs.errors.BuildFailedError`,
    :class:`~deepspeed_rs.errors.UnsafeCacheError`,
    :class:`~deepspeed_rs.errors.LoadFailedError` or
    :class:`~deepspeed_rs.errors.LockTimeoutError`.
    """
    return Op(name, **options)


def list_ops(**options: Any) -> List[Dict[str, Any]]:
    """Every registered op (built-in first, then those defined at run time) as dicts with
    ``name``, ``kind``, ``builtin``, ``description``, ``prebuilt``, ``incompatible`` (the
    reasons it cannot be built here; empty when it can), ``cached`` and ``key``, for the
    build options given (the same keywords as :func:`load_op`)."""
    opts = encode(_options_json(options), "options")
    return json.loads(read_string(lambda b, n, nd: lib.dsrs_op_list_json(opts, b, n, nd)))


def cache_dir() -> str:
    """The op cache directory in force (``DSRS_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/deepspeed_rs``, else ``~/.cache/deepspeed_rs``), created private if
    missing. Raises :class:`~deepspeed_rs.errors.UnsafeCacheError` when it is not private."""
    return read_string(lambda b, n, nd: lib.dsrs_op_cache_dir(b, n, nd))


class Op(Handle):
    """A loaded op (``dsrs_op*``): its description and the addresses of its code.

    ``Op(name, **options)`` is :func:`load_op`. Closing the object releases the handle,
    but the op's code stays loaded for the life of the process, so addresses and ctypes
    functions obtained from it remain valid. A context manager; using a closed ``Op``
    raises :class:`~deepspeed_rs.errors.StaleHandleError`.
    """

    _FREE = "dsrs_op_free"

    def __init__(self, name: str, **options: Any) -> None:
        n = encode(name, "name")
        opts = encode(_options_json(options), "options")
        out = c_void_p()
        check(lib.dsrs_op_load(n, opts, byref(out)))
        super().__init__(out.value)
        self._name = name

    @property
    def name(self) -> str:
        """The op's name (also available after ``close()``)."""
        return self._name

    @property
    def info(self) -> Dict[str, Any]:
        """The library's description of the loaded op: ``name``, ``kind``, ``origin``
        (``"prebuilt"``, ``"cached"`` or ``"built"``), ``key``, ``target``
        (``"native:avx512"``, ``"sm_90"``, ...), ``dir`` (the cache directory of the build,
        ``None`` for prebuilt ops), ``manifest`` (with the artifact's file name, its SHA-256
        and the build command), ``symbols`` (the declared ones) and ``load_ms``."""
        h = self._h
        return json.loads(read_string(lambda b, n, nd: lib.dsrs_op_info_json(h, b, n, nd)))

    @property
    def kind(self) -> str:
        """``"cpu"`` or ``"cuda"``."""
        return str(self.info["kind"])

    @property
    def origin(self) -> str:
        """Where the code came from: ``"prebuilt"``, ``"cached"`` or ``"built"``."""
        return str(self.info["origin"])

    def symbol(self, name: str) -> int:
        """The address of exported symbol ``name`` of a CPU op (a function or a variable),
        valid for the life of the process. Raises
        :class:`~deepspeed_rs.errors.SymbolNotFoundError` (listing the declared symbols),
        or :class:`~deepspeed_rs.errors.InvalidArgumentError` for a CUDA op."""
        out = c_void_p()
        check(lib.dsrs_op_symbol(self._h, encode(name, "symbol"), byref(out)))
        return int(out.value or 0)

    def function(self, name: str, restype: Any, *argtypes: Any) -> Any:
        """Exported function ``name`` of a CPU op as a ctypes function of the given C
        signature (``ctypes.CFUNCTYPE(restype, *argtypes)``; ``restype=None`` for
        ``void``). The signature is not checked: it must match the source's."""
        return ctypes.CFUNCTYPE(restype, *argtypes)(self.symbol(name))

    def kernel(self, device: int, name: str) -> int:
        """Kernel ``name`` of a CUDA op as a ``CUfunction`` (an int) in the primary context
        of CUDA device ``device``, for ``cuLaunchKernel``. Raises
        :class:`~deepspeed_rs.errors.UnavailableError` without a CUDA device,
        :class:`~deepspeed_rs.errors.SymbolNotFoundError`, or
        :class:`~deepspeed_rs.errors.InvalidArgumentError` for a CPU op."""
        if device is None:
            raise TypeError("device must be a CUDA device index (an int >= 0)")
        out = c_void_p()
        check(lib.dsrs_op_kernel(self._h, device_arg(device), encode(name, "kernel"),
                                 byref(out)))
        return int(out.value or 0)

    def image(self) -> bytes:
        """The compiled image of a CUDA op (CUBIN, or PTX text), for hosts that load
        modules themselves. Raises :class:`~deepspeed_rs.errors.InvalidArgumentError` for a
        CPU op."""
        data = POINTER(c_uint8)()
        size = c_size_t()
        check(lib.dsrs_op_image(self._h, byref(data), byref(size)))
        return ctypes.string_at(data, size.value) if size.value else b""

    def __repr__(self) -> str:
        if self.closed:
            return f"<deepspeed_rs.Op {self._name!r} (closed)>"
        info = self.info
        return (f"<deepspeed_rs.Op {self._name!r} kind={info['kind']} "
                f"origin={info['origin']} target={info['target']}>")
