"""Accelerators (DeepSpeed's accelerator surface), streams, events and graphs."""

from __future__ import annotations

import contextlib
import ctypes
import json
from ctypes import byref, c_bool, c_double, c_int32, c_size_t, c_uint32, c_uint64, c_void_p
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, NamedTuple, Optional, Union

from ._dlpack import HostTensor
from ._dtypes import to_dl
from ._handle import Handle
from ._lib import (
    DSRS_DISTRIBUTION_BITS,
    DSRS_DISTRIBUTION_NORMAL,
    DSRS_DISTRIBUTION_UNIFORM,
    device_arg,
    encode,
    lib,
    read_bytes,
    read_string,
    u64_arg,
)
from .errors import check

if TYPE_CHECKING:  # pragma: no cover
    from .buffer import Buffer

__all__ = ["Accelerator", "Stream", "Event", "Graph", "DTypeSupport"]


class DTypeSupport(NamedTuple):
    """How an accelerator supports an element type."""

    #: Buffers and kernels accept it.
    supported: bool
    #: The hardware computes in or converts it efficiently.
    native: bool


def _stream_arg(stream: Optional["Stream"]) -> Optional[int]:
    if stream is None:
        return None
    if not isinstance(stream, Stream):
        raise TypeError(f"stream must be a deepspeed_rs.Stream or None, got {type(stream).__name__}")
    return stream._h


def _native_stream_arg(native: Any) -> Optional[int]:
    """The address of a host-created native stream: ``None``/0 (the default stream), an
    ``int``, a ``ctypes.c_void_p``, or an object with a ``cuda_stream`` (PyTorch) or
    ``ptr`` (CuPy) attribute holding one."""
    if native is None:
        return None
    if isinstance(native, c_void_p):
        return native.value or None
    if not isinstance(native, bool) and hasattr(native, "__index__"):
        v = int(native.__index__())
    elif hasattr(native, "cuda_stream"):
        v = int(native.cuda_stream)
    elif hasattr(native, "ptr"):
        v = int(native.ptr)
    else:
        raise TypeError(
            "native must be a stream address (int), a ctypes.c_void_p, an object with a "
            f"'cuda_stream' or 'ptr' attribute, or None; got {type(native).__name__}"
        )
    if not 0 <= v < (1 << (8 * ctypes.sizeof(c_void_p))):
        from .errors import OutOfRangeError

        raise OutOfRangeError(f"native must be a pointer value, got {v}")
    return v or None


def _out_handle(call: Any) -> int:
    out = c_void_p()
    check(call(byref(out)))
    return out.value  # type: ignore[return-value]


