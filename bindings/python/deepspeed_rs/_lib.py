"""Loading ``libdeepspeed_rs`` and declaring its C ABI for ctypes.

This module is the only place that knows the C signatures (``include/deepspeed_rs.h``).
It finds the shared library, checks that it speaks the C ABI version this binding was
written for, declares ``argtypes``/``restype`` for every exported function, and mirrors
the DLPack structures with exactly the header's layout.

Where the library is looked for, in order:

1. the path in the ``DSRS_LIBRARY`` environment variable (if set, it must load: a wrong
   path is an error rather than a silent fall-back to another copy);
2. a ``libdeepspeed_rs.so*`` (``.dylib``, ``deepspeed_rs.dll``) next to this package's files;
3. ``ctypes.util.find_library("deepspeed_rs")`` (``ldconfig``, ``LD_LIBRARY_PATH``, ...);
4. the SONAME ``libdeepspeed_rs.so.0.1`` through the dynamic loader.

Names exported here (``lib``, ``library_path``, the structures and constants) are an
implementation detail of the binding; use the package's public API instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char,
    c_char_p,
    c_double,
    c_int32,
    c_int64,
    c_size_t,
    c_uint8,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Callable, List, Optional, Tuple

from .errors import AbiMismatchError, check

#: The C ABI version this binding was written for (``DSRS_ABI_VERSION`` in the header).
EXPECTED_ABI_VERSION = 1

#: The SONAME of the library release this binding targets.
SONAME = "libdeepspeed_rs.so.0.1"

# --------------------------------------------------------------------------------------
# Constants of the header.

DSRS_STATUS_OK = 0
DSRS_STATUS_BUFFER_TOO_SMALL = 104

DSRS_DISTRIBUTION_UNIFORM = 0
DSRS_DISTRIBUTION_NORMAL = 1
DSRS_DISTRIBUTION_BITS = 2

DSRS_MEMORY_DEVICE = 0
DSRS_MEMORY_HOST = 1
DSRS_MEMORY_PINNED = 2

DSRS_LOG_OFF = 0
DSRS_LOG_ERROR = 1
DSRS_LOG_WARN = 2
DSRS_LOG_INFO = 3
DSRS_LOG_DEBUG = 4
DSRS_LOG_TRACE = 5

#: The accelerator plugin ABI version the library implements (``dsrs_accelerator_plugin_v1``).
DSRS_ACCELERATOR_PLUGIN_ABI_VERSION = 1

# DLPack (1.1) device types and type codes.
DLPACK_MAJOR_VERSION = 1
DLPACK_MINOR_VERSION = 1
kDLCPU = 1
kDLCUDA = 2
kDLCUDAHost = 3
kDLOpenCL = 4
kDLVulkan = 7
kDLMetal = 8
kDLVPI = 9
kDLROCM = 10
kDLROCMHost = 11
kDLExtDev = 12
kDLCUDAManaged = 13
kDLOneAPI = 14
kDLWebGPU = 15
kDLHexagon = 16
kDLMAIA = 17
kDLTrn = 18

kDLInt = 0
kDLUInt = 1
kDLFloat = 2
kDLOpaqueHandle = 3
kDLBfloat = 4
kDLComplex = 5
kDLBool = 6

DLPACK_FLAG_BITMASK_READ_ONLY = 1 << 0
DLPACK_FLAG_BITMASK_IS_COPIED = 1 << 1
DLPACK_FLAG_BITMASK_IS_SUBBYTE_TYPE_PADDED = 1 << 2

# --------------------------------------------------------------------------------------
# DLPack structures (layout of include/deepspeed_rs.h / dlpack.h 1.1).


class DLPackVersion(Structure):
    """``DLPackVersion``: major and minor version."""

    _fields_ = [("major", c_uint32), ("minor", c_uint32)]


class DLDevice(Structure):
    """``DLDevice``: device type (``kDL*``) and index."""

    _fields_ = [("device_type", c_int32), ("device_id", c_int32)]


class DLDataType(Structure):
    """``DLDataType``: type code, bits per lane, lanes."""

    _fields_ = [("code", c_uint8), ("bits", c_uint8), ("lanes", c_uint16)]

    def __repr__(self) -> str:
        return f"DLDataType(code={self.code}, bits={self.bits}, lanes={self.lanes})"


class DLTensor(Structure):
    """``DLTensor``: a tensor that does not own its memory."""

    _fields_ = [
        ("data", c_void_p),
        ("device", DLDevice),
        ("ndim", c_int32),
        ("dtype", DLDataType),
        ("shape", POINTER(c_int64)),
        ("strides", POINTER(c_int64)),
        ("byte_offset", c_uint64),
    ]


class DLManagedTensor(Structure):
    """``DLManagedTensor``: legacy DLPack exchange format (capsule name ``"dltensor"``)."""


DLManagedTensorDeleter = CFUNCTYPE(None, POINTER(DLManagedTensor))
DLManagedTensor._fields_ = [
    ("dl_tensor", DLTensor),
    ("manager_ctx", c_void_p),
    ("deleter", DLManagedTensorDeleter),
]


class DLManagedTensorVersioned(Structure):
    """``DLManagedTensorVersioned``: DLPack >= 1.0 (capsule name ``"dltensor_versioned"``)."""


DLManagedTensorVersionedDeleter = CFUNCTYPE(None, POINTER(DLManagedTensorVersioned))
DLManagedTensorVersioned._fields_ = [
    ("version", DLPackVersion),
    ("manager_ctx", c_void_p),
    ("deleter", DLManagedTensorVersionedDeleter),
    ("flags", c_uint64),
    ("dl_tensor", DLTensor),
]

if ctypes.sizeof(c_void_p) == 8:  # the layout the library itself asserts on 64-bit targets
    assert ctypes.sizeof(DLDataType) == 4 and ctypes.sizeof(DLDevice) == 8
    assert DLTensor.ndim.offset == 16 and DLTensor.dtype.offset == 20
    assert DLTensor.shape.offset == 24 and DLTensor.byte_offset.offset == 40
    assert ctypes.sizeof(DLTensor) == 48 and ctypes.sizeof(DLManagedTensor) == 64
    assert DLManagedTensorVersioned.flags.offset == 24
    assert DLManagedTensorVersioned.dl_tensor.offset == 32
    assert ctypes.sizeof(DLManagedTensorVersioned) == 80

#: ``dsrs_log_callback``: ``void (*)(void *user_data, int32_t level, const char *target,
#: const char *message)``.
LOG_CALLBACK = CFUNCTYPE(None, c_void_p, c_int32, c_char_p, c_char_p)

# --------------------------------------------------------------------------------------
# Prototypes. Handles (dsrs_accelerator*, dsrs_buffer*, dsrs_stream*, dsrs_event*, dsrs_graph*,
# dsrs_op*) are opaque: c_void_p.

_H = c_void_p  # a handle
_PH = POINTER(c_void_p)  # an out-parameter receiving a handle
_S = c_int32  # dsrs_status
_STR_OUT = [POINTER(c_char), c_size_t, POINTER(c_size_t)]  # two-call string output

PROTOTYPES = {
    # accelerators
    "dsrs_accelerator_get": (_S, [_PH]),
    "dsrs_accelerator_set": (_S, [_H]),
    "dsrs_accelerator_new": (_S, [c_char_p, c_char_p, _PH]),
    "dsrs_accelerator_free": (_S, [_H]),
    "dsrs_accelerator_names": (_S, _STR_OUT),
    "dsrs_accelerator_name": (_S, [_H] + _STR_OUT),
    "dsrs_accelerator_info_json": (_S, [_H] + _STR_OUT),
    "dsrs_accelerator_is_available": (_S, [_H, POINTER(c_bool)]),
    "dsrs_accelerator_device_type": (_S, [_H, POINTER(c_int32)]),
    "dsrs_accelerator_communication_backend": (_S, [_H] + _STR_OUT),
    "dsrs_accelerator_is_synchronized_device": (_S, [_H, POINTER(c_bool)]),
    "dsrs_accelerator_device_count": (_S, [_H, POINTER(c_uint32)]),
    "dsrs_accelerator_device_name": (_S, [_H, c_int32] + _STR_OUT),
    "dsrs_accelerator_device_properties_json": (_S, [_H, c_int32] + _STR_OUT),
    "dsrs_accelerator_load_plugin": (_S, [c_char_p]),
    "dsrs_accelerator_set_device": (_S, [_H, c_int32]),
    "dsrs_accelerator_current_device": (_S, [_H, POINTER(c_int32)]),
    "dsrs_accelerator_synchronize": (_S, [_H, c_int32]),
    "dsrs_accelerator_total_memory": (_S, [_H, c_int32, POINTER(c_uint64)]),
    "dsrs_accelerator_available_memory": (_S, [_H, c_int32, POINTER(c_uint64)]),
    "dsrs_accelerator_memory_allocated": (_S, [_H, c_int32, POINTER(c_uint64)]),
    "dsrs_accelerator_max_memory_allocated": (_S, [_H, c_int32, POINTER(c_uint64)]),
    "dsrs_accelerator_memory_reserved": (_S, [_H, c_int32, POINTER(c_uint64)]),
    "dsrs_accelerator_max_memory_reserved": (_S, [_H, c_int32, POINTER(c_uint64)]),
    "dsrs_accelerator_reset_peak_memory_stats": (_S, [_H, c_int32]),
    "dsrs_accelerator_empty_cache": (_S, [_H]),
    "dsrs_accelerator_memory_stats_json": (_S, [_H, c_int32] + _STR_OUT),
    "dsrs_accelerator_dtype_supported": (
        _S,
        [_H, DLDataType, POINTER(c_bool), POINTER(c_bool)],
    ),
    "dsrs_accelerator_is_bf16_supported": (_S, [_H, POINTER(c_bool)]),
    "dsrs_accelerator_is_fp16_supported": (_S, [_H, POINTER(c_bool)]),
    "dsrs_accelerator_manual_seed": (_S, [_H, c_uint64]),
    "dsrs_accelerator_initial_seed": (_S, [_H, POINTER(c_uint64)]),
    "dsrs_accelerator_rng_state": (_S, [_H, c_void_p, c_size_t, POINTER(c_size_t)]),
    "dsrs_accelerator_set_rng_state": (_S, [_H, c_void_p, c_size_t]),
    "dsrs_accelerator_rng_fill": (
        _S,
        [_H, POINTER(DLTensor), c_int32, c_double, c_double, _H],
    ),
    "dsrs_accelerator_range_push": (_S, [_H, c_char_p]),
    "dsrs_accelerator_range_pop": (_S, [_H]),
    "dsrs_accelerator_is_pinned": (_S, [_H, c_void_p, POINTER(c_bool)]),
    # buffers
    "dsrs_buffer_new": (_S, [_H, c_size_t, c_size_t, c_int32, _PH]),
    "dsrs_buffer_free": (_S, [_H]),
    "dsrs_buffer_size": (_S, [_H, POINTER(c_size_t)]),
    "dsrs_buffer_data": (_S, [_H, POINTER(c_void_p)]),
    "dsrs_buffer_kind": (_S, [_H, POINTER(c_int32)]),
    "dsrs_buffer_device": (_S, [_H, POINTER(DLDevice)]),
    "dsrs_buffer_accelerator": (_S, [_H, _PH]),
    "dsrs_buffer_write": (_S, [_H, c_size_t, c_void_p, c_size_t, _H]),
    "dsrs_buffer_read": (_S, [_H, c_size_t, c_void_p, c_size_t, _H]),
    "dsrs_buffer_copy": (_S, [_H, c_size_t, _H, c_size_t, c_size_t, _H]),
    "dsrs_buffer_fill": (_S, [_H, c_size_t, c_size_t, c_void_p, c_size_t, _H]),
    "dsrs_buffer_view": (
        _S,
        [_H, c_uint64, DLDataType, POINTER(c_int64), c_int32, POINTER(DLTensor)],
    ),
    "dsrs_buffer_to_dlpack": (
        _S,
        [_H, c_uint64, DLDataType, POINTER(c_int64), c_int32, POINTER(POINTER(DLManagedTensor))],
    ),
    "dsrs_buffer_to_dlpack_versioned": (
        _S,
        [
            _H,
            c_uint64,
            DLDataType,
            POINTER(c_int64),
            c_int32,
            c_bool,
            POINTER(POINTER(DLManagedTensorVersioned)),
        ],
    ),
    "dsrs_buffer_copy_from_tensor": (_S, [_H, c_size_t, POINTER(DLTensor), _H]),
    "dsrs_buffer_copy_to_tensor": (_S, [_H, c_size_t, POINTER(DLTensor), _H]),
    # library-wide
    "dsrs_version": (c_char_p, []),
    "dsrs_abi_version": (c_uint32, []),
    "dsrs_status_str": (c_char_p, [c_int32]),
    "dsrs_last_error_message": (_S, _STR_OUT),
    "dsrs_last_error_status": (_S, [POINTER(c_int32)]),
    "dsrs_clear_last_error": (_S, []),
    "dsrs_set_log_callback": (_S, [LOG_CALLBACK, c_void_p]),
    "dsrs_set_log_level": (_S, [c_int32]),
    "dsrs_get_log_level": (_S, [POINTER(c_int32)]),
    "dsrs_log": (_S, [c_int32, c_char_p, c_char_p]),
    "dsrs_report_json": (_S, _STR_OUT),
    "dsrs_debug_panic": (_S, [c_char_p]),
    # streams and events
    "dsrs_stream_new": (_S, [_H, _PH]),
    "dsrs_accelerator_default_stream": (_S, [_H, _PH]),
    "dsrs_accelerator_current_stream": (_S, [_H, _PH]),
    "dsrs_accelerator_set_current_stream": (_S, [_H, _H]),
    "dsrs_stream_free": (_S, [_H]),
    "dsrs_stream_synchronize": (_S, [_H]),
    "dsrs_stream_query": (_S, [_H, POINTER(c_bool)]),
    "dsrs_stream_wait_event": (_S, [_H, _H]),
    "dsrs_stream_native_handle": (_S, [_H, POINTER(c_void_p)]),
    "dsrs_event_new": (_S, [_H, c_bool, _PH]),
    "dsrs_event_free": (_S, [_H]),
    "dsrs_event_record": (_S, [_H, _H]),
    "dsrs_event_synchronize": (_S, [_H]),
    "dsrs_event_query": (_S, [_H, POINTER(c_bool)]),
    "dsrs_event_elapsed_ms": (_S, [_H, _H, POINTER(c_double)]),
    "dsrs_stream_wrap": (_S, [_H, c_void_p, _PH]),
    # graphs (CUDA)
    "dsrs_stream_begin_capture": (_S, [_H]),
    "dsrs_stream_end_capture": (_S, [_H, _PH]),
    "dsrs_graph_replay": (_S, [_H, _H]),
    "dsrs_graph_node_count": (_S, [_H, POINTER(c_size_t)]),
    "dsrs_graph_free": (_S, [_H]),
    # optimizer steps (configs and dsrs_optim_tensors arrays by pointer; see optim.py)
    "dsrs_adam_step": (_S, [c_void_p, c_void_p, c_size_t, _H]),
    "dsrs_adagrad_step": (_S, [c_void_p, c_void_p, c_size_t, _H]),
    "dsrs_lion_step": (_S, [c_void_p, c_void_p, c_size_t, _H]),
    "dsrs_lamb_step": (_S, [c_void_p, c_void_p, c_size_t, _H]),
    # quantizer (dsrs_quantize_config by pointer; see quantizer.py)
    "dsrs_quantize_sizes": (_S, [c_uint64, c_void_p, POINTER(c_uint64), POINTER(c_uint64)]),
    "dsrs_quantize": (
        _S,
        [c_void_p, POINTER(DLTensor), POINTER(DLTensor), POINTER(DLTensor), POINTER(DLTensor), _H],
    ),
    "dsrs_dequantize": (
        _S,
        [c_void_p, POINTER(DLTensor), POINTER(DLTensor), POINTER(DLTensor), POINTER(DLTensor), _H],
    ),
    # training engine (dsrs_step_record by pointer; see engine.py)
    "dsrs_engine_new": (_S, [_H, c_char_p, _PH]),
    "dsrs_engine_new_from_file": (_S, [_H, c_char_p, _PH]),
    "dsrs_engine_free": (_S, [_H]),
    "dsrs_engine_register_param": (_S, [_H, c_char_p, POINTER(DLTensor), c_int32, POINTER(c_size_t)]),
    "dsrs_engine_finalize": (_S, [_H]),
    "dsrs_engine_num_params": (_S, [_H, POINTER(c_size_t)]),
    "dsrs_engine_param_index": (_S, [_H, c_char_p, POINTER(c_size_t)]),
    "dsrs_engine_param_name": (_S, [_H, c_size_t] + _STR_OUT),
    "dsrs_engine_param": (_S, [_H, c_size_t, POINTER(DLTensor)]),
    "dsrs_engine_grad": (_S, [_H, c_size_t, POINTER(DLTensor)]),
    "dsrs_engine_optimizer_state": (_S, [_H, c_size_t, c_char_p, POINTER(DLTensor)]),
    "dsrs_engine_step": (_S, [_H, _H, c_void_p]),
    "dsrs_engine_loss_scale": (_S, [_H, POINTER(c_double)]),
    "dsrs_engine_get_lr": (_S, [_H, POINTER(c_double)]),
    "dsrs_engine_set_lr": (_S, [_H, c_double]),
    "dsrs_engine_report_loss": (_S, [_H, c_double]),
    "dsrs_engine_batch_sizes": (
        _S,
        [_H, POINTER(c_uint64), POINTER(c_uint64), POINTER(c_uint64)],
    ),
    "dsrs_engine_config_json": (_S, [_H] + _STR_OUT),
    "dsrs_engine_stats_json": (_S, [_H] + _STR_OUT),
    "dsrs_config_check": (_S, [c_char_p, c_uint64] + _STR_OUT),
    "dsrs_config_auto_paths": (_S, [c_char_p] + _STR_OUT),
    "dsrs_config_fill_auto": (_S, [c_char_p, c_char_p, c_char_p] + _STR_OUT),
    # ops (op builders and their JIT)
    "dsrs_op_define": (_S, [c_char_p]),
    "dsrs_op_load": (_S, [c_char_p, c_char_p, _PH]),
    "dsrs_op_free": (_S, [_H]),
    "dsrs_op_symbol": (_S, [_H, c_char_p, POINTER(c_void_p)]),
    "dsrs_op_kernel": (_S, [_H, c_int32, c_char_p, POINTER(c_void_p)]),
    "dsrs_op_image": (_S, [_H, POINTER(POINTER(c_uint8)), POINTER(c_size_t)]),
    "dsrs_op_info_json": (_S, [_H] + _STR_OUT),
    "dsrs_op_list_json": (_S, [c_char_p] + _STR_OUT),
    "dsrs_op_cache_dir": (_S, _STR_OUT),
}

# --------------------------------------------------------------------------------------
# Finding and loading the library.


def _package_dir_candidates() -> List[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    patterns = ["libdeepspeed_rs.so", "libdeepspeed_rs.so.*", "libdeepspeed_rs*.dylib",
                "deepspeed_rs.dll"]
    found: List[str] = []
    for pattern in patterns:
        for path in sorted(glob.glob(os.path.join(here, pattern))):
            if path not in found:
                found.append(path)
    return found


def load_library() -> Tuple[ctypes.CDLL, str]:
    """Finds and loads the shared library (see the module docstring for the order).

    Returns the ``CDLL`` and the path or name it was loaded from. Raises ``ImportError``
    listing every place tried when none loads.
    """
    env = os.environ.get("DSRS_LIBRARY")
    if env:
        try:
            return ctypes.CDLL(env), env
        except OSError as e:
            raise ImportError(
                f"deepspeed_rs: DSRS_LIBRARY={env!r} could not be loaded: {e}. Point it at "
                "a built libdeepspeed_rs.so (cargo build puts it in target/debug/), or unset "
                "it to search the usual places."
            ) from None
    tried: List[str] = ["DSRS_LIBRARY: not set"]
    candidates = _package_dir_candidates()
    if not candidates:
        tried.append(
            f"next to the package ({os.path.dirname(os.path.abspath(__file__))}): "
            "no libdeepspeed_rs.so*"
        )
    for path in candidates:
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            tried.append(f"{path}: {e}")
    found = ctypes.util.find_library("deepspeed_rs")
    if found:
        try:
            return ctypes.CDLL(found), found
        except OSError as e:
            tried.append(f"ctypes.util.find_library('deepspeed_rs') -> {found}: {e}")
    else:
        tried.append("ctypes.util.find_library('deepspeed_rs'): not found")
    try:
        return ctypes.CDLL(SONAME), SONAME
    except OSError as e:
        tried.append(f"{SONAME} (dynamic loader): {e}")
    raise ImportError(
        "deepspeed_rs: could not load the shared library libdeepspeed_rs. Tried, in order:\n  - "
        + "\n  - ".join(tried)
        + "\nSet DSRS_LIBRARY=/path/to/libdeepspeed_rs.so, copy the library next to the "
        "deepspeed_rs package, or install it where the dynamic loader finds it."
    )


def check_abi(library: ctypes.CDLL, path: str = "<library>") -> int:
    """Refuses a library whose ``dsrs_abi_version()`` is not :data:`EXPECTED_ABI_VERSION`.

    Returns the library's ABI version; raises :class:`~deepspeed_rs.errors.AbiMismatchError`
    (an ``ImportError``) on a mismatch. The expected version is read from this module at
    call time.
    """
    try:
        fn = library.dsrs_abi_version
    except AttributeError:
        raise ImportError(
            f"deepspeed_rs: {path!r} does not export dsrs_abi_version; it is not a "
            "deepspeed_rs library"
        ) from None
    fn.restype = c_uint32
    fn.argtypes = []
    found = int(fn())
    expected = EXPECTED_ABI_VERSION
    if found != expected:
        raise AbiMismatchError(expected, found, path)
    return found


def declare(library: ctypes.CDLL, path: str = "<library>") -> None:
    """Sets ``argtypes``/``restype`` of every function of the C ABI on ``library``."""
    missing = []
    for name, (restype, argtypes) in PROTOTYPES.items():
        try:
            fn = getattr(library, name)
        except AttributeError:
            missing.append(name)
            continue
        fn.restype = restype
        fn.argtypes = argtypes
    if missing:
        raise ImportError(
            f"deepspeed_rs: {path!r} lacks functions of C ABI version "
            f"{EXPECTED_ABI_VERSION}: {', '.join(missing)}"
        )


lib, library_path = load_library()
abi_version = check_abi(lib, library_path)
declare(lib, library_path)

# --------------------------------------------------------------------------------------
# Helpers shared by the wrappers.

_MAX_RETRIES = 64


def _two_call(fn: Callable[..., int], check_status: bool) -> Optional[bytes]:
    needed = c_size_t(0)
    status = fn(None, 0, ctypes.byref(needed))
    if status != DSRS_STATUS_OK:
        if not check_status:
            return None
        check(status)
    for _ in range(_MAX_RETRIES):
        size = needed.value
        buf = ctypes.create_string_buffer(max(size, 1))
        status = fn(buf, size, ctypes.byref(needed))
        if status == DSRS_STATUS_BUFFER_TOO_SMALL:
            continue  # the output grew between the calls (live figures): try again
        if status != DSRS_STATUS_OK:
            if not check_status:
                return None
            check(status)
        return buf.raw[: needed.value]
    from .errors import InternalError

    raise InternalError(
        f"a two-call output kept growing ({_MAX_RETRIES} retries); last size {needed.value}"
    )


def read_string(fn: Callable[..., int], check_status: bool = True) -> str:
    """Runs a two-call string output ``fn(buf, len, needed) -> status``, retrying while it
    returns ``DSRS_STATUS_BUFFER_TOO_SMALL``; returns the text without its NUL.

    With ``check_status=False`` failures give ``""`` instead of raising (used to read the
    last-error message itself).
    """
    raw = _two_call(fn, check_status)
    if raw is None:
        return ""
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    return raw.decode("utf-8", errors="replace")


def read_bytes(fn: Callable[..., int]) -> bytes:
    """Runs a two-call byte output ``fn(buf, len, needed) -> status`` (no NUL)."""
    raw = _two_call(fn, True)
    assert raw is not None
    return raw


def encode(s: Optional[str], what: str) -> Optional[bytes]:
    """A Python string as NUL-terminated UTF-8 for the C ABI (``None`` stays NULL)."""
    if s is None:
        return None
    if isinstance(s, bytes):
        b = s
    elif isinstance(s, str):
        b = s.encode("utf-8")
    else:
        raise TypeError(f"{what} must be a str, got {type(s).__name__}")
    if b"\0" in b:
        raise ValueError(f"{what} must not contain NUL characters")
    return b


def _check_int(value: object, what: str, lo: int, hi: int) -> int:
    from .errors import OutOfRangeError

    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{what} must be an integer, got {type(value).__name__}")
    v = int(value.__index__())  # type: ignore[attr-defined]
    if not lo <= v <= hi:
        raise OutOfRangeError(f"{what} must be in {lo}..={hi}, got {v}")
    return v


def size_arg(value: object, what: str) -> int:
    """Validates a ``size_t`` argument (ctypes would silently wrap negatives)."""
    return _check_int(value, what, 0, (1 << (8 * ctypes.sizeof(c_size_t))) - 1)


def u64_arg(value: object, what: str) -> int:
    """Validates a ``uint64_t`` argument."""
    return _check_int(value, what, 0, (1 << 64) - 1)


def i32_arg(value: object, what: str) -> int:
    """Validates an ``int32_t`` argument."""
    return _check_int(value, what, -(1 << 31), (1 << 31) - 1)


def device_arg(device: Optional[int]) -> int:
    """A device index for the C ABI: ``None`` is ``-1`` (the current device)."""
    return -1 if device is None else i32_arg(device, "device")


if sys.byteorder != "little":  # pragma: no cover
    import warnings

    warnings.warn("deepspeed_rs is tested on little-endian hosts only", RuntimeWarning)
