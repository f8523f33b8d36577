"""DLPack plumbing: PyCapsules made with ``ctypes.pythonapi``, and ``DLTensor`` views of
host arrays.

Capsules
--------
``__dlpack__`` hands the consumer a PyCapsule named ``"dltensor"`` (a legacy
``DLManagedTensor*``) or ``"dltensor_versioned"`` (a ``DLManagedTensorVersioned*``).
A consumer that takes ownership renames the capsule (``"used_dltensor"``, ...) and calls
the tensor's deleter itself when it is done. The capsule's destructor therefore calls the
deleter only when the capsule still has its original name, i.e. was never consumed.

The destructor is a ctypes callback kept alive at module level, like the capsule names
(which are leaked on purpose: a capsule may outlive this module at interpreter exit). It
receives the capsule as a raw ``void*`` -- never as ``py_object``, which would take a new
reference to an object that is being deallocated -- and the ``pythonapi`` functions it uses
are private prototypes with ``c_void_p`` arguments (the shared ``ctypes.pythonapi``
attributes are left untouched for other code in the process).

Limitation: C code that destroys an *unconsumed* capsule while an exception is being
raised (e.g. a consumer rejecting the tensor) runs this Python destructor with the
exception set, and a ctypes callback cannot keep such an exception. The destructor still
releases the tensor, reports the exception through ``sys.unraisablehook``, and the consumer
then typically raises ``SystemError``. Exports of this binding are made so that numpy
accepts them (``Buffer.numpy`` checks the device and dtype first).
"""

from __future__ import annotations

import ctypes
import sys
import types
from ctypes import CFUNCTYPE, POINTER, PYFUNCTYPE, c_char_p, c_int, c_int64, c_void_p, py_object
from typing import Any, Optional, Sequence

from ._dtypes import dtype_name, itemsize, to_dl
from ._lib import (
    DLDevice,
    DLManagedTensor,
    DLManagedTensorVersioned,
    DLTensor,
    kDLCPU,
)

CAPSULE_NAME = "dltensor"
CAPSULE_NAME_VERSIONED = "dltensor_versioned"

_api = ctypes.pythonapi
# Private prototypes (setting argtypes on ctypes.pythonapi.X would change them for everyone).
_capsule_new = PYFUNCTYPE(py_object, c_void_p, c_void_p, c_void_p)(("PyCapsule_New", _api))
_capsule_is_valid = PYFUNCTYPE(c_int, c_void_p, c_void_p)(("PyCapsule_IsValid", _api))
_capsule_get_pointer = PYFUNCTYPE(c_void_p, c_void_p, c_void_p)(("PyCapsule_GetPointer", _api))
_capsule_get_name = PYFUNCTYPE(c_char_p, py_object)(("PyCapsule_GetName", _api))
_py_incref = PYFUNCTYPE(None, py_object)(("Py_IncRef", _api))


def _static_c_string(text: str) -> ctypes.Array:
    buf = ctypes.create_string_buffer(text.encode("ascii"))
    _py_incref(buf)  # never freed: capsules may outlive this module
    return buf


_NAME_LEGACY = _static_c_string(CAPSULE_NAME)
_NAME_VERSIONED = _static_c_string(CAPSULE_NAME_VERSIONED)
_NAME_LEGACY_PTR = ctypes.addressof(_NAME_LEGACY)
_NAME_VERSIONED_PTR = ctypes.addressof(_NAME_VERSIONED)

PyCapsule_Destructor = CFUNCTYPE(None, c_void_p)


def _report_inflight(exc: BaseException) -> None:
    try:
        sys.unraisablehook(
            types.SimpleNamespace(
                exc_type=type(exc),
                exc_value=exc,
                exc_traceback=exc.__traceback__,
                err_msg=(
                    "deepspeed_rs: an unconsumed DLPack capsule was destroyed while an "
                    "exception was being raised; the tensor was released, but the exception "
                    "cannot be kept"
                ),
                object=None,
            )
        )
    except BaseException:
        pass


def _destroy_capsule(
    capsule: int,
    _is_valid=_capsule_is_valid,
    _get_pointer=_capsule_get_pointer,
    _legacy=_NAME_LEGACY_PTR,
    _versioned=_NAME_VERSIONED_PTR,
    _legacy_t=POINTER(DLManagedTensor),
    _versioned_t=POINTER(DLManagedTensorVersioned),
    _cast=ctypes.cast,
    _report=_report_inflight,
) -> None:
    # Everything is bound as a default argument: this may run at interpreter exit, after
    # the module's globals were cleared.
    inflight: Optional[BaseException] = None
    try:
        legacy = _is_valid(capsule, _legacy)
    except BaseException as e:  # an exception was already set when the capsule died
        inflight = e
        legacy = _is_valid(capsule, _legacy)
    if legacy:
        p = _get_pointer(capsule, _legacy)
        if p:
            managed = _cast(p, _legacy_t)
            deleter = managed.contents.deleter
            if deleter:
                deleter(managed)
    elif _is_valid(capsule, _versioned):
        p = _get_pointer(capsule, _versioned)
        if p:
            managed_v = _cast(p, _versioned_t)
            deleter_v = managed_v.contents.deleter
            if deleter_v:
                deleter_v(managed_v)
    # else: consumed (renamed) -- the consumer owns the tensor now.
    if inflight is not None:
        _report(inflight)