class Accelerator(Handle):
    """An accelerator: the CPU, CUDA, or a plugin (DeepSpeed's ``get_accelerator()``).

    ``Accelerator("cpu", devices=2, memory_limit=1 << 20, seed=7)`` creates a new instance
    (options are passed to the library as a JSON object); :meth:`current` returns the
    process-wide current one (selected on first use: ``DSRS_ACCELERATOR`` if set, else
    the first available). Each Python object owns one reference; ``close()`` releases it
    (buffers, streams and events made from it keep the accelerator alive in the library).

    Methods that take ``device=None`` mean the calling thread's current device.
    """

    _FREE = "dsrs_accelerator_free"

    def __init__(self, name: str = "cpu", **options: Any) -> None:
        options_json = json.dumps(options) if options else None
        h = _out_handle(
            lambda out: lib.dsrs_accelerator_new(
                encode(name, "name"), encode(options_json, "options"), out
            )
        )
        super().__init__(h)

    # -- construction -----------------------------------------------------------------

    @classmethod
    def _from_handle(cls, handle: int) -> "Accelerator":
        obj = cls.__new__(cls)
        Handle.__init__(obj, handle)
        return obj

    @classmethod
    def current(cls) -> "Accelerator":
        """The process-wide current accelerator (a new reference to it)."""
        return cls._from_handle(_out_handle(lib.dsrs_accelerator_get))

    @classmethod
    def from_json(cls, name: str, options_json: Optional[str]) -> "Accelerator":
        """Creates an accelerator with options given as JSON text (``None``/``""``: defaults)."""
        h = _out_handle(
            lambda out: lib.dsrs_accelerator_new(
                encode(name, "name"), encode(options_json, "options_json"), out
            )
        )
        return cls._from_handle(h)

    def make_current(self) -> None:
        """Makes this the process-wide current accelerator (DeepSpeed's ``set_accelerator``)."""
        check(lib.dsrs_accelerator_set(self._h))

    # -- identity ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The accelerator's name (``"cpu"``, ``"cuda"``, ...)."""
        h = self._h
        return read_string(lambda b, n, nd: lib.dsrs_accelerator_name(h, b, n, nd))

    def __repr__(self) -> str:
        if self.closed:
            return "<deepspeed_rs.Accelerator (closed)>"
        return f"<deepspeed_rs.Accelerator {self.name!r} devices={self.device_count()}>"

    def info(self) -> Dict[str, Any]:
        """A description (name, devices, dtypes, memory, backend details) as a dict."""
        h = self._h
        return json.loads(read_string(lambda b, n, nd: lib.dsrs_accelerator_info_json(h, b, n, nd)))

    def is_available(self) -> bool:
        """Whether the accelerator is usable."""
        out = c_bool()
        check(lib.dsrs_accelerator_is_available(self._h, byref(out)))
        return out.value

    @property
    def device_type(self) -> int:
        """The DLPack device type of its device memory (``kDLCPU`` = 1, ``kDLCUDA`` = 2, ...)."""
        out = c_int32()
        check(lib.dsrs_accelerator_device_type(self._h, byref(out)))
        return out.value

    def communication_backend_name(self) -> str:
        """The collective-communication engine (``"mpi"``, ``"nccl"``)."""
        h = self._h
        return read_string(
            lambda b, n, nd: lib.dsrs_accelerator_communication_backend(h, b, n, nd)
        )

    def is_synchronized_device(self) -> bool:
        """Whether work completes when it is submitted (the CPU)."""
        out = c_bool()
        check(lib.dsrs_accelerator_is_synchronized_device(self._h, byref(out)))
        return out.value

    # -- devices ----------------------------------------------------------------------

    def device_count(self) -> int:
        """Number of devices."""
        out = c_uint32()
        check(lib.dsrs_accelerator_device_count(self._h, byref(out)))
        return out.value

    def device_name(self, device: Optional[int] = None) -> str:
        """A device's name (the CPU model, the GPU's name)."""
        h, d = self._h, device_arg(device)
        return read_string(lambda b, n, nd: lib.dsrs_accelerator_device_name(h, d, b, n, nd))

    def device_properties(self, device: Optional[int] = None) -> Dict[str, Any]:
        """A device's properties (DeepSpeed's ``get_device_properties``) as a dict:
        ``index``, ``name``, ``uuid`` (``"GPU-..."`` on CUDA, else ``None``),
        ``compute_capability`` (``[major, minor]`` on CUDA, else ``None``),
        ``multiprocessors``, ``total_memory`` (bytes) and ``pci_bus_id``.
        ``device=None`` (or -1) is the calling thread's current device."""
        h, d = self._h, device_arg(device)
        fn = lib.dsrs_accelerator_device_properties_json
        return json.loads(read_string(lambda b, n, nd: fn(h, d, b, n, nd)))

    def current_device(self) -> int:
        """The calling thread's current device."""
        out = c_int32()
        check(lib.dsrs_accelerator_current_device(self._h, byref(out)))
        return out.value

    def set_device(self, device: int) -> None:
        """Makes ``device`` the calling thread's current device."""
        check(lib.dsrs_accelerator_set_device(self._h, device_arg(device)))

    def synchronize(self, device: Optional[int] = None) -> None:
        """Waits for all work on ``device``."""
        check(lib.dsrs_accelerator_synchronize(self._h, device_arg(device)))

    # -- memory -----------------------------------------------------------------------

    def _memory_figure(self, fn_name: str, device: Optional[int]) -> int:
        h, d = self._h, device_arg(device)
        out = c_uint64()
        check(getattr(lib, fn_name)(h, d, byref(out)))
        return out.value

    def total_memory(self, device: Optional[int] = None) -> int:
        """Total memory of a device in bytes (capped by ``memory_limit`` on the CPU)."""
        return self._memory_figure("dsrs_accelerator_total_memory", device)

    def available_memory(self, device: Optional[int] = None) -> int:
        """Memory available for new allocations, in bytes."""
        return self._memory_figure("dsrs_accelerator_available_memory", device)

    def memory_allocated(self, device: Optional[int] = None) -> int:
        """Bytes the library currently has allocated."""
        return self._memory_figure("dsrs_accelerator_memory_allocated", device)

    def max_memory_allocated(self, device: Optional[int] = None) -> int:
        """Peak of :meth:`memory_allocated` since creation or the last reset."""
        return self._memory_figure("dsrs_accelerator_max_memory_allocated", device)

    def memory_reserved(self, device: Optional[int] = None) -> int:
        """Bytes reserved from the system (equals allocated on the CPU)."""
        return self._memory_figure("dsrs_accelerator_memory_reserved", device)

    def max_memory_reserved(self, device: Optional[int] = None) -> int:
        """Peak of :meth:`memory_reserved` since creation or the last reset."""
        return self._memory_figure("dsrs_accelerator_max_memory_reserved", device)

    def reset_peak_memory_stats(self, device: Optional[int] = None) -> None:
        """Resets the peak statistics to the current values."""
        check(lib.dsrs_accelerator_reset_peak_memory_stats(self._h, device_arg(device)))

    def memory_stats(self, device: Optional[int] = None) -> Dict[str, Any]:
        """Memory statistics with PyTorch's key names (``"allocated_bytes.all.current"``,
        ...) plus ``"total_bytes"`` and ``"available_bytes"``."""
        h, d = self._h, device_arg(device)
        return json.loads(
            read_string(lambda b, n, nd: lib.dsrs_accelerator_memory_stats_json(h, d, b, n, nd))
        )

    def empty_cache(self) -> None:
        """Returns cached, unused memory to the system."""
        check(lib.dsrs_accelerator_empty_cache(self._h))

    def is_pinned(self, obj: Any) -> bool:
        """Whether a pointer (``int``), numpy array or :class:`Buffer` lies in page-locked
        memory allocated by this accelerator."""
        from .buffer import Buffer

        if isinstance(obj, Buffer):
            ptr = obj.ptr
        elif isinstance(obj, int):
            ptr = obj
        elif hasattr(obj, "__array_interface__"):
            ptr = obj.__array_interface__["data"][0]
        else:
            raise TypeError(f"expected a pointer, a numpy array or a Buffer, got {type(obj).__name__}")
        out = c_bool()
        check(lib.dsrs_accelerator_is_pinned(self._h, ptr or None, byref(out)))
        return out.value

    def buffer(self, nbytes: int, kind: str = "device", alignment: int = 0) -> "Buffer":
        """Allocates a zeroed :class:`Buffer` of ``nbytes`` on the current device.

        ``kind``: ``"device"`` (device memory; host memory on the CPU), ``"host"``
        (pageable host memory) or ``"pinned"`` (page-locked host memory). ``alignment``: a
        power of two, 0 for the default (256).
        """
        from .buffer import Buffer

        return Buffer(self, nbytes, kind=kind, alignment=alignment)

    # -- data types -------------------------------------------------------------------

    def dtype_support(self, dtype: Any) -> DTypeSupport:
        """Whether ``dtype`` (a name, numpy dtype or DLDataType) is supported and native."""
        supported, native = c_bool(), c_bool()
        check(lib.dsrs_accelerator_dtype_supported(self._h, to_dl(dtype), byref(supported),
                                                   byref(native)))
        return DTypeSupport(supported.value, native.value)

    def dtype_supported(self, dtype: Any) -> bool:
        """Whether buffers and kernels accept ``dtype``."""
        return self.dtype_support(dtype).supported

    def supported_dtypes(self) -> List[str]:
        """Names of every supported element type."""
        return [d["name"] for d in self.info()["dtypes"] if d["supported"]]

    def is_bf16_supported(self) -> bool:
        """DeepSpeed's ``is_bf16_supported``: bfloat16 is native."""
        out = c_bool()
        check(lib.dsrs_accelerator_is_bf16_supported(self._h, byref(out)))
        return out.value

    def is_fp16_supported(self) -> bool:
        """DeepSpeed's ``is_fp16_supported``: float16 is native."""
        out = c_bool()
        check(lib.dsrs_accelerator_is_fp16_supported(self._h, byref(out)))
        return out.value

    # -- random numbers ---------------------------------------------------------------

    def manual_seed(self, seed: int) -> None:
        """Seeds the current device's Philox generator (0 <= seed < 2**64) and resets its
        offset to 0."""
        check(lib.dsrs_accelerator_manual_seed(self._h, u64_arg(seed, "seed")))

    def initial_seed(self) -> int:
        """The seed of the current device's generator."""
        out = c_uint64()
        check(lib.dsrs_accelerator_initial_seed(self._h, byref(out)))
        return out.value

    def get_rng_state(self) -> bytes:
        """The generator's state (24 bytes: ``b"DSRSPHX1"``, seed, offset; little-endian)."""
        h = self._h
        return read_bytes(lambda b, n, nd: lib.dsrs_accelerator_rng_state(h, b, n, nd))

    def set_rng_state(self, state: Union[bytes, bytearray, memoryview]) -> None:
        """Restores a state from :meth:`get_rng_state` (malformed bytes raise
        :class:`~deepspeed_rs.errors.FormatError` and leave the generator unchanged)."""
        data = bytes(state)
        buf = ctypes.create_string_buffer(data, len(data))
        check(lib.dsrs_accelerator_set_rng_state(self._h, buf, len(data)))

    def _rng_fill(self, target: Any, dist: int, a: float, b: float, dtype: Any,
                  stream: Optional["Stream"]) -> Any:
        from .buffer import Buffer

        h = self._h
        s = _stream_arg(stream)
        if isinstance(target, Buffer):
            if dtype is None:
                raise TypeError("filling a Buffer needs dtype= (the element type)")
            t, _keep = target._view_tensor(dtype)
            check(lib.dsrs_accelerator_rng_fill(h, byref(t), dist, a, b, s))
            return target
        view = HostTensor(target, dtype=dtype, writable=True)
        check(lib.dsrs_accelerator_rng_fill(h, view.ref, dist, a, b, s))
        return target

    def fill_uniform(self, array: Any, low: float = 0.0, high: float = 1.0, *,
                     dtype: Any = None, stream: Optional["Stream"] = None) -> Any:
        """Fills ``array`` in place with uniform numbers in ``[low, high)`` from the
        generator, and advances it. Returns ``array``.

        ``array``: a C-contiguous, writable numpy array of float16, float32 or float64
        (bfloat16: a ``uint16`` array with ``dtype="bfloat16"``), or a :class:`Buffer`
        with ``dtype``.
        """
        return self._rng_fill(array, DSRS_DISTRIBUTION_UNIFORM, float(low), float(high),
                              dtype, stream)

    def fill_normal(self, array: Any, mean: float = 0.0, std: float = 1.0, *,
                    dtype: Any = None, stream: Optional["Stream"] = None) -> Any:
        """Fills ``array`` in place with normal numbers (Box-Muller on Philox); like
        :meth:`fill_uniform`. Returns ``array``."""
        return self._rng_fill(array, DSRS_DISTRIBUTION_NORMAL, float(mean), float(std),
                              dtype, stream)

    def fill_bits(self, array: Any, *, dtype: Any = None,
                  stream: Optional["Stream"] = None) -> Any:
        """Fills a 32- or 64-bit integer array in place with the generator's raw bits
        (uint32: one Philox word per element; uint64: ``w0 | w1 << 32``). Returns ``array``."""
        return self._rng_fill(array, DSRS_DISTRIBUTION_BITS, 0.0, 0.0, dtype, stream)

    # -- profiling ranges -------------------------------------------------------------

    def range_push(self, name: str) -> None:
        """Opens a named profiling range on the calling thread."""
        check(lib.dsrs_accelerator_range_push(self._h, encode(name, "name")))

    def range_pop(self) -> None:
        """Closes the innermost range of the calling thread
        (:class:`~deepspeed_rs.errors.InvalidStateError` if none is open)."""
        check(lib.dsrs_accelerator_range_pop(self._h))

    @contextlib.contextmanager
    def range(self, name: str) -> Iterator[None]:
        """``with accel.range("step"):`` -- a profiling range around the block."""
        self.range_push(name)
        try:
            yield
        finally:
            self.range_pop()

    # -- streams and events -----------------------------------------------------------

    def stream(self) -> "Stream":
        """A new stream on the current device."""
        h = self._h
        return Stream._from_handle(_out_handle(lambda out: lib.dsrs_stream_new(h, out)))

    def default_stream(self) -> "Stream":
        """A handle to the current device's default stream."""
        h = self._h
        return Stream._from_handle(
            _out_handle(lambda out: lib.dsrs_accelerator_default_stream(h, out))
        )

    def current_stream(self) -> "Stream":
        """A handle to the calling thread's current stream."""
        h = self._h
        return Stream._from_handle(
            _out_handle(lambda out: lib.dsrs_accelerator_current_stream(h, out))
        )

    def set_current_stream(self, stream: "Stream") -> None:
        """Makes ``stream`` the calling thread's current stream (and its device current)."""
        if not isinstance(stream, Stream):
            raise TypeError(f"stream must be a deepspeed_rs.Stream, got {type(stream).__name__}")
        check(lib.dsrs_accelerator_set_current_stream(self._h, stream._h))

    @contextlib.contextmanager
    def use_stream(self, stream: "Stream") -> Iterator["Stream"]:
        """``with accel.use_stream(s):`` -- ``s`` is the current stream inside the block;
        the previous one is restored afterwards (DeepSpeed's ``accelerator.stream(s)``)."""
        previous = self.current_stream()
        try:
            self.set_current_stream(stream)
            yield stream
        finally:
            try:
                self.set_current_stream(previous)
            finally:
                previous.close()

    def wrap_stream(self, native: Any = None) -> "Stream":
        """Wraps a stream the host created (a ``cudaStream_t``/``CUstream``) on the current
        device, so that deepspeed_rs work can be ordered on it.

        ``native``: the stream's address as an ``int`` or ``ctypes.c_void_p``, an object
        with a ``cuda_stream`` (``torch.cuda.Stream``) or ``ptr`` (CuPy) attribute, or
        ``None`` for the device's default stream. The stream is borrowed: closing the
        returned :class:`Stream` never destroys it, and the host must keep it alive while
        the wrapper is used (the wrapper keeps a reference to ``native``). Accelerators
        without native streams (the CPU, most plugins) raise
        :class:`~deepspeed_rs.errors.UnsupportedError`.
        """
        h, ptr = self._h, _native_stream_arg(native)
        s = Stream._from_handle(_out_handle(lambda out: lib.dsrs_stream_wrap(h, ptr, out)))
        s._borrowed = native
        return s

    def event(self, timing: bool = True) -> "Event":
        """A new event; ``timing`` enables :meth:`Event.elapsed_time`."""
        h = self._h
        return Event._from_handle(
            _out_handle(lambda out: lib.dsrs_event_new(h, bool(timing), out))
        )


