"""Accelerator memory: :class:`Buffer`, and zero-copy numpy views through DLPack."""

from __future__ import annotations

import ctypes
from ctypes import POINTER, byref, c_int32, c_size_t, c_void_p
from typing import Any, Optional, Sequence, Tuple, Union

from ._dlpack import (
    HostTensor,
    delete_managed,
    make_capsule,
    shape_array,
)
from ._dtypes import dtype_name, itemsize, to_dl, to_numpy
from ._handle import Handle
from ._lib import (
    DLPACK_FLAG_BITMASK_IS_COPIED,
    DSRS_MEMORY_DEVICE,
    DSRS_MEMORY_HOST,
    DSRS_MEMORY_PINNED,
    DLDevice,
    DLManagedTensor,
    DLManagedTensorVersioned,
    DLTensor,
    kDLCPU,
    kDLCUDAHost,
    kDLCUDAManaged,
    kDLROCMHost,
    lib,
    size_arg,
)
from .accelerator import Accelerator, Stream, _out_handle, _stream_arg
from .errors import check

__all__ = ["Buffer", "BufferView"]

_KINDS = {"device": DSRS_MEMORY_DEVICE, "host": DSRS_MEMORY_HOST, "pinned": DSRS_MEMORY_PINNED}
_KIND_NAMES = {v: k for k, v in _KINDS.items()}
#: DLPack device types whose memory the host (and numpy) can address directly.
HOST_DEVICE_TYPES = (kDLCPU, kDLCUDAHost, kDLROCMHost, kDLCUDAManaged)


def _host_source(data: Any) -> Tuple[int, int, Any]:
    """(address, nbytes, keep-alive) of the bytes of a host object: bytes-like objects and
    numpy arrays (any memory order: non-contiguous arrays are copied first)."""
    if isinstance(data, bytes):
        keep = ctypes.c_char_p(data)
        return ctypes.cast(keep, c_void_p).value or 0, len(data), (data, keep)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if np is not None and isinstance(data, np.ndarray):
        arr = np.ascontiguousarray(data)
        return arr.ctypes.data, arr.nbytes, arr
    try:
        mv = memoryview(data)
    except TypeError:
        raise TypeError(
            f"expected bytes, a bytes-like object or a numpy array, got {type(data).__name__}"
        ) from None
    if not mv.c_contiguous:
        raise ValueError("the source buffer must be C-contiguous")
    mv = mv.cast("B")
    if mv.readonly:
        b = bytes(mv)
        return _host_source(b)
    n = mv.nbytes
    if n == 0:
        return 0, 0, None
    arr = (ctypes.c_char * n).from_buffer(mv)
    return ctypes.addressof(arr), n, (mv, arr)


