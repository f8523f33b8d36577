"""Python binding of deepspeed_rs: DeepSpeed's accelerator core, rebuilt in Rust behind a
C ABI (``include/deepspeed_rs.h``), called through ctypes.

>>> import ctypes, deepspeed_rs as ds
>>> accel = ds.Accelerator.current()          # or ds.Accelerator("cpu", devices=2)
>>> with accel.buffer(1024) as buf:
...     a = buf.numpy("float32")              # zero-copy view of the buffer's memory
...     accel.fill_normal(a, 0.0, 1.0)        # in place, from the Philox generator
>>> with ds.load_op("cpu_adam") as adam:      # an op, built and cached on first use
...     simd = adam.function("dsrs_cpu_adam_simd_level", ctypes.c_char_p)
>>> simd()                                    # see deepspeed_rs.ops
b'avx2'

The training engine (:class:`Engine`, :mod:`deepspeed_rs.engine`) trains parameters the host
registers, configured by a DeepSpeed ds_config: the host computes gradients (numpy, or
anything that writes into the engine's zero-copy views) and calls ``engine.step()`` per
micro batch; ``examples/python/train_mlp.py`` is a complete host.

Accelerator plugins (shared libraries exporting ``dsrs_accelerator_plugin_entry``, see
``examples/plugin_hostmem``) are loaded with :func:`load_accelerator_plugin` or listed in
``DSRS_ACCELERATOR_PLUGINS=path:path`` (read on first use); they are then created by name,
``ds.Accelerator("hostmem", devices=2)``, come first in detection, and can be chosen with
``DSRS_ACCELERATOR=<name>``. On CUDA, :meth:`Accelerator.wrap_stream` adopts a host's
``cudaStream_t`` and :meth:`Stream.capture` records work into a replayable :class:`Graph`.

The shared library is found through ``DSRS_LIBRARY``, next to this package, with
``ctypes.util.find_library`` or by its SONAME (see :mod:`deepspeed_rs._lib`); importing
fails with ``ImportError`` (:class:`AbiMismatchError` for a library of another C ABI
version) when none fits.
"""

from __future__ import annotations

import atexit
import enum
import json
import os
import threading
from typing import Any, Callable, Dict, List, Optional, Union

from . import _lib
from ._lib import LOG_CALLBACK, encode, lib, read_string
from .accelerator import Accelerator, DTypeSupport, Event, Graph, Stream
from .buffer import Buffer, BufferView
from . import config
from .engine import (
    BatchSizes,
    Engine,
    StepRecord,
    config_auto_paths,
    config_check,
    config_fill_auto,
)
from .errors import (
    AbiMismatchError,
    BufferTooSmallError,
    BuildFailedError,
    DeviceError,
    DsrsError,
    FormatError,
    InternalError,
    InvalidArgumentError,
    InvalidConfigError,
    InvalidHandleError,
    InvalidJsonError,
    InvalidStateError,
    InvalidUtf8Error,
    IoError,
    LoadFailedError,
    LockTimeoutError,
    NullArgumentError,
    OpIncompatibleError,
    OutOfMemoryError,
    OutOfRangeError,
    PanicError,
    PluginInvalidError,
    StaleHandleError,
    SymbolNotFoundError,
    UnavailableError,
    UnknownAcceleratorError,
    UnknownOpError,
    UnsafeCacheError,
    UnsupportedError,
    WrongHandleTypeError,
    check,
)
from .ops import Op, cache_dir, define_op, list_ops, load_op
from .optim import adagrad_step, adam_step, lamb_step, lion_step
from .quantizer import dequantize, quantize, quantize_sizes

__version__ = "0.1.0"

#: The C ABI version this binding was written for.
ABI_VERSION = _lib.EXPECTED_ABI_VERSION

__all__ = [
    "ABI_VERSION",
    "Accelerator",
    "BatchSizes",
    "Buffer",
    "BufferView",
    "DTypeSupport",
    "Engine",
    "Event",
    "Graph",
    "LogLevel",
    "Op",
    "Stream",
    "StepRecord",
    "abi_version",
    "accelerator_names",
    "adagrad_step",
    "adam_step",
    "cache_dir",
    "clear_last_error",
    "config",
    "config_auto_paths",
    "config_check",
    "config_fill_auto",
    "debug_panic",
    "define_op",
    "dequantize",
    "get_log_level",
    "lamb_step",
    "last_error",
    "library_path",
    "lion_step",
    "list_ops",
    "load_accelerator_plugin",
    "load_op",
    "log",
    "quantize",
    "quantize_sizes",
    "report",
    "set_log_callback",
    "set_log_level",
    "status_name",
    "version",
    # errors
    "AbiMismatchError",
    "BufferTooSmallError",
    "BuildFailedError",
    "DeviceError",
    "DsrsError",
    "FormatError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidConfigError",
    "InvalidHandleError",
    "InvalidJsonError",
    "InvalidStateError",
    "InvalidUtf8Error",
    "IoError",
    "LoadFailedError",
    "LockTimeoutError",
    "NullArgumentError",
    "OpIncompatibleError",
    "OutOfMemoryError",
    "OutOfRangeError",
    "PanicError",
    "PluginInvalidError",
    "StaleHandleError",
    "SymbolNotFoundError",
    "UnavailableError",
    "UnknownAcceleratorError",
    "UnknownOpError",
    "UnsafeCacheError",
    "UnsupportedError",
    "WrongHandleTypeError",
]


class LogLevel(enum.IntEnum):
    """Log levels (``DSRS_LOG_*``); ``OFF`` is a filter only."""

    OFF = 0
    ERROR = 1
    WARN = 2
    INFO = 3
    DEBUG = 4
    TRACE = 5