class Stream(Handle):
    """A stream of work on one device (always idle on the CPU, where work is synchronous).

    A context manager that closes the handle on exit; to make a stream current inside a
    block use :meth:`Accelerator.use_stream`. On CUDA, the work submitted to a stream can
    be captured into a :class:`Graph` (:meth:`begin_capture`/:meth:`end_capture`, or
    :meth:`capture`).
    """

    #: The host object a wrapped stream came from (kept alive with the wrapper).
    _borrowed: Any = None

    _FREE = "dsrs_stream_free"

    def __init__(self, accelerator: Accelerator) -> None:
        h = accelerator._h
        super().__init__(_out_handle(lambda out: lib.dsrs_stream_new(h, out)))

    @classmethod
    def _from_handle(cls, handle: int) -> "Stream":
        obj = cls.__new__(cls)
        Handle.__init__(obj, handle)
        return obj

    def synchronize(self) -> None:
        """Blocks until all work submitted to the stream has finished."""
        check(lib.dsrs_stream_synchronize(self._h))

    def query(self) -> bool:
        """Whether all submitted work has finished."""
        out = c_bool()
        check(lib.dsrs_stream_query(self._h, byref(out)))
        return out.value

    def wait_event(self, event: "Event") -> None:
        """Makes later work on this stream wait for ``event``."""
        if not isinstance(event, Event):
            raise TypeError(f"event must be a deepspeed_rs.Event, got {type(event).__name__}")
        check(lib.dsrs_stream_wait_event(self._h, event._h))

    @property
    def native_handle(self) -> Optional[int]:
        """The native stream (``cudaStream_t``) as an int; ``None`` on host accelerators."""
        out = c_void_p()
        check(lib.dsrs_stream_native_handle(self._h, byref(out)))
        return out.value

    # -- graph capture ----------------------------------------------------------------

    def begin_capture(self) -> None:
        """Starts capturing the work this thread submits to the stream into a graph:
        nothing runs until the graph is replayed. Needs a stream from
        :meth:`Accelerator.stream` (not the default stream); copies to or from host memory
        cannot be captured. Accelerators without graphs (the CPU, plugins) raise
        :class:`~deepspeed_rs.errors.UnsupportedError`."""
        check(lib.dsrs_stream_begin_capture(self._h))

    def end_capture(self) -> "Graph":
        """Ends the capture begun with :meth:`begin_capture` and returns the graph, ready
        to :meth:`Graph.replay`."""
        h = self._h
        return Graph._from_handle(_out_handle(lambda out: lib.dsrs_stream_end_capture(h, out)))

    def capture(self) -> "_GraphCapture":
        """``with s.capture() as cap: ...`` -- captures the block's work on this stream;
        ``cap.graph`` is the :class:`Graph` after the block. If the block raises, the
        capture is ended and its graph discarded."""
        return _GraphCapture(self)

    def __repr__(self) -> str:
        return "<deepspeed_rs.Stream (closed)>" if self.closed else "<deepspeed_rs.Stream>"


