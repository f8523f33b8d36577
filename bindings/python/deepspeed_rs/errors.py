"""Exceptions raised by the deepspeed_rs binding.

Every C function of deepspeed_rs returns a ``dsrs_status``; a non-zero status becomes a
:class:`DsrsError` subclass carrying the library's per-thread last-error message (which
names the failing C function and the argument, value or file at fault).

Each status has its own class.  Where a builtin exception expresses the same idea, the
class also inherits from it, so idiomatic ``except`` clauses work:

==============================  ===========================  ===============================
status                          class                        also a
==============================  ===========================  ===============================
DSRS_STATUS_NULL_ARGUMENT       NullArgumentError            ValueError
DSRS_STATUS_INVALID_ARGUMENT    InvalidArgumentError         ValueError
DSRS_STATUS_OUT_OF_RANGE        OutOfRangeError              ValueError, IndexError [1]_
DSRS_STATUS_INVALID_UTF8        InvalidUtf8Error             ValueError
DSRS_STATUS_BUFFER_TOO_SMALL    BufferTooSmallError          ValueError
DSRS_STATUS_INVALID_HANDLE      InvalidHandleError           ValueError
DSRS_STATUS_STALE_HANDLE        StaleHandleError             ValueError [2]_
DSRS_STATUS_WRONG_HANDLE_TYPE   WrongHandleTypeError         TypeError
DSRS_STATUS_INVALID_STATE       InvalidStateError            RuntimeError
DSRS_STATUS_INVALID_JSON        InvalidJsonError             ValueError
DSRS_STATUS_INVALID_CONFIG      InvalidConfigError           ValueError
DSRS_STATUS_IO                  IoError                      OSError
DSRS_STATUS_FORMAT              FormatError                  ValueError
DSRS_STATUS_UNKNOWN_ACCELERATOR UnknownAcceleratorError      ValueError
DSRS_STATUS_UNAVAILABLE         UnavailableError             RuntimeError
DSRS_STATUS_OUT_OF_MEMORY       OutOfMemoryError             MemoryError
DSRS_STATUS_UNSUPPORTED         UnsupportedError             TypeError [3]_
DSRS_STATUS_DEVICE_ERROR        DeviceError                  RuntimeError
DSRS_STATUS_PLUGIN_INVALID      PluginInvalidError           RuntimeError [6]_
DSRS_STATUS_BUILD_FAILED        BuildFailedError             RuntimeError
DSRS_STATUS_OP_INCOMPATIBLE     OpIncompatibleError          RuntimeError
DSRS_STATUS_UNKNOWN_OP          UnknownOpError               ValueError
DSRS_STATUS_LOAD_FAILED         LoadFailedError              RuntimeError
DSRS_STATUS_UNSAFE_CACHE        UnsafeCacheError             PermissionError [4]_
DSRS_STATUS_SYMBOL_NOT_FOUND    SymbolNotFoundError          AttributeError [5]_
DSRS_STATUS_LOCK_TIMEOUT        LockTimeoutError             TimeoutError
DSRS_STATUS_INTERNAL            InternalError                RuntimeError
DSRS_STATUS_PANIC               PanicError                   RuntimeError
==============================  ===========================  ===============================

.. [1] The status covers both "index out of range" (a device index, a byte range past the
   end of a buffer: ``IndexError``) and "value out of range" (an enumeration value, a
   size: ``ValueError``), so the class is both.
.. [2] Using an object after ``close()`` raises this, like Python's
   "I/O operation on closed file" ``ValueError``.
.. [3] The library returns it for data types and memory placements an operation cannot
   handle (e.g. random bits into a float tensor), which Python spells ``TypeError``.
   It is not a ``NotImplementedError``: nothing is missing from the binding.
.. [4] The op cache is refused because of who owns it or who may write to it (an
   ``OSError``, like the ``PermissionError`` the file system would give).
.. [5] As ``ctypes.CDLL`` raises ``AttributeError`` for a symbol a library lacks.
.. [6] Like :class:`LoadFailedError` for ops: a file that cannot be used as an accelerator
   plugin (missing, not a shared library, no ``dsrs_accelerator_plugin_entry``, another
   plugin ABI version, an incomplete table, a name already registered).

:class:`AbiMismatchError` (an ``ImportError``) is raised at import time when the loaded
library speaks a different C ABI version than this binding.
"""