def library_path() -> str:
    """The path (or name) the shared library was loaded from."""
    return _lib.library_path


def version() -> str:
    """The loaded library's version, e.g. ``"0.1.0"``."""
    return lib.dsrs_version().decode("utf-8")


def abi_version() -> int:
    """The loaded library's C ABI version (equal to :data:`ABI_VERSION`)."""
    return int(lib.dsrs_abi_version())


def status_name(status: int) -> str:
    """The library's name for a status value (``"DSRS_STATUS_UNKNOWN"`` for non-statuses)."""
    return lib.dsrs_status_str(_lib.i32_arg(status, "status")).decode("ascii")


def report() -> Dict[str, Any]:
    """The environment report (what ``dsrs report --json`` prints) as a dict."""
    return json.loads(read_string(lambda b, n, nd: lib.dsrs_report_json(b, n, nd)))


def accelerator_names() -> List[str]:
    """The names of every accelerator, in detection order."""
    text = read_string(lambda b, n, nd: lib.dsrs_accelerator_names(b, n, nd))
    return [name for name in text.split(",") if name]


def load_accelerator_plugin(path: Union[str, "os.PathLike[str]"]) -> None:
    """Loads an accelerator plugin (a shared library exporting
    ``dsrs_accelerator_plugin_entry``) and registers its accelerator: it joins detection
    before ``cuda`` and ``cpu``, is listed by :func:`accelerator_names`, and can be
    created by name (``Accelerator("hostmem")``) or chosen with ``DSRS_ACCELERATOR``.

    Loading the same file again does nothing. Plugins are never unloaded. A file that is
    missing, not a shared library, not a plugin, of another plugin ABI version or with an
    incomplete table raises :class:`PluginInvalidError` naming the file and the problem.
    """
    check(lib.dsrs_accelerator_load_plugin(encode(os.fspath(path), "path")))


def last_error() -> Optional[DsrsError]:
    """The calling thread's last library failure as an exception object (not raised), or
    ``None``."""
    from ctypes import byref, c_int32

    from .errors import error_class, last_error_message

    status = c_int32()
    check(lib.dsrs_last_error_status(byref(status)))
    if status.value == 0:
        return None
    return error_class(status.value)(last_error_message(), status.value)


def clear_last_error() -> None:
    """Forgets the calling thread's last library failure."""
    check(lib.dsrs_clear_last_error())


def debug_panic(message: Optional[str] = None) -> None:
    """Makes the library panic on purpose; always raises :class:`PanicError` (the library
    stays usable). For checking error handling."""
    check(lib.dsrs_debug_panic(encode(message, "message")))


def _level_arg(level: Union[int, str, LogLevel]) -> int:
    if isinstance(level, str):
        try:
            return int(LogLevel[level.strip().upper()])
        except KeyError:
            raise ValueError(
                f"unknown log level {level!r}; use one of {', '.join(l.name.lower() for l in LogLevel)}"
            ) from None
    return _lib.i32_arg(level, "level")


def set_log_level(level: Union[int, str, LogLevel]) -> None:
    """Sets the log filter: ``LogLevel.OFF`` .. ``LogLevel.TRACE`` (or their names,
    ``"warn"``, ...). Overrides the ``DSRS_LOG`` environment variable."""
    check(lib.dsrs_set_log_level(_level_arg(level)))


def get_log_level() -> LogLevel:
    """The current log filter."""
    from ctypes import byref, c_int32

    out = c_int32()
    check(lib.dsrs_get_log_level(byref(out)))
    return LogLevel(out.value)


def log(level: Union[int, str, LogLevel], message: str, target: Optional[str] = None) -> None:
    """Emits a record through the library's log sink (``target`` defaults to ``"host"``)."""
    check(lib.dsrs_log(_level_arg(level), encode(target, "target"), encode(message, "message")))


# One static trampoline is installed in the library; it forwards to the current Python
# handler. It is never freed, so a record being delivered on another thread while the
# handler is replaced cannot reach a dead callback.
_log_handler: Optional[Callable[[int, str, str], Any]] = None
_log_lock = threading.Lock()


def _log_trampoline(user_data: Any, level: int, target: Optional[bytes],
                    message: Optional[bytes]) -> None:
    handler = _log_handler
    if handler is None:
        return
    handler(
        int(level),
        target.decode("utf-8", errors="replace") if target else "",
        message.decode("utf-8", errors="replace") if message else "",
    )


_LOG_TRAMPOLINE = LOG_CALLBACK(_log_trampoline)


def set_log_callback(fn: Optional[Callable[[int, str, str], Any]]) -> None:
    """Routes the library's log records to ``fn(level, target, message)`` (``level`` an
    ``int``, see :class:`LogLevel`); ``None`` restores the standard-error sink.

    ``fn`` may run on any thread and may call back into deepspeed_rs (records that such
    calls cause on the same thread are dropped). Exceptions it raises are reported through
    ``sys.unraisablehook`` and otherwise ignored.
    """
    global _log_handler
    if fn is not None and not callable(fn):
        raise TypeError(f"the log callback must be callable or None, got {type(fn).__name__}")
    with _log_lock:
        if fn is None:
            check(lib.dsrs_set_log_callback(LOG_CALLBACK(), None))
            _log_handler = None
        else:
            _log_handler = fn
            check(lib.dsrs_set_log_callback(_LOG_TRAMPOLINE, None))


@atexit.register
def _detach_log_callback() -> None:
    # Library records after the interpreter is gone must not reach a Python callback.
    if _log_handler is not None:
        try:
            lib.dsrs_set_log_callback(LOG_CALLBACK(), None)
        except Exception:
            pass