class Event(Handle):
    """A marker in a stream; with timing enabled, two recorded events give the time
    between them (:meth:`elapsed_time`, milliseconds)."""

    _FREE = "dsrs_event_free"

    def __init__(self, accelerator: Accelerator, timing: bool = True) -> None:
        h = accelerator._h
        super().__init__(_out_handle(lambda out: lib.dsrs_event_new(h, bool(timing), out)))

    @classmethod
    def _from_handle(cls, handle: int) -> "Event":
        obj = cls.__new__(cls)
        Handle.__init__(obj, handle)
        return obj

    def record(self, stream: Optional[Stream] = None) -> None:
        """Records the event on ``stream`` (``None``: the current stream)."""
        check(lib.dsrs_event_record(self._h, _stream_arg(stream)))

    def synchronize(self) -> None:
        """Blocks until the work recorded before the event has finished."""
        check(lib.dsrs_event_synchronize(self._h))

    def query(self) -> bool:
        """Whether the work recorded before the event has finished (``True`` if never
        recorded)."""
        out = c_bool()
        check(lib.dsrs_event_query(self._h, byref(out)))
        return out.value

    def elapsed_time(self, end: "Event") -> float:
        """Milliseconds from this event to ``end`` (both recorded, with timing)."""
        if not isinstance(end, Event):
            raise TypeError(f"end must be a deepspeed_rs.Event, got {type(end).__name__}")
        out = c_double()
        check(lib.dsrs_event_elapsed_ms(self._h, end._h, byref(out)))
        return out.value

    def __repr__(self) -> str:
        return "<deepspeed_rs.Event (closed)>" if self.closed else "<deepspeed_rs.Event>"