from __future__ import annotations

from typing import Dict, Optional, Type

__all__ = [
    "STATUS_NAMES",
    "DsrsError",
    "NullArgumentError",
    "InvalidArgumentError",
    "OutOfRangeError",
    "InvalidUtf8Error",
    "BufferTooSmallError",
    "InvalidHandleError",
    "StaleHandleError",
    "WrongHandleTypeError",
    "InvalidStateError",
    "InvalidJsonError",
    "InvalidConfigError",
    "IoError",
    "FormatError",
    "UnknownAcceleratorError",
    "UnavailableError",
    "OutOfMemoryError",
    "UnsupportedError",
    "DeviceError",
    "PluginInvalidError",
    "BuildFailedError",
    "OpIncompatibleError",
    "UnknownOpError",
    "LoadFailedError",
    "UnsafeCacheError",
    "SymbolNotFoundError",
    "LockTimeoutError",
    "InternalError",
    "PanicError",
    "AbiMismatchError",
    "error_class",
    "check",
    "last_error_message",
    "status_name",
]

#: ``dsrs_status`` values and their names, as in ``include/deepspeed_rs.h``.
STATUS_NAMES: Dict[int, str] = {
    0: "DSRS_STATUS_OK",
    100: "DSRS_STATUS_NULL_ARGUMENT",
    101: "DSRS_STATUS_INVALID_ARGUMENT",
    102: "DSRS_STATUS_OUT_OF_RANGE",
    103: "DSRS_STATUS_INVALID_UTF8",
    104: "DSRS_STATUS_BUFFER_TOO_SMALL",
    200: "DSRS_STATUS_INVALID_HANDLE",
    201: "DSRS_STATUS_STALE_HANDLE",
    202: "DSRS_STATUS_WRONG_HANDLE_TYPE",
    203: "DSRS_STATUS_INVALID_STATE",
    300: "DSRS_STATUS_INVALID_JSON",
    301: "DSRS_STATUS_INVALID_CONFIG",
    302: "DSRS_STATUS_IO",
    303: "DSRS_STATUS_FORMAT",
    400: "DSRS_STATUS_UNKNOWN_ACCELERATOR",
    401: "DSRS_STATUS_UNAVAILABLE",
    402: "DSRS_STATUS_OUT_OF_MEMORY",
    403: "DSRS_STATUS_UNSUPPORTED",
    404: "DSRS_STATUS_DEVICE_ERROR",
    405: "DSRS_STATUS_PLUGIN_INVALID",
    500: "DSRS_STATUS_BUILD_FAILED",
    501: "DSRS_STATUS_OP_INCOMPATIBLE",
    502: "DSRS_STATUS_UNKNOWN_OP",
    503: "DSRS_STATUS_LOAD_FAILED",
    504: "DSRS_STATUS_UNSAFE_CACHE",
    505: "DSRS_STATUS_SYMBOL_NOT_FOUND",
    506: "DSRS_STATUS_LOCK_TIMEOUT",
    900: "DSRS_STATUS_INTERNAL",
    901: "DSRS_STATUS_PANIC",
}

# Named constants, e.g. ``errors.DSRS_STATUS_OUT_OF_RANGE == 102``.
for _value, _name in STATUS_NAMES.items():
    globals()[_name] = _value
del _value, _name


def status_name(status: int) -> str:
    """The header's name of a status value, ``"DSRS_STATUS_UNKNOWN"`` for other values."""
    return STATUS_NAMES.get(int(status), "DSRS_STATUS_UNKNOWN")


class DsrsError(Exception):
    """A deepspeed_rs call failed.

    Attributes:
        status: the ``dsrs_status`` value (an ``int``).
        status_name: its name, e.g. ``"DSRS_STATUS_OUT_OF_RANGE"``.
        message: the library's explanation (the C function, and the argument, value or
            file at fault), or the binding's own for failures detected in Python.
    """

    #: The status this class stands for (``None`` on the base class).
    STATUS: Optional[int] = None

    def __init__(self, message: str = "", status: Optional[int] = None) -> None:
        if status is None:
            status = self.STATUS if self.STATUS is not None else -1
        self.status: int = int(status)
        self.status_name: str = status_name(self.status)
        self.message: str = message
        super().__init__(message)

    def __str__(self) -> str:
        text = self.message or "(no message)"
        return f"{text} [{self.status_name}]"

    def __reduce__(self):  # keeps pickling (multiprocessing) working
        return (self.__class__, (self.message, self.status))