_DESTRUCTOR = PyCapsule_Destructor(_destroy_capsule)
_DESTRUCTOR_PTR = ctypes.cast(_DESTRUCTOR, c_void_p).value


def make_capsule(managed: Any, versioned: bool) -> object:
    """Wraps a ``DLManagedTensor*`` (or ``DLManagedTensorVersioned*`` when ``versioned``)
    in a new PyCapsule that owns it until a consumer renames it."""
    ptr = ctypes.cast(managed, c_void_p).value
    if not ptr:
        raise ValueError("cannot wrap a NULL DLPack tensor in a capsule")
    name = _NAME_VERSIONED_PTR if versioned else _NAME_LEGACY_PTR
    try:
        return _capsule_new(ptr, name, _DESTRUCTOR_PTR)
    except BaseException:
        delete_managed(managed, versioned)  # the capsule never took ownership
        raise


def delete_managed(managed: Any, versioned: bool) -> None:
    """Calls the deleter of a ``DLManagedTensor*`` / ``DLManagedTensorVersioned*``."""
    t = POINTER(DLManagedTensorVersioned) if versioned else POINTER(DLManagedTensor)
    p = ctypes.cast(managed, t)
    if p and p.contents.deleter:
        p.contents.deleter(p)


def capsule_name(capsule: object) -> Optional[str]:
    """The current name of a PyCapsule (``"dltensor"``, ``"used_dltensor"``, ...)."""
    raw = _capsule_get_name(capsule)
    return None if raw is None else raw.decode("ascii", errors="replace")


def capsule_pointer(capsule: object) -> int:
    """The pointer held by a capsule of this binding that was not consumed yet."""
    name = capsule_name(capsule)
    if name == CAPSULE_NAME:
        return _capsule_get_pointer(id(capsule), _NAME_LEGACY_PTR) or 0
    if name == CAPSULE_NAME_VERSIONED:
        return _capsule_get_pointer(id(capsule), _NAME_VERSIONED_PTR) or 0
    raise ValueError(f"not an unconsumed DLPack capsule (name {name!r})")


# --------------------------------------------------------------------------------------
# DLTensor views of host arrays.


class HostTensor:
    """A ``DLTensor`` describing a numpy array in place (host memory, compact row-major).

    Keeps the array and the shape storage alive as long as the view object lives. The
    array must be C-contiguous (and writable when ``writable``); ``dtype`` overrides the
    element type (same element size), e.g. ``"bfloat16"`` for a ``uint16`` array.
    """

    def __init__(self, array: Any, dtype: Any = None, writable: bool = False,
                 what: str = "array") -> None:
        try:
            import numpy as np
        except ImportError:  # pragma: no cover
            raise TypeError(f"{what} must be a numpy array (numpy is not installed)") from None
        if not isinstance(array, np.ndarray):
            raise TypeError(f"{what} must be a numpy.ndarray, got {type(array).__name__}")
        if not array.flags.c_contiguous:
            raise ValueError(
                f"{what} must be C-contiguous (row-major, no gaps); got strides "
                f"{array.strides} for shape {array.shape} -- use numpy.ascontiguousarray() "
                "and copy the result back"
            )
        if writable and not array.flags.writeable:
            raise ValueError(f"{what} is read-only; the operation writes into it in place")
        if dtype is None:
            try:
                name = dtype_name(array.dtype)
            except ValueError:
                raise TypeError(
                    f"{what} has dtype {array.dtype}, which deepspeed_rs does not know; pass "
                    "dtype= to say how to interpret its elements"
                ) from None
        else:
            name = dtype_name(dtype)
            if itemsize(name) != array.dtype.itemsize:
                raise ValueError(
                    f"dtype={name!r} has {itemsize(name)}-byte elements, but {what} has "
                    f"{array.dtype.itemsize}-byte {array.dtype} elements"
                )
        self.array = array
        self.dtype_name = name
        ndim = array.ndim
        self._shape = (c_int64 * max(ndim, 1))(*array.shape)
        t = DLTensor()
        t.data = array.ctypes.data or None
        t.device = DLDevice(kDLCPU, 0)
        t.ndim = ndim
        t.dtype = to_dl(name)
        t.shape = ctypes.cast(self._shape, POINTER(c_int64)) if ndim else None
        t.strides = None
        t.byte_offset = 0
        self.tensor = t

    @property
    def ref(self) -> Any:
        """``DLTensor*`` for a ctypes call."""
        return ctypes.byref(self.tensor)


def shape_array(shape: Sequence[int]) -> Any:
    """A ``int64_t[]`` for ``shape`` (at least one element, so the pointer is never NULL
    for ndim 0)."""
    dims = [int(d) for d in shape]
    return (c_int64 * max(len(dims), 1))(*dims)