class Graph(Handle):
    """Work captured from a stream (a CUDA graph), from :meth:`Stream.end_capture`; replay
    it with :meth:`replay`. Replays of one graph are serialised. A context manager that
    frees the graph on exit."""

    _FREE = "dsrs_graph_free"

    @classmethod
    def _from_handle(cls, handle: int) -> "Graph":
        obj = cls.__new__(cls)
        Handle.__init__(obj, handle)
        return obj

    def replay(self, stream: Optional[Stream] = None) -> None:
        """Launches the captured work again on ``stream`` (``None``: the stream it was
        captured on); returns once the launch is queued."""
        check(lib.dsrs_graph_replay(self._h, _stream_arg(stream)))

    @property
    def node_count(self) -> int:
        """The number of nodes (kernels, copies, fills) in the graph."""
        out = c_size_t()
        check(lib.dsrs_graph_node_count(self._h, byref(out)))
        return out.value

    def __repr__(self) -> str:
        if self.closed:
            return "<deepspeed_rs.Graph (closed)>"
        return f"<deepspeed_rs.Graph nodes={self.node_count}>"


class _GraphCapture:
    """The context manager of :meth:`Stream.capture`; ``graph`` is set on exit."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.graph: Optional[Graph] = None

    def __enter__(self) -> "_GraphCapture":
        self.stream.begin_capture()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.graph = self.stream.end_capture()
            return
        try:  # leave the stream usable; the error of the block is the one raised
            self.stream.end_capture().close()
        except Exception:
            pass