class Buffer(Handle):
    """Memory owned by an accelerator: ``accel.buffer(nbytes, kind="device")``.

    Zeroed at allocation; counted in the accelerator's memory statistics until it is freed.
    ``close()`` releases the handle; the memory itself is freed once every DLPack export of
    it (e.g. numpy arrays from :meth:`numpy`) is gone too.

    The buffer is itself a DLPack producer (``numpy.from_dlpack(buf)`` views all its bytes
    as ``uint8``); :meth:`numpy` gives typed views.
    """

    _FREE = "dsrs_buffer_free"

    def __init__(self, accelerator: Accelerator, nbytes: int, kind: str = "device",
                 alignment: int = 0) -> None:
        if not isinstance(accelerator, Accelerator):
            raise TypeError(
                f"accelerator must be a deepspeed_rs.Accelerator, got {type(accelerator).__name__}"
            )
        try:
            k = _KINDS[kind]
        except (KeyError, TypeError):
            raise ValueError(f"kind must be one of {', '.join(_KINDS)}; got {kind!r}") from None
        a = accelerator._h
        n = size_arg(nbytes, "nbytes")
        al = size_arg(alignment, "alignment")
        super().__init__(_out_handle(lambda out: lib.dsrs_buffer_new(a, n, al, k, out)))

    @classmethod
    def _from_handle(cls, handle: int) -> "Buffer":
        obj = cls.__new__(cls)
        Handle.__init__(obj, handle)
        return obj

    # -- properties -------------------------------------------------------------------

    @property
    def nbytes(self) -> int:
        """Size in bytes."""
        out = c_size_t()
        check(lib.dsrs_buffer_size(self._h, byref(out)))
        return out.value

    def __len__(self) -> int:
        return self.nbytes

    @property
    def ptr(self) -> int:
        """Address of the first byte (0 for an empty buffer); a device address for device
        memory of a GPU accelerator."""
        out = c_void_p()
        check(lib.dsrs_buffer_data(self._h, byref(out)))
        return out.value or 0

    @property
    def kind(self) -> str:
        """``"device"``, ``"host"`` or ``"pinned"``."""
        out = c_int32()
        check(lib.dsrs_buffer_kind(self._h, byref(out)))
        return _KIND_NAMES.get(out.value, str(out.value))

    @property
    def device(self) -> Tuple[int, int]:
        """The DLPack device ``(device_type, device_id)`` of the memory."""
        out = DLDevice()
        check(lib.dsrs_buffer_device(self._h, byref(out)))
        return (out.device_type, out.device_id)

    @property
    def accelerator(self) -> Accelerator:
        """The accelerator that owns the buffer (a new reference)."""
        h = self._h
        return Accelerator._from_handle(_out_handle(lambda out: lib.dsrs_buffer_accelerator(h, out)))

    def __repr__(self) -> str:
        if self.closed:
            return "<deepspeed_rs.Buffer (closed)>"
        return f"<deepspeed_rs.Buffer {self.kind} nbytes={self.nbytes}>"

    # -- copies -----------------------------------------------------------------------

    def write(self, data: Any, offset: int = 0, *, stream: Optional[Stream] = None) -> int:
        """Copies host ``data`` (bytes-like, or a numpy array of any dtype) into the buffer
        at ``offset``. Returns the number of bytes written."""
        h, s = self._h, _stream_arg(stream)
        off = size_arg(offset, "offset")
        try:
            import numpy as np
        except ImportError:  # pragma: no cover
            np = None
        if (np is not None and isinstance(data, np.ndarray) and data.flags.c_contiguous
                and data.dtype.isnative and data.dtype.name in _COPYABLE):
            view = HostTensor(data, what="data")
            check(lib.dsrs_buffer_copy_from_tensor(h, off, view.ref, s))
            return data.nbytes
        ptr, n, _keep = _host_source(data)
        check(lib.dsrs_buffer_write(h, off, ptr or None, n, s))
        return n

    def read(self, n: Optional[int] = None, offset: int = 0, *,
             stream: Optional[Stream] = None) -> bytes:
        """Copies ``n`` bytes (default: up to the end) from ``offset`` into new ``bytes``."""
        h, s = self._h, _stream_arg(stream)
        off = size_arg(offset, "offset")
        if n is None:
            n = max(self.nbytes - off, 0)
        count = size_arg(n, "n")
        out = ctypes.create_string_buffer(max(count, 1))
        check(lib.dsrs_buffer_read(h, off, out if count else None, count, s))
        return out.raw[:count]

    def read_into(self, out: Any, offset: int = 0, *, stream: Optional[Stream] = None) -> Any:
        """Copies ``len(out)`` bytes from ``offset`` into a writable C-contiguous numpy
        array or bytes-like object (a numpy array's byte size decides the count).
        Returns ``out``."""
        h, s = self._h, _stream_arg(stream)
        off = size_arg(offset, "offset")
        try:
            import numpy as np
        except ImportError:  # pragma: no cover
            np = None
        if np is not None and isinstance(out, np.ndarray) and out.dtype.name in _COPYABLE:
            view = HostTensor(out, writable=True, what="out")
            check(lib.dsrs_buffer_copy_to_tensor(h, off, view.ref, s))
            return out
        mv = memoryview(out)
        if mv.readonly or not mv.c_contiguous:
            raise ValueError("out must be a writable, C-contiguous buffer")
        mv = mv.cast("B")
        if mv.nbytes:
            arr = (ctypes.c_char * mv.nbytes).from_buffer(mv)
            check(lib.dsrs_buffer_read(h, off, arr, mv.nbytes, s))
        return out

    def copy_from(self, src: "Buffer", *, dst_offset: int = 0, src_offset: int = 0,
                  n: Optional[int] = None, stream: Optional[Stream] = None) -> None:
        """Copies ``n`` bytes (default: as many as fit) from ``src`` at ``src_offset`` into
        this buffer at ``dst_offset``; ``src`` may be this buffer (ranges may overlap)."""
        if not isinstance(src, Buffer):
            raise TypeError(f"src must be a deepspeed_rs.Buffer, got {type(src).__name__}")
        h, sh, s = self._h, src._h, _stream_arg(stream)
        do = size_arg(dst_offset, "dst_offset")
        so = size_arg(src_offset, "src_offset")
        if n is None:
            n = max(min(self.nbytes - do, src.nbytes - so), 0)
        check(lib.dsrs_buffer_copy(h, do, sh, so, size_arg(n, "n"), s))

    def fill(self, pattern: Union[bytes, bytearray, memoryview, int], offset: int = 0,
             n: Optional[int] = None, *, stream: Optional[Stream] = None) -> None:
        """Fills ``n`` bytes (default: to the end) from ``offset`` with repetitions of a 1-,
        2-, 4- or 8-byte ``pattern`` (an ``int`` means that single byte value)."""
        h, s = self._h, _stream_arg(stream)
        if isinstance(pattern, int):
            if not 0 <= pattern <= 255:
                raise ValueError(f"a byte pattern must be in 0..=255, got {pattern}")
            pattern = bytes([pattern])
        p = bytes(pattern)
        off = size_arg(offset, "offset")
        if n is None:
            n = max(self.nbytes - off, 0)
        pbuf = ctypes.create_string_buffer(p, max(len(p), 1))
        check(lib.dsrs_buffer_fill(h, off, size_arg(n, "n"), pbuf, len(p), s))

    # -- typed views ------------------------------------------------------------------

    def _geometry(self, dtype: Any, shape: Optional[Sequence[int]], offset: int) -> Tuple[str, Tuple[int, ...]]:
        name = dtype_name(dtype)
        off = size_arg(offset, "offset")
        if shape is None:
            shape = ((max(self.nbytes - off, 0)) // itemsize(name),)
        elif isinstance(shape, int):
            shape = (shape,)
        return name, tuple(int(d) for d in shape)

    def _view_tensor(self, dtype: Any, shape: Optional[Sequence[int]] = None,
                     offset: int = 0) -> Tuple[DLTensor, Any]:
        """A ``DLTensor`` over the buffer's memory (``dsrs_buffer_view``) and the object
        that keeps its shape array alive."""
        name, dims = self._geometry(dtype, shape, offset)
        shp = shape_array(dims)
        out = DLTensor()
        check(lib.dsrs_buffer_view(self._h, size_arg(offset, "offset"), to_dl(name), shp,
                                   len(dims), byref(out)))
        return out, shp

    def view(self, dtype: Any = "uint8", shape: Optional[Sequence[int]] = None,
             offset: int = 0) -> "BufferView":
        """A typed region of the buffer that is a DLPack producer (``__dlpack__``) and has
        an ``__array_interface__``; ``shape`` defaults to as many elements as fit."""
        name, dims = self._geometry(dtype, shape, offset)
        return BufferView(self, name, dims, offset)

    def numpy(self, dtype: Any = "uint8", shape: Optional[Sequence[int]] = None,
              offset: int = 0, *, readonly: bool = False, via: str = "dlpack") -> Any:
        """A zero-copy numpy array over the buffer's memory.

        ``shape`` defaults to as many ``dtype`` elements as fit after ``offset``. The array
        keeps the memory alive (even after ``close()``) until it is garbage-collected.
        ``via="dlpack"`` uses ``numpy.from_dlpack`` (falling back to the array interface
        on numpy without DLPack support); ``via="array_interface"`` forces the fallback.
        Only host-addressable memory can be viewed (all memory on the CPU accelerator).
        """
        return self.view(dtype, shape, offset).numpy(readonly=readonly, via=via)

    # -- DLPack producer (whole buffer as uint8) ---------------------------------------

    def __dlpack__(self, *, stream: Any = None, max_version: Optional[Tuple[int, int]] = None,
                   dl_device: Any = None, copy: Optional[bool] = None) -> object:
        """DLPack export of all bytes as a 1-D ``uint8`` tensor (see :class:`BufferView`)."""
        return self.view("uint8").__dlpack__(stream=stream, max_version=max_version,
                                             dl_device=dl_device, copy=copy)

    def __dlpack_device__(self) -> Tuple[int, int]:
        """The DLPack device ``(device_type, device_id)``."""
        return self.device


# Dtypes that DLPack (and so dsrs_buffer_copy_from/to_tensor) can describe.
_COPYABLE = frozenset(
    ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
     "uint32", "uint64", "bool", "complex64", "complex128"]
)