class NullArgumentError(DsrsError, ValueError):
    """A required pointer argument was NULL (DSRS_STATUS_NULL_ARGUMENT)."""

    STATUS = 100


class InvalidArgumentError(DsrsError, ValueError):
    """An argument has an invalid value (DSRS_STATUS_INVALID_ARGUMENT)."""

    STATUS = 101


class OutOfRangeError(DsrsError, ValueError, IndexError):
    """An index, size, offset or enumeration value is out of range
    (DSRS_STATUS_OUT_OF_RANGE). Both a ``ValueError`` and an ``IndexError``."""

    STATUS = 102


class InvalidUtf8Error(DsrsError, ValueError):
    """A string argument is not valid UTF-8 (DSRS_STATUS_INVALID_UTF8)."""

    STATUS = 103


class BufferTooSmallError(DsrsError, ValueError):
    """An output buffer was too small (DSRS_STATUS_BUFFER_TOO_SMALL). The binding retries
    two-call outputs itself, so this escapes only from raw ``_lib`` use."""

    STATUS = 104


class InvalidHandleError(DsrsError, ValueError):
    """A handle was not issued by the library (DSRS_STATUS_INVALID_HANDLE)."""

    STATUS = 200


class StaleHandleError(DsrsError, ValueError):
    """A handle was already freed (DSRS_STATUS_STALE_HANDLE); also raised by the binding
    when an object is used after ``close()``."""

    STATUS = 201


class WrongHandleTypeError(DsrsError, TypeError):
    """A handle of another type was passed (DSRS_STATUS_WRONG_HANDLE_TYPE)."""

    STATUS = 202


class InvalidStateError(DsrsError, RuntimeError):
    """The operation is not valid in the object's current state (DSRS_STATUS_INVALID_STATE)."""

    STATUS = 203


class InvalidJsonError(DsrsError, ValueError):
    """A JSON document could not be parsed (DSRS_STATUS_INVALID_JSON)."""

    STATUS = 300


class InvalidConfigError(DsrsError, ValueError):
    """A configuration or options document is invalid (DSRS_STATUS_INVALID_CONFIG)."""

    STATUS = 301


class IoError(DsrsError, OSError):
    """A file could not be read or written (DSRS_STATUS_IO)."""

    STATUS = 302


class FormatError(DsrsError, ValueError):
    """Serialized data is corrupt or in the wrong format (DSRS_STATUS_FORMAT)."""

    STATUS = 303


class UnknownAcceleratorError(DsrsError, ValueError):
    """No accelerator has that name (DSRS_STATUS_UNKNOWN_ACCELERATOR); the message lists
    the valid names."""

    STATUS = 400


class UnavailableError(DsrsError, RuntimeError):
    """The accelerator, or a library it needs, is not available on this machine
    (DSRS_STATUS_UNAVAILABLE)."""

    STATUS = 401


class OutOfMemoryError(DsrsError, MemoryError):
    """Out of memory, or the accelerator's memory limit was reached
    (DSRS_STATUS_OUT_OF_MEMORY)."""

    STATUS = 402


class UnsupportedError(DsrsError, TypeError):
    """The operation or data type is not supported by this accelerator
    (DSRS_STATUS_UNSUPPORTED)."""

    STATUS = 403


class DeviceError(DsrsError, RuntimeError):
    """A device or driver call failed (DSRS_STATUS_DEVICE_ERROR)."""

    STATUS = 404


class PluginInvalidError(DsrsError, RuntimeError):
    """An accelerator plugin could not be loaded or failed validation
    (DSRS_STATUS_PLUGIN_INVALID): the file is missing or not a shared library, does not
    export ``dsrs_accelerator_plugin_entry``, declares another plugin ABI version, has a
    table too small or a required entry NULL, or names an accelerator already registered.
    The message names the file and the problem."""

    STATUS = 405


class BuildFailedError(DsrsError, RuntimeError):
    """An op failed to compile (DSRS_STATUS_BUILD_FAILED); the message has the command,
    the compiler's first lines of output and the path of the full log."""

    STATUS = 500