class BufferView:
    """A typed region of a :class:`Buffer`: ``dtype`` elements of ``shape`` from ``offset``.

    A DLPack producer (``__dlpack__``, ``__dlpack_device__``) and, as a fallback, an
    ``__array_interface__`` provider; every export keeps the memory alive by itself, so
    arrays made from a view stay valid after the buffer is closed.
    """

    def __init__(self, buffer: Buffer, dtype: Any, shape: Sequence[int], offset: int = 0) -> None:
        self.buffer = buffer
        self.dtype = dtype_name(dtype)
        self.shape = tuple(int(d) for d in shape)
        self.offset = size_arg(offset, "offset")
        self._ai_export: Optional[Any] = None
        self._readonly = False  # what __array_interface__ reports

    def __repr__(self) -> str:
        return f"<deepspeed_rs.BufferView {self.dtype}{list(self.shape)} at +{self.offset}>"

    # -- exports ----------------------------------------------------------------------

    def _export(self, versioned: bool, readonly: bool = False, buffer: Optional[Buffer] = None,
                offset: Optional[int] = None) -> Any:
        b = buffer if buffer is not None else self.buffer
        off = self.offset if offset is None else offset
        shp = shape_array(self.shape)
        dl = to_dl(self.dtype)
        if versioned:
            out_v = POINTER(DLManagedTensorVersioned)()
            check(lib.dsrs_buffer_to_dlpack_versioned(b._h, off, dl, shp, len(self.shape),
                                                      bool(readonly), byref(out_v)))
            return out_v
        out = POINTER(DLManagedTensor)()
        check(lib.dsrs_buffer_to_dlpack(b._h, off, dl, shp, len(self.shape), byref(out)))
        return out

    def __dlpack_device__(self) -> Tuple[int, int]:
        """The DLPack device ``(device_type, device_id)`` of the memory."""
        return self.buffer.device

    def __dlpack__(self, *, stream: Any = None, max_version: Optional[Tuple[int, int]] = None,
                   dl_device: Any = None, copy: Optional[bool] = None) -> object:
        """A PyCapsule for a DLPack consumer.

        ``max_version >= (1, 0)`` gives a ``"dltensor_versioned"`` capsule, otherwise a
        legacy ``"dltensor"`` one. ``stream`` must be ``None`` for host memory (no
        synchronization is needed: host work is synchronous). ``dl_device`` must be this
        memory's device (``BufferError`` otherwise: no cross-device copies). ``copy=True``
        exports a fresh host copy (flagged ``IS_COPIED``); ``False``/``None`` share memory.
        """
        device = self.__dlpack_device__()
        if stream is not None and device[0] in HOST_DEVICE_TYPES:
            raise BufferError(
                f"stream must be None for host memory (DLPack device {device}), got {stream!r}"
            )
        if dl_device is not None and tuple(int(x) for x in dl_device) != device:
            raise BufferError(
                f"cannot export memory of DLPack device {device} to device {tuple(dl_device)}"
            )
        versioned = max_version is not None and int(max_version[0]) >= 1
        if copy:
            managed = self._copy_export(versioned)
        else:
            managed = self._export(versioned)
        return make_capsule(managed, versioned)

    def _copy_export(self, versioned: bool) -> Any:
        nbytes = itemsize(self.dtype)
        for d in self.shape:
            nbytes *= d
        accel = self.buffer.accelerator
        try:
            tmp = Buffer(accel, nbytes, kind="host")
        finally:
            accel.close()
        try:
            if nbytes:
                tmp.copy_from(self.buffer, src_offset=self.offset, n=nbytes)
            managed = self._export(versioned, buffer=tmp, offset=0)
        finally:
            tmp.close()  # the export keeps the copy alive
        if versioned:
            managed.contents.flags |= DLPACK_FLAG_BITMASK_IS_COPIED
        return managed

    @property
    def __array_interface__(self) -> dict:
        """numpy's array interface (version 3) over the memory. The export behind it lives
        as long as this view object (numpy keeps the view as the array's base)."""
        device = self.__dlpack_device__()
        if device[0] not in HOST_DEVICE_TYPES:
            raise TypeError(f"memory of DLPack device {device} is not host-addressable")
        nd = to_numpy(self.dtype)
        if nd is None:
            raise TypeError("numpy has no bfloat16 dtype; view the memory as uint16")
        if self._ai_export is None:
            self._ai_export = self._export(False)
        data = self._ai_export.contents.dl_tensor.data or 0
        return {
            "version": 3,
            "shape": self.shape,
            "typestr": nd.str,
            "data": (data, self._readonly),
            "strides": None,
        }

    def __del__(self) -> None:
        managed, self._ai_export = getattr(self, "_ai_export", None), None
        if managed is not None:
            try:
                delete_managed(managed, False)
            except Exception:
                pass

    # -- numpy ------------------------------------------------------------------------

    def numpy(self, *, readonly: bool = False, via: str = "dlpack") -> Any:
        """A zero-copy numpy array over the view (see :meth:`Buffer.numpy`)."""
        import numpy as np

        device = self.__dlpack_device__()
        if device[0] not in HOST_DEVICE_TYPES:
            raise TypeError(
                f"the buffer's memory lives on DLPack device {device}, which numpy cannot "
                "address; use read()/read_into(), or a 'host'/'pinned' buffer"
            )
        nd = to_numpy(self.dtype)
        if nd is None:
            raise TypeError(
                "numpy has no bfloat16 dtype; view the memory as 'uint16' (or install "
                "ml_dtypes)"
            )
        if via not in ("dlpack", "array_interface"):
            raise ValueError(f"via must be 'dlpack' or 'array_interface', got {via!r}")
        if 0 in self.shape:  # no bytes to share (and no data pointer to share them at)
            self.buffer._h  # still refuse a closed buffer
            empty = np.empty(self.shape, nd)
            empty.flags.writeable = not readonly
            return empty
        if via == "dlpack" and _numpy_imports_dlpack(np, writable=not readonly):
            if not readonly:
                return np.from_dlpack(self)
            try:
                return np.from_dlpack(_ReadOnlyProducer(self))
            except BufferError:  # numpy < 2.1 asks for legacy capsules: no read-only flag
                pass
        holder = BufferView(self.buffer, self.dtype, self.shape, self.offset)
        holder._readonly = readonly
        arr = np.asarray(holder)
        if readonly:
            arr.flags.writeable = False
        return arr


def _numpy_imports_dlpack(np: Any, writable: bool) -> bool:
    """Whether ``numpy.from_dlpack`` exists (numpy >= 1.22) and, for ``writable``, gives
    writable arrays (numpy >= 2.0; older versions mark every imported array read-only)."""
    if not hasattr(np, "from_dlpack"):
        return False
    if writable:
        major = int(np.__version__.split(".")[0])
        return major >= 2
    return True


class _ReadOnlyProducer:
    """A producer of read-only versioned exports (``DLPACK_FLAG_BITMASK_READ_ONLY``)."""

    def __init__(self, view: BufferView) -> None:
        self._view = view

    def __dlpack_device__(self) -> Tuple[int, int]:
        """The DLPack device of the view."""
        return self._view.__dlpack_device__()

    def __dlpack__(self, *, stream: Any = None, max_version: Optional[Tuple[int, int]] = None,
                   dl_device: Any = None, copy: Optional[bool] = None) -> object:
        """A read-only ``"dltensor_versioned"`` capsule (DLPack >= 1.0 consumers only)."""
        v = self._view
        if max_version is None or int(max_version[0]) < 1:
            raise BufferError("read-only exports need a DLPack >= 1.0 consumer")
        if copy:
            return v.__dlpack__(stream=stream, max_version=max_version, dl_device=dl_device,
                                copy=copy)
        if dl_device is not None and tuple(int(x) for x in dl_device) != v.__dlpack_device__():
            raise BufferError("cannot export to another device")
        return make_capsule(v._export(True, readonly=True), True)