class OpIncompatibleError(DsrsError, RuntimeError):
    """An op cannot be built or loaded on this machine (DSRS_STATUS_OP_INCOMPATIBLE): no
    C++ compiler, a compiler too old, no NVRTC, a compute capability too low; the message
    lists every reason."""

    STATUS = 501


class UnknownOpError(DsrsError, ValueError):
    """No op has that name (DSRS_STATUS_UNKNOWN_OP); the message lists the known ops."""

    STATUS = 502


class LoadFailedError(DsrsError, RuntimeError):
    """A built op could not be loaded (DSRS_STATUS_LOAD_FAILED): dlopen failed, the op ABI
    version differs, or a declared symbol is missing (the message names it)."""

    STATUS = 503


class UnsafeCacheError(DsrsError, PermissionError):
    """The op cache directory is not private (DSRS_STATUS_UNSAFE_CACHE): owned by another
    user, or writable by others; the message says how to fix it."""

    STATUS = 504


class SymbolNotFoundError(DsrsError, AttributeError):
    """The op has no such symbol (DSRS_STATUS_SYMBOL_NOT_FOUND); the message lists the
    op's declared symbols. An ``AttributeError``, like a missing symbol of a
    ``ctypes.CDLL``."""

    STATUS = 505


class LockTimeoutError(DsrsError, TimeoutError):
    """Waiting for another process's build of the same op timed out
    (DSRS_STATUS_LOCK_TIMEOUT); the message names the lock file and its holder."""

    STATUS = 506


class InternalError(DsrsError, RuntimeError):
    """An internal invariant of the library was violated (DSRS_STATUS_INTERNAL): a bug."""

    STATUS = 900


class PanicError(DsrsError, RuntimeError):
    """A Rust panic was caught at the C boundary (DSRS_STATUS_PANIC): a bug. The library
    stays usable."""

    STATUS = 901


class AbiMismatchError(ImportError):
    """The loaded library's C ABI version differs from the one this binding was written for.

    Attributes:
        expected: the binding's ABI version.
        found: the library's ``dsrs_abi_version()``.
        path: the library that was loaded.
    """

    def __init__(self, expected: int, found: int, path: str) -> None:
        self.expected = expected
        self.found = found
        self.library_path = path
        super().__init__(
            f"deepspeed_rs: the library {path!r} has C ABI version {found}, but this Python "
            f"binding was written for ABI version {expected}; install matching versions of "
            "the library and the binding (or point DSRS_LIBRARY at a matching library)"
        )


_CLASSES: Dict[int, Type[DsrsError]] = {
    cls.STATUS: cls  # type: ignore[misc]
    for cls in (
        NullArgumentError,
        InvalidArgumentError,
        OutOfRangeError,
        InvalidUtf8Error,
        BufferTooSmallError,
        InvalidHandleError,
        StaleHandleError,
        WrongHandleTypeError,
        InvalidStateError,
        InvalidJsonError,
        InvalidConfigError,
        IoError,
        FormatError,
        UnknownAcceleratorError,
        UnavailableError,
        OutOfMemoryError,
        UnsupportedError,
        DeviceError,
        PluginInvalidError,
        BuildFailedError,
        OpIncompatibleError,
        UnknownOpError,
        LoadFailedError,
        UnsafeCacheError,
        SymbolNotFoundError,
        LockTimeoutError,
        InternalError,
        PanicError,
    )
}


def error_class(status: int) -> Type[DsrsError]:
    """The exception class for a status (``DsrsError`` for values the binding does not know)."""
    return _CLASSES.get(int(status), DsrsError)


def last_error_message() -> str:
    """The calling thread's last error message from the library (``""`` if none)."""
    from ._lib import read_string, lib

    return read_string(lambda buf, n, needed: lib.dsrs_last_error_message(buf, n, needed),
                       check_status=False)


def check(status: int) -> None:
    """Raises the exception for a failed ``dsrs_status`` (does nothing for 0).

    The message is the calling thread's last-error text, read right after the failing call
    (the library keeps it per thread, so other threads cannot interfere).
    """
    if status == 0:
        return
    try:
        message = last_error_message()
    except Exception as e:  # pragma: no cover - reading the message should not fail
        message = f"(could not read the error message: {e})"
    raise error_class(status)(message, status)
